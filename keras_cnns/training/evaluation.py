"""Test metrics of a trained model: accuracy, top-5, loss, per-class precision/recall, confusion matrix."""
import os
import re

import numpy as np

from keras_cnns.data import load_data, make_dataset
from keras_cnns.errors import CnnkitError
from keras_cnns.training import runs


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


def evaluate_run(run_dir, data_spec=None, split="test", model=None, confusion_png=True, batch_size=128, data=None):
    """Evaluate a run's best model on its own test split, or on all of another data set ``data_spec``.

    ``data``: the run's own data already loaded at the model's input shape (saves decoding it again).
    """
    run_dir = runs.resolve_run_dir(run_dir)
    config = runs.read_config(run_dir)
    class_names = runs.read_labels(run_dir)
    model = model or runs.load_run_model(run_dir)
    shape = tuple(model.inputs[0].shape[1:])
    own = data_spec is None or data_spec == config["data"]["spec"]
    spec = config["data"]["spec"] if own else data_spec
    if not (own and data is not None and tuple(data.input_shape) == shape):
        data = load_data(spec, shape, val_split=config["data"]["val_split"], test_split=config["data"]["test_split"])
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
    metrics = classification_metrics(np.concatenate(probabilities), np.concatenate(labels), class_names)
    metrics["data"] = spec
    metrics["split"] = split if own else "all"
    if confusion_png:
        from keras_cnns.plots import plot_confusion_matrix

        suffix = "" if own and split == "test" else "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{spec}-{metrics['split']}")
        path = os.path.join(run_dir, f"confusion{suffix}.png")
        plot_confusion_matrix(np.array(metrics["confusion_matrix"]), class_names, path,
                              title=f"{config['model']} on {spec} ({metrics['split']}): "
                                    f"accuracy {metrics['accuracy']:.2%}")
        metrics["confusion_png"] = path
    return metrics
