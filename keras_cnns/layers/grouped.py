"""Grouped convolutions (ResNeXt, AlexNet's two towers) on TensorFlow's own convolution kernel.

tf_keras runs every ``Conv2D`` with ``groups > 1`` through an XLA-compiled function, because TensorFlow's default
(Eigen) CPU kernel cannot take the gradient of a grouped convolution. Where the plain kernel can (oneDNN, which
TensorFlow turns on by itself on CPUs with AVX-512 VNNI/BF16 or AMX, and GPUs), XLA's CPU backward pass is by far
the slower one: one training step of ResNeXt-50 32x4d at 64x64, batch 16, took 8.6 s through XLA and 0.30 s on
the plain kernel (2 cores, AVX-512 with VNNI and BF16, TensorFlow 2.21). Whether the plain kernel can is asked of
TensorFlow itself, once: a CPU without oneDNN keeps the XLA path, and the answers are the same either way.
"""
import functools


@functools.lru_cache(maxsize=None)
def native_grouped_gradients():
    """Can TensorFlow's own kernel, on the default device, take the gradient of a grouped convolution?"""
    import tensorflow as tf

    x = tf.ones((1, 3, 3, 4))
    kernel = tf.ones((3, 3, 2, 4))  # 2 groups
    try:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.conv2d(x, kernel, 1, "SAME")
        tape.gradient(y, [x, kernel])
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return False
    return True


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _layers(layer)
        if hasattr(getattr(layer, "layer", None), "groups"):  # the layer inside a tensorflow-model-optimization wrapper
            yield layer.layer


def use_native_grouped_convolutions(model):
    """Run ``model``'s grouped convolutions on TensorFlow's own kernel where it can take their gradients (see the
    module's text); returns how many layers now do. Not saved with the model: a loaded model is given it again
    (``keras_cnns.create_model`` and ``keras_cnns.files.load_model_file`` do)."""
    import tf_keras as keras

    grouped = [layer for layer in _layers(model) if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]
    if not grouped or not native_grouped_gradients():
        return 0
    for layer in grouped:
        layer._jit_compiled_convolution_op = layer.convolution_op
    return len(grouped)
