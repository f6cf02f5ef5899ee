"""TFLite Model Metadata: what phone runtimes read to use a ``.tflite`` with no code of the app's own.

MediaPipe Tasks' ``ImageClassifier`` (Android, iOS, web, Python), the TFLite Task Library and Android
Studio's ML Model Binding read the TFLite Model Metadata schema, not custom entries: the input's image
properties and normalisation, the output's label file. This module writes that metadata with the
schema's generated Python bindings (shipped in ``mediapipe``, the same file tflite-support generates)
and packs it the way the schema's populator does:

- the ``ModelMetadata`` flatbuffer (file identifier ``M001``) in a model buffer named by a metadata
  entry ``TFLITE_METADATA``;
- the associated files (``labels.txt``, ``TENSOR_AXIS_LABELS`` of the output) as a zip archive appended
  to the model (TFLite ignores the bytes after the flatbuffer; the runtimes open the model as a zip).

cnnkit's graphs take pixel values 0..255 and normalise inside the graph, so the input's
``NormalizationOptions`` are mean 0, std 1: a runtime that feeds (pixel - mean) / std feeds the pixels.
"""
import io
import zipfile

from keras_cnns.errors import CnnkitError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
#: every field written here exists since version 1.0.0 of the metadata schema
MIN_PARSER_VERSION = "1.0.0"


def _schema():
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    except ImportError:
        raise CnnkitError("writing TFLite metadata needs the mediapipe package: pip install mediapipe==1.2.2") from None
    return schema


def _tensor(m, name, description, kind, properties, low, high):
    """A ``TensorMetadataT`` with its content properties (``kind``: a ContentProperties member) and range."""
    tensor = m.TensorMetadataT()
    tensor.name, tensor.description = name, description
    tensor.content = m.ContentT()
    tensor.content.contentPropertiesType = kind
    tensor.content.contentProperties = properties
    tensor.stats = m.StatsT()
    tensor.stats.min, tensor.stats.max = [low], [high]
    return tensor


def image_classifier_metadata(name, labels, description="", version="", author="", license=""):
    """The ``ModelMetadata`` flatbuffer (bytes) of an image classifier with one RGB input and one output
    (MediaPipe Tasks refuses grayscale: cnnkit's mobile graphs take RGB, see exporter.rgb_input)."""
    import flatbuffers

    m = _schema()
    properties = m.ImagePropertiesT()
    properties.colorSpace = m.ColorSpaceType.RGB
    image = _tensor(m, "image", "RGB image, pixel values 0..255", m.ContentProperties.ImageProperties,
                    properties, 0.0, 255.0)
    norm = m.ProcessUnitT()
    norm.optionsType = m.ProcessUnitOptions.NormalizationOptions
    norm.options = m.NormalizationOptionsT()
    norm.options.mean, norm.options.std = [0.0], [1.0]  # the graph normalises: feed pixels as they are
    image.processUnits = [norm]

    scores = _tensor(m, "probabilities", f"probability of each of the {len(labels)} classes",
                     m.ContentProperties.FeatureProperties, m.FeaturePropertiesT(), 0.0, 1.0)
    label_file = m.AssociatedFileT()
    label_file.name = LABELS_FILE
    label_file.description = "class names, one per line, in output order"
    label_file.type = m.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [label_file]

    graph = m.SubGraphMetadataT()
    graph.inputTensorMetadata, graph.outputTensorMetadata = [image], [scores]
    model = m.ModelMetadataT()
    model.name, model.description, model.version = name, description, str(version)
    model.author, model.license = author, license
    model.subgraphMetadata = [graph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def model_t(content):
    """A ``.tflite`` flatbuffer as TFLite schema objects (``ModelT``)."""
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)


def name_of(item):
    """A flatbuffer object's ``name``: bytes when read from a file, str when set in Python."""
    return item.name.decode() if isinstance(item.name, bytes) else item.name


def populate(content, metadata, files):
    """The model ``content`` with ``metadata`` (from :func:`image_classifier_metadata`) in its
    ``TFLITE_METADATA`` buffer and ``files`` ({name: bytes}) appended as a zip. Replaces earlier metadata
    and packed files."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = model_t(content)
    buffer = schema.BufferT()
    buffer.data = list(metadata)
    entry = next((e for e in model.metadata or [] if name_of(e) == METADATA_NAME), None)
    if entry is None:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = (model.metadata or []) + [entry]
    else:
        model.buffers[entry.buffer] = buffer
    builder = flatbuffers.Builder(len(content) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def read(content):
    """The ``ModelMetadataT`` of a ``.tflite`` (bytes), or None."""
    m = _schema()
    model = model_t(content)
    for entry in model.metadata or []:
        if name_of(entry) == METADATA_NAME:
            data = bytearray(model.buffers[entry.buffer].data)
            if not m.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
                raise CnnkitError("the model's TFLITE_METADATA is not a ModelMetadata flatbuffer")
            return m.ModelMetadataT.InitFromPackedBuf(data, 0)
    return None


def associated_file(content, name):
    """The bytes of a file packed into the model, or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return archive.read(name) if name in archive.namelist() else None
    except zipfile.BadZipFile:
        return None


def labels(content):
    """The output tensor's ``TENSOR_AXIS_LABELS`` file as a list of class names, or None."""
    try:
        meta = read(content)
    except CnnkitError:
        return None
    if meta is None:
        return None
    m = _schema()
    for tensor in meta.subgraphMetadata[0].outputTensorMetadata or []:
        for file in tensor.associatedFiles or []:
            if file.type == m.AssociatedFileType.TENSOR_AXIS_LABELS:
                data = associated_file(content, name_of(file))
                return data.decode("utf-8").splitlines() if data is not None else None
    return None
