"""The CIFAR-10 residual networks of the papers (32x32 inputs, three stages of 16/32/64 channels).

* ResNet-20/32/44/56/110 (He et al. 2015, section 4.2): 6n+2 layers of basic blocks with the
  parameter-free "option A" shortcut (subsample + zero-pad channels).
* ResNet-110 with stochastic depth (Huang et al. 2016): linear decay of the survival probability
  to p_L = 0.5 at the last block; identity blocks in training, scaled branches at inference.
* Wide ResNet WRN-d-k (Zagoruyko, Komodakis 2016): pre-activation basic blocks k times wider, with
  optional dropout between the two convolutions; WRN-28-10 has 36.5M parameters.
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import bn_act, conv_bn_act, image_input, pooled_head
from keras_cnns.architectures.resnet import residual_merge, survival_probabilities
from keras_cnns.errors import CnnkitError
from keras_cnns.layers import ZeroPadShortcut
from keras_cnns.registry import register

layers = keras.layers


def cifar_resnet(num_classes=10, input_shape=(32, 32, 3), include_top=True, depth=20, stochastic_depth=None,
                 pooling=None, classifier_activation="softmax"):
    if (depth - 2) % 6:
        raise CnnkitError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth!r}")
    n = (depth - 2) // 6
    inputs = image_input(input_shape, min_size=8)
    x = conv_bn_act(inputs, 16, 3, name="conv1")
    survival = iter(survival_probabilities(3 * n, stochastic_depth))
    for s, filters in enumerate((16, 32, 64)):
        for b in range(n):
            name = f"stage{s + 1}_block{b + 1}"
            strides = 2 if (b == 0 and s > 0) else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = ZeroPadShortcut(filters, strides, name=f"{name}_shortcut")(x)
            y = conv_bn_act(x, filters, 3, name=f"{name}_1", strides=strides)
            y = conv_bn_act(y, filters, 3, name=f"{name}_2", activation=None)
            x = residual_merge(shortcut, y, name, next(survival))
            x = layers.Activation("relu", name=f"{name}_out")(x)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling,
                                           classifier_activation=classifier_activation))


def wide_resnet(num_classes=10, input_shape=(32, 32, 3), include_top=True, depth=28, width=10, dropout=0.0,
                pooling=None, classifier_activation="softmax"):
    if (depth - 4) % 6:
        raise CnnkitError(f"Wide ResNet depth must be 6n+4 (16, 22, 28, 40, ...), got {depth!r}")
    n = (depth - 4) // 6
    inputs = image_input(input_shape, min_size=8)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1_conv")(inputs)
    for s, base in enumerate((16, 32, 64)):
        filters = base * width
        for b in range(n):
            name = f"stage{s + 1}_block{b + 1}"
            strides = 2 if (b == 0 and s > 0) else 1
            preact = bn_act(x, f"{name}_preact")
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_0_conv")(preact)
            y = conv_bn_act(preact, filters, 3, name=f"{name}_1", strides=strides)
            if dropout:
                y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
            x = residual_merge(shortcut, y, name)
    x = bn_act(x, "post")
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling,
                                           classifier_activation=classifier_activation))


_V1 = "He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition"
for _depth, _params in {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}.items():
    register(f"resnet{_depth}_cifar", cifar_resnet, family="resnet_cifar", year=2015, paper=_V1,
             input_shape=(32, 32, 3), num_classes=10, options={"depth": _depth}, reference_params=_params,
             reference="computed: the paper's CIFAR-10 net with option-A shortcuts",
             description=f"CIFAR ResNet-{_depth}, {(_depth - 2) // 6} blocks per stage")
register("resnet110_sd", cifar_resnet, family="stochastic_depth", year=2016,
         paper="Huang, Sun, Liu, Sedra, Weinberger, Deep Networks with Stochastic Depth", input_shape=(32, 32, 3),
         num_classes=10, options={"depth": 110, "stochastic_depth": 0.5}, reference_params=1_727_962,
         reference="computed: CIFAR ResNet-110 (stochastic depth adds no weights)",
         description="CIFAR ResNet-110, survival probability decays linearly to 0.5")
register("wrn28_10", wide_resnet, family="wide_resnet", year=2016, paper="Zagoruyko, Komodakis, Wide Residual Networks",
         input_shape=(32, 32, 3), num_classes=10, options={"depth": 28, "width": 10}, reference_params=36_479_194,
         reference="paper Table: 36.5M for CIFAR-10", description="WRN-28-10 for CIFAR")
