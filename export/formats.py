"""Every export format in one table, and the runtimes that run them.

A ``Format`` row says where the artifact goes in a version folder, how it is built, which runtime opens it and
how closely it must agree with the Keras model. ``plan_formats``, the build, the parity report, ``validate``,
``cnnkit predict`` (``--runtime``) and ``cnnkit bench-infer`` all read this table, so a new format is one
converter module (its ``build`` and runner) plus one row here; a new runtime, one ``Runtime`` row.
"""
import dataclasses
import functools
import os
from typing import Callable

import numpy as np

from export import compress, mediapipe_check, onnx_format, openvino_format, parity, savedmodel, tflite
from keras_cnns.errors import ArtifactError, CnnkitError

#: the --quantize modes: besides float32, what a TFLite file can be (ONNX offers those of its rows)
QUANTIZE = ("none", "dynamic", "float16", "int8", "qat")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How the artifacts of one family are run: ``open(path, threads=N)`` -> a callable float32 pixels (0..255,
    NHWC) -> probabilities, with ``input_shape`` (H, W, C) and ``classes``."""
    name: str
    open: Callable
    #: the export flag that writes its exact artifact (named in an error when there is none)
    flag: str
    #: the file name ending of its artifacts (None: a folder)
    suffix: str = None
    #: the class names a file carries itself (path -> list or None); else export.json's are used
    read_labels: Callable = None
    #: more checks of a parity row, given the artifact's outputs: ``judge(row, fmt, path, outputs, context)``
    judge: Callable = None
    #: more of the report from the version's first artifact of this runtime: ``notes(path) -> dict``
    notes: Callable = None
    #: its apps feed RGB images only (MediaPipe Tasks): a grayscale model's files get an RGB-input graph
    rgb_only: bool = False


@dataclasses.dataclass(frozen=True)
class Format:
    #: the plan's name (``tflite-float16``), also the artifact's kind in export.json and the report
    name: str
    #: the artifact's name: its report row and export.json entry
    artifact: str
    #: where it goes, relative to the version folder ("" = the folder itself: the SavedModel)
    path: str
    #: the key of its Runtime in RUNTIMES
    runtime: str
    #: ``build(job, fmt, path) -> details``: writes the artifact; the details go into its export.json entry
    build: Callable
    #: "float32", "float16" or "bfloat16": held to a largest |difference| of its probabilities from the Keras model's
    #: (``tolerance``); None: a quantized artifact, held to top-1 agreement and accuracy instead (parity.py)
    precision: str = None
    #: the kind stored in export.json when it differs from ``name``
    kind: str = None
    #: written by ``cnnkit export --all``
    in_all: bool = False
    #: fine-tuned with tensorflow-model-optimization first (export/compress.py): needs the run's training data
    compressed: bool = False
    #: needs calibration images
    calibrated: bool = False
    #: gets a per-layer int8 error report (export/int8.py)
    layer_report: bool = False
    #: ``available() -> None`` where it can be written here, else why not (an optional runtime, a CPU feature)
    available: Callable = None

    @property
    def artifact_kind(self):
        return self.kind or self.name

    @property
    def tolerance(self):
        """The largest |difference| allowed from the Keras model's probabilities; None for a quantized artifact."""
        return {"float32": parity.FLOAT_TOLERANCE, "float16": parity.FLOAT16_TOLERANCE,
                "bfloat16": parity.BFLOAT16_TOLERANCE}.get(self.precision)

    @property
    def exact(self):
        """Gives the Keras model's answers (float32): what ``--runtime NAME`` runs."""
        return self.precision == "float32"


def _tflite_notes(path):
    with open(path, "rb") as f:
        compatible, warnings = tflite.gpu_compatibility(f.read())
    return {"tflite_gpu_delegate": {"compatible": compatible, "warnings": warnings[:20]}}


def _open_savedmodel(path, threads=None):
    return savedmodel.load_probabilities(path)


RUNTIMES = {
    "savedmodel": Runtime("savedmodel", _open_savedmodel, "--saved-model"),
    "tflite": Runtime("tflite", tflite.Runner, "--tflite", ".tflite", read_labels=tflite.read_labels,
                      judge=mediapipe_check.judge, notes=_tflite_notes, rgb_only=True),
    "onnx": Runtime("onnx", onnx_format.Runner, "--onnx", ".onnx"),
    "openvino": Runtime("openvino", openvino_format.Runner, "--openvino", ".xml", judge=openvino_format.judge),
}

FLOAT, HALF, BF16 = "float32", "float16", "bfloat16"
#: in this order in plans, export.json and the report
FORMATS = {f.name: f for f in (
    Format("saved_model", "saved_model", "", "savedmodel", savedmodel.build, FLOAT, kind="savedmodel", in_all=True),
    Format("tflite-float32", "tflite_float32", "tflite/model_float32.tflite", "tflite", tflite.build, FLOAT,
           in_all=True),
    Format("tflite-float16", "tflite_float16", "tflite/model_float16.tflite", "tflite", tflite.build, HALF,
           in_all=True),
    Format("tflite-dynamic", "tflite_dynamic", "tflite/model_dynamic.tflite", "tflite", tflite.build, in_all=True,
           layer_report=True),
    Format("tflite-int8", "tflite_int8", "tflite/model_int8.tflite", "tflite", tflite.build, in_all=True,
           calibrated=True, layer_report=True),
    Format("onnx", "onnx", "onnx/model.onnx", "onnx", onnx_format.build, FLOAT, in_all=True),
    Format("onnx-float16", "onnx_float16", "onnx/model_float16.onnx", "onnx", onnx_format.build_float16, HALF,
           in_all=True),
    Format("onnx-int8", "onnx_int8", "onnx/model_int8.onnx", "onnx", onnx_format.build_int8, in_all=True,
           calibrated=True, layer_report=True),
    # OpenVINO IR from the float32 ONNX file; bfloat16 only where the CPU has it (an optional extra)
    Format("openvino", "openvino", "openvino/model.xml", "openvino", openvino_format.build, FLOAT, in_all=True,
           available=openvino_format.missing),
    Format("openvino-bf16", "openvino_bf16", "openvino/model_bf16.xml", "openvino", openvino_format.build, BF16,
           in_all=True, available=openvino_format.bf16_unavailable),
    Format("openvino-int8", "openvino_int8", "openvino/model_int8.xml", "openvino", openvino_format.build_int8,
           in_all=True, calibrated=True, available=openvino_format.nncf_missing),
    # compressed with tensorflow-model-optimization (fine-tuned on the run's training data first)
    Format("tflite-qat", "tflite_qat", "tflite/model_qat.tflite", "tflite", compress.build_tflite, compressed=True),
    Format("tflite-pruned", "tflite_pruned", "tflite/model_pruned.tflite", "tflite", compress.build_tflite,
           compressed=True),
    Format("tflite-clustered", "tflite_clustered", "tflite/model_clustered.tflite", "tflite", compress.build_tflite,
           compressed=True),
)}


def by_kind(kind):
    """The Format of an artifact kind (as export.json and the report name it)."""
    for fmt in FORMATS.values():
        if fmt.artifact_kind == kind:
            return fmt
    raise KeyError(f"no export format of kind {kind!r}")


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


def runtime_of(kind):
    """The Runtime of an artifact kind, or of a runtime's name (a lone file: ``kind_of_file``)."""
    return RUNTIMES[kind] if kind in RUNTIMES else RUNTIMES[by_kind(kind).runtime]


def kind_of_file(path):
    """A lone artifact file is run by the runtime its name ends for (its name stands for the kind)."""
    for runtime in RUNTIMES.values():
        if runtime.suffix and path.endswith(runtime.suffix):
            return runtime.name
    endings = ", ".join(r.suffix for r in RUNTIMES.values() if r.suffix)
    raise CnnkitError(f"cannot run {path}: expected a SavedModel folder or a file ending {endings}")


def runner_for(kind, path, **options):
    """The artifact of ``kind`` at ``path`` opened in its runtime (``options``: e.g. threads=1)."""
    return open_artifact(kind, path, functools.partial(runtime_of(kind).open, **options))


def exact_kinds():
    """{runtime name: the kind of its exact artifact}: what ``--runtime NAME`` runs."""
    return {fmt.runtime: fmt.artifact_kind for fmt in FORMATS.values() if fmt.exact}


def quantize_modes(runtime):
    """The --quantize modes a runtime's formats offer (besides none): ``NAME-MODE`` rows of the table."""
    prefix = f"{runtime}-"
    modes = {f.name[len(prefix):] for f in FORMATS.values() if f.name.startswith(prefix) and not f.exact}
    return tuple(m for m in QUANTIZE if m == "none" or m in modes)


@dataclasses.dataclass
class BuildJob:
    """What a format's ``build`` may use: the source (its Keras model released by then), the version folder
    being written (its SavedModel and keras/model.keras already there), a scratch folder, the plan, the options."""
    src: object
    out: str
    scratch: str
    formats: list
    options: object
    version: int
    #: calibration images (float32 pixels) or None
    representative: object = None
    #: the SavedModel TFLite files come from (RGB input for a grayscale model)
    mobile: str = None
    #: {format name: (None once released, details)} of the compressed models, each saved in scratch/NAME
    compressed: dict = dataclasses.field(default_factory=dict)
    #: where the calibration images come from, how many, warnings (export.json of each full-integer artifact)
    calibration: dict = None
    #: the full-integer formats' per-layer report images, and the automatic mode's images (int8.Decision)
    debug_images: object = None
    decision: object = None
    #: {"tflite" | "onnx" | "openvino": accuracy points a full-integer artifact may lose} (--max-accuracy-drop)
    budget: dict = dataclasses.field(default_factory=dict)

    def int8_checks(self, runtime, rgb=False):
        """What a full-integer format's converter checks (int8.tflite_int8 / int8.onnx_int8 keywords): RGB
        images for a grayscale model's mobile graph (``rgb``)."""
        def colour(images):
            return np.repeat(images[..., :1], 3, axis=-1) if rgb and images is not None else images

        budget = self.budget.get(runtime)
        decision = self.decision if budget is not None else None
        if decision is not None and rgb:
            decision = dataclasses.replace(decision, images=colour(decision.images))
        return {"debug_images": colour(self.debug_images), "decision": decision, "budget": budget,
                "scratch": self.scratch}

    def artifact_path(self, name):
        """Where format ``name``'s artifact goes in the version folder being written."""
        return os.path.join(self.out, FORMATS[name].path)
