"""One table of every model: name -> builder + metadata.

Architecture modules call :func:`register` for each variant; listing (``cnnkit models``), creating
(:func:`create_model`) and documenting all read this table.
"""
import dataclasses
import difflib
import inspect
import logging
from typing import Callable, Optional

from keras_cnns.errors import CnnkitError, UnknownModelError, UnknownOptionError

#: How a reference parameter count was counted.
TRAINABLE = "trainable"  # torchvision: trainable weights (no batch-norm moving statistics)
ALL = "all"  # Keras Applications: model.count_params(), moving statistics included


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    builder: Callable
    paper: str
    year: int
    input_shape: tuple
    options: dict
    #: the number of classes of the canonical configuration (1000 for ImageNet models)
    num_classes: int = 1000
    #: exact parameter count at (input_shape, num_classes) of the reference named below, or None
    reference_params: Optional[int] = None
    #: TRAINABLE or ALL (see above)
    params_counted: str = TRAINABLE
    #: the published implementation (or paper table) the count comes from
    reference: str = ""
    description: str = ""

    @property
    def small_input_shape(self):
        """The CIFAR/MNIST-scale input every model also builds and trains at: 32x32."""
        return (32, 32, self.input_shape[2])


_REGISTRY = {}


def register(name, builder, *, family, paper, year, input_shape=(224, 224, 3), options=None, num_classes=1000,
             reference_params=None, params_counted=TRAINABLE, reference="", description=""):
    """Add a model variant: ``builder(num_classes, input_shape, include_top, **options)``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if params_counted not in (TRAINABLE, ALL):
        raise ValueError(f"params_counted must be {TRAINABLE!r} or {ALL!r}")
    _REGISTRY[name] = ModelInfo(
        name=name, family=family, builder=builder, paper=paper, year=year, input_shape=tuple(input_shape),
        options=dict(options or {}), num_classes=num_classes, reference_params=reference_params,
        params_counted=params_counted, reference=reference, description=description,
    )


def _load_architectures():
    import keras_cnns.architectures  # noqa: F401  (registers every family on import)


def list_models(family=None):
    """Names of all registered models (optionally of one family), in registration order."""
    _load_architectures()
    return [n for n, info in _REGISTRY.items() if family is None or info.family == family]


def list_families():
    _load_architectures()
    return list(dict.fromkeys(info.family for info in _REGISTRY.values()))


def get_model_info(name):
    """Metadata for ``name``; unknown names raise :class:`UnknownModelError` with close matches."""
    _load_architectures()
    key = str(name).strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    squashed = {n.replace("_", ""): n for n in _REGISTRY}  # "ResNet-18", "mobilenetv2"
    if key.replace("_", "") in squashed:
        return _REGISTRY[squashed[key.replace("_", "")]]
    raise UnknownModelError(name, difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.6))


def is_model_name(name):
    """Whether ``name`` names a zoo model (in any spelling :func:`get_model_info` accepts)."""
    try:
        get_model_info(name)
        return True
    except UnknownModelError:
        return False


def _normalise_input_shape(input_shape, default):
    if input_shape is None:
        return default
    if isinstance(input_shape, int):
        return (input_shape, input_shape, default[2])
    shape = tuple(input_shape)
    if len(shape) == 2:
        return shape + (default[2],)
    return shape


def create_model(name, num_classes=None, input_shape=None, include_top=True, weights=None, **options):
    """Build a registered model as a tf_keras functional ``Model``.

    ``weights``: None (random initialisation), "imagenet" (the published checkpoint, downloaded once and
    cached, see :mod:`keras_cnns.pretrained`) or the path of such a checkpoint file (the original
    ``.h5`` / ``.pth``). With weights the model is built in the checkpoint's own layout (e.g.
    ``padding="symmetric"``); with another ``num_classes`` everything but the classifier is loaded.

    ``input_shape`` is (H, W, C), (H, W) or one int (square, default channels); it defaults to the
    model's canonical input, ``num_classes`` to its canonical class count. Family options (e.g.
    ``batch_norm=True`` for VGG, ``alpha=0.5`` for MobileNet) are passed through; an option the
    family does not have is a clear error.
    """
    info = get_model_info(name)
    if num_classes is None:
        num_classes = info.num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise CnnkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    merged = {**info.options, **options}
    accepted = inspect.signature(info.builder).parameters
    unknown = sorted(k for k in merged if k not in accepted)
    if unknown:
        allowed = sorted(k for k in accepted if k not in ("num_classes", "input_shape", "include_top"))
        raise UnknownOptionError(f"{info.name} has no option {', '.join(unknown)}; its options are: "
                                 f"{', '.join(allowed)}", unknown)
    for key, value in merged.items():  # a number option given a word (-o alpha=abc) is the user's mistake
        default = accepted[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and value is not None and \
                (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CnnkitError(f"option {key} of {info.name} takes a number (default {default}), got {value!r}")
    shape = _normalise_input_shape(input_shape, info.input_shape)
    checkpoint = path = None
    if weights is not None:
        from keras_cnns import pretrained

        checkpoint, path = pretrained.resolve(info.name, weights, merged, shape)
        for key, value in checkpoint.options.items():
            if key in options and options[key] != value:
                raise CnnkitError(f"{info.name}'s pretrained weights need {key}={value!r}, not {options[key]!r}")
        merged.update(checkpoint.options)
    model = info.builder(num_classes=num_classes, input_shape=shape, include_top=include_top, **merged)
    model._name = info.name
    from keras_cnns.layers.grouped import use_native_grouped_convolutions

    use_native_grouped_convolutions(model)
    if checkpoint is not None:
        left_out = pretrained.load_into(model, checkpoint, path)
        if left_out:
            logging.getLogger("keras_cnns").warning("%s: %s", info.name, left_out)
    return model
