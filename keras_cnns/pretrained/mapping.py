"""Mapping a checkpoint's tensors onto the zoo's layers ({zoo layer: {keras weight name: array}}) and loading
them strictly: every weighted layer takes exactly the tensors of one source layer, shapes checked."""
import os
import re

from keras_cnns.errors import CnnkitError
from keras_cnns.pretrained.checkpoints import KERAS, TORCHVISION
from keras_cnns.pretrained.readers import read_keras_h5, read_torch


def _conv(state, prefix, bias=True):
    out = {"kernel": state.pop(f"{prefix}.weight").transpose(2, 3, 1, 0)}  # OIHW -> HWIO (grouped too)
    if bias and f"{prefix}.bias" in state:
        out["bias"] = state.pop(f"{prefix}.bias")
    return out


def _bn(state, prefix):
    return {"gamma": state.pop(f"{prefix}.weight"), "beta": state.pop(f"{prefix}.bias"),
            "moving_mean": state.pop(f"{prefix}.running_mean"), "moving_variance": state.pop(f"{prefix}.running_var")}


def _linear(state, prefix):
    return {"kernel": state.pop(f"{prefix}.weight").T, "bias": state.pop(f"{prefix}.bias")}


def _torch_resnet(state, model, checkpoint):
    out = {"conv1_conv": _conv(state, "conv1"), "conv1_bn": _bn(state, "bn1")}
    blocks = sorted({m.groups() for m in (re.match(r"layer(\d+)\.(\d+)\.", k) for k in state) if m},
                    key=lambda sb: (int(sb[0]), int(sb[1])))
    for stage, block in blocks:
        prefix, name = f"layer{stage}.{block}", f"stage{stage}_block{int(block) + 1}"
        for i in (1, 2, 3):
            if f"{prefix}.conv{i}.weight" in state:
                out[f"{name}_{i}_conv"] = _conv(state, f"{prefix}.conv{i}")
                out[f"{name}_{i}_bn"] = _bn(state, f"{prefix}.bn{i}")
        if f"{prefix}.downsample.0.weight" in state:
            out[f"{name}_0_conv"] = _conv(state, f"{prefix}.downsample.0")
            out[f"{name}_0_bn"] = _bn(state, f"{prefix}.downsample.1")
    out["fc"] = _linear(state, "fc")
    return out


def _torch_vgg(state, model, checkpoint):
    convs = [layer.name[:-len("_conv")] for layer in model.layers if layer.name.endswith("_conv")]
    features = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    out, i = {}, 0
    for index in features:
        if state[f"features.{index}.weight"].ndim == 4:
            if i >= len(convs):
                raise CnnkitError(f"the checkpoint has more convolutions than {model.name} ({len(convs)})")
            out[f"{convs[i]}_conv"] = _conv(state, f"features.{index}")
            i += 1
        else:  # the batch norm after the convolution before
            out[f"{convs[i - 1]}_bn"] = _bn(state, f"features.{index}")
    fc1 = _linear(state, "classifier.0")
    units, flat = fc1["kernel"].shape[1], fc1["kernel"].shape[0]
    side = int(round((flat / 512) ** 0.5))
    if side * side * 512 == flat:  # torch flattens (C, H, W), Keras (H, W, C)
        fc1["kernel"] = fc1["kernel"].reshape(512, side, side, units).transpose(1, 2, 0, 3).reshape(flat, units)
    out.update(fc1=fc1, fc2=_linear(state, "classifier.3"), fc3=_linear(state, "classifier.6"))
    return out


def _torch_squeezenet(state, model, checkpoint):
    out = {"conv1_conv": _conv(state, "features.0")}
    fires = sorted({int(k.split(".")[1]) for k in state if ".squeeze." in k})
    for n, index in enumerate(fires, start=2):
        for part in ("squeeze", "expand1x1", "expand3x3"):
            out[f"fire{n}_{part}_conv"] = _conv(state, f"features.{index}.{part}")
    out["conv10_conv"] = _conv(state, "classifier.1")
    return out


def _keras_renamer(rules):
    """A mapping from (source-name regex, zoo-name template) rules. A last layer that no rule names is the
    classifier, whatever the file calls it (Keras' own loader goes by order, and older files name it
    differently: fc1000, Logits, conv_preds)."""
    compiled = [(re.compile(pattern), template) for pattern, template in rules]

    def rename(source):
        for pattern, template in compiled:
            match = pattern.fullmatch(source)
            if match:
                return template(match) if callable(template) else match.expand(template)
        return None

    def mapping(layers, model, checkpoint):
        out = {}
        for source in list(layers):
            if source.startswith(("normalization", "rescaling")):
                layers.pop(source)  # EfficientNet's input normalisation: the recorded preprocessing does it
        names = list(layers)
        for i, source in enumerate(names):
            target = rename(source) or (checkpoint.head if i == len(names) - 1 else None)
            if target:
                out[target] = layers.pop(source)
        return out

    return mapping


_KERAS_MAPPINGS = {
    "mobilenet": _keras_renamer([(r"conv1", r"conv1_conv"), (r"conv1_bn", r"conv1_bn"),
                                 (r"conv_(dw|pw)_(\d+)", r"block\2_\1_conv"),
                                 (r"conv_(dw|pw)_(\d+)_bn", r"block\2_\1_bn")]),
    "mobilenet_v2": _keras_renamer([
        (r"Conv1", r"conv1_conv"), (r"bn_Conv1", r"conv1_bn"),
        (r"expanded_conv_depthwise", r"block1_dw_conv"), (r"expanded_conv_depthwise_BN", r"block1_dw_bn"),
        (r"expanded_conv_project", r"block1_project_conv"), (r"expanded_conv_project_BN", r"block1_project_bn"),
        (r"block_(\d+)_(expand|project)", lambda m: f"block{int(m[1]) + 1}_{m[2]}_conv"),
        (r"block_(\d+)_(expand|project)_BN", lambda m: f"block{int(m[1]) + 1}_{m[2]}_bn"),
        (r"block_(\d+)_depthwise", lambda m: f"block{int(m[1]) + 1}_dw_conv"),
        (r"block_(\d+)_depthwise_BN", lambda m: f"block{int(m[1]) + 1}_dw_bn"),
        (r"Conv_1", r"conv_last_conv"), (r"Conv_1_bn", r"conv_last_bn")]),
    "efficientnet": _keras_renamer([
        (r"(stem|top)_(conv|bn)", r"\1_\2"), (r"(block\d+[a-z])_dwconv", r"\1_dw_conv"),
        (r"(block\d+[a-z])_bn", r"\1_dw_bn"),
        (r"(block\d+[a-z])_(expand_conv|expand_bn|se_reduce|se_expand|project_conv|project_bn)", r"\1_\2")]),
    "vgg": _keras_renamer([(r"(block\d_conv\d)", r"\1_conv"), (r"(fc\d)", r"\1")]),
    "preact_resnet": _keras_renamer([
        (r"conv1_conv", r"conv1_conv"), (r"post_bn", r"post_bn"),
        (r"conv(\d)_block(\d+)_(preact_bn|\d_conv|\d_bn)", lambda m: f"stage{int(m[1]) - 1}_block{m[2]}_{m[3]}")]),
    "densenet": _keras_renamer([
        (r"conv1[/_](conv|bn)", r"conv1_\1"), (r"bn", r"post_bn"),
        (r"conv(\d)_block(\d+)_0_bn", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_1_bn"),
        (r"conv(\d)_block(\d+)_1_conv", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_1_conv"),
        (r"conv(\d)_block(\d+)_1_bn", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_2_bn"),
        (r"conv(\d)_block(\d+)_2_conv", lambda m: f"block{int(m[1]) - 1}_layer{m[2]}_2_conv"),
        (r"pool(\d)_(bn|conv)", lambda m: f"transition{int(m[1]) - 1}_{m[2]}")]),
}
_TORCH_MAPPINGS = {"resnet": _torch_resnet, "vgg": _torch_vgg, "squeezenet": _torch_squeezenet}
#: Checkpoint.mapping -> mapping(tensors, model, checkpoint), per source
MAPPINGS = {KERAS: _KERAS_MAPPINGS, TORCHVISION: _TORCH_MAPPINGS}


def _read(checkpoint, path):
    is_torch = path.endswith((".pth", ".pt", ".bin"))
    if is_torch != (checkpoint.source == TORCHVISION):
        want = "a PyTorch .pth" if checkpoint.source == TORCHVISION else "a Keras .h5"
        raise CnnkitError(f"{checkpoint.model}'s ImageNet weights come from {checkpoint.source}: give {want} "
                          f"file as published ({checkpoint.url}), not {os.path.basename(path)}")
    return read_torch(path) if is_torch else read_keras_h5(path)


def load_into(model, checkpoint, path):
    """Set ``model``'s weights from the checkpoint file at ``path``; returns what was left out (a sentence,
    or "" when everything was loaded). Raises :class:`CnnkitError` naming the first tensor that does not fit,
    and then sets nothing."""
    file = os.path.basename(path)
    tensors = _read(checkpoint, path)
    try:
        mapped = MAPPINGS[checkpoint.source][checkpoint.mapping](tensors, model, checkpoint)
    except KeyError as err:
        raise CnnkitError(f"{file} is not a {checkpoint.source} checkpoint for {checkpoint.model}: it has no "
                          f"tensor {err.args[0]}") from None
    if tensors:
        raise CnnkitError(f"{file} has tensors {checkpoint.model} has no place for, first {next(iter(tensors))}: "
                          "a checkpoint for another model?")
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    if checkpoint.bgr:  # the source's first convolution reads BGR: reverse its input channels
        first = next(iter(layers))
        mapped[first]["kernel"] = mapped[first]["kernel"][:, :, ::-1, :]
    notes = []
    absent = [name for name in checkpoint.top if name in mapped and name not in layers]
    if absent:  # built without its top
        notes.append(f"{', '.join(absent)} not loaded (the model has no top)")
        for name in absent:
            del mapped[name]
    head = checkpoint.head
    if head in layers:
        classes = int(layers[head].weights[0].shape[-1])
        if head in mapped and classes != int(mapped[head]["kernel"].shape[-1]):
            notes.append(f"the {int(mapped[head]['kernel'].shape[-1])}-class ImageNet classifier was not loaded: "
                         f"{model.name} has {classes} classes (its classifier starts random)")
            del layers[head], mapped[head]
        elif head not in mapped and classes != 1000:
            notes.append(f"the file has no classifier; {model.name}'s {classes}-class classifier starts random")
            del layers[head]
        elif head in mapped and mapped[head]["kernel"].ndim != len(layers[head].weights[0].shape):
            mapped[head]["kernel"] = mapped[head]["kernel"].reshape(layers[head].weights[0].shape)  # 1x1 conv head
    values = []
    for name, layer in layers.items():
        source = mapped.pop(name, None)
        if source is None:
            raise CnnkitError(f"{file} has no tensors for {model.name}'s layer {name}: a checkpoint for another "
                              "model or configuration (a _notop file for a model with its classifier?)")
        arrays = []
        for weight in layer.weights:
            key = weight.name.rsplit("/", 1)[-1].split(":")[0]
            if key not in source:
                raise CnnkitError(f"{file} has no {key} for {name}")
            array = source.pop(key)
            if tuple(array.shape) != tuple(weight.shape):
                raise CnnkitError(f"{file}: {name}/{key} is {tuple(array.shape)}, {model.name} needs "
                                  f"{tuple(weight.shape)} (a checkpoint for another model, width or input size?)")
            arrays.append(array)
        if source:
            raise CnnkitError(f"{file} has {', '.join(source)} for {name}, which has no such weight")
        values.append((layer, arrays))
    if mapped:
        raise CnnkitError(f"{file} has tensors for layers {model.name} does not have, first {next(iter(mapped))}: "
                          "a checkpoint for a deeper model?")
    for layer, arrays in values:  # nothing is set unless everything fits
        layer.set_weights(arrays)
    return "; ".join(notes)
