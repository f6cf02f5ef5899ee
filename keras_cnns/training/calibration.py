"""Are the probabilities honest? Expected calibration error, reliability bins and temperature scaling.

A model is calibrated when, of the images it gives 80% confidence, 80% are right. The expected calibration
error (ECE, Guo et al. 2017, "On Calibration of Modern Neural Networks") splits the images into equal-width
bins of top-1 confidence and averages |accuracy - confidence| over the bins, weighted by their images.

Temperature scaling (the same paper) divides the logits by one number T fitted on held-out images by
minimising the negative log-likelihood: T > 1 softens an over-confident model, T < 1 sharpens an under-confident
one, and the predicted class never changes. The models here end in a softmax, so the logits are the log
probabilities up to a constant per image, which the softmax cancels: softmax(log(p) / T) is exact.
"""
import numpy as np

from keras_cnns.errors import CnnkitError

BINS = 15  # the paper's
#: fewer validation images than this, or none answered wrong, leave a temperature to chance: with every answer right
#: the likelihood keeps rising as T falls, and the fit runs to its lower bound (18 right images: T = 0.08)
MIN_TEMPERATURE_IMAGES = 50


def temperature_refusal(probabilities, labels):
    """Why no temperature should be fitted on these validation images (None: fit one)."""
    labels = np.asarray(labels)
    if len(labels) < MIN_TEMPERATURE_IMAGES:
        return (f"only {len(labels)} validation images (a temperature needs at least {MIN_TEMPERATURE_IMAGES}): "
                "its value would be chance")
    if (np.asarray(probabilities).argmax(axis=1) == labels).all():
        return (f"every one of the {len(labels)} validation images is answered right: the fit would sharpen the "
                "probabilities without bound")
    return None


def temperature_scaled(probabilities, temperature):
    """softmax(log(p) / T) of an N x K array of probabilities."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def reliability(probabilities, labels, bins=BINS):
    """{"ece": float, "bins": [{"low", "high", "images", "confidence", "accuracy"}]} (empty bins left out)."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (low, high] bins
    rows, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        if not inside.any():
            continue
        mean_confidence, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
        ece += inside.mean() * abs(accuracy - mean_confidence)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "images": int(inside.sum()),
                     "confidence": mean_confidence, "accuracy": accuracy})
    return {"ece": float(ece), "bins": rows}


def negative_log_likelihood(probabilities, labels):
    probabilities = np.asarray(probabilities, np.float64)
    picked = probabilities[np.arange(len(labels)), np.asarray(labels, np.int64)]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(probabilities, labels):
    """The T in [0.05, 20] that minimises the negative log-likelihood of ``labels`` under
    softmax(log(p) / T) (a bounded one-dimensional search on log T: scipy's minimize_scalar)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda log_t: negative_log_likelihood(temperature_scaled(probabilities, np.exp(log_t)),
                                                                   labels),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))



def apply_temperature(model, temperature):
    """Make ``model`` (which ends in a softmax) answer softmax(z / T) for its logits z, in place, by dividing the
    weights that make the logits by T: the last Dense or convolution's kernel and bias, with only layers that
    commute with a positive factor (pooling, flatten, ReLU, dropout) between it and the softmax. No new op, so
    every export format and quantization takes it as it takes the model. -> the name of the layer scaled."""
    import tf_keras as keras

    layers = keras.layers
    commuting = (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D, layers.AveragePooling2D,
                 layers.MaxPooling2D, layers.Flatten, layers.Reshape, layers.Dropout)

    def activation(layer):
        if isinstance(layer, layers.ReLU):  # f(x / T) = f(x) / T for T > 0 only without a ceiling
            return "relu" if layer.max_value is None and not float(layer.threshold) else "relu-capped"
        return getattr(getattr(layer, "activation", None), "__name__", None)

    def previous(layer):
        inbound = layer.inbound_nodes[0].inbound_layers
        return inbound[0] if isinstance(inbound, list) and len(inbound) == 1 else \
            (None if isinstance(inbound, list) else inbound)

    layer = model.get_layer(model.output_names[0])
    if not hasattr(layer, "kernel"):
        if activation(layer) != "softmax" and not isinstance(layer, layers.Softmax):
            raise CnnkitError(f"{model.name} does not end in a softmax: a temperature has nothing to soften")
        layer = previous(layer)
        while layer is not None and not hasattr(layer, "kernel") and \
                (isinstance(layer, commuting) or activation(layer) in ("relu", "linear")):
            layer = previous(layer)
        if layer is None or not hasattr(layer, "kernel") or activation(layer) not in ("relu", "linear"):
            raise CnnkitError(f"{model.name}: the logits are not made by a Dense or convolution right before the "
                              f"softmax ({getattr(layer, 'name', 'a merge')} is in between), so a temperature cannot "
                              "be folded into its weights")
    elif activation(layer) != "softmax":
        raise CnnkitError(f"{model.name} does not end in a softmax: a temperature has nothing to soften")
    layer.kernel.assign(layer.kernel / temperature)
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(layer.bias / temperature)
    return layer.name
