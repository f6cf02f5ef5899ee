"""An export run in-process, no server: ``LocalModel`` opens a version's artifact in its runtime (the table in
export/formats.py) and classifies encoded images as the server does (the image contract, keras_cnns.imaging).

Given an export version, it runs the artifact that the parity report measured fastest at batch 1 among those
within the accuracy budget (export/choice.py: the exact ones, and low-precision ones whose answers stay within
it); ``--runtime NAME`` runs a runtime's exact artifact. ``cnnkit predict MODEL`` and
``serving.client.predict_files`` use it.
"""
import dataclasses
import io
import logging
import os

import numpy as np

from export.formats import RUNTIMES, exact_kinds, kind_of_file, open_artifact, runner_for, runtime_of
from export.savedmodel import BYTES_SIGNATURE, op_error_message
from keras_cnns.errors import ArtifactError, CnnkitError
from keras_cnns.imaging import FORMATS
from keras_cnns.registry import is_model_name

log = logging.getLogger("export.local")

def runtimes():
    """The --runtime choices: auto, each runtime with an exact artifact, and mediapipe (the float32 TFLite file
    through MediaPipe Tasks' ImageClassifier, from its metadata alone)."""
    return ("auto",) + tuple(exact_kinds()) + ("mediapipe",)


class InvalidInput(CnnkitError):
    """The server or local model refused this input (a corrupt image): the next one may still work."""


@dataclasses.dataclass
class Prediction:
    label: str
    score: float
    #: [(label, score)], best first
    top: list
    model: str
    version: int = None
    #: the artifact kind that answered, when run locally ("tflite-float32", ...)
    runtime: str = None

    def as_dict(self):
        return {"label": self.label, "score": self.score, "model": self.model, "version": self.version,
                "runtime": self.runtime, "top": [{"label": label, "score": score} for label, score in self.top]}


def predictions(model, version, top_labels, top_scores, top_k, runtime=None):
    def text(label):
        return label.decode("utf-8") if isinstance(label, bytes) else str(label)

    results = []
    for labels, scores in zip(top_labels, top_scores):
        top = [(text(label), float(score)) for label, score in zip(labels, scores)][:top_k]
        results.append(Prediction(top[0][0], top[0][1], top, model, version, runtime))
    return results


def _versions_newest_first(path):
    """The version folders of a model folder, or of the only model in an export base, newest first."""
    def versions(folder):
        return [int(d) for d in os.listdir(folder) if d.isdigit()
                and os.path.exists(os.path.join(folder, d, "saved_model.pb"))]

    if not versions(path):
        models = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                        and versions(os.path.join(path, d)))
        if len(models) != 1:
            raise CnnkitError(f"{path} holds {'models ' + ', '.join(models) if models else 'no exported version'}"
                              f"; give one model's folder (EXPORT_BASE/NAME) or a version folder")
        path = os.path.join(path, models[0])
    return [os.path.join(path, str(v)) for v in sorted(versions(path), reverse=True)]


def pick_artifact(version_dir, runtime="auto", budget=None):
    """(kind, path) of the artifact of an export version that ``runtime`` (one of RUNTIMES) runs.

    ``auto``: the lowest batch-1 latency in the version's parity report among the artifacts that passed it and are
    within ``budget`` (export.choice: exact ones, and low-precision ones whose answers stay within the accuracy
    budget); the SavedModel when there is no report (a SavedModel not written by cnnkit). See ``choose``.
    """
    if runtime == "auto":
        choice = choose(version_dir, budget)
        return choice.kind, choice.path
    return _artifact_of_runtime(version_dir, runtime)


def choose(version_dir, budget=None):
    """The export.choice.Choice of ``auto`` for a version folder (the SavedModel without a parity report)."""
    from export.choice import Choice, choose

    if not os.path.exists(os.path.join(version_dir, "report.json")):
        return Choice("savedmodel", version_dir, "saved_model", "no parity report (not a cnnkit export): the "
                      "SavedModel")
    return choose(version_dir, budget)


def _artifact_of_runtime(version_dir, runtime):
    from keras_cnns.files import read_json

    exact = exact_kinds()
    if runtime not in runtimes():
        raise CnnkitError(f"unknown runtime {runtime!r}; choose from {', '.join(runtimes())}")
    kind = exact.get(runtime, exact["tflite"])
    if kind == "savedmodel":
        return kind, version_dir
    meta_path = os.path.join(version_dir, "export.json")
    artifacts = read_json(meta_path)["artifacts"] if os.path.exists(meta_path) else []
    found = [a for a in artifacts if a["kind"] == kind]
    if not found:
        flag = RUNTIMES["tflite" if runtime == "mediapipe" else runtime].flag
        raise CnnkitError(f"{version_dir} has no {kind} artifact; export one with `cnnkit export RUN {flag}`")
    return ("mediapipe" if runtime == "mediapipe" else kind), os.path.join(version_dir, found[0]["path"])


class LocalModel:
    """An exported artifact run in-process: an export version folder (or a model folder of versions,
    newest taken; ``runtime`` picks its artifact, see ``pick_artifact``), a ``.tflite`` file (LiteRT) or
    an ``.onnx`` file (ONNX Runtime); or a zoo model name, run in Keras with ``weights`` (see
    ``export.source.zoo_source``: its ImageNet weights by default)."""

    def __init__(self, path, runtime="auto", weights=None, budget=None):
        #: the export.choice.Choice that picked the artifact (``auto`` on an export version), else None
        self.choice, self._budget = None, budget
        if not os.path.exists(path) and is_model_name(path):
            self._open_zoo(path, runtime, weights)
            return
        if weights:
            raise CnnkitError("--weights goes with a zoo model name as --model; an export has its weights")
        if not os.path.exists(path):
            raise CnnkitError(f"model {path} does not exist; give an export (exports/NAME[/VERSION]), a "
                              f".tflite/.onnx file or a zoo model name{_near_model_names(path)}")
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
            self._open_newest_good(path, runtime)
            return
        self._open(path, runtime)

    def _open_newest_good(self, path, runtime):
        """Like the server: a newest version that fails to load is passed over (and named) for the one before."""
        broken = []
        for version_dir in _versions_newest_first(path):
            try:
                self._open(version_dir, runtime)
            except ArtifactError as err:
                broken.append(f"version {os.path.basename(version_dir)} ({err})")
                continue
            except CnnkitError:
                raise
            except Exception as err:  # noqa: BLE001 - whatever a damaged artifact raises
                broken.append(f"version {os.path.basename(version_dir)} ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no message'})")
                continue
            if broken:
                log.warning("%s: passed over the broken %s; using version %s", path, ", ".join(broken), self.version)
            return
        raise CnnkitError(f"no version of {path} loads: {', '.join(broken)}")

    def _open_zoo(self, name, runtime, weights):
        if runtime not in ("auto", "keras"):
            raise CnnkitError(f"a zoo model name runs in Keras; --runtime {runtime} needs an export "
                              f"(cnnkit export {name})")
        from export.exporter import keras_reference
        from export.source import zoo_source

        src = zoo_source(name, weights)
        self.kind, self.name, self.version, self.path = "keras", src.name, None, name
        self.input_shape, self.labels = src.input_shape, src.labels
        self._run = keras_reference(src.model, src.preprocessing)

    def _open(self, path, runtime):
        if os.path.isdir(path) and runtime == "auto":
            self.choice = choose(path, self._budget)
            self.kind, path = self.choice.kind, self.choice.path
        elif os.path.isdir(path):
            self.kind, path = pick_artifact(path, runtime)
        elif runtime == "mediapipe" and path.endswith(".tflite"):
            self.kind = "mediapipe"
        elif runtime != "auto":
            raise CnnkitError(f"--runtime chooses among an export's artifacts (or mediapipe for a .tflite); {path} "
                              "is one file, run as it is")
        else:
            self.kind = kind_of_file(path)
        self.path = path
        if self.kind == "savedmodel":  # its own signature decodes and resizes the images, as the server does
            import tensorflow as tf

            self._fn = open_artifact("savedmodel", path, lambda p: tf.saved_model.load(p).signatures[BYTES_SIGNATURE])
            self.name = os.path.basename(os.path.dirname(os.path.abspath(path)))
            self.version = int(os.path.basename(path)) if os.path.basename(path).isdigit() else None
            return
        version_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        exported = os.path.basename(version_dir).isdigit()
        self.version = int(os.path.basename(version_dir)) if exported else None
        self.name = os.path.basename(os.path.dirname(version_dir)) if exported else \
            os.path.splitext(os.path.basename(path))[0]
        if self.kind == "mediapipe":
            from export.tflite import MediaPipeRunner

            self._run = open_artifact("mediapipe", path, MediaPipeRunner)  # a damaged file: one line naming it
            self.labels = self._run.labels
            return
        self._run = runner_for(self.kind, path)
        runtime = runtime_of(self.kind)
        self.input_shape = self._run.input_shape
        self.labels = ((runtime.read_labels(path) if runtime.read_labels else None) or self._labels_beside(version_dir)
                       or [f"class_{i}" for i in range(self._run.classes)])

    @staticmethod
    def _labels_beside(version_dir):
        meta = os.path.join(version_dir, "export.json")
        if os.path.exists(meta):
            from keras_cnns.files import read_json

            return read_json(meta)["labels"]
        return None

    def _pixels(self, image):
        """Decode and resize like the SavedModel's ``serving_bytes`` and MediaPipe Tasks do (keras_cnns.imaging)."""
        from keras_cnns.imaging import resize_numpy

        h, w, c = self.input_shape
        pixels = _decode(image, "L" if c == 1 else "RGB")
        return resize_numpy(pixels.reshape(pixels.shape[:2] + (c,)), (h, w))

    def close(self):
        """Free a MediaPipe classifier now (its own ``__del__`` fails once the interpreter shuts down)."""
        if self.kind == "mediapipe":
            self._run.close()

    def classify(self, images, top_k=5):
        if self.kind == "savedmodel":
            import tensorflow as tf

            try:
                out = self._fn(image_bytes=tf.constant(images, tf.string))
            except tf.errors.InvalidArgumentError as err:
                raise InvalidInput(f"not a readable image: {op_error_message(err)}") from None
            return predictions(self.name, self.version, out["top_labels"].numpy(), out["scores"].numpy(), top_k,
                                self.kind)
        if self.kind == "mediapipe":  # MediaPipe resizes the whole image itself, as on a phone
            probabilities = np.stack([self._run.scores(_decode(image, "RGB")) for image in images])
        else:
            probabilities = self._run(np.stack([self._pixels(image) for image in images]))
        top = np.argsort(-probabilities, axis=1)[:, :top_k]
        return predictions(self.name, self.version, [[self.labels[i] for i in row] for row in top],
                            np.take_along_axis(probabilities, top, axis=1), top_k, self.kind)


def _near_model_names(text):
    """``; did you mean resnet18?`` when ``text`` (no folder in it) is close to zoo model names, else ""."""
    import difflib

    from keras_cnns.registry import list_models

    if os.sep in text or "/" in text:
        return ""
    close = difflib.get_close_matches(text.lower().replace("-", "_"), list_models(), n=3, cutoff=0.6)
    return f" (did you mean the zoo's {', '.join(close)}?)" if close else ""


def _decode(data, mode):
    """Encoded image bytes -> uint8 array in PIL ``mode``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode))
    except UnidentifiedImageError:
        raise InvalidInput(f"not a readable image: {len(data)} bytes in none of the image formats "
                           f"{', '.join(FORMATS)}") from None
    except OSError as err:
        raise InvalidInput(f"not a readable image: {err}") from None


