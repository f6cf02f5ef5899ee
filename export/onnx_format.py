"""ONNX from the SavedModel's ``probabilities`` signature with tf2onnx, run with ONNX Runtime.

``convert.from_keras`` fails on tf_keras models under TF 2.21, so the SavedModel's signature is frozen
and converted, as ``python -m tf2onnx.convert --saved-model`` does (dynamic batch, chosen opset).
"""
import os

import numpy as np

from keras_cnns.errors import CnnkitError

DEFAULT_OPSET = 17
#: Above this many bytes of weights the lean path converts (VGG-16, 528 MB: tf2onnx's own route ran past 24 GB).
LEAN_ABOVE_BYTES = 200 << 20
#: TensorFlow function calls tf2onnx 1.17 passes through unconverted (a layer running a tf.function of its own)
FUNCTION_CALLS = ("PartitionedCall", "StatefulPartitionedCall")


def weights_bytes(saved_model_dir):
    folder = os.path.join(saved_model_dir, "variables")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) if os.path.isdir(folder) else 0


def convert(saved_model_dir, path, opset=DEFAULT_OPSET):
    """Convert the SavedModel's frozen ``probabilities`` graph (input ``images``, output ``probabilities``).
    Returns the route taken: ``tf2onnx`` (its own loader and every optimizer pass) or ``lean`` (big models)."""
    import tf2onnx
    from tf2onnx import tf_loader

    tmp = f"{path}.tmp-{os.getpid()}.onnx"
    route = "lean" if weights_bytes(saved_model_dir) > LEAN_ABOVE_BYTES else "tf2onnx"
    try:
        if route == "lean":
            ops = _convert_lean(saved_model_dir, tmp, opset)
        else:
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                saved_model_dir, None, None, tag="serve", signatures=["probabilities"], return_tensors_to_rename=True)
            model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                      opset=opset, tensors_to_rename=renames, output_path=tmp)
            ops = {node.op_type for node in model.graph.node}
        left = sorted(ops & set(FUNCTION_CALLS))
        if left:  # tf2onnx passes ops it cannot convert through as they are; ONNX Runtime refuses the file
            raise CnnkitError(f"tf2onnx left TensorFlow ops ONNX Runtime cannot run ({', '.join(left)}: a layer "
                              "that runs a function of its own, e.g. one compiled with XLA); export --tflite, "
                              "or replace that layer")
        os.replace(tmp, path)
    except CnnkitError:
        raise
    except Exception as err:
        raise CnnkitError(f"ONNX conversion failed (opset {opset}): {str(err).splitlines()[0][:300]}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return route


def _convert_lean(saved_model_dir, path, opset):
    """The route for big models; returns the ONNX op types written. Measured on VGG-16 (528 MB of weights;
    2 cores, 24 GB): tf2onnx's loader freezes through Grappler (13.9 GB peak), and its ONNX optimizer passes copy every weight once or twice per
    pass (past 16 GB). Here the signature is frozen directly (6.2 GB) and only the passes that change what ONNX
    Runtime runs are applied: NHWC transposes folded into the convolutions, back-to-back and identity nodes
    removed (7.3 GB with the parity check's SavedModel, 48 s).
    ONNX Runtime folds constants itself when it loads the model."""
    import gc

    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tf2onnx import optimizer, tfonnx
    from tf2onnx.optimizer.back_to_back_optimizer import BackToBackOptimizer
    from tf2onnx.optimizer.identity_optimizer import IdentityOptimizer
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    loaded = tf.saved_model.load(saved_model_dir)
    frozen = convert_variables_to_constants_v2(loaded.signatures["probabilities"], aggressive_inlining=True)
    (inputs,) = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    (outputs,) = [t.name for t in frozen.outputs]
    graph_def = frozen.graph.as_graph_def()
    del loaded, frozen
    gc.collect()
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        del graph_def
        onnx_graph = tfonnx.process_tf_graph(graph, opset=opset, input_names=[inputs], output_names=[outputs],
                                             tensors_to_rename={inputs: "images", outputs: "probabilities"})
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

    def __call__(self, images):
        return self.session.run(None, {self.input: np.asarray(images, np.float32)})[0]


def quantize_int8(float_path, path, representative):
    """Static int8 quantization (QDQ format) with ONNX Runtime, calibrated on ``representative`` images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if representative is None or not len(representative):
        raise CnnkitError("ONNX int8 needs calibration images: export a training run or give --calibration-data")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": np.asarray(x, np.float32)[None]} for x in representative])

        def get_next(self):
            return next(self.items, None)

    tmp = f"{path}.tmp-{os.getpid()}.onnx"
    try:
        # uint8 weights and activations: on x86 without VNNI (AVX2, AVX-512) ONNX Runtime's u8s8 kernels can
        # saturate; measured on LeNet-5/digits: s8 weights agreed 98.1% (accuracy -1.1 pt), u8 weights 99.6%
        quantize_static(float_path, tmp, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8, per_channel=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
