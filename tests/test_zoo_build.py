"""Every model builds at a small input for any class count, infers deterministically and trains."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns import create_model, get_model_info, inference_model, list_models
from keras_cnns.layers import DropPath, FractalJoin, StochasticDepth

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers
STOCHASTIC = (StochasticDepth, DropPath, FractalJoin)


@pytest.mark.parametrize("name", list_models())
def test_small_input_forward_and_one_training_step(name):
    info = get_model_info(name)
    shape = info.small_input_shape
    model = create_model(name, num_classes=7, input_shape=shape)
    x = tf.random.uniform((2,) + shape)
    y = tf.constant([1, 5])

    serving = inference_model(model)
    probs = serving(x, training=False).numpy()
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs, serving(x, training=False).numpy())  # no randomness at inference

    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    before = [w.numpy().copy() for w in model.trainable_weights]
    zero_scale = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization) and l.scale
                  and not np.any(l.gamma.numpy())]
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        loss = loss_fn(y, outputs[0]) + sum(AUX_LOSS_WEIGHT * loss_fn(y, aux) for aux in outputs[1:])
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.name for w, g in zip(model.trainable_weights, grads) if g is None]
    assert not missing, f"weights with no gradient: {missing[:5]}"
    assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
    for weight, grad in zip(model.trainable_weights, grads):  # one plain SGD step (Keras' SGD(0.01) builds an
        weight.assign_sub(0.01 * grad)  # update op per weight eagerly: 2 s of ResNet-152's 15)
    changed = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    if any(isinstance(l, STOCHASTIC) for l in model.layers):
        assert changed > 0  # dropped blocks / paths legitimately get no update this step
    elif zero_scale:  # residual branches that start as the identity: only their last scale moves at step 1
        assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)
                   if any(w is l.gamma for l in zero_scale))
        assert changed >= (len(before) - 3 * 4 * len(zero_scale)) * 0.9  # expand, depthwise, project: 4 weights
    else:
        assert changed >= len(before) * 0.9


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "mobilenet_v2", "densenet_bc100", "alexnet", "lenet5"])
def test_feature_extractor_without_top(name):
    shape = get_model_info(name).small_input_shape
    features = create_model(name, input_shape=shape, include_top=False, pooling="avg")
    assert len(features.output_shape) == 2 and features.output_shape[1] > 7
    top = {l.name for l in create_model(name, input_shape=shape).layers if isinstance(l, keras.layers.Dense)}
    assert top and not any(isinstance(l, keras.layers.Dense) for l in features.layers)  # LeNet's f6 included


def test_googlenet_exposes_two_auxiliary_classifiers_for_training():
    model = create_model("googlenet", num_classes=5)
    assert len(model.outputs) == 3
    assert [o.name.split("/")[0] for o in model.outputs] == ["predictions", "aux1_predictions", "aux2_predictions"]
    aux_input = {l.name: l for l in model.layers}["aux1_pool"].input
    assert aux_input.shape[1:] == (14, 14, 512)  # attached to inception 4a
    serving = inference_model(model)
    assert len(serving.outputs) == 1 and not any(l.name.startswith("aux") for l in serving.layers)
    assert serving.count_params() < model.count_params()


def test_mlp_families_end_in_global_average_pooling():
    for name in ("nin", "nin_cifar", "googlenet", "squeezenet1_0", "densenet121", "resnet50"):
        types = [type(l).__name__ for l in inference_model(create_model(name)).layers]
        assert "GlobalAveragePooling2D" in types and "Flatten" not in types, name


#: how each family orders convolution, batch norm and activation (one model per family; MobileNet twice)
CONV_ORDER = {"conv_bn_act": ["resnet18", "wide_resnet50_2", "resnext50_32x4d", "resnet152_sd", "resnet20_cifar",
                              "fractalnet20_cifar", "mobilenet", "mobilenet_v2", "efficientnet_b0"],
              "bn_act_conv": ["preact_resnet18", "densenet121"],
              "conv_act": ["lenet5", "alexnet", "vgg11", "nin", "googlenet", "squeezenet1_0"]}
#: what may follow a convolution's batch norm instead of an activation: the end of a residual branch (then the
#: sum, or its stochastic-depth / drop-path gate) or MobileNet v2 / EfficientNet's linear bottleneck
AFTER_BRANCH_BN = ("Add", "StochasticDepth", "DropPath", "Conv2D", "DepthwiseConv2D")


def _next(layer):
    return [node.outbound_layer for node in layer.outbound_nodes]


def _previous(layer):
    inbound = layer.inbound_nodes[0].inbound_layers
    return inbound if isinstance(inbound, list) else [inbound]


@pytest.mark.parametrize("order, name", [(o, n) for o, names in CONV_ORDER.items() for n in names])
def test_conv_bn_activation_are_separate_layers_in_the_family_order(order, name):
    """What tensorflow-model-optimization needs to quantize a model: no activation fused into a convolution,
    each convolution's batch norm right after it (or, pre-activation, batch norm -> activation right before)."""
    model = inference_model(create_model(name, input_shape=get_model_info(name).small_input_shape))
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and "_se_" not in l.name]
    assert convs
    for conv in convs:
        assert conv.activation is keras.activations.linear, conv.name
        if order == "conv_act":
            assert [type(a) for a in _next(conv)] == [keras.layers.Activation], conv.name
        elif order == "conv_bn_act":
            (after,) = _next(conv)
            assert isinstance(after, keras.layers.BatchNormalization), conv.name
            then = _next(after)
            assert all(isinstance(t, keras.layers.Activation) for t in then) or \
                type(then[0]).__name__ in AFTER_BRANCH_BN, (conv.name, [t.name for t in then])
        else:
            (before,) = _previous(conv)
            if isinstance(before, keras.layers.InputLayer) or isinstance(before, keras.layers.ZeroPadding2D):
                continue  # the stem sees the image
            assert isinstance(before, keras.layers.Activation), conv.name
            assert isinstance(_previous(before)[0], keras.layers.BatchNormalization), conv.name
    if order == "conv_bn_act" and name.startswith("efficientnet"):  # squeeze-excitation: 1x1 convs with a bias
        assert all(l.use_bias for l in model.layers if isinstance(l, keras.layers.Conv2D) and "_se_" in l.name)


def test_lenet_accepts_mnist_size_by_padding_to_32():
    model = create_model("lenet5", input_shape=(28, 28, 1))
    assert model.get_layer("c1_conv").output_shape == (None, 28, 28, 6)
    assert model.count_params() == 61_706


def test_small_stem_can_be_forced_off():
    small = create_model("resnet18", input_shape=(32, 32, 3))
    imagenet_style = create_model("resnet18", input_shape=(32, 32, 3), small_input=False)
    assert small.get_layer("conv1_conv").kernel_size == (3, 3)
    assert imagenet_style.get_layer("conv1_conv").kernel_size == (7, 7)


def test_mobilenet_width_and_resolution_multipliers():
    half = create_model("mobilenet", alpha=0.5)
    assert half.get_layer("block13_pw_conv").filters == 512
    assert create_model("mobilenet", resolution_multiplier=160 / 224).input_shape == (None, 160, 160, 3)


def test_efficientnet_variants_grow_from_coefficients():
    b0, b3 = create_model("efficientnet_b0"), create_model("efficientnet_b3")
    assert b3.input_shape == (None, 300, 300, 3)
    depthwise = [sum(isinstance(l, keras.layers.DepthwiseConv2D) for l in m.layers) for m in (b0, b3)]
    assert depthwise == [16, 26]  # sum of ceil(1.4 * repeats) over the B0 stages


def test_alexnet_full_stem_says_its_smallest_input_instead_of_failing_inside_keras():
    from keras_cnns.errors import CnnkitError

    assert create_model("alexnet", num_classes=3, input_shape=(67, 67, 3)).output_shape == (None, 3)
    for side in (64, 66):  # 64 used to fail at pool5 with Keras' "Negative dimension size"
        with pytest.raises(CnnkitError, match="needs at least 67x67"):
            create_model("alexnet", input_shape=(side, side, 3))
