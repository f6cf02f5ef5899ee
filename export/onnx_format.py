"""ONNX from the SavedModel's ``probabilities`` signature with tf2onnx, run with ONNX Runtime.

``convert.from_keras`` fails on tf_keras models under TF 2.21, and tf2onnx's own SavedModel route costs far
more memory than the model (see ``_convert``), so the signature is frozen here and handed to tf2onnx's graph
converter (dynamic batch, chosen opset).
"""
import os

import numpy as np

from keras_cnns.errors import CnnkitError
from keras_cnns.files import replaced_atomically

DEFAULT_OPSET = 17
#: Above this many bytes of weights the conversion runs with protobuf's pure-Python backend (see ``_convert``)
PURE_PYTHON_PROTOBUF_ABOVE_BYTES = 200 << 20
#: TensorFlow function calls tf2onnx 1.17 passes through unconverted (a layer running a tf.function of its own)
FUNCTION_CALLS = ("PartitionedCall", "StatefulPartitionedCall")


def weights_bytes(saved_model_dir):
    folder = os.path.join(saved_model_dir, "variables")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) if os.path.isdir(folder) else 0


def convert_in_child(saved_model_dir, path, opset=DEFAULT_OPSET):
    """``convert`` in a child process (export/child.py); for big models with protobuf's pure-Python backend."""
    from export import child

    child.run("the ONNX conversion", convert, saved_model_dir, path, opset,
              pure_python_protobuf=weights_bytes(saved_model_dir) > PURE_PYTHON_PROTOBUF_ABOVE_BYTES)


def build(job, fmt, path):
    """The float32 ONNX file of the export's SavedModel (``job.out``)."""
    convert_in_child(job.out, path, job.options.opset)
    return {}


def build_float16(job, fmt, path):
    from export import child

    child.run(f"the ONNX float16 conversion of {job.src.name}", to_float16, float_file(job), path)
    return {}


def build_int8(job, fmt, path):
    """Full-integer ONNX (QDQ) with its per-layer report, and float layers where a budget asks (export/int8.py)."""
    from export import child, int8

    checks = job.int8_checks("onnx")
    details = child.run(f"the ONNX int8 quantization of {job.src.name}", int8.onnx_int8, float_file(job), path,
                        job.representative, *(checks[k] for k in ("debug_images", "decision", "budget", "scratch")))
    return {**details, "calibration": job.calibration}


def float_file(job):
    """The float32 ONNX file the float16 and int8 ones derive from: the export's, else one in scratch."""
    path = job.artifact_path("onnx")
    if not os.path.exists(path):
        path = os.path.join(job.scratch, "float.onnx")
        if not os.path.exists(path):
            convert_in_child(job.out, path, job.options.opset)
    return path


def convert(saved_model_dir, path, opset=DEFAULT_OPSET):
    """Convert the SavedModel's frozen ``probabilities`` graph (input ``images``, output ``probabilities``)."""
    try:
        with replaced_atomically(path, ".onnx") as tmp:
            left = sorted(_convert(saved_model_dir, tmp, opset) & set(FUNCTION_CALLS))
            if left:  # tf2onnx passes ops it cannot convert through as they are; ONNX Runtime refuses the file
                raise CnnkitError(f"tf2onnx left TensorFlow ops ONNX Runtime cannot run ({', '.join(left)}: a "
                                  "layer that runs a function of its own, e.g. one compiled with XLA); export "
                                  "--tflite, or replace that layer")
    except CnnkitError:
        raise
    except Exception as err:
        raise CnnkitError(f"ONNX conversion failed (opset {opset}): {str(err).splitlines()[0][:300]}") from None


def _convert(saved_model_dir, path, opset):
    """Write the ONNX file; returns the op types in it. Measured stage by stage (2 cores, 24 GB):

    - tf2onnx's own route (``tf_loader.from_saved_model``, then every optimizer pass) peaked at 3.0 GB for
      ResNet-18 at 64x64 (46 MB of weights), 3.6 GB for DenseNet-201 and past 24 GB for VGG-16: its loader
      freezes through Grappler and its passes copy every weight per pass. This route: 1.3 GB, 1.8 GB, and
      twice as fast, with the same nodes and outputs (DenseNet-201: 613 nodes either way);
    - freezing: TensorFlow's ``convert_variables_to_constants_v2`` copies the weights four times over (the
      variable values, the frozen GraphDef, a function built from it, its GraphDef again: 5.7 GB peak on
      VGG-19, 548 MB of weights). Only the first two are needed, taken here from the same steps inside it (2.5 GB);
    - only the optimizer passes that change what ONNX Runtime runs are applied (NHWC transposes folded into
      the convolutions, back-to-back and identity nodes removed); ONNX Runtime folds constants itself when it
      loads the model;
    - with protobuf's upb backend a replaced weight stays in its message's arena until the whole graph is
      freed: on VGG-19 the passes and ``make_model`` then add 4 GB. ``convert_in_child`` runs big models with
      the pure-Python backend (faster there too: 20 s instead of 60 s; slower on small ones, so only above
      PURE_PYTHON_PROTOBUF_ABOVE_BYTES). VGG-19 then peaks at 4.0 GB instead of 8.6 GB.
    """
    import gc

    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants
    from tf2onnx import optimizer, tfonnx
    from tf2onnx.optimizer.back_to_back_optimizer import BackToBackOptimizer
    from tf2onnx.optimizer.identity_optimizer import IdentityOptimizer
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    loaded = tf.saved_model.load(saved_model_dir)
    function = loaded.signatures["probabilities"]
    # convert_variables_to_constants_v2's first two steps (TensorFlow is pinned to 2.21): the variables'
    # values, then the GraphDef with constants in their place
    values = convert_to_constants._FunctionConverterDataInEager(  # noqa: SLF001
        func=function, lower_control_flow=True, aggressive_inlining=True)
    graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=values)  # noqa: SLF001
    (inputs,) = [t.name for t in function.inputs[:len(tf.nest.flatten(function.structured_input_signature))]]
    (outputs,) = [t.name for t in function.outputs]
    del loaded, function, values
    gc.collect()
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        del graph_def
        onnx_graph = tfonnx.process_tf_graph(graph, opset=opset, input_names=[inputs], output_names=[outputs],
                                             tensors_to_rename={inputs: "images", outputs: "probabilities"})
    del graph
    gc.collect()
    onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=False, optimizers={
        "optimize_transpose": TransposeOptimizer, "remove_identity": IdentityOptimizer,
        "remove_back_to_back": BackToBackOptimizer})
    model = onnx_graph.make_model("converted by cnnkit from the probabilities signature")
    del onnx_graph
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return {node.op_type for node in model.graph.node}


class Runner:
    """Runs an ``.onnx`` file with ONNX Runtime on the CPU; float32 pixel values 0..255 in."""

    def __init__(self, path, threads=2):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.input_shape = tuple(int(d) for d in self.session.get_inputs()[0].shape[1:])
        self.classes = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, images):
        return self.session.run(None, {self.input: np.asarray(images, np.float32)})[0]


def to_float16(float_path, path):
    """Half-precision weights and arithmetic (onnxconverter-common), float32 input and output as in the float
    model; ONNX Runtime runs it on CPUs too (casting to float32 where it has no half-precision kernel)."""
    import warnings

    import onnx
    from onnxconverter_common import float16

    model = onnx.load(float_path)
    with warnings.catch_warnings():  # "the float32 number 4e-08 will be truncated to 1e-07": what half means
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(model, keep_io_types=True)
    with replaced_atomically(path, ".onnx") as tmp:
        onnx.save(model, tmp)
    return path


def quantize_int8(float_path, path, representative, nodes_to_exclude=(), calibration_cache=None):
    """Static int8 quantization (QDQ format) with ONNX Runtime, calibrated on ``representative`` images, with
    ``nodes_to_exclude`` left in float; ``calibration_cache``: a file that keeps the calibrated ranges for the next
    call (export/int8.py quantizes the same model several times)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if representative is None or not len(representative):
        raise CnnkitError("ONNX int8 needs calibration images: export a training run or give --calibration-data")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": np.asarray(x, np.float32)[None]} for x in representative])

        def get_next(self):
            return next(self.items, None)

    with replaced_atomically(path, ".onnx") as tmp:
        # uint8 weights and activations: on x86 without VNNI (AVX2, AVX-512) ONNX Runtime's u8s8 kernels can
        # saturate; measured on LeNet-5/digits: s8 weights agreed 98.1% (accuracy -1.1 pt), u8 weights 99.6%
        quantize_static(float_path, tmp, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8, per_channel=False, nodes_to_exclude=list(nodes_to_exclude),
                        calibration_cache_path=calibration_cache)
    return path
