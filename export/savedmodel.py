"""The SavedModel: the one canonical static graph, with named serving signatures, runnable without cnnkit.

Signatures (all take pixel values 0..255 and normalise inside the graph):

- ``serving_default``: ``images`` float32 [batch, H, W, C] -> ``probabilities``, ``classes`` (int64),
  ``scores``, ``top_classes`` and ``top_labels`` (the top k), ``labels`` (strings of ``classes``);
- ``serving_uint8``: the same for uint8 images;
- ``serving_bytes``: ``image_bytes`` tf.string [batch] of encoded JPEG/PNG/GIF/BMP, decoded and
  resized in the graph by the image contract (``keras_cnns.imaging``: what a phone app with MediaPipe Tasks does) -
  what a TF Serving REST client sends as ``{"b64": ...}``;
- ``classify``: a classification signature (method ``tensorflow/serving/classify``) for TF Serving's
  Classify API and REST ``:classify``: ``inputs``, serialized ``tf.train.Example`` s with the encoded
  image in feature ``image/encoded`` -> ``classes`` (top-k label strings) and ``scores``;
- ``probabilities``: float32 images -> probabilities only: what TFLite and ONNX are derived from.

Encoded images are checked before they are decoded: the width and height in the file's header (JPEG,
PNG, GIF, BMP, WebP) must fit the export's pixel budget (``max_megapixels``, 40 by default), or the
request fails with InvalidArgument ("image is 20000x20000, over the 40 MP limit") at the cost of reading
a header. A tiny file that decodes to gigabytes cannot take the server down, under TF Serving too.
GIFs are classified by their first frame, but TensorFlow inflates every frame: a GIF's frames are counted
by walking its blocks, and more than 100, or frames x width x height over the budget, are refused too.
"""
import os

CLASSIFY_METHOD = "tensorflow/serving/classify"
IMAGE_FEATURE = "image/encoded"
#: the signature that takes encoded images (decoded and resized in the graph: the image contract)
BYTES_SIGNATURE = "serving_bytes"
TOP_K = 5
#: default pixel budget of an encoded image, in megapixels (a 12 MP phone photo fits three times over)
MAX_MEGAPIXELS = 40.0
#: frames a GIF may hold (all of them are inflated, though only the first is used)
MAX_GIF_FRAMES = 100


def image_size(data):
    """tf op: (width, height) int64 that an encoded image's header declares, read without decoding;
    (0, 0) for a format it does not know (the decoder then refuses it). JPEG dimensions come from
    ``tf.io.extract_jpeg_shape``, which reads the markers up to the frame header."""
    import tensorflow as tf

    padded = tf.strings.substr(data, 0, 32) + tf.constant(b"\0" * 32)  # a short file reads as zeros
    b = tf.cast(tf.io.decode_raw(padded, tf.uint8)[:32], tf.int64)

    def le(start, count, bits=None):  # little-endian unsigned integer of ``count`` bytes
        value = tf.reduce_sum(b[start:start + count] * tf.constant([256 ** i for i in range(count)], tf.int64))
        return value % (2 ** bits) if bits else value

    def be(start, count):
        return tf.reduce_sum(b[start:start + count] * tf.constant([256 ** i for i in reversed(range(count))], tf.int64))

    def starts(magic, at=0):
        return tf.equal(tf.strings.substr(padded, at, len(magic)), magic)

    def signed32(value):
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

    vp8l = (le(21, 4) % 2 ** 14 + 1, le(21, 4) // 2 ** 14 % 2 ** 14 + 1)
    sizes = [  # (is this format, (width, height))
        (starts(b"\x89PNG\r\n\x1a\n"), (be(16, 4), be(20, 4))),
        (starts(b"GIF8"), (le(6, 2), le(8, 2))),
        (starts(b"BM"), (signed32(le(18, 4)), signed32(le(22, 4)))),
        (starts(b"RIFF") & starts(b"WEBPVP8X", 8), (le(24, 3) + 1, le(27, 3) + 1)),
        (starts(b"RIFF") & starts(b"WEBPVP8L", 8), vp8l),
        (starts(b"RIFF") & starts(b"WEBPVP8 ", 8), (le(26, 2, 14), le(28, 2, 14))),
    ]
    is_jpeg = starts(b"\xff\xd8\xff")  # height, width from the frame header, found by walking the markers
    jpeg = tf.cond(is_jpeg, lambda: tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)[:2],
                   lambda: tf.zeros([2], tf.int64))
    sizes.append((is_jpeg, (jpeg[1], jpeg[0])))
    width, height = tf.constant(0, tf.int64), tf.constant(0, tf.int64)
    for is_format, (w, h) in sizes:
        width, height = tf.where(is_format, w, width), tf.where(is_format, h, height)
    return width, height


def gif_frames(data, limit):
    """tf op: how many images (frames) a GIF holds, counted by walking its blocks without decoding, up to
    ``limit + 1``. TensorFlow's GIF decoder inflates every frame even when only the first is returned, so
    an animation of many frames is a bomb however small each frame is."""
    import tensorflow as tf

    raw = tf.io.decode_raw(data, tf.uint8)
    size = tf.size(raw)

    def at(i):
        return tf.cast(tf.gather(raw, tf.minimum(i, size - 1)), tf.int32)

    def color_table(flags):
        return tf.where(tf.bitwise.bitwise_and(flags, 0x80) > 0,
                        3 * tf.bitwise.left_shift(2, tf.bitwise.bitwise_and(flags, 7)), 0)

    def skip_sub_blocks(pos):  # data sub-blocks: a size byte, that many bytes, ... until a size of 0
        return tf.while_loop(lambda p: (p < size) & (at(p) > 0), lambda p: [p + at(p) + 1],
                             [pos], maximum_iterations=size)[0] + 1

    def step(pos, frames):
        block = at(pos)
        image = block == 0x2C  # image descriptor: 10 bytes, local colour table, LZW code size, sub-blocks
        start = tf.where(image, pos + 10 + color_table(at(pos + 9)) + 1, pos + 2)  # extension: label, sub-blocks
        return [skip_sub_blocks(start), frames + tf.cast(image, tf.int32)]

    def more(pos, frames):
        return (pos < size) & (frames <= limit) & ((at(pos) == 0x2C) | (at(pos) == 0x21))

    pos = 13 + color_table(at(10))
    return tf.while_loop(more, step, [pos, tf.constant(0)], maximum_iterations=size)[1]


def check_pixel_budget(data, max_megapixels, max_frames=MAX_GIF_FRAMES):
    """tf op that fails with InvalidArgument when ``data``'s header declares more pixels than the budget,
    or (a GIF) more frames than ``max_frames`` or frames x width x height over the budget."""
    import tensorflow as tf

    width, height = image_size(data)
    limit = int(max_megapixels * 1e6)
    message = tf.strings.format("image is {}x{}, over the {} MP limit", (width, height, max_megapixels))
    size_ok = tf.debugging.Assert(width * height <= limit, [message])
    is_gif = tf.equal(tf.strings.substr(data + b"\0\0\0\0", 0, 4), b"GIF8")
    with tf.control_dependencies([size_ok]):
        frames = tf.cond(is_gif, lambda: gif_frames(data, max_frames), lambda: tf.constant(1))
    total = tf.cast(frames, tf.int64) * width * height
    count = tf.where(frames > max_frames, f"over {max_frames}", tf.strings.as_string(frames))
    message = tf.strings.join(["GIF has ", count, " frames of ", tf.strings.as_string(width), "x",
                               tf.strings.as_string(height), f": over the limit of {max_frames} frames and "
                               f"{max_megapixels:g} MP in all"])
    return tf.debugging.Assert((frames <= max_frames) & (total <= limit), [message])


def build(job, fmt, path):
    """The SavedModel is the export's base (every other artifact derives from it): the exporter writes it into
    the version folder first, while the Keras model is still in memory (``save``). Nothing is left to build."""
    return {}


def build_module(source, max_megapixels):
    """A ``tf.Module`` holding the model (batch norms folded into their convolutions: export/fold.py)
    and the signature functions."""
    import tensorflow as tf

    from export.fold import fold_batch_norms, use_native_grouped_convolutions
    from keras_cnns.imaging import decode as decode_image
    from keras_cnns.imaging import resize

    h, w, c = source.input_shape
    k = min(TOP_K, len(source.labels))
    pre = source.preprocessing

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="cnnkit_serving")
            model = use_native_grouped_convolutions(fold_batch_norms(source.model))
            # the graph needs the model's variables, not the Keras objects: tracking the model (an attribute)
            # would make tf.saved_model.save trace every layer's call for Keras' own metadata (FractalNet-20:
            # 18 s of a 21 s save, and 7 s of an 8 s load), which no consumer of the export reads
            self.model_variables = list(model.variables)
            # traced once, called by every signature (each would otherwise trace the whole model again)
            self.forward = tf.function(lambda x: model(x, training=False),
                                       input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)])
            self.label_table = tf.constant(source.labels)
            self.mean = tf.constant(pre["mean"], tf.float32)
            self.std = tf.constant(pre["std"], tf.float32)
            self.scale = tf.constant(pre["scale"], tf.float32)

        def _probabilities(self, images):
            x = (tf.cast(images, tf.float32) * self.scale - self.mean) / self.std
            return tf.cast(self.forward(x), tf.float32)

        def _outputs(self, images):
            probabilities = self._probabilities(images)
            classes = tf.argmax(probabilities, axis=-1)
            scores, top = tf.math.top_k(probabilities, k=k)
            return {"probabilities": probabilities, "classes": classes, "scores": scores,
                    "top_classes": tf.cast(top, tf.int64), "top_labels": tf.gather(self.label_table, top),
                    "labels": tf.gather(self.label_table, classes)}

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, name="images")])
        def serve(self, images):
            return self._outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
        def serve_uint8(self, images):
            return self._outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def _decode(self, image_bytes):  # traced once for both signatures that decode
            def decode(data):
                with tf.control_dependencies([check_pixel_budget(data, max_megapixels)]):
                    image = decode_image(data, c)
                return resize(image, (h, w))  # as a phone app and MediaPipe Tasks do: keras_cnns.imaging

            return tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(self, image_bytes):
            return self._outputs(self._decode(image_bytes))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            features = tf.io.parse_example(inputs, {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
            outputs = self._outputs(self._decode(features[IMAGE_FEATURE]))
            return {"classes": outputs["top_labels"], "scores": outputs["scores"]}

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, name="images")])
        def probabilities(self, images):
            return {"probabilities": self._probabilities(images)}

    return Serving()


def save(source, path, labels_path, max_megapixels):
    """Write the SavedModel to ``path`` (which must not exist) with ``labels_path`` as an asset; an encoded
    image over ``max_megapixels`` is refused before decoding."""
    import tensorflow as tf

    module = build_module(source, max_megapixels)
    module.labels_file = tf.saved_model.Asset(labels_path)
    signatures = {"serving_default": module.serve, "serving_uint8": module.serve_uint8,
                  BYTES_SIGNATURE: module.serve_bytes, "classify": module.classify,
                  "probabilities": module.probabilities}
    tf.saved_model.save(module, path, signatures=signatures)
    _mark_classification(path, "classify")
    return path


def _mark_classification(path, signature):
    """TF2 saves every signature as a predict signature; TF Serving's Classify API wants the classify
    method. Set it in ``saved_model.pb`` and rewrite the fingerprint, which hashes that file."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    from keras_cnns.files import write_atomic

    pb = os.path.join(path, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    saved.meta_graphs[0].signature_def[signature].method_name = CLASSIFY_METHOD
    write_atomic(pb, saved.SerializeToString(deterministic=True))
    os.remove(os.path.join(path, "fingerprint.pb"))
    fingerprinting_utils.write_fingerprint(path)


def load_probabilities(path):
    """The ``probabilities`` signature of a SavedModel as a callable: float32 images -> numpy array."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["probabilities"]

    def run(images):
        return fn(images=tf.constant(images, tf.float32))["probabilities"].numpy()

    run.loaded = loaded
    return run


def op_error_message(err):
    """The cause in a TensorFlow op error ("Unknown image file format..."), without graph-execution boilerplate."""
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[", "Op:")
    lines = [line.strip() for line in err.message.splitlines()]
    causes = [line for line in lines if line and not line.startswith(noise)]
    cause = causes[0] if causes else lines[0]
    if cause.startswith("assertion failed: [") and cause.endswith("]"):  # a check in the graph (the pixel budget)
        cause = cause[len("assertion failed: ["):-1]
    return cause


def has_random_ops(path):
    """Names of random ops left in the serving graph (there must be none: inference is deterministic)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    graph = loaded.signatures["serving_default"].graph
    found = set()
    for op in graph.get_operations():
        if "Random" in op.type or op.type in ("Multinomial", "StatelessRandomUniformV2"):
            found.add(op.type)
    for fn in graph.as_graph_def().library.function:
        for node in fn.node_def:
            if "Random" in node.op:
                found.add(node.op)
    return sorted(found)
