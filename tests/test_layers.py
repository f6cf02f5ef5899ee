"""The regularisation layers: random only in training, deterministic and correct at inference."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns.architectures.resnet import survival_probabilities
from keras_cnns.layers import (
    DropConnectConv2D,
    DropConnectDense,
    DropPath,
    FractalJoin,
    FractalPathSampler,
    FractionalMaxPooling2D,
    LocalResponseNormalization,
    StochasticDepth,
    ZeroPadShortcut,
    fractional_pooling_boundaries,
)


def test_lrn_matches_the_alexnet_formula():
    a = np.random.rand(1, 2, 2, 12).astype("float32") * 10
    b = LocalResponseNormalization()(a).numpy()
    n, k, alpha, beta = 5, 2.0, 1e-4, 0.75
    expected = np.empty_like(a)
    for c in range(12):
        lo, hi = max(0, c - n // 2), min(12, c + n // 2 + 1)
        expected[..., c] = a[..., c] / (k + alpha * np.sum(a[..., lo:hi] ** 2, axis=-1)) ** beta
    np.testing.assert_allclose(b, expected, rtol=1e-5)
    for dtype in ("bfloat16", "float16"):  # mixed precision (--precision auto): no 16-bit LRN kernel on a CPU
        half = LocalResponseNormalization(dtype=f"mixed_{dtype}")(tf.constant(a))
        assert half.dtype == dtype
        np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), expected, rtol=1e-2)


def test_stochastic_depth_drops_whole_residual_branches_in_training():
    layer = StochasticDepth(0.5)
    shortcut = tf.zeros((256, 4, 4, 3))
    residual = tf.ones((256, 4, 4, 3))
    out = layer([shortcut, residual], training=True).numpy()
    per_sample = out.reshape(256, -1)
    assert set(np.unique(per_sample)) == {0.0, 1.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))  # whole branch kept or dropped
    assert 0.35 < per_sample[:, 0].mean() < 0.65


def test_stochastic_depth_scales_by_survival_probability_at_inference():
    shortcut, residual = tf.fill((2, 3), 1.0), tf.fill((2, 3), 4.0)
    out = StochasticDepth(0.75)([shortcut, residual], training=False)
    np.testing.assert_allclose(out.numpy(), 1.0 + 0.75 * 4.0)


def test_linear_decay_rule():
    p = survival_probabilities(54, 0.5)
    assert p[0] == pytest.approx(1 - 0.5 / 54) and p[-1] == pytest.approx(0.5)
    assert np.allclose(np.diff(p), -0.5 / 54)
    assert survival_probabilities(3, None) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        survival_probabilities(3, 0.0)


def test_resnet110_sd_uses_the_decay_in_its_graph():
    from keras_cnns import create_model

    layers = [l for l in create_model("resnet110_sd").layers if isinstance(l, StochasticDepth)]
    assert len(layers) == 54
    assert layers[-1].survival_probability == pytest.approx(0.5)
    assert layers[0].survival_probability == pytest.approx(1 - 0.5 / 54)


def test_drop_path_is_identity_at_inference_and_inverted_in_training():
    x = tf.ones((512, 2, 2, 1))
    layer = DropPath(0.25)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    out = layer(x, training=True).numpy().reshape(512, -1)
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs(out.mean() - 1.0) < 0.15


def test_drop_connect_dense_masks_weights_in_training_only():
    layer = DropConnectDense(64, rate=0.5, use_bias=False)
    x = tf.eye(32)  # row i of the output is row i of the (masked) kernel
    inference = layer(x, training=False).numpy()
    np.testing.assert_allclose(inference, layer.kernel.numpy(), rtol=1e-6)
    trained = layer(x, training=True).numpy()
    dropped = trained == 0
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_allclose(trained[~dropped], 2 * layer.kernel.numpy()[~dropped], rtol=1e-5)
    assert not np.array_equal(layer(x, training=True).numpy(), trained)  # a fresh mask each step


def test_drop_connect_conv_masks_weights_in_training_only():
    layer = DropConnectConv2D(4, 3, rate=0.5, padding="same")
    x = tf.random.uniform((2, 8, 8, 3))
    inference = layer(x, training=False)
    plain = tf.nn.bias_add(tf.nn.conv2d(x, layer.kernel, 1, "SAME"), layer.bias)
    np.testing.assert_allclose(inference.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer(x, training=True).numpy(), inference.numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    assert all(g is not None for g in tape.gradient(loss, layer.trainable_weights))


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_rates_are_validated(rate):
    with pytest.raises(ValueError):
        DropPath(rate)
    with pytest.raises(ValueError):
        DropConnectDense(3, rate=rate)


@pytest.mark.parametrize("n_in", [7, 10, 32])
def test_fractional_boundaries_partition_the_axis(n_in):
    n_out = int(n_in / np.sqrt(2))
    for u in (0.0, 0.3, 0.5, 0.99):
        a = fractional_pooling_boundaries(n_in, n_out, u)
        assert a[0] == 0 and a[-1] == n_in and len(a) == n_out + 1
        assert set(np.diff(a)) <= {1, 2}


def test_fractional_max_pooling_inference_is_deterministic_region_max():
    x = np.random.rand(2, 10, 10, 3).astype("float32")
    layer = FractionalMaxPooling2D()
    out = layer(x, training=False).numpy()
    assert out.shape == (2, 7, 7, 3)
    np.testing.assert_array_equal(out, layer(x, training=False).numpy())
    a = fractional_pooling_boundaries(10, 7, 0.5)
    expected = np.array([[x[:, a[i]:a[i + 1], a[j]:a[j + 1], :].max(axis=(1, 2)) for j in range(7)]
                         for i in range(7)]).transpose(2, 0, 1, 3)
    np.testing.assert_array_equal(out, expected)


def test_fractional_max_pooling_training_draws_random_regions():
    x = tf.random.uniform((1, 32, 32, 1))
    layer = FractionalMaxPooling2D()
    outs = {layer(x, training=True).numpy().tobytes() for _ in range(8)}
    assert len(outs) > 1
    assert layer(x, training=True).shape == (1, 22, 22, 1)


def test_fractal_join_inference_is_the_mean_and_global_mode_picks_one_column():
    a, b, c = tf.fill((2, 2), 1.0), tf.fill((2, 2), 3.0), tf.fill((2, 2), 8.0)
    join = FractalJoin([0, 1, 2], local_drop=0.15)
    code_local = tf.zeros((2, 2))
    np.testing.assert_allclose(join([a, b, c, code_local], training=False).numpy(), 4.0)
    code_global = tf.constant([[1.0, 1.0]] * 2)  # global mode, column 1
    np.testing.assert_allclose(join([a, b, c, code_global], training=True).numpy(), 3.0)


def test_fractal_join_local_mode_keeps_at_least_one_input():
    a, b = tf.fill((1, 1), 2.0), tf.fill((1, 1), 6.0)
    join = FractalJoin([0, 1], local_drop=0.99)
    seen = {float(join([a, b, tf.zeros((1, 2))], training=True).numpy()[0, 0]) for _ in range(30)}
    assert seen <= {2.0, 4.0, 6.0} and seen & {2.0, 6.0}


def test_fractal_sampler_is_silent_at_inference():
    sampler = FractalPathSampler(4)
    np.testing.assert_array_equal(sampler(tf.zeros((3, 8, 8, 1)), training=False).numpy(), 0.0)
    codes = np.array([sampler(tf.zeros((1, 1)), training=True).numpy()[0] for _ in range(60)])
    assert set(codes[:, 0]) == {0.0, 1.0} and set(codes[:, 1]) <= {0.0, 1.0, 2.0, 3.0}


def test_zero_pad_shortcut_subsamples_and_pads_channels():
    x = tf.reshape(tf.range(2 * 4 * 4 * 2, dtype=tf.float32), (2, 4, 4, 2))
    out = ZeroPadShortcut(6, 2)(x).numpy()
    assert out.shape == (2, 2, 2, 6)
    np.testing.assert_array_equal(out[..., 2:4], x.numpy()[:, ::2, ::2, :])
    assert not out[..., :2].any() and not out[..., 4:].any()


def test_custom_layers_survive_save_and_load(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = DropConnectConv2D(4, 3, rate=0.3, padding="same")(inputs)
    x = LocalResponseNormalization()(x)
    x = FractionalMaxPooling2D()(x)
    y = keras.layers.Conv2D(4, 1)(x)
    x = StochasticDepth(0.8)([x, y])
    x = DropPath(0.1)(x)
    x = ZeroPadShortcut(8, 2)(x)
    x = keras.layers.Flatten()(x)
    out = DropConnectDense(3, rate=0.2)(x)
    model = keras.Model(inputs, out)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    batch = np.random.rand(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(loaded(batch, training=False).numpy(), model(batch, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_grouped_convolutions_run_on_tensorflows_kernel_with_the_same_answers_and_gradients(tmp_path):
    """ResNeXt's grouped 3x3 convolutions leave tf_keras' XLA-compiled path (30x slower to train on a CPU
    with oneDNN) where TensorFlow's own kernel can take their gradients, before and after a save; same
    outputs and gradients as the XLA path."""
    import subprocess
    import sys

    from keras_cnns import create_model
    from keras_cnns.files import load_model_file
    from keras_cnns.layers.grouped import native_grouped_gradients, use_native_grouped_convolutions

    model = create_model("resnext50_32x4d", num_classes=5, input_shape=(32, 32, 3))
    grouped = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.groups > 1]
    assert len(grouped) == 16  # one per bottleneck block
    native = native_grouped_gradients()
    assert all(("_jit_compiled_convolution_op" in vars(l)) == native for l in grouped)
    reference = keras.models.clone_model(model)  # plain tf_keras layers: the XLA path
    reference.set_weights(model.get_weights())
    assert not any("_jit_compiled_convolution_op" in vars(l) for l in reference.layers)
    x = tf.random.stateless_uniform((2, 32, 32, 3), (1, 2))

    def answers(m):
        # inference-mode batch norm: in training mode ResNeXt-50's last stage at 32x32 normalises over 2 numbers
        # a channel (batch 2, 1x1), which turns summation-order differences into gradients 5% apart at the stem
        # (seen on an AVX2 CPU: two correct kernels, both checked against per-group convolutions, disagreed)
        with tf.GradientTape() as tape:
            y = m(x, training=False)
            loss = tf.reduce_sum(y * y)
        return y.numpy(), [g.numpy() for g in tape.gradient(loss, m.trainable_weights)]

    (y1, g1), (y2, g2) = answers(model), answers(reference)
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, np.abs(b).max()))
    model.save(str(tmp_path / "m.keras"))
    loaded = load_model_file(str(tmp_path / "m.keras"))
    assert all(("_jit_compiled_convolution_op" in vars(l)) == native
               for l in loaded.layers if isinstance(l, keras.layers.Conv2D) and l.groups > 1)
    assert use_native_grouped_convolutions(keras.Sequential([keras.layers.Dense(2)])) == 0
    # TensorFlow's Eigen kernel (oneDNN off) cannot: such a CPU keeps the XLA path
    probe = subprocess.run([sys.executable, "-c", "from keras_cnns.layers.grouped import native_grouped_gradients "
                            "as n; print(n())"], capture_output=True, text=True, timeout=120,
                           env={**__import__("os").environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert probe.stdout.strip() == "False", probe.stderr[-1000:]
