"""The parameter-free "option A" shortcut of the CIFAR ResNets (He et al., 2016, section 4.2)."""
import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="keras_cnns")
class ZeroPadShortcut(keras.layers.Layer):
    """Identity shortcut across a stage change: subsample by ``strides`` and zero-pad the channels
    up to ``filters`` (extra channels are zeros, so the shortcut has no parameters)."""

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.filters - int(inputs.shape[-1])
        if extra < 0:
            raise ValueError(f"ZeroPadShortcut cannot shrink {inputs.shape[-1]} channels to {self.filters}")
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.strides
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}
