"""The trainer end to end on the bundled digits: run directory, modes, GoogLeNet's auxiliary loss,
divergence, a full disk, transfer learning and ensembles."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_cnns
from keras_cnns.data import load_data
from keras_cnns.errors import CnnkitError
from keras_cnns.files import load_model_file
from keras_cnns.training import TrainConfig, ensemble_runs, evaluate_run, finetune, resume, train
from keras_cnns.training.callbacks import read_history
from keras_cnns.training.optimizers import DEFAULT_LR
from keras_cnns.training.runs import load_run_model, read_config


@pytest.fixture(scope="module")
def lenet_run(default_lenet_run):
    """LeNet-5 on digits with every default: the README's main job (trained once per session, conftest.py)."""
    return default_lenet_run


def test_lenet5_reaches_97_percent_on_digits_with_the_defaults(lenet_run):
    assert lenet_run.metrics["accuracy"] >= 0.97
    assert lenet_run.metrics["samples"] == len(load_data("digits", (32, 32, 1)).test)


def test_run_directory_holds_everything_the_issue_lists(lenet_run):
    run = lenet_run.run_dir
    for name in ("config.json", "labels.txt", "best.keras", "last.keras", "history.csv", "history.png",
                 "metrics.json", "confusion.png", "logs"):
        assert os.path.exists(os.path.join(run, name)), name
    assert not os.path.exists(os.path.join(run, "backup"))  # removed once the run finished
    config = read_config(run)
    assert config["train"]["optimizer"] == "adam" and config["train"]["seed"] == 0
    assert config["versions"]["tensorflow"].startswith("2.") and config["command"]
    assert config["params"] == 61_706 and config["preprocessing"]["std"][0] > 0
    assert open(os.path.join(run, "labels.txt")).read().split() == [str(i) for i in range(10)]
    history = read_history(os.path.join(run, "history.csv"))
    assert [r["epoch"] for r in history] == list(range(1, 31))  # counted as the console counts
    assert open(os.path.join(run, "history.csv")).read().splitlines()[1].startswith("1,")
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(history[0])
    assert history[-1]["lr"] < history[0]["lr"]  # cosine schedule logged per epoch
    assert os.path.realpath(os.path.join(os.path.dirname(run), "latest")) == os.path.realpath(run)
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["mode"] == "graph" and metrics["traces"] == 1  # one static graph, reused every step
    assert metrics["epochs_completed"] == 30
    best = max(r["val_accuracy"] for r in history)
    assert metrics["best_val_accuracy"] == pytest.approx(best)
    assert len(metrics["confusion_matrix"]) == 10 and set(metrics["per_class"]) == set(map(str, range(10)))


def test_saved_best_model_reproduces_the_reported_test_accuracy(lenet_run):
    model = load_run_model(lenet_run.run_dir)
    again = evaluate_run(lenet_run.run_dir, model=model, confusion_png=False)
    assert again["accuracy"] == pytest.approx(lenet_run.metrics["accuracy"])
    assert again["confusion_matrix"] == lenet_run.metrics["confusion_matrix"]


def test_evaluation_reports_calibration_with_a_temperature_fitted_on_the_validation_split(lenet_run):
    from keras_cnns.data import make_dataset
    from keras_cnns.training import calibration
    from keras_cnns.training.evaluation import predict

    found, metrics = lenet_run.metrics["calibration"], lenet_run.metrics
    assert found["bin_count"] == 15 and 0 <= found["ece"] < 0.1 and found["ece"] == metrics["ece"]
    assert sum(b["images"] for b in found["bins"]) == metrics["samples"]
    with open(found["reliability_png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the temperature is the likelihood's best on the validation split, and only those images were used
    data = load_data("digits", (32, 32, 1))
    assert found["temperature_images"] == len(data.val)
    val = predict(load_run_model(lenet_run.run_dir), make_dataset(data, "val", 128, read_config(
        lenet_run.run_dir)["preprocessing"]))
    nll = [calibration.negative_log_likelihood(calibration.temperature_scaled(val, t), data.val.y)
           for t in (found["temperature"], found["temperature"] * 1.1, found["temperature"] / 1.1, 1.0)]
    assert nll[0] <= min(nll[1:])


def _imbalanced_digits(path, counts=(60, 12, 30)):
    """Digits 0, 1 and 2 with ``counts`` images each: the training split is about 5x imbalanced."""
    data = load_data("digits", (12, 12, 1))
    x = np.concatenate([data.train.x, data.val.x, data.test.x])[..., 0]
    y = np.concatenate([data.train.y, data.val.y, data.test.y])
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate(counts)])
    np.savez(path, x=x[keep], y=y[keep], class_names=["0", "1", "2"])
    return str(path)


def test_class_weights_multiply_the_training_loss_and_auto_balances_an_imbalanced_folder(lenet_run, tmp_path,
                                                                                        caplog):
    from keras_cnns.training import class_weights

    spec = _imbalanced_digits(tmp_path / "imbalanced.npz")
    (tmp_path / "twice.json").write_text(json.dumps({"0": 2, "1": 2, "2": 2}))
    losses = {}
    for weight in ("none", str(tmp_path / "twice.json")):  # a learning rate too small to move: same model, loss x2
        run = train(TrainConfig(data=spec, epochs=1, optimizer="sgd", lr=1e-9, class_weight=weight,
                                output=str(tmp_path / f"w{len(losses)}")))
        losses[weight] = read_history(os.path.join(run.run_dir, "history.csv"))[0]["loss"]
    assert losses[str(tmp_path / "twice.json")] == pytest.approx(2 * losses["none"], rel=1e-4)
    with caplog.at_level("INFO", logger="keras_cnns"):
        run = train(TrainConfig(data=spec, epochs=1, output=str(tmp_path / "auto")))
    plan = read_config(run.run_dir)["class_weight"]
    data = load_data(spec, (32, 32, 1))
    expected = class_weights.balanced(data.train.y, 3)
    assert plan["requested"] == "auto" and list(plan["weights"].values()) == pytest.approx(expected, rel=1e-5)
    assert max(expected) / min(expected) > 3 and "class weights balanced" in caplog.text
    assert read_config(lenet_run.run_dir)["class_weight"]["weights"] is None  # the digits are balanced


def test_mixup_cutmix_label_smoothing_and_class_weights_train_together_and_are_recorded(tmp_path):
    spec = _imbalanced_digits(tmp_path / "imbalanced.npz")
    run = train(TrainConfig(data=spec, epochs=2, mixup=0.2, cutmix=1.0, mix_switch_prob=0.5, label_smoothing=0.1,
                            output=str(tmp_path / "mixed")))
    history = read_history(os.path.join(run.run_dir, "history.csv"))
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    saved = read_config(run.run_dir)
    assert (saved["train"]["mixup"], saved["train"]["cutmix"], saved["train"]["mix_switch_prob"]) == (0.2, 1.0, 0.5)
    assert saved["class_weight"]["weights"] is not None
    with pytest.raises(CnnkitError, match="--mixup is a Beta distribution's alpha"):
        TrainConfig(mixup=-1).validate()


def test_lr_auto_trains_with_the_range_tests_suggestion_and_lr_find_plots_it(tmp_path, caplog):
    from conftest import cnnkit_here

    with caplog.at_level("INFO", logger="keras_cnns"):
        run = train(TrainConfig(epochs=1, lr="auto", output=str(tmp_path / "auto")))
    saved = read_config(run.run_dir)
    found = saved["lr_find"]
    assert found["suggested"] == pytest.approx(found["min_loss_lr"] / 10) and found["steps"] == 200
    assert saved["train"]["lr"] == float(f"{found['suggested']:.2g}") and 1e-4 < saved["train"]["lr"] < 0.1
    assert f"--lr auto: {saved['train']['lr']}" in caplog.text
    out = cnnkit_here("lr-find", "lenet5", "--steps", "60", "--plot", tmp_path / "lr.png", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert len(shown["lr"]) == len(shown["loss"]) <= 60 and shown["suggested"] > 0
    with open(tmp_path / "lr.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with pytest.raises(CnnkitError, match="a number > 0 or auto"):
        TrainConfig(lr="fast").validate()


def test_evaluate_on_another_data_set_matches_classes_by_name(lenet_run, tmp_path):
    data = load_data("digits", (12, 12, 1))  # the digits' own size, framed as the loader frames them
    keep = np.isin(data.test.y, [3, 7])
    names = np.array(["7", "3"])  # a different order: labels must be mapped by name
    y = np.where(data.test.y[keep] == 7, 0, 1)
    np.savez(tmp_path / "two.npz", x=data.test.x[keep][..., 0], y=y, class_names=names)
    metrics = evaluate_run(lenet_run.run_dir, data_spec=str(tmp_path / "two.npz"))
    assert metrics["split"] == "all" and metrics["samples"] == keep.sum()
    assert metrics["accuracy"] > 0.9
    # all of it is evaluated, its validation split too: no temperature is fitted on evaluated images
    assert metrics["calibration"]["temperature"] is None and "include them" in metrics["calibration"]["temperature_note"]
    assert os.path.exists(metrics["confusion_png"])
    np.savez(tmp_path / "other.npz", x=data.test.x[:9, ..., 0], y=np.arange(9) % 3, class_names=["a", "b", "c"])
    with pytest.raises(CnnkitError, match="classes the model does not know: a, b, c"):
        evaluate_run(lenet_run.run_dir, data_spec=str(tmp_path / "other.npz"))


XLA_COMPILED = "Compiled cluster using XLA"  # TensorFlow's own log line, written once a cluster is compiled

MODE_PROBE = """
import sys
from keras_cnns.training import TrainConfig, train
result = train(TrainConfig(epochs=2, mode=sys.argv[1], output=sys.argv[2]))
print(result.metrics["traces"], type(result.model.train_function).__name__, result.metrics["accuracy"])
"""


@pytest.mark.parametrize("mode, traces, step_type, compiled", [("eager", 0, "function", False),
                                                                ("graph", 1, "Function", False),
                                                                ("xla", 1, "Function", True)])
def test_eager_graph_and_xla_modes_train_the_same_model(tmp_path, mode, traces, step_type, compiled):
    """Eager runs the plain Python step (never traced), graph traces it once into a tf.function, and only XLA
    makes TensorFlow compile a cluster (its log says so; TF_CPP_MIN_LOG_LEVEL=0 lets the line through)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    out = subprocess.run([sys.executable, "-c", MODE_PROBE, mode, str(tmp_path / mode)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    counted, kind, accuracy = out.stdout.split()[-3:]
    assert (int(counted), kind) == (traces, step_type)
    assert (XLA_COMPILED in out.stderr) == compiled
    assert float(accuracy) > 0.7


def test_finetuning_a_run_keeps_its_normalisation_and_learning_rate(lenet_run, tmp_path):
    result = finetune(lenet_run.run_dir, "shapes:6", strategy="full", epochs=1, output=str(tmp_path / "ft"))
    config = read_config(result.run_dir)
    source = read_config(lenet_run.run_dir)
    assert config["preprocessing"] == source["preprocessing"]  # the features were learnt with it
    assert config["train"]["lr"] == pytest.approx(0.1 * source["train"]["lr"])
    assert config["train"]["finetune"]["source_model"] == "lenet5"
    assert open(os.path.join(result.run_dir, "labels.txt")).read().split() == ["circle", "square", "triangle",
                                                                                "cross"]


def test_finished_run_cannot_be_resumed_or_overwritten(lenet_run):
    with pytest.raises(CnnkitError, match="already finished"):
        resume(lenet_run.run_dir)
    with pytest.raises(CnnkitError, match="already holds a run"):
        train(TrainConfig(epochs=1, output=lenet_run.run_dir))


def _small_rgb_npz(path, per_class=6, classes=(0, 1, 2), size=32):
    data = load_data("digits", (size, size, 3))
    pick = np.concatenate([np.flatnonzero(data.train.y == c)[:per_class] for c in classes])
    np.savez(path, x=data.train.x[pick], y=np.searchsorted(classes, data.train.y[pick]),
             class_names=np.array([str(c) for c in classes]))
    return str(path)


def test_googlenet_aux_losses_weigh_0_3_and_leave_the_saved_model(tmp_path):
    spec = _small_rgb_npz(tmp_path / "rgb.npz")
    result = train(TrainConfig(model="googlenet", data=spec, input_size=32, epochs=1, batch_size=8,
                               output=str(tmp_path / "gn")))
    row = read_history(os.path.join(result.run_dir, "history.csv"))[0]
    expected = row["predictions_loss"] + 0.3 * (row["aux1_predictions_loss"] + row["aux2_predictions_loss"])
    assert row["loss"] == pytest.approx(expected, rel=1e-4)
    assert row["accuracy"] == row["predictions_accuracy"]
    assert result.metrics["traces"] == 1  # its per-output loss and metric trackers exist before the first step
    saved = load_run_model(result.run_dir)
    assert len(saved.outputs) == 1 and saved.output_names == ["predictions"]


def test_divergence_stops_with_epoch_step_and_learning_rate(tmp_path):
    config = TrainConfig(epochs=2, optimizer="sgd", lr=1e5, model_options={"activation": "relu"},
                         output=str(tmp_path / "nan"))
    with pytest.raises(CnnkitError, match=r"loss became nan at epoch 1, step \d+ \(learning rate [\d.e+]+\)"):
        train(config)
    assert not os.path.exists(tmp_path / "nan" / "best.keras")  # no NaN weights saved


def test_full_disk_keeps_completed_epochs_and_the_run_resumes(tmp_path, monkeypatch):
    saves = {"n": 0}
    real_save = keras.Model.save

    before = {}

    def failing_save(self, path, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:  # epoch 1 saved last.keras (best.keras: its bytes); epoch 2's save fills the disk midway
            for name in ("best.keras", "last.keras"):
                before[name] = open(os.path.join(run, name), "rb").read()
            real_save(self, path, *args, **kwargs)
            size = os.path.getsize(path)
            with open(path, "r+b") as f:  # half the bytes made it, then the device was full
                f.truncate(size // 2)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", failing_save)
    run = str(tmp_path / "disk")
    with pytest.raises(CnnkitError, match="no space left on the device .* --resume"):
        train(TrainConfig(epochs=3, output=run))
    assert [r["epoch"] for r in read_history(os.path.join(run, "history.csv"))] == [1, 2]
    for name, data in before.items():  # the epoch-1 checkpoints are intact: same bytes, and they load
        assert open(os.path.join(run, name), "rb").read() == data
        load_model_file(os.path.join(run, name))
    assert not [f for f in os.listdir(run) if ".tmp" in f]  # no half-written file left behind
    monkeypatch.setattr(keras.Model, "save", real_save)
    keras.backend.clear_session()
    result = resume(run)
    history = read_history(os.path.join(run, "history.csv"))
    assert [r["epoch"] for r in history] == [1, 2, 3] and result.metrics["epochs_completed"] == 3


def test_dropout_option_reaches_the_model_or_is_refused(tmp_path):
    with pytest.raises(CnnkitError, match="lenet5 has no dropout layer"):
        train(TrainConfig(epochs=1, dropout=0.3, output=str(tmp_path / "a")))
    result = train(TrainConfig(model="mobilenet_v2", input_size=32, epochs=1, dropout=0.3, data="shapes:8",
                               output=str(tmp_path / "b")))
    assert result.model.get_layer("dropout").rate == 0.3


def test_mixed_bfloat16_computes_in_bfloat16_with_float32_weights_and_output(tmp_path):
    result = train(TrainConfig(epochs=1, precision="bfloat16", output=str(tmp_path / "bf16")))
    conv = result.model.get_layer("c1_conv")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert result.model.outputs[0].dtype == "float32"
    assert result.metrics["precision"] == "mixed_bfloat16" and result.metrics["accuracy"] > 0.5
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    # its checkpoints load as float32 models (same weights), so it exports as float32 (TFLite has no bfloat16
    # convolution: the export used to fail on it)
    saved = load_model_file(os.path.join(result.run_dir, "best.keras"))
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    x = load_data("digits", (32, 32, 1)).test.x[:16].astype(np.float32) / 255.0
    np.testing.assert_allclose(saved(x), result.model(x), atol=3e-2)
    from export import export as run_export
    from export import plan_formats

    _, report = run_export(result.run_dir, output=str(tmp_path / "exports"), formats=plan_formats(tflite_out=True))
    assert report["ok"] and [r["artifact"] for r in report["artifacts"]] == ["keras", "saved_model", "tflite_float32"]


@pytest.mark.parametrize("flags, model, policy, why", [
    ({"avx512f", "avx512_bf16"}, "lenet5", "mixed_bfloat16", "this CPU has avx512_bf16"),
    ({"avx2", "fma"}, "lenet5", "float32", "no bfloat16 arithmetic"),
    ({"amx_tile", "amx_bf16"}, "mobilenet_v2", "float32", "depthwise convolutions"),
])
def test_precision_auto_follows_the_cpu_flags_and_the_model(tmp_path, monkeypatch, flags, model, policy, why):
    from keras_cnns.training import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    result = train(TrainConfig(model=model, input_size=32, epochs=1, precision="auto", data="shapes:8",
                               output=str(tmp_path / "run")))
    recorded = read_config(result.run_dir)["precision"]
    assert recorded["requested"] == "auto" and recorded["policy"] == policy and why in recorded["why"]
    assert result.metrics["precision"] == policy
    conv = next(layer for layer in result.model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == ("bfloat16" if policy == "mixed_bfloat16" else "float32")
    assert keras.mixed_precision.global_policy().name == "float32"
    assert precision.resolve("auto", gpus=["/physical_device:GPU:0"])[0] == "float32"
    assert precision.resolve("bfloat16") == ("mixed_bfloat16", "--precision bfloat16")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet20_cifar", "mobilenet_v2"])
def test_small_resnet_and_mobilenet_v2_learn_digits_at_32x32(tmp_path, model):
    # 3 epochs of 40 steps (MobileNet v2 95.2%, 4 epochs 98.1%): the default momentum (0.9) and
    # recalibration keep the inference statistics right. ResNet-20 also in bfloat16 (what --precision auto
    # chooses for it on a CPU with AVX512-BF16 or AMX), with float32 master weights: no more than 2 points (5 of the
    # 270 test digits) below float32. Measured on 2 cores with TensorFlow's default threads: bfloat16 97.0%, float32
    # 95.9%; with one intra-op thread the summation order alone swaps them (float32 97.0%, bfloat16 95.9%), so a
    # 1-point rule would be narrower than the run-to-run spread
    accuracy = {}
    for precision in ("float32", "bfloat16") if model == "resnet20_cifar" else ("auto",):
        result = train(TrainConfig(model=model, input_size=32, epochs=3, optimizer="momentum", lr=0.05,
                                   warmup_epochs=1, precision=precision, output=str(tmp_path / precision)))
        accuracy[precision] = result.metrics["accuracy"]
        assert accuracy[precision] >= 0.90, accuracy
        conv = next(layer for layer in result.model.layers if isinstance(layer, keras.layers.Conv2D))
        assert conv.compute_dtype == ("bfloat16" if result.metrics["precision"] == "mixed_bfloat16" else "float32")
        assert conv.kernel.dtype == tf.float32  # the weights the optimizer updates stay float32 in every precision
    if model == "resnet20_cifar":
        assert result.metrics["precision"] == "mixed_bfloat16"
        assert accuracy["bfloat16"] >= accuracy["float32"] - 0.02, accuracy
    else:  # MobileNet v2's int8 IR by NNCF passes its parity row: top-1 agreement >= 98%, accuracy within 1 point
        from export import export

        _, report = export(result.run_dir, output=str(tmp_path / "exports"), formats=["saved_model", "openvino-int8"])
        keras_row, row = report["artifacts"][0], report["artifacts"][-1]
        assert row["artifact"] == "openvino_int8" and row["ok"] and row["top1_agreement"] >= 0.98
        assert keras_row["accuracy"] - row["accuracy"] <= 0.01 and row["images"] >= 200


def test_snapshot_ensemble_saves_one_model_per_cycle_and_averages_them(tmp_path):
    result = train(TrainConfig(epochs=4, snapshots=2, optimizer="momentum", lr=0.05, output=str(tmp_path / "snap")))
    run = result.run_dir
    assert sorted(os.listdir(os.path.join(run, "snapshots"))) == ["epoch002.keras", "epoch004.keras"]
    lrs = [r["lr"] for r in read_history(os.path.join(run, "history.csv"))]
    assert lrs[1] < 0.01 and lrs[3] < 0.01 and lrs[2] > 0.02  # cosine to ~0, restart, cosine to ~0
    snap = result.metrics["snapshot_ensemble"]
    assert snap["members"] == 2 and len(snap["member_accuracy"]) == 2 and 0 < snap["accuracy"] <= 1
    out, metrics = ensemble_runs([run], str(tmp_path / "snap-ens"))
    assert metrics["accuracy"] == pytest.approx(snap["accuracy"])


def test_ensemble_of_runs_is_one_model_averaging_the_members(tmp_path):
    runs = [train(TrainConfig(epochs=2, seed=s, output=str(tmp_path / f"m{s}"))).run_dir for s in (1, 2)]
    out, metrics = ensemble_runs(runs, str(tmp_path / "ens"))
    model = load_run_model(out)
    members = [load_run_model(r) for r in runs]
    x = np.random.RandomState(0).randn(5, 32, 32, 1).astype(np.float32)
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    assert len(model.outputs) == 1 and len(metrics["member_accuracy"]) == 2
    assert json.load(open(os.path.join(out, "metrics.json")))["accuracy"] == metrics["accuracy"]
    with pytest.raises(CnnkitError, match="at least 2 members|snapshot"):
        ensemble_runs(runs[:1], str(tmp_path / "ens1"))


@pytest.fixture(scope="module")
def resnet_source(tmp_path_factory):
    """A source model with batch norm, saved as a .keras file (untrained weights are enough here)."""
    keras.backend.clear_session()
    model = keras_cnns.create_model("resnet20_cifar", num_classes=10, input_shape=(32, 32, 1))
    path = str(tmp_path_factory.mktemp("src") / "resnet20.keras")
    model.save(path)
    return path


def _weights_by_layer(model):
    return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers if layer.weights}


def test_finetune_head_trains_only_a_new_classifier_and_freezes_batch_norm(tmp_path, resnet_source):
    spec = str(tmp_path / "five.npz")
    data = load_data("digits", (8, 8, 1))
    keep = data.train.y >= 5
    np.savez(spec, x=data.train.x[keep][:150, ..., 0], y=data.train.y[keep][:150] - 5,
             class_names=np.array(["5", "6", "7", "8", "9"]))
    result = finetune(resnet_source, spec, strategy="head", epochs=1, batch_size=16, output=str(tmp_path / "ft"))
    before = _weights_by_layer(load_model_file(resnet_source))
    after = _weights_by_layer(load_run_model(result.run_dir, "last"))
    assert after["fc"][0].shape == (64, 5)  # re-initialised for the 5 new classes
    changed = [name for name in before if name != "fc" and
               not all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))]
    assert changed == []  # batch-norm moving statistics included: frozen BN ran in inference mode
    plan = read_config(result.run_dir)["train"]["finetune"]
    assert plan["label"] == "head" and plan["trainable"] == []

    top = finetune(resnet_source, spec, strategy="top:1", epochs=1, batch_size=16, output=str(tmp_path / "top"))
    after = _weights_by_layer(load_run_model(top.run_dir, "last"))
    changed = {name for name in before if name != "fc" and
               not all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))}
    assert changed and all(name.startswith("stage3_block3") for name in changed)
    plan = read_config(top.run_dir)["train"]["finetune"]
    assert plan["unfrozen_blocks"] == ["stage3_block3"]
    assert plan["lr"] == pytest.approx(0.1 * DEFAULT_LR["adam"])  # 1/10 of adam's default for a non-run source


def test_finetune_auto_follows_the_notes_table(tmp_path, resnet_source):
    from keras_cnns.training.transfer import choose_strategy

    assert choose_strategy(100, 10, True, 10)[0] == "head"
    assert choose_strategy(100_000, 10, True, 10)[0] == "top:3"
    assert choose_strategy(100, 10, False, 10)[0] == "top:5"
    assert choose_strategy(100_000, 10, False, 10)[0] == "full"
    result = finetune(resnet_source, "shapes:6", strategy="auto", similar=False, epochs=1, batch_size=8,
                      output=str(tmp_path / "auto"))
    plan = read_config(result.run_dir)["train"]["finetune"]
    assert plan["label"].startswith("top:") and "different domain" in plan["reason"]
    with pytest.raises(CnnkitError, match="unknown fine-tuning strategy"):
        finetune(resnet_source, "shapes:6", strategy="bottom", epochs=1)


def test_plateau_schedule_lowers_the_rate_when_validation_loss_stalls(tmp_path):
    # a rate so small nothing changes: the validation loss stalls from the first epoch
    result = train(TrainConfig(epochs=4, schedule="plateau", lr=1e-9, gamma=0.1, output=str(tmp_path / "p")))
    lrs = [r["lr"] for r in read_history(os.path.join(result.run_dir, "history.csv"))]
    assert lrs[:3] == pytest.approx([1e-9] * 3) and lrs[3] == pytest.approx(1e-10)  # patience 2, then x gamma


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path):
    result = train(TrainConfig(epochs=10, schedule="constant", lr=1e-9, early_stopping=1, output=str(tmp_path / "e")))
    assert result.metrics["epochs_completed"] == 2  # epoch 2 did not beat epoch 1


def test_label_smoothing_makes_a_perfectly_confident_prediction_cost_something():
    from keras_cnns.training.trainer import _compile

    y = np.eye(10, dtype=np.float32)[:4]
    losses = {}
    for smoothing in (0.0, 0.2):
        model = keras_cnns.create_model("lenet5")
        _compile(model, TrainConfig(label_smoothing=smoothing).validate(), steps_per_epoch=10)
        losses[smoothing] = float(model.compiled_loss(tf.constant(y), tf.constant(y * (1 - 1e-6) + 1e-7)))
    assert losses[0.0] < 1e-4
    # against the smoothed target (0.82 and 0.02s) the near-zero entries cost -0.02 log(1e-7) each
    assert losses[0.2] > 2.0
