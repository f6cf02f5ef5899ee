"""Transfer learning, as the notes' table says:

==================  ==========================  =============================================
                    similar domain              different domain
==================  ==========================  =============================================
small data set      ``head``: retrain only the  ``top:K`` with K = half the blocks (the hard
                    last classifier layer       case: little data to relearn features from)
large data set      ``top:K``: fine-tune the    ``full``: retrain every layer
                    top quarter of the blocks
==================  ==========================  =============================================

"Small" means fewer than :data:`SMALL_PER_CLASS` training images per class. The classifier is always
re-initialised (for the new classes). Frozen layers are set ``trainable = False``; in tf_keras that
also keeps their batch-norm layers in inference mode (moving statistics frozen). Unfrozen layers are
fine-tuned with a lower learning rate: ``lr_factor`` (default 1/10) times the source run's rate.
"""
import dataclasses
import logging
import math
import os
import re

from keras_cnns import files
from keras_cnns.errors import CnnkitError
from keras_cnns.registry import is_model_name
from keras_cnns.training import runs

log = logging.getLogger(__name__)

SMALL_PER_CLASS = 500
STRATEGY_HELP = "head, top:K (K = number of top blocks to unfreeze), full or auto"


def load_source(source, weights=None, input_size=None):
    """(model, preprocessing or None, source config or None) of a run directory, a saved model file, or a zoo
    model name with pretrained ``weights`` ("imagenet", the default, or a checkpoint file)."""
    if not os.path.exists(source) and is_model_name(source):
        import keras_cnns
        from keras_cnns import pretrained

        if weights == "none":
            raise CnnkitError("fine-tuning starts from trained weights: --weights imagenet or a checkpoint FILE "
                              f"(or `cnnkit train {source}` from scratch)")
        weights = weights or "imagenet"
        model = keras_cnns.create_model(source, weights=weights, input_shape=input_size)
        checkpoint = pretrained.find_checkpoint(source, None, tuple(int(d) for d in model.inputs[0].shape[1:]))
        log.info("%s: %s", model.name, checkpoint.describe(weights))
        return model, checkpoint.preprocessing, None
    if weights or input_size:
        raise CnnkitError("--weights and --input-size go with a zoo model name; a run or model file has its own")
    if os.path.isdir(source):
        run_dir = runs.resolve_run_dir(source)
        config = runs.read_config(run_dir)
        return runs.load_run_model(run_dir), config["preprocessing"], config
    if source.endswith((".keras", ".h5")):  # the normalisation it was trained with, when it carries one
        contract = runs.read_model_contract(source) if os.path.exists(source) else None
        return files.load_model_file(source), (contract or {}).get("preprocessing"), None
    raise CnnkitError(f"finetune source {source!r} must be a run directory, a .keras/.h5 model file or a zoo "
                      "model name with pretrained weights")


def _weighted(layer):
    return bool(layer.weights)


def head_chain(model):
    """Layers from the classifier (the last layer with weights on the main output's path) to the output."""
    chain = []
    layer = model.get_layer(model.output_names[0])
    while True:
        chain.append(layer)
        if _weighted(layer):
            break
        inbound = layer.inbound_nodes[0].inbound_layers if layer.inbound_nodes else []
        if not isinstance(inbound, list):
            inbound = [inbound]
        if len(inbound) != 1:
            raise CnnkitError(f"cannot find the classifier of {model.name}: {layer.name} has {len(inbound)} inputs")
        layer = inbound[0]
    return list(reversed(chain))


def block_of(name):
    """Group key of a layer name: its leading 'word+number' tokens (stage4_block2_1_conv -> stage4_block2)."""
    tokens = name.split("_")
    key = [tokens[0]]
    for token in tokens[1:2]:
        if re.fullmatch(r"[a-z]+\d+[a-z]?", token):
            key.append(token)
    return "_".join(key)


def blocks(model, exclude=()):
    """Weighted layers grouped into blocks, in order from input to output."""
    groups = {}
    for layer in model.layers:
        if _weighted(layer) and layer not in exclude:
            groups.setdefault(block_of(layer.name), []).append(layer)
    return list(groups.items())


def choose_strategy(train_images, num_classes, similar, num_blocks):
    """(strategy, reason) from the notes' table."""
    per_class = train_images / max(1, num_classes)
    small = per_class < SMALL_PER_CLASS
    size = f"{'small' if small else 'large'} data set ({per_class:.0f} training images per class, " \
           f"threshold {SMALL_PER_CLASS})"
    if small and similar:
        return "head", f"{size}, similar domain: retrain only the classifier"
    if not small and similar:
        k = max(1, math.ceil(num_blocks / 4))
        return f"top:{k}", f"{size}, similar domain: fine-tune the top quarter of the blocks ({k})"
    if small:
        k = max(1, math.ceil(num_blocks / 2))
        return f"top:{k}", (f"{size}, different domain: fine-tune the top half of the blocks ({k}); little data for "
                            "a different domain is the hard case, expect lower accuracy")
    return "full", f"{size}, different domain: retrain every layer"


def parse_strategy(text, num_blocks):
    text = str(text).strip().lower()
    if text in ("head", "full", "auto"):
        return text, None
    match = re.fullmatch(r"top:(\d+)", text)
    if not match or int(match.group(1)) < 1:
        raise CnnkitError(f"unknown fine-tuning strategy {text!r}; use {STRATEGY_HELP}")
    k = int(match.group(1))
    if k > num_blocks:
        raise CnnkitError(f"top:{k} asks for more blocks than the model has ({num_blocks})")
    return "top", k


def prepare_finetune_model(finetune, num_classes, input_shape):
    """The source model with a fresh classifier for ``num_classes`` and the layers frozen as planned."""
    import tf_keras as keras

    zoo = not os.path.exists(finetune.source)  # a zoo model name: built at the planned input size
    source, _, _ = load_source(finetune.source, finetune.weights, tuple(finetune.input_shape) if zoo else None)
    if tuple(source.inputs[0].shape[1:]) != tuple(input_shape):
        raise CnnkitError(f"the source model takes {tuple(source.inputs[0].shape[1:])} inputs, not {input_shape}")
    chain = head_chain(source)
    x = chain[0].input
    for layer in chain:
        config = layer.get_config()
        if layer is chain[0]:
            for key in ("units", "filters"):
                if key in config:
                    config[key] = num_classes
        x = layer.__class__.from_config(config)(x)
    model = keras.Model(source.inputs, x, name=finetune.name)
    head = set(layer.name for layer in chain)
    trainable = set(finetune.trainable) | head
    for layer in model.layers:
        layer.trainable = finetune.strategy == "full" or layer.name in trainable
    return model


@dataclasses.dataclass
class FinetunePlan:
    """What fine-tuning trains and why: kept in the run's config.json ("train" -> "finetune")."""
    #: a run folder or model file (real path), or a zoo model name
    source: str
    #: a zoo source's checkpoint: imagenet or a file
    weights: str
    input_shape: list
    #: head, top or full, and as the user would write it (top:K)
    strategy: str
    label: str
    reason: str
    #: the names of the unfrozen blocks, [] (head) or "all"
    unfrozen_blocks: object
    #: the layers that train besides the new classifier
    trainable: list
    #: the source's normalisation (None: a bare model file; the new data's is used)
    preprocessing: dict
    source_lr: float
    source_model: str
    #: the fine-tuned model's name (its run folder's too)
    name: str
    lr: float = None


def plan_finetune(source, strategy, data_spec, similar=True, weights=None, input_size=None, **data_options):
    """Resolve ``strategy`` against the source model and the new data: which layers train, and why.

    Returns (plan, the new data loaded at the source's input shape)."""
    from keras_cnns.data import load_data

    model, preprocessing, config = load_source(source, weights, input_size)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    data = load_data(data_spec, shape, **data_options)
    train_images, num_classes = len(data.train), data.num_classes
    chain = head_chain(model)
    groups = blocks(model, exclude=chain)
    kind, k = parse_strategy(strategy, len(groups))
    reason = None
    if kind == "auto":
        chosen, reason = choose_strategy(train_images, num_classes, similar, len(groups))
        kind, k = parse_strategy(chosen, len(groups))
        log.info("finetune strategy %s: %s", chosen, reason)
    trainable = [layer.name for _, members in groups[-k:] for layer in members] if kind == "top" else []
    label = f"top:{k}" if kind == "top" else kind
    return FinetunePlan(
        source=os.path.realpath(source) if os.path.exists(source) else model.name,
        weights=os.path.realpath(weights) if weights and os.path.exists(weights) else weights,
        input_shape=list(shape),
        strategy="top" if kind == "top" else kind,
        label=label,
        reason=reason or f"{label} chosen on the command line",
        unfrozen_blocks=[name for name, _ in groups[-k:]] if kind == "top" else ([] if kind == "head" else "all"),
        trainable=trainable,
        preprocessing=preprocessing,
        source_lr=(config or {}).get("train", {}).get("lr"),
        source_model=(config or {}).get("model", model.name),
        name=f"{(config or {}).get('model', model.name)}-finetune",
    ), data
