"""FractalNet (Larsson, Maire, Shakhnarovich: FractalNet: Ultra-Deep Neural Networks without Residuals, 2017).

A fractal block with C columns expands f_1(z) = conv(z), f_{C+1}(z) = join(f_C(f_C(z)), conv(z)):
column c (0 = shallowest) holds 2^c conv-BN-ReLU layers, so shallow and deep paths coexist and no
residual connection is needed. Joins take the element-wise mean. While training, drop-path
regularises: per step either *local* (each join drops inputs with probability 0.15, keeping at
least one) or *global* (one column is chosen for the whole network). At inference the full network
is used. Every block is followed by 2x2 max-pooling.

``fractalnet20_cifar`` / ``fractalnet40_cifar`` are the paper's CIFAR networks (5 blocks of 64, 128,
256, 512, 512 channels; C = 3 or 4), ``fractalnet34`` its ImageNet network (a ResNet-style stem and
4 blocks with C = 4).
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import conv_bn_act, image_input, pooled_head, use_small_stem
from keras_cnns.layers import FractalJoin, FractalPathSampler
from keras_cnns.registry import register

layers = keras.layers


def fractal_block(x, filters, columns, path_code, name, local_drop=0.15, dropout=0.0):
    """One fractal block; ``path_code`` is the output of the network's FractalPathSampler."""
    depth = 2 ** (columns - 1)
    outputs = [x] * columns  # the running output of every column
    for t in range(1, depth + 1):
        active = [c for c in range(columns) if t % 2 ** (columns - 1 - c) == 0]  # columns with a conv ending at t
        for c in active:
            outputs[c] = conv_bn_act(outputs[c], filters, 3, name=f"{name}_col{c + 1}_conv{t // 2 ** (columns - 1 - c)}")
        if len(active) > 1:
            joined = FractalJoin(active, local_drop=local_drop, name=f"{name}_join{t}")(
                [outputs[c] for c in active] + [path_code])
            for c in active:
                outputs[c] = joined
    x = outputs[-1]
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def fractalnet(num_classes=10, input_shape=(32, 32, 3), include_top=True, columns=3,
               filters=(64, 128, 256, 512, 512), dropout=(0.0, 0.1, 0.2, 0.3, 0.4), local_drop=0.15,
               global_probability=0.5, imagenet_stem=False, small_input=None, pooling=None,
               classifier_activation="softmax"):
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns!r}")
    dropout = tuple(dropout) if dropout else (0.0,) * len(filters)
    if len(dropout) != len(filters):
        raise ValueError("dropout needs one rate per block")
    stem = imagenet_stem and not use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=4 * 2 ** (len(filters) - 1) if stem else 2 ** len(filters))
    path_code = FractalPathSampler(columns, global_probability, name="drop_path_sampler")(inputs)
    x = inputs
    if stem:
        x = conv_bn_act(x, 64, 7, name="conv1", strides=2)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for b, (f, rate) in enumerate(zip(filters, dropout), start=1):
        x = fractal_block(x, f, columns, path_code, f"block{b}", local_drop, rate)
        if b < len(filters) or not stem:
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling,
                                           classifier_activation=classifier_activation))


_PAPER = "Larsson, Maire, Shakhnarovich, FractalNet: Ultra-Deep Neural Networks without Residuals"
for _c in (3, 4):
    register(f"fractalnet{5 * 2 ** (_c - 1)}_cifar", fractalnet, family="fractalnet", year=2017, paper=_PAPER,
             input_shape=(32, 32, 3), num_classes=10, options={"columns": _c},
             description=f"CIFAR FractalNet, 5 blocks of C={_c} columns")
register("fractalnet34", fractalnet, family="fractalnet", year=2017, paper=_PAPER,
         options={"columns": 4, "filters": (64, 128, 256, 512), "dropout": None, "imagenet_stem": True},
         description="ImageNet FractalNet-34: stem + 4 blocks of C=4 columns")
