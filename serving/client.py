"""Clients: the same calls against TF Serving or the embedded server (REST or gRPC), or a local artifact.

::

    from serving import client
    c = client.connect("http://localhost:8501")            # or "localhost:8500" with grpc=True
    c.status("lenet5"); c.metadata("lenet5")
    c.classify("lenet5", [open("7.png", "rb").read()])     # -> [Prediction(label, score, top, ...)]
    LocalModel("exports/lenet5/1").classify([...])         # no server: export.local, the fastest exact artifact

``predict_files`` is what ``cnnkit predict`` prints, from a server or a LocalModel.
"""
import base64

import numpy as np

from export.local import InvalidInput, LocalModel, Prediction, predictions
from export.savedmodel import BYTES_SIGNATURE
from keras_cnns.errors import CnnkitError

__all__ = ["connect", "RestClient", "GrpcClient", "predict_files", "LocalModel", "Prediction", "InvalidInput"]

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
        return predictions(model, version, [r["top_labels"] for r in rows], [r["scores"] for r in rows], top_k)


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
        return predictions(model, response.model_spec.version.value, out["top_labels"], out["scores"], top_k)


def connect(url, grpc=False, timeout=60):
    """A client of a model server: REST at an ``http(s)://`` URL, or gRPC at ``HOST:PORT``."""
    if grpc and "://" in url:
        raise CnnkitError(f"--grpc takes --server HOST:PORT (e.g. localhost:8500), not a URL: {url}")
    if not grpc and not url.startswith(("http://", "https://")):
        raise CnnkitError(f"--server {url} is not a URL: REST needs http://{url} (or add --grpc for gRPC on "
                          "HOST:PORT)")
    return GrpcClient(url, timeout) if grpc else RestClient(url, timeout)


def predict_files(paths, model, server=None, grpc=False, version=None, top_k=5, runtime="auto", weights=None,
                  budget=None, on_choice=None):
    """Classify image files: on a server (``model`` is its name) or locally (``model`` is a path, run by
    ``runtime``, see ``pick_artifact``; ``auto`` chooses within ``budget``, an export.choice.Budget, and calls
    ``on_choice(choice)`` with the export.choice.Choice it made).

    Returns [(path, Prediction or InvalidInput)]: an unreadable or corrupt file is reported in its row
    and the others are still classified; an unreachable server or unknown model raises.
    """
    runner = connect(server, grpc) if server else LocalModel(model, runtime, weights, budget)
    if not server and runner.choice is not None and on_choice:
        on_choice(runner.choice)
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
