"""Ensembles as one static graph: a Keras model that averages its members' probabilities.

Members come from several runs (``ensemble_runs``) or from the snapshots one cyclic-learning-rate
run took (snapshot ensembles, Huang et al.: one snapshot at the end of each cycle, no extra training).
"""
import glob
import os

import numpy as np

from keras_cnns.errors import CnnkitError
from keras_cnns.files import load_model_file, save_model_atomic, write_json
from keras_cnns.training import runs


def build_ensemble(members, name="ensemble"):
    """One functional model: input -> every member -> the mean of their probabilities."""
    import tf_keras as keras

    if len(members) < 2:
        raise CnnkitError(f"an ensemble needs at least 2 members, got {len(members)}")
    shapes = {tuple(m.inputs[0].shape[1:]) for m in members}
    classes = {int(m.outputs[0].shape[-1]) for m in members}
    if len(shapes) > 1 or len(classes) > 1:
        raise CnnkitError(f"ensemble members disagree: input shapes {sorted(shapes)}, class counts {sorted(classes)}")
    inputs = keras.Input(shape=next(iter(shapes)), name="input")
    outputs = []
    for i, member in enumerate(members):
        member._name = f"member{i + 1}_{member.name}"
        outputs.append(member(inputs))
    return keras.Model(inputs, keras.layers.Average(name="predictions")(outputs), name=name)


def _snapshot_files(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "snapshots", "epoch*.keras")))


def _own_data(run_dir, model):
    """The run's data at the model's input, loaded once for evaluating several models."""
    from keras_cnns.data import load_data

    config = runs.read_config(run_dir)
    return load_data(config["data"]["spec"], tuple(model.inputs[0].shape[1:]), val_split=config["data"]["val_split"],
                     test_split=config["data"]["test_split"])


def evaluate_snapshots(run_dir, data=None):
    """Test metrics of the snapshot ensemble of one run, next to each snapshot's own accuracy."""
    from keras_cnns.training.evaluation import evaluate_run

    files = _snapshot_files(run_dir)
    members = [load_model_file(f) for f in files]
    data = data or (_own_data(run_dir, members[0]) if members else None)
    single = [evaluate_run(run_dir, model=m, confusion_png=False, data=data, calibrate=False)["accuracy"]
              for m in members]
    if len(members) < 2:
        return {"members": len(members), "member_accuracy": single}
    metrics = evaluate_run(run_dir, model=build_ensemble(members), confusion_png=False, data=data, calibrate=False)
    return {"members": len(members), "files": [os.path.basename(f) for f in files], "member_accuracy": single,
            "accuracy": metrics["accuracy"], "loss": metrics["loss"]}


def ensemble_runs(run_dirs, output=None):
    """Average the best models of ``run_dirs`` (or the snapshots of a single run) into a new run directory."""
    from keras_cnns.training.evaluation import evaluate_run

    run_dirs = [runs.resolve_run_dir(d) for d in run_dirs]
    configs = [runs.read_config(d) for d in run_dirs]
    if len(run_dirs) == 1:
        files = _snapshot_files(run_dirs[0])
        if len(files) < 2:
            raise CnnkitError(f"{run_dirs[0]} has {len(files)} snapshot(s); give several runs, or train one with "
                              "--snapshots N to ensemble its snapshots")
        members = [load_model_file(f) for f in files]
        sources = files
    else:
        members = [runs.load_run_model(d) for d in run_dirs]
        sources = run_dirs
    labels = [runs.read_labels(d) for d in run_dirs]
    if any(lab != labels[0] for lab in labels):
        raise CnnkitError("the runs were trained on different classes; an ensemble needs the same labels.txt")
    first = configs[0]
    for other, path in zip(configs[1:], run_dirs[1:]):
        same = other["data"]["spec"] == first["data"]["spec"] and np.allclose(
            other["preprocessing"]["mean"], first["preprocessing"]["mean"]) and np.allclose(
            other["preprocessing"]["std"], first["preprocessing"]["std"])
        if not same:
            raise CnnkitError(f"{path} was trained on other data or normalisation than {run_dirs[0]}")
    model = build_ensemble(members)
    out = runs.new_run_dir("ensemble", output)
    write_json(os.path.join(out, "config.json"), {
        "model": "ensemble", "members": sources, "member_models": [c["model"] for c in configs],
        "input_shape": first["input_shape"], "num_classes": first["num_classes"], "params": int(model.count_params()),
        "data": first["data"], "preprocessing": first["preprocessing"], "versions": first.get("versions"),
    })
    runs.write_labels(out, labels[0])
    save_model_atomic(model, os.path.join(out, "best.keras"), runs.model_contract(out))
    data = _own_data(out, model)
    metrics = evaluate_run(out, model=model, data=data)
    metrics["member_accuracy"] = [evaluate_run(out, model=m, confusion_png=False, data=data,
                                               calibrate=False)["accuracy"] for m in members]
    write_json(os.path.join(out, "metrics.json"), metrics)
    runs.update_latest(out)
    return out, metrics
