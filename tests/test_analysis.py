"""Our MAC / memory analysis against TensorFlow's own profiler and against hand counts."""
import pytest
import tf_keras as keras

from keras_cnns import create_model, inference_model
from keras_cnns.analysis import format_count, profile_model, receptive_field, tf_profiler_flops

MATMUL_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
#: element-wise ops (bias, pooling, activations, SE multiplies) add at most this share on top
ELEMENTWISE_TOLERANCE = 0.05


@pytest.mark.parametrize("name, size", [("lenet5", None), ("mobilenet_v2", 96), ("resnet18", 64),
                                        ("squeezenet1_1", 64), ("efficientnet_b0", 64), ("densenet_bc100", None),
                                        ("googlenet", 64), ("vgg11", 32)])
def test_tf_profiler_counts_exactly_two_flops_per_mac(name, size):
    model = inference_model(create_model(name, input_shape=size))
    ours = profile_model(model)
    flops = tf_profiler_flops(model)
    assert sum(flops.get(op, 0) for op in MATMUL_OPS) == 2 * ours.macs
    total = sum(flops.values())
    assert 2 * ours.macs <= total <= 2 * ours.macs * (1 + ELEMENTWISE_TOLERANCE)


def test_grouped_and_depthwise_convolutions_are_counted_per_group():
    x = keras.Input((8, 8, 32))
    grouped = keras.layers.Conv2D(64, 3, padding="same", groups=4, use_bias=False)(x)
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    p = profile_model(keras.Model(x, [grouped, depthwise]))
    macs = {l.type: l.macs for l in p.layers}
    assert macs["Conv2D"] == 8 * 8 * 64 * 9 * (32 // 4)
    assert macs["DepthwiseConv2D"] == 8 * 8 * 64 * 9


def test_activation_memory_counts_stored_outputs_only():
    x = keras.Input((10, 10, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.MaxPooling2D()(y)
    p = profile_model(keras.Model(x, y))
    assert p.activations == 10 * 10 * 3 + 10 * 10 * 4 + 5 * 5 * 4  # input, conv, pool (BN/ReLU in place)
    assert p.activation_bytes == 4 * p.activations


def test_vgg16_forward_memory_matches_the_lecture_walkthrough():
    """CS231n's VGG-16 walk-through lists every layer's output size; we hold exactly those values
    (ReLU in place, Flatten a view). The lecture's printed total, "24M", is an arithmetic slip:
    its own terms add up to 15.2M (61 MB as float32)."""
    terms = [224 * 224 * 3] + [224 * 224 * 64] * 2 + [112 * 112 * 64] + [112 * 112 * 128] * 2 + [56 * 56 * 128]
    terms += [56 * 56 * 256] * 3 + [28 * 28 * 256] + [28 * 28 * 512] * 3 + [14 * 14 * 512] * 4 + [7 * 7 * 512]
    terms += [4096, 4096, 1000]
    p = profile_model(create_model("vgg16"))
    assert p.activations == sum(terms) == 15_237_608


def test_receptive_field_of_resnet_stem_and_alexnet_conv1():
    x = keras.Input((64, 64, 3))
    y = keras.layers.Conv2D(8, 7, strides=2, padding="same")(x)
    y = keras.layers.MaxPooling2D(3, strides=2, padding="same")(y)
    y = keras.layers.Conv2D(8, 3, padding="same")(y)
    assert receptive_field(keras.Model(x, y)) == 7 + 2 * 2 + 2 * 4


def test_format_count():
    assert format_count(854_196_224) == "854M"
    assert format_count(5_268_480) == "5.27M"
    assert format_count(15_470_264_320) == "15.5G"
    assert format_count(512) == "512"
