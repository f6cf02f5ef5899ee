"""Each optimiser's defining update, checked on one variable with a known gradient."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns.errors import CnnkitError
from keras_cnns.training.optimizers import OPTIMIZERS, add_weight_penalty, make_optimizer


def steps(optimizer, grads, w0=1.0):
    """Apply the gradients in order to w = w0; return w after each step."""
    w = tf.Variable([w0])
    out = []
    for g in grads:
        optimizer.apply_gradients([(tf.constant([g]), w)])
        out.append(float(w.numpy()[0]))
    return out


def test_sgd_steps_against_the_gradient():
    assert steps(make_optimizer("sgd", 0.1), [2.0]) == pytest.approx([1.0 - 0.2])


def test_momentum_accumulates_velocity_v_equals_rho_v_minus_lr_g():
    w = steps(make_optimizer("momentum", 0.1, momentum=0.9), [1.0, 1.0])
    assert w[0] == pytest.approx(1.0 - 0.1)
    assert w[1] == pytest.approx(w[0] - (0.9 * 0.1 + 0.1))  # v2 = 0.9 v1 - lr g


def test_nesterov_uses_the_look_ahead_gradient():
    w = steps(make_optimizer("nesterov", 0.1, momentum=0.9), [1.0])
    assert w[0] == pytest.approx(1.0 - 0.1 - 0.9 * 0.1)  # w += rho v - lr g after v = -lr g


def test_adagrad_steps_shrink_with_accumulated_squared_gradients():
    w = steps(make_optimizer("adagrad", 0.1), [1.0] * 6)
    sizes = -np.diff([1.0] + w)
    assert np.all(np.diff(sizes) < 0)  # a constant gradient gives ever smaller steps
    assert sizes[-1] < 0.5 * sizes[0]


def test_rmsprop_forgets_old_gradients_so_steps_do_not_vanish():
    w = steps(make_optimizer("rmsprop", 0.01, rho=0.9), [1.0] * 60)
    sizes = -np.diff([1.0] + w)
    assert sizes[-1] == pytest.approx(0.01, rel=0.02)  # sqrt of the decaying average -> |g|


@pytest.mark.parametrize("scale", [0.1, 1.0, 1e3])
def test_adam_first_step_is_lr_whatever_the_gradient_scale(scale):
    w = steps(make_optimizer("adam", 0.01), [scale])  # bias correction: m/sqrt(v) = g/|g|
    assert 1.0 - w[0] == pytest.approx(0.01, rel=1e-3)


def test_adamw_decays_weights_even_without_gradient_but_not_biases():
    opt = make_optimizer("adamw", 0.1, weight_decay=0.5)
    kernel, bias = tf.Variable([2.0], name="kernel"), tf.Variable([2.0], name="bias")
    opt.apply_gradients([(tf.constant([0.0]), kernel), (tf.constant([0.0]), bias)])
    assert float(kernel.numpy()[0]) == pytest.approx(2.0 * (1 - 0.1 * 0.5))
    assert float(bias.numpy()[0]) == pytest.approx(2.0)


def test_every_listed_optimizer_builds_and_unknown_is_an_error():
    for name in OPTIMIZERS:
        assert make_optimizer(name, 0.01) is not None
    with pytest.raises(CnnkitError, match="unknown optimizer 'lbgfs'"):
        make_optimizer("lbgfs", 0.01)


def _tiny_model():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


@pytest.mark.parametrize("l1, l2", [(0.01, 0.0), (0.0, 0.02), (0.01, 0.02)])
def test_l1_l2_and_elastic_net_penalise_kernels_only(l1, l2):
    model = _tiny_model()
    assert add_weight_penalty(model, l1=l1, l2=l2) == 2
    kernels = [model.get_layer("conv").kernel.numpy(), model.get_layer("fc").kernel.numpy()]
    expected = sum(l1 * np.abs(k).sum() + l2 * np.square(k).sum() for k in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_no_penalty_adds_no_loss():
    model = _tiny_model()
    assert add_weight_penalty(model) == 0
    assert model.losses == []


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_weight_decay_is_an_l2_penalty_whose_gradient_is_lambda_w(optimizer):
    """--weight-decay lambda for optimisers other than AdamW: a loss term whose gradient is lambda * w."""
    import tensorflow as tf

    from keras_cnns import create_model
    from keras_cnns.training.trainer import TrainConfig, _compile

    model = create_model("lenet5", num_classes=10)
    _compile(model, TrainConfig(optimizer=optimizer, weight_decay=5e-4, lr=0.01), steps_per_epoch=10)
    kernels = [w for w in model.trainable_weights if "kernel" in w.name]
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    for w, grad in zip(kernels, tape.gradient(penalty, kernels)):
        np.testing.assert_allclose(grad.numpy(), 5e-4 * w.numpy(), rtol=1e-5, atol=1e-12)
    assert len(kernels) == 5


def test_adamw_decays_weights_in_the_optimizer_not_the_loss():
    from keras_cnns import create_model
    from keras_cnns.training.trainer import TrainConfig, _compile

    model = create_model("lenet5", num_classes=10)
    _compile(model, TrainConfig(optimizer="adamw", weight_decay=5e-4, lr=0.01), steps_per_epoch=10)
    assert not model.losses and model.optimizer.weight_decay == pytest.approx(5e-4)
