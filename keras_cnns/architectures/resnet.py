"""ResNet and its descendants on ImageNet.

* ResNet v1 (He et al.: Deep Residual Learning for Image Recognition, 2015): basic blocks (18, 34)
  and bottleneck blocks (50, 101, 152: 1x1 reduce, 3x3, 1x1 expand), 1x1 projection shortcuts
  where the shape changes. A block learns F(x) and outputs F(x) + x, so the gradient through the
  shortcut is never attenuated. The stride sits on the 3x3 convolution (torchvision's "v1.5").
* Pre-activation ResNet (He et al.: Identity Mappings in Deep Residual Networks, 2016):
  BN - ReLU - conv - BN - ReLU - conv on the residual path, nothing after the addition.
* Wide ResNet (Zagoruyko, Komodakis, 2016): wider bottlenecks (``base_width=128``).
* ResNeXt (Xie et al.: Aggregated Residual Transformations, 2017): ``cardinality`` parallel
  pathways as a grouped 3x3 convolution.
* Stochastic depth (Huang et al.: Deep Networks with Stochastic Depth, 2016): with
  ``stochastic_depth=p_L`` block l of L survives training with probability 1 - l/L (1 - p_L) and is
  scaled by that probability at inference.

``padding="symmetric"`` pads strided convolutions and the stem's pooling k // 2 on every side (torchvision
and Keras Applications do; TensorFlow's "same" puts the extra row at the bottom/right), and
``downsample="last"`` moves each stage's stride to the last block of the stage before (TF-slim and Keras
Applications' ResNet v2 layout; a strided block without a projection subsamples its shortcut). Both are
what the pretrained checkpoints need (keras_cnns.pretrained); neither changes a weight or a MAC.
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import bn_act, conv_bn_act, image_input, max_pool, pooled_head, use_small_stem
from keras_cnns.layers import StochasticDepth
from keras_cnns.pretrained.checkpoints import keras_h5, torchvision_pth
from keras_cnns.registry import ALL, register

layers = keras.layers

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


def survival_probabilities(num_blocks, final_survival):
    """The linear decay rule p_l = 1 - l/L (1 - p_L), l = 1..L."""
    if final_survival is None:
        return [1.0] * num_blocks
    if not 0.0 < final_survival <= 1.0:
        raise ValueError(f"stochastic_depth (final survival probability) must be in (0, 1], got {final_survival!r}")
    return [1.0 - (l / num_blocks) * (1.0 - final_survival) for l in range(1, num_blocks + 1)]


def residual_merge(shortcut, residual, name, survival=1.0):
    """shortcut + residual, or its stochastic-depth form when the block may be dropped."""
    if survival < 1.0:
        return StochasticDepth(survival, name=f"{name}_stochastic_depth")([shortcut, residual])
    return layers.Add(name=f"{name}_add")([shortcut, residual])


def basic_block(x, filters, strides, name, survival=1.0, conv=None, **_):
    conv = conv or {}
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn_act(x, filters, 1, name=f"{name}_0", strides=strides, activation=None, **conv)
    y = conv_bn_act(x, filters, 3, name=f"{name}_1", strides=strides, **conv)
    y = conv_bn_act(y, filters, 3, name=f"{name}_2", activation=None, **conv)
    y = residual_merge(shortcut, y, name, survival)
    return layers.Activation("relu", name=f"{name}_out")(y)


def bottleneck_block(x, filters, strides, name, survival=1.0, groups=1, base_width=64, conv=None):
    conv = conv or {}
    width = int(filters * (base_width / 64.0)) * groups
    out = filters * 4
    shortcut = x
    if strides != 1 or x.shape[-1] != out:
        shortcut = conv_bn_act(x, out, 1, name=f"{name}_0", strides=strides, activation=None, **conv)
    y = conv_bn_act(x, width, 1, name=f"{name}_1", **conv)
    y = conv_bn_act(y, width, 3, name=f"{name}_2", strides=strides, groups=groups, **conv)
    y = conv_bn_act(y, out, 1, name=f"{name}_3", activation=None, **conv)
    y = residual_merge(shortcut, y, name, survival)
    return layers.Activation("relu", name=f"{name}_out")(y)


def preact_shortcut(x, preact, out, strides, name):
    """A projection of the pre-activation where the channels change; otherwise the input itself,
    subsampled where the block is strided (only in the ``downsample="last"`` layout)."""
    if x.shape[-1] != out:
        return layers.Conv2D(out, 1, strides=strides, name=f"{name}_0_conv")(preact)
    if strides != 1:
        return layers.MaxPooling2D(1, strides=strides, name=f"{name}_0_subsample")(x)
    return x


def preact_basic_block(x, filters, strides, name, survival=1.0, conv=None, **_):
    conv = conv or {}
    preact = bn_act(x, f"{name}_preact", bn_epsilon=conv.get("bn_epsilon", 1e-5))
    shortcut = preact_shortcut(x, preact, filters, strides, name)
    y = conv_bn_act(preact, filters, 3, name=f"{name}_1", strides=strides, **conv)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y)
    return residual_merge(shortcut, y, name, survival)


def preact_bottleneck_block(x, filters, strides, name, survival=1.0, groups=1, base_width=64, conv=None):
    conv = conv or {}
    width = int(filters * (base_width / 64.0)) * groups
    out = filters * 4
    preact = bn_act(x, f"{name}_preact", bn_epsilon=conv.get("bn_epsilon", 1e-5))
    shortcut = preact_shortcut(x, preact, out, strides, name)
    y = conv_bn_act(preact, width, 1, name=f"{name}_1", **conv)
    y = conv_bn_act(y, width, 3, name=f"{name}_2", strides=strides, groups=groups, **conv)
    y = layers.Conv2D(out, 1, name=f"{name}_3_conv")(y)
    return residual_merge(shortcut, y, name, survival)


_BLOCKS = {("basic", False): basic_block, ("bottleneck", False): bottleneck_block,
           ("basic", True): preact_basic_block, ("bottleneck", True): preact_bottleneck_block}


def resnet(num_classes=1000, input_shape=(224, 224, 3), include_top=True, depth=50, preact=False, cardinality=1,
           base_width=64, stochastic_depth=None, small_input=None, pooling=None, classifier_activation="softmax",
           padding="same", downsample="first", bn_epsilon=1e-5):
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth!r}")
    if padding not in ("same", "symmetric") or downsample not in ("first", "last"):
        raise ValueError(f"padding must be 'same' or 'symmetric' and downsample 'first' or 'last', got "
                         f"{padding!r}, {downsample!r}")
    kind, stages = DEPTHS[depth]
    if kind == "basic" and (cardinality != 1 or base_width != 64):
        raise ValueError("cardinality and base_width apply to bottleneck ResNets (depth >= 50) only")
    block = _BLOCKS[(kind, preact)]
    small = use_small_stem(small_input, input_shape)
    inputs = image_input(input_shape, min_size=8 if small else 32)
    conv = {"padding": padding, "bn_epsilon": bn_epsilon}
    stem = {"batch_norm": not preact, "activation": None if preact else "relu", **conv}
    if small:  # CIFAR-size input: 3x3 stride-1 stem, no max-pooling
        x = conv_bn_act(inputs, 64, 3, name="conv1", **stem)
    else:
        x = conv_bn_act(inputs, 64, 7, name="conv1", strides=2, **stem)
        x = max_pool(x, "pool1", padding=padding)
    survival = iter(survival_probabilities(sum(stages), stochastic_depth))
    for s, blocks in enumerate(stages):
        filters = 64 * 2 ** s
        for b in range(blocks):
            if downsample == "first":
                strides = 2 if (b == 0 and s > 0) else 1
            else:
                strides = 2 if (b == blocks - 1 and s < len(stages) - 1) else 1
            x = block(x, filters, strides, name=f"stage{s + 1}_block{b + 1}", survival=next(survival),
                      groups=cardinality, base_width=base_width, conv=conv)
    if preact:
        x = bn_act(x, "post", bn_epsilon=bn_epsilon)
    return keras.Model(inputs, pooled_head(x, num_classes, include_top, pooling,
                                           classifier_activation=classifier_activation))


_V1 = "He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition"
_V2 = "He, Zhang, Ren, Sun, Identity Mappings in Deep Residual Networks"
_WIDE = "Zagoruyko, Komodakis, Wide Residual Networks"
_NEXT = "Xie, Girshick, Dollar, Tu, He, Aggregated Residual Transformations for Deep Neural Networks"
_SD = "Huang, Sun, Liu, Sedra, Weinberger, Deep Networks with Stochastic Depth"

for _depth, _params in {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}.items():
    register(f"resnet{_depth}", resnet, family="resnet", year=2015, paper=_V1, options={"depth": _depth},
             reference_params=_params, reference=f"torchvision resnet{_depth}",
             description=f"ResNet-{_depth} ({DEPTHS[_depth][0]} blocks)")
for _depth, _params in {18: None, 34: None, 50: 25_613_800, 101: 44_675_560, 152: 60_380_648}.items():
    register(f"preact_resnet{_depth}", resnet, family="preact_resnet", year=2016, paper=_V2,
             options={"depth": _depth, "preact": True}, reference_params=_params, params_counted=ALL,
             reference=f"Keras Applications ResNet{_depth}V2" if _params else "",
             description=f"pre-activation ResNet-{_depth} (v2)")
for _depth, _params in {50: 68_883_240, 101: 126_886_696}.items():
    register(f"wide_resnet{_depth}_2", resnet, family="wide_resnet", year=2016, paper=_WIDE,
             options={"depth": _depth, "base_width": 128}, reference_params=_params,
             reference=f"torchvision wide_resnet{_depth}_2", description="bottlenecks twice as wide")
for _name, _depth, _card, _width, _params in [("resnext50_32x4d", 50, 32, 4, 25_028_904),
                                              ("resnext101_32x8d", 101, 32, 8, 88_791_336),
                                              ("resnext101_64x4d", 101, 64, 4, 83_455_272)]:
    register(_name, resnet, family="resnext", year=2017, paper=_NEXT,
             options={"depth": _depth, "cardinality": _card, "base_width": _width}, reference_params=_params,
             reference=f"torchvision {_name}", description=f"cardinality {_card}, {_width} channels per path")
register("resnet152_sd", resnet, family="stochastic_depth", year=2016, paper=_SD,
         options={"depth": 152, "stochastic_depth": 0.5}, reference_params=60_192_808,
         reference="torchvision resnet152 (stochastic depth adds no weights)",
         description="ResNet-152 with stochastic depth, linear decay to p_L = 0.5")

#: ImageNet weights: torchvision's DEFAULT (IMAGENET1K_V2 where there is one) for v1, wide and ResNeXt,
#: Keras Applications' for pre-activation (keras_cnns/pretrained); the options reproduce each source's padding
_TORCH_LAYOUT = {"padding": "symmetric"}
_KERAS_V2_LAYOUT = {"padding": "symmetric", "downsample": "last", "bn_epsilon": 1.001e-5}
CHECKPOINTS = {
    **{name: torchvision_pth(name, filename, top1, "resnet", _TORCH_LAYOUT) for name, filename, top1 in [
        ("resnet18", "resnet18-f37072fd.pth", 69.758), ("resnet34", "resnet34-b627a593.pth", 73.314),
        ("resnet50", "resnet50-11ad3fa6.pth", 80.858), ("resnet101", "resnet101-cd907fc2.pth", 81.886),
        ("resnet152", "resnet152-f82ba261.pth", 82.284),
        ("wide_resnet50_2", "wide_resnet50_2-9ba9bcbe.pth", 81.602),
        ("wide_resnet101_2", "wide_resnet101_2-d733dc28.pth", 82.51),
        ("resnext50_32x4d", "resnext50_32x4d-1a0047aa.pth", 81.198),
        ("resnext101_32x8d", "resnext101_32x8d-110c445d.pth", 82.834),
        ("resnext101_64x4d", "resnext101_64x4d-173b62eb.pth", 83.246)]},
    **{f"preact_resnet{depth}": keras_h5(f"preact_resnet{depth}",
                                         f"resnet/resnet{depth}v2_weights_tf_dim_ordering_tf_kernels.h5", md5, top1,
                                         "tf", "preact_resnet", _KERAS_V2_LAYOUT) for depth, md5, top1 in [
        (50, "3ef43a0b657b3be2300d5770ece849e0", 76.0), (101, "6343647c601c52e1368623803854d971", 77.2),
        (152, "a49b44d1979771252814e80f8ec446f9", 78.0)]},
}
NO_CHECKPOINT = {
    "resnet152_sd": "stochastic depth scales each residual by its survival probability at inference; ResNet-152 "
                    "checkpoints were trained without it (use resnet152)",
}
