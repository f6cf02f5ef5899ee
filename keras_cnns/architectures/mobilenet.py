"""MobileNet v1 (Howard et al., 2017) and MobileNet v2 (Sandler et al., 2018).

v1: a depthwise 3x3 convolution per channel then a pointwise 1x1 convolution — about 1/9 of the
multiply-adds of a full 3x3 convolution at these widths. ``alpha`` is the width multiplier; the
resolution multiplier is the input size (224 x rho), which ``resolution_multiplier`` sets directly.

v2: inverted residual blocks — 1x1 expansion (factor 6), 3x3 depthwise, 1x1 *linear* projection
to a narrow bottleneck, a residual between bottlenecks when the shape allows. The first block has
no expansion. Both follow Keras Applications layer for layer (parameter counts equal).
"""
import functools

import tf_keras as keras

from keras_cnns.architectures._blocks import conv_bn_act, depthwise_bn_act, image_input, pooled_head, use_small_stem
from keras_cnns.errors import CnnkitError
from keras_cnns.pretrained.checkpoints import keras_h5
from keras_cnns.registry import ALL, register

layers = keras.layers

V1_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
# (filters, stride, expansion, repeats)
V2_LAYERS = [(16, 1, 1, 1), (24, 2, 6, 2), (32, 2, 6, 3), (64, 2, 6, 4), (96, 1, 6, 3), (160, 2, 6, 3),
             (320, 1, 6, 1)]


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _mobilenet_input(input_shape, alpha, resolution_multiplier, small_input):
    """Validate the width multiplier, apply the resolution multiplier, pick the stem: (inputs, small)."""
    if alpha <= 0:
        raise CnnkitError(f"alpha (width multiplier) must be > 0, got {alpha!r}")
    if resolution_multiplier is not None:
        if not 0.0 < resolution_multiplier <= 1.0:
            raise CnnkitError(f"resolution_multiplier must be in (0, 1], got {resolution_multiplier!r}")
        h, w, c = input_shape
        input_shape = (int(round(h * resolution_multiplier)), int(round(w * resolution_multiplier)), c)
    small = use_small_stem(small_input, input_shape)
    return image_input(input_shape, min_size=16 if small else 32), small


def depthwise_separable(x, filters, strides, name, depth_multiplier=1, activation="relu6"):
    x = depthwise_bn_act(x, 3, name, strides, depth_multiplier, activation)
    return conv_bn_act(x, filters, 1, name=f"{name}_pw", activation=activation, bn_epsilon=1e-3)


def mobilenet_v1(num_classes=1000, input_shape=(224, 224, 3), include_top=True, alpha=1.0, depth_multiplier=1,
                 resolution_multiplier=None, dropout=1e-3, small_input=None, pooling=None,
                 classifier_activation="softmax"):
    inputs, small = _mobilenet_input(input_shape, alpha, resolution_multiplier, small_input)
    x = conv_bn_act(inputs, int(32 * alpha), 3, name="conv1", strides=1 if small else 2, activation="relu6",
                    bn_epsilon=1e-3)
    for i, (filters, strides) in enumerate(V1_LAYERS, start=1):
        x = depthwise_separable(x, int(filters * alpha), strides, f"block{i}", depth_multiplier)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling, dropout, classifier_activation))


def inverted_residual(x, filters, strides, expansion, name, zero_init_residual=False):
    in_channels = x.shape[-1]
    residual = strides == 1 and in_channels == filters
    y = x
    if expansion != 1:
        y = conv_bn_act(y, expansion * in_channels, 1, name=f"{name}_expand", activation="relu6", bn_epsilon=1e-3)
    y = depthwise_bn_act(y, 3, name, strides)
    y = conv_bn_act(y, filters, 1, name=f"{name}_project", activation=None, bn_epsilon=1e-3,  # linear bottleneck
                    bn_gamma="zeros" if residual and zero_init_residual else "ones")
    if residual:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2(num_classes=1000, input_shape=(224, 224, 3), include_top=True, alpha=1.0, expansion=6,
                 resolution_multiplier=None, dropout=0.0, small_input=None, pooling=None,
                 classifier_activation="softmax", zero_init_residual=True):
    """``small_input`` (CIFAR practice): stride 1 in the first convolution and the first 24-channel block,
    so a 32x32 input ends at 4x4, not 1x1. ``zero_init_residual``: each residual block's last batch-norm
    scale starts at 0, so every block starts as the identity (Goyal et al. 2017); on a small data set
    this is what lets the 17-block network generalise (see README: batch-norm statistics)."""
    inputs, small = _mobilenet_input(input_shape, alpha, resolution_multiplier, small_input)
    x = conv_bn_act(inputs, make_divisible(32 * alpha), 3, name="conv1", strides=1 if small else 2,
                    activation="relu6", bn_epsilon=1e-3)
    block = 0
    for stage, (filters, strides, t, repeats) in enumerate(V2_LAYERS):
        if small and stage == 1:
            strides = 1
        for r in range(repeats):
            block += 1
            x = inverted_residual(x, make_divisible(int(filters * alpha)), strides if r == 0 else 1,
                                  t if t == 1 else expansion, f"block{block}", zero_init_residual)
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = conv_bn_act(x, last, 1, name="conv_last", activation="relu6", bn_epsilon=1e-3)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling, dropout, classifier_activation))


register("mobilenet", mobilenet_v1, family="mobilenet", year=2017,
         paper="Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
         reference_params=4_253_864, params_counted=ALL, reference="Keras Applications MobileNet (alpha=1.0)",
         description="MobileNet v1, depthwise separable convolutions")
register("mobilenet_v2", mobilenet_v2, family="mobilenet", year=2018,
         paper="Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks",
         reference_params=3_538_984, params_counted=ALL, reference="Keras Applications MobileNetV2 (alpha=1.0)",
         description="inverted residuals, linear bottlenecks, expansion 6")


#: ImageNet weights: Keras Applications', one file per width (alpha) and resolution; top-1 from its tables
_MOBILENET_V1_TOP1 = {(1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6, (1.0, 192): 69.1,
                      (1.0, 160): 67.2, (1.0, 128): 64.4}  # Keras' mobilenet.py tables (others unpublished)
_MOBILENET_V2_TOP1 = {  # Keras' mobilenet_v2.py table
    (1.4, 224): 75.0, (1.3, 224): 74.4, (1.0, 224): 71.8, (1.0, 192): 70.7, (1.0, 160): 68.8, (1.0, 128): 65.3,
    (1.0, 96): 60.3, (0.75, 224): 69.8, (0.75, 192): 68.7, (0.75, 160): 66.4, (0.75, 128): 63.2, (0.75, 96): 58.8,
    (0.5, 224): 65.4, (0.5, 192): 63.9, (0.5, 160): 61.0, (0.5, 128): 57.7, (0.5, 96): 51.2, (0.35, 224): 60.3,
    (0.35, 192): 58.2, (0.35, 160): 55.7, (0.35, 128): 50.8, (0.35, 96): 45.5}


def _checkpoint(name, options, input_shape):
    """The Keras Applications file for this width and resolution (keras_cnns/pretrained)."""
    alpha = float(options.get("alpha", 1.0))
    rows = int(input_shape[0]) if input_shape else 224
    if name == "mobilenet":
        alphas, sizes, table = (0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224), _MOBILENET_V1_TOP1
    else:
        alphas, sizes, table = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224), _MOBILENET_V2_TOP1
    if alpha not in alphas:
        raise CnnkitError(f"{name} has ImageNet weights for alpha {', '.join(map(str, alphas))}, not {alpha}")
    if rows not in sizes:  # the weights do not depend on the resolution; Keras takes the 224 file too
        rows = 224
    if name == "mobilenet":
        path = f"mobilenet/mobilenet_{ {1.0: '1_0', 0.75: '7_5', 0.5: '5_0', 0.25: '2_5'}[alpha]}_{rows}_tf.h5"
    else:
        path = f"mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}.h5"
    return keras_h5(name, path, None, table.get((alpha, rows)), "tf", name)


CHECKPOINTS = {name: functools.partial(_checkpoint, name) for name in ("mobilenet", "mobilenet_v2")}
