"""AlexNet (Krizhevsky, Sutskever, Hinton: ImageNet Classification with Deep CNNs, 2012).

conv1(96, 11x11/4) - ReLU - LRN - maxpool(3/2), conv2(256, 5x5) - ReLU - LRN - maxpool,
conv3(384), conv4(384), conv5(256) - maxpool, FC 4096 - FC 4096 - FC 1000, dropout 0.5 before the
first two FC layers. On 227x227x3 conv1 gives 55x55x96 with 11*11*3*96 = 34,848 weights.

The paper trained the network split over two GPUs: every layer's channels are split in half and
conv2, conv4 and conv5 see only their own GPU's half of the previous layer, while conv3 and the FC
layers read all of it. ``two_tower=True`` (model ``alexnet``) builds exactly that with grouped
convolutions (groups=2): 60,965,224 parameters. ``alexnet_1tower`` connects every layer fully:
62,378,344 parameters.
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import dense_head, feature_pooling, image_input, use_small_stem
from keras_cnns.layers import LocalResponseNormalization
from keras_cnns.registry import register

layers = keras.layers


def _conv(x, filters, kernel, name, strides=1, padding="same", groups=1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, groups=groups, name=f"{name}_conv")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def alexnet(num_classes=1000, input_shape=(227, 227, 3), include_top=True, two_tower=True, lrn=True,
            dropout=0.5, fc_units=4096, small_input=None, pooling=None, classifier_activation="softmax"):
    small = use_small_stem(small_input, input_shape)
    # the full stem: 11x11 stride-4 conv, then three 3x3 stride-2 poolings need 67 pixels (64 left pool5 a 2x2 map)
    inputs = image_input(input_shape, min_size=32 if small else 67)
    groups = 2 if two_tower else 1
    if small:  # CIFAR-size input: a 5x5 stride-1 first layer keeps enough resolution for 3 poolings
        x = _conv(inputs, 96, 5, "conv1")
    else:
        x = _conv(inputs, 96, 11, "conv1", strides=4, padding="valid")
    if lrn:
        x = LocalResponseNormalization(name="conv1_lrn")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _conv(x, 256, 5, "conv2", groups=groups)
    if lrn:
        x = LocalResponseNormalization(name="conv2_lrn")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = _conv(x, 384, 3, "conv3")  # reads both towers
    x = _conv(x, 384, 3, "conv4", groups=groups)
    x = _conv(x, 256, 3, "conv5", groups=groups)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    if not include_top:
        return keras.Model(inputs, feature_pooling(x, pooling))
    x = layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = layers.Dense(fc_units, name=f"fc{i}")(x)
        x = layers.Activation("relu", name=f"fc{i}_relu")(x)
    return keras.Model(inputs, dense_head(x, num_classes, classifier_activation, name="fc8"))


_PAPER = "Krizhevsky, Sutskever, Hinton, ImageNet Classification with Deep Convolutional Neural Networks"
register("alexnet", alexnet, family="alexnet", year=2012, paper=_PAPER, input_shape=(227, 227, 3),
         options={"two_tower": True}, reference_params=60_965_224, reference="paper (two GPUs, grouped conv2/4/5)",
         description="two-tower AlexNet with LRN, as trained on two GPUs")
register("alexnet_1tower", alexnet, family="alexnet", year=2012, paper=_PAPER, input_shape=(227, 227, 3),
         options={"two_tower": False}, reference_params=62_378_344, reference="paper layer sizes, one device",
         description="AlexNet with every layer fully connected to the previous one")

NO_CHECKPOINT = {  # keras_cnns/pretrained
    "alexnet": "torchvision's AlexNet is the one-tower 64-192-384-256-256 variant, not the paper's network",
    "alexnet_1tower": "torchvision's AlexNet has 64-192-384-256-256 filters, not the paper's 96-256-384-384-256",
}
