"""int8 that keeps its accuracy: where int8 loses it, and float for those layers where it costs too much.

Every full-integer artifact gets a **per-layer error report**: each quantized op's output next to the float
model's at the same point, run side by side on held-out images. The measure is the signal-to-quantization-noise
ratio (SQNR, dB) over output channels (each channel's noise-to-signal ratio, capped at 1, averaged): a tensor that
shares one int8 scale across channels of very different ranges (one outlier channel, the classic failure of
per-tensor activation quantization) crushes its small channels to a few levels, which a whole-tensor error hides.
A layer is ranked by the SQNR it **adds** (loses against the worst of its inputs): where the error enters, not
where it is seen. TFLite's ``rmse/scale`` (error in quantization steps) is reported beside it.
Measured on EfficientNet-B0 (shapes, 32x32): ranked by each layer's own isolated error the automatic mode needed
156 of 242 layers in float; ranked by the error added, 2 (the input normalisation and the classifier).

- TFLite: TensorFlow's MLIR quantizer with ``NumericVerify`` ops fed by the whole float model
  (``tf.lite.experimental.QuantizationDebugger``) on a model calibrated once; the same calibrated model is then
  quantized with ``denylisted_nodes``.

**Automatic mixed int8/float** (``search``): the layers the report ranks worst stay float, 1, 2, 4, ... of them
and then the fewest between, until the file is within the accuracy budget on the *decision* images (the
validation split: never the calibration images, nor the test split the parity report judges on). Keeping a layer
float takes its neighbours' tensors too: the producers of its inputs and its readers, or an int8 neighbour would
round the same tensor anyway.
"""
import dataclasses
import logging
import math
import os
import re
import tempfile

import numpy as np

log = logging.getLogger("export")

#: the worst layers named in report.md and on the console (report.json holds them all)
WORST_SHOWN = 5
#: fewer calibration images than this, or a single class among them: a warning (the ranges they give miss
#: what other images produce)
MIN_CALIBRATION_IMAGES = 50
#: SQNR (dB) taken as exact: an error below a thousandth of the signal's amplitude (the model's input is exact)
SQNR_CAP_DB = 60.0
#: what a file with float layers can no longer do
INTEGER_ONLY_NOTE = ("its float layers run on the CPU: integer-only accelerators (Edge TPU, Arm Ethos-U, NNAPI "
                     "int8-only drivers) cannot run the file whole; LiteRT's CPU kernels (XNNPACK), the GPU delegate "
                     "and MediaPipe Tasks run it")


#: the runtimes whose int8 files --max-accuracy-drop keeps within a budget
BUDGETED = ("tflite", "onnx", "openvino")


@dataclasses.dataclass
class Decision:
    """The images the automatic mode decides on: float32 pixels, their labels (or None), the float model's top-1."""
    images: np.ndarray
    labels: object
    reference: np.ndarray
    #: where they come from, for the report ("validation split of shapes:100")
    source: str

    def judge(self, probabilities, budget):
        """(accuracy, top-1 agreement, within the budget?) of an artifact's answers. ``budget``: the accuracy
        points it may lose; without labels, the parity gate's agreement instead."""
        from export.parity import MIN_AGREEMENT

        top1 = np.asarray(probabilities).argmax(axis=1)
        agreement = float((top1 == self.reference).mean())
        if self.labels is None:
            return None, agreement, agreement >= MIN_AGREEMENT
        accuracy = float((top1 == self.labels).mean())
        keras = float((self.reference == self.labels).mean())
        return accuracy, agreement, (keras - accuracy) * 100 <= budget + 1e-9


def parse_budget(text):
    """``--max-accuracy-drop``: points for every int8 format, or per format (``tflite=1,onnx=2,openvino=0.5``) ->
    {runtime: pts}."""
    from keras_cnns.errors import CnnkitError

    if text is None:
        return {}
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if len(parts) == 1 and "=" not in parts[0]:
        parts = [f"{runtime}={parts[0]}" for runtime in BUDGETED]
    budget = {}
    for part in parts:
        fmt, _, value = (x.strip() for x in part.partition("="))
        try:
            points = float(value)
        except ValueError:
            points = -1
        if fmt not in BUDGETED or not 0 <= points <= 100:
            raise CnnkitError(f"--max-accuracy-drop {part!r}: accuracy points (0-100) lost at most, for every int8 "
                              "format or per format as tflite=PTS,onnx=PTS,openvino=PTS")
        budget[fmt] = points
    return budget


def calibration_warnings(count, labels, classes=None):
    """Why a calibration set may give ranges that do not hold: too few images, one class, or classes missing."""
    warnings = []
    if count < MIN_CALIBRATION_IMAGES:
        warnings.append(f"only {count} calibration images (at least {MIN_CALIBRATION_IMAGES} recommended): the "
                        "activation ranges they give may not cover other images")
    seen = len(np.unique(labels)) if labels is not None and len(labels) else 0
    if seen == 1:
        warnings.append("the calibration images are all of one class: the ranges of the others are guessed")
    elif classes and 1 < seen < classes:
        warnings.append(f"the calibration images cover {seen} of the {classes} classes: the ranges of the others "
                        "are guessed")
    return warnings


def channel_sqnr_db(reference, quantized):
    """SQNR (dB) of ``quantized`` against ``reference`` over the last axis (channels): the mean of each channel's
    noise-to-signal ratio, capped at 1 (a channel lost entirely counts once, however small it was); channels that
    are zero in the reference do not count; NaN when all are."""
    reference = np.asarray(reference, np.float64).reshape(-1, np.shape(reference)[-1] if np.ndim(reference) else 1)
    noise = ((np.asarray(quantized, np.float64).reshape(reference.shape) - reference) ** 2).mean(axis=0)
    signal = (reference ** 2).mean(axis=0)
    live = signal > 1e-20
    if not live.any():
        return float("nan")
    ratio = float(np.mean(np.minimum(noise[live] / signal[live], 1.0)))
    return 10 * math.log10(1 / max(ratio, 1e-30))


def layer_name(tensor_name, op=""):
    """The Keras layers a converted op stands for, from its fused tensor name
    (``mobilenet_v2/conv1_relu6/Relu6;mobilenet_v2/conv1_conv/BiasAdd;...`` -> ``conv1_relu6 + conv1_conv``); an op
    outside the Keras model (the SavedModel's input normalisation, its output) is named by what it does."""
    parts = [re.sub(r"^(StatefulPartitionedCall(_\d+)?/)+", "", p).split("/") for p in tensor_name.split(";")]
    # the mobile graph of a grayscale model wraps it as NAME_rgb (exporter.rgb_input): its layers are one level down
    parts = [p[1:] if len(p) >= 4 and p[0] == f"{p[1]}_rgb" else p for p in parts]
    names = list(dict.fromkeys(p[1] for p in parts if len(p) >= 3))
    if names:
        return " + ".join(names)
    what = "input normalisation" if op in ("MUL", "SUB", "DIV", "ADD") else "output"
    return f"{what} ({op.lower() or tensor_name.split(':')[0]})"


def search(ranked, evaluate, budget):
    """The fewest of the ``ranked`` layers (worst first) kept in float for ``evaluate(float_layers) -> (ok, row)``
    to pass: none, then 1, 2, 4, ... and the fewest between the last failing and the first passing count.
    Returns (float layers or None when even all of them in float fail, the trials made)."""
    trials, tried = [], {}

    def attempt(count):
        if count not in tried:
            ok, row = evaluate(ranked[:count])
            tried[count] = ok
            trials.append({"float_layers": count, **row, "ok": ok})
        return tried[count]

    counts, step = [0], 1
    while step < len(ranked):
        counts.append(step)
        step *= 2
    low, high = -1, None
    for count in dict.fromkeys(counts + [len(ranked)]):
        if attempt(count):
            high = count
            break
        low = count
    if high is None:
        return None, trials
    while high - low > 1:  # the fewest between the last failing and the first passing count
        middle = (low + high) // 2
        if attempt(middle):
            high = middle
        else:
            low = middle
    log.info("int8 within %.3g points with %d layer(s) in float (of %d ranked)", budget, high, len(ranked))
    return ranked[:high], trials


# -- TFLite ----------------------------------------------------------------------------------------------------


def tflite_calibrated(saved_model_dir, representative):
    """The float model with the activation ranges seen on ``representative`` (what the quantizer reads)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["probabilities"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ([np.asarray(x, np.float32)[None]] for x in representative)
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the documented way to get the calibrated model
    return converter.convert()


def tflite_quantize(calibrated, io_type="uint8", float_layers=()):
    """The full-integer model (``io_type`` in and out), with the ops whose output tensors are ``float_layers``
    left in float (TensorFlow's quantizer, as ``TFLiteConverter.convert`` runs it)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    io = getattr(tf, io_type)
    return mlir_quantize(calibrated, input_data_type=io, output_data_type=io,
                         denylisted_nodes=list(float_layers) or None)


def tflite_layer_errors(calibrated, images):
    """Every quantized op's output against the float model's on ``images``, ranked (``_ranked``):
    [{tensor, layer, op, sqnr_db, added_db, rmse_per_scale, float_ops}]."""
    import csv
    import io
    import warnings

    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    # NumericVerify ops beside every quantized op, fed by the whole float model: each tensor's accumulated error
    debug_model = mlir_quantize(calibrated, enable_numeric_verify=True, enable_whole_model_verify=True)
    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={
        "sqnr_db": lambda f, q, scale, zero: channel_sqnr_db(f, (q.astype(np.float32) - zero) * scale)})
    with warnings.catch_warnings():  # "experimental_preserve_all_tensors ... for debugging purposes only": it is
        warnings.simplefilter("ignore", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_options=options,
            debug_dataset=lambda: ([np.asarray(x, np.float32)[None]] for x in images))
        debugger.run()
    out = io.StringIO()
    debugger.layer_statistics_dump(out)
    measured = {r["tensor_name"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    rows = []
    for inputs, outputs in _tflite_ops(calibrated):
        for tensor in (t for t in outputs if t in measured):
            r, scale = measured[tensor], float(measured[tensor]["scale"])
            rows.append({"tensor": tensor, "layer": layer_name(tensor, r["op_name"]), "op": r["op_name"],
                         "sqnr_db": _capped(r["sqnr_db"]),
                         "rmse_per_scale": _number(math.sqrt(float(r["mean_squared_error"])) / scale if scale else None),
                         "inputs": [t for t in inputs if t in measured], "ids": [tensor]})
    return _ranked(rows)


def tflite_tensor_errors(float_content, content, images):
    """A quantized ``.tflite`` whose ops compute in float (dynamic range: int8 weights) against the float32 file,
    tensor by tensor (the op outputs both files name alike), on ``images`` one at a time, ranked as
    ``tflite_layer_errors`` (the automatic mode does not apply: TensorFlow quantizes those weights in the converter)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # every op as itself (no delegate takes a group of them), every tensor kept
    runs = [Interpreter(model_content=c, experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            for c in (float_content, content)]
    index, ops = [], {}
    for interpreter in runs:
        interpreter.allocate_tensors()
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        index.append({details[i]["name"]: i for op in interpreter._get_ops_details() for i in op["outputs"]  # noqa: SLF001
                      if details[i]["dtype"] == np.float32})
    for op in runs[1]._get_ops_details():  # noqa: SLF001 - LiteRT's op list: each op's type, inputs and outputs
        ops.update({t: op for t in op["outputs"]})
    names = {i: name for name, i in index[1].items()}
    common = [name for name in index[1] if name in index[0]]
    sqnr = np.zeros((len(images), len(common)))
    for n, image in enumerate(images):
        for interpreter in runs:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.asarray(image, np.float32)[None])
            interpreter.invoke()
        for i, name in enumerate(common):
            sqnr[n, i] = channel_sqnr_db(runs[0].get_tensor(index[0][name]), runs[1].get_tensor(index[1][name]))
    rows = []
    for i, name in enumerate(common):
        op = ops[index[1][name]]
        rows.append({"tensor": name, "layer": layer_name(name, op["op_name"]), "op": op["op_name"],
                     "sqnr_db": _capped(_nanmean(sqnr[:, i])), "rmse_per_scale": None, "ids": [name],
                     "inputs": [names[t] for t in op["inputs"] if names.get(t) in common]})
    return _stored(_ranked(rows))


def _nanmean(values):
    """The mean of the measured values (NaN: a tensor all zeros on that image), NaN when none is."""
    values = np.asarray(values, np.float64)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")


def _tflite_ops(content):
    """(input tensor names, output tensor names) of every op of a ``.tflite``'s main graph."""
    from export.metadata import model_t

    graph = model_t(content).subgraphs[0]
    names = [t.name.decode() for t in graph.tensors]
    return [([names[i] for i in op.inputs if i >= 0], [names[i] for i in op.outputs]) for op in graph.operators]


def _capped(value):
    """An SQNR in dB, at most SQNR_CAP_DB (None when not measurable)."""
    value = _number(value)
    return None if value is None else min(value, SQNR_CAP_DB)


def _ranked(rows):
    """The rows with ``added_db`` (the SQNR a layer loses against the worst of its inputs; an input of the model is
    exact: SQNR_CAP_DB) and ``float_ops`` (what keeping it float takes: the layer, the producers of its inputs, so
    that it reads them unrounded, and its readers, so that its output is not rounded for them), worst first. Each
    row: {tensor, ids (the ops the quantizer excludes to keep it float), sqnr_db, inputs (measured tensors), ...}."""
    by_tensor = {r["tensor"]: r for r in rows}
    readers = {}
    for r in rows:
        for tensor in r["inputs"]:
            readers.setdefault(tensor, []).extend(r["ids"])
    for r in rows:
        before = [by_tensor[t]["sqnr_db"] for t in r["inputs"] if by_tensor[t]["sqnr_db"] is not None]
        r["added_db"] = None if r["sqnr_db"] is None else \
            round(max(0.0, min(before, default=SQNR_CAP_DB) - r["sqnr_db"]), 4)
    for r in rows:
        inputs = [i for t in r["inputs"] for i in by_tensor[t]["ids"]]
        r["float_ops"] = list(dict.fromkeys([*inputs, *r["ids"], *readers.get(r["tensor"], [])]))
    for r in rows:
        del r["inputs"]
    return sorted(rows, key=lambda r: -(r["added_db"] or 0))


def _stored(layers):
    """The report's rows without what only the search needs (each one's ops, and what keeping it float takes)."""
    return [{k: v for k, v in r.items() if k not in ("ids", "float_ops")} for r in layers]


def float_set(rows):
    """The ops (their ``id``: TFLite output tensor names, ONNX node names) to keep in float for these ranked rows."""
    return list(dict.fromkeys(name for r in rows for name in r["float_ops"]))


def _number(value):
    value = float(value) if value not in (None, "") else float("nan")
    return None if math.isnan(value) else round(value, 4)


def tflite_int8(saved_model_dir, representative, io_type="uint8", debug_images=None, decision=None, budget=None,
                scratch=None):
    """The full-integer TFLite model's bytes and what export.json says of it: the per-layer report on
    ``debug_images`` and, with a ``budget`` (accuracy points) and ``decision`` images, the fewest layers kept in
    float to meet it."""
    from export.tflite import Runner

    calibrated = tflite_calibrated(saved_model_dir, representative)
    content = tflite_quantize(calibrated, io_type)
    if debug_images is None or not len(debug_images):
        return content, {}
    layers = tflite_layer_errors(calibrated, debug_images)
    details = {"int8_layers": _stored(layers), "int8_layers_measured_on": int(len(debug_images))}
    if budget is None or decision is None:
        return content, details
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        def build(float_ops):
            candidate = tflite_quantize(calibrated, io_type, float_ops)
            with open(os.path.join(folder, "candidate.tflite"), "wb") as f:
                f.write(candidate)
            return Runner(f.name, threads=2), len(candidate)

        chosen, details["mixed"] = automatic(layers, build, decision, budget)
    if chosen:
        content = tflite_quantize(calibrated, io_type, float_set(chosen))
    return content, details


def automatic(layers, build, decision, budget):
    """The automatic mode over ranked ``layers``: ``build(float_ops) -> (runner, bytes)`` makes a candidate.
    Returns (the chosen rows or None, export.json's account)."""
    from export.parity import latency_ms, predict_batches

    def evaluate(rows):
        run, size = build(float_set(rows))
        accuracy, agreement, ok = decision.judge(predict_batches(run, decision.images, 32), budget)
        return ok, {"accuracy": accuracy, "top1_agreement": agreement, "bytes": size,
                    "latency_ms": round(latency_ms(run, decision.images[:1], 10), 3)}

    chosen, trials = search(layers, evaluate, budget)
    return chosen, mixed_details(decision, budget, chosen, trials, layers)


# -- ONNX ------------------------------------------------------------------------------------------------------


def onnx_int8(float_path, path, representative, debug_images=None, decision=None, budget=None, scratch=None):
    """The full-integer (QDQ) ONNX file at ``path`` and what export.json says of it, as ``tflite_int8``: calibrated
    once (ONNX Runtime's calibration cache), then quantized with ``nodes_to_exclude``."""
    from export.onnx_format import Runner, quantize_int8

    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        # ONNX Runtime's pre-processing (constant folding, shape inference): weights and biases tf2onnx computes
        # with Reshape/Transpose become constants, quantized as weights rather than as activations
        float_path, cache = quant_pre_process_to(float_path, folder), os.path.join(folder, "calibration.json")
        quantize_int8(float_path, path, representative, calibration_cache=cache)
        if debug_images is None or not len(debug_images):
            return {}
        layers = onnx_layer_errors(float_path, path, debug_images)
        details = {"int8_layers": _stored(layers), "int8_layers_measured_on": int(len(debug_images))}
        if budget is None or decision is None:
            return details

        def build(float_ops):
            candidate = quantize_int8(float_path, os.path.join(folder, "candidate.onnx"), representative, float_ops,
                                      cache)
            return Runner(candidate, threads=2), os.path.getsize(candidate)

        chosen, details["mixed"] = automatic(layers, build, decision, budget)
        if chosen:
            quantize_int8(float_path, path, representative, float_set(chosen), cache)
    return details


def quant_pre_process_to(float_path, folder):
    """ONNX Runtime's pre-processing of the float model into ``folder``; the model as it is where that fails (its
    symbolic shape inference does not know every op)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path, here = os.path.join(folder, "preprocessed.onnx"), os.getcwd()
    try:
        # its symbolic shape inference (for transformers' dynamic shapes) is not needed here; where it cannot finish,
        # it leaves a model in the working directory: run it from the scratch folder all the same
        os.chdir(folder)
        quant_pre_process(float_path, path, skip_symbolic_shape=True)
    except Exception as err:  # noqa: BLE001 - any failure of an optional step: quantize the model as it is
        log.warning("ONNX Runtime's quantization pre-processing failed (%s); quantizing the model as it is",
                    str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
        return float_path
    finally:
        os.chdir(here)
    return path


def _channels_last(tensor):
    """ONNX's images are NCHW: channels from axis 1, unless that axis is 1 wide (an NHWC reshape tf2onnx kept)."""
    return np.moveaxis(tensor, 1, -1) if tensor.ndim == 4 and tensor.shape[1] > 1 else tensor


def onnx_layer_errors(float_path, qdq_path, images):
    """Every quantized tensor of a QDQ model (after its DequantizeLinear) against the float model's, on ``images``
    one at a time, ranked as ``tflite_layer_errors``."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import DEQUANT_OUTPUT_SUFFIX

    graph = onnx.load(float_path).graph
    qdq_outputs = {n for node in onnx.load(qdq_path).graph.node for n in node.output}
    made = {out: node for node in graph.node for out in node.output}
    measured = [t for t in made if t + DEQUANT_OUTPUT_SUFFIX in qdq_outputs]
    sessions = []
    for path, names in ((float_path, measured), (qdq_path, [t + DEQUANT_OUTPUT_SUFFIX for t in measured])):
        model = onnx.load(path)
        del model.graph.output[:]
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor as it is
        options.log_severity_level = 3
        sessions.append(ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]))
    sqnr = np.zeros((len(images), len(measured)))
    for n, image in enumerate(images):
        feed = {"images": np.asarray(image, np.float32)[None]}
        for i, (f, q) in enumerate(zip(*(s.run(None, feed) for s in sessions))):
            sqnr[n, i] = channel_sqnr_db(*(_channels_last(a) for a in (f, q)))
    rows, kept = [], set(measured)
    for tensor, mean in zip(measured, (_nanmean(column) for column in sqnr.T)):
        node = made[tensor]
        ids, inputs, todo = [], [], [tensor]  # back to the measured tensors: the nodes between are this layer's
        while todo:
            step = made.get(todo.pop())
            if step is None or step.name in ids:
                continue
            ids.append(step.name)
            for t in step.input:
                (inputs if t in kept else todo).append(t)
        rows.append({"tensor": tensor, "layer": layer_name(node.name, node.op_type.upper()), "op": node.op_type,
                     "sqnr_db": _capped(mean), "rmse_per_scale": None, "ids": ids,
                     "inputs": list(dict.fromkeys(inputs))})
    return _ranked(rows)


def mixed_details(decision, budget, chosen, trials, layers):
    """export.json's account of the automatic mode: the budget, the decision images, what stayed float, the cost."""
    names = {i: r["layer"] for r in layers for i in r["ids"]}
    plain = trials[0]
    final = next((t for t in trials if chosen is not None and t["float_layers"] == len(chosen) and t["ok"]), plain)
    out = {"max_accuracy_drop": budget, "decided_on": decision.source, "decision_images": int(len(decision.images)),
           "met": chosen is not None, "float_layers": list(dict.fromkeys(names[t] for t in float_set(chosen or []))),
           "float_ops": float_set(chosen or []), "full_int8": _cost(plain), "chosen": _cost(final),
           "trials": trials}
    if decision.labels is not None:
        out["keras_accuracy"] = float((decision.reference == decision.labels).mean())
    if chosen:
        out["delegates"] = INTEGER_ONLY_NOTE
    elif chosen is None:
        log.warning("int8 could not be brought within %.3g points even with every ranked layer in float", budget)
    return out


def _cost(trial):
    return {k: trial[k] for k in ("accuracy", "top1_agreement", "bytes", "latency_ms")}


def float_tensors(content):
    """Names of the float32 tensors a ``.tflite`` file computes (its op outputs), read from the file."""
    from tensorflow.lite.python import schema_py_generated as schema

    from export.metadata import model_t

    model = model_t(content)
    graph = model.subgraphs[0]
    outputs = {i for op in graph.operators for i in op.outputs}
    return {graph.tensors[i].name.decode() for i in outputs if graph.tensors[i].type == schema.TensorType.FLOAT32}


def worst_text(row, count=3):
    """``conv_a (-48.2 dB), ...``: the worst layers of a report row and the SQNR each adds, or "" without a report."""
    layers = [r for r in row.get("int8_layers") or [] if r["added_db"]]
    return ", ".join(f"{r['layer']} (-{r['added_db']:.1f} dB)" for r in layers[:count])


def markdown(rows):
    """report.md's int8 section: each full-integer artifact's worst layers, and what the automatic mode kept float."""
    lines = []
    for row in rows:
        layers = row.get("int8_layers")
        if not layers:
            continue
        lines += ["", f"## {row['artifact']}: where int8 loses accuracy", "",
                  f"Each quantized layer's output against the float model's on {row.get('int8_layers_measured_on')} "
                  "held-out images: SQNR over output channels (higher is better, at most "
                  f"{SQNR_CAP_DB:g} dB) and what the layer itself loses against its inputs, worst first; rmse/scale "
                  "is the error in quantization steps. All layers: report.json.", "",
                  "| layer | op | SQNR (dB) | lost here (dB) | rmse/scale |", "|---|---|---:|---:|---:|"]
        for r in layers[:WORST_SHOWN]:
            lines.append(f"| {r['layer']} | {r['op']} | {_shown(r['sqnr_db'], 2)} | {_shown(r['added_db'], 2)} | "
                         f"{_shown(r['rmse_per_scale'], 3)} |")
        mixed = row.get("mixed")
        if mixed:
            lines += ["", mixed_text(mixed)]
        for warning in (row.get("calibration") or {}).get("warnings", []):
            lines += ["", f"**Calibration warning:** {warning}."]
    return "\n".join(lines) + ("\n" if lines else "")


def _shown(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def mixed_text(mixed):
    """One paragraph of what the automatic mode did, and what it cost."""
    full, chosen = mixed["full_int8"], mixed["chosen"]

    def accuracy(cost):
        return "n/a" if cost["accuracy"] is None else f"{cost['accuracy']:.2%}"

    seen = (f"on {mixed['decision_images']} images ({mixed['decided_on']}; Keras {mixed['keras_accuracy']:.2%}; "
            f"one image is {100 / mixed['decision_images']:.2g} points)" if mixed.get("keras_accuracy") is not None
            else f"on {mixed['decision_images']} unlabelled images ({mixed['decided_on']}: top-1 agreement)")
    if not mixed["met"]:
        return (f"**Automatic mixed int8/float:** not within {mixed['max_accuracy_drop']:g} points {seen} even with "
                f"every ranked layer in float (full int8: {accuracy(full)}); the file is plain int8.")
    if not mixed["float_layers"]:
        return (f"**Automatic mixed int8/float:** plain int8 is within {mixed['max_accuracy_drop']:g} points {seen}: "
                f"{accuracy(full)}; no layer kept in float.")
    return (f"**Automatic mixed int8/float:** {len(mixed['float_layers'])} layer(s) kept in float to stay within "
            f"{mixed['max_accuracy_drop']:g} points {seen}: {', '.join(mixed['float_layers'])}. Accuracy "
            f"{accuracy(full)} -> {accuracy(chosen)}, size {full['bytes'] / 1024:.1f} -> {chosen['bytes'] / 1024:.1f} "
            f"KiB, batch-1 latency {full['latency_ms']:.2f} -> {chosen['latency_ms']:.2f} ms. Note: {mixed['delegates']}.")
