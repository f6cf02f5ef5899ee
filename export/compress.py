"""Compression with tensorflow-model-optimization: quantization-aware training, pruning, clustering.

Each method wraps the model, fine-tunes it for a few epochs on the run's training data, and returns a
plain Keras model (wrappers stripped) that exports like any other:

- ``qat``: fake-quantization during fine-tuning, then full-integer TFLite;
- ``prune``: magnitude pruning of conv/dense kernels to ``sparsity`` on a polynomial-decay schedule;
- ``cluster``: weight clustering to at most ``clusters`` distinct values per kernel (k-means++ init). With
  ``--prune`` as well, the clustered model is the pruned one clustered with its zeros kept (sparsity-preserving
  clustering): Deep Compression's order (Han et al. 2016: prune, share weights, quantize, entropy-code), which the
  notes credit with SqueezeNet in about 0.5 MB.
"""
import gzip
import io
import logging
import os

import numpy as np

from export import tflite
from keras_cnns.errors import CnnkitError

log = logging.getLogger(__name__)


def _prunable(layer):
    import tf_keras as keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D))


def _fine_tune(model, data, preprocessing, epochs, lr, callbacks=()):
    """Fine-tune, then set the batch-norm statistics to the training split's: a few epochs on a small
    split leave the moving averages behind the weights (keras_cnns/training/batchnorm.py)."""
    import tf_keras as keras

    from keras_cnns.data import make_dataset
    from keras_cnns.layers.grouped import use_native_grouped_convolutions
    from keras_cnns.training.batchnorm import recalibrate

    use_native_grouped_convolutions(model)  # the clones tensorflow-model-optimization made are plain tf_keras layers
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])
    ds = make_dataset(data, "train", 32, preprocessing, training=True)
    model.fit(ds, epochs=epochs, callbacks=list(callbacks), verbose=0)
    recalibrate(model, ds)  # shuffled and un-augmented: what recalibration needs
    return model


def copy_model(model):
    """An independent copy (own weights), so compressing never changes the model it started from."""
    import tf_keras as keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _wrap(model, wrap):
    import tf_keras as keras

    return keras.models.clone_model(copy_model(model),
                                    clone_function=lambda layer: wrap(layer) if _prunable(layer) else layer)


def quantization_aware(model, data, preprocessing, epochs=4, lr=1e-4):
    import tensorflow_model_optimization as tfmot

    try:
        qat = tfmot.quantization.keras.quantize_model(copy_model(model))
    except (RuntimeError, ValueError) as err:
        raise CnnkitError(f"quantization-aware training cannot handle {model.name}: {str(err).splitlines()[0]} "
                          "(post-training --quantize int8 works for every model)") from None
    return _fine_tune(qat, data, preprocessing, epochs, lr)


def prune(model, data, preprocessing, sparsity, epochs=4, lr=1e-4):
    import tensorflow_model_optimization as tfmot

    if not 0 < sparsity < 1:
        raise CnnkitError(f"--prune needs a sparsity between 0 and 1, got {sparsity}")
    steps = int(np.ceil(len(data.train) / 32)) * epochs
    frequency = max(1, min(100, steps // 10))
    end = max(frequency, (steps // 2) // frequency * frequency)  # reach the target half-way, then recover
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                                    end_step=end, frequency=frequency)
    wrapped = _wrap(model, lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule))
    _fine_tune(wrapped, data, preprocessing, epochs, lr, [tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def cluster(model, data, preprocessing, clusters, epochs=4, lr=1e-4, preserve_sparsity=False):
    """``preserve_sparsity``: zero weights stay zero (a pruned model); tensorflow-model-optimization 0.8 offers it
    through the function its public ``cluster_weights`` calls, not yet through that one."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.clustering.keras.cluster import _cluster_weights

    if clusters < 2:
        raise CnnkitError(f"--cluster needs at least 2 clusters, got {clusters}")
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    wrapped = _wrap(model, lambda layer: _cluster_weights(
        layer, number_of_clusters=clusters, cluster_centroids_init=init, preserve_sparsity=preserve_sparsity))
    _fine_tune(wrapped, data, preprocessing, epochs, lr)
    return tfmot.clustering.keras.strip_clustering(wrapped)


def compressed_models(src, formats, data, options):
    """{format name: (compressed Keras model, details)} for the compressed formats in the plan, fine-tuned
    ``options.finetune_epochs`` on the run's training data."""
    wanted = [f.name for f in formats if f.compressed]
    if not wanted:
        return {}
    if data is None or data.class_names != src.labels:
        raise CnnkitError("--prune, --cluster and --quantize qat fine-tune on the training data: export a run "
                          "directory (its data set is used)")
    epochs, out = options.finetune_epochs, {}
    if "tflite-qat" in wanted:
        out["tflite-qat"] = (quantization_aware(src.model, data, src.preprocessing, epochs), {})
    if "tflite-pruned" in wanted:
        model = prune(src.model, data, src.preprocessing, options.prune, epochs)
        out["tflite-pruned"] = (model, {"target_sparsity": options.prune})
    if "tflite-clustered" in wanted:
        pruned = out.get("tflite-pruned", (None,))[0]
        model = cluster(src.model if pruned is None else pruned, data, src.preprocessing, options.cluster, epochs,
                        preserve_sparsity=pruned is not None)
        out["tflite-clustered"] = (model, {"clusters": options.cluster, **({"pruned_first": options.prune}
                                                                            if pruned is not None else {})})
    return out


def build_tflite(job, fmt, path):
    """A compressed model's TFLite file from its own SavedModel (``scratch/NAME``): integer when the plan has
    full-integer TFLite too (or it was trained quantization-aware), with what pruning or clustering left in it."""
    variant = "qat" if fmt.name == "tflite-qat" else ("int8" if "tflite-int8" in job.formats else "float32")
    checked = tflite.convert_for(job, os.path.join(job.scratch, fmt.name), fmt.name, variant, path)
    details = {**job.compressed[fmt.name][1], **measured_kernels(fmt.name, path), "tflite_variant": variant,
               "gzip_bytes": write_gzip(path), "download": fmt.path + ".gz", **checked}
    return tflite.io_details(job, variant == "int8", details)


def measured_kernels(fmt, path):
    """What pruning / clustering left in the ``.tflite`` file itself: sparsity or distinct values per kernel
    of the conv, depthwise and dense weights read from its buffers."""
    with open(path, "rb") as f:
        arrays = tflite.kernel_tensors(f.read())
    if fmt == "tflite-pruned":
        return {"sparsity": sparsity(arrays)}
    if fmt == "tflite-clustered":
        return {"max_unique_values_per_kernel": max_unique_values(arrays), "sparsity": sparsity(arrays)}
    return {}


def sparsity(arrays):
    """Fraction of zero weights over ``arrays`` (every conv / dense kernel of a model or .tflite file)."""
    total = sum(a.size for a in arrays)
    return float(sum(int((a == 0).sum()) for a in arrays) / total) if total else 0.0


def max_unique_values(arrays):
    """The most distinct values any one of ``arrays`` holds (at most the cluster count after clustering)."""
    return max((len(np.unique(a)) for a in arrays), default=0)


def write_gzip(path):
    """``path.gz`` beside it, the download form (DEFLATE: LZ77 and Huffman coding, what HTTP ``Content-Encoding:
    gzip`` and a compressed app bundle use; the app stores the file unpacked to memory-map it); returns its bytes:
    what pruning and clustering buy in a download. The same bytes on every run (no time stamp)."""
    from keras_cnns.files import write_atomic

    buffer = io.BytesIO()
    with open(path, "rb") as f, gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as out:
        out.write(f.read())
    write_atomic(path + ".gz", buffer.getvalue())
    return len(buffer.getvalue())
