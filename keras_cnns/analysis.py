"""Parameters, multiply-accumulates (MACs) and activation memory, per layer and per model.

MACs count the multiply-accumulates of convolutions (grouped and depthwise included) and fully
connected layers — the "ops" the notes count (e.g. 28x28x128x1x1x256 for a 1x1 convolution).
Element-wise work (bias, batch norm, activations, pooling, additions) is not counted; TensorFlow's
own profiler, used by :func:`tf_profiler_flops` to cross-check, reports FLOPs = 2 x MACs for the
same convolutions and matrix products.

Activation memory counts the elements a forward pass must hold for one image: the input and every
layer's output, except layers that can run in place on their input (activations, inference-time
batch norm, dropout and the other identity-shaped regularisers) or are views of it (flatten, reshape).
"""
import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_cnns.layers import DropPath

layers = keras.layers

#: layers that overwrite their input in place or are views of it: no activation memory of their own
IN_PLACE = (layers.Activation, layers.ReLU, layers.BatchNormalization, layers.Dropout, layers.SpatialDropout2D,
            layers.GaussianNoise, layers.GaussianDropout, layers.Flatten, layers.Reshape, DropPath)


def count_trainable(model):
    """Trainable weights (what torchvision counts: no batch-norm moving statistics)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@dataclasses.dataclass
class LayerProfile:
    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int
    activations: int  # output elements held for one image (0 for in-place layers)


@dataclasses.dataclass
class ModelProfile:
    name: str
    input_shape: tuple
    layers: list
    params: int
    trainable_params: int
    macs: int
    activations: int
    bytes_per_element: int = 4

    @property
    def activation_bytes(self):
        return self.activations * self.bytes_per_element

    @property
    def param_bytes(self):
        return self.params * self.bytes_per_element

    def totals(self):
        """The model-level numbers (what the shipped zoo table stores per model)."""
        return {"params": self.params, "trainable_params": self.trainable_params, "macs": self.macs,
                "activations": self.activations, "input_shape": list(self.input_shape)}

    def to_dict(self):
        return {
            "name": self.name, **self.totals(), "activation_bytes": self.activation_bytes,
            "layers": [dataclasses.asdict(l) | {"output_shape": list(l.output_shape)} for l in self.layers],
        }


def _shape(layer_output_shape):
    shape = layer_output_shape[0] if isinstance(layer_output_shape, list) else layer_output_shape
    return tuple(shape)


def _elements(shape):
    return int(np.prod([d for d in shape[1:] if d is not None])) if len(shape) > 1 else 1


def layer_macs(layer):
    """Multiply-accumulates of one call of ``layer`` for one image (0 for layers without any)."""
    if isinstance(layer, layers.DepthwiseConv2D):
        out = _shape(layer.output_shape)
        kh, kw = layer.kernel_size
        return _elements(out) * kh * kw
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)) and not isinstance(
            layer, (layers.Conv2DTranspose, layers.SeparableConv2D)):
        out = _shape(layer.output_shape)
        in_channels = int(layer.input_shape[-1])
        return _elements(out) * int(np.prod(layer.kernel_size)) * (in_channels // layer.groups)
    if isinstance(layer, layers.Dense):
        out = _shape(layer.output_shape)
        return _elements(out) * int(layer.input_shape[-1])
    return 0


def profile_model(model, bytes_per_element=4):
    """A :class:`ModelProfile` of a built tf_keras model (nested models are expanded)."""
    rows = []

    def visit(m, prefix):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                visit(layer, f"{prefix}{layer.name}/")
                continue
            out = _shape(layer.output_shape)
            in_place = isinstance(layer, IN_PLACE)
            rows.append(LayerProfile(
                name=prefix + layer.name, type=type(layer).__name__, output_shape=tuple(out),
                params=int(layer.count_params()), macs=int(layer_macs(layer)),
                activations=0 if in_place else _elements(out),
            ))

    visit(model, "")
    return ModelProfile(
        name=model.name, input_shape=tuple(model.input_shape[1:]), layers=rows, params=int(model.count_params()),
        trainable_params=count_trainable(model), macs=sum(r.macs for r in rows), activations=sum(r.activations for r in rows),
        bytes_per_element=bytes_per_element,
    )


def receptive_field(model):
    """Receptive field (in input pixels, along the height) of the model's output, through its
    convolution and pooling layers; branches take the largest field of their inputs."""
    fields = {}
    for layer in model.layers:
        inbound = []
        for node in layer._inbound_nodes:
            parents = node.inbound_layers
            inbound += parents if isinstance(parents, list) else [parents]
        rf, jump = max((fields[p.name] for p in inbound if p.name in fields), default=(1, 1))
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        strides = getattr(layer, "strides", None)
        if kernel is not None and strides is not None:
            dilation = getattr(layer, "dilation_rate", (1,))[0]
            rf += (dilation * (kernel[0] - 1)) * jump
            jump *= strides[0]
        fields[layer.name] = (rf, jump)
    return fields[model.layers[-1].name][0]


def tf_profiler_flops(model, batch_size=1):
    """TensorFlow's own count of the model's floating-point operations, by op type.

    Freezes the inference graph (variables -> constants) and runs ``tf.compat.v1.profiler`` on it.
    Returns ``{op_type: flops}`` summed over the graph's nodes; op types TensorFlow keeps no FLOP
    statistics for are absent.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([batch_size] + list(model.input_shape[1:]), model.inputs[0].dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    result = tf.compat.v1.profiler.profile(graph, cmd="scope", options=options)
    op_types = {op.name: op.type for op in graph.get_operations()}
    flops = {}
    pending = [result]
    while pending:
        node = pending.pop()
        if node.float_ops:
            op_type = op_types.get(node.name, node.name)
            flops[op_type] = flops.get(op_type, 0) + int(node.float_ops)
        pending.extend(node.children)
    return flops


def format_count(n, unit=""):
    """1234567 -> '1.23M' (K, M, G)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.{max(0, 3 - len(str(int(n // div))))}f}{suffix}{unit}"
    return f"{n}{unit}"
