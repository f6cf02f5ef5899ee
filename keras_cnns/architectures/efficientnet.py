"""EfficientNet B0-B7 (Tan, Le: EfficientNet: Rethinking Model Scaling for CNNs, 2019).

The B0 baseline is a stack of MBConv blocks (MobileNet v2 inverted residuals with
squeeze-and-excitation and swish). Larger variants scale depth d, width w and resolution r together
(compound scaling): d = alpha^phi, w = beta^phi, r = gamma^phi with alpha * beta^2 * gamma^2 ~ 2, so
FLOPs grow by ~2^phi. Each variant is only its (width, depth, resolution, dropout) coefficients;
every stage's channel count (multiples of 8) and repeat count is computed from them
(:func:`round_filters`, :func:`round_repeats`). Drop-path on the skip connections rises linearly
to ``drop_path_rate`` over the blocks (Keras calls it "drop connect").
"""
import math

import tf_keras as keras

from keras_cnns.architectures._blocks import conv_bn_act, depthwise_bn_act, image_input, pooled_head, use_small_stem
from keras_cnns.architectures.mobilenet import make_divisible
from keras_cnns.layers import DropPath
from keras_cnns.pretrained.checkpoints import keras_h5
from keras_cnns.registry import register

layers = keras.layers

# B0 stages: (kernel, repeats, filters_in, filters_out, expand_ratio, strides)
B0_STAGES = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
             (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)]

#: the paper's grid-searched base coefficients: depth alpha, width beta, resolution gamma
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15

# variant: (width_coefficient, depth_coefficient, resolution, dropout) — the official table
VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3), "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4), "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}


def compound_coefficients(phi, base_resolution=224):
    """(width, depth, resolution) for compound coefficient ``phi`` from the paper's alpha, beta, gamma."""
    return BETA ** phi, ALPHA ** phi, int(round(base_resolution * GAMMA ** phi))


def round_filters(filters, width_coefficient, divisor=8):
    return make_divisible(filters * width_coefficient, divisor)


def round_repeats(repeats, depth_coefficient):
    return int(math.ceil(depth_coefficient * repeats))


def mbconv(x, filters_in, filters_out, kernel, strides, expand_ratio, name, se_ratio=0.25, drop_rate=0.0):
    filters = filters_in * expand_ratio
    y = x
    if expand_ratio != 1:
        y = conv_bn_act(y, filters, 1, name=f"{name}_expand", activation="swish", bn_epsilon=1e-3)
    y = depthwise_bn_act(y, kernel, name, strides, activation="swish")
    if se_ratio:  # squeeze-and-excitation
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(y)
        se = layers.Conv2D(max(1, int(filters_in * se_ratio)), 1, activation="swish", name=f"{name}_se_reduce")(se)
        se = layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_se_expand")(se)
        y = layers.Multiply(name=f"{name}_se_excite")([y, se])
    y = conv_bn_act(y, filters_out, 1, name=f"{name}_project", activation=None, bn_epsilon=1e-3)
    if strides == 1 and filters_in == filters_out:
        if drop_rate:
            y = DropPath(drop_rate, name=f"{name}_drop_path")(y)
        y = layers.Add(name=f"{name}_add")([y, x])
    return y


def efficientnet(num_classes=1000, input_shape=(224, 224, 3), include_top=True, width_coefficient=1.0,
                 depth_coefficient=1.0, dropout=0.2, drop_path_rate=0.2, small_input=None, pooling=None,
                 classifier_activation="softmax"):
    small = use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=16 if small else 32)
    x = conv_bn_act(inputs, round_filters(32, width_coefficient), 3, name="stem", strides=1 if small else 2,
                    activation="swish", bn_epsilon=1e-3)
    total = sum(round_repeats(stage[1], depth_coefficient) for stage in B0_STAGES)
    b = 0
    for s, (kernel, repeats, f_in, f_out, expand, strides) in enumerate(B0_STAGES, start=1):
        f_in, f_out = round_filters(f_in, width_coefficient), round_filters(f_out, width_coefficient)
        for r in range(round_repeats(repeats, depth_coefficient)):
            x = mbconv(x, f_in if r == 0 else f_out, f_out, kernel, strides if r == 0 else 1, expand,
                       name=f"block{s}{chr(ord('a') + r)}" if r < 26 else f"block{s}_{r}",
                       drop_rate=drop_path_rate * b / total)
            b += 1
    x = conv_bn_act(x, round_filters(1280, width_coefficient), 1, name="top", activation="swish", bn_epsilon=1e-3)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling, dropout, classifier_activation))


_TORCHVISION = {"b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232, "b4": 19_341_616,
                "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960}
for _v, (_w, _d, _r, _drop) in VARIANTS.items():
    register(f"efficientnet_{_v}", efficientnet, family="efficientnet", year=2019,
             paper="Tan, Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
             input_shape=(_r, _r, 3), options={"width_coefficient": _w, "depth_coefficient": _d, "dropout": _drop},
             reference_params=_TORCHVISION[_v], reference=f"torchvision efficientnet_{_v} (= Keras trainable)",
             description=f"width x{_w}, depth x{_d}, {_r}x{_r}")

#: ImageNet weights: Keras Applications' (md5 from its code, top-1 from keras.io; keras_cnns/pretrained). The Keras
#: graph computes x/255, then (x - mean) / std with torchvision's numbers (keras#49930): "torch" preprocessing
CHECKPOINTS = {f"efficientnet_{v}": keras_h5(f"efficientnet_{v}", f"efficientnet{v}.h5", md5, top1, "torch",
                                             "efficientnet", base="https://storage.googleapis.com/keras-applications/")
               for v, md5, top1 in [
    ("b0", "902e53a9f72be733fc0bcb005b3ebbac", 77.1), ("b1", "1d254153d4ab51201f1646940f018540", 79.1),
    ("b2", "b15cce36ff4dcbd00b6dd88e7857a6ad", 80.1), ("b3", "ffd1fdc53d0ce67064dc6a9c7960ede0", 81.6),
    ("b4", "18c95ad55216b8f92d7e70b3a046e2fc", 82.9), ("b5", "ace28f2a6363774853a83a0b21b9421a", 83.6),
    ("b6", "165f6e37dce68623721b423839de8be5", 84.0), ("b7", "8c03f828fec3ef71311cd463b6759d99", 84.3)]}
