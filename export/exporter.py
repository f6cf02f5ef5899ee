"""One export entry point: SOURCE -> ``OUTPUT/NAME/VERSION/`` holding every artifact and its parity report.

::

    exports/lenet5/1/
      saved_model.pb, variables/, assets/labels.txt   the SavedModel TF Serving loads
      tflite/model_float32.tflite ...                 TFLite variants (standard metadata and labels)
      onnx/model.onnx                                 ONNX
      keras/model.keras                               the Keras model the report compares against
      export.json                                     source, preprocessing, labels, artifacts
      report.json, report.md                          the parity report

A version is built in a hidden sibling directory and renamed into place only when every artifact is
within tolerance, so TF Serving (which watches the numbered directories) never sees a half-written or
failing version, and earlier versions are never touched.
"""
import dataclasses
import errno
import functools
import logging
import os
import re
import shutil
import tempfile

import numpy as np

from export import child, compress, int8, mediapipe_check, onnx_format, parity, savedmodel
from export.choice import cpu_description, default_plan
from export.formats import FORMATS, QUANTIZE, RUNTIMES, BuildJob, by_kind, quantize_modes, runner_for
from export.source import load_source
from keras_cnns.errors import CnnkitError
from keras_cnns.files import load_model_file, read_json, remove_if_empty, save_model_atomic, write_json

log = logging.getLogger("export")

#: ITU-R BT.601 luma weights (they sum to 1): RGB -> gray in the mobile form of a grayscale model
LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to export, beside the source, the output folder and the formats (see ``export``)."""
    #: images for int8 calibration (a data spec); default: the run's data
    calibration_data: str = None
    #: the model's folder name in the export base (default: the model's name) and its version (default: next)
    name: str = None
    version: int = None
    #: for a zoo model name: imagenet | none | a checkpoint file, and the input side
    weights: str = None
    input_size: int = None
    #: the held-out images the parity report compares on (default: the run's test split)
    data_spec: str = None
    opset: int = onnx_format.DEFAULT_OPSET
    #: target sparsity of tflite-pruned, clusters per kernel of tflite-clustered
    prune: float = None
    cluster: int = None
    #: fine-tuning epochs of the compressed formats (tflite-qat, -pruned, -clustered)
    finetune_epochs: int = 4
    #: input/output type of full-integer TFLite: uint8 or int8
    int8_io: str = "uint8"
    #: calibration images of the full-integer formats (the first of the training split)
    calibration_images: int = 200
    #: accuracy points a full-integer artifact may lose: layers stay float until it does (export/int8.py);
    #: one number for every int8 format, or "tflite=PTS,onnx=PTS"
    max_accuracy_drop: object = None
    #: the TFLite metadata's author and license fields
    author: str = ""
    license: str = ""
    #: the SavedModel refuses an encoded image whose header declares more pixels than this, before decoding
    max_megapixels: float = savedmodel.MAX_MEGAPIXELS
    #: publish without the artifacts out of tolerance (never without the SavedModel)
    allow_failed_variants: bool = False
    #: publish without the low-precision artifacts (float16, bfloat16, int8) out of tolerance, reported and left out,
    #: while every exact one must pass (``cnnkit export --all``: what this machine makes well, not all or nothing)
    low_precision_optional: bool = False
    #: for a .keras/.h5 source that does not carry them: a class-names file and the normalisation
    labels: str = None
    preprocessing: object = None
    #: a temperature to fold into the model (calibrated probabilities): "fitted" (the run's, fitted on its
    #: validation split at the end of training) or a number > 0; None: the model's own probabilities
    temperature: object = None


def next_version(base):
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def _evaluation_images(source, data_spec, count=2000):
    """(float32 pixels, labels or None): the held-out test split of the data, or seeded noise."""
    from keras_cnns.data import load_data

    spec = data_spec or source.data_spec
    if spec:
        data = load_data(spec, source.input_shape, val_split=source.val_split, test_split=source.test_split,
                         recorded_by=None if data_spec else source.origin)
        if data.class_names == source.labels:
            return data.test.x[:count].astype(np.float32), data.test.y[:count], data
        return data.test.x[:count].astype(np.float32), None, data
    rng = np.random.RandomState(0)  # whole pixel values, as every runtime (MediaPipe: uint8 images) can take them
    return rng.randint(0, 256, (32,) + source.input_shape).astype(np.float32), None, None


def keras_reference(model, preprocessing):
    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)

    def run(images):
        x = (np.asarray(images, np.float32) * preprocessing["scale"] - mean) / std
        return model(x, training=False).numpy()

    return run


#: quantization modes each converter offers besides float32
QUANTIZE_BY_FORMAT = {runtime: quantize_modes(runtime) for runtime in ("tflite", "onnx")}


def parse_quantize(quantize):
    """``--quantize``: one mode, or one per format (``tflite=float16,onnx=int8``) -> ({format: mode}, named).

    A single mode applies to each format that offers it: ``float16`` and ``int8`` to TFLite and ONNX, the
    others to TFLite (ONNX stays float32). ``named``: the formats the value names explicitly."""
    text = str(quantize).strip()
    if "=" not in text:
        if text not in QUANTIZE:
            raise CnnkitError(f"unknown --quantize {text!r}; choose from {', '.join(QUANTIZE)}, or per format "
                              "as tflite=MODE,onnx=MODE")
        return {"tflite": text, "onnx": text if text in QUANTIZE_BY_FORMAT["onnx"] else "none"}, set()
    modes, named = {"tflite": "none", "onnx": "none"}, set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        fmt, _, mode = (x.strip() for x in part.partition("="))
        if fmt not in QUANTIZE_BY_FORMAT:
            raise CnnkitError(f"--quantize {part!r}: the formats are tflite and onnx")
        if mode not in QUANTIZE_BY_FORMAT[fmt]:
            raise CnnkitError(f"--quantize {part!r}: {fmt} takes {', '.join(QUANTIZE_BY_FORMAT[fmt])}")
        modes[fmt] = mode
        named.add(fmt)
    return modes, named


def plan_formats(saved_model=True, tflite_out=False, onnx_out=False, quantize="none", everything=False, prune=None,
                 cluster=None, extra=(), openvino_out=False):
    """The formats to write. ``quantize``: see ``parse_quantize``; a TFLite-only mode (dynamic, qat) brings
    TFLite in, and so does any mode when no format is named. ``extra``: more formats by name (``--format``).
    ``everything`` and ``openvino_out`` leave out the formats this machine cannot write (``Format.available``);
    one named in ``extra`` is an error then."""
    modes, named = parse_quantize(quantize)
    formats = ["saved_model"]
    if everything:
        formats += [f.name for f in FORMATS.values() if f.in_all and _available(f)]
    onnx_out = onnx_out or "onnx" in named
    tflite_out = (tflite_out or "tflite" in named or bool(prune) or bool(cluster)
                  or (modes["tflite"] != "none" and not (onnx_out and modes["onnx"] == modes["tflite"])))
    if tflite_out:
        formats.append("tflite-float32")
        if modes["tflite"] != "none":
            formats.append(f"tflite-{modes['tflite']}")
    if onnx_out:
        formats += ["onnx"] + ([f"onnx-{modes['onnx']}"] if modes["onnx"] != "none" else [])
    if openvino_out:  # its float32 and bfloat16 IR; the int8 one (NNCF) with --quantize int8, as ONNX's
        if not _available(FORMATS["openvino"]):
            raise CnnkitError(f"--openvino: {FORMATS['openvino'].available()}")
        int8 = "int8" in modes.values()
        formats += [f.name for f in FORMATS.values() if f.runtime == "openvino" and _available(f)
                    and (not f.calibrated or int8)]
    if prune:
        formats.append("tflite-pruned")
    if cluster:
        formats.append("tflite-clustered")
    unknown = [f for f in extra if f not in FORMATS]
    if unknown:
        raise CnnkitError(f"unknown export format {', '.join(unknown)}; the formats are {', '.join(FORMATS)}")
    for name in extra:
        if not _available(FORMATS[name]):
            raise CnnkitError(f"cannot write {name} here: {FORMATS[name].available()}")
    return list(dict.fromkeys(formats + list(extra)))


def _available(fmt):
    return fmt.available is None or fmt.available() is None


#: ``export(formats=DEFAULT_PLAN)``: what ``cnnkit export`` writes without a format flag (export.choice.default_plan)
DEFAULT_PLAN = "default"


def export(source, output="exports", formats=("saved_model",), options=None, **fields):
    """Export SOURCE (run directory, zoo model name, .keras/.h5 file or cnnkit export) into ``output/NAME/VERSION``
    in ``formats`` (names of FORMATS: see ``plan_formats``; DEFAULT_PLAN: the SavedModel and what ``--runtime auto``
    may serve on this CPU, see export.choice.default_plan); returns (version directory, report dict).

    ``options``: an ExportOptions, or its fields as keywords (``name="digits", prune=0.5``). ``prune`` (target
    sparsity) and ``cluster`` (clusters per kernel) go with the formats ``tflite-pruned`` / ``tflite-clustered``;
    they and ``tflite-qat`` fine-tune ``finetune_epochs`` on the run's training data.

    Every artifact must pass the parity report or nothing is published (``ExportFailed`` carries the report);
    ``allow_failed_variants``: publish without the artifacts out of tolerance (never without the SavedModel),
    which stay in the report marked ``published: false``. ``labels`` (a file) and ``preprocessing`` give a
    .keras/.h5 SOURCE the class names and normalisation it does not carry (export.source.load_source).

    Each converter runs in a spawned child process (export/child.py), so a script that calls this needs the
    usual ``if __name__ == "__main__":`` guard.
    """
    options = dataclasses.replace(options or ExportOptions(), **fields)
    if not options.max_megapixels > 0:
        raise CnnkitError(f"--max-megapixels must be > 0, got {options.max_megapixels}")
    default = formats == DEFAULT_PLAN  # decided once the source says whether it has images to calibrate on
    if default:
        options = dataclasses.replace(options, low_precision_optional=True)
    formats = ["saved_model"] if default else plan_formats(extra=formats)  # names checked, the SavedModel first
    src = load_source(source, weights=options.weights, input_size=options.input_size, labels=options.labels,
                      preprocessing=options.preprocessing)
    if options.temperature is not None:
        _fold_temperature(src, options.temperature)
    name = options.name or src.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise CnnkitError(f"--name {name!r}: letters, digits, '_', '.' and '-' only, not starting with '.' (it "
                          f"names a folder inside {output})")
    base, version = os.path.join(output, name), options.version
    if version is None:
        version = next_version(base)
    elif os.path.exists(os.path.join(base, str(version))):
        raise CnnkitError(f"{base}/{version} already exists; exports never overwrite a version")
    # with no data of its own, the parity check runs on the calibration set's held-out split (real images,
    # never the ones calibrated on) rather than on noise
    calibration = options.calibration_data
    images, labels, data = _evaluation_images(src, options.data_spec or (None if src.data_spec else calibration))
    if default:
        formats, why = default_plan(can_calibrate=bool(calibration) or data is not None)
        if src.untrained:  # its near-uniform answers cannot pass a low-precision file's gates, nor be served by one
            formats = [f for f in formats if FORMATS[f].exact]
        log.info("no format named: writing what --runtime auto may serve on this CPU, %s (%s; --all writes every "
                 "format)", ", ".join(formats), why)
    if src.untrained:
        _estimate_batch_norm(src, images)
    names, carried, left = _carry_over(src, formats, can_calibrate=bool(calibration) or data is not None)
    gated = [n for n in names if FORMATS[n].precision == "bfloat16"]  # held to top-1 agreement too (openvino_format)
    if src.untrained and gated and not options.allow_failed_variants:
        names = [n for n in names if n not in gated]
        log.warning("%s is untrained (--weights none): bfloat16 flips the top-1 of its near-uniform answers, so %s "
                    "would fail its top-1 agreement gate and stop the export; left out (--allow-failed-variants "
                    "tries it)", src.name, ", ".join(gated))
    plan = [FORMATS[f] for f in names]
    budget = int8.parse_budget(options.max_accuracy_drop)
    if budget and not any(f.calibrated for f in plan):
        raise CnnkitError("--max-accuracy-drop keeps full-integer (int8) artifacts within an accuracy budget: add "
                          "--quantize int8 (or --all)")
    representative, calibration_info = _calibration_images(src, plan, calibration, data, options.calibration_images)
    checks = _int8_checks(src, plan, data, labels is not None, 0 if representative is None else len(representative),
                          budget)
    quantized = [f.name for f in plan if f.precision is None and not f.compressed]
    if src.untrained and quantized and not options.allow_failed_variants:  # say so before the conversions
        raise CnnkitError(f"{src.name} is untrained (--weights none): its near-uniform answers cannot pass the "
                          f"top-1 agreement gate of {', '.join(quantized)}; export a trained model (a run folder, or "
                          "--weights imagenet), or add --allow-failed-variants to publish what passes")
    compressed = compress.compressed_models(src, plan, data, options)
    final = os.path.join(base, str(version))
    tmp = os.path.join(base, f".partial-{version}-{os.getpid()}")
    created = [folder for folder in (output, base) if not os.path.isdir(folder)]
    os.makedirs(base, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            job = BuildJob(src, tmp, scratch, names, options, version, representative, compressed=compressed,
                           calibration=calibration_info, budget=budget, **checks)
            artifacts = _build(job, plan)
        write_json(os.path.join(tmp, "export.json"), _manifest(src, name, version, artifacts, options))
        report = validate(tmp, images=images, labels=labels, raise_on_failure=False)
        _publish_what_passed(tmp, report, options)
        os.rename(tmp, final)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise CnnkitError(f"no space left on the device while exporting {name} version {version}; nothing "
                              "was published and earlier versions are untouched") from None
        raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(final):  # a failed export leaves no empty folder behind
            for folder in reversed(created):
                remove_if_empty(folder)
    report["path"] = final
    if default:
        report["default_plan"] = {"formats": formats, "why": why}
    if src.earlier_artifacts:
        report["carried_over"], report["not_carried_over"] = carried, left
    return final, report


def _calibration_images(src, plan, calibration_data, data, count=200):
    """(up to ``count`` training images for the formats that calibrate (full-integer ones), where they come from)
    or (None, None) when no format calibrates. A small or one-class set is a warning, logged and recorded."""
    if not any(f.calibrated for f in plan):
        return None, None
    if calibration_data:
        from keras_cnns.data import load_data

        data = load_data(calibration_data, src.input_shape)
    elif data is None:
        raise CnnkitError("int8 quantization needs calibration images: export a training run, or give "
                          "--calibration-data SPEC (e.g. a folder of sample images)")
    chosen = np.sort(_training_order(data)[:count])
    images, labels = data.train.x[chosen], data.train.y[chosen]
    info = {"images": int(len(images)), "source": f"training split of {data.spec}",
            "classes": int(len(np.unique(labels))) if len(labels) else 0,
            "warnings": int8.calibration_warnings(len(images), labels, data.num_classes)}
    for warning in info["warnings"]:
        log.warning("int8 calibration: %s", warning)
    return images, info


def _training_order(data):
    """The training split's indices in a seeded order: calibration takes the first, the automatic mode may decide on
    the rest. Not the split's own order: its first images can be of a few classes only (shapes:200: 2 of 4)."""
    return np.random.RandomState(0).permutation(len(data.train.y))


def _int8_checks(src, plan, data, labelled, calibrated, budget):
    """The full-integer formats' images besides calibration: the per-layer report's (``debug_images``) and, with a
    budget, the automatic mode's (``decision``: the validation split, else training images not calibrated on;
    never the test split the parity report judges on), with the Keras model's answers on them."""
    if not any(f.layer_report or f.calibrated for f in plan) or data is None:
        return {}
    from keras_cnns.analysis import profile_model

    split, source = data.val, f"validation split of {data.spec}"
    if not len(split.x):
        unused = np.sort(_training_order(data)[calibrated:])
        split = dataclasses.replace(data.train, x=data.train.x[unused], y=data.train.y[unused])
        source = f"training images of {data.spec} not used for calibration"
    macs = profile_model(src.model).macs
    count = parity.evaluation_plan(macs, min(len(split.x), 500))[0]
    images = split.x[:count].astype(np.float32)
    if not len(images):
        raise CnnkitError(f"{data.spec} has no images left to check int8 on besides its calibration and test images")
    out = {"debug_images": images[:min(32, max(8, int(parity.LATENCY_MACS / max(macs, 1))))]}
    if budget:
        run = keras_reference(src.model, src.preprocessing)
        reference = np.concatenate([run(images[i:i + 64]) for i in range(0, len(images), 64)]).argmax(axis=1)
        out["decision"] = int8.Decision(images, split.y[:count] if labelled else None, reference, source)
    return out


def _estimate_batch_norm(src, images):
    """An untrained zoo model's batch-norm layers hold their initial statistics (mean 0, variance 1), which at
    inference shrink the signal layer by layer until the outputs no longer depend on the input (MobileNet v2:
    identical probabilities for every image) and no parity check can see a broken conversion. No data set
    decides those statistics, so estimate them on the evaluation images: the network then responds to its input."""
    from keras_cnns.analysis import profile_model
    from keras_cnns.training.batchnorm import recalibrate

    pre = src.preprocessing
    x = (images * pre["scale"] - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    batch = min(16, parity.evaluation_plan(profile_model(src.model).macs, len(x))[2])
    done = recalibrate(src.model, [x[i:i + batch] for i in range(0, len(x), batch)])
    if done["layers"]:
        log.info("untrained %s: batch-norm statistics of %d layers estimated on the %d evaluation images",
                 src.name, done["layers"], done["images"])


def _carry_over(src, formats, can_calibrate):
    """Adding formats to an earlier export: the new version holds the earlier one's formats too, rebuilt from
    its Keras model and checked again. Not the tensorflow-model-optimization variants (they need the run's
    fine-tuning options), nor full-integer ones without calibration images. Returns (formats, carried, left)."""
    earlier = [f for f in FORMATS.values() if f.artifact in src.earlier_artifacts and f.name not in formats]
    carried = [f.name for f in earlier if not f.compressed and (can_calibrate or not f.calibrated)]
    left = [f.name for f in earlier if f.name not in carried]
    if carried:
        log.info("carried over from %s (rebuilt and checked again): %s", src.origin, ", ".join(carried))
    if left:
        log.warning("not carried over from %s: %s (export those from the training run)", src.origin,
                    ", ".join(left))
    return [*formats, *carried], carried, left


def rgb_input(model):
    """A grayscale model as an RGB-input model whose graph converts to gray first (ITU-R 601 luma as a
    fixed 1x1 convolution; its weights sum to 1, so it commutes with the per-channel normalisation in
    front of it). MediaPipe Tasks and the TFLite Task Library take RGB images only."""
    import tf_keras as keras

    h, w, _ = model.inputs[0].shape[1:]
    inputs = keras.Input((h, w, 3), name="image")
    luma = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="rgb_to_gray")
    x = luma(inputs)
    luma.set_weights([np.array(LUMA, np.float32).reshape(1, 1, 3, 1)])
    return keras.Model(inputs, model(x), name=f"{model.name}_rgb")


def _release(src, compressed):
    """Drop the Keras models once their graphs are on disk: the converters (child processes) and the parity
    report read them from there. The memory goes back to the system with TensorFlow's system allocator
    (``cnnkit export`` sets it: child.SYSTEM_ALLOCATOR) and glibc's ``malloc_trim`` (ResNet-18 --all at
    64x64: 1.85 GB peak with it, 1.96 GB without)."""
    src.release_model()
    for fmt, (_, details) in compressed.items():
        compressed[fmt] = (None, details)
    child.return_freed_memory()


def _build(job, plan):
    """Write every artifact of ``plan`` into ``job.out``: first the graphs (the SavedModel, the Keras model the
    report compares against, the mobile graph, each compressed model's SavedModel) while the Keras models are in
    memory, then, with them released, each format's ``build`` (the converters run in child processes, one taking
    the next while it stays small: export/child.py). Returns the export.json entries."""
    src, gray = job.src, job.src.input_shape[-1] == 1
    labels_file = os.path.join(job.scratch, "labels.txt")  # the asset keeps its file name: labels.txt
    with open(labels_file, "w", encoding="utf-8") as f:
        f.write("\n".join(src.labels) + "\n")
    megapixels = job.options.max_megapixels
    savedmodel.save(src, job.out, labels_file, megapixels)
    os.makedirs(os.path.join(job.out, "keras"))
    save_model_atomic(src.model, os.path.join(job.out, "keras", "model.keras"), src.contract())
    job.mobile = job.out  # the graph TFLite files come from: RGB input for a grayscale model
    if gray and any(RUNTIMES[f.runtime].rgb_only and not f.compressed for f in plan):
        job.mobile = savedmodel.save(dataclasses.replace(src, model=rgb_input(src.model)),
                                     os.path.join(job.scratch, "mobile"), labels_file, megapixels)
    for name, (model, _) in job.compressed.items():  # each its own SavedModel
        savedmodel.save(dataclasses.replace(src, model=rgb_input(model) if gray else model),
                        os.path.join(job.scratch, name), labels_file, megapixels)
    _release(src, job.compressed)
    artifacts = []
    with child.reuse():
        for fmt in plan:
            path = os.path.join(job.out, fmt.path) if fmt.path else job.out
            if fmt.path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            details = fmt.build(job, fmt, path)
            artifacts.append({"artifact": fmt.artifact, "kind": fmt.artifact_kind, "path": fmt.path, **details})
    return artifacts


def _manifest(src, name, version, artifacts, options):
    """export.json: what the version holds and how its inputs are made."""
    return {"name": name, "version": version, "source": src.origin, "input_shape": list(src.input_shape),
            "labels": src.labels, "preprocessing": src.preprocessing, "data": src.data_spec,
            "val_split": src.val_split, "test_split": src.test_split, "artifacts": artifacts,
            "onnx_opset": options.opset, "max_megapixels": float(options.max_megapixels), "weights": src.weights,
            "temperature": src.temperature}


def _fold_temperature(src, temperature):
    """--temperature: the model's probabilities softened (T > 1) or sharpened (T < 1) by a temperature folded into
    its last weights (keras_cnns.training.calibration.apply_temperature); every artifact is made from, and compared
    with, the calibrated model."""
    from keras_cnns.training.calibration import apply_temperature

    if src.temperature:
        raise CnnkitError(f"{src.origin} already has the temperature {src.temperature['value']:.4g} folded in; "
                          "export the run it came from to choose another")
    record = {"from": "--temperature"}
    if temperature == "fitted":
        path = os.path.join(src.origin, "metrics.json")
        if not os.path.isfile(path):
            raise CnnkitError("--temperature fitted takes the temperature a training run fitted on its validation "
                              f"split: export the run directory (or give a number); {src.origin} has no metrics.json")
        found = read_json(path).get("calibration") or {}
        if not found.get("temperature"):
            why = found.get("temperature_note", "the run predates calibration")
            raise CnnkitError(f"{src.origin} has no fitted temperature ({why}): give --temperature a number")
        temperature = found["temperature"]
        record = {"from": "fitted on the run's validation split", "images": found.get("temperature_images"),
                  "test_ece_before": found.get("ece"), "test_ece_after": found.get("ece_after_temperature")}
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        temperature = float("nan")
    if not 0 < temperature < float("inf"):
        raise CnnkitError(f"--temperature is fitted or a number > 0, got {temperature}")
    layer = apply_temperature(src.model, temperature)
    src.temperature = {"value": temperature, "layer": layer, **record}
    log.info("temperature %.4g folded into %s (the exported probabilities are softmax(logits / T))", temperature,
             layer)


def _publish_what_passed(version_dir, report, options=None):
    """The artifacts out of tolerance are removed from the version where ``options`` allow it (--allow-failed-variants:
    any but the SavedModel; ``low_precision_optional``: the low-precision ones), else nothing is published
    (ExportFailed); the report keeps their rows, marked ``published: false``."""
    options = options or ExportOptions(allow_failed_variants=True)
    failed = [r for r in report["artifacts"] if not r["ok"]]
    if not failed:
        return
    exact = [r for r in failed if by_kind(r["kind"]).exact]
    if any(r["kind"] == "savedmodel" for r in failed) or not options.allow_failed_variants and (
            exact or not options.low_precision_optional):
        raise ExportFailed(f"out of tolerance, nothing exported: {failure_details(report)}", report)
    if not options.allow_failed_variants:
        log.warning("left out (out of tolerance; the exact artifacts ship): %s", failure_details(report))
    gone = {r["artifact"] for r in failed}
    meta = read_json(os.path.join(version_dir, "export.json"))
    for a in meta["artifacts"]:
        if a["artifact"] in gone:
            for path in parity.artifact_files(os.path.join(version_dir, a["path"])):
                os.remove(path)
            if a.get("download"):  # a compressed file's download form
                os.remove(os.path.join(version_dir, a["download"]))
    write_json(os.path.join(version_dir, "export.json"),
               {**meta, "artifacts": [a for a in meta["artifacts"] if a["artifact"] not in gone]})
    for r in report["artifacts"]:
        r["published"] = r["ok"]
    report["not_published"] = sorted(gone)
    report["ok"] = True
    write_json(os.path.join(version_dir, "report.json"), report)
    why = "--allow-failed-variants" if options.allow_failed_variants else "low precision: left out, the exact files ship"
    with open(os.path.join(version_dir, "report.md"), "a", encoding="utf-8") as f:
        f.write(f"\n**Not published** (out of tolerance, {why}): {', '.join(sorted(gone))}.\n")


def validate(export_dir, data_spec=None, images=None, labels=None, raise_on_failure=False):
    """Run the parity report over an export version directory; writes report.json and report.md."""
    meta_path = os.path.join(export_dir, "export.json")
    if not os.path.exists(meta_path):
        raise CnnkitError(f"{export_dir} is not a cnnkit export version directory (no export.json)")
    meta = read_json(meta_path)
    model = load_model_file(os.path.join(export_dir, "keras", "model.keras"))
    if images is None:
        from export.source import ExportSource

        src = ExportSource(model=model, name=meta["name"], labels=meta["labels"], preprocessing=meta["preprocessing"],
                           origin=meta["source"], data_spec=meta["data"], val_split=meta["val_split"],
                           test_split=meta["test_split"])
        images, labels, _ = _evaluation_images(src, data_spec)
    from keras_cnns.analysis import profile_model

    count, repeats, batch = parity.evaluation_plan(profile_model(model).macs, len(images))
    images, labels = images[:count], (labels[:count] if labels is not None else None)
    extras = {a["artifact"]: {k: v for k, v in a.items() if k not in ("artifact", "kind", "path")}
              for a in meta["artifacts"]}

    context = {"images": images, "export_dir": export_dir}  # what the runtimes' judges share in one report

    def check(row, path, outputs):
        row.update(extras.get(row["artifact"], {}))
        fmt = by_kind(row["kind"])
        judge = RUNTIMES[fmt.runtime].judge
        if judge:  # e.g. MediaPipe Tasks, the phone's runtime, next to LiteRT's answers
            judge(row, fmt, path, outputs, context)

    artifacts = []
    for a in meta["artifacts"]:
        path = os.path.join(export_dir, a["path"])
        artifacts.append((a["artifact"], a["kind"], path, functools.partial(runner_for, a["kind"], path),
                          by_kind(a["kind"]).tolerance, _budget_of(a)))
    rows = parity.compare(keras_reference(model, meta["preprocessing"]), artifacts, images, labels, batch_size=batch,
                          repeats=repeats, check=check)
    report = {"name": meta["name"], "version": meta["version"], "images": int(len(images)),
              "latency_repeats": repeats, "cpu": cpu_description(), "labelled": labels is not None, "artifacts": rows,
              "ok": all(r["ok"] for r in rows)}
    warning = parity.constant_output_warning(rows[0]["output_spread"], len(images))
    if warning:
        report["warning"] = warning
    noted = set()
    for a in meta["artifacts"]:  # what a runtime says of the version, from its first artifact
        runtime = RUNTIMES[by_kind(a["kind"]).runtime]
        if runtime.notes and runtime.name not in noted:
            noted.add(runtime.name)
            report.update(runtime.notes(os.path.join(export_dir, a["path"])))
    write_json(os.path.join(export_dir, "report.json"), report)
    title = f"Parity report: {meta['name']} version {meta['version']} ({len(images)} images)"
    with open(os.path.join(export_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(parity.markdown(rows, title) + (f"\n**Warning:** {warning}.\n" if warning else "")
                + int8.markdown(rows))
    if raise_on_failure and not report["ok"]:
        raise ExportFailed(f"out of tolerance, nothing exported: {failure_details(report)}", report)
    return report


def _budget_of(artifact):
    """The --max-accuracy-drop an int8 artifact was made within (its parity row holds it to that), else None."""
    made = artifact.get("mixed") or artifact.get("accuracy_control") or {}
    return made.get("max_accuracy_drop")


class ExportFailed(CnnkitError):
    """An artifact out of tolerance; ``report`` holds every row (the CLI prints them, in JSON too)."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def failure_details(report):
    """One clause per artifact out of tolerance, with its accuracy next to the Keras model's."""
    reference = report["artifacts"][0]["accuracy"]
    clauses = []
    for r in report["artifacts"]:
        if r["ok"]:
            continue
        accuracy = f", accuracy {r['accuracy']:.2%} (Keras {reference:.2%})" if r["accuracy"] is not None else ""
        clauses.append(f"{r['artifact']}: max |diff| {r['max_abs_diff']:.2e}, top-1 agreement "
                       f"{r['top1_agreement']:.1%}{accuracy} ({r['tolerance']})"
                       + mediapipe_check.failure_text(r.get("mediapipe"))
                       + (f"; worst int8 layers: {int8.worst_text(r)} (--max-accuracy-drop PTS keeps the costliest in "
                          "float)" if int8.worst_text(r) and not r.get("mixed") else ""))
    return "; ".join(clauses)
