"""The learning-rate range test finds the known good rate of a convex problem."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns.training import lr_find


def _least_squares(scale, seed=0):
    """Noiseless linear regression with inputs ~ N(0, scale^2): the mean squared error's curvature is
    2 scale^2 in every direction, so SGD converges fastest at 1 / (2 scale^2) and diverges above 1 / scale^2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (4096, 10)).astype(np.float32)
    y = x @ rng.normal(0, 1, (10, 1)).astype(np.float32)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model, tf.data.Dataset.from_tensor_slices((x, y)).shuffle(4096, seed=seed).batch(64)


def _train_loss(scale, lr, steps=100):
    model, data = _least_squares(scale)
    model.optimizer.learning_rate.assign(lr)
    first = model.evaluate(data, verbose=0)
    for x, y in data.repeat().take(steps):
        model.train_on_batch(x, y)
    return model.evaluate(data, verbose=0) / first


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_the_suggestion_lies_between_the_best_rate_and_a_tenth_of_it_and_trains(scale):
    diverges_above, best = 1 / scale ** 2, 0.5 / scale ** 2
    model, data = _least_squares(scale)
    found = lr_find.range_test(model, data, min_lr=1e-5, max_lr=10.0, steps=200)
    assert best / 10 < found["suggested"] <= best, found["suggested"]
    assert "4x its best" in found["stopped"] and found["lr"][-1] > diverges_above  # it went past the blow-up
    assert _train_loss(scale, found["suggested"]) < 1e-4  # the suggestion trains
    assert _train_loss(scale, 3 * diverges_above, steps=20) > 1  # what lies beyond the minimum does not


def test_a_loss_that_never_falls_gets_no_suggestion():
    lrs = list(lr_find.schedule(1e-6, 1.0, 50))
    assert lr_find.suggest(lrs, list(np.linspace(1.0, 3.0, 50)))["suggested"] is None
    assert lr_find.suggest(lrs, list(np.linspace(3.0, 1.0, 50)))["suggested"] == pytest.approx(lrs[-1] / 10)
