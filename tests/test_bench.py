"""`cnnkit bench train / infer`: the commands run on tiny settings and produce well-formed results (the
numbers themselves live in benchmarks/RESULTS.md, never in a timed test)."""
import json
import math
import subprocess
import sys

import pytest
from PIL import Image

from export import export, plan_formats
from export.bench import bench_infer, plot
from keras_cnns.errors import CnnkitError
from keras_cnns.training.bench import bench_train


def test_bench_train_measures_every_mode_side_by_side():
    result = bench_train("lenet5", ["eager", "graph", "xla"], batch_size=4, steps=2, repeats=2)
    assert list(result["modes"]) == ["eager", "graph", "xla"]
    # LeNet-5's multiply-accumulates at 32x32, layer by layer: C1, C3 (all 6 maps), C5, F6, output
    lenet5_macs = 28 * 28 * 6 * 5 * 5 + 10 * 10 * 16 * 6 * 5 * 5 + 120 * 16 * 5 * 5 + 84 * 120 + 10 * 84
    assert result["macs_per_image"] == lenet5_macs == 416_520 and result["peak_gflops"] > 0
    for mode, r in result["modes"].items():
        assert 0 < r["min"] <= r["images_per_s"] <= r["max"], mode
        assert r["first_step_s"] > 0 and 0 < r["fraction_of_peak"]
        # a training step is 3 passes (forward, two backward) of 2 FLOPs per MAC
        assert r["gflops"] == pytest.approx(r["images_per_s"] * lenet5_macs * 3 * 2 / 1e9, rel=0.01)
    assert result["modes"]["eager"]["traces"] == 0  # eager never traces
    # the first step traces once (the optimiser's slots exist before it); the 4 timed steps reuse that graph
    assert result["modes"]["graph"]["traces"] == 1 and result["modes"]["xla"]["traces"] == 1


def test_bench_train_rejects_unknown_modes():
    with pytest.raises(CnnkitError, match="unknown mode"):
        bench_train("lenet5", ["eager", "jit"], steps=1, repeats=1)


def test_bench_infer_covers_every_artifact_and_the_lower_bound(tmp_path):
    path, _ = export("lenet5", output=str(tmp_path), formats=plan_formats(tflite_out=True, onnx_out=True))
    result = bench_infer(path, batch_sizes=(1, 4), threads=(1, 2), repeats=2)
    seen = {(r["runtime"], r["threads"], r["batch"]) for r in result["rows"]}
    for runtime in ("keras (eager)", "savedmodel (graph)", "keras + xla"):
        assert {(runtime, "tf", 1), (runtime, "tf", 4)} <= seen
    for runtime in ("tflite_float32", "onnx"):
        assert {(runtime, t, b) for t in ("1", "2") for b in (1, 4)} <= seen
    bounds = [r for r in result["rows"] if r["runtime"].startswith("lower bound")]
    assert len(bounds) == 2 and bounds[1]["latency_ms"] == pytest.approx(4 * bounds[0]["latency_ms"], rel=0.01)
    assert all(r["latency_ms"] > 0 and r["images_per_s"] > 0 for r in result["rows"])
    assert all(r["p10_ms"] <= r["latency_ms"] <= r["p90_ms"] for r in result["rows"] if r not in bounds)
    assert result["tf_onednn"] is True  # tests run TensorFlow as cnnkit sets it up (conftest)
    chart = plot(result, str(tmp_path / "chart.png"))
    assert Image.open(chart).size[0] > 0
    with pytest.raises(CnnkitError, match="not a cnnkit export"):
        bench_infer(str(tmp_path), repeats=1)


def test_bench_cli_json():
    out = subprocess.run([sys.executable, "-m", "cnnkit", "bench", "train", "lenet5", "--modes", "graph", "--steps",
                          "1", "--repeats", "1", "--batch-size", "2", "--json"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert list(json.loads(out.stdout)["modes"]) == ["graph"]
    out = subprocess.run([sys.executable, "-m", "cnnkit", "bench", "train", "lenet5", "--modes", "fast"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "unknown mode" in out.stderr and "Traceback" not in out.stderr


def test_bench_data_compares_pipelines_with_the_training_rate(tmp_path):
    folder = tmp_path / "photos"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (40, 40), (20 * i, 100 if label == "a" else 200, 0)).save(folder / label / f"{i}.png")
    from keras_cnns.training.bench import PIPELINES, bench_data

    for spec in ("digits", str(folder)):
        result = bench_data(spec, "lenet5", batch_size=8, batches=3, steps=2)
        assert list(result["pipelines"]) == [name for name, _ in PIPELINES]
        for name, rate in result["pipelines"].items():  # median of 3, with its spread
            low, high = result["spread"][name]
            assert 0 < low <= rate <= high
        assert result["train_spread"][0] <= result["train_images_per_s"] <= result["train_spread"][1]


def test_bench_data_calls_a_deliberately_slowed_pipeline_input_bound(monkeypatch):
    import time

    import tensorflow as tf

    import keras_cnns.data as data_module
    from keras_cnns.training.bench import bench_data

    real = data_module.make_dataset

    def slowed(*args, **kwargs):  # 100 ms per batch of 8: at most 80 images/s, far below LeNet-5's training rate
        def wait(x):
            time.sleep(0.1)
            return x

        return real(*args, **kwargs).map(lambda x, y: (tf.py_function(wait, [x], tf.float32), y))

    monkeypatch.setattr(data_module, "make_dataset", slowed)
    result = bench_data("shapes:8", "lenet5", batch_size=8, batches=3, steps=4, repeats=2)
    assert max(result["pipelines"].values()) <= 8 / 0.1 * 1.05
    assert result["train_images_per_s"] > 200 and result["input_bound"]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_pytorch_twins_have_the_keras_parameter_count(name):
    """The static-vs-dynamic comparison is only fair on the same architecture: equal trainable parameters."""
    import torch

    import keras_cnns
    from benchmarks import torch_models
    from keras_cnns.analysis import count_trainable

    keras_model = keras_cnns.inference_model(keras_cnns.create_model(name, num_classes=10, input_shape=(32, 32, 3)))
    twin = torch_models.create(name)
    assert torch_models.trainable_params(twin) == count_trainable(keras_model)
    out = twin(torch.zeros(2, 3, 32, 32))
    assert tuple(out.shape) == (2, 10)


def test_static_vs_dynamic_bf16_steps_pytorch_under_bfloat16_autocast(monkeypatch):
    """--precision bf16: PyTorch's forward pass computes in bfloat16 (autocast) and its weights stay float32."""
    import torch

    from benchmarks import static_vs_dynamic, torch_models
    from keras_cnns.training import bench

    created, seen = [], []
    original = torch_models.create
    monkeypatch.setattr(torch_models, "create", lambda *a, **k: created.append(original(*a, **k)) or created[-1])
    x, y = bench.batch_of(4, (32, 32, 3), 10)
    steps, first, _ = static_vs_dynamic.torch_steppers("resnet18", x, y, compiled_too=False, bf16=True)
    assert list(steps) == list(first) == ["torch eager bf16"]
    conv = next(m for m in created[-1].modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    loss = steps["torch eager bf16"]()
    assert seen == [torch.bfloat16] and conv.weight.dtype == torch.float32 and math.isfinite(loss)
