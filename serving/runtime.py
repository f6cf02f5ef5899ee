"""A served version's model run on the fastest artifact of its export within the accuracy budget, not only its
SavedModel (issues 24 and 43).

TF Serving runs the SavedModel; on a CPU, LiteRT, ONNX Runtime or OpenVINO reading the export's own float32
file is often several times faster at batch 1. ``cnnkit serve --runtime auto`` (the default) therefore splits
each of the export's signatures in three:

1. the SavedModel's own input half, in TensorFlow: images cast to float32 pixels, or encoded images decoded and
   resized by the export's ``_decode`` function (the image contract and the pixel budget, exactly as TF Serving
   runs them), Examples parsed first for ``classify``;
2. the model, in the artifact's runtime (export/formats.py): float32 pixels -> probabilities, an exact artifact
   (the Keras model's answers within 1e-4) or a low-precision one whose answers the parity report found within
   the budget (export/choice.py);
3. the SavedModel's outputs computed from those probabilities: classes, scores, top classes and labels (ties
   ranked as ``tf.math.top_k`` ranks them: the lower class first).

The API, the signatures, their metadata and the answers stay the SavedModel's; a SavedModel cnnkit did not write
(no parity report, or no ``_decode``) and any other signature run in TensorFlow.
"""
import logging
import os
import threading

import numpy as np

from export.savedmodel import IMAGE_FEATURE, TOP_K

log = logging.getLogger("serving")
#: the signatures this module knows how to split, and what each returns
PIXEL_SIGNATURES = {"serving_default", "serving_uint8", "serving_bytes", "probabilities"}
OUTPUTS = {"probabilities", "classes", "scores", "top_classes", "top_labels", "labels"}


def choices():
    """--runtime choices of ``cnnkit serve``: those of ``cnnkit predict`` but MediaPipe (it decodes by itself)."""
    from export.local import runtimes

    return tuple(r for r in runtimes() if r != "mediapipe")


def cpu_threads():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ArtifactModel:
    """``signatures`` ({name: callable(**tensors) -> {output: array}}) of a version run on its artifact ``kind``
    at ``path``; ``loaded`` is the version's SavedModel (its input half), ``signature_defs`` its signatures."""

    def __init__(self, kind, path, loaded, signature_defs, labels):
        from export.formats import runner_for

        self.kind = kind
        self._runner = runner_for(kind, path, threads=cpu_threads())
        self._lock = threading.Lock()  # one interpreter or session, called by many request threads
        self._decode = loaded._decode
        self._labels = np.array([label.encode("utf-8") for label in labels], dtype=object)
        self._k = min(TOP_K, len(labels))
        self.signatures = {}
        for name, sig in signature_defs.items():
            outputs = set(sig.outputs)
            if name in PIXEL_SIGNATURES and outputs <= OUTPUTS or name == "classify" and outputs == {"classes",
                                                                                                     "scores"}:
                self.signatures[name] = self._signature(name, sorted(outputs))

    def _signature(self, name, outputs):
        import tensorflow as tf

        def pixels(**inputs):
            (value,) = inputs.values()
            if name == "serving_bytes":
                return self._decode(value).numpy()
            if name == "classify":
                parsed = tf.io.parse_example(value, {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
                return self._decode(parsed[IMAGE_FEATURE]).numpy()
            return np.asarray(value, np.float32)  # images already: no TensorFlow op

        def run(**inputs):
            found = self._outputs(self.probabilities(pixels(**inputs)))
            if name == "classify":
                return {"classes": found["top_labels"], "scores": found["scores"]}
            return {k: found[k] for k in outputs}

        return run

    def probabilities(self, pixels):
        with self._lock:
            return np.asarray(self._runner(pixels), np.float32)

    def _outputs(self, probabilities):
        top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :self._k]
        classes = np.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "classes": classes.astype(np.int64),
                "scores": np.take_along_axis(probabilities, top, axis=-1), "top_classes": top.astype(np.int64),
                "top_labels": self._labels[top], "labels": self._labels[classes]}


def open_fastest(path, runtime, loaded, signature_defs, budget=None):
    """(ArtifactModel or None, why) for the version at ``path``: the artifact ``runtime`` chooses (``auto``: the
    lowest batch-1 latency among the artifacts of its parity report within ``budget``, see export/choice.py), or
    None where that is the SavedModel itself. A runtime named by the user that the version lacks is an error;
    ``auto`` falls back to the SavedModel where the version has no parity report or its chosen file is damaged."""
    from export.local import choose, pick_artifact
    from keras_cnns.errors import ArtifactError, CnnkitError
    from keras_cnns.files import read_json

    if runtime == "savedmodel":
        return None, "--runtime savedmodel"
    if runtime == "auto":
        choice = choose(path, budget)
        kind, artifact, why = choice.kind, choice.path, choice.reason
    else:
        (kind, artifact), why = pick_artifact(path, runtime), f"--runtime {runtime}"
    if kind == "savedmodel":
        return None, why
    meta = os.path.join(path, "export.json")
    if not hasattr(loaded, "_decode") or not os.path.exists(meta):
        why = f"{path} was not exported by this cnnkit (no _decode function or export.json)"
        if runtime != "auto":
            raise CnnkitError(f"--runtime {runtime}: {why}")
        log.warning("%s: serving its SavedModel", why)
        return None, why
    try:
        return ArtifactModel(kind, artifact, loaded, signature_defs, read_json(meta)["labels"]), why
    except ArtifactError as err:  # a damaged file: the version's SavedModel still answers, unless one was forced
        if runtime != "auto":
            raise
        log.warning("%s; serving the SavedModel", err)
        return None, f"{err}; the SavedModel answers instead"
