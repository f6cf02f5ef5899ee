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

BINS = 15  # the paper's


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
