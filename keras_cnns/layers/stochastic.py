"""Training-time stochastic regularisers: stochastic depth, drop-path and DropConnect.

Each one is random only when called with ``training=True``; its inference form is a fixed,
deterministic computation (no random ops in an exported graph).
"""
import tensorflow as tf
import tf_keras as keras


def _check_rate(name, value, low=0.0, high=1.0, inclusive_high=False):
    ok = low <= value < high or (inclusive_high and value == high)
    if not ok:
        bracket = "]" if inclusive_high else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")


def _per_sample_mask(inputs, keep_prob):
    """A Bernoulli(keep_prob) 0/1 mask of shape (batch, 1, ..., 1) broadcastable to ``inputs``."""
    shape = tf.concat([tf.shape(inputs)[:1], tf.ones([tf.rank(inputs) - 1], tf.int32)], axis=0)
    return tf.cast(tf.random.uniform(shape, dtype=tf.float32) < keep_prob, inputs.dtype)


@keras.utils.register_keras_serializable(package="keras_cnns")
class StochasticDepth(keras.layers.Layer):
    """Residual merge with stochastic depth (Huang et al., 2016): ``[shortcut, residual] -> sum``.

    Training: each sample keeps its residual branch with probability ``survival_probability``
    (otherwise the block is the identity). Inference: the full network is used and the branch is
    scaled by its survival probability, ``shortcut + p * residual`` — the paper's expectation rule.
    """

    def __init__(self, survival_probability=1.0, **kwargs):
        super().__init__(**kwargs)
        _check_rate("survival_probability", survival_probability, 0.0, 1.0, inclusive_high=True)
        if survival_probability == 0.0:
            raise ValueError("survival_probability must be > 0")
        self.survival_probability = float(survival_probability)

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        p = self.survival_probability
        if p == 1.0:
            return shortcut + residual
        if training:
            return shortcut + _per_sample_mask(residual, p) * residual
        return shortcut + tf.cast(p, residual.dtype) * residual

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "survival_probability": self.survival_probability}


@keras.utils.register_keras_serializable(package="keras_cnns")
class DropPath(keras.layers.Layer):
    """Drops a whole branch per sample with probability ``rate`` (inverted: kept samples are scaled
    by 1 / (1 - rate) in training, so inference is the identity). EfficientNet's "drop connect"
    on MBConv skip connections is this operation."""

    def __init__(self, rate=0.0, **kwargs):
        super().__init__(**kwargs)
        _check_rate("rate", rate)
        self.rate = float(rate)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        return inputs * _per_sample_mask(inputs, keep) / tf.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class _DropConnect:
    """What DropConnect adds to a Keras layer with a ``kernel``: in training each weight is zeroed
    with probability ``rate`` (a fresh mask per step) and the kept weights are scaled by
    1 / (1 - rate); at inference the kernel is used unchanged."""

    def _set_rate(self, rate):
        _check_rate("rate", rate)
        self.rate = float(rate)

    def _kernel(self, training):
        if not (training and self.rate > 0.0):
            return self.kernel
        keep = 1.0 - self.rate
        mask = tf.cast(tf.random.uniform(tf.shape(self.kernel), dtype=tf.float32) < keep, self.kernel.dtype)
        return self.kernel * mask / tf.cast(keep, self.kernel.dtype)

    def _bias_and_activation(self, outputs):
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@keras.utils.register_keras_serializable(package="keras_cnns")
class DropConnectDense(_DropConnect, keras.layers.Dense):
    """Dense layer with DropConnect (Wan et al., 2013): drops *weights*, not units, in training."""

    def __init__(self, units, rate=0.5, **kwargs):
        super().__init__(units, **kwargs)
        self._set_rate(rate)

    def call(self, inputs, training=None):
        kernel = self._kernel(training)
        if inputs.shape.rank > 2:
            return self._bias_and_activation(tf.tensordot(inputs, kernel, axes=[[-1], [0]]))
        return self._bias_and_activation(tf.matmul(inputs, kernel))


@keras.utils.register_keras_serializable(package="keras_cnns")
class DropConnectConv2D(_DropConnect, keras.layers.Conv2D):
    """Conv2D with DropConnect on its kernel (the plain convolution at inference)."""

    def __init__(self, filters, kernel_size, rate=0.5, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._set_rate(rate)

    def call(self, inputs, training=None):
        return self._bias_and_activation(self.convolution_op(inputs, self._kernel(training)))
