"""What an export starts from: a run directory, a zoo model name, a saved tf_keras model file, or an
earlier cnnkit export (to add formats to it as a new version)."""
import dataclasses
import json
import logging
import os

from keras_cnns.errors import CnnkitError
from keras_cnns.files import load_model_file, read_json


@dataclasses.dataclass
class ExportSource:
    #: the inference model (training-only outputs removed)
    model: object
    name: str
    labels: list
    #: {"scale", "mean", "std"}: how raw pixels (0..255) become model inputs
    preprocessing: dict
    #: where the model came from, for export.json
    origin: str
    #: the data set it was trained on (calibration and accuracy), or None
    data_spec: str = None
    val_split: float = 0.15
    test_split: float = 0.15
    #: an earlier cnnkit export's artifact names (its formats are carried into the new version)
    earlier_artifacts: tuple = ()
    #: a zoo model with no weights (random initialisation)
    untrained: bool = False
    #: pretrained weights a zoo model was built with: source, url, top-1 (export.json "weights")
    weights: dict = None
    #: the input shape of a model released after its graphs were written (``release_model``)
    released_shape: tuple = None
    #: the temperature folded into the model's last weights (export.json "temperature"), or None
    temperature: dict = None

    @property
    def input_shape(self):
        if self.model is None:
            return self.released_shape
        return tuple(int(d) for d in self.model.inputs[0].shape[1:])

    def contract(self):
        """What the export's own ``keras/model.keras`` carries (keras_cnns.training.runs.contract)."""
        from keras_cnns.training.runs import contract

        return contract(self.name, self.labels, self.preprocessing, self.input_shape,
                        {"spec": self.data_spec, "val_split": self.val_split, "test_split": self.test_split},
                        self.origin)

    def release_model(self):
        """Drop the Keras model once every graph made from it is on disk; ``input_shape`` still answers."""
        self.released_shape, self.model = self.input_shape, None


def default_preprocessing(channels):
    """For models with no training run: ImageNet statistics for RGB, mid-grey for one channel."""
    if channels == 3:
        return {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    return {"scale": 1.0 / 255.0, "mean": [0.5] * channels, "std": [0.5] * channels}


PREPROCESSING_HELP = ("--preprocessing torch|tf|caffe|unit|raw or a JSON object {\"scale\": S, \"mean\": [...], "
                      "\"std\": [...]} (pixels 0..255 -> (pixel * scale - mean) / std)")


def parse_preprocessing(text, channels=3):
    """``--preprocessing``: a named normalisation (torch = ImageNet mean/std, tf = [-1, 1], caffe = BGR-free
    ImageNet means on 0..255, unit = [0, 1], raw = the pixels as they are) or a JSON object."""
    from keras_cnns.pretrained import PREPROCESSING

    named = {**PREPROCESSING, "imagenet": PREPROCESSING["torch"],
             "unit": {"scale": 1.0 / 255.0, "mean": [0.0] * channels, "std": [1.0] * channels},
             "raw": {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}}
    if text in named:
        return named[text]
    try:
        value = json.loads(text)
        value = {"scale": float(value.get("scale", 1.0)), "mean": [float(m) for m in value["mean"]],
                 "std": [float(d) for d in value["std"]]}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise CnnkitError(f"cannot read --preprocessing {text!r}: {PREPROCESSING_HELP}") from None
    if len(value["mean"]) != channels or len(value["std"]) != channels or not all(d > 0 for d in value["std"]):
        raise CnnkitError(f"--preprocessing needs {channels} means and {channels} positive stds, got {text}")
    return value


def _read_labels_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as err:
        raise CnnkitError(f"cannot read --labels {path}: {err.strerror}") from None


def load_source(source, weights=None, input_size=None, num_classes=None, labels=None, preprocessing=None):
    """Resolve SOURCE: run directory, zoo model name (``weights`` optional), or .keras/.h5 file.

    A model file exports with the contract it carries (or its run folder's: ``runs.read_model_contract``);
    ``labels`` (a file, one class name a line) and ``preprocessing`` (``parse_preprocessing``) give or
    replace it. A file with neither is refused: its class names and normalisation are never guessed."""
    import keras_cnns
    from keras_cnns.training import runs

    given = [option for option, value in (("--weights", weights), ("--input-size", input_size)) if value]
    if os.path.isdir(source):
        if given:
            raise CnnkitError(f"{' and '.join(given)} go with a zoo model name; {source} has its own weights and "
                              "input size")
        if os.path.exists(os.path.join(source, "saved_model.pb")):
            return _from_export(source)
        run_dir = runs.resolve_run_dir(source)
        config = runs.read_config(run_dir)
        model = runs.load_run_model(run_dir)
        data = config["data"]
        return ExportSource(model=model, name=config["model"], labels=runs.read_labels(run_dir),
                            preprocessing=config["preprocessing"], origin=run_dir, data_spec=data["spec"],
                            val_split=data["val_split"], test_split=data["test_split"])
    if source.endswith((".keras", ".h5")):
        if given:
            raise CnnkitError(f"{' and '.join(given)} go with a zoo model name; a .keras/.h5 model file has its "
                              "own weights and input size")
        return _from_model_file(source, labels, preprocessing)
    else:
        try:
            info = keras_cnns.get_model_info(source)
        except CnnkitError:
            if os.path.sep in source or os.path.exists(source):
                raise CnnkitError(f"cannot export {source!r}: not a run directory, .keras/.h5 file or model name") from None
            raise
        shape = (input_size, input_size, info.input_shape[2]) if input_size else None
        return zoo_source(info.name, weights, shape, num_classes)


def _from_model_file(path, labels=None, preprocessing=None):
    """A .keras/.h5 file: its model, with the contract it carries (or its run folder's), ``labels`` and
    ``preprocessing`` replacing or supplying its parts."""
    import keras_cnns
    from keras_cnns.training import runs

    contract = runs.read_model_contract(path) if os.path.exists(path) else None
    model = keras_cnns.inference_model(load_model_file(path))
    classes, channels = int(model.outputs[0].shape[-1]), int(model.inputs[0].shape[-1])
    contract = dict(contract or {})
    if labels:
        contract["labels"] = _read_labels_file(labels)
    if preprocessing:
        contract["preprocessing"] = parse_preprocessing(preprocessing, channels)
    missing = [option for option, key in (("--labels FILE", "labels"), ("--preprocessing", "preprocessing"))
               if key not in contract]
    if missing:
        raise CnnkitError(f"{path} carries no class names or preprocessing (not saved by cnnkit train, and no run "
                          f"folder beside it): pass {' and '.join(missing)} (labels: one class name a line, in output "
                          f"order; {PREPROCESSING_HELP})")
    if len(contract["labels"]) != classes:
        raise CnnkitError(f"{path} has {classes} outputs but {len(contract['labels'])} class names were given")
    data = contract.get("data") or {}
    return ExportSource(model=model, name=contract.get("model") or os.path.splitext(os.path.basename(path))[0],
                        labels=contract["labels"], preprocessing=contract["preprocessing"],
                        origin=os.path.abspath(path), data_spec=data.get("spec"),
                        val_split=data.get("val_split", 0.15), test_split=data.get("test_split", 0.15))


def zoo_source(name, weights=None, input_shape=None, num_classes=None):
    """A zoo model by name. ``weights``: "imagenet", "none" or a file; None = "imagenet" where the model has a
    published checkpoint (Keras' convention), else "none". ImageNet weights bring their preprocessing and the
    1000 class names. A file for a model without a checkpoint is the zoo model's own Keras weights."""
    import keras_cnns
    from keras_cnns import pretrained

    checkpoint = pretrained.find_checkpoint(name, None, input_shape)
    if weights is None:
        weights = "imagenet" if checkpoint is not None and num_classes in (None, 1000) else "none"
    from_checkpoint = weights == "imagenet" or (weights != "none" and checkpoint is not None)
    model = keras_cnns.create_model(name, num_classes=num_classes, input_shape=input_shape,
                                    weights=weights if from_checkpoint else None)
    if weights != "none" and not from_checkpoint:
        try:
            model.load_weights(weights)
        except Exception as err:
            raise CnnkitError(f"cannot load weights {weights} into {name}: {err}") from None
    model = keras_cnns.inference_model(model)
    channels, classes = int(model.inputs[0].shape[-1]), int(model.outputs[0].shape[-1])
    labels = [f"class_{i}" for i in range(classes)]
    if not from_checkpoint:
        return ExportSource(model=model, name=name, labels=labels, preprocessing=default_preprocessing(channels),
                            origin=f"zoo:{name}" + ("" if weights == "none" else f" + {weights}"),
                            untrained=weights == "none")
    checkpoint = pretrained.find_checkpoint(name, None, tuple(int(d) for d in model.inputs[0].shape[1:]))
    used = checkpoint.describe(weights)
    logging.getLogger("export").info("%s: %s", name, used)
    return ExportSource(model=model, name=name, labels=pretrained.imagenet_labels() if classes == 1000 else labels,
                        preprocessing=checkpoint.preprocessing, origin=f"zoo:{name} + {used}",
                        weights={"source": checkpoint.source, "url": checkpoint.url,
                                 "file": None if weights == "imagenet" else os.path.abspath(weights),
                                 "imagenet_top1": checkpoint.top1, "preprocessing": checkpoint.preprocessing_name})


def _from_export(path):
    """A cnnkit export version directory: its Keras model, labels and preprocessing (to add formats)."""
    meta_path = os.path.join(path, "export.json")
    if not os.path.exists(meta_path):
        raise CnnkitError(f"{path} is a SavedModel that cnnkit did not export (no export.json); export from the "
                          "run directory or Keras model file it came from")
    meta = read_json(meta_path)
    return ExportSource(model=load_model_file(os.path.join(path, "keras", "model.keras")), name=meta["name"],
                        labels=meta["labels"], preprocessing=meta["preprocessing"], origin=os.path.abspath(path),
                        data_spec=meta["data"], val_split=meta["val_split"], test_split=meta["test_split"],
                        earlier_artifacts=tuple(a["artifact"] for a in meta["artifacts"]), weights=meta.get("weights"),
                        temperature=meta.get("temperature"))
