"""Batch-norm statistics that match what the network learnt: recalibration, the momentum rule, a check.

A batch-norm layer trains on the statistics of each batch but infers with moving averages of them. On a
short run (a few hundred steps) those averages lag behind the weights, and the saved model can be far
worse than its training log says. :func:`recalibrate` replaces the moving mean and variance of every
trainable batch-norm layer with the exact statistics of its inputs over a data set, in one pass in which
batch-norm layers normalise with their batch's statistics (as in training) while dropout, stochastic
depth and frozen layers run as at inference. The per-batch moments are pooled exactly (the mean and
population variance of the layer's inputs over every image), like PyTorch's ``swa_utils.update_bn``.
"""
import contextlib
import math

import numpy as np

#: an epoch of at least this many steps with a moving average of <= a tenth of an epoch needs no recalibration
LONG_EPOCH_STEPS = 1000
MOMENTUM_RANGE = (0.9, 0.99)
#: inference-mode accuracy on the training split this far (in accuracy points) below training-mode accuracy
#: is reported as a likely batch-norm (or dropout) problem
GAP_WARNING = 0.05
#: the smallest epsilon the fused batch-norm kernel accepts (as in Keras' own fused path)
_FUSED_MIN_EPSILON = 1.001e-5


def _bn_base():
    from tf_keras.src.layers.normalization.batch_normalization import BatchNormalizationBase

    return BatchNormalizationBase


def batch_norm_layers(model, trainable_only=True):
    """Every batch-norm layer of ``model`` at any depth (nested models, tfmot wrappers), each once."""
    base = _bn_base()
    return [layer for layer in model.submodules
            if isinstance(layer, base) and layer.built and (layer.trainable or not trainable_only)]


def default_momentum(steps_per_epoch):
    """The batch-norm momentum for an epoch of ``steps_per_epoch`` steps when none is set: 1 - 10 / steps,
    clipped to :data:`MOMENTUM_RANGE`. The moving average then spans about a tenth of an epoch."""
    low, high = MOMENTUM_RANGE
    return round(min(high, max(low, 1.0 - 10.0 / max(1, steps_per_epoch))), 4)


def needs_recalibration(steps_per_epoch, momentum):
    """(bool, why): recalibrate before every validation unless the epoch is long and the average short."""
    window = 1.0 / (1.0 - momentum)
    if steps_per_epoch >= LONG_EPOCH_STEPS and window <= steps_per_epoch / 10:
        return False, (f"{steps_per_epoch} steps per epoch: the moving averages (momentum {momentum}, about "
                       f"{window:.0f} steps) are current at every epoch's end")
    return True, (f"{steps_per_epoch} steps per epoch (fewer than {LONG_EPOCH_STEPS}, or a moving average "
                  f"of about {window:.0f} steps at momentum {momentum}): moving averages lag behind the weights")


@contextlib.contextmanager
def _batch_statistics(layers, taps):
    """Within: each of ``layers`` normalises with its batch's moments and appends (index, mean, var,
    count) to ``taps``; other batch-norm layers are untouched. Patches the class's ``call`` (every
    call of a layer resolves it there, tfmot wrappers included), restored on exit."""
    import tensorflow as tf

    base = _bn_base()
    original = base.call
    index = {id(layer): i for i, layer in enumerate(layers)}

    def call(self, inputs, training=None, mask=None):
        if id(self) not in index:
            return original(self, inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        shape = self.moving_mean.shape
        if x.shape.rank == 4 and list(self.axis) == [3] and self.epsilon >= _FUSED_MIN_EPSILON:
            # the fused kernel training uses (MobileNet v2 at 32x32: 0.6x the time of moments + normalisation);
            # its batch variance is the unbiased one, n / (n - 1) times the population variance pooled below
            ones, zeros = tf.ones(shape, tf.float32), tf.zeros(shape, tf.float32)
            gamma = ones if self.gamma is None else tf.cast(self.gamma, tf.float32)
            beta = zeros if self.beta is None else tf.cast(self.beta, tf.float32)
            out, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                                   is_training=True)
            count = tf.cast(tf.size(x) // tf.size(mean), tf.float32)
            variance = unbiased * tf.maximum(count - 1.0, 0.0) / count
            taps.append((index[id(self)], mean, variance, tf.cast(count, tf.float64)))
            return tf.cast(out, inputs.dtype)
        axes = [a for a in range(x.shape.rank) if a not in self.axis]
        mean, variance = tf.nn.moments(x, axes, keepdims=True)
        count = tf.cast(tf.size(x), tf.float64) / tf.cast(tf.size(mean), tf.float64)
        taps.append((index[id(self)], tf.reshape(mean, shape), tf.reshape(variance, shape), count))
        broadcast = mean.shape
        gamma = None if self.gamma is None else tf.reshape(tf.cast(self.gamma, tf.float32), broadcast)
        beta = None if self.beta is None else tf.reshape(tf.cast(self.beta, tf.float32), broadcast)
        out = tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)
        return tf.cast(out, inputs.dtype)

    base.call = call
    try:
        yield
    finally:
        base.call = original


class Recalibrator:
    """Sets every trainable batch-norm layer's moving mean/variance to its inputs' statistics over a data set.

    Holds one traced pass, so recalibrating every epoch traces the model once.
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.layers = batch_norm_layers(model)
        self._taps = []

        def step(x):
            del self._taps[:]
            model(x, training=False)
            return list(self._taps)

        self._step = tf.function(step, reduce_retracing=True)

    def __call__(self, dataset):
        """``dataset`` yields image batches or (images, labels), un-augmented and shuffled (batches of one class
        would bias the layers behind a batch norm). Returns ``{"layers", "images"}``."""
        if not self.layers:
            return {"layers": 0, "images": 0}
        # per layer: count, mean, sum of squared deviations, merged batch by batch (Chan et al.)
        sums = [[0.0, 0.0, 0.0] for _ in self.layers]
        images = 0
        with _batch_statistics(self.layers, self._taps):
            for batch in dataset:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                images += int(x.shape[0])
                for i, mean, variance, count in self._step(x):
                    acc, count = sums[int(i)], float(count)
                    mean, variance = mean.numpy().astype(np.float64), variance.numpy().astype(np.float64)
                    total = acc[0] + count
                    delta = mean - acc[1]
                    acc[1] = acc[1] + delta * (count / total)
                    acc[2] = acc[2] + variance * count + delta ** 2 * (acc[0] * count / total)
                    acc[0] = total
        for layer, (count, mean, m2) in zip(self.layers, sums):
            if count:
                layer.moving_mean.assign(np.asarray(mean, np.float32))
                layer.moving_variance.assign(np.asarray(m2 / count, np.float32))
        return {"layers": len(self.layers), "images": images}


def recalibrate(model, dataset):
    """One-off :class:`Recalibrator` pass: ``model``'s batch-norm statistics from ``dataset``."""
    return Recalibrator(model)(dataset)


def set_momentum(model, momentum):
    for layer in batch_norm_layers(model, trainable_only=False):
        layer.momentum = momentum


def consistency_check(model, dataset, training_accuracy, max_batches=64):
    """Inference-mode accuracy of a single-output ``model`` on (a sample of) the training split, as
    (images, one-hot labels) batches, next to the last epoch's training-mode accuracy; a ``warning`` when
    inference is more than :data:`GAP_WARNING` below it."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)  # MobileNet v2: 3 s, eager 7 s
    correct = seen = 0
    for x, y in dataset.take(max_batches):
        out = forward(x)
        correct += int(np.sum(np.argmax(out, -1) == np.argmax(y, -1)))
        seen += int(x.shape[0])
    inference = correct / max(1, seen)
    result = {"training_mode_accuracy": training_accuracy, "inference_mode_accuracy": round(inference, 4),
              "images": seen, "warning": None}
    if training_accuracy is not None and math.isfinite(training_accuracy) and \
            training_accuracy - inference > GAP_WARNING:
        result["warning"] = (f"inference-mode accuracy on the training split is {inference:.1%}, "
                             f"{(training_accuracy - inference) * 100:.0f} points below the last epoch's training "
                             f"accuracy ({training_accuracy:.1%}): the model behaves differently at inference; likely "
                             "cause: batch-norm statistics that do not match the weights (very small batches, "
                             "--bn-recalibrate never) or heavy dropout")
    return result
