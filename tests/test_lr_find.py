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


def test_the_schedule_grows_exponentially_from_the_least_to_the_most():
    # 1e-4 to 1 in 5 steps: a factor 10 a step
    np.testing.assert_allclose(lr_find.schedule(1e-4, 1.0, 5), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    np.testing.assert_allclose(lr_find.schedule(0.5, 2.0, 1), [0.5])  # one step: the least


class _ScriptedModel:
    """A model whose step losses are given: what range_test reads and writes, nothing else."""

    def __init__(self, losses):
        self.losses, self.rates, self.weights = list(losses), [], []
        model = self

        class Rate:
            def assign(self, value):
                model.rates.append(float(value))

        self.optimizer = type("Optimizer", (), {"learning_rate": Rate()})()

    def train_on_batch(self, x, y, sample_weight=None, reset_metrics=False, return_dict=False):
        assert reset_metrics and return_dict  # each step's own loss, not a running mean
        self.weights.append(sample_weight)
        return {"loss": self.losses[len(self.rates) - 1]}


def test_the_range_test_smooths_with_bias_correction_and_stops_past_four_times_the_best():
    # losses 4, 2, 1, then 100: the average with bias correction (0.9 momentum) is 4, then
    # (0.9 * 0.4 + 0.1 * 2) / (1 - 0.81) = 0.56 / 0.19 = 2.947, then (0.9 * 0.56 + 0.1) / 0.271 = 2.229, then 100's jump
    losses = [4.0, 2.0, 1.0, 100.0, 1.0, 1.0]
    model = _ScriptedModel(losses)
    data = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1)), np.zeros((2, 1)))).batch(1)
    found = lr_find.range_test(model, data, min_lr=1e-3, max_lr=1e2, steps=6, skip=1)
    average, expected = 0.0, []
    for step, loss in enumerate(losses[:4]):
        average = 0.9 * average + 0.1 * loss
        expected.append(average / (1 - 0.9 ** (step + 1)))
    assert expected[:3] == pytest.approx([4.0, 0.56 / 0.19, 0.604 / 0.271])
    np.testing.assert_allclose(found["smoothed"], expected)
    assert expected[3] > 4 * min(expected[:3])  # 100 lifts the average past 4x its best: the test stops there
    assert found["stopped"] == "the loss passed 4x its best at learning rate 1"
    assert found["lr"] == pytest.approx([1e-3, 1e-2, 1e-1, 1.0]) and found["loss"] == losses[:4]
    assert model.rates == pytest.approx([1e-3, 1e-2, 1e-1, 1.0]) and model.weights == [None] * 4
    # a loss that is not finite stops the test at once, and is not recorded
    model = _ScriptedModel([3.0, 2.0, float("nan"), 1.0])
    found = lr_find.range_test(model, data, min_lr=1e-3, max_lr=1.0, steps=4, skip=0)
    assert found["stopped"] == "the loss stopped being finite at learning rate 0.1" and found["loss"] == [3.0, 2.0]
    # all the steps, and sample weights passed on
    weighted = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1)), np.zeros((2, 1)), np.ones(2))).batch(1)
    model = _ScriptedModel([3.0, 2.5, 2.0])
    found = lr_find.range_test(model, weighted, min_lr=1e-3, max_lr=1e-1, steps=3)
    assert found["stopped"] == "ran all 3 steps" and [w.numpy().tolist() for w in model.weights] == [[1.0]] * 3


def test_the_suggestion_is_a_tenth_of_the_minimums_rate_and_the_steepest_fall_is_named():
    lrs = [10.0 ** e for e in range(-6, 4)]  # 1e-6 ... 1e3
    smoothed = [5.0, 5.0, 4.9, 4.5, 3.0, 1.5, 1.0, 0.9, 2.0, 9.0]  # steepest between 1e-2 and 1e-1, lowest at 10
    found = lr_find.suggest(lrs, smoothed, skip=2)
    assert found == {"suggested": pytest.approx(1.0), "min_loss_lr": 10.0, "steepest_lr": pytest.approx(1e-2)}
    # the minimum within the skipped steps (and one more): the loss only grew, nothing is suggested
    assert lr_find.suggest(lrs, [1.0, 0.5, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2], skip=2) == {
        "suggested": None, "min_loss_lr": 1e-4, "steepest_lr": None}
    found = lr_find.suggest(lrs, [1.0, 0.9, 0.8, 0.3, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2], skip=1)
    assert found["suggested"] == pytest.approx(1e-4)  # lowest at step 3 = skip + 2: it fell
    # too few steps to judge: skip + 3 are needed
    assert lr_find.suggest(lrs[:7], smoothed[:7], skip=5)["min_loss_lr"] is None
    assert lr_find.suggest(lrs[:8], smoothed[:8], skip=5)["min_loss_lr"] == 10.0


def _data():
    return tf.data.Dataset.from_tensor_slices((np.full((2, 1), 7.0), np.full((2, 1), 3.0))).batch(1)


class _CheckedModel(_ScriptedModel):
    def train_on_batch(self, x, y, **kwargs):
        assert float(np.ravel(x)[0]) == 7.0 and float(np.ravel(y)[0]) == 3.0  # the batch itself, inputs and labels
        return super().train_on_batch(x, y, **kwargs)


def test_the_range_tests_defaults_are_fastais():
    # 200 steps from 1e-7 to 10; the loss falls to 3 at step 7, then rises slowly (never 4x): with the default
    # skip (5) the smoothed minimum lies past skip + 1, so a tenth of its rate is suggested
    losses = [10.0 - step for step in range(8)] + [3.0 + 0.05 * k for k in range(192)]
    model = _CheckedModel(losses)
    found = lr_find.range_test(model, _data())
    assert len(found["lr"]) == 200 and found["lr"][0] == pytest.approx(1e-7) and found["lr"][-1] == pytest.approx(10)
    assert found["stopped"] == "ran all 200 steps"
    lowest = int(np.argmin(found["smoothed"]))
    assert found["suggested"] == pytest.approx(found["lr"][lowest] / 10) and 6 < lowest < 40  # the average lags
    # the test's own skip reaches the suggestion: with skip 150 the minimum is within it
    assert lr_find.range_test(_CheckedModel(losses), _data(), skip=150)["suggested"] is None


def test_divergence_is_judged_after_skip_steps_and_at_more_than_four_times_the_best():
    # a jump at step 1: with skip 1 it is not judged yet; with skip 0 it is
    assert lr_find.range_test(_ScriptedModel([1.0, 100.0]), _data(), steps=2, skip=1)["stopped"] == \
        "ran all 2 steps"
    assert lr_find.range_test(_ScriptedModel([1.0, 100.0]), _data(), steps=2, skip=0)["stopped"].startswith(
        "the loss passed 4x its best")
    # exactly 4x the best is not past it: 1, then 6.7 -> (0.9 x 0.1 + 0.67) / 0.19 = 4.0 = 4 x 1.0
    found = lr_find.range_test(_ScriptedModel([1.0, 6.7, 1.0]), _data(), steps=3, skip=0)
    assert found["smoothed"][1] == 4 * found["smoothed"][0] and found["stopped"] == "ran all 3 steps"
    assert lr_find.range_test(_ScriptedModel([1.0, 6.8, 1.0]), _data(), steps=3, skip=0)["stopped"].startswith(
        "the loss passed 4x its best")


def test_two_steps_go_from_the_least_to_the_most_and_the_suggestions_skip_is_inclusive():
    np.testing.assert_allclose(lr_find.schedule(1e-4, 1.0, 2), [1e-4, 1.0])
    lrs = list(lr_find.schedule(1e-6, 1.0, 12))
    falls_to_7 = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert lr_find.suggest(lrs, falls_to_7)["suggested"] == pytest.approx(lrs[7] / 10)  # skip 5: 7 > 6
    assert lr_find.suggest(lrs, falls_to_7, skip=6)["suggested"] is None  # lowest = skip + 1: nothing fell yet
    # the steepest fall can be at the minimum itself: 1.2, 4.0, 1.0, 1.05 -> slopes ..., -0.1, -1.475
    bump = [5.0, 5.0, 5.0, 4.0, 3.0, 1.2, 4.0, 1.0, 1.05, 1.1]
    lrs = [10.0 ** e for e in range(-9, 1)]
    assert lr_find.suggest(lrs, bump, skip=2)["steepest_lr"] == pytest.approx(lrs[7])
