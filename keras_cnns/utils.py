"""Small helpers on built models."""


def inference_model(model):
    """The model with training-only outputs removed (GoogLeNet's auxiliary classifiers).

    The first output is the main classifier; the returned model shares the weights of ``model``.
    """
    if len(model.outputs) == 1:
        return model
    import tf_keras as keras

    return keras.Model(model.inputs, model.outputs[0], name=model.name)


def onednn_enabled():
    """Whether this process's TensorFlow runs oneDNN kernels (decided once, from TF_ENABLE_ONEDNN_OPTS, when
    TensorFlow started: keras_cnns turns them on for training unless the user set the variable)."""
    import tensorflow as tf  # noqa: F401 - starts TensorFlow if nothing has yet
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())
