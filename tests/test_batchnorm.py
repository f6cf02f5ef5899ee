"""Batch-norm statistics after training: exact recalibration, the momentum rule, the inference check, and
small-data training that is as good at inference as its log says."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns.data import load_data, make_dataset
from keras_cnns.files import load_model_file
from keras_cnns.training import TrainConfig, train
from keras_cnns.training.batchnorm import (
    Recalibrator,
    batch_norm_layers,
    consistency_check,
    default_momentum,
    needs_recalibration,
    recalibrate,
)

layers = keras.layers


def _net():
    """conv-BN-relu, a nested block with its own BN, a frozen BN, and a head: every case recalibration meets."""
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(inner_in, layers.ReLU()(layers.BatchNormalization(name="inner_bn")(
        layers.Conv2D(5, 3, padding="same")(inner_in))), name="inner")
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = inner(x)
    x = layers.BatchNormalization(name="frozen_bn", trainable=False)(x)
    x = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, layers.BatchNormalization(name="bn_dense")(x))


def _scramble(model, rng):
    for layer in batch_norm_layers(model, trainable_only=False):
        layer.moving_mean.assign(rng.normal(0, 5, layer.moving_mean.shape).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.01, 50, layer.moving_variance.shape).astype(np.float32))


def test_recalibration_sets_the_exact_statistics_of_each_layers_inputs_over_the_data():
    rng = np.random.RandomState(0)
    model = _net()
    x = (rng.normal(1.0, 2.0, (70, 8, 8, 3))).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)  # 4 full batches and one of 6
    _scramble(model, rng)
    frozen = model.get_layer("frozen_bn")
    frozen_before = (frozen.moving_mean.numpy().copy(), frozen.moving_variance.numpy().copy())
    assert recalibrate(model, ds) == {"layers": 3, "images": 70}
    got = {layer.name: (layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in batch_norm_layers(model)}

    # independently: Keras' own training-mode forward pass (batch statistics) to every batch-norm layer's
    # input, batch by batch, then numpy's mean and population variance over all 70 images
    inner = model.get_layer("inner")
    taps = keras.Model(model.inputs, [model.get_layer("bn1").input, model.get_layer("relu1").output,
                                      model.get_layer("bn_dense").input])
    tapped = [np.concatenate(parts) for parts in zip(*[[t.numpy() for t in taps(b, training=True)] for b in ds])]
    tapped[1] = inner.layers[1](tapped[1]).numpy()  # the nested model's conv, up to its batch norm
    for name, values in zip(("bn1", "inner_bn", "bn_dense"), tapped):
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(got[name][0], flat.mean(axis=0), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got[name][1], flat.var(axis=0), atol=1e-5, rtol=1e-5)
    # a frozen batch norm runs in inference mode during training too: its statistics are left alone
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), frozen_before[0])
    np.testing.assert_array_equal(frozen.moving_variance.numpy(), frozen_before[1])
    # the layer's own call is back: inference uses the moving statistics again
    np.testing.assert_allclose(model(x[:2], training=False), model(x[:2], training=False))
    assert not np.allclose(model(x[:16], training=False), model(x[:16], training=True), atol=1e-3)


def test_dropout_is_off_while_statistics_are_gathered():
    inputs = keras.Input((10,))
    x = layers.Dropout(0.9)(inputs)
    model = keras.Model(inputs, layers.BatchNormalization()(x))
    x = np.random.RandomState(1).normal(3.0, 1.0, (256, 10)).astype(np.float32)
    recalibrator = Recalibrator(model)
    recalibrator(tf.data.Dataset.from_tensor_slices(x).batch(64))
    bn = model.layers[-1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=0), atol=1e-4)
    # a second pass reuses the traced step
    recalibrator(tf.data.Dataset.from_tensor_slices(x).batch(64))
    assert recalibrator._step.experimental_get_tracing_count() == 1


def test_momentum_follows_the_epoch_length_and_long_epochs_skip_recalibration():
    assert default_momentum(6) == 0.9 and default_momentum(100) == 0.9
    assert default_momentum(500) == 0.98 and default_momentum(1000) == 0.99 and default_momentum(50_000) == 0.99
    assert needs_recalibration(6, 0.9)[0] and needs_recalibration(999, 0.99)[0]
    assert not needs_recalibration(1563, 0.99)[0]
    assert needs_recalibration(1563, 0.999)[0]  # a 1000-step average is not current after a 1563-step epoch


def test_the_check_names_a_model_that_is_worse_at_inference_than_in_training():
    rng = np.random.RandomState(2)
    model = _net()
    x = rng.normal(0, 1, (64, 8, 8, 3)).astype(np.float32)
    y = tf.one_hot(np.argmax(model(x, training=False), -1), 4)  # labels the model gets right at inference
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    good = consistency_check(model, ds, training_accuracy=1.0)
    assert good["inference_mode_accuracy"] == 1.0 and good["images"] == 64 and good["warning"] is None
    _scramble(model, rng)
    rarest = int(np.argmin(np.bincount(np.argmax(y, -1), minlength=4)))  # at most a quarter of the labels
    model.get_layer("bn_dense").moving_mean.assign(-1000.0 * np.eye(4, dtype=np.float32)[rarest])
    bad = consistency_check(model, ds, training_accuracy=1.0)  # statistics that make it answer `rarest` always
    assert bad["inference_mode_accuracy"] < 0.9
    assert "below the last epoch's training accuracy" in bad["warning"] and "batch-norm statistics" in bad["warning"]


def _train_accuracy(run_dir, photos):
    """Inference-mode accuracy of the saved last epoch's model on its own training split."""
    model = load_model_file(os.path.join(run_dir, "last.keras"))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    data = load_data(photos, tuple(model.inputs[0].shape[1:]))
    ds = make_dataset(data, "train", 64, config["preprocessing"])
    predicted = np.argmax(model.predict(ds.map(lambda x, y: x), verbose=0), -1)
    return float(np.mean(predicted == data.train.y))


@pytest.mark.slow
@pytest.mark.parametrize("model, floor", [("resnet20_cifar", 0.95), ("mobilenet_v2", 0.90)])
def test_small_folder_training_gives_an_inference_model_as_good_as_its_log(tmp_path, photos, model, floor, request):
    """The issue's table on the defaults: 270 PNGs, 3 classes, 32x32, 8 epochs (6 steps an epoch). ResNet-20's
    run is the one test_mobile exports (trained once per session)."""
    if model == "resnet20_cifar":
        result = request.getfixturevalue("photos_resnet20_run")
    else:
        result = train(TrainConfig(model=model, data=photos, input_size=32, epochs=8, output=str(tmp_path / model)))
    metrics = result.metrics
    assert metrics["accuracy"] >= floor
    bn = metrics["batch_norm"]
    assert bn["recalibrate"] and bn["momentum"] == 0.9 and bn["momentum_from"] == "6 steps per epoch"
    check = bn["check"]
    assert abs(check["inference_mode_accuracy"] - check["training_mode_accuracy"]) <= 0.03
    assert check["warning"] is None
    assert abs(_train_accuracy(result.run_dir, photos) - check["training_mode_accuracy"]) <= 0.03
    config = json.load(open(os.path.join(result.run_dir, "config.json")))
    assert config["batch_norm"]["recalibrate"] is True and config["batch_norm"]["layers"] == bn["layers"] > 0
