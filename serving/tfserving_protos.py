"""TF Serving's config protos, to parse the files cnnkit writes exactly as ``tensorflow_model_server`` will.

``ModelServerConfig`` ships in ``tensorflow-serving-api``. ``BatchingParameters``
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto) and ``MonitoringConfig``
(tensorflow_serving/config/monitoring_config.proto) do not, so their schemas are declared here with
TF Serving's package, message and field names, numbers and types, in a private descriptor pool.
The text format is keyed by field name, so a file these parse is a file the server parses.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

_F = descriptor_pb2.FieldDescriptorProto

# message -> [(field, number, type, type name, repeated?)]
_SCHEMA = {
    "session_bundle_config.proto": {
        "BatchingParameters": [
            ("max_batch_size", 1, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
            ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
            ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
            ("num_batch_threads", 4, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
            ("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue", False),
            ("allowed_batch_sizes", 6, _F.TYPE_INT64, None, True),
            ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None, False),
        ],
    },
    "monitoring_config.proto": {
        "PrometheusConfig": [
            ("enable", 1, _F.TYPE_BOOL, None, False),
            ("path", 2, _F.TYPE_STRING, None, False),
        ],
        "MonitoringConfig": [
            ("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", False),
        ],
    },
}


def _build():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    classes = {}
    for filename, messages in _SCHEMA.items():
        proto = descriptor_pb2.FileDescriptorProto(name=f"cnnkit/{filename}", package="tensorflow.serving",
                                                   syntax="proto3", dependency=[wrappers.name])
        for message, fields in messages.items():
            desc = proto.message_type.add(name=message)
            for name, number, type_, type_name, repeated in fields:
                field = desc.field.add(name=name, number=number, type=type_,
                                       label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
                if type_name:
                    field.type_name = type_name
        pool.Add(proto)
        for message in messages:
            classes[message] = message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"tensorflow.serving.{message}"))
    return classes


_CLASSES = _build()
BatchingParameters = _CLASSES["BatchingParameters"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
ModelServerConfig = model_server_config_pb2.ModelServerConfig


def parse(text, message_class):
    """Parse TF Serving's text format into ``message_class`` (raises text_format.ParseError)."""
    return text_format.Parse(text, message_class())


def to_text(message):
    return text_format.MessageToString(message)
