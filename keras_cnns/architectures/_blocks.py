"""Building blocks shared by the families: input handling, conv -> BN -> activation, classifier heads.

Convolution, batch normalisation and activation are always separate layers, in that order, so that
tensorflow-model-optimization can fold and quantize every family.
"""
import tf_keras as keras

from keras_cnns.errors import CnnkitError

layers = keras.layers

#: Inputs whose smaller side is below this use a family's small-input stem (CIFAR/MNIST practice).
SMALL_INPUT = 64


def image_input(input_shape, min_size=1, name="input"):
    """A ``keras.Input`` for an (H, W, C) image, with a clear error for a bad shape."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise CnnkitError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}")
    if min(shape[:2]) < min_size:
        raise CnnkitError(f"input {shape[0]}x{shape[1]} is too small for this model: it needs at least {min_size}x{min_size}")
    return keras.Input(shape=shape, name=name)


def use_small_stem(small_input, input_shape):
    """Resolve a family's ``small_input`` option: None means "decide from the input size"."""
    if small_input is None:
        return min(input_shape[:2]) < SMALL_INPUT
    return bool(small_input)


def conv_bn_act(
    x,
    filters,
    kernel_size,
    name,
    strides=1,
    padding="same",
    groups=1,
    batch_norm=True,
    activation="relu",
    use_bias=None,
    bn_epsilon=1e-5,
    bn_gamma="ones",
):
    """Conv2D -> BatchNormalization -> Activation (each optional part a separate, named layer).

    ``use_bias`` defaults to ``not batch_norm`` (a bias in front of BN is redundant). ``bn_gamma``: the
    batch norm's scale initializer ("zeros" starts a residual branch as the identity). ``padding`` is
    "same", "valid" or "symmetric" (see :func:`strided_padding`).
    """
    if use_bias is None:
        use_bias = not batch_norm
    x, padding = strided_padding(x, kernel_size, strides, padding, name)
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=use_bias, name=f"{name}_conv"
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=bn_epsilon, gamma_initializer=bn_gamma, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def strided_padding(x, kernel_size, strides, padding, name):
    """``padding="symmetric"``: k // 2 zeros on every side, as Caffe, PyTorch and Keras Applications' ResNet /
    DenseNet pad. It differs from TensorFlow's "same" only when the stride is > 1 (same pads the extra row
    at the bottom/right), but pretrained weights from those sources expect exactly their own alignment.
    Returns (x, the padding the convolution or pooling then uses)."""
    if padding != "symmetric":
        return x, padding
    if strides == 1:
        return x, "same"
    return layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x), "valid"


def max_pool(x, name, size=3, strides=2, padding="same"):
    """Max-pooling with "same", "valid", "symmetric" (zero-padded: used after a ReLU or, as in Keras'
    ResNet v2, where the source pads with zeros) or "ceil" (PyTorch's ``ceil_mode``: a last, partial
    window at the bottom/right; zero-padded, so after a ReLU only) padding."""
    if padding == "ceil":
        x = layers.ZeroPadding2D(((0, strides - 1), (0, strides - 1)), name=f"{name}_pad")(x)
        padding = "valid"
    x, padding = strided_padding(x, size, strides, padding, name)
    return layers.MaxPooling2D(size, strides=strides, padding=padding, name=name)(x)


def depthwise_bn_act(x, kernel_size, name, strides=1, depth_multiplier=1, activation="relu6", bn_epsilon=1e-3):
    """DepthwiseConv2D -> BatchNormalization -> Activation: the per-channel half of MobileNet's
    depthwise separable convolution (also in MobileNet v2 and EfficientNet blocks)."""
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", depth_multiplier=depth_multiplier,
                               use_bias=False, name=f"{name}_dw_conv")(x)
    x = layers.BatchNormalization(epsilon=bn_epsilon, name=f"{name}_dw_bn")(x)
    return layers.Activation(activation, name=f"{name}_dw_{activation}")(x)


def bn_act(x, name, activation="relu", bn_epsilon=1e-5):
    """BatchNormalization -> Activation: the pre-activation of ResNet v2, Wide ResNet and DenseNet."""
    x = layers.BatchNormalization(epsilon=bn_epsilon, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def dense_head(x, num_classes, classifier_activation="softmax", name="fc"):
    """The final linear classifier followed by its activation as a separate layer ``predictions``.

    The activation always computes in float32, so mixed-precision training keeps a stable softmax."""
    x = layers.Dense(num_classes, name=name)(x)
    if classifier_activation:
        x = layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return x


def gap_predictions(x, classifier_activation="softmax"):
    """Global average pooling of per-class maps (NiN, SqueezeNet): no FC layer at all."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if classifier_activation:
        x = layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return x


def pooled_head(x, num_classes, include_top, pooling=None, dropout=0.0, classifier_activation="softmax"):
    """Global-average-pooling head used by every modern family.

    With ``include_top=False`` returns the feature map, or its ``pooling`` ("avg" / "max") vector.
    """
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        return dense_head(x, num_classes, classifier_activation)
    return feature_pooling(x, pooling)


def feature_pooling(x, pooling):
    if pooling in (None, "none"):
        return x
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    raise CnnkitError(f"pooling must be 'avg', 'max' or None, got {pooling!r}")

