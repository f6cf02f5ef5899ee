"""The SavedModel: the one canonical static graph, with named serving signatures, runnable without cnnkit.

Signatures (all take pixel values 0..255 and normalise inside the graph):

- ``serving_default``: ``images`` float32 [batch, H, W, C] -> ``probabilities``, ``classes`` (int64),
  ``scores`` and ``top_classes`` (the top k), ``labels`` (strings of ``classes``);
- ``serving_uint8``: the same for uint8 images;
- ``serving_bytes``: ``image_bytes`` tf.string [batch] of encoded JPEG/PNG/GIF/BMP, decoded and
  resized in the graph - what a TF Serving REST client sends as ``{"b64": ...}``;
- ``probabilities``: float32 images -> probabilities only: what TFLite and ONNX are derived from.
"""
TOP_K = 5


def build_module(source):
    """A ``tf.Module`` holding the model and the four signature functions."""
    import tensorflow as tf

    h, w, c = source.input_shape
    k = min(TOP_K, len(source.labels))
    pre = source.preprocessing

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="cnnkit_serving")
            self.model = source.model
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
                    "top_classes": tf.cast(top, tf.int64), "labels": tf.gather(self.label_table, classes)}

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, name="images")])
        def serve(self, images):
            return self._outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
        def serve_uint8(self, images):
            return self._outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(self, image_bytes):
            def decode(data):
                image = tf.io.decode_image(data, channels=c, expand_animations=False)
                image.set_shape([None, None, c])
                return tf.image.resize(tf.cast(image, tf.float32), (h, w), antialias=True)

            images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
            return self._outputs(images)

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
                  "serving_bytes": module.serve_bytes, "probabilities": module.probabilities}
    tf.saved_model.save(module, path, signatures=signatures)
    return path


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
