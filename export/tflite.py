"""TFLite (mobile) conversion from the SavedModel's ``probabilities`` signature, run with LiteRT.

Variants: ``float32``; ``float16`` (weights in half precision); ``dynamic`` (int8 weights, float
activations); ``int8`` (full integer: uint8 pixel input, uint8 output, calibrated on representative
images; ``io_type="int8"`` for int8 in/out); ``qat`` (integer kernels with the ranges a quantization-aware model learnt; float in/out). Only TFLite builtin ops are
allowed (no Flex ops that bloat a mobile app). Every file carries the standard TFLite Model Metadata
(image properties, normalisation, the labels as the output's label file: see metadata.py), so MediaPipe
Tasks and the TFLite Task Library run it with no code; :class:`MediaPipeRunner` runs it that way.
"""
import contextlib
import io

import numpy as np

from export import int8, metadata
from export.metadata import model_t
from keras_cnns.errors import CnnkitError

VARIANTS = ("float32", "float16", "dynamic", "int8", "qat")
#: the metadata entry in which cnnkit before 0.2 stored the labels (still read)
LEGACY_LABELS_METADATA = "labels.txt"


def convert(saved_model_dir, variant, representative=None, io_type="uint8", int8_checks=None):
    """(bytes of the ``.tflite`` model, what export.json says of it). ``representative``: uint8-range images
    (N, H, W, C) for int8, whose input and output are ``io_type`` (uint8 or int8); ``int8_checks``: the keywords
    of ``int8.tflite_int8`` (the per-layer report's images, the automatic mode's budget and decision images)."""
    import tensorflow as tf

    if variant not in VARIANTS:
        raise CnnkitError(f"unknown TFLite variant {variant!r}; choose from {', '.join(VARIANTS)}")
    details = {}
    try:
        if variant == "int8":
            if representative is None or not len(representative):
                raise CnnkitError("int8 quantization needs calibration images: export a training run or give "
                                  "--calibration-data SPEC")
            if io_type not in ("uint8", "int8"):
                raise CnnkitError(f"int8 models take uint8 or int8 input/output, not {io_type!r}")
            content, details = int8.tflite_int8(saved_model_dir, representative, io_type, **(int8_checks or {}))
        else:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["probabilities"])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            if variant != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                converter.target_spec.supported_types = [tf.float16]
            content = converter.convert()
            if variant == "dynamic" and (int8_checks or {}).get("debug_images") is not None:
                converter.optimizations = []
                details = {"int8_layers": int8.tflite_tensor_errors(converter.convert(), content,
                                                                    int8_checks["debug_images"]),
                           "int8_layers_measured_on": int(len(int8_checks["debug_images"]))}
    except CnnkitError:
        raise
    except Exception as err:  # ConverterError lists the ops that are not builtins
        first = next((line.strip() for line in str(err).splitlines() if "op" in line.lower()), str(err)[:300])
        raise CnnkitError(f"the model cannot be expressed as TFLite builtin ops ({variant}): {first}") from None
    check_builtin_only(content)
    return content, details


def convert_file(saved_model_dir, variant, path, labels, name, description="", version="", author="", license="",
                 representative=None, io_type="uint8", int8_checks=None):
    """``convert``, then the standard metadata (``add_metadata``), written to ``path``: what the exporter runs
    in a child process. Returns the details for export.json."""
    content, details = convert(saved_model_dir, variant, representative, io_type, int8_checks)
    write(add_metadata(content, labels, name, description, version, author, license), path)
    return details


def build(job, fmt, path):
    """A format's TFLite file (``tflite-MODE``) from the export's mobile graph, in a child process."""
    details = convert_for(job, job.mobile, fmt.name, fmt.name.split("-", 1)[1], path)
    if fmt.calibrated:
        details["calibration"] = job.calibration
    return io_details(job, fmt.calibrated, details)


def convert_for(job, graph, fmt, variant, path):
    """``convert_file`` of the SavedModel ``graph`` in a child process (export/child.py), with the export's
    labels and metadata; calibrated on ``job.representative`` (RGB for a grayscale model's RGB mobile graph).
    Returns the details for export.json (a full-integer file's per-layer report and automatic mode)."""
    from export import child

    src = job.src
    rgb = src.input_shape[-1] == 1
    representative = job.representative
    if representative is not None and rgb:
        representative = np.repeat(representative[..., :1], 3, axis=-1)
    checks = job.int8_checks("tflite", rgb) if variant in ("int8", "dynamic") else None
    description = (f"{src.name}: image classifier of {len(src.labels)} classes exported by cnnkit ({fmt}) from "
                   f"{src.origin}" + (f", trained on {src.data_spec}" if src.data_spec else ""))
    return child.run(f"the TFLite conversion ({variant}) of {src.name}", convert_file, graph, variant, path,
                     src.labels, src.name, description, job.version, job.options.author, job.options.license,
                     representative, job.options.int8_io, checks)


def io_details(job, integer, details=None):
    """What export.json says of a TFLite file's input: RGB for a grayscale model, int8 when asked for."""
    details = dict(details or {})
    if job.src.input_shape[-1] == 1:
        details["input"] = ("RGB (the graph converts to gray: MediaPipe Tasks and the TFLite Task Library take RGB "
                            "images only)")
    if integer and job.options.int8_io == "int8":
        details["int8_io"] = True
    return details


def kernel_tensors(content):
    """The constant weight tensor of every conv, depthwise conv and fully-connected op, read from the file's
    buffers (float32, float16 or int8 as stored; weights produced by another op at run time are skipped)."""
    from tensorflow.lite.python import schema_py_generated as schema

    ops, types = schema.BuiltinOperator, schema.TensorType
    wanted = {ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.FULLY_CONNECTED}
    dtypes = {types.FLOAT32: np.float32, types.FLOAT16: np.float16, types.INT8: np.int8}
    model = model_t(content)
    out = []
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) not in wanted:
                continue
            tensor = graph.tensors[op.inputs[1]]
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data) and tensor.type in dtypes:
                out.append(np.frombuffer(bytes(data), dtypes[tensor.type]).reshape(tensor.shape))
    return out


def check_builtin_only(content):
    """Raise if the model holds a custom or Flex (select TF) op."""
    custom = sorted({(code.customCode or b"").decode() for code in model_t(content).operatorCodes if code.customCode})
    if custom:
        raise CnnkitError(f"the TFLite model needs non-builtin ops: {', '.join(custom)}")


def op_names(content):
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return sorted({names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
                   for code in model_t(content).operatorCodes})


def add_metadata(content, labels, name, description="", version="", author="", license=""):
    """The model with standard TFLite Model Metadata and ``labels`` packed as its output's label file."""
    meta = metadata.image_classifier_metadata(name, labels, description, version, author, license)
    return metadata.populate(content, meta, {metadata.LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8")})


def read_labels(path):
    """The class names of a ``.tflite``: its standard metadata's label file, else the entry written by
    cnnkit before 0.2; None when it has neither."""
    with open(path, "rb") as f:
        content = f.read()
    found = metadata.labels(content)
    if found is not None:
        return found
    model = model_t(content)
    for entry in model.metadata or []:
        if metadata.name_of(entry) == LEGACY_LABELS_METADATA:
            return bytes(model.buffers[entry.buffer].data).decode("utf-8").splitlines()
    return None


def gpu_compatibility(content):
    """(compatible, warnings) from the LiteRT analyzer's GPU-delegate check."""
    import tensorflow as tf

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=True)
    warnings = [line.strip() for line in out.getvalue().splitlines() if "GPU COMPATIBILITY WARNING" in line
                or "not supported" in line.lower()]
    return not warnings, warnings


class Runner:
    """Runs a ``.tflite`` file in the LiteRT interpreter (the runtime a phone uses), any batch size.

    Takes float32 pixel values 0..255; quantizes them for an integer input and dequantizes the output.
    """

    def __init__(self, path, threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])
        self.classes = int(self.output["shape"][-1])
        self._batch = None

    def __call__(self, images):
        images = _channels(np.asarray(images, np.float32), self.input["shape"][-1])
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], images.shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = len(images)
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            images = np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        result = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        return result


def _channels(images, channels):
    """Grayscale images for an RGB-input model (the mobile form of a grayscale model) repeat their channel."""
    if images.shape[-1] == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    return images


class MediaPipeRunner:
    """Runs a ``.tflite`` the way a phone app does with MediaPipe Tasks' ``ImageClassifier``: from the
    file's metadata alone (normalisation, labels), on uint8 RGB images. Returns the probabilities in label
    order, like :class:`Runner`, and keeps the category names MediaPipe reported in ``names``."""

    def __init__(self, path):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise CnnkitError("the mediapipe runtime needs the mediapipe package: pip install mediapipe==1.2.2") from None
        self._mp = mp
        self.labels = read_labels(path) or []
        self._index = {name: i for i, name in enumerate(self.labels)}
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path),
                                                max_results=len(self.labels) or -1)
        try:
            self.classifier = vision.ImageClassifier.create_from_options(options)
        except Exception as err:  # MediaPipe raises RuntimeError/ValueError with its status message
            raise CnnkitError(f"MediaPipe Tasks refuses {path}: {str(err).splitlines()[0]}") from None
        self.names = set()

    def close(self):
        """Close before the interpreter exits: MediaPipe's own ``__del__`` fails during shutdown."""
        self.classifier.close()

    def scores(self, image):
        """One uint8 RGB image of any size (MediaPipe resizes it) -> probabilities in label order."""
        out = np.zeros(len(self.labels), np.float32)
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        for category in self.classifier.classify(frame).classifications[0].categories:
            self.names.add(category.category_name)
            if category.category_name in self._index:
                out[self._index[category.category_name]] = category.score
        return out

    def __call__(self, images):
        images = _channels(np.asarray(images, np.float32), 3)
        return np.stack([self.scores(image) for image in np.clip(np.round(images), 0, 255).astype(np.uint8)])


def write(content, path):
    from keras_cnns.files import write_atomic

    return write_atomic(path, content)
