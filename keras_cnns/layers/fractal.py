"""FractalNet's join layer with local and global drop-path (Larsson et al., 2017).

A ``FractalPathSampler`` draws, once per training step, whether the step uses *global* drop-path
(one column is chosen for the whole network) or *local* drop-path (every join drops each of its
inputs with probability ``local_drop``, keeping at least one). Every ``FractalJoin`` reads that
draw as an extra input, so all joins of the network agree on the chosen column. At inference no
path is dropped and every join is the element-wise mean of its inputs (the full network).
"""
import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="keras_cnns")
class FractalPathSampler(keras.layers.Layer):
    """Emits ``(batch, 2)``: [is_global, column] for this step (zeros at inference)."""

    def __init__(self, num_columns, global_probability=0.5, **kwargs):
        super().__init__(**kwargs)
        if num_columns < 1:
            raise ValueError(f"num_columns must be >= 1, got {num_columns!r}")
        if not 0.0 <= global_probability <= 1.0:
            raise ValueError(f"global_probability must be in [0, 1], got {global_probability!r}")
        self.num_columns = int(num_columns)
        self.global_probability = float(global_probability)

    def call(self, inputs, training=None):
        batch = tf.shape(inputs)[:1]
        if not training:
            return tf.zeros(tf.concat([batch, [2]], 0), tf.float32)
        is_global = tf.cast(tf.random.uniform([]) < self.global_probability, tf.float32)
        column = tf.cast(tf.random.uniform([], 0, self.num_columns, dtype=tf.int32), tf.float32)
        return tf.tile(tf.reshape(tf.stack([is_global, column]), [1, 2]), tf.concat([batch, [1]], 0))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        config = super().get_config()
        config.update(num_columns=self.num_columns, global_probability=self.global_probability)
        return config


@keras.utils.register_keras_serializable(package="keras_cnns")
class FractalJoin(keras.layers.Layer):
    """Mean of its inputs ``[x_0, ..., x_k, path_code]``; ``columns[i]`` is the column of ``x_i``."""

    def __init__(self, columns, local_drop=0.15, **kwargs):
        super().__init__(**kwargs)
        if len(columns) < 1:
            raise ValueError("a join needs at least one input column")
        if not 0.0 <= local_drop < 1.0:
            raise ValueError(f"local_drop must be in [0, 1), got {local_drop!r}")
        self.columns = [int(c) for c in columns]
        self.local_drop = float(local_drop)

    def call(self, inputs, training=None):
        branches, code = list(inputs[:-1]), inputs[-1]
        stacked = tf.stack(branches, axis=0)
        if not training or len(branches) == 1:
            return tf.reduce_mean(stacked, axis=0)
        n = len(branches)
        is_global, column = code[0, 0], code[0, 1]
        local = tf.cast(tf.random.uniform([n]) >= self.local_drop, tf.float32)
        rescue = tf.one_hot(tf.random.uniform([], 0, n, dtype=tf.int32), n)
        local = tf.where(tf.reduce_sum(local) > 0, local, rescue)
        chosen = tf.cast(tf.equal(tf.constant(self.columns, tf.float32), column), tf.float32)
        chosen = tf.where(tf.reduce_sum(chosen) > 0, chosen, tf.ones([n]))
        weights = tf.where(is_global > 0.5, chosen, local)
        weights = tf.cast(weights / tf.reduce_sum(weights), stacked.dtype)
        return tf.tensordot(weights, stacked, axes=1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "columns": self.columns, "local_drop": self.local_drop}
