"""Learning-rate schedules from the notes, as Keras ``LearningRateSchedule`` objects over training steps.

All times are given in epochs and converted with ``steps_per_epoch``:

- ``constant``: alpha0 (a plain float, so ``plateau`` can lower it);
- ``step``: alpha0 * gamma^floor(t / step_epochs);
- ``exponential``: alpha0 * e^(-k t);
- ``inverse-time``: alpha0 / (1 + k t);
- ``cosine``: alpha0 * (1 + cos(pi t / T)) / 2 down to ``min_lr``;
- ``sgdr``: cosine with warm restarts (Loshchilov & Hutter), first period ``restart_epochs``,
  each period ``t_mul`` times longer and its peak ``m_mul`` times lower;
- ``plateau``: constant until the validation loss stops improving, then x ``gamma``;
- ``warmup_epochs`` > 0 puts a linear warm-up from ~0 to alpha0 in front of any of them.
"""
import math

import tf_keras as keras

from keras_cnns.errors import CnnkitError

SCHEDULES = ("constant", "step", "exponential", "inverse-time", "cosine", "sgdr", "plateau")


@keras.utils.register_keras_serializable(package="keras_cnns")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over ``warmup_steps`` to ``after(0)``, then ``after(step - warmup_steps)``."""

    def __init__(self, after, warmup_steps):
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def _after(self, step):
        import tensorflow as tf

        if isinstance(self.after, keras.optimizers.schedules.LearningRateSchedule):
            return tf.cast(self.after(step), tf.float32)
        return tf.constant(float(self.after), tf.float32)

    def __call__(self, step):
        import tensorflow as tf

        step = tf.cast(step, tf.float32)
        warm = tf.cast(self.warmup_steps, tf.float32)
        peak = self._after(0)
        return tf.cond(step < warm, lambda: peak * (step + 1.0) / warm,
                       lambda: self._after(step - warm))

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {"after": after, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        return cls(after, config["warmup_steps"])


def build_schedule(name, lr, steps_per_epoch, epochs, warmup_epochs=0, step_epochs=None, gamma=0.1, decay=0.1,
                   restart_epochs=None, t_mul=2.0, m_mul=1.0, min_lr=0.0):
    """A learning rate (float) or schedule (over optimizer steps) for ``name``; see the module doc."""
    schedules = keras.optimizers.schedules
    name = str(name).lower().replace("_", "-")
    if name not in SCHEDULES:
        raise CnnkitError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    if lr <= 0:
        raise CnnkitError(f"learning rate must be positive, got {lr}")
    if not 0 <= warmup_epochs < epochs:
        raise CnnkitError(f"warm-up must be shorter than the run: {warmup_epochs} of {epochs} epochs")
    spe = int(steps_per_epoch)
    decay_epochs = epochs - warmup_epochs
    if name in ("constant", "plateau"):
        schedule = float(lr)
    elif name == "step":
        every = step_epochs or max(1, decay_epochs // 3)
        schedule = schedules.ExponentialDecay(lr, decay_steps=every * spe, decay_rate=gamma, staircase=True)
    elif name == "exponential":
        schedule = schedules.ExponentialDecay(lr, decay_steps=spe, decay_rate=math.exp(-decay))
    elif name == "inverse-time":
        schedule = schedules.InverseTimeDecay(lr, decay_steps=spe, decay_rate=decay)
    elif name == "cosine":
        schedule = schedules.CosineDecay(lr, decay_steps=decay_epochs * spe, alpha=min_lr / lr)
    else:  # sgdr
        first = restart_epochs or max(1, decay_epochs // 3)
        schedule = schedules.CosineDecayRestarts(lr, first_decay_steps=first * spe, t_mul=t_mul, m_mul=m_mul,
                                                 alpha=min_lr / lr)
    if warmup_epochs:
        schedule = LinearWarmup(schedule, warmup_epochs * spe)
    return schedule


def learning_rate_at(optimizer):
    """The learning rate of the optimizer's most recent step (its first, before any), as a float."""
    lr = optimizer.learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(max(0, int(optimizer.iterations) - 1))
    return float(keras.backend.get_value(lr))


def cycle_end_epochs(epochs, restart_epochs, t_mul=1.0, warmup_epochs=0):
    """Epoch indices (0-based) at which an SGDR cycle ends: where a snapshot ensemble takes its members."""
    ends, start, length = [], warmup_epochs, float(restart_epochs)
    while start + length <= epochs + 1e-9:
        start += length
        ends.append(int(round(start)) - 1)
        length *= t_mul
    return ends
