"""The numbers of the source notes (../shared/SEEDS.md), reproduced by our own analysis."""
import math

import pytest
import tf_keras as keras

from keras_cnns import create_model
from keras_cnns.analysis import profile_model, receptive_field
from keras_cnns.architectures.efficientnet import (
    ALPHA,
    BETA,
    GAMMA,
    compound_coefficients,
    round_filters,
    round_repeats,
)
from keras_cnns.architectures.googlenet import INCEPTION, inception, inception_naive
from keras_cnns.stats import load_zoo_stats

layers = keras.layers


def _module(builder, shape, **kwargs):
    x = keras.Input(shape)
    return profile_model(keras.Model(x, builder(x, **kwargs)))


def _macs(profile, suffix):
    return next(l.macs for l in profile.layers if l.name.endswith(suffix))


def test_naive_inception_module_costs_854M_ops():
    p = _module(inception_naive, (28, 28, 256), f1=128, f3=192, f5=96, name="naive", batch_norm=False)
    assert _macs(p, "1x1_conv") == 28 * 28 * 128 * 1 * 1 * 256
    assert _macs(p, "3x3_conv") == 28 * 28 * 192 * 3 * 3 * 256
    assert _macs(p, "5x5_conv") == 28 * 28 * 96 * 5 * 5 * 256
    assert p.macs == 854_196_224 and round(p.macs / 1e6) == 854
    assert p.layers[-1].output_shape == (None, 28, 28, 128 + 192 + 96 + 256)  # pooling keeps all 256 channels


def test_bottleneck_inception_module_and_the_slides_358M():
    """The slide lists six convolutions and totals them as 358M. Its six terms sum to 271.4M; 358M is
    that sum plus the 3x3 term once more (a double count on the slide). We reproduce every term
    exactly and show where 358M comes from."""
    p = _module(inception, (28, 28, 256), f1=128, f3r=64, f3=192, f5r=64, f5=96, proj=64, name="bn")
    terms = {"1x1_conv": 28 * 28 * 128 * 1 * 1 * 256, "3x3_reduce_conv": 28 * 28 * 64 * 1 * 1 * 256,
             "5x5_reduce_conv": 28 * 28 * 64 * 1 * 1 * 256, "_3x3_conv": 28 * 28 * 192 * 3 * 3 * 64,
             "_5x5_conv": 28 * 28 * 96 * 5 * 5 * 64, "pool_proj_conv": 28 * 28 * 64 * 1 * 1 * 256}
    for suffix, expected in terms.items():
        assert _macs(p, suffix) == expected, suffix
    assert p.macs == sum(terms.values()) == 271_351_808
    assert round((p.macs + terms["_3x3_conv"]) / 1e6) == 358
    assert p.macs < 854_196_224 / 3  # the bottleneck cuts the cost by more than 3x


def test_5x5_conv_with_and_without_a_1x1_bottleneck():
    x = keras.Input((14, 14, 480))
    direct = profile_model(keras.Model(x, layers.Conv2D(48, 5, padding="same", use_bias=False)(x)))
    y = layers.Conv2D(16, 1, use_bias=False)(x)
    bottleneck = profile_model(keras.Model(x, layers.Conv2D(48, 5, padding="same", use_bias=False)(y)))
    assert direct.macs == 112_896_000 and round(direct.macs / 1e5) / 10 == 112.9
    assert bottleneck.macs == 5_268_480 and round(bottleneck.macs / 1e5) / 10 == 5.3


def test_fc_on_7x7x1024_versus_global_average_pooling():
    x = keras.Input((7, 7, 1024))
    fc = profile_model(keras.Model(x, layers.Dense(1024, use_bias=False)(layers.Flatten()(x))))
    gap = profile_model(keras.Model(x, layers.GlobalAveragePooling2D()(x)))
    assert fc.params == 7 * 7 * 1024 * 1024 == 51_380_224 and math.floor(fc.params / 1e5) / 10 == 51.3
    assert gap.params == 0


@pytest.mark.parametrize("channels", [64, 256])
def test_three_3x3_convs_versus_one_7x7(channels):
    x = keras.Input((56, 56, channels))
    y = x
    for _ in range(3):
        y = layers.Conv2D(channels, 3, padding="same", use_bias=False)(y)
    stack = keras.Model(x, y)
    single = keras.Model(x, layers.Conv2D(channels, 7, padding="same", use_bias=False)(x))
    assert stack.count_params() == 27 * channels ** 2
    assert single.count_params() == 49 * channels ** 2
    assert receptive_field(stack) == receptive_field(single) == 7


def test_alexnet_conv1_maps_227x227x3_to_55x55x96_with_35K_weights():
    model = create_model("alexnet")
    conv1 = model.get_layer("conv1_conv")
    assert conv1.output_shape == (None, 55, 55, 96)
    assert math.prod(conv1.kernel.shape) == 11 * 11 * 3 * 96 == 34_848


def test_alexnet_two_towers_conv2_4_5_see_only_their_half_conv3_sees_all():
    model = create_model("alexnet")
    assert model.get_layer("conv2_conv").kernel.shape[2] == 96 // 2
    assert model.get_layer("conv4_conv").kernel.shape[2] == 384 // 2
    assert model.get_layer("conv5_conv").kernel.shape[2] == 384 // 2
    assert model.get_layer("conv3_conv").kernel.shape[2] == 256
    assert model.get_layer("fc6").kernel.shape[0] == 6 * 6 * 256


def test_googlenet_inception_modules_match_table_1():
    """Table 1's ops column (millions) agrees with our MACs to its 1M precision for every module but
    5a, whose listed 54M contradicts its own listed widths (they give 51M). The params column is
    rounded loosely per row (4c lists 463K for 498K), but its sum, 6,798K (K = 1024), is our
    total weight count to within 0.5%."""
    ops_column = {"3a": 128, "3b": 304, "4a": 73, "4b": 88, "4c": 100, "4d": 119, "4e": 170, "5b": 71}
    params_column_k = [2.7, 112, 159, 380, 364, 437, 463, 580, 840, 1072, 1388, 1000]
    model = create_model("googlenet", aux_logits=False)
    profile = profile_model(model)
    for key, ops_m in ops_column.items():
        macs = sum(l.macs for l in profile.layers if l.name.startswith(f"inception{key}_"))
        assert abs(macs / 1e6 - ops_m) < 1, key
    weights = sum(math.prod(l.kernel.shape) for l in model.layers if hasattr(l, "kernel"))
    assert weights / (sum(params_column_k) * 1024) == pytest.approx(1.0, abs=0.005)
    assert INCEPTION["3a"] == (64, 96, 128, 16, 32, 32)


def test_googlenet_has_no_big_fc_and_few_parameters():
    profile = profile_model(create_model("googlenet", aux_logits=False))
    dense = [l for l in profile.layers if l.type == "Dense"]
    assert len(dense) == 1 and dense[0].params == 1024 * 1000 + 1000
    assert round(profile.params / 1e6, 1) == 7.0  # paper: ~6.8M weights, 12x fewer than AlexNet
    assert create_model("alexnet").count_params() / profile.params > 8


def test_mobilenet_v1_569M_mult_adds_and_4_2M_parameters():
    profile = profile_model(create_model("mobilenet"))
    assert round(profile.macs / 1e6) == 569
    assert round(profile.trainable_params / 1e6, 1) == 4.2


def test_mobilenet_v2_300M_mult_adds():
    assert abs(profile_model(create_model("mobilenet_v2")).macs / 1e6 - 300) < 1


def test_depthwise_separable_costs_about_a_tenth_of_a_full_convolution():
    x = keras.Input((14, 14, 512))
    full = profile_model(keras.Model(x, layers.Conv2D(512, 3, padding="same", use_bias=False)(x)))
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    separable = profile_model(keras.Model(x, layers.Conv2D(512, 1, use_bias=False)(y)))
    ratio = separable.macs / full.macs
    assert ratio == pytest.approx(1 / 512 + 1 / 9)
    assert 0.1 < ratio < 0.12


def test_squeezenet_has_50x_fewer_parameters_than_alexnet():
    ratio = create_model("alexnet_1tower").count_params() / create_model("squeezenet1_0").count_params()
    assert round(ratio) == 50


def test_efficientnet_compound_scaling():
    assert ALPHA * BETA ** 2 * GAMMA ** 2 == pytest.approx(2.0, abs=0.1)  # FLOPs grow ~2^phi
    width, depth, resolution = compound_coefficients(1)
    assert (width, depth, resolution) == (pytest.approx(1.1), pytest.approx(1.2), 258)
    assert round_filters(32, 2.0) == 64 and round_filters(1280, 2.0) == 2560 and round_filters(16, 1.1) == 16
    assert round_repeats(4, 3.1) == 13 and round_repeats(1, 1.1) == 2
    b0 = create_model("efficientnet_b0")
    assert round(profile_model(b0).macs / 1e9, 2) == 0.39


def test_comparison_chart_relations_of_the_notes():
    """VGG: most memory and ops; GoogLeNet: very little memory; AlexNet: large memory for little
    compute; ResNet moderate memory and ops. Memory = weights + one image's activations."""
    s = load_zoo_stats()

    def memory(name):
        return s[name]["params"] + s[name]["activations"]

    assert s["vgg16"]["macs"] > s["resnet50"]["macs"] > s["googlenet"]["macs"] > s["alexnet"]["macs"]
    assert memory("vgg16") > memory("alexnet") > memory("resnet50") > memory("googlenet")
    assert memory("vgg16") > 10 * memory("googlenet")
    assert s["vgg16"]["params"] > s["alexnet"]["params"] > s["resnet50"]["params"] > s["googlenet"]["params"]
    assert s["vgg16"]["params"] == 138_357_544
