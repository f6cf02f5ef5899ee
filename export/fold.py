"""Batch-norm folding: the inference copy of a model that the SavedModel serves.

At inference a BatchNormalization right after a convolution is an affine map per output channel,
``y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta``, so it folds into the convolution's
kernel and bias. The folded graph is Conv2D + BiasAdd (+ activation), which every backend fuses well.
Measured (benchmarks/RESULTS.md): with oneDNN on, TensorFlow fuses an unfolded Conv2D + FusedBatchNorm
into one oneDNN convolution whose batch-norm post-ops take a slow generic path at batch 1: 6.5-26x
slower than the folded graph (ResNet-18, MobileNet v2, EfficientNet-B0).

Only a Conv2D or DepthwiseConv2D with a linear activation, channels-last, called once, whose output goes
to nothing but one BatchNormalization is folded; the BatchNormalization becomes an Identity of the same
name. Nested functional models (ensembles, transfer-learning bases) are folded recursively. The model
given is never changed.
"""
import numpy as np


def _foldable_pairs(model):
    """{conv layer name: batch-norm layer} for every conv -> batch-norm pair that folds exactly."""
    import tf_keras as keras

    pairs = {}
    for bn in model.layers:
        if type(bn) is not keras.layers.BatchNormalization or len(bn._inbound_nodes) != 1:
            continue
        if bn.renorm or bn.virtual_batch_size or list(bn.axis) not in ([3], [-1]):
            continue
        conv = bn._inbound_nodes[0].inbound_layers
        if type(conv) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
            continue
        if (len(conv._inbound_nodes) != 1 or len(conv._outbound_nodes) != 1 or conv.name in model.output_names
                or conv.data_format != "channels_last" or conv.activation is not keras.activations.linear):
            continue
        pairs[conv.name] = bn
    return pairs


def _folded_weights(conv, bn):
    """[kernel, bias] of ``conv`` with ``bn`` folded in (computed in float64)."""
    import tf_keras as keras

    weights = [w.astype(np.float64) for w in conv.get_weights()]
    kernel, bias = weights[0], (weights[1] if conv.use_bias else 0.0)
    bn_weights = [w.astype(np.float64) for w in bn.get_weights()]
    gamma = bn_weights.pop(0) if bn.scale else 1.0
    beta = bn_weights.pop(0) if bn.center else 0.0
    mean, variance = bn_weights
    scale = gamma / np.sqrt(variance + bn.epsilon)
    # Conv2D kernel [kh, kw, in, out]; DepthwiseConv2D kernel [kh, kw, in, multiplier] (output in * m + j).
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    folded_kernel = kernel * scale.reshape(kernel.shape[2:] if depthwise else (-1,))
    folded_bias = (bias - mean) * scale + beta
    return [folded_kernel.astype(np.float32), folded_bias.astype(np.float32)]


def fold_batch_norms(model):
    """An inference copy of ``model`` with every foldable conv -> batch-norm pair folded, or ``model``
    itself when there is nothing to fold (a Sequential or subclassed model, a QAT-wrapped one)."""
    import tf_keras as keras

    if not getattr(model, "_is_graph_network", False):
        return model
    pairs = _foldable_pairs(model)
    nested = {}
    for layer in model.layers:
        folded = fold_batch_norms(layer) if getattr(layer, "_is_graph_network", False) else layer
        if folded is not layer:
            nested[layer.name] = folded
    if not pairs and not nested:
        return model
    folded_bns = {bn.name for bn in pairs.values()}

    def clone(layer):
        if layer.name in nested:
            return nested[layer.name]
        if layer.name in folded_bns:
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in nested or layer.name in folded_bns or not layer.weights:
            continue
        target = copy.get_layer(layer.name)
        target.set_weights(_folded_weights(layer, pairs[layer.name]) if layer.name in pairs else layer.get_weights())
    return copy


def use_native_grouped_convolutions(model):
    """tf_keras runs a grouped Conv2D (AlexNet's towers, ResNeXt) through a tf.function compiled with XLA,
    which the SavedModel keeps as a call that tf2onnx cannot convert (and TF Serving must JIT-compile).
    TensorFlow's own Conv2D op computes grouped convolutions on the CPU too, so the export graph uses it:
    the same arithmetic as one plain Conv2D node per layer. Changes the layers' op, not their weights."""
    for layer in model.layers:
        if getattr(layer, "_is_graph_network", False):
            use_native_grouped_convolutions(layer)
        elif getattr(layer, "groups", 1) > 1 and hasattr(layer, "convolution_op"):
            layer._jit_compiled_convolution_op = layer.convolution_op
    return model

