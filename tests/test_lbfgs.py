"""--optimizer lbfgs: full-batch L-BFGS beats Adam per gradient evaluation on a convex problem, trains and resumes
a run like any optimizer, and refuses with one line what it cannot do."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns.errors import CnnkitError
from keras_cnns.training import TrainConfig, lbfgs, resume, train
from keras_cnns.training.callbacks import read_history


def _softmax_regression(seed=0):
    """Multinomial logistic regression on 400 points of 5 overlapping Gaussian classes: a convex loss."""
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 1.5, (5, 20))
    y = rng.randint(5, size=400)
    x = (centres[y] + rng.normal(0, 1.5, (400, 20))).astype(np.float32)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(5, activation="softmax")])
    target = tf.one_hot(y, 5)
    dataset = [(tf.constant(x[i:i + 100]), target[i:i + 100]) for i in range(0, 400, 100)]
    return model, dataset


def test_lbfgs_reaches_a_lower_full_batch_loss_than_adam_in_as_many_gradient_evaluations():
    model, dataset = _softmax_regression()
    objective = lbfgs.Objective(model, dataset)
    start = objective.get()
    budget = 30
    result = lbfgs.minimize(objective, iterations=budget, max_evaluations=budget)
    assert objective.evaluations <= budget + 1  # SciPy may finish the line search's last evaluation
    found = objective(result.x)[0]
    best_adam = np.inf
    for lr in (0.01, 0.03, 0.1, 0.3):  # Adam at its best rate, one full-batch gradient a step
        objective.set(start)
        adam = keras.optimizers.Adam(lr)
        for _ in range(objective.evaluations):
            loss, grad = objective(objective.get())
            parts = np.split(grad.astype(np.float32), np.cumsum(objective.sizes)[:-1])
            adam.apply_gradients([(p.reshape(s), v) for p, s, v in zip(parts, objective.shapes, objective.variables)])
        best_adam = min(best_adam, objective(objective.get())[0])
    assert found < best_adam, (found, best_adam)


def test_the_objective_is_the_mean_weighted_loss_and_its_gradient():
    model, dataset = _softmax_regression(1)
    weighted = [(x, t, tf.fill([x.shape[0]], 2.0)) for x, t in dataset]  # a class weight of 2 everywhere
    plain, double = lbfgs.Objective(model, dataset), lbfgs.Objective(model, weighted)
    flat = plain.get()
    loss, grad = plain(flat)
    x = np.concatenate([b[0] for b in dataset])
    t = np.concatenate([b[1] for b in dataset])
    expected = -np.mean(np.sum(t * np.log(model(x).numpy()), axis=1))
    assert loss == pytest.approx(expected, rel=1e-5)
    eps, i = 1e-3, 7  # one coordinate of the gradient, by central differences
    step = np.zeros_like(flat)
    step[i] = eps
    numeric = (plain(flat + step)[0] - plain(flat - step)[0]) / (2 * eps)
    assert grad[i] == pytest.approx(numeric, rel=1e-2, abs=1e-4)
    np.testing.assert_allclose(double(flat)[1], 2 * grad, rtol=1e-5)


def test_lbfgs_trains_lenet_on_digits_in_a_few_iterations_and_resumes(tmp_path, monkeypatch):
    run = str(tmp_path / "lbfgs")
    real = lbfgs.minimize
    calls = []

    def killed_after_three(objective, iterations, on_iteration=None, **kwargs):  # the process dies at epoch 4
        calls.append(iterations)

        def stop(i, loss):
            if len(calls) == 1 and i == 3:
                raise KeyboardInterrupt
            return on_iteration(i, loss)

        return real(objective, iterations, stop, **kwargs)

    monkeypatch.setattr(lbfgs, "minimize", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(optimizer="lbfgs", epochs=12, output=run))
    assert [r["epoch"] for r in read_history(os.path.join(run, "history.csv"))] == [1, 2, 3]
    keras.backend.clear_session()
    result = resume(run)
    assert calls == [12, 9]  # the rest of the run, from the last epoch's weights
    history = read_history(os.path.join(run, "history.csv"))
    assert [r["epoch"] for r in history] == list(range(1, 13))
    assert history[3]["loss"] <= history[2]["loss"] + 0.05  # on from where it stopped, not from the start
    assert result.metrics["accuracy"] > 0.9 and result.metrics["lbfgs"]["stopped"] == "the run's 12 epochs"
    assert result.metrics["precision"] == "float32"


@pytest.mark.parametrize("config, message", [
    (dict(model="resnet20_cifar", input_size=32), "resnet20_cifar has batch norm"),
    (dict(augment="flip"), "augmentation and mixing change the loss"),
    (dict(mixup=0.2), "augmentation and mixing change the loss"),
    (dict(ema=0.9), "--ema do not apply"),
    (dict(lr="auto"), "--lr auto do not apply"),
])
def test_what_full_batch_lbfgs_cannot_do_is_refused_in_one_line(tmp_path, config, message):
    with pytest.raises(CnnkitError, match=f"^--optimizer lbfgs.*{message}"):
        train(TrainConfig(optimizer="lbfgs", data="shapes:8", epochs=1, output=str(tmp_path / "x"), **config))
    assert not os.path.exists(tmp_path / "x")
