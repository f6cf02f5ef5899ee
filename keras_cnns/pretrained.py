"""Pretrained ImageNet weights for the zoo: where each checkpoint comes from, how it is fetched, and how
its tensors map onto the zoo's layers.

A checkpoint comes from the published implementation whose parameter count the registry records for the
model (the zoo matches it tensor for tensor): a Keras Applications ``.h5`` (read with h5py) or a
torchvision ``.pth`` (read with PyTorch, the optional ``[torch]`` extra). Each entry records the URL, the
hash the source itself verifies with (Keras: the md5 in Keras Applications' code, where it has one;
torchvision: the sha256 prefix in the file name, torch.hub's rule), the ImageNet top-1 the source
publishes, the input preprocessing the weights expect, and the builder options that reproduce the
source's padding / layout (``padding="symmetric"`` and the like; they change no weight and no MAC).

Loading is strict: every weighted layer of the zoo model takes exactly the tensors of one source layer,
shapes checked; a missing, extra or misfitting tensor is a :class:`CnnkitError` naming it. Only the
classifier is left out, and said so, when the model has another class count or no top.

Caffe-style checkpoints (Keras' VGG) expect BGR input: the first convolution's input channels are
reversed at load time, so every zoo model takes RGB and the recorded preprocessing is in RGB order.
"""
import dataclasses
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request

import numpy as np

from keras_cnns.errors import CnnkitError
from keras_cnns.files import replaced_atomically

log = logging.getLogger(__name__)

#: torchvision and Keras' DenseNet / EfficientNet: [0, 1] then ImageNet mean / std per channel
TORCH = {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
#: TF-slim (MobileNet, ResNet v2): [-1, 1]
TF = {"scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
#: Caffe (Keras' VGG): 0..255 minus the ImageNet mean (RGB order here; the BGR order is folded into conv1)
CAFFE = {"scale": 1.0, "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0]}
PREPROCESSING = {"torch": TORCH, "tf": TF, "caffe": CAFFE}

KERAS = "Keras Applications"
TORCHVISION = "torchvision"
_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_TORCH_BASE = "https://download.pytorch.org/models/"


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
# The table: zoo model -> checkpoint (MobileNets: one file per width and resolution)

_MOBILENET_V1_TOP1 = {(1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6, (1.0, 192): 69.1,
                      (1.0, 160): 67.2, (1.0, 128): 64.4}  # Keras' mobilenet.py tables (others unpublished)
_MOBILENET_V2_TOP1 = {  # Keras' mobilenet_v2.py table
    (1.4, 224): 75.0, (1.3, 224): 74.4, (1.0, 224): 71.8, (1.0, 192): 70.7, (1.0, 160): 68.8, (1.0, 128): 65.3,
    (1.0, 96): 60.3, (0.75, 224): 69.8, (0.75, 192): 68.7, (0.75, 160): 66.4, (0.75, 128): 63.2, (0.75, 96): 58.8,
    (0.5, 224): 65.4, (0.5, 192): 63.9, (0.5, 160): 61.0, (0.5, 128): 57.7, (0.5, 96): 51.2, (0.35, 224): 60.3,
    (0.35, 192): 58.2, (0.35, 160): 55.7, (0.35, 128): 50.8, (0.35, 96): 45.5}
_KERAS_H5 = {  # model: (file under _KERAS_BASE, md5 from Keras Applications, top-1 from keras.io, preprocessing)
    "vgg16": ("vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b", 71.3, "caffe"),
    "vgg19": ("vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318", 71.3, "caffe"),
    "preact_resnet50": ("resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
                        "3ef43a0b657b3be2300d5770ece849e0", 76.0, "tf"),
    "preact_resnet101": ("resnet/resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
                         "6343647c601c52e1368623803854d971", 77.2, "tf"),
    "preact_resnet152": ("resnet/resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
                         "a49b44d1979771252814e80f8ec446f9", 78.0, "tf"),
    "densenet121": ("densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
                    "9d60b8095a5708f2dcce2bca79d332c7", 75.0, "torch"),
    "densenet169": ("densenet/densenet169_weights_tf_dim_ordering_tf_kernels.h5",
                    "d699b8f76981ab1b30698df4c175e90b", 76.2, "torch"),
    "densenet201": ("densenet/densenet201_weights_tf_dim_ordering_tf_kernels.h5",
                    "1ceb130c1ea1b78c3bf6114dbdfd8807", 77.3, "torch"),
}
_EFFICIENTNET_H5 = {  # variant: (md5 from Keras Applications, top-1 from keras.io)
    "b0": ("902e53a9f72be733fc0bcb005b3ebbac", 77.1), "b1": ("1d254153d4ab51201f1646940f018540", 79.1),
    "b2": ("b15cce36ff4dcbd00b6dd88e7857a6ad", 80.1), "b3": ("ffd1fdc53d0ce67064dc6a9c7960ede0", 81.6),
    "b4": ("18c95ad55216b8f92d7e70b3a046e2fc", 82.9), "b5": ("ace28f2a6363774853a83a0b21b9421a", 83.6),
    "b6": ("165f6e37dce68623721b423839de8be5", 84.0), "b7": ("8c03f828fec3ef71311cd463b6759d99", 84.3),
}
_TORCHVISION_PTH = {  # model: (file, top-1), torchvision's DEFAULT weights (IMAGENET1K_V2 where there is one)
    "resnet18": ("resnet18-f37072fd.pth", 69.758), "resnet34": ("resnet34-b627a593.pth", 73.314),
    "resnet50": ("resnet50-11ad3fa6.pth", 80.858), "resnet101": ("resnet101-cd907fc2.pth", 81.886),
    "resnet152": ("resnet152-f82ba261.pth", 82.284),
    "wide_resnet50_2": ("wide_resnet50_2-9ba9bcbe.pth", 81.602),
    "wide_resnet101_2": ("wide_resnet101_2-d733dc28.pth", 82.51),
    "resnext50_32x4d": ("resnext50_32x4d-1a0047aa.pth", 81.198),
    "resnext101_32x8d": ("resnext101_32x8d-110c445d.pth", 82.834),
    "resnext101_64x4d": ("resnext101_64x4d-173b62eb.pth", 83.246),
    "vgg11": ("vgg11-8a719046.pth", 69.02), "vgg11_bn": ("vgg11_bn-6002323d.pth", 70.37),
    "vgg13": ("vgg13-19584684.pth", 69.928), "vgg13_bn": ("vgg13_bn-abd245e5.pth", 71.586),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth", 73.36), "vgg19_bn": ("vgg19_bn-c79401a0.pth", 74.218),
    "squeezenet1_0": ("squeezenet1_0-b66bff10.pth", 58.092), "squeezenet1_1": ("squeezenet1_1-b8a52dc0.pth", 58.178),
}
#: zoo models with no checkpoint that fits, and why (shown by `cnnkit models --pretrained`, README)
NOT_AVAILABLE = {
    "alexnet": "torchvision's AlexNet is the one-tower 64-192-384-256-256 variant, not the paper's network",
    "alexnet_1tower": "torchvision's AlexNet has 64-192-384-256-256 filters, not the paper's 96-256-384-384-256",
    "googlenet_bn": "torchvision's GoogLeNet uses 3x3 convolutions in the '5x5' branch",
    "resnet152_sd": "stochastic depth scales each residual by its survival probability at inference; ResNet-152 "
                    "checkpoints were trained without it (use resnet152)",
}


def _mobilenet(name, options, input_shape):
    alpha = float(options.get("alpha", 1.0))
    rows = int(input_shape[0]) if input_shape else 224
    if name == "mobilenet":
        alphas, sizes, table = (0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224), _MOBILENET_V1_TOP1
    else:
        alphas, sizes, table = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224), _MOBILENET_V2_TOP1
    if alpha not in alphas:
        raise CnnkitError(f"{name} has ImageNet weights for alpha {', '.join(map(str, alphas))}, not {alpha}")
    if rows not in sizes:  # the weights do not depend on the resolution; Keras takes the 224 file too
        rows = 224
    if name == "mobilenet":
        text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
        url = f"{_KERAS_BASE}mobilenet/mobilenet_{text}_{rows}_tf.h5"
    else:
        url = f"{_KERAS_BASE}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}.h5"
    return Checkpoint(name, KERAS, url, None, table.get((alpha, rows)), "tf")


def find_checkpoint(name, options=None, input_shape=None):
    """The checkpoint for zoo model ``name`` built with ``options`` (None if the zoo has none for it)."""
    from keras_cnns.registry import get_model_info

    info = get_model_info(name)
    name, options = info.name, {**info.options, **(options or {})}
    if name in ("mobilenet", "mobilenet_v2"):
        return _mobilenet(name, options, input_shape)
    if name in _KERAS_H5:
        path, md5, top1, pre = _KERAS_H5[name]
        extra = {}
        if name.startswith("preact"):
            extra = {"padding": "symmetric", "downsample": "last", "bn_epsilon": 1.001e-5}
        elif name.startswith("densenet"):
            extra = {"padding": "symmetric", "bn_epsilon": 1.001e-5}
        return Checkpoint(name, KERAS, _KERAS_BASE + path, md5, top1, pre, extra)
    if name.startswith("efficientnet_"):
        variant = name.rsplit("_", 1)[1]
        md5, top1 = _EFFICIENTNET_H5[variant]
        # the Keras graph computes x/255, then (x - mean) / std with torchvision's numbers (keras#49930)
        return Checkpoint(name, KERAS, f"https://storage.googleapis.com/keras-applications/efficientnet{variant}.h5",
                          md5, top1, "torch")
    if name in _TORCHVISION_PTH:
        filename, top1 = _TORCHVISION_PTH[name]
        extra = {"padding": "symmetric"} if info.family in ("resnet", "wide_resnet", "resnext") \
            else {"ceil_mode": True} if info.family == "squeezenet" else {}
        return Checkpoint(name, TORCHVISION, _TORCH_BASE + filename, filename.rsplit("-", 1)[1].split(".")[0], top1,
                          "torch", extra)
    return None


def imagenet_labels():
    """The 1000 ImageNet-1k class names, in class-index order (shipped with the package)."""
    path = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# ---------------------------------------------------------------------------------------------------------
# Fetching: cache, hash, atomic write

def cache_dir():
    """``$CNNKIT_CACHE_DIR`` or ~/.cache/cnnkit, with a ``weights`` folder."""
    root = os.environ.get("CNNKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cnnkit")
    return os.path.join(root, "weights")


def _other_caches(filename):
    """Where Keras and torch.hub would already have put the same file."""
    home = os.path.expanduser("~")
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(home, ".cache", "torch")
    return [os.path.join(os.environ.get("KERAS_HOME") or os.path.join(home, ".keras"), "models", filename),
            os.path.join(torch_home, "hub", "checkpoints", filename)]


def hash_matches(path, file_hash):
    """Keras' rule for a 32-digit md5 or a 64-digit sha256; torch.hub's for a shorter sha256 prefix."""
    if not file_hash:
        return True
    digest = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(file_hash.lower())


def _mirror(url):
    """``$CNNKIT_WEIGHTS_MIRROR`` (a base URL or folder holding the files by name) replaces the source's host."""
    mirror = os.environ.get("CNNKIT_WEIGHTS_MIRROR")
    if not mirror:
        return url
    if "://" not in mirror:
        mirror = "file://" + os.path.abspath(mirror)
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def fetch(checkpoint, progress=True, timeout=60):
    """The checkpoint's local path: from the cache (Keras' and torch.hub's too), else downloaded.

    The download streams into a temporary file beside the cache entry, is checked for its full length
    and its hash, and only then renamed into place, so an interrupted or corrupt transfer leaves nothing
    that a later run would take for the checkpoint."""
    folder = cache_dir()
    target = os.path.join(folder, checkpoint.filename)
    for path in [target] + _other_caches(checkpoint.filename):
        if os.path.isfile(path) and hash_matches(path, checkpoint.file_hash):
            return path
    url = _mirror(checkpoint.url)
    os.makedirs(folder, exist_ok=True)
    try:
        with replaced_atomically(target) as partial:
            _download(url, partial, progress, timeout)
            if not hash_matches(partial, checkpoint.file_hash):
                raise CnnkitError(f"{url} does not have the hash {checkpoint.file_hash} that {checkpoint.source} "
                                  "publishes for it (a changed or corrupt file); nothing was kept")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", None) or err.strerror or err
        raise CnnkitError(
            f"cannot download {url} ({reason}); download it elsewhere and pass it with --weights FILE "
            f"(weights=FILE), or use --weights none for the untrained model") from None
    return target


def _download(url, path, progress, timeout):
    """Stream ``url`` into ``path``; progress goes to the "keras_cnns" logger every 10% (the CLI shows it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown, started = 0, 0, time.monotonic()
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if progress and total and 100 * done // total >= shown + 10:
                shown = 100 * done // total // 10 * 10
                rate = done / max(time.monotonic() - started, 1e-6) / 1e6
                log.info("downloading %s: %d%% of %.0f MB (%.1f MB/s)", os.path.basename(url), shown,
                         total / 1e6, rate)
        if total and done != total:
            raise OSError(0, f"the transfer ended after {done} of {total} bytes")


# ---------------------------------------------------------------------------------------------------------
# Reading a checkpoint: {source layer: {weight: array}}

def read_keras_h5(path):
    """The layers of a Keras ``save_weights`` / ``save`` HDF5 file, in the file's order."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            layers = {}
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else layer
                names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs["weight_names"]]
                if names:
                    layers[layer] = {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[layer][n]) for n in names}
            return layers
    except (OSError, KeyError) as err:
        raise CnnkitError(f"{path} is not a Keras weights file (HDF5 with layer_names): {err}") from None


def read_torch(path):
    """A PyTorch state dict as numpy arrays (batch-norm step counters dropped)."""
    try:
        import torch
    except ImportError:
        raise CnnkitError(f"reading the PyTorch checkpoint {os.path.basename(path)} needs PyTorch: "
                          "pip install -e \".[torch]\" (or pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CnnkitError(f"{path} is not a readable PyTorch checkpoint: {str(err).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CnnkitError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------------------------------------------------
# Mapping source tensors onto zoo layers: {zoo layer: {keras weight name: array}}

def _conv(state, prefix, bias=True):
    out = {"kernel": state.pop(f"{prefix}.weight").transpose(2, 3, 1, 0)}  # OIHW -> HWIO (grouped too)
    if bias and f"{prefix}.bias" in state:
        out["bias"] = state.pop(f"{prefix}.bias")
    return out


def _bn(state, prefix):
    return {"gamma": state.pop(f"{prefix}.weight"), "beta": state.pop(f"{prefix}.bias"),
            "moving_mean": state.pop(f"{prefix}.running_mean"), "moving_variance": state.pop(f"{prefix}.running_var")}


def _linear(state, prefix):
    return {"kernel": state.pop(f"{prefix}.weight").T, "bias": state.pop(f"{prefix}.bias")}


def _torch_resnet(state, model):
    out = {"conv1_conv": _conv(state, "conv1"), "conv1_bn": _bn(state, "bn1")}
    blocks = sorted({m.groups() for m in (re.match(r"layer(\d+)\.(\d+)\.", k) for k in state) if m},
                    key=lambda sb: (int(sb[0]), int(sb[1])))
    for stage, block in blocks:
        prefix, name = f"layer{stage}.{block}", f"stage{stage}_block{int(block) + 1}"
        for i in (1, 2, 3):
            if f"{prefix}.conv{i}.weight" in state:
                out[f"{name}_{i}_conv"] = _conv(state, f"{prefix}.conv{i}")
                out[f"{name}_{i}_bn"] = _bn(state, f"{prefix}.bn{i}")
        if f"{prefix}.downsample.0.weight" in state:
            out[f"{name}_0_conv"] = _conv(state, f"{prefix}.downsample.0")
            out[f"{name}_0_bn"] = _bn(state, f"{prefix}.downsample.1")
    out["fc"] = _linear(state, "fc")
    return out


def _torch_vgg(state, model):
    convs = [layer.name[:-len("_conv")] for layer in model.layers if layer.name.endswith("_conv")]
    features = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    out, i = {}, 0
    for index in features:
        if state[f"features.{index}.weight"].ndim == 4:
            if i >= len(convs):
                raise CnnkitError(f"the checkpoint has more convolutions than {model.name} ({len(convs)})")
            out[f"{convs[i]}_conv"] = _conv(state, f"features.{index}")
            i += 1
        else:  # the batch norm after the convolution before
            out[f"{convs[i - 1]}_bn"] = _bn(state, f"features.{index}")
    fc1 = _linear(state, "classifier.0")
    units, flat = fc1["kernel"].shape[1], fc1["kernel"].shape[0]
    side = int(round((flat / 512) ** 0.5))
    if side * side * 512 == flat:  # torch flattens (C, H, W), Keras (H, W, C)
        fc1["kernel"] = fc1["kernel"].reshape(512, side, side, units).transpose(1, 2, 0, 3).reshape(flat, units)
    out.update(fc1=fc1, fc2=_linear(state, "classifier.3"), fc3=_linear(state, "classifier.6"))
    return out


def _torch_squeezenet(state, model):
    out = {"conv1_conv": _conv(state, "features.0")}
    fires = sorted({int(k.split(".")[1]) for k in state if ".squeeze." in k})
    for n, index in enumerate(fires, start=2):
        for part in ("squeeze", "expand1x1", "expand3x3"):
            out[f"fire{n}_{part}_conv"] = _conv(state, f"features.{index}.{part}")
    out["conv10_conv"] = _conv(state, "classifier.1")
    return out


def _keras_renamer(rules):
    """A mapping from (source-name regex, zoo-name template) rules. A last layer that no rule names is the
    classifier, whatever the file calls it (Keras' own loader goes by order, and older files name it
    differently: fc1000, Logits, conv_preds)."""
    compiled = [(re.compile(pattern), template) for pattern, template in rules]

    def rename(source):
        for pattern, template in compiled:
            match = pattern.fullmatch(source)
            if match:
                return template(match) if callable(template) else match.expand(template)
        return None

    def mapping(layers, model):
        out = {}
        for source in list(layers):
            if source.startswith(("normalization", "rescaling")):
                layers.pop(source)  # EfficientNet's input normalisation: the recorded preprocessing does it
        names = list(layers)
        for i, source in enumerate(names):
            target = rename(source) or (head_name(model) if i == len(names) - 1 else None)
            if target:
                out[target] = layers.pop(source)
        return out

    return mapping


_KERAS_MAPPINGS = {
    "mobilenet": _keras_renamer([(r"conv1", r"conv1_conv"), (r"conv1_bn", r"conv1_bn"),
                                 (r"conv_(dw|pw)_(\d+)", r"block\2_\1_conv"),
                                 (r"conv_(dw|pw)_(\d+)_bn", r"block\2_\1_bn")]),
    "mobilenet_v2": _keras_renamer([
        (r"Conv1", r"conv1_conv"), (r"bn_Conv1", r"conv1_bn"),
        (r"expanded_conv_depthwise", r"block1_dw_conv"), (r"expanded_conv_depthwise_BN", r"block1_dw_bn"),
        (r"expanded_conv_project", r"block1_project_conv"), (r"expanded_conv_project_BN", r"block1_project_bn"),
        (r"block_(\d+)_(expand|project)", lambda m: f"block{int(m[1]) + 1}_{m[2]}_conv"),
        (r"block_(\d+)_(expand|project)_BN", lambda m: f"block{int(m[1]) + 1}_{m[2]}_bn"),
        (r"block_(\d+)_depthwise", lambda m: f"block{int(m[1]) + 1}_dw_conv"),
        (r"block_(\d+)_depthwise_BN", lambda m: f"block{int(m[1]) + 1}_dw_bn"),
        (r"Conv_1", r"conv_last_conv"), (r"Conv_1_bn", r"conv_last_bn")]),
    "efficientnet": _keras_renamer([
        (r"(stem|top)_(conv|bn)", r"\1_\2"), (r"(block\d+[a-z])_dwconv", r"\1_dw_conv"),
        (r"(block\d+[a-z])_bn", r"\1_dw_bn"),
        (r"(block\d+[a-z])_(expand_conv|expand_bn|se_reduce|se_expand|project_conv|project_bn)", r"\1_\2")]),
    "vgg": _keras_renamer([(r"(block\d_conv\d)", r"\1_conv"), (r"(fc\d)", r"\1")]),
    "preact_resnet": _keras_renamer([
        (r"conv1_conv", r"conv1_conv"), (r"post_bn", r"post_bn"),
        (r"conv(\d)_block(\d+)_(preact_bn|\d_conv|\d_bn)", lambda m: f"stage{int(m[1]) - 1}_block{m[2]}_{m[3]}")]),
    "densenet": _keras_renamer([
        (r"conv1[/_](conv|bn)", r"conv1_\1"), (r"bn", r"post_bn"),
        (r"conv(\d)_block(\d+)_0_bn", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_1_bn"),
        (r"conv(\d)_block(\d+)_1_conv", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_1_conv"),
        (r"conv(\d)_block(\d+)_1_bn", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_2_bn"),
        (r"conv(\d)_block(\d+)_2_conv", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_2_conv"),
        (r"pool(\d)_(bn|conv)", lambda m: f"transition{int(m[1]) - 1}_{m[2]}")]),
}
_TORCH_MAPPINGS = {"vgg": _torch_vgg, "squeezenet": _torch_squeezenet}


def head_name(model):
    """The zoo model's classifier layer (whether or not this build has it)."""
    from keras_cnns.registry import get_model_info

    return {"vgg": "fc3", "squeezenet": "conv10_conv"}.get(get_model_info(model.name).family, "fc")


def _top_names(model):
    return ("fc1", "fc2", "fc3") if head_name(model) == "fc3" else (head_name(model),)


def _mapping_for(checkpoint):
    from keras_cnns.registry import get_model_info

    family = get_model_info(checkpoint.model).family
    if checkpoint.source == KERAS:
        return _KERAS_MAPPINGS[checkpoint.model if checkpoint.model.startswith("mobilenet") else family]
    return _TORCH_MAPPINGS.get(family, _torch_resnet)


def _read(checkpoint, path):
    is_torch = path.endswith((".pth", ".pt", ".bin"))
    if is_torch != (checkpoint.source == TORCHVISION):
        want = "a PyTorch .pth" if checkpoint.source == TORCHVISION else "a Keras .h5"
        raise CnnkitError(f"{checkpoint.model}'s ImageNet weights come from {checkpoint.source}: give {want} "
                          f"file as published ({checkpoint.url}), not {os.path.basename(path)}")
    return read_torch(path) if is_torch else read_keras_h5(path)


def load_into(model, checkpoint, path):
    """Set ``model``'s weights from the checkpoint file at ``path``; returns what was left out (a sentence,
    or "" when everything was loaded). Raises :class:`CnnkitError` naming the first tensor that does not fit,
    and then sets nothing."""
    file = os.path.basename(path)
    tensors = _read(checkpoint, path)
    try:
        mapped = _mapping_for(checkpoint)(tensors, model)
    except KeyError as err:
        raise CnnkitError(f"{file} is not a {checkpoint.source} checkpoint for {checkpoint.model}: it has no "
                          f"tensor {err.args[0]}") from None
    if tensors:
        raise CnnkitError(f"{file} has tensors {checkpoint.model} has no place for, first {next(iter(tensors))}: "
                          "a checkpoint for another model?")
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    if checkpoint.bgr:  # the source's first convolution reads BGR: reverse its input channels
        first = next(iter(layers))
        mapped[first]["kernel"] = mapped[first]["kernel"][:, :, ::-1, :]
    notes = []
    absent = [name for name in _top_names(model) if name in mapped and name not in layers]
    if absent:  # built without its top
        notes.append(f"{', '.join(absent)} not loaded (the model has no top)")
        for name in absent:
            del mapped[name]
    head = head_name(model)
    if head in layers:
        classes = int(layers[head].weights[0].shape[-1])
        if head in mapped and classes != int(mapped[head]["kernel"].shape[-1]):
            notes.append(f"the {int(mapped[head]['kernel'].shape[-1])}-class ImageNet classifier was not loaded: "
                         f"{model.name} has {classes} classes (its classifier starts random)")
            del layers[head], mapped[head]
        elif head not in mapped and classes != 1000:
            notes.append(f"the file has no classifier; {model.name}'s {classes}-class classifier starts random")
            del layers[head]
        elif head in mapped and mapped[head]["kernel"].ndim != len(layers[head].weights[0].shape):
            mapped[head]["kernel"] = mapped[head]["kernel"].reshape(layers[head].weights[0].shape)  # 1x1 conv head
    values = []
    for name, layer in layers.items():
        source = mapped.pop(name, None)
        if source is None:
            raise CnnkitError(f"{file} has no tensors for {model.name}'s layer {name}: a checkpoint for another "
                              "model or configuration (a _notop file for a model with its classifier?)")
        arrays = []
        for weight in layer.weights:
            key = weight.name.rsplit("/", 1)[-1].split(":")[0]
            if key not in source:
                raise CnnkitError(f"{file} has no {key} for {name}")
            array = source.pop(key)
            if tuple(array.shape) != tuple(weight.shape):
                raise CnnkitError(f"{file}: {name}/{key} is {tuple(array.shape)}, {model.name} needs "
                                  f"{tuple(weight.shape)} (a checkpoint for another model, width or input size?)")
            arrays.append(array)
        if source:
            raise CnnkitError(f"{file} has {', '.join(source)} for {name}, which has no such weight")
        values.append((layer, arrays))
    if mapped:
        raise CnnkitError(f"{file} has tensors for layers {model.name} does not have, first {next(iter(mapped))}: "
                          "a checkpoint for a deeper model?")
    for layer, arrays in values:  # nothing is set unless everything fits
        layer.set_weights(arrays)
    return "; ".join(notes)


def resolve(name, weights, options=None, input_shape=None):
    """(checkpoint, local file) for ``weights`` = "imagenet" or a file path; errors say what to do instead."""
    checkpoint = find_checkpoint(name, options, input_shape)
    if checkpoint is None:
        from keras_cnns.registry import get_model_info

        model = get_model_info(name).name
        why = NOT_AVAILABLE.get(model, "no published checkpoint has its architecture")
        raise CnnkitError(f"{model} has no pretrained ImageNet weights ({why}); use weights=None (--weights none) "
                          "or a cnnkit run to start from")
    if weights == "imagenet":
        return checkpoint, fetch(checkpoint)
    if not os.path.isfile(weights):
        raise CnnkitError(f"weights file {weights} does not exist (weights are 'imagenet', none or a file)")
    return checkpoint, weights
