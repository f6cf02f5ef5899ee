"""SqueezeNet (Iandola et al.: SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size, 2016).

Fire modules: a *squeeze* layer of 1x1 convolutions feeds an *expand* layer of parallel 1x1 and
3x3 convolutions whose outputs are concatenated. No FC layer: a 1x1 convolution to the classes and
global average pooling. Version 1.1 (the authors' later release) starts with a 3x3 stem and pools
earlier, for 2.4x less computation at the same accuracy. ``ceil_mode=True`` rounds the max-pooling
output sizes up, as the authors' Caffe models and torchvision do (their pretrained weights need it).
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import (
    conv_bn_act,
    feature_pooling,
    gap_predictions,
    image_input,
    max_pool,
    use_small_stem,
)
from keras_cnns.pretrained.checkpoints import torchvision_pth
from keras_cnns.registry import register

layers = keras.layers

# per version: stem (filters, kernel), then a sequence of fire (squeeze, expand) / "pool" entries
LAYOUT = {
    "1.0": ((96, 7), [(16, 64), (16, 64), (32, 128), "pool", (32, 128), (48, 192), (48, 192), (64, 256), "pool",
                      (64, 256)]),
    "1.1": ((64, 3), [(16, 64), (16, 64), "pool", (32, 128), (32, 128), "pool", (48, 192), (48, 192), (64, 256),
                      (64, 256)]),
}


def fire(x, squeeze, expand, name, batch_norm=False):
    s = conv_bn_act(x, squeeze, 1, name=f"{name}_squeeze", batch_norm=batch_norm)
    e1 = conv_bn_act(s, expand, 1, name=f"{name}_expand1x1", batch_norm=batch_norm)
    e3 = conv_bn_act(s, expand, 3, name=f"{name}_expand3x3", batch_norm=batch_norm)
    return layers.Concatenate(name=f"{name}_concat")([e1, e3])


def squeezenet(num_classes=1000, input_shape=(224, 224, 3), include_top=True, version="1.0", dropout=0.5,
               batch_norm=False, small_input=None, pooling=None, classifier_activation="softmax", ceil_mode=False):
    if version not in LAYOUT:
        raise ValueError(f"SqueezeNet version must be one of {', '.join(LAYOUT)}, got {version!r}")
    (stem_filters, stem_kernel), body = LAYOUT[version]
    small = use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=16 if small else 48)
    if small:
        x = conv_bn_act(inputs, stem_filters, 3, name="conv1", batch_norm=batch_norm)
    else:
        x = conv_bn_act(inputs, stem_filters, stem_kernel, name="conv1", strides=2, padding="valid",
                        batch_norm=batch_norm)
    pool_padding = "ceil" if ceil_mode else "valid"
    x = max_pool(x, "pool1", padding=pool_padding)
    fires = pools = 0
    for entry in body:
        if entry == "pool":
            pools += 1
            x = max_pool(x, f"pool{pools + 1}", padding=pool_padding)
        else:
            fires += 1
            x = fire(x, *entry, name=f"fire{fires + 1}", batch_norm=batch_norm)
    if not include_top:
        return keras.Model(inputs, feature_pooling(x, pooling))
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Conv2D(num_classes, 1, name="conv10_conv")(x)
    x = layers.Activation("relu", name="conv10_relu")(x)
    return keras.Model(inputs, gap_predictions(x, classifier_activation))


_PAPER = "Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size"
register("squeezenet1_0", squeezenet, family="squeezenet", year=2016, paper=_PAPER, options={"version": "1.0"},
         reference_params=1_248_424, reference="torchvision squeezenet1_0", description="fire modules, version 1.0")
register("squeezenet1_1", squeezenet, family="squeezenet", year=2016, paper=_PAPER, options={"version": "1.1"},
         reference_params=1_235_496, reference="torchvision squeezenet1_1", description="fire modules, version 1.1")

#: ImageNet weights: torchvision's (its pooling rounds up: ceil_mode; keras_cnns/pretrained)
CHECKPOINTS = {name: torchvision_pth(name, filename, top1, "squeezenet", {"ceil_mode": True}, top=("conv10_conv",))
               for name, filename, top1 in [("squeezenet1_0", "squeezenet1_0-b66bff10.pth", 58.092),
                                            ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth", 58.178)]}
