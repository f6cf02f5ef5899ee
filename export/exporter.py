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
import errno
import functools
import io
import logging
import os
import re
import shutil
import tempfile

import numpy as np

from export import child, onnx_format, parity, savedmodel, tflite
from export.source import load_source
from keras_cnns.errors import ArtifactError, CnnkitError

log = logging.getLogger("export")

QUANTIZE = ("none", "dynamic", "float16", "int8", "qat")
#: format -> (artifact name, kind, relative path)
FORMATS = {
    "saved_model": ("saved_model", "savedmodel", ""),
    "tflite-float32": ("tflite_float32", "tflite-float32", "tflite/model_float32.tflite"),
    "tflite-float16": ("tflite_float16", "tflite-float16", "tflite/model_float16.tflite"),
    "tflite-dynamic": ("tflite_dynamic", "tflite-dynamic", "tflite/model_dynamic.tflite"),
    "tflite-int8": ("tflite_int8", "tflite-int8", "tflite/model_int8.tflite"),
    "onnx": ("onnx", "onnx", "onnx/model.onnx"),
    "onnx-float16": ("onnx_float16", "onnx-float16", "onnx/model_float16.onnx"),
    "onnx-int8": ("onnx_int8", "onnx-int8", "onnx/model_int8.onnx"),
    # compressed with tensorflow-model-optimization (fine-tuned on the run's training data first)
    "tflite-qat": ("tflite_qat", "tflite-qat", "tflite/model_qat.tflite"),
    "tflite-pruned": ("tflite_pruned", "tflite-pruned", "tflite/model_pruned.tflite"),
    "tflite-clustered": ("tflite_clustered", "tflite-clustered", "tflite/model_clustered.tflite"),
}
COMPRESSED = ("tflite-qat", "tflite-pruned", "tflite-clustered")
#: ITU-R BT.601 luma weights (they sum to 1): RGB -> gray in the mobile form of a grayscale model
LUMA = (0.299, 0.587, 0.114)
#: MediaPipe Tasks must agree with LiteRT on the top-1 class of this share of (up to this many) images
MEDIAPIPE_AGREEMENT = 0.99
MEDIAPIPE_IMAGES = 200
#: full-size photos on which MediaPipe Tasks (resizing them itself) must agree with the served SavedModel
FULL_SIZE_PHOTOS = 60
#: how many times the input side a full-size photo is (each side drawn apart: the photos are not square)
FULL_SIZE_FACTORS = (4, 10)
#: no side above this many pixels (a 224-input model's 60 photos stay near 60 MB encoded, the check quick)
FULL_SIZE_MAX_SIDE = 1280


def next_version(base):
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def _evaluation_images(source, data_spec, count=2000):
    """(float32 pixels, labels or None): the held-out test split of the data, or seeded noise."""
    from keras_cnns.training.data import load_data

    spec = data_spec or source.data_spec
    if spec:
        data = load_data(spec, source.input_shape, val_split=source.val_split, test_split=source.test_split)
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


def open_artifact(kind, path, opener):
    """``opener(path)``; a missing or damaged file is an ArtifactError, one line naming it."""
    shown = os.path.join(path, "saved_model.pb") if kind == "savedmodel" else path
    if not os.path.exists(shown):
        raise ArtifactError(f"{shown} does not exist")
    try:
        return opener(path)
    except Exception as err:  # each runtime has its own errors for a file it cannot parse
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise ArtifactError(f"cannot load {shown} ({kind}): {reason[:300]}") from None


def runner_for(kind, path):
    """The artifact at ``path`` opened in its runtime: float32 pixels -> probabilities."""
    opener = savedmodel.load_probabilities if kind == "savedmodel" else \
        tflite.Runner if kind.startswith("tflite") else onnx_format.Runner
    return open_artifact(kind, path, opener)


#: quantization modes each converter offers besides float32
QUANTIZE_BY_FORMAT = {"tflite": QUANTIZE, "onnx": ("none", "float16", "int8")}


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
                 cluster=None):
    """The formats to write. ``quantize``: see ``parse_quantize``; a TFLite-only mode (dynamic, qat) brings
    TFLite in, and so does any mode when no format is named."""
    modes, named = parse_quantize(quantize)
    formats = ["saved_model"]
    if everything:
        formats += ["tflite-float32", "tflite-float16", "tflite-dynamic", "tflite-int8", "onnx", "onnx-float16",
                    "onnx-int8"]
    onnx_out = onnx_out or "onnx" in named
    tflite_out = (tflite_out or "tflite" in named or bool(prune) or bool(cluster)
                  or (modes["tflite"] != "none" and not (onnx_out and modes["onnx"] == modes["tflite"])))
    if tflite_out:
        formats.append("tflite-float32")
        if modes["tflite"] != "none":
            formats.append(f"tflite-{modes['tflite']}")
    if onnx_out:
        formats += ["onnx"] + ([f"onnx-{modes['onnx']}"] if modes["onnx"] != "none" else [])
    if prune:
        formats.append("tflite-pruned")
    if cluster:
        formats.append("tflite-clustered")
    return list(dict.fromkeys(formats))


def export(source, output="exports", formats=("saved_model",), calibration_data=None, name=None, version=None,
           weights=None, input_size=None, opset=onnx_format.DEFAULT_OPSET, data_spec=None, prune=None, cluster=None,
           finetune_epochs=4, int8_io="uint8", author="", license="", max_megapixels=savedmodel.MAX_MEGAPIXELS,
           allow_failed_variants=False, labels=None, preprocessing=None):
    """Export SOURCE (run directory, zoo name, .keras/.h5 file or cnnkit export) into ``output/NAME/VERSION``;
    returns (version directory, report dict).

    ``prune`` (target sparsity) and ``cluster`` (clusters per kernel) go with the formats
    ``tflite-pruned`` / ``tflite-clustered``; they and ``tflite-qat`` fine-tune ``finetune_epochs``
    on the run's training data. ``int8_io``: input/output type of full-integer TFLite (uint8 or int8).
    ``author`` and ``license`` go into the TFLite metadata. ``max_megapixels``: the SavedModel refuses an
    encoded image whose header declares more pixels than this, before decoding it.

    Every artifact must pass the parity report or nothing is published (``ExportFailed`` carries the report);
    ``allow_failed_variants``: publish without the artifacts out of tolerance (never without the SavedModel),
    which stay in the report marked ``published: false``. ``labels`` (a file) and ``preprocessing`` give a
    .keras/.h5 SOURCE the class names and normalisation it does not carry (export.source.load_source).

    Each converter runs in a spawned child process (export/child.py), so a script that calls this needs the
    usual ``if __name__ == "__main__":`` guard.
    """
    if not max_megapixels > 0:
        raise CnnkitError(f"--max-megapixels must be > 0, got {max_megapixels}")
    src = load_source(source, weights=weights, input_size=input_size, labels=labels, preprocessing=preprocessing)
    src.author, src.license, src.max_megapixels = author, license, float(max_megapixels)
    name = name or src.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise CnnkitError(f"--name {name!r}: letters, digits, '_', '.' and '-' only, not starting with '.' (it "
                          f"names a folder inside {output})")
    base = os.path.join(output, name)
    if version is None:
        version = next_version(base)
    elif os.path.exists(os.path.join(base, str(version))):
        raise CnnkitError(f"{base}/{version} already exists; exports never overwrite a version")
    # with no data of its own, the parity check runs on the calibration set's held-out split (real images,
    # never the ones calibrated on) rather than on noise
    images, labels, data = _evaluation_images(src, data_spec or (None if src.data_spec else calibration_data))
    if src.untrained:
        _estimate_batch_norm(src, images)
    formats, carried, left = _carry_over(src, formats, can_calibrate=bool(calibration_data) or data is not None)
    representative = None
    if any(f in formats for f in ("tflite-int8", "onnx-int8")):
        if calibration_data:
            from keras_cnns.training.data import load_data

            representative = load_data(calibration_data, src.input_shape).train.x[:200]
        elif data is not None:
            representative = data.train.x[:200]
        else:
            raise CnnkitError("int8 quantization needs calibration images: export a training run, or give "
                              "--calibration-data SPEC (e.g. a folder of sample images)")
    quantized = [f for f in formats if parity.tolerance_of(FORMATS[f][1])[0] == "quantized" and f not in COMPRESSED]
    if src.untrained and quantized and not allow_failed_variants:  # say so before the conversions, not after
        raise CnnkitError(f"{src.name} is untrained (--weights none): its near-uniform answers cannot pass the "
                          f"top-1 agreement gate of {', '.join(quantized)}; export a trained model (a run folder, or "
                          "--weights imagenet), or add --allow-failed-variants to publish what passes")
    compressed = _compress(src, formats, data, prune, cluster, finetune_epochs)
    final = os.path.join(base, str(version))
    tmp = os.path.join(base, f".partial-{version}-{os.getpid()}")
    created = [folder for folder in (output, base) if not os.path.isdir(folder)]
    os.makedirs(base, exist_ok=True)
    try:
        report = _build(src, tmp, formats, images, labels, representative, opset, name, version, compressed,
                        int8_io, allow_failed_variants)
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
            from keras_cnns.training.runs import remove_if_empty

            for folder in reversed(created):
                remove_if_empty(folder)
    report["path"] = final
    if src.earlier_artifacts:
        report["carried_over"], report["not_carried_over"] = carried, left
    return final, report


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
    earlier = [f for f, (artifact, _, _) in FORMATS.items() if artifact in src.earlier_artifacts and f not in formats]
    carried = [f for f in earlier if f not in COMPRESSED and (can_calibrate or not f.endswith("int8"))]
    left = [f for f in earlier if f not in carried]
    if carried:
        log.info("carried over from %s (rebuilt and checked again): %s", src.origin, ", ".join(carried))
    if left:
        log.warning("not carried over from %s: %s (export those from the training run)", src.origin,
                    ", ".join(left))
    return [*formats, *carried], carried, left


def _compress(src, formats, data, prune, cluster, epochs):
    """{format: (compressed Keras model, details)} for the tensorflow-model-optimization formats."""
    from export import compress

    wanted = [f for f in formats if f in COMPRESSED]
    if not wanted:
        return {}
    if data is None or data.class_names != src.labels:
        raise CnnkitError("--prune, --cluster and --quantize qat fine-tune on the training data: export a run "
                          "directory (its data set is used)")
    out = {}
    if "tflite-qat" in wanted:
        out["tflite-qat"] = (compress.quantization_aware(src.model, data, src.preprocessing, epochs), {})
    if "tflite-pruned" in wanted:
        model = compress.prune(src.model, data, src.preprocessing, prune, epochs)
        out["tflite-pruned"] = (model, {"target_sparsity": prune})
    if "tflite-clustered" in wanted:
        model = compress.cluster(src.model, data, src.preprocessing, cluster, epochs)
        out["tflite-clustered"] = (model, {"clusters": cluster})
    return out


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


def _tflite(graph, fmt, variant, representative, int8_io, src, version, path):
    if representative is not None and src.input_shape[-1] == 1:  # the RGB-input mobile graph calibrates on RGB
        representative = np.repeat(representative[..., :1], 3, axis=-1)
    description = (f"{src.name}: image classifier of {len(src.labels)} classes exported by cnnkit ({fmt}) from "
                   f"{src.origin}" + (f", trained on {src.data_spec}" if src.data_spec else ""))
    child.run(f"the TFLite conversion ({variant}) of {src.name}", tflite.convert_file, graph, variant, path,
              src.labels, src.name, description, version, src.author, src.license, representative, int8_io)


def _release(src, compressed):
    """Drop the Keras models once their graphs are on disk: the converters (child processes) and the parity
    report read them from there. The memory goes back to the system with TensorFlow's system allocator
    (``cnnkit export`` sets it: child.SYSTEM_ALLOCATOR) and glibc's ``malloc_trim`` (ResNet-18 --all at
    64x64: 1.85 GB peak with it, 1.96 GB without)."""
    import ctypes
    import gc

    src.release_model()
    for fmt, (_, details) in compressed.items():
        compressed[fmt] = (None, details)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _float_onnx(tmp, scratch, opset):
    """The float32 ONNX file the float16 and int8 ones derive from: the export's, else one in scratch."""
    path = os.path.join(tmp, FORMATS["onnx"][2])
    if not os.path.exists(path):
        path = os.path.join(scratch, "float.onnx")
        if not os.path.exists(path):
            onnx_format.convert_in_child(tmp, path, opset)
    return path


def _build(src, tmp, formats, images, labels, representative, opset, name, version, compressed, int8_io,
           allow_failed=False):
    import dataclasses

    from export.compress import gzip_size
    from keras_cnns.training.runs import read_json, save_model_atomic, write_json

    artifacts = []
    gray = src.input_shape[-1] == 1
    with tempfile.TemporaryDirectory() as scratch:  # the asset keeps its file name: labels.txt
        labels_file = os.path.join(scratch, "labels.txt")
        with open(labels_file, "w", encoding="utf-8") as f:
            f.write("\n".join(src.labels) + "\n")
        # every graph a converter needs is written first; then the Keras models are released
        savedmodel.save(src, tmp, labels_file)
        os.makedirs(os.path.join(tmp, "keras"))
        save_model_atomic(src.model, os.path.join(tmp, "keras", "model.keras"), src.contract())
        mobile = tmp  # the graph TFLite files come from: RGB input for a grayscale model
        if gray and any(f.startswith("tflite") for f in formats):
            mobile = savedmodel.save(dataclasses.replace(src, model=rgb_input(src.model)),
                                     os.path.join(scratch, "mobile"), labels_file)
        for fmt, (model, _) in compressed.items():  # each its own SavedModel
            savedmodel.save(dataclasses.replace(src, model=rgb_input(model) if gray else model),
                            os.path.join(scratch, fmt), labels_file)
        _release(src, compressed)
        for fmt in formats:
            artifact, kind, rel = FORMATS[fmt]
            path = os.path.join(tmp, rel) if rel else tmp
            if rel:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            details = {}
            if fmt in compressed:  # TFLite from its own SavedModel; int8 too when asked for
                variant = "qat" if fmt == "tflite-qat" else ("int8" if "tflite-int8" in formats else "float32")
                _tflite(os.path.join(scratch, fmt), fmt, variant, representative, int8_io, src, version, path)
                details = {**compressed[fmt][1], **_measured_kernels(fmt, path), "tflite_variant": variant,
                           "gzip_bytes": gzip_size(path)}
            elif fmt.startswith("tflite"):
                _tflite(mobile, fmt, fmt.split("-", 1)[1], representative, int8_io, src, version, path)
            elif fmt == "onnx":
                onnx_format.convert_in_child(tmp, path, opset)
            elif fmt == "onnx-float16":
                child.run(f"the ONNX float16 conversion of {src.name}", onnx_format.to_float16,
                          _float_onnx(tmp, scratch, opset), path)
            elif fmt == "onnx-int8":
                child.run(f"the ONNX int8 quantization of {src.name}", onnx_format.quantize_int8,
                          _float_onnx(tmp, scratch, opset), path, representative)
            if fmt.startswith("tflite") and gray:
                details = {**details, "input": "RGB (the graph converts to gray: MediaPipe Tasks and the TFLite "
                                              "Task Library take RGB images only)"}
            if int8_io == "int8" and (fmt == "tflite-int8" or details.get("tflite_variant") == "int8"):
                details = {**details, "int8_io": True}
            artifacts.append({"artifact": artifact, "kind": kind, "path": rel, **details})
    write_json(os.path.join(tmp, "export.json"), {
        "name": name, "version": version, "source": src.origin, "input_shape": list(src.input_shape),
        "labels": src.labels, "preprocessing": src.preprocessing, "data": src.data_spec,
        "val_split": src.val_split, "test_split": src.test_split, "artifacts": artifacts, "onnx_opset": opset,
        "max_megapixels": src.max_megapixels, "weights": src.weights,
    })
    report = validate(tmp, images=images, labels=labels, raise_on_failure=not allow_failed)
    failed = [r for r in report["artifacts"] if not r["ok"]]
    if failed and any(r["kind"] == "savedmodel" for r in failed):
        raise ExportFailed(f"out of tolerance, nothing exported: {failure_details(report)}", report)
    if failed:  # --allow-failed-variants: publish the rest; the report keeps the failed rows, marked
        gone = {r["artifact"] for r in failed}
        for a in artifacts:
            if a["artifact"] in gone:
                os.remove(os.path.join(tmp, a["path"]))
        meta = read_json(os.path.join(tmp, "export.json"))
        write_json(os.path.join(tmp, "export.json"),
                   {**meta, "artifacts": [a for a in meta["artifacts"] if a["artifact"] not in gone]})
        for r in report["artifacts"]:
            r["published"] = r["ok"]
        report["not_published"] = sorted(gone)
        report["ok"] = True
        write_json(os.path.join(tmp, "report.json"), report)
        with open(os.path.join(tmp, "report.md"), "a", encoding="utf-8") as f:
            f.write(f"\n**Not published** (out of tolerance, --allow-failed-variants): {', '.join(sorted(gone))}.\n")
    return report


def _measured_kernels(fmt, path):
    """What pruning / clustering left in the ``.tflite`` file itself: sparsity or distinct values per kernel
    of the conv, depthwise and dense weights read from its buffers."""
    from export import compress

    with open(path, "rb") as f:
        arrays = tflite.kernel_tensors(f.read())
    if fmt == "tflite-pruned":
        return {"sparsity": compress.sparsity(arrays)}
    if fmt == "tflite-clustered":
        return {"max_unique_values_per_kernel": compress.max_unique_values(arrays)}
    return {}


def _mediapipe_text(check):
    if not check:
        return ""
    if not check["loads"]:
        return "" if check["ok"] else f"; {check['error']}"
    text = "" if check["ok"] else (
        f"; MediaPipe Tasks agrees with LiteRT on {check['top1_agreement']:.1%} of {check['images']} images "
        f"(needs {MEDIAPIPE_AGREEMENT:.0%}), category names {', '.join(check['names']) or 'none'}")
    full = check.get("full_size")
    if full and not full["ok"]:
        text += (f"; on {full['photos']} full-size photos MediaPipe Tasks agrees with {full['against']} on "
                 f"{full['top1_agreement']:.1%} (needs {MEDIAPIPE_AGREEMENT:.0%}): the decode or resize differs")
    return text


def mediapipe_check(path, litert_outputs, images, int8_io=False, count=MEDIAPIPE_IMAGES):
    """Does the ``.tflite`` load and classify in MediaPipe Tasks' ImageClassifier from its metadata alone,
    and agree with LiteRT (``litert_outputs``: its probabilities on ``images``)?
    {"loads", "top1_agreement", "names", "images", "ok", "error"}.
    ``int8_io``: int8 input was asked for (--int8-io int8), for runtimes other than MediaPipe: a refusal is
    reported, not a failure."""
    images, want = images[:count], litert_outputs[:count]
    if images.shape[-1] not in (1, 3):  # not a photo classifier: nothing MediaPipe Tasks could feed it
        return {"loads": False, "ok": True, "error": f"MediaPipe Tasks classifies RGB images; this model takes "
                                                     f"{images.shape[-1]} channels (not checked)"}
    try:
        runner = tflite.MediaPipeRunner(path)
    except CnnkitError as err:
        return {"loads": False, "ok": int8_io, "error": str(err) + (
            " (int8 input was asked for with --int8-io int8; MediaPipe Tasks takes uint8 or float32)" if int8_io
            else "")}
    got = runner(images).argmax(axis=1)
    runner.close()
    agreement = _agreement(want, got)
    names = sorted(runner.names)
    return {"loads": True, "images": int(len(images)), "top1_agreement": agreement, "names": names[:20],
            "ok": agreement >= MEDIAPIPE_AGREEMENT and set(names) <= set(runner.labels) and bool(names),
            "error": None}


def full_size_photos(images, count=FULL_SIZE_PHOTOS, seed=0):
    """Encoded photos 4-10x larger than the input on each side, the two sides scaled apart (non-square),
    made from ``images`` (the evaluation images: what the model knows) with grain (fine texture, which a resize
    other than the contract renders otherwise), JPEG and one in four PNG: what a user sends, which every runtime
    must decode and shrink to the input by the image contract (keras_cnns.imaging)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    for i in range(count):  # fewer evaluation images than photos: each is used again, at other sizes
        image = images[i % len(images)]
        h, w, c = image.shape
        fy, fx = rng.uniform(*FULL_SIZE_FACTORS, 2)
        shrink = min(1.0, FULL_SIZE_MAX_SIDE / max(w * fx, h * fy))  # a big input's photos keep their aspect
        size = (int(w * fx * shrink), int(h * fy * shrink))
        big = np.asarray(Image.fromarray(image[..., 0] if c == 1 else image).resize(size, Image.BICUBIC), np.float32)
        big += 24 * rng.standard_normal(big.shape, dtype=np.float32)
        big = np.clip(np.round(big), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()  # PNG at zlib level 1: the same pixels, written 7x faster
        Image.fromarray(big).save(buffer, **({"format": "PNG", "compress_level": 1} if len(photos) % 4 == 3
                                             else {"format": "JPEG", "quality": 95}))
        photos.append(buffer.getvalue())
    return photos


def _served_on_photos(export_dir, photos, shape):
    """(pixels, probabilities) of the served SavedModel on photos: its ``serving_bytes`` signature decodes and
    resizes them in its graph; the pixels are the same decode and resize (keras_cnns.imaging), for other runtimes."""
    import tensorflow as tf

    from keras_cnns.imaging import decode, resize

    serve = tf.saved_model.load(export_dir).signatures["serving_bytes"]
    served = np.concatenate([serve(image_bytes=tf.constant(photos[i:i + 8]))["probabilities"].numpy()
                             for i in range(0, len(photos), 8)])
    return np.stack([resize(decode(p, shape[-1]), shape[:2]).numpy() for p in photos]), served


def _agreement(reference, got_top1, tolerance=parity.FLOAT_TOLERANCE):
    """Share of images whose class ``got_top1`` is the reference's top-1 or tied with it within ``tolerance`` (an
    untrained model's near-uniform probabilities leave ties that rounding in either runtime may break)."""
    return float((np.take_along_axis(reference, got_top1[:, None], 1)[:, 0] >= reference.max(axis=1) - tolerance)
                 .mean())


def mediapipe_full_size(path, photos, reference, against):
    """MediaPipe Tasks on full-size photos (decoded as an app decodes them, resized by MediaPipe) against
    ``reference``, the probabilities ``against`` gave on the same files: {"photos", "top1_agreement",
    "against", "ok"}."""
    from PIL import Image

    runner = tflite.MediaPipeRunner(path)
    try:
        got = np.stack([runner.scores(np.asarray(Image.open(io.BytesIO(p)).convert("RGB"))) for p in photos])
    finally:
        runner.close()
    agreement = _agreement(reference, got.argmax(axis=1))
    return {"photos": len(photos), "top1_agreement": agreement, "against": against,
            "ok": agreement >= MEDIAPIPE_AGREEMENT}


def validate(export_dir, data_spec=None, images=None, labels=None, raise_on_failure=False):
    """Run the parity report over an export version directory; writes report.json and report.md."""
    from keras_cnns.training.runs import load_model_file, read_json, write_json

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

    full_size = {}  # the photos and the SavedModel's answers, made for the first TFLite row that needs them

    def check(row, path, outputs):
        row.update(extras.get(row["artifact"], {}))
        if row["kind"].startswith("tflite"):  # the phone's runtime, next to LiteRT's answers
            row["mediapipe"] = mediapipe_check(path, outputs, images, bool(row.get("int8_io")))
            row["ok"] = row["ok"] and row["mediapipe"]["ok"]
            if row["mediapipe"]["loads"]:  # and on full-size photos, against what the server answers
                if not full_size:
                    full_size["photos"] = full_size_photos(images)
                    full_size["pixels"], full_size["served"] = _served_on_photos(export_dir, full_size["photos"],
                                                                                 images.shape[1:])
                if parity.tolerance_of(row["kind"])[0] == "max_abs_diff":  # a float file: the server's answers
                    reference, against = full_size["served"], "the served SavedModel"
                else:  # a quantized or compressed file differs from the float model on its own (its row says by
                    # how much): the same file in LiteRT, on the photos as the server decodes and resizes them
                    reference, against = runner_for(row["kind"], path)(full_size["pixels"]), "LiteRT (server's resize)"
                row["mediapipe"]["full_size"] = mediapipe_full_size(path, full_size["photos"], reference, against)
                row["ok"] = row["ok"] and row["mediapipe"]["full_size"]["ok"]

    artifacts = [(a["artifact"], a["kind"], os.path.join(export_dir, a["path"]),
                  functools.partial(runner_for, a["kind"], os.path.join(export_dir, a["path"])))
                 for a in meta["artifacts"]]
    rows = parity.compare(keras_reference(model, meta["preprocessing"]), artifacts, images, labels, batch_size=batch,
                          repeats=repeats, check=check)
    report = {"name": meta["name"], "version": meta["version"], "images": int(len(images)),
              "latency_repeats": repeats, "labelled": labels is not None, "artifacts": rows,
              "ok": all(r["ok"] for r in rows)}
    warning = parity.constant_output_warning(rows[0]["output_spread"], len(images))
    if warning:
        report["warning"] = warning
    if any(r["kind"].startswith("tflite") for r in rows):
        first = next(a for a in meta["artifacts"] if a["kind"].startswith("tflite"))
        with open(os.path.join(export_dir, first["path"]), "rb") as f:
            compatible, warnings = tflite.gpu_compatibility(f.read())
        report["tflite_gpu_delegate"] = {"compatible": compatible, "warnings": warnings[:20]}
    write_json(os.path.join(export_dir, "report.json"), report)
    title = f"Parity report: {meta['name']} version {meta['version']} ({len(images)} images)"
    with open(os.path.join(export_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(parity.markdown(rows, title) + (f"\n**Warning:** {warning}.\n" if warning else ""))
    if raise_on_failure and not report["ok"]:
        raise ExportFailed(f"out of tolerance, nothing exported: {failure_details(report)}", report)
    return report


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
                       f"{r['top1_agreement']:.1%}{accuracy} ({r['tolerance']})" + _mediapipe_text(r.get("mediapipe")))
    return "; ".join(clauses)
