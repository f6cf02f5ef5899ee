"""Compression with tensorflow-model-optimization: quantization-aware training, pruning, clustering.

Each method wraps the model, fine-tunes it for a few epochs on the run's training data, and returns a
plain Keras model (wrappers stripped) that exports like any other:

- ``qat``: fake-quantization during fine-tuning, then full-integer TFLite;
- ``prune``: magnitude pruning of conv/dense kernels to ``sparsity`` on a polynomial-decay schedule;
- ``cluster``: weight clustering to at most ``clusters`` distinct values per kernel (k-means++ init).
"""
import gzip
import io
import logging

import numpy as np

from keras_cnns.errors import CnnkitError

log = logging.getLogger(__name__)


def _prunable(layer):
    import tf_keras as keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D))


def _fine_tune(model, data, preprocessing, epochs, lr, callbacks=()):
    """Fine-tune, then set the batch-norm statistics to the training split's: a few epochs on a small
    split leave the moving averages behind the weights (keras_cnns/training/batchnorm.py)."""
    import tf_keras as keras

    from keras_cnns.layers.grouped import use_native_grouped_convolutions
    from keras_cnns.training.batchnorm import recalibrate
    from keras_cnns.training.data import make_dataset

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


def cluster(model, data, preprocessing, clusters, epochs=4, lr=1e-4):
    import tensorflow_model_optimization as tfmot

    if clusters < 2:
        raise CnnkitError(f"--cluster needs at least 2 clusters, got {clusters}")
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    wrapped = _wrap(model, lambda layer: tfmot.clustering.keras.cluster_weights(
        layer, number_of_clusters=clusters, cluster_centroids_init=init))
    _fine_tune(wrapped, data, preprocessing, epochs, lr)
    return tfmot.clustering.keras.strip_clustering(wrapped)


def sparsity(arrays):
    """Fraction of zero weights over ``arrays`` (every conv / dense kernel of a model or .tflite file)."""
    total = sum(a.size for a in arrays)
    return float(sum(int((a == 0).sum()) for a in arrays) / total) if total else 0.0


def max_unique_values(arrays):
    """The most distinct values any one of ``arrays`` holds (at most the cluster count after clustering)."""
    return max((len(np.unique(a)) for a in arrays), default=0)


def gzip_size(path):
    """Bytes of the file after gzip: what pruning and clustering buy in a download."""
    buffer = io.BytesIO()
    with open(path, "rb") as f, gzip.GzipFile(fileobj=buffer, mode="wb") as out:
        out.write(f.read())
    return len(buffer.getvalue())
