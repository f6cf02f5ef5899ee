"""Fractional max pooling (Graham, 2014) with pseudo-random pooling regions.

The output size is ``floor(n_in / pooling_ratio)`` for a ratio in (1, 2]: pooling regions of size 1
or 2 (ceil(alpha)) alternate along each axis in an order that depends on an offset ``u``:
boundaries ``a_i = floor(alpha (i + u)) - floor(alpha u)``, alpha = n_in / n_out. In training ``u`` is
drawn afresh on every call (random regions); at inference it is fixed at 0.5, so the layer is a
deterministic pooling made of gathers and maxima — ops every runtime, TFLite included, has.
"""
import math

import numpy as np
import tensorflow as tf
import tf_keras as keras


def fractional_pooling_boundaries(n_in, n_out, u):
    """Region starts a_0..a_{n_out} (a_0 = 0, a_{n_out} = n_in) for offset u in [0, 1)."""
    alpha = n_in / n_out
    i = np.arange(n_out + 1, dtype=np.float64)
    starts = np.floor(alpha * (i + u)) - np.floor(alpha * u)
    starts = np.minimum(starts, n_in).astype(np.int64)
    starts[-1] = n_in
    return starts

#: the paper's default pooling ratio
SQRT2 = math.sqrt(2.0)


def _boundaries_tensor(n_in, n_out, u):
    alpha = n_in / n_out
    i = tf.range(n_out + 1, dtype=tf.float32)
    starts = tf.floor(alpha * (i + u)) - tf.floor(alpha * u)
    starts = tf.minimum(tf.cast(starts, tf.int32), n_in)
    return tf.concat([starts[:-1], [n_in]], axis=0)


@keras.utils.register_keras_serializable(package="keras_cnns")
class FractionalMaxPooling2D(keras.layers.Layer):
    """Max pooling by a fractional factor (default sqrt(2)) with random regions while training.

    ``overlapping=True`` lets each region also include its right/bottom neighbour boundary, as in
    the paper's overlapping variant.
    """

    def __init__(self, pooling_ratio=SQRT2, overlapping=False, inference_offset=0.5, **kwargs):
        super().__init__(**kwargs)
        if not 1.0 < pooling_ratio <= 2.0:
            raise ValueError(f"pooling_ratio must be in (1, 2], got {pooling_ratio!r}")
        if not 0.0 <= inference_offset < 1.0:
            raise ValueError(f"inference_offset must be in [0, 1), got {inference_offset!r}")
        self.pooling_ratio = float(pooling_ratio)
        self.overlapping = bool(overlapping)
        self.inference_offset = float(inference_offset)

    def _out_size(self, n_in):
        return max(1, int(math.floor(n_in / self.pooling_ratio)))

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError("FractionalMaxPooling2D needs a static input height and width")
        super().build(input_shape)

    def _pool_axis(self, x, axis, n_in, starts):
        n_out = self._out_size(n_in)
        begin, end = starts[:-1], starts[1:]
        if self.overlapping:
            end = tf.minimum(end + 1, n_in)
        widest = int(math.ceil(n_in / n_out)) + (2 if self.overlapping else 1)
        pooled = None
        for j in range(widest):
            index = tf.minimum(begin + j, end - 1)
            taken = tf.gather(x, index, axis=axis)
            pooled = taken if pooled is None else tf.maximum(pooled, taken)
        return pooled

    def call(self, inputs, training=None):
        h, w = int(inputs.shape[1]), int(inputs.shape[2])
        out_h, out_w = self._out_size(h), self._out_size(w)
        if training:
            u_rows, u_cols = tf.unstack(tf.random.uniform([2], 0.0, 1.0))
            rows = _boundaries_tensor(h, out_h, u_rows)
            cols = _boundaries_tensor(w, out_w, u_cols)
        else:
            rows = tf.constant(fractional_pooling_boundaries(h, out_h, self.inference_offset), tf.int32)
            cols = tf.constant(fractional_pooling_boundaries(w, out_w, self.inference_offset), tf.int32)
        x = self._pool_axis(inputs, 1, h, rows)
        return self._pool_axis(x, 2, w, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._out_size(input_shape[1]), self._out_size(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(
            pooling_ratio=self.pooling_ratio, overlapping=self.overlapping, inference_offset=self.inference_offset
        )
        return config
