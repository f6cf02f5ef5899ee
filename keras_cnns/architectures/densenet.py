"""DenseNet (Huang, Liu, van der Maaten, Weinberger: Densely Connected Convolutional Networks, 2017).

Inside a dense block every layer receives the concatenation of all earlier feature maps of the
block and adds ``growth_rate`` new ones. Layers are bottlenecked (BN-ReLU-1x1 conv to 4k,
BN-ReLU-3x3 conv to k); transition layers (BN-ReLU-1x1 conv, 2x2 average pooling) compress the
channels by ``compression`` (0.5, "DenseNet-BC"). ``densenet_bc100`` is the paper's CIFAR network
(L = 100, k = 12): three blocks of 16 layers after a 3x3 stem of 2k channels. ``padding="symmetric"``
pads the stem's strided convolution and pooling as torchvision and Keras Applications do (the
pretrained checkpoints need it; see resnet.py).
"""
import math

import tf_keras as keras

from keras_cnns.architectures._blocks import bn_act, conv_bn_act, image_input, max_pool, pooled_head, use_small_stem
from keras_cnns.pretrained.checkpoints import keras_h5
from keras_cnns.registry import register

layers = keras.layers


def dense_layer(x, growth_rate, name, bottleneck=True, dropout=0.0, bn_epsilon=1e-5):
    y = bn_act(x, f"{name}_1", bn_epsilon=bn_epsilon)
    if bottleneck:
        y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
        y = bn_act(y, f"{name}_2", bn_epsilon=bn_epsilon)
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def dense_block(x, num_layers, growth_rate, name, bottleneck=True, dropout=0.0, bn_epsilon=1e-5):
    for i in range(1, num_layers + 1):
        x = dense_layer(x, growth_rate, f"{name}_layer{i}", bottleneck, dropout, bn_epsilon)
    return x


def transition(x, compression, name, bn_epsilon=1e-5):
    x = bn_act(x, name, bn_epsilon=bn_epsilon)
    x = layers.Conv2D(int(math.floor(x.shape[-1] * compression)), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def densenet(num_classes=1000, input_shape=(224, 224, 3), include_top=True, blocks=(6, 12, 24, 16), growth_rate=32,
             compression=0.5, bottleneck=True, stem_filters=None, cifar=False, dropout=0.0, small_input=None,
             pooling=None, classifier_activation="softmax", padding="same", bn_epsilon=1e-5):
    if not 0.0 < compression <= 1.0:
        raise ValueError(f"compression must be in (0, 1], got {compression!r}")
    stem_filters = stem_filters or 2 * growth_rate
    small = cifar or use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=2 ** (len(blocks) - 1) if small else 32)
    if small:
        x = layers.Conv2D(stem_filters, 3, padding="same", use_bias=False, name="conv1_conv")(inputs)
    else:
        x = conv_bn_act(inputs, stem_filters, 7, name="conv1", strides=2, padding=padding, bn_epsilon=bn_epsilon)
        x = max_pool(x, "pool1", padding=padding)
    for b, n in enumerate(blocks, start=1):
        x = dense_block(x, n, growth_rate, f"block{b}", bottleneck, dropout, bn_epsilon)
        if b < len(blocks):
            x = transition(x, compression, f"transition{b}", bn_epsilon)
    x = bn_act(x, "post", bn_epsilon=bn_epsilon)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling,
                                           classifier_activation=classifier_activation))


_PAPER = "Huang, Liu, van der Maaten, Weinberger, Densely Connected Convolutional Networks"
for _depth, _blocks, _params in [(121, (6, 12, 24, 16), 7_978_856), (169, (6, 12, 32, 32), 14_149_480),
                                 (201, (6, 12, 48, 32), 20_013_928)]:
    register(f"densenet{_depth}", densenet, family="densenet", year=2017, paper=_PAPER, options={"blocks": _blocks},
             reference_params=_params, reference=f"torchvision densenet{_depth}",
             description=f"DenseNet-BC-{_depth}, k=32")
register("densenet_bc100", densenet, family="densenet", year=2017, paper=_PAPER, input_shape=(32, 32, 3),
         num_classes=10, options={"blocks": (16, 16, 16), "growth_rate": 12, "cifar": True},
         reference_params=769_162, reference="computed: the paper's CIFAR DenseNet-BC (L=100, k=12; Table 2: 0.8M)",
         description="CIFAR DenseNet-BC, L=100, k=12")

#: ImageNet weights: Keras Applications' (md5 from its code, top-1 from keras.io; keras_cnns/pretrained)
_KERAS_LAYOUT = {"padding": "symmetric", "bn_epsilon": 1.001e-5}
CHECKPOINTS = {f"densenet{depth}": keras_h5(f"densenet{depth}",
                                            f"densenet/densenet{depth}_weights_tf_dim_ordering_tf_kernels.h5", md5,
                                            top1, "torch", "densenet", _KERAS_LAYOUT) for depth, md5, top1 in [
    (121, "9d60b8095a5708f2dcce2bca79d332c7", 75.0), (169, "d699b8f76981ab1b30698df4c175e90b", 76.2),
    (201, "1ceb130c1ea1b78c3bf6114dbdfd8807", 77.3)]}
