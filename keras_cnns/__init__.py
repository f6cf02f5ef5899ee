"""keras_cnns: the classic CNN architectures as tf_keras functional models.

    >>> import keras_cnns
    >>> model = keras_cnns.create_model("resnet18", num_classes=10, input_shape=(32, 32, 3))
    >>> keras_cnns.list_models()[:3]
    ['lenet5', 'alexnet', 'alexnet_1tower']
"""
import os

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

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "list_families", "get_model_info", "inference_model", "CnnkitError",
           "UnknownModelError"]
