"""OpenVINO IR (``model.xml`` + ``model.bin``) from the export's float32 ONNX file, run with OpenVINO's CPU plugin.

OpenVINO picks its own arithmetic on a CPU: bfloat16 wherever the CPU has it (AVX512-BF16, AMX), float32
elsewhere. So each IR records the precision it is meant to run at, and the runner asks for exactly that:

- ``openvino``: float32 weights, run with the ``f32`` precision hint: the Keras model's answers (exact);
- ``openvino-bf16``: float16-compressed weights (half the file), run in bfloat16: held to a tolerance and top-1
  agreement (``judge``), offered only where OpenVINO reports BF16 among the CPU's capabilities;
- ``openvino-int8``: quantized by NNCF (OpenVINO's post-training quantizer: symmetric int8 weights per channel and
  activations per tensor, fast bias correction) on the export's calibration images; with ``--max-accuracy-drop``,
  ``nncf.quantize_with_accuracy_control`` on the validation split puts back in float the layers that cost the most
  until the file is within the budget. Its float parts run in float32 (the ``f32`` hint), so it is held to top-1
  agreement and accuracy like the other int8 files (export/parity.py).

An optional extra (``pip install -e ".[openvino]"``); OpenVINO Model Server serves the same IR.
"""
import functools
import logging
import os

import numpy as np

from keras_cnns.errors import CnnkitError
from keras_cnns.files import replaced_atomically

log = logging.getLogger("export")

#: where the IR records the precision it runs at (read back by Runner)
PRECISION_KEY = "cnnkit_inference_precision"
#: compiled models a runner keeps, one per batch size (the report uses its batch and batch 1)
COMPILED_KEPT = 2


def missing():
    """None when OpenVINO can be imported, else why not (one line)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return 'OpenVINO is not installed: pip install -e ".[openvino]"'
    return None


def nncf_missing():
    """None when OpenVINO and NNCF can be imported, else why not (one line)."""
    reason = missing()
    if reason:
        return reason
    try:
        import nncf  # noqa: F401
    except ImportError:
        return 'NNCF (OpenVINO\'s int8 quantizer) is not installed: pip install -e ".[openvino]"'
    return None


@functools.lru_cache(maxsize=1)
def bf16_unavailable():
    """None when OpenVINO's CPU plugin runs bfloat16 on this CPU, else why not."""
    reason = missing()
    if reason:
        return reason
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        return f"this CPU has no bfloat16 arithmetic (OpenVINO's CPU capabilities: {', '.join(capabilities)})"
    return None


def build(job, fmt, path):
    """The IR of the export's float32 ONNX file (converted first, in scratch, when --onnx was not asked for)."""
    from export import child
    from export.onnx_format import float_file

    reason = fmt.available()
    if reason:
        raise CnnkitError(f"{fmt.name}: {reason}")
    precision = "bf16" if fmt.precision == "bfloat16" else "f32"
    child.run(f"the OpenVINO conversion of {job.src.name}", convert, float_file(job), path, precision)
    return {"inference_precision": precision}


def convert(onnx_path, path, precision="f32"):
    """Write ``path`` (.xml, with its .bin beside it) from an ONNX file; ``precision``: f32 or bf16."""
    import openvino as ov

    _save(ov.convert_model(onnx_path), path, precision)
    return path


def build_int8(job, fmt, path):
    """The NNCF-quantized IR of the export's float32 ONNX file, within ``--max-accuracy-drop`` where one is given."""
    from export import child
    from export.onnx_format import float_file

    reason = fmt.available()
    if reason:
        raise CnnkitError(f"{fmt.name}: {reason}")
    checks = job.int8_checks("openvino")
    details = child.run(f"the OpenVINO int8 quantization (NNCF) of {job.src.name}", quantize_int8, float_file(job),
                        path, job.representative, checks["decision"], checks["budget"])
    return {**details, "inference_precision": "f32", "calibration": job.calibration}


def quantize_int8(onnx_path, path, representative, decision=None, budget=None):
    """Write the int8 IR at ``path``: ``nncf.quantize`` on ``representative`` (float32 pixels), or, with a
    ``budget`` (accuracy points) and labelled ``decision`` images (int8.Decision), ``quantize_with_accuracy_control``
    on those. Returns what export.json says of it."""
    import contextlib
    import io

    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its notes: the export's log says enough
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars (rich writes to sys.stdout)
        quantized, details = _nncf_quantize(nncf, ov.convert_model(onnx_path), representative, decision, budget)
    _save(quantized, path, "f32")
    details["float_layers"] = _float_layers(quantized)
    return details


def _nncf_quantize(nncf, model, representative, decision, budget):
    images = np.asarray(representative, np.float32)
    calibration = nncf.Dataset([image[None] for image in images])
    details = {"quantizer": f"NNCF {nncf.__version__}, post-training, {len(images)} calibration images"}
    if budget is not None and decision is not None and decision.labels is not None:
        validation = nncf.Dataset(list(zip(np.asarray(decision.images, np.float32)[:, None], decision.labels)))

        def accuracy(compiled, items):
            items = list(items)
            right = [int(np.argmax(compiled(image)[0]) == label) for image, label in items]
            return float(np.mean(right)) if right else 0.0, right

        quantized = nncf.quantize_with_accuracy_control(
            model, calibration, validation, accuracy, max_drop=budget / 100, drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(images))
        details["accuracy_control"] = {"max_accuracy_drop": budget, "decided_on": decision.source,
                                       "decision_images": int(len(decision.images))}
    else:
        if budget is not None:
            log.warning("--max-accuracy-drop: %s has no labels, so NNCF quantizes without accuracy control",
                        decision.source if decision is not None else "the export")
        quantized = nncf.quantize(model, calibration, subset_size=len(images))
    return quantized, details


#: ops that move or pick values without computing new ones: a FakeQuantize before them still quantizes the reader
_LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Convert", "Concat", "StridedSlice"}


def _float_layers(model):
    """The Keras layers (int8.layer_name) whose convolution or matrix product NNCF left in float: no FakeQuantize
    rounds its input, directly or through ops that only move values."""
    from export.int8 import layer_name

    def quantized(node, seen):
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() not in _LAYOUT_OPS or node.get_friendly_name() in seen:
            return False
        seen.add(node.get_friendly_name())
        return any(quantized(node.input_value(i).get_node(), seen) for i in range(node.get_input_size()))

    return [layer_name(op.get_friendly_name()) for op in model.get_ordered_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
            and not quantized(op.input_value(0).get_node(), set())]


def _save(model, path, precision):
    """``model`` at ``path`` (.xml, its .bin beside it), atomically, recording the precision it runs at."""
    import openvino as ov

    model.set_rt_info(precision, PRECISION_KEY)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    with replaced_atomically(path, ".xml") as tmp:
        weights = os.path.splitext(tmp)[0] + ".bin"  # the .xml finds its weights by its own name
        try:
            ov.save_model(model, tmp, compress_to_fp16=precision != "f32")
            os.replace(weights, os.path.splitext(path)[0] + ".bin")
        finally:
            if os.path.exists(weights):
                os.remove(weights)


def judge(row, fmt, path, outputs, context):
    """A bfloat16 row is held to top-1 agreement as well as its tolerance: bfloat16 keeps 8 bits of mantissa, so
    its probabilities differ by more than float16's, and a tolerance alone would not say the answers are the same."""
    from export import parity

    if fmt.precision == "bfloat16":
        row["tolerance"] += f", top-1 agreement >= {parity.MIN_AGREEMENT:.0%}"
        row["ok"] = row["ok"] and row["top1_agreement"] >= parity.MIN_AGREEMENT


class Runner:
    """Runs an OpenVINO IR (or an ONNX file) on the CPU at the precision its IR records (float32 if none),
    any batch size; float32 pixel values 0..255 in."""

    def __init__(self, path, threads=2):
        reason = missing()
        if reason:
            raise CnnkitError(reason)
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(path)
        self.precision = (self.model.get_rt_info(PRECISION_KEY).astype(str)
                          if self.model.has_rt_info(PRECISION_KEY) else "f32")
        self.config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": int(threads),
                       "PERFORMANCE_HINT": "LATENCY"}
        shape = self.model.input(0).get_partial_shape()
        self.input_shape = tuple(int(d.get_length()) for d in list(shape)[1:])
        self.classes = int(self.model.output(0).get_partial_shape()[-1].get_length())
        self._compiled = {}

    def _compiled_for(self, batch):
        if batch not in self._compiled:
            if len(self._compiled) >= COMPILED_KEPT:
                self._compiled.pop(next(iter(self._compiled)))
            model = self.model.clone()
            model.reshape({model.input(0): [batch, *self.input_shape]})
            self._compiled[batch] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self._compiled[batch]

    def __call__(self, images):
        images = np.ascontiguousarray(images, np.float32)
        request = self._compiled_for(len(images))
        return np.array(request.infer([images])[0], np.float32)
