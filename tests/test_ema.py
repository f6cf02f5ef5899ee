"""--ema: the moving average of the weights is what is validated, checkpointed and exported; training steps on
the raw weights; a resumed run keeps the average."""
import errno
import os

import numpy as np
import pytest
import tf_keras as keras

from keras_cnns.errors import CnnkitError
from keras_cnns.files import load_model_file
from keras_cnns.training import TrainConfig, resume, train
from keras_cnns.training import callbacks as run_callbacks
from keras_cnns.training.callbacks import AveragedWeights, RecalibrateBatchNorm
from keras_cnns.training.optimizers import averaged_weights, make_optimizer
from keras_cnns.training.runs import read_config

DECAY = 0.8


def _toy():
    """Dense -> batch norm -> softmax on 8 features, 3 classes."""
    inputs = keras.Input((8,))
    x = keras.layers.Dense(6, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(keras.layers.ReLU()(x))
    return keras.Model(inputs, outputs)


class Probe(keras.callbacks.Callback):
    """Records the trainable weights after every step, what the model holds when the epoch's checkpoints are
    written, and what it starts each epoch from."""

    def __init__(self):
        super().__init__()
        self.steps, self.saved, self.started, self.statistics = [], [], [], []

    def _weights(self):
        return [v.numpy().copy() for v in self.model.trainable_variables]

    def on_train_begin(self, logs=None):
        self.steps.append(self._weights())  # w_0: where the average starts

    def on_epoch_begin(self, epoch, logs=None):
        self.started.append(self._weights())

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.saved.append(self._weights())
        bn = self.model.get_layer("bn")
        self.statistics.append((bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()))


def _closed_form(steps):
    """The average after len(steps) - 1 steps: d^T w_0 + sum_t (1 - d) d^(T - t) w_t."""
    T = len(steps) - 1
    return [DECAY ** T * steps[0][k] + sum((1 - DECAY) * DECAY ** (T - t) * steps[t][k] for t in range(1, T + 1))
            for k in range(len(steps[0]))]


def test_the_checkpointed_weights_are_the_closed_form_average_and_training_goes_on_from_the_raw_ones():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = keras.utils.to_categorical(rng.randint(3, size=40), 3)
    model = _toy()
    model.compile(make_optimizer("sgd", 0.2, ema=DECAY), loss="categorical_crossentropy")
    averaged, probe = AveragedWeights(), Probe()
    recalibrate = RecalibrateBatchNorm([x[:20]])
    raw_statistics = []

    class RawStatistics(keras.callbacks.Callback):  # what training left in the batch norm, before validation
        def on_test_begin(self, logs=None):
            bn = self.model.get_layer("bn")
            raw_statistics.append((bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()))

    model.fit(x, y, batch_size=10, epochs=3, validation_data=(x[:10], y[:10]), verbose=0,
              callbacks=[RawStatistics(), averaged, recalibrate, probe, averaged.restorer()])
    steps_per_epoch = 4
    for epoch in range(3):
        trained = probe.steps[:1 + steps_per_epoch * (epoch + 1)]
        for saved, expected in zip(probe.saved[epoch], _closed_form(trained)):
            np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-6)
        if epoch:  # the next epoch trains on from the raw weights, with the raw batch-norm statistics
            for started, raw in zip(probe.started[epoch], trained[-1 - steps_per_epoch]):
                np.testing.assert_array_equal(started, raw)
    # the saved statistics are the average's own (re-estimated), not the raw ones training kept
    assert not np.allclose(probe.statistics[0][0], raw_statistics[0][0])
    bn = model.get_layer("bn")
    recalibrated_mean = keras.backend.get_value(bn.moving_mean)
    np.testing.assert_array_equal(recalibrated_mean, probe.statistics[-1][0])  # the run ends on the average
    for final, expected in zip(model.trainable_variables, _closed_form(probe.steps)):
        np.testing.assert_allclose(final.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_decay_outside_0_1_is_refused_and_a_too_long_span_is_warned_of(tmp_path, caplog):
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(CnnkitError, match="--ema is the moving average's decay"):
            TrainConfig(ema=bad).validate()
    result = train(TrainConfig(data="shapes:8", model="lenet5", epochs=1, ema=0.999, output=str(tmp_path / "long")))
    assert "--ema 0.999 averages over about 1000 steps" in caplog.text
    assert read_config(result.run_dir)["train"]["ema"] == 0.999


def test_a_resumed_run_keeps_averaging_where_it_stopped(tmp_path, monkeypatch):
    """Epoch 2's checkpoint fills the disk; the resumed run's optimizer starts from epoch 1's average (which is
    what epoch 1's last.keras holds: LeNet has no batch norm)."""
    run = str(tmp_path / "ema")
    real_save, saves = keras.Model.save, {"n": 0}

    def failing_save(self, path, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", failing_save)
    with pytest.raises(CnnkitError, match="no space left"):
        train(TrainConfig(epochs=3, ema=0.9, output=run))
    monkeypatch.setattr(keras.Model, "save", real_save)
    epoch1 = load_model_file(os.path.join(run, "last.keras")).get_weights()
    keras.backend.clear_session()

    found = []

    class Watch(AveragedWeights):
        def on_epoch_begin(self, epoch, logs=None):  # after BackupAndRestore restored the run
            if not found:
                found.append([v.numpy() for v in averaged_weights(self.model.optimizer,
                                                                  self.model.trainable_variables)])

    monkeypatch.setattr(run_callbacks, "AveragedWeights", Watch)
    monkeypatch.setattr("keras_cnns.training.trainer.AveragedWeights", Watch)
    result = resume(run)
    assert result.metrics["epochs_completed"] == 3
    for average, saved in zip(found[0], epoch1):
        np.testing.assert_array_equal(average, saved)
