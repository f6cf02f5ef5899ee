"""Training from the command line as a user runs it: killed runs, several devices, several workers,
determinism and every user error as one line."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import cnnkit_here

from keras_cnns.training.callbacks import read_history

CNNKIT = [sys.executable, "-m", "cnnkit"]


def run(*args, env=None, timeout=600):
    return subprocess.run([*CNNKIT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_json(out):
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_sigkill_mid_epoch_then_resume_finishes_the_configured_epochs(tmp_path):
    run_dir = str(tmp_path / "killed")
    history = os.path.join(run_dir, "history.csv")
    proc = subprocess.Popen([*CNNKIT, "train", "lenet5", "--epochs", "6", "--batch-size", "4", "--output", run_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_history(history)) < 2:
        time.sleep(0.2)
    time.sleep(0.5)  # into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [r["epoch"] for r in read_history(history)]
    assert 2 <= len(done) < 6 and not os.path.exists(os.path.join(run_dir, "metrics.json"))

    out = run("train", "--resume", run_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Epoch 1/6" not in out.stdout and "Epoch 6/6" in out.stdout  # continued, not restarted
    assert [r["epoch"] for r in read_history(history)] == list(range(1, 7))  # each epoch exactly once
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["epochs_completed"] == 6
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert len(config["resumed"]) == 1


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(tmp_path):
    out = run("train", "lenet5", "--epochs", "1", "--strategy", "mirrored", "--output", str(tmp_path / "m"),
              "--json", env={"CNNKIT_CPU_DEVICES": "2"})
    metrics = one_json(out)["metrics"]
    assert metrics["replicas"] == 2 and metrics["strategy"] == "mirrored" and metrics["accuracy"] > 0.5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multiworker_run_with_two_processes_on_localhost(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([*CNNKIT, "train", "lenet5", "--epochs", "2", "--strategy", "multiworker",
                                       "--output", str(tmp_path / f"w{index}"), "--json"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    chief, worker = (json.loads(stdout) for stdout, _ in outs)
    assert chief["metrics"]["replicas"] == 2 and chief["metrics"]["strategy"] == "multiworker"
    assert chief["metrics"]["epochs_completed"] == 2 and worker["metrics"] == {"worker": True, "replicas": 2}
    assert os.path.exists(tmp_path / "w0" / "metrics.json") and not os.path.exists(tmp_path / "w1" / "metrics.json")


def test_same_seed_and_deterministic_give_identical_runs(tmp_path):
    results = []
    for name in ("a", "b"):
        out = run("train", "lenet5", "--epochs", "2", "--augment", "crop,noise", "--seed", "7", "--deterministic",
                  "--output", str(tmp_path / name), "--json")
        metrics = one_json(out)["metrics"]
        rows = read_history(str(tmp_path / name / "history.csv"))
        results.append(([{k: v for k, v in r.items() if k != "seconds"} for r in rows],
                        metrics["accuracy"], metrics["loss"], metrics["confusion_matrix"]))
    assert results[0] == results[1]


def test_evaluate_and_finetune_from_the_command_line(tmp_path):
    """In this process (cnnkit_here): ten commands, each of which would start TensorFlow again."""
    src = str(tmp_path / "src")
    one_json(cnnkit_here("train", "lenet5", "--epochs", "1", "--output", src, "--json"))
    out = cnnkit_here("evaluate", src)
    assert out.returncode == 0 and "test accuracy" in out.stdout and "precision" in out.stdout
    assert os.path.exists(os.path.join(src, "confusion.png")) and os.path.exists(os.path.join(src, "reliability.png"))
    assert "calibration: ECE " in out.stdout and "validation images) gives " in out.stdout
    evaluated = one_json(cnnkit_here("evaluate", src, "--json"))
    assert evaluated["samples"] == 269 and len(evaluated["confusion_matrix"]) == 10
    wrong = cnnkit_here("evaluate", os.path.join(src, "best.keras"))
    assert wrong.returncode == 2 and "is a model file of the run" in wrong.stderr and "give the run directory" in \
        wrong.stderr

    out = cnnkit_here("finetune", src, "--data", "shapes:10", "--epochs", "1", "--output", str(tmp_path / "ft"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finetune strategy head: small data set" in out.stderr and "strategy" not in out.stdout  # said once
    (rate,) = [line.split(": ")[1] for line in out.stdout.splitlines() if line.startswith("learning rate: ")]
    assert len(rate) <= 8 and float(rate) > 0  # 1/10 of the source's, as a person writes it (not 0.00030000000000000003)
    out = cnnkit_here("finetune", src, "--data", "shapes:10", "--different", "--epochs", "1", "--output",
              str(tmp_path / "ft2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finetune strategy top:" in out.stderr and "different domain" in out.stderr  # the notes' table, other row

    other = str(tmp_path / "src2")
    one_json(cnnkit_here("train", "lenet5", "--epochs", "1", "--seed", "1", "--output", other, "--json"))
    ensemble = one_json(cnnkit_here("ensemble", src, other, "--output", str(tmp_path / "ens"), "--json"))
    members = [one_json(cnnkit_here("evaluate", r, "--json"))["accuracy"] for r in (src, other)]
    assert ensemble["metrics"]["samples"] == 269 and ensemble["metrics"]["accuracy"] >= min(members) - 0.02
    assert os.path.exists(tmp_path / "ens" / "best.keras")


def test_a_run_trained_on_a_relative_folder_works_from_anywhere_and_says_when_its_data_moved(tmp_path, monkeypatch):
    from conftest import write_photos

    write_photos(tmp_path / "work" / "photos", per_class=12, size=16)
    write_photos(tmp_path / "heldout", per_class=4, size=16, seed=5)
    monkeypatch.chdir(tmp_path / "work")
    run = one_json(cnnkit_here("train", "lenet5", "--data", "./photos", "--epochs", "1", "--output", "run",
                               "--json"))["run_dir"]
    assert json.load(open(os.path.join(run, "config.json")))["data"]["spec"] == str(tmp_path / "work" / "photos")
    monkeypatch.chdir(tmp_path)  # another folder: the run still finds its data
    out = cnnkit_here("evaluate", os.path.join("work", "run"))
    assert out.returncode == 0, out.stderr[-2000:]
    # 36 photos: a test split of 6 (one image is 16.7 points), and too few validation images for a temperature
    assert "warning: only 6 images evaluated: one image moves the accuracy by 16.7 points" in out.stdout
    assert "only 6 validation images (a temperature needs at least 50)" in out.stdout
    # another data set by a relative path: its plots are named by the folder, not by "./"
    out = cnnkit_here("evaluate", os.path.join("work", "run"), "--data", "./heldout")
    assert out.returncode == 0 and os.path.exists(tmp_path / "work" / "run" / "confusion-heldout-all.png")
    os.rename(tmp_path / "work" / "photos", tmp_path / "work" / "moved")
    out = cnnkit_here("evaluate", os.path.join("work", "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"was made from {tmp_path / 'work' / 'photos'}, which no longer exists (moved or deleted?): give its " \
        "new place with --data SPEC" in out.stderr and "cannot use --data" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["train"], "name a MODEL to train"),
    (["train", "lenet5", "--data", "nowhere"], "cannot use --data 'nowhere'"),
    (["train", "lenet5", "--augment", "rotate"], "unknown augmentation rotate"),
    (["train", "lenet5", "--snapshots", "5", "--epochs", "2"], "5 snapshots need at least as many epochs"),
    (["train", "lenet5", "--warmup-epochs", "3", "--epochs", "2"], "warm-up must be shorter"),
    (["train", "lenet5", "--strategy", "multiworker"], "needs TF_CONFIG"),
    (["train", "--resume", "."], "is not a run directory"),
    (["evaluate", "no-such-run"], "run directory no-such-run does not exist"),
    (["profile", "mobilenet", "-o", "alpha=abc"], "option alpha of mobilenet takes a number (default 1.0), got 'abc'"),
    (["predict", "x.png", "--model", "m", "--server", "localhost:8501"], "REST needs http://localhost:8501"),
    (["predict", "x.png", "--model", "m", "--server", "http://localhost:8500", "--grpc"], "not a URL"),
    (["finetune", "model.onnx", "--data", "digits"], "must be a run directory, a .keras/.h5 model file or a zoo model name"),
])
def test_user_errors_are_one_line_exit_2(args, message):
    """In this process (the same path as `python -m cnnkit`, without starting TensorFlow a dozen times); the
    test after it proves the same in a real process, where TensorFlow's own start-up output could get in."""
    out = cnnkit_here(*args, env={"TF_CONFIG": ""})
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: ") and message in lines[0], out.stderr


def test_a_user_error_after_tensorflow_started_is_one_line_in_a_real_process():
    out = run("train", "lenet5", "--snapshots", "5", "--epochs", "2")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == "cnnkit: error: 5 snapshots need at least as many epochs, got 2", out.stderr


def test_mixed_float16_on_a_cpu_is_one_plain_warning_not_a_native_error_line(tmp_path):
    out = run("train", "lenet5", "--epochs", "1", "--precision", "mixed_float16", "--output", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mixed_bfloat16" in out.stderr and "oneDNN" not in out.stderr and "E0000" not in out.stderr


def test_a_keras_data_set_that_cannot_download_is_one_line_and_leaves_no_run_folder(tmp_path):
    # a refused proxy makes the download fail as it fails offline, wherever the test runs
    env = {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    out = subprocess.run([*CNNKIT, "train", "lenet5", "--data", "keras:cifar10", "--epochs", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot download the Keras data set cifar10" in out.stderr and "--data DIR" in out.stderr
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("user_value, expected", [(None, True), ("0", False)])
def test_training_turns_onednn_on_unless_the_user_set_it(tmp_path, user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    out = subprocess.run([*CNNKIT, "train", "lenet5", "--epochs", "1", "--output", str(tmp_path / "r")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.load(open(tmp_path / "r" / "config.json"))
    assert config["versions"]["tf_onednn"] is expected  # read from TensorFlow, not from the variable


def test_bn_momentum_reaches_every_batch_norm_layer(tmp_path):
    import tf_keras as keras

    from keras_cnns.files import load_model_file

    out = run("train", "resnet20_cifar", "--data", "shapes:6", "--input-size", "32", "--epochs", "1",
              "--bn-momentum", "0.95", "--output", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr[-3000:]
    model = load_model_file(str(tmp_path / "r" / "last.keras"))
    momenta = [l.momentum for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    config = json.load(open(tmp_path / "r" / "config.json"))
    assert len(momenta) == config["batch_norm"]["layers"] == 19 and set(momenta) == {0.95}
