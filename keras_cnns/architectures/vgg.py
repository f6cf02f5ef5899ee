"""VGGNet (Simonyan, Zisserman: Very Deep Convolutional Networks for Large-Scale Image Recognition, 2014).

Configurations A, A-LRN, B, C, D, E of the paper's Table 1 (11, 11, 13, 16, 16, 19 weight layers):
stacks of 3x3 stride-1 convolutions (C puts a 1x1 convolution third in blocks 3-5), 2x2 max-pooling,
then FC 4096 - FC 4096 - FC classes. Three 3x3 convolutions see a 7x7 field with 27C^2 weights
instead of 49C^2. ``batch_norm=True`` adds BN after every convolution (the torchvision ``_bn``
variants, which keep the convolution biases).
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import conv_bn_act, dense_head, feature_pooling, image_input
from keras_cnns.layers import LocalResponseNormalization
from keras_cnns.pretrained.checkpoints import keras_h5, torchvision_pth
from keras_cnns.registry import register

layers = keras.layers

# Each block: list of (filters, kernel_size); a max-pool follows every block.
CONFIGS = {
    "A": [[(64, 3)], [(128, 3)], [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "B": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "C": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 2 + [(256, 1)], [(512, 3)] * 2 + [(512, 1)],
          [(512, 3)] * 2 + [(512, 1)]],
    "D": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 3, [(512, 3)] * 3, [(512, 3)] * 3],
    "E": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 4, [(512, 3)] * 4, [(512, 3)] * 4],
}


def vgg(num_classes=1000, input_shape=(224, 224, 3), include_top=True, config="D", lrn=False, batch_norm=False,
        dropout=0.5, fc_units=4096, pooling=None, classifier_activation="softmax"):
    if config not in CONFIGS:
        raise ValueError(f"VGG config must be one of {', '.join(CONFIGS)}, got {config!r}")
    inputs = image_input(input_shape, min_size=32)
    x = inputs
    for b, block in enumerate(CONFIGS[config], start=1):
        for i, (filters, kernel) in enumerate(block, start=1):
            x = conv_bn_act(x, filters, kernel, name=f"block{b}_conv{i}", batch_norm=batch_norm, use_bias=True)
            if lrn and b == 1 and i == 1:  # configuration A-LRN
                x = LocalResponseNormalization(name="block1_lrn")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    if not include_top:
        return keras.Model(inputs, feature_pooling(x, pooling))
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(fc_units, name=f"fc{i}")(x)
        x = layers.Activation("relu", name=f"fc{i}_relu")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return keras.Model(inputs, dense_head(x, num_classes, classifier_activation, name="fc3"))


_PAPER = "Simonyan, Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition"
# name, config, LRN, reference params of the plain and the batch-norm variant (torchvision; vgg16c is
# computed from the paper's Table 1, whose Table 2 gives it as 134M)
_VARIANTS = [
    ("vgg11", "A", False, 132_863_336, 132_868_840),
    ("vgg11_lrn", "A", True, 132_863_336, None),  # LRN has no weights
    ("vgg13", "B", False, 133_047_848, 133_053_736),
    ("vgg16c", "C", False, 133_638_952, None),
    ("vgg16", "D", False, 138_357_544, 138_365_992),
    ("vgg19", "E", False, 143_667_240, 143_678_248),
]
for _name, _config, _lrn, _params, _bn_params in _VARIANTS:
    _ref = "paper Table 1 config C, computed" if _name == "vgg16c" else f"torchvision {_name.replace('_lrn', '')}"
    register(_name, vgg, family="vgg", year=2014, paper=_PAPER, options={"config": _config, "lrn": _lrn},
             reference_params=_params, reference=_ref, description=f"configuration {_config}{'-LRN' if _lrn else ''}")
    if _bn_params:
        register(f"{_name}_bn", vgg, family="vgg", year=2014, paper=_PAPER,
                 options={"config": _config, "batch_norm": True}, reference_params=_bn_params,
                 reference=f"torchvision {_name}_bn", description=f"configuration {_config} with batch normalization")

#: ImageNet weights: Keras Applications' (md5 from its code, top-1 from keras.io; Caffe's BGR conv1 reversed at
#: load) and torchvision's (keras_cnns/pretrained)
CHECKPOINTS = {
    "vgg16": keras_h5("vgg16", "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b",
                      71.3, "caffe", "vgg", top=("fc1", "fc2", "fc3")),
    "vgg19": keras_h5("vgg19", "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318",
                      71.3, "caffe", "vgg", top=("fc1", "fc2", "fc3")),
    **{name: torchvision_pth(name, filename, top1, "vgg", top=("fc1", "fc2", "fc3")) for name, filename, top1 in [
        ("vgg11", "vgg11-8a719046.pth", 69.02), ("vgg11_bn", "vgg11_bn-6002323d.pth", 70.37),
        ("vgg13", "vgg13-19584684.pth", 69.928), ("vgg13_bn", "vgg13_bn-abd245e5.pth", 71.586),
        ("vgg16_bn", "vgg16_bn-6c64b313.pth", 73.36), ("vgg19_bn", "vgg19_bn-c79401a0.pth", 74.218)]},
}
