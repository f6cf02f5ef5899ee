"""Class weights for an imbalanced training split: each image's loss is multiplied by its class's weight.

``balanced`` is inverse frequency, scaled so that the weights average to 1 over the images (scikit-learn's
"balanced": images / (classes x images of the class)); every class then weighs the same in the loss.
``auto`` (the default) applies it when the largest class has more than ``IMBALANCE_RATIO`` times the images of
the smallest, and says so; ``none`` never; a JSON file gives {class name: weight} for every class.
"""
import json
import os

import numpy as np

from keras_cnns.errors import CnnkitError

IMBALANCE_RATIO = 3.0
CHOICES = ("auto", "balanced", "none")


def check(spec):
    """The spec as TrainConfig keeps it: a choice, or a JSON file's absolute path."""
    if spec in CHOICES:
        return spec
    if not os.path.isfile(spec):
        raise CnnkitError(f"--class-weight takes auto, balanced, none or a JSON file of {{class: weight}}; "
                          f"{spec!r} is none of them")
    return os.path.abspath(spec)


def balanced(labels, num_classes):
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.maximum(counts, 1.0))


def _from_file(path, class_names):
    try:
        with open(path) as f:
            given = json.load(f)
    except (OSError, ValueError) as err:
        raise CnnkitError(f"cannot read the class weights {path}: {err}") from None
    if not isinstance(given, dict):
        raise CnnkitError(f"{path} must hold one JSON object {{class name: weight}}")
    unknown = sorted(set(given) - set(class_names))
    missing = [name for name in class_names if name not in given]
    if unknown or missing:
        raise CnnkitError(f"{path}: " + "; ".join(part for part in (
            unknown and f"no class named {', '.join(unknown)}", missing and f"no weight for {', '.join(missing)}")
            if part) + f" (the classes: {', '.join(class_names)})")
    weights = []
    for name in class_names:
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise CnnkitError(f"{path}: the weight of {name} must be a number >= 0, got {value!r}")
        weights.append(float(value))
    if not any(weights):
        raise CnnkitError(f"{path}: every weight is 0: nothing would be learnt")
    return np.array(weights)


def resolve(spec, labels, class_names):
    """-> {"requested", "weights": {class: weight} or None, "why"} for the training split's ``labels``."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    ratio = float(counts.max() / max(counts.min(), 1))
    shape = f"the largest class has {ratio:.1f}x the training images of the smallest"
    if spec == "none" or (spec == "auto" and ratio <= IMBALANCE_RATIO):
        weights, why = None, shape + (" (auto weighs classes beyond "
                                      f"{IMBALANCE_RATIO:g}x)" if spec == "auto" else "; --class-weight none")
    elif spec in ("auto", "balanced"):
        weights, why = balanced(labels, len(class_names)), f"balanced (inverse frequency): {shape}"
    else:
        weights, why = _from_file(spec, class_names), f"from {spec}"
    return {"requested": spec, "why": why,
            "weights": None if weights is None else {n: round(float(w), 6) for n, w in zip(class_names, weights)}}


def as_array(plan, class_names):
    """The plan's weights in output order, or None."""
    return None if plan["weights"] is None else np.array([plan["weights"][n] for n in class_names], np.float32)
