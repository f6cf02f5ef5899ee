"""TF Serving's gRPC API on the embedded server: ``PredictionService`` (Predict, GetModelMetadata) and
``ModelService`` (GetModelStatus), with the protos of ``tensorflow-serving-api``.

The status, metadata and Classify answers come from serving/api.py, which the REST API shares.
"""
import logging
import time

import grpc
from tensorflow_serving.apis import classification_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from serving.api import classify, metadata_response, status_response
from serving.errors import ServingError, invalid

ENTRYPOINT = "GRPC"
log = logging.getLogger("serving")


def _version(model_spec):
    if model_spec.HasField("version_label"):
        raise ServingError("NOT_FOUND", f"no version labels are configured for {model_spec.name}; ask for a "
                           "version number")
    return model_spec.version.value if model_spec.HasField("version") else None


def predict(repository, request):
    """A PredictRequest proto -> PredictResponse proto (raises ServingError)."""
    import tensorflow as tf

    servable = repository.get(request.model_spec.name, _version(request.model_spec))
    signature = request.model_spec.signature_name or "serving_default"
    specs = servable.input_specs(signature)
    inputs = {}
    for key, proto in request.inputs.items():
        spec = specs.get(key)
        if spec is not None and proto.dtype != spec.dtype.as_datatype_enum:
            raise invalid(f"input '{key}' is {tf.dtypes.as_dtype(proto.dtype).name} but signature {signature} "
                          f"takes {spec.dtype.name}")
        try:
            inputs[key] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as err:
            raise invalid(f"input '{key}' is not a valid TensorProto: {err}") from None
    outputs = servable.predict(signature, inputs, list(request.output_filter))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


class _Handler:
    def __init__(self, repository, metrics):
        self.repository = repository
        self.metrics = metrics

    def _call(self, api, model, context, fn):
        start = time.perf_counter()
        status = "OK"
        try:
            return fn()
        except ServingError as err:
            status = err.code
            context.abort(getattr(grpc.StatusCode, err.code), err.message)
        except Exception as err:  # a bug, not the client's fault: say so, keep serving
            status = "INTERNAL"
            log.exception("%s failed", api)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        finally:
            self.metrics.observe(self.repository.label(model), api, ENTRYPOINT, status, time.perf_counter() - start)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Handler):
    def Predict(self, request, context):
        return self._call("predict", request.model_spec.name, context, lambda: predict(self.repository, request))

    def Classify(self, request, context):
        def run():
            spec = request.model_spec
            servable = self.repository.get(spec.name, _version(spec))
            which = request.input.WhichOneof("kind")
            if which == "example_list_with_context":
                shared = request.input.example_list_with_context.context
                examples = []
                for example in request.input.example_list_with_context.examples:
                    merged = type(shared)()
                    merged.CopyFrom(shared)
                    merged.MergeFrom(example)
                    examples.append(merged)
            else:
                examples = request.input.example_list.examples
            if not examples:
                raise invalid("the request has no examples")
            classes, scores = classify(servable, spec.signature_name, [e.SerializeToString() for e in examples])
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = spec.signature_name
            for labels, values in zip(classes, scores):
                result = response.result.classifications.add()
                for label, score in zip(labels, values):
                    result.classes.add(label=label.decode("utf-8"), score=float(score))
            return response

        return self._call("classify", request.model_spec.name, context, run)

    def GetModelMetadata(self, request, context):
        def run():
            fields = set(request.metadata_field)
            if fields != {"signature_def"}:
                raise invalid(f"metadata_field must be ['signature_def'], got {sorted(fields)}")
            return metadata_response(self.repository.get(request.model_spec.name, _version(request.model_spec)))

        return self._call("metadata", request.model_spec.name, context, run)


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Handler):
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        return self._call("status", spec.name, context,
                          lambda: status_response(self.repository, spec.name, _version(spec)))


def add_services(server, repository, metrics):
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(repository, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository, metrics), server)
