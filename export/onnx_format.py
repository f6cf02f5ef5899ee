"""ONNX from the SavedModel's ``probabilities`` signature with tf2onnx, run with ONNX Runtime.

``convert.from_keras`` fails on tf_keras models under TF 2.21, so the SavedModel's signature is frozen
and converted, as ``python -m tf2onnx.convert --saved-model`` does (dynamic batch, chosen opset).
"""
import os

import numpy as np

from keras_cnns.errors import CnnkitError

DEFAULT_OPSET = 17


def convert(saved_model_dir, path, opset=DEFAULT_OPSET):
    """Convert the SavedModel's frozen ``probabilities`` graph (input ``images``, output ``probabilities``)."""
    import tf2onnx
    from tf2onnx import tf_loader

    tmp = f"{path}.tmp-{os.getpid()}.onnx"
    try:
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            saved_model_dir, None, None, tag="serve", signatures=["probabilities"], return_tensors_to_rename=True)
        tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset,
                                       tensors_to_rename=renames, output_path=tmp)
        os.replace(tmp, path)
    except Exception as err:
        raise CnnkitError(f"ONNX conversion failed (opset {opset}): {str(err).splitlines()[0][:300]}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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
