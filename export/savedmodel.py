"""The SavedModel: the one canonical static graph, with named serving signatures, runnable without cnnkit.

Signatures (all take pixel values 0..255 and normalise inside the graph):

- ``serving_default``: ``images`` float32 [batch, H, W, C] -> ``probabilities``, ``classes`` (int64),
  ``scores``, ``top_classes`` and ``top_labels`` (the top k), ``labels`` (strings of ``classes``);
- ``serving_uint8``: the same for uint8 images;
- ``serving_bytes``: ``image_bytes`` tf.string [batch] of encoded JPEG/PNG/GIF/BMP, decoded and
  resized in the graph - what a TF Serving REST client sends as ``{"b64": ...}``;
- ``classify``: a classification signature (method ``tensorflow/serving/classify``) for TF Serving's
  Classify API and REST ``:classify``: ``inputs``, serialized ``tf.train.Example`` s with the encoded
  image in feature ``image/encoded`` -> ``classes`` (top-k label strings) and ``scores``;
- ``probabilities``: float32 images -> probabilities only: what TFLite and ONNX are derived from.
"""
import os

CLASSIFY_METHOD = "tensorflow/serving/classify"
IMAGE_FEATURE = "image/encoded"
TOP_K = 5


def build_module(source):
    """A ``tf.Module`` holding the model (batch norms folded into their convolutions: export/fold.py)
    and the signature functions."""
    import tensorflow as tf

    from export.fold import fold_batch_norms

    h, w, c = source.input_shape
    k = min(TOP_K, len(source.labels))
    pre = source.preprocessing

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="cnnkit_serving")
            self.model = fold_batch_norms(source.model)
            self.label_table = tf.constant(source.labels)
            self.mean = tf.constant(pre["mean"], tf.float32)
            self.std = tf.constant(pre["std"], tf.float32)
            self.scale = tf.constant(pre["scale"], tf.float32)

        def _probabilities(self, images):
            x = (tf.cast(images, tf.float32) * self.scale - self.mean) / self.std
            return tf.cast(self.model(x, training=False), tf.float32)

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

        def _decode(self, image_bytes):
            def decode(data):
                image = tf.io.decode_image(data, channels=c, expand_animations=False)
                image.set_shape([None, None, c])
                return tf.image.resize(tf.cast(image, tf.float32), (h, w), antialias=True)

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


def save(source, path, labels_path):
    """Write the SavedModel to ``path`` (which must not exist) with ``labels_path`` as an asset."""
    import tensorflow as tf

    module = build_module(source)
    module.labels_file = tf.saved_model.Asset(labels_path)
    signatures = {"serving_default": module.serve, "serving_uint8": module.serve_uint8,
                  "serving_bytes": module.serve_bytes, "classify": module.classify,
                  "probabilities": module.probabilities}
    tf.saved_model.save(module, path, signatures=signatures)
    _mark_classification(path, "classify")
    return path


def _mark_classification(path, signature):
    """TF2 saves every signature as a predict signature; TF Serving's Classify API wants the classify
    method. Set it in ``saved_model.pb`` and rewrite the fingerprint, which hashes that file."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    from keras_cnns.training.runs import write_atomic

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
