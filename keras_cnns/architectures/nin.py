"""Network in Network (Lin, Chen, Yan, 2014).

Each "mlpconv" block is a spatial convolution followed by two 1x1 convolutions (a small MLP shared
across positions — the forerunner of 1x1 bottlenecks). The last block outputs one map per class and
global average pooling replaces the fully connected classifier.

``nin`` is the ImageNet model of the authors' Caffe release (96-256-384-1024 channels);
``nin_cifar`` the CIFAR-10 model of the paper (192 channels, 966,986 parameters for 10 classes).
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import conv_bn_act, feature_pooling, gap_predictions, image_input, use_small_stem
from keras_cnns.registry import register

layers = keras.layers


def mlpconv(x, filters, kernel_size, name, strides=1, padding="same", mlp=(None, None), batch_norm=False):
    """conv(kernel_size) -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv -> ReLU (``mlp`` widths default to ``filters``)."""
    layers_spec = [("conv", filters, kernel_size, strides, padding)]
    layers_spec += [(f"mlp{i}", width or filters, 1, 1, "same") for i, width in enumerate(mlp, start=1)]
    for suffix, width, kernel, stride, pad in layers_spec:
        x = conv_bn_act(x, width, kernel, name=f"{name}_{suffix}", strides=stride, padding=pad, batch_norm=batch_norm,
                        use_bias=True)
    return x


def _last_block_and_head(x, inputs, filters, kernel_size, name, num_classes, include_top, pooling, batch_norm,
                         classifier_activation):
    """The last mlpconv: with the top, its second 1x1 conv outputs one map per class, then GAP."""
    if not include_top:
        return keras.Model(inputs, feature_pooling(mlpconv(x, filters, kernel_size, name, batch_norm=batch_norm),
                                                   pooling))
    x = mlpconv(x, filters, kernel_size, name, mlp=(None, num_classes), batch_norm=batch_norm)
    return keras.Model(inputs, gap_predictions(x, classifier_activation))


def nin(num_classes=1000, input_shape=(224, 224, 3), include_top=True, dropout=0.5, batch_norm=False,
        small_input=None, pooling=None, classifier_activation="softmax"):
    small = use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=16 if small else 63)
    if small:
        x = mlpconv(inputs, 96, 5, "block1", batch_norm=batch_norm)
    else:
        x = mlpconv(inputs, 96, 11, "block1", strides=4, padding="valid", batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = mlpconv(x, 256, 5, "block2", batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = mlpconv(x, 384, 3, "block3", batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return _last_block_and_head(x, inputs, 1024, 3, "block4", num_classes, include_top, pooling, batch_norm,
                                classifier_activation)


def nin_cifar(num_classes=10, input_shape=(32, 32, 3), include_top=True, dropout=0.5, batch_norm=False,
              pooling=None, classifier_activation="softmax"):
    inputs = image_input(input_shape, min_size=8)
    x = mlpconv(inputs, 192, 5, "block1", mlp=(160, 96), batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout1")(x)
    x = mlpconv(x, 192, 5, "block2", batch_norm=batch_norm)
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="pool2")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout2")(x)
    return _last_block_and_head(x, inputs, 192, 3, "block3", num_classes, include_top, pooling, batch_norm,
                                classifier_activation)


_PAPER = "Lin, Chen, Yan, Network In Network"
register("nin", nin, family="nin", year=2014, paper=_PAPER, reference_params=7_595_176,
         reference="computed: authors' Caffe ImageNet model (96-256-384-1024, mlpconv x4)",
         description="ImageNet NiN: 4 mlpconv blocks, global average pooling")
register("nin_cifar", nin_cifar, family="nin", year=2014, paper=_PAPER, input_shape=(32, 32, 3),
         num_classes=10, reference_params=966_986, reference="computed: the paper's CIFAR-10 model",
         description="CIFAR-10 NiN of the paper (3 mlpconv blocks, 192 channels)")
