"""TF Serving's API answers both protocols share: model status, metadata and Classify, built as TF Serving's
own protos. The gRPC service (grpc_api.py) sends them as they are; the REST API (rest.py) renders them as JSON,
so importing the REST server imports no gRPC."""
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from export.savedmodel import CLASSIFY_METHOD
from serving.errors import invalid


def status_response(repository, name, version=None):
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, code, message in repository.status(name, version):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        entry.status.error_code = code_value(code)
        entry.status.error_message = message
    return response


def code_value(code):
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Value(code)


def signature_map(servable):
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
        signatures.signature_def[key].CopyFrom(signature_def)
    return signatures


def metadata_response(servable):
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(signature_map(servable))
    return response


def classify(servable, signature, serialized_examples):
    """Run a classification signature on serialized tf.train.Examples -> (classes, scores) arrays."""
    signature = signature or "serving_default"
    signature_def = servable.signature_defs.get(signature)
    if signature_def is None or signature_def.method_name != CLASSIFY_METHOD:
        was = signature_def.method_name if signature_def is not None else "no such signature"
        raise invalid(f"Expected classification signature method_name to be {CLASSIFY_METHOD}. Was: {was}")
    (input_name,) = servable.input_specs(signature)
    outputs = servable.predict(signature, {input_name: list(serialized_examples)})
    return outputs["classes"], outputs["scores"]
