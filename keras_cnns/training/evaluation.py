"""Test metrics of a trained model: accuracy, top-5, loss, per-class precision/recall, confusion matrix and
calibration (expected calibration error, a reliability diagram, a temperature fitted on the validation split)."""
import os
import re

import numpy as np

from keras_cnns.data import load_data, make_dataset
from keras_cnns.errors import CnnkitError
from keras_cnns.training import calibration, runs


def classification_metrics(probabilities, labels, class_names):
    """Metrics of predicted ``probabilities`` (N x K) against integer ``labels`` (N,)."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    k = len(class_names)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    top = min(5, k)
    top_k = np.argsort(-probabilities, axis=1)[:, :top]
    eps = 1e-7
    loss = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0))
    per_class = {}
    for i, name in enumerate(class_names):
        tp = confusion[i, i]
        predicted_i, actual_i = confusion[:, i].sum(), confusion[i, :].sum()
        per_class[name] = {"precision": float(tp / predicted_i) if predicted_i else 0.0,
                           "recall": float(tp / actual_i) if actual_i else 0.0, "support": int(actual_i)}
    return {
        "samples": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        f"top{top}_accuracy": float((top_k == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0,
        "loss": float(loss.mean()) if len(labels) else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "ece": calibration.reliability(probabilities, labels)["ece"] if len(labels) else 0.0,
    }


def predict(model, dataset):
    """Probabilities of the main output for every batch of ``dataset`` (labels ignored)."""
    outputs = model.predict(dataset.map(lambda x, y: x), verbose=0)
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _relabel(data, class_names, spec):
    """Map another data set's class names onto the run's output order."""
    if data.class_names == class_names:
        return data
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [n for n in data.class_names if n not in index]
    if unknown:
        raise CnnkitError(f"{spec} has classes the model does not know: {', '.join(unknown)} "
                          f"(the model's classes: {', '.join(class_names)})")
    mapping = np.array([index[n] for n in data.class_names])
    for split in (data.train, data.val, data.test):
        split.y = mapping[split.y]
    data.class_names = list(class_names)
    return data


#: below this many evaluated images a score comes with a warning (one image is over a point)
SMALL_SPLIT = 100


def evaluate_run(run_dir, data_spec=None, split="test", model=None, confusion_png=True, batch_size=128, data=None,
                 calibrate=True):
    """Evaluate a run's best model on its own test split, or on all of another data set ``data_spec``.

    ``data``: the run's own data already loaded at the model's input shape (saves decoding it again).
    ``calibrate``: also fit a temperature on the run's validation split and report what it does to the
    calibration error of the evaluated images (``metrics["calibration"]``, see :mod:`calibration`).
    """
    run_dir = runs.resolve_run_dir(run_dir)
    config = runs.read_config(run_dir)
    class_names = runs.read_labels(run_dir)
    model = model or runs.load_run_model(run_dir)
    shape = tuple(model.inputs[0].shape[1:])
    own = data_spec is None or data_spec == config["data"]["spec"]
    spec = config["data"]["spec"] if own else data_spec
    if not (own and data is not None and tuple(data.input_shape) == shape):
        data = load_data(spec, shape, val_split=config["data"]["val_split"], test_split=config["data"]["test_split"],
                         recorded_by=f"the run {run_dir}" if own else None)
    preprocessing = config["preprocessing"]
    if own:
        parts = [split]
    else:
        data = _relabel(data, class_names, spec)
        parts = ["train", "val", "test"]
    probabilities, labels = [], []
    for part in parts:
        ds = make_dataset(data, part, batch_size, preprocessing)
        probabilities.append(predict(model, ds))
        labels.append(data.split(part).y)
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    metrics = classification_metrics(probabilities, labels, class_names)
    if 0 < len(labels) < SMALL_SPLIT:
        metrics["warning"] = (f"only {len(labels)} images evaluated: one image moves the accuracy by "
                              f"{100 / len(labels):.1f} points, so compare scores with care (more data, or a larger "
                              "--test-split)")
    metrics["data"] = spec
    metrics["split"] = split if own else "all"
    shown = os.path.basename(os.path.normpath(spec)) if os.path.exists(spec) else spec  # a folder by its name
    suffix = "" if own and split == "test" else "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{shown}-{metrics['split']}")
    title = f"{config['model']} on {spec} ({metrics['split']})"
    if calibrate and len(labels):
        held_out = own and split != "val"  # the validation split is then none of the evaluated images
        metrics["calibration"] = _calibration(model, data if held_out else None, preprocessing, batch_size,
                                              probabilities, labels)
    if confusion_png:
        from keras_cnns.plots import plot_confusion_matrix, plot_reliability

        path = os.path.join(run_dir, f"confusion{suffix}.png")
        plot_confusion_matrix(np.array(metrics["confusion_matrix"]), class_names, path,
                              title=f"{title}: accuracy {metrics['accuracy']:.2%}")
        metrics["confusion_png"] = path
        if "calibration" in metrics:
            path = os.path.join(run_dir, f"reliability{suffix}.png")
            metrics["calibration"]["reliability_png"] = plot_reliability(metrics["calibration"], path, title=title)
    return metrics


def _calibration(model, data, preprocessing, batch_size, probabilities, labels):
    """The evaluated images' calibration error and reliability bins, before and after a temperature fitted on
    the run's validation split. ``data``: the run's own data, or None where the evaluated images include that
    split (all of another data set, or the validation split itself): a temperature is never fitted on them."""
    found = calibration.reliability(probabilities, labels)
    out = {"ece": found["ece"], "bins": found["bins"], "bin_count": calibration.BINS, "temperature": None}
    val_labels = data.split("val").y if data is not None else []
    if not len(val_labels):
        out["temperature_note"] = ("no validation split to fit a temperature on" if data is not None else
                                   "no held-out images to fit a temperature on: the evaluated ones include them")
        return out
    val = predict(model, make_dataset(data, "val", batch_size, preprocessing))
    refused = calibration.temperature_refusal(val, val_labels)
    if refused:
        out["temperature_note"] = refused
        return out
    temperature = calibration.fit_temperature(val, val_labels)
    after = calibration.reliability(calibration.temperature_scaled(probabilities, temperature), labels)
    out.update(temperature=temperature, temperature_images=int(len(val_labels)), ece_after_temperature=after["ece"],
               bins_after_temperature=after["bins"])
    return out
