"""GoogLeNet / Inception v1 (Szegedy et al.: Going Deeper with Convolutions, 2014).

22 weight layers, no large FC layers (global average pooling), Inception modules of parallel 1x1,
3x3, 5x5 convolutions and 3x3 max-pooling concatenated along depth. The bottleneck module puts a
1x1 reduction in front of the 3x3 and 5x5 convolutions and behind the pooling; the naive module
(``naive=True`` / :func:`inception_naive`) has none, so its pooling branch passes every input
channel through. Two auxiliary classifiers on 4a and 4d (5x5/3 average pool, 1x1 conv 128,
FC 1024, 70% dropout, FC classes) are extra training outputs; :func:`keras_cnns.inference_model`
drops them. Layer widths are the paper's Table 1.
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import conv_bn_act, dense_head, feature_pooling, image_input, use_small_stem
from keras_cnns.layers import LocalResponseNormalization
from keras_cnns.registry import register

layers = keras.layers

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def inception(x, f1, f3r, f3, f5r, f5, proj, name, batch_norm=False):
    """Inception module with 1x1 bottlenecks (the paper's Figure 2b)."""
    def conv(t, filters, kernel, suffix):
        return conv_bn_act(t, filters, kernel, name=f"{name}_{suffix}", batch_norm=batch_norm)

    b1 = conv(x, f1, 1, "1x1")
    b3 = conv(conv(x, f3r, 1, "3x3_reduce"), f3, 3, "3x3")
    b5 = conv(conv(x, f5r, 1, "5x5_reduce"), f5, 5, "5x5")
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv(bp, proj, 1, "pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])


def inception_naive(x, f1, f3, f5, name, batch_norm=False):
    """Naive Inception module (Figure 2a): 1x1, 3x3, 5x5 convolutions and 3x3 max-pooling only."""
    b1 = conv_bn_act(x, f1, 1, name=f"{name}_1x1", batch_norm=batch_norm)
    b3 = conv_bn_act(x, f3, 3, name=f"{name}_3x3", batch_norm=batch_norm)
    b5 = conv_bn_act(x, f5, 5, name=f"{name}_5x5", batch_norm=batch_norm)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])


def auxiliary_classifier(x, num_classes, name, batch_norm=False, classifier_activation="softmax"):
    """5x5/3 average pool (14x14 -> 4x4 in the paper; smaller maps pool what they have), 1x1 conv 128,
    FC 1024, dropout 0.7, FC classes."""
    pool = min(5, x.shape[1], x.shape[2])
    x = layers.AveragePooling2D(pool, strides=min(3, pool), name=f"{name}_pool")(x)
    x = conv_bn_act(x, 128, 1, name=f"{name}_reduce", batch_norm=batch_norm)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, name=f"{name}_fc1")(x)
    x = layers.Activation("relu", name=f"{name}_fc1_relu")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    x = layers.Dense(num_classes, name=f"{name}_fc2")(x)
    if classifier_activation:
        x = layers.Activation(classifier_activation, dtype="float32", name=f"{name}_predictions")(x)
    return x


def googlenet(num_classes=1000, input_shape=(224, 224, 3), include_top=True, aux_logits=True, naive=False,
              batch_norm=False, lrn=True, dropout=0.4, small_input=None, pooling=None,
              classifier_activation="softmax"):
    small = use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=16 if small else 64)
    if small:  # CIFAR-size input: 3x3 stride-1 stem, no early poolings
        x = conv_bn_act(inputs, 64, 3, name="conv1", batch_norm=batch_norm)
    else:
        x = conv_bn_act(inputs, 64, 7, name="conv1", strides=2, batch_norm=batch_norm)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    if lrn:
        x = LocalResponseNormalization(name="pool1_lrn")(x)
    x = conv_bn_act(x, 64, 1, name="conv2_reduce", batch_norm=batch_norm)
    x = conv_bn_act(x, 192, 3, name="conv2", batch_norm=batch_norm)
    if lrn:
        x = LocalResponseNormalization(name="conv2_lrn")(x)
    if not small:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)

    aux_outputs = []
    for key in INCEPTION:
        if key in ("4a", "5a"):
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{int(key[0]) - 1}")(x)
        f1, f3r, f3, f5r, f5, proj = INCEPTION[key]
        if naive:
            x = inception_naive(x, f1, f3, f5, name=f"inception{key}", batch_norm=batch_norm)
        else:
            x = inception(x, f1, f3r, f3, f5r, f5, proj, name=f"inception{key}", batch_norm=batch_norm)
        if include_top and aux_logits and key in ("4a", "4d"):
            aux_outputs.append(auxiliary_classifier(x, num_classes, f"aux{len(aux_outputs) + 1}", batch_norm,
                                                    classifier_activation))
    if not include_top:
        return keras.Model(inputs, feature_pooling(x, pooling))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = dense_head(x, num_classes, classifier_activation)
    return keras.Model(inputs, [x] + aux_outputs)


_PAPER = "Szegedy et al., Going Deeper with Convolutions"
register("googlenet", googlenet, family="googlenet", year=2014, paper=_PAPER, reference_params=6_998_552,
         reference="computed with biases, auxiliary heads excluded (paper Table 1: 6.8M weights)",
         description="Inception v1 with two auxiliary classifiers (training outputs)")
register("googlenet_bn", googlenet, family="googlenet", year=2014, paper=_PAPER, options={"batch_norm": True,
         "lrn": False}, description="Inception v1 with batch normalization after every convolution")

NO_CHECKPOINT = {  # keras_cnns/pretrained
    "googlenet_bn": "torchvision's GoogLeNet uses 3x3 convolutions in the '5x5' branch",
}
