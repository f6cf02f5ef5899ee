"""Exact parameter counts at the canonical configuration, and the shipped zoo table is current."""
import numpy as np
import pytest
import tf_keras as keras

from keras_cnns import create_model, get_model_info, inference_model, list_models
from keras_cnns.analysis import count_trainable, profile_model
from keras_cnns.stats import load_zoo_stats

ZOO_STATS = load_zoo_stats()


@pytest.mark.parametrize("name", list_models())
def test_canonical_parameter_count_and_zoo_table(name):
    info = get_model_info(name)
    model = inference_model(create_model(name))
    assert model.output_shape == (None, info.num_classes)
    counted = count_trainable(model) if info.params_counted == "trainable" else model.count_params()
    if info.reference_params is not None:
        assert counted == info.reference_params, f"{name}: {counted:,} != {info.reference_params:,} ({info.reference})"
    assert name in ZOO_STATS, "zoo_stats.json is missing this model: run python -m keras_cnns.stats"
    assert ZOO_STATS[name] == profile_model(model).totals(), "zoo_stats.json is stale: run python -m keras_cnns.stats"


def test_every_zoo_table_entry_is_a_registered_model():
    assert set(ZOO_STATS) == set(list_models())


@pytest.mark.parametrize("ours, keras_app, counted", [
    ("mobilenet", "MobileNet", "all"),
    ("mobilenet_v2", "MobileNetV2", "all"),
    ("preact_resnet50", "ResNet50V2", "all"),
    ("densenet121", "DenseNet121", "all"),
    ("vgg16", "VGG16", "all"),
    ("efficientnet_b0", "EfficientNetB0", "trainable"),
])
def test_counts_equal_keras_applications_built_live(ours, keras_app, counted):
    theirs = getattr(keras.applications, keras_app)(weights=None)
    mine = create_model(ours)
    if counted == "all":
        assert mine.count_params() == theirs.count_params()
    else:
        assert count_trainable(mine) == count_trainable(theirs)


def _conv_kernel_weights(model):
    return sorted(int(np.prod(l.kernel.shape)) for l in model.layers if isinstance(l, keras.layers.Conv2D))


@pytest.mark.parametrize("depth", [18, 34])
def test_preact_resnet_has_exactly_the_convolutions_of_resnet(depth):
    assert _conv_kernel_weights(create_model(f"preact_resnet{depth}")) == _conv_kernel_weights(
        create_model(f"resnet{depth}"))


def test_googlenet_bn_adds_only_batch_norm_weights():
    plain = create_model("googlenet", aux_logits=False)
    bn = create_model("googlenet_bn", aux_logits=False)
    conv_biases = sum(l.filters for l in plain.layers if isinstance(l, keras.layers.Conv2D))
    bn_weights = sum(2 * l.filters for l in bn.layers if isinstance(l, keras.layers.Conv2D))
    assert count_trainable(bn) == count_trainable(plain) - conv_biases + bn_weights


@pytest.mark.parametrize("name, columns, widths, stem", [
    ("fractalnet20_cifar", 3, (64, 128, 256, 512, 512), False),
    ("fractalnet40_cifar", 4, (64, 128, 256, 512, 512), False),
    ("fractalnet34", 4, (64, 128, 256, 512), True),
])
def test_fractalnet_parameter_formula(name, columns, widths, stem):
    """Each block: C convs read the block input, 2^C - 1 - C read the block width; 3x3, BN, no bias."""
    info = get_model_info(name)
    c_in = 3
    expected = 0
    if stem:
        expected += 7 * 7 * 3 * 64 + 2 * 64
        c_in = 64
    for w in widths:
        expected += columns * (9 * c_in * w + 2 * w) + (2 ** columns - 1 - columns) * (9 * w * w + 2 * w)
        c_in = w
    expected += c_in * info.num_classes + info.num_classes
    assert count_trainable(create_model(name)) == expected
