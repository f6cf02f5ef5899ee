"""keras_cnns: the classic CNN architectures as tf_keras functional models.

    >>> import keras_cnns
    >>> model = keras_cnns.create_model("resnet18", num_classes=10, input_shape=(32, 32, 3))
    >>> keras_cnns.list_models()[:3]
    ['lenet5', 'alexnet', 'alexnet_1tower']
"""
import importlib.abc
import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# oneDNN kernels: TensorFlow turns them on by itself only on CPUs with AVX512-VNNI / AMX. On an AVX2 CPU
# they made ResNet-18 training 1.7x faster (benchmarks/RESULTS.md). Must be set before TensorFlow is
# imported; TF_ENABLE_ONEDNN_OPTS=0 opts out. Serving runs small batches, where oneDNN is slower, so
# `cnnkit serve` and `cnnkit predict` turn it off unless the user set the variable (cnnkit/_quiet.py).
ONEDNN_DEFAULTED = "TF_ENABLE_ONEDNN_OPTS" not in os.environ
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_cnns.errors import CnnkitError, UnknownModelError  # noqa: E402
from keras_cnns.registry import create_model, get_model_info, list_families, list_models  # noqa: E402
from keras_cnns.utils import inference_model  # noqa: E402


def _register_with_keras():
    import keras_cnns.layers  # noqa: F401
    import keras_cnns.training.schedules  # noqa: F401


class _RegisterOnKerasImport(importlib.abc.MetaPathFinder):
    """Registers cnnkit's layers and schedules the moment tf_keras is imported, so that
    ``import keras_cnns`` then ``tf_keras.models.load_model("runs/x/best.keras")`` works, while
    ``import keras_cnns`` itself stays free of TensorFlow (which reads its environment once, at import)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tf_keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                _register_with_keras()

            spec.loader.exec_module = exec_module
        return spec


if "tf_keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(finder, _RegisterOnKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnKerasImport())

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "list_families", "get_model_info", "inference_model", "CnnkitError",
           "UnknownModelError"]
