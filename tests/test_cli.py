"""The command line, run as a user runs it: real processes, real exit codes, real stderr."""
import json
import subprocess
import sys

import pytest

from keras_cnns import get_model_info, list_models

SUBCOMMANDS = ["models", "summary", "profile", "train", "lr-find", "evaluate", "finetune", "ensemble", "export", "validate",
               "quickstart", "serve", "predict", "bench serve", "bench train",
               "bench infer", "bench data"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=600)


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == "cnnkit, version 0.1.0"


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command):
    out = run(*command.split(), "--help")
    assert out.returncode == 0 and "Usage: cnnkit " + command in out.stdout and "--json" in out.stdout


@pytest.mark.parametrize("command", ["summary", "profile", "train"])
def test_unknown_model_is_one_line_exit_2_no_traceback(command):
    out = run(command, "resnet19")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "cnnkit: error: unknown model 'resnet19'; did you mean resnet18, resnet152, resnet101? "
        "(`cnnkit models` lists all)"]
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_bad_option_and_bad_size_are_one_line_errors():
    out = run("summary", "mobilenet", "-o", "alpha")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "KEY=VALUE" in out.stderr
    out = run("summary", "vgg16", "--input-size", "8")
    assert out.returncode == 2 and "too small" in out.stderr and "Traceback" not in out.stderr


def test_models_json_lists_every_model_with_reference_counts():
    out = run("models", "--json")
    assert out.returncode == 0
    rows = {r["name"]: r for r in json.loads(out.stdout)["models"]}
    assert list(rows) == list_models()
    for name, row in rows.items():
        info = get_model_info(name)
        if info.reference_params is not None and info.params_counted == "all":
            assert row["params"] == info.reference_params, name
        assert row["macs"] > 0 and row["year"] == info.year


def test_models_table_and_family_filter():
    out = run("models", "--family", "squeezenet")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "family", "params", "MACs"]
    assert [l.split()[0] for l in lines[2:]] == ["squeezenet1_0", "squeezenet1_1"]
    assert "1.25M" in lines[2]


def test_summary_of_lenet():
    out = run("summary", "lenet5")
    assert out.returncode == 0, out.stderr
    assert "c5_conv" in out.stdout and "48,120" in out.stdout and "total params: 61,706" in out.stdout


def test_summary_with_options_and_input_size_as_json():
    out = run("summary", "mobilenet", "-o", "alpha=0.25", "--input-size", "128", "--num-classes", "10", "--json")
    data = json.loads(out.stdout)
    assert data["input_shape"] == [128, 128, 3] and data["layers"][-1]["output_shape"] == [None, 10]


def test_profile_with_tf_check_and_plot(tmp_path):
    chart = tmp_path / "zoo.png"
    out = run("profile", "squeezenet1_1", "--input-size", "64", "--tf-check", "--plot", str(chart),
              "--compare", "alexnet,googlenet", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["tf_profiler"]["conv_matmul_flops"] == 2 * data["macs"]
    assert data["plot"]["models"] == ["alexnet", "googlenet", "squeezenet1_1"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_profile_table_reports_totals():
    out = run("profile", "nin_cifar", "--no-layers")
    assert out.returncode == 0
    assert "params                966,986" in out.stdout and "MACs" in out.stdout and "activations" in out.stdout


def test_console_script_is_installed():
    out = subprocess.run(["cnnkit", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "0.1.0" in out.stdout


def test_a_near_miss_model_name_for_predict_gets_suggestions(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    out = run("predict", str(tmp_path / "x.png"), "--model", "resnet15")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model resnet15 does not exist" in out.stderr and "did you mean the zoo's" in out.stderr
    assert "resnet18" in out.stderr.splitlines()[-1]


def test_serve_on_a_port_in_use_fails_at_once_before_loading_any_model(tmp_path):
    import socket
    import time

    base = tmp_path / "exports" / "broken" / "1"  # a version that would take long to load, or fail: never reached
    base.mkdir(parents=True)
    (base / "saved_model.pb").write_bytes(b"not a graph")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        out = run("serve", str(tmp_path / "exports"), "--port", str(port), "--no-grpc")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use (--port picks another)" in out.stderr
        assert "cannot load" not in out.stderr and "broken" not in out.stderr  # no model was loaded
        assert time.monotonic() - start < 60
        out = run("serve", str(tmp_path / "exports"), "--port", "0", "--grpc-port", str(port))
        assert out.returncode == 2 and f"cannot listen for gRPC on 127.0.0.1:{port}" in out.stderr
