"""What a pretrained checkpoint is: its source, file, hash, published top-1, the preprocessing its weights expect,
the builder options that reproduce the source's layout, and how its tensors map onto the zoo's layers.

The entries themselves sit beside their architectures: each family module's ``CHECKPOINTS`` ({model name:
Checkpoint, or a function (options, input_shape) -> Checkpoint where the file depends on the build, as for
MobileNet's widths}) and ``NO_CHECKPOINT`` ({model name: why none fits}), as torchvision keeps
``ResNet18_Weights`` beside ``resnet18``.
"""
import dataclasses
import os
import sys

#: torchvision and Keras' DenseNet / EfficientNet: [0, 1] then ImageNet mean / std per channel
TORCH = {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
#: TF-slim (MobileNet, ResNet v2): [-1, 1]
TF = {"scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
#: Caffe (Keras' VGG): 0..255 minus the ImageNet mean (RGB order here; the BGR order is folded into conv1)
CAFFE = {"scale": 1.0, "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0]}
PREPROCESSING = {"torch": TORCH, "tf": TF, "caffe": CAFFE}

KERAS = "Keras Applications"
TORCHVISION = "torchvision"
KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCH_BASE = "https://download.pytorch.org/models/"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    model: str
    source: str
    url: str
    #: md5 (32 hex digits, Keras' get_file) or the sha256 prefix torch.hub checks; None where the source has none
    file_hash: object
    #: ImageNet top-1 (%) the source publishes for these weights, or None
    top1: object
    #: a key of PREPROCESSING: what the weights expect of the pixels
    preprocessing_name: str
    #: builder options the weights need (merged into create_model's)
    options: dict = dataclasses.field(default_factory=dict)
    #: how its tensors map onto the zoo's layers: a key of pretrained/mapping.py's table for its source
    mapping: str = "resnet"
    #: the zoo model's top layers (not loaded into a build without its top); the last is the classifier, left out
    #: when the classes differ
    top: tuple = ("fc",)

    @property
    def head(self):
        return self.top[-1]

    @property
    def filename(self):
        return self.url.rsplit("/", 1)[-1]

    @property
    def preprocessing(self):
        return dict(PREPROCESSING[self.preprocessing_name])

    @property
    def bgr(self):
        """The source's first convolution reads BGR (Caffe): reversed at load time, so the model takes RGB."""
        return self.preprocessing_name == "caffe"

    def describe(self, weights="imagenet"):
        """Which weights a model was built with, for the user: ``weights`` is "imagenet" or the file given."""
        if weights != "imagenet":
            return f"weights from {weights} ({self.source} layout)"
        top1 = f", ImageNet top-1 {self.top1}%" if self.top1 else ""
        return f"ImageNet weights from {self.source} ({self.filename}{top1})"


# ---------------------------------------------------------------------------------------------------------


def keras_h5(model, path, md5, top1, preprocessing, mapping, options=None, top=("fc",), base=None):
    """A Keras Applications ``.h5`` file (``path`` under ``base``, KERAS_BASE by default)."""
    return Checkpoint(model, KERAS, (base or KERAS_BASE) + path, md5, top1, preprocessing, options or {}, mapping, top)


def torchvision_pth(model, filename, top1, mapping="resnet", options=None, top=("fc",)):
    """A torchvision ``.pth`` file: its hash is the sha256 prefix in its name (torch.hub's rule)."""
    return Checkpoint(model, TORCHVISION, TORCH_BASE + filename, filename.rsplit("-", 1)[1].split(".")[0], top1,
                      "torch", options or {}, mapping, top)


def _family_module(info):
    """The architecture module that registered the model: its checkpoint entries are there."""
    return sys.modules[info.builder.__module__]


def find_checkpoint(name, options=None, input_shape=None):
    """The checkpoint for zoo model ``name`` built with ``options`` (None if the zoo has none for it)."""
    from keras_cnns.registry import get_model_info

    info = get_model_info(name)
    entry = getattr(_family_module(info), "CHECKPOINTS", {}).get(info.name)
    if entry is None or isinstance(entry, Checkpoint):
        return entry
    return entry({**info.options, **(options or {})}, input_shape)


def why_none(name):
    """Why zoo model ``name`` has no checkpoint."""
    from keras_cnns.registry import get_model_info

    info = get_model_info(name)
    return getattr(_family_module(info), "NO_CHECKPOINT", {}).get(info.name,
                                                                  "no published checkpoint has its architecture")


def imagenet_labels():
    """The 1000 ImageNet-1k class names, in class-index order (shipped with the package)."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "imagenet_classes.txt")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
