"""Local Response Normalization (Krizhevsky et al., 2012, section 3.3)."""
import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="keras_cnns")
class LocalResponseNormalization(keras.layers.Layer):
    """b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ^ beta, across channels.

    Defaults are AlexNet's: n = 5 neighbouring channels (``depth_radius`` = 2), k = 2,
    alpha = 1e-4, beta = 0.75. It has no weights. Uses TensorFlow's LRN op, which TFLite has
    as a builtin (LOCAL_RESPONSE_NORMALIZATION).
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        x = inputs
        if x.dtype in (tf.bfloat16, tf.float16):  # mixed precision: the CPU has no 16-bit LRN kernel
            x = tf.cast(x, tf.float32)
        x = tf.nn.local_response_normalization(x, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha,
                                               beta=self.beta)
        return tf.cast(x, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)
        return config
