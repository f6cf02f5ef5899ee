"""Clients: the same calls against TF Serving or the embedded server (REST or gRPC), or a local artifact.

::

    from serving import client
    c = client.connect("http://localhost:8501")            # or "localhost:8500" with grpc=True
    c.status("lenet5"); c.metadata("lenet5")
    c.classify("lenet5", [open("7.png", "rb").read()])     # -> [Prediction(label, score, top, ...)]
    client.LocalModel("exports/lenet5/1").classify([...])  # no server: the export's fastest exact artifact

Given an export version, ``LocalModel`` runs the artifact that its parity report measured fastest at
batch 1 among those that give the Keras model's answers (the SavedModel, float32 TFLite, float32
ONNX; all within 1e-4) — quantized ones only when their file is named. ``predict_files`` is what
``cnnkit predict`` prints.
"""
import base64
import dataclasses
import io
import logging
import os

import numpy as np

from keras_cnns.errors import ArtifactError, CnnkitError
from keras_cnns.registry import is_model_name

log = logging.getLogger("serving.client")

BYTES_SIGNATURE = "serving_bytes"
#: --runtime choice -> the artifact kind it runs; these give the Keras model's answers (float tolerance)
EXACT_KINDS = {"savedmodel": "savedmodel", "tflite": "tflite-float32", "onnx": "onnx"}
#: mediapipe: the float32 TFLite file through MediaPipe Tasks' ImageClassifier, from its metadata alone
RUNTIMES = ("auto",) + tuple(EXACT_KINDS) + ("mediapipe",)


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


def _predictions(model, version, top_labels, top_scores, top_k, runtime=None):
    def text(label):
        return label.decode("utf-8") if isinstance(label, bytes) else str(label)

    results = []
    for labels, scores in zip(top_labels, top_scores):
        top = [(text(label), float(score)) for label, score in zip(labels, scores)][:top_k]
        results.append(Prediction(top[0][0], top[0][1], top, model, version, runtime))
    return results


class RestClient:
    """TF Serving's REST API (``http://host:8501``)."""

    def __init__(self, url, timeout=60):
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _path(self, model, version):
        return f"{self.url}/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")

    def _call(self, method, url, body=None):
        import requests

        not_rest = ("it does not speak REST (HTTP/1.1): is this the gRPC port? TF Serving and `cnnkit serve` "
                    "take REST on 8501 and gRPC on 8500 by default")
        try:
            response = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.Timeout:
            raise CnnkitError(f"the model server at {self.url} did not answer within {self.timeout:g} s") from None
        except requests.ConnectionError as err:
            refused = "BadStatusLine" not in str(err) and "RemoteDisconnected" not in str(err)
            raise CnnkitError(f"cannot reach the model server at {self.url}: " + (
                "nothing answers there (is `cnnkit serve` or TF Serving running, on that host and port?)"
                if refused else not_rest)) from None
        except requests.RequestException as err:
            raise CnnkitError(f"cannot reach the model server at {self.url}: {type(err).__name__}") from None
        try:
            payload = response.json()
        except ValueError:
            if any(c < " " and c not in "\r\n\t" for c in response.text[:200]):  # binary: not an HTTP/1.1 API
                raise CnnkitError(f"the server at {self.url} answered {response.status_code} with no JSON: "
                                  f"{not_rest}") from None
            payload = {"error": response.text[:200]}
        if response.status_code != 200:
            raise (InvalidInput if response.status_code == 400 else CnnkitError)(f"model server answered {response.status_code}: {payload.get('error', payload)}")
        return payload

    def status(self, model, version=None):
        return self._call("GET", self._path(model, version))

    def metadata(self, model, version=None):
        return self._call("GET", self._path(model, version) + "/metadata")

    def predict(self, model, body, version=None):
        """POST a raw ``:predict`` body; returns the response JSON."""
        return self._call("POST", self._path(model, version) + ":predict", body)

    def classify(self, model, images, version=None, top_k=5):
        """Encoded images (bytes) -> [Prediction], through the model's ``serving_bytes`` signature."""
        body = {"signature_name": BYTES_SIGNATURE, "output_filter": ["top_labels", "scores"],
                "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}
        rows = self.predict(model, body, version)["predictions"]
        return _predictions(model, version, [r["top_labels"] for r in rows], [r["scores"] for r in rows], top_k)


class GrpcClient:
    """TF Serving's gRPC API (``host:8500``): PredictionService and ModelService."""

    def __init__(self, target, timeout=60):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target = target.split("://", 1)[-1]
        self.timeout = timeout
        self.channel = grpc.insecure_channel(self.target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                                   ("grpc.max_send_message_length", 64 << 20)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _call(self, stub_method, request):
        import grpc

        try:
            return stub_method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise CnnkitError(f"cannot reach the model server at {self.target}: {err.details()}") from None
            raise (InvalidInput if err.code() == grpc.StatusCode.INVALID_ARGUMENT else CnnkitError)(
                f"model server answered {err.code().name}: {err.details()}") from None

    @staticmethod
    def _spec(spec, model, version, signature=""):
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        if signature:
            spec.signature_name = signature

    def status(self, model, version=None):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version)
        return self._call(self.models.GetModelStatus, request)

    def metadata(self, model, version=None):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version)
        return self._call(self.prediction.GetModelMetadata, request)

    def predict(self, model, inputs, version=None, signature="serving_default", output_filter=()):
        """{input name: array} -> (PredictResponse, {output name: numpy array})."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, model, version, signature)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.prediction.Predict, request)
        return response, {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def classify(self, model, images, version=None, top_k=5):
        response, out = self.predict(model, {"image_bytes": np.array(images, dtype=object)}, version,
                                     BYTES_SIGNATURE, ("top_labels", "scores"))
        return _predictions(model, response.model_spec.version.value, out["top_labels"], out["scores"], top_k)


def connect(url, grpc=False, timeout=60):
    """A client of a model server: REST at an ``http(s)://`` URL, or gRPC at ``HOST:PORT``."""
    if grpc and "://" in url:
        raise CnnkitError(f"--grpc takes --server HOST:PORT (e.g. localhost:8500), not a URL: {url}")
    if not grpc and not url.startswith(("http://", "https://")):
        raise CnnkitError(f"--server {url} is not a URL: REST needs http://{url} (or add --grpc for gRPC on "
                          "HOST:PORT)")
    return GrpcClient(url, timeout) if grpc else RestClient(url, timeout)


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


def pick_artifact(version_dir, runtime="auto"):
    """(kind, path) of the artifact of an export version that ``runtime`` (one of RUNTIMES) runs.

    ``auto``: the lowest batch-1 latency in the version's parity report among the exact artifacts that
    passed it; the SavedModel when there is no report (a SavedModel not written by cnnkit).
    """
    from keras_cnns.training.runs import read_json

    report_path = os.path.join(version_dir, "report.json")
    if runtime == "auto":
        if not os.path.exists(report_path):
            return "savedmodel", version_dir
        meta = read_json(os.path.join(version_dir, "export.json"))
        paths = {a["artifact"]: os.path.join(version_dir, a["path"]) for a in meta["artifacts"]}
        rows = [r for r in read_json(report_path)["artifacts"]
                if r["ok"] and r["kind"] in EXACT_KINDS.values() and r["artifact"] in paths]
        best = min(rows, key=lambda r: r["latency_ms"], default=None)
        return (best["kind"], paths[best["artifact"]]) if best else ("savedmodel", version_dir)
    if runtime not in RUNTIMES:
        raise CnnkitError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    kind = EXACT_KINDS.get(runtime, "tflite-float32")
    if kind == "savedmodel":
        return kind, version_dir
    meta_path = os.path.join(version_dir, "export.json")
    artifacts = read_json(meta_path)["artifacts"] if os.path.exists(meta_path) else []
    found = [a for a in artifacts if a["kind"] == kind]
    if not found:
        flag = "--onnx" if runtime == "onnx" else "--tflite"
        raise CnnkitError(f"{version_dir} has no {kind} artifact; export one with `cnnkit export RUN {flag}`")
    return ("mediapipe" if runtime == "mediapipe" else kind), os.path.join(version_dir, found[0]["path"])


class LocalModel:
    """An exported artifact run in-process: an export version folder (or a model folder of versions,
    newest taken; ``runtime`` picks its artifact, see ``pick_artifact``), a ``.tflite`` file (LiteRT) or
    an ``.onnx`` file (ONNX Runtime); or a zoo model name, run in Keras with ``weights`` (see
    ``export.source.zoo_source``: its ImageNet weights by default)."""

    def __init__(self, path, runtime="auto", weights=None):
        if not os.path.exists(path) and is_model_name(path):
            self._open_zoo(path, runtime, weights)
            return
        if weights:
            raise CnnkitError("--weights goes with a zoo model name as --model; an export has its weights")
        if not os.path.exists(path):
            raise CnnkitError(f"model {path} does not exist; give an export (exports/NAME[/VERSION]), a "
                              ".tflite/.onnx file or a zoo model name")
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
        if os.path.isdir(path):
            self.kind, path = pick_artifact(path, runtime)
        elif runtime == "mediapipe" and path.endswith(".tflite"):
            self.kind = "mediapipe"
        elif runtime != "auto":
            raise CnnkitError(f"--runtime chooses among an export's artifacts (or mediapipe for a .tflite); {path} "
                              "is one file, run as it is")
        else:
            self.kind = {".tflite": "tflite", ".onnx": "onnx"}.get(os.path.splitext(path)[1])
            if self.kind is None:
                raise CnnkitError(f"cannot run {path}: expected a SavedModel folder, .tflite or .onnx")
        self.path = path
        from export import exporter

        if self.kind == "savedmodel":
            import tensorflow as tf

            self._fn = exporter.open_artifact("savedmodel", path,
                                              lambda p: tf.saved_model.load(p).signatures[BYTES_SIGNATURE])
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

            self._run = MediaPipeRunner(path)
            self.labels = self._run.labels
            return
        self._run = exporter.runner_for(self.kind, path)
        if self.kind.startswith("tflite"):
            from export.tflite import read_labels

            shape, classes = self._run.input["shape"], self._run.output["shape"][-1]
            self.labels = read_labels(path)
        else:
            shape, classes = self._run.session.get_inputs()[0].shape, self._run.session.get_outputs()[0].shape[-1]
            self.labels = self._labels_beside(version_dir)
        self.input_shape = tuple(int(d) for d in shape[1:])
        self.labels = self.labels or [f"class_{i}" for i in range(int(classes))]

    @staticmethod
    def _labels_beside(version_dir):
        meta = os.path.join(version_dir, "export.json")
        if os.path.exists(meta):
            from keras_cnns.training.runs import read_json

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
                from serving.repository import op_error_message

                raise InvalidInput(f"not a readable image: {op_error_message(err)}") from None
            return _predictions(self.name, self.version, out["top_labels"].numpy(), out["scores"].numpy(), top_k,
                                self.kind)
        if self.kind == "mediapipe":  # MediaPipe resizes the whole image itself, as on a phone
            probabilities = np.stack([self._run.scores(_decode(image, "RGB")) for image in images])
        else:
            probabilities = self._run(np.stack([self._pixels(image) for image in images]))
        top = np.argsort(-probabilities, axis=1)[:, :top_k]
        return _predictions(self.name, self.version, [[self.labels[i] for i in row] for row in top],
                            np.take_along_axis(probabilities, top, axis=1), top_k, self.kind)


def _decode(data, mode):
    """Encoded image bytes -> uint8 array in PIL ``mode``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode))
    except UnidentifiedImageError:
        raise InvalidInput(f"not a readable image: {len(data)} bytes in no image format Pillow knows") from None
    except OSError as err:
        raise InvalidInput(f"not a readable image: {err}") from None


def predict_files(paths, model, server=None, grpc=False, version=None, top_k=5, runtime="auto", weights=None):
    """Classify image files: on a server (``model`` is its name) or locally (``model`` is a path, run by
    ``runtime``, see ``pick_artifact``).

    Returns [(path, Prediction or InvalidInput)]: an unreadable or corrupt file is reported in its row
    and the others are still classified; an unreachable server or unknown model raises.
    """
    runner = connect(server, grpc) if server else LocalModel(model, runtime, weights)
    results = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if server:
                (prediction,) = runner.classify(model, [data], version=version, top_k=top_k)
            else:
                (prediction,) = runner.classify([data], top_k=top_k)
        except OSError as err:
            prediction = InvalidInput(f"cannot read {path}: {err.strerror}")
        except InvalidInput as err:
            prediction = InvalidInput(f"{path}: {err}")
        results.append((path, prediction))
    if not server:
        runner.close()
    return results
