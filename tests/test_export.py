"""Export: SavedModel layout and signatures, TFLite in LiteRT, ONNX in ONNX Runtime, the parity report,
versioning, and bad input that must leave earlier exports untouched."""
import errno
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import cnnkit_here
from PIL import Image

from export import export as run_export
from export import openvino_format, parity, plan_formats, tflite, validate
from keras_cnns.data import load_data
from keras_cnns.errors import CnnkitError
from keras_cnns.training import TrainConfig, train
from serving import client


@pytest.fixture(scope="module")
def trained(tmp_path_factory, default_lenet_run):
    root = tmp_path_factory.mktemp("export")
    result = default_lenet_run
    path, report = run_export(result.run_dir, output=str(root / "exports"), formats=plan_formats(everything=True))
    return {"run": result.run_dir, "base": str(root / "exports" / "lenet5"), "path": path, "report": report,
            "metrics": result.metrics}


def _digest(folder):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(open(os.path.join(d, f), "rb").read())
    return h.hexdigest()


def test_layout_is_what_tf_serving_loads(trained):
    path = trained["path"]
    assert path.endswith(os.path.join("lenet5", "1"))
    for rel in ("saved_model.pb", "variables", "assets/labels.txt", "tflite/model_float32.tflite",
                "tflite/model_int8.tflite", "onnx/model.onnx", "onnx/model_int8.onnx", "openvino/model.xml",
                "openvino/model.bin", "report.json", "report.md", "export.json"):
        assert os.path.exists(os.path.join(path, rel)), rel
    assert open(os.path.join(path, "assets", "labels.txt")).read().split() == [str(i) for i in range(10)]
    assert not [d for d in os.listdir(trained["base"]) if d.startswith(".")]  # no partial versions left
    # the graph and its variables only: no Keras layer objects, whose saving traces every layer (and loading
    # revives them) for nothing a consumer reads
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    assert not [n for n in nodes if n.WhichOneof("kind") == "user_object" and "keras" in n.user_object.identifier]
    assert sum(n.WhichOneof("kind") == "variable" for n in nodes) == 10  # LeNet-5's weights and biases


def test_every_artifact_agrees_with_keras_within_tolerance(trained):
    rows = {r["artifact"]: r for r in trained["report"]["artifacts"]}
    bf16 = openvino_format.bf16_unavailable() is None  # OpenVINO's bfloat16 row: only on a CPU that has bfloat16
    assert openvino_format.nncf_missing() is None  # NNCF comes with the openvino extra (and dev)
    assert set(rows) == {"keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8",
                         "onnx", "onnx_float16", "onnx_int8", "openvino", "openvino_int8"} | (
                            {"openvino_bf16"} if bf16 else set())
    for name in ("saved_model", "tflite_float32", "onnx", "openvino"):
        assert rows[name]["max_abs_diff"] <= 1e-4, name
    assert rows["tflite_float16"]["max_abs_diff"] <= 1e-2 and rows["onnx_float16"]["max_abs_diff"] <= 1e-2
    if bf16:
        assert rows["openvino_bf16"]["max_abs_diff"] <= 5e-2 and rows["openvino_bf16"]["top1_agreement"] >= 0.98
        assert rows["openvino_bf16"]["bytes"] < rows["openvino"]["bytes"] * 0.6  # float16 weights
    ir = os.path.join(trained["path"], "openvino", "model")
    assert rows["openvino"]["bytes"] == os.path.getsize(ir + ".xml") + os.path.getsize(ir + ".bin")
    for name in ("tflite_dynamic", "tflite_int8", "onnx_int8", "openvino_int8"):
        assert rows[name]["top1_agreement"] >= 0.98
        assert rows["keras"]["accuracy"] - rows[name]["accuracy"] <= 0.01
        assert rows[name]["tolerance"].startswith("top-1 agreement >= 98%")  # held as int8, never as exact
    # NNCF's IR: int8 weights (LeNet-5: 102 KiB against 260 KiB), calibrated on the run's training images, its
    # convolutions and matrix products fed by FakeQuantize (none left in float), run with the f32 hint
    assert rows["openvino_int8"]["bytes"] < rows["openvino"]["bytes"] * 0.5
    assert rows["openvino_int8"]["quantizer"].startswith("NNCF ") and rows["openvino_int8"]["float_layers"] == []
    assert rows["openvino_int8"]["calibration"]["images"] == 200
    assert openvino_format.Runner(os.path.join(trained["path"], "openvino", "model_int8.xml")).precision == "f32"
    assert rows["keras"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])  # the whole test split
    assert rows["tflite_int8"]["bytes"] < rows["tflite_float32"]["bytes"] / 3
    saved = json.load(open(os.path.join(trained["path"], "report.json")))
    assert saved["ok"] and saved["tflite_gpu_delegate"]["compatible"]
    assert "| tflite_int8 |" in open(os.path.join(trained["path"], "report.md")).read()


def test_openvino_runs_the_export_exactly_and_auto_takes_it_where_it_is_fastest(trained, tmp_path, monkeypatch):
    import dataclasses
    import shutil

    from export import exporter, formats
    from export.local import LocalModel, runtimes

    photo = io.BytesIO()
    Image.fromarray(load_data("digits", (32, 32, 1)).test.x[0][..., 0]).save(photo, format="PNG")
    assert "openvino" in runtimes()
    (got,), (want,) = (LocalModel(trained["path"], runtime=r).classify([photo.getvalue()]) for r in ("openvino",
                                                                                                     "savedmodel"))
    assert got.runtime == "openvino" and got.label == want.label and abs(got.score - want.score) < 1e-4
    ir = os.path.join(trained["path"], "openvino", "model.xml")
    assert LocalModel(ir).kind == "openvino"  # a lone IR file runs too, at its recorded precision
    assert openvino_format.Runner(ir).precision == "f32"

    # auto: the fastest artifact of the report within the budget (the recorded batch-1 latencies decide); --exact:
    # the fastest exact one, never the int8 or bfloat16 IR however fast
    from export.choice import Budget

    copy = str(tmp_path / "1")
    shutil.copytree(trained["path"], copy)
    report = json.load(open(os.path.join(copy, "report.json")))
    for fastest in ("openvino", "onnx"):
        for row in report["artifacts"]:
            row["latency_ms"] = 0.01 if row["artifact"] in (fastest, "openvino_bf16", "openvino_int8") else 5.0
        json.dump(report, open(os.path.join(copy, "report.json"), "w"))
        assert LocalModel(copy, budget=Budget(exact=True)).kind == fastest
    int8_row = next(r for r in report["artifacts"] if r["artifact"] == "openvino_int8")
    int8_row["latency_ms"] = 0.001
    json.dump(report, open(os.path.join(copy, "report.json"), "w"))
    lost = round((report["artifacts"][0]["accuracy"] - int8_row["accuracy"]) * report["images"])
    within = int8_row["top1_agreement"] >= 0.995 and lost <= 1  # the default budget
    local = LocalModel(copy)
    assert local.kind == ("openvino-int8" if within else fastest), (int8_row["top1_agreement"], lost)
    assert local.choice.artifact == local.choice.as_dict()["artifact"] and local.choice.reason
    (got,) = local.classify([photo.getvalue()])
    assert got.runtime == local.kind and got.label == want.label
    assert LocalModel(copy, budget=Budget(max_accuracy_drop=5)).kind == "openvino-int8"
    # an IR left out of a version goes with its weights
    for row in report["artifacts"]:
        row["ok"] = row["artifact"] != "openvino"
    exporter._publish_what_passed(copy, report)
    assert sorted(os.listdir(os.path.join(copy, "openvino"))) == sorted(
        f for f in os.listdir(os.path.join(trained["path"], "openvino")) if not f.startswith("model."))

    # the plan leaves out what this machine cannot run, both ways, and says why when one is asked for by name
    bf16 = formats.FORMATS["openvino-bf16"]
    monkeypatch.setitem(formats.FORMATS, "openvino-bf16", dataclasses.replace(bf16, available=lambda: "no bf16"))
    assert plan_formats(openvino_out=True) == ["saved_model", "openvino"]
    assert plan_formats(openvino_out=True, onnx_out=True, quantize="int8") == [
        "saved_model", "onnx", "onnx-int8", "openvino", "openvino-int8"]  # NNCF's int8 with --quantize int8
    assert "openvino-bf16" not in plan_formats(everything=True)
    with pytest.raises(CnnkitError, match="cannot write openvino-bf16 here: no bf16"):
        plan_formats(extra=["openvino-bf16"])
    monkeypatch.setitem(formats.FORMATS, "openvino-bf16", dataclasses.replace(bf16, available=lambda: None))
    assert plan_formats(onnx_out=True, openvino_out=True) == ["saved_model", "onnx", "openvino", "openvino-bf16"]
    monkeypatch.setitem(formats.FORMATS, "openvino", dataclasses.replace(
        formats.FORMATS["openvino"], available=lambda: "OpenVINO is not installed"))
    with pytest.raises(CnnkitError, match="--openvino: OpenVINO is not installed"):
        plan_formats(openvino_out=True)

    # bfloat16 is judged by its tolerance and top-1 agreement, never called exact
    assert not bf16.exact and bf16.tolerance == parity.BFLOAT16_TOLERANCE
    for agreement, ok in ((0.99, True), (0.9, False)):
        row = {"ok": True, "tolerance": "max |diff| <= 0.05", "top1_agreement": agreement}
        openvino_format.judge(row, bf16, None, None, {})
        assert row["ok"] is ok and "top-1 agreement >= 98%" in row["tolerance"]


SCRIPT = """
import sys, json, numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = model.signatures["serving_default"](images=tf.constant(images, tf.float32))
out8 = model.signatures["serving_uint8"](images=tf.constant(images.astype(np.uint8)))
png = [open(p, "rb").read() for p in sys.argv[3:]]
outb = model.signatures["serving_bytes"](image_bytes=tf.constant(png))
again = model.signatures["serving_default"](images=tf.constant(images, tf.float32))
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in ("keras_cnns", "export", "cnnkit")),
                  "keys": sorted(out), "labels": [s.decode() for s in out["labels"].numpy()],
                  "classes": out["classes"].numpy().tolist(), "top": out["top_classes"].numpy()[:, 0].tolist(),
                  "same": bool(np.array_equal(out["probabilities"].numpy(), again["probabilities"].numpy())),
                  "uint8_diff": float(np.abs(out8["probabilities"].numpy() - out["probabilities"].numpy()).max()),
                  "bytes_classes": outb["classes"].numpy().tolist()}))
"""


def test_savedmodel_runs_in_a_process_that_imports_only_tensorflow(trained, tmp_path):
    data = load_data("digits", (32, 32, 1))
    images = data.test.x[:6]
    np.save(tmp_path / "x.npy", images)
    files = []
    for i, image in enumerate(images[:3]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image[..., 0]).save(path)
        files.append(str(path))
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), trained["path"], str(tmp_path / "x.npy"), *files],
                         capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["modules"] == []  # our packages are not needed to run the graph
    assert result["keys"] == ["classes", "labels", "probabilities", "scores", "top_classes", "top_labels"]
    assert result["labels"] == [str(c) for c in result["classes"]] and result["top"] == result["classes"]
    assert result["same"] and result["uint8_diff"] == 0.0
    assert result["bytes_classes"] == result["classes"][:3]  # PNG bytes decoded in the graph
    assert np.mean(np.array(result["classes"]) == data.test.y[:6]) >= 5 / 6


def test_saved_model_cli_lists_the_named_signatures(trained):
    out = subprocess.run(["saved_model_cli", "show", "--dir", trained["path"], "--all"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("serving_default", "serving_uint8", "serving_bytes", "probabilities", "image_bytes", "labels",
                 "scores"):
        assert name in out.stdout


def _export_model_file(model, tmp_path, name, **options):
    """Save a Keras model built in the test (no cnnkit contract) and export it with class names and
    preprocessing given, as a user of a Keras file from elsewhere must."""
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    labels = tmp_path / f"{name}-labels.txt"
    labels.write_text("".join(f"c{i}\n" for i in range(int(model.outputs[0].shape[-1]))))
    return run_export(path, output=str(tmp_path / "exports"), labels=str(labels), preprocessing="unit", **options)


@pytest.mark.parametrize("model, options", [("fractalnet20_cifar", {}), ("resnet20_cifar", {"stochastic_depth": 0.5}),
                                            ("googlenet", {})])
def test_training_only_parts_leave_the_serving_graph(tmp_path, model, options):
    """Drop-path, dropout, stochastic depth and GoogLeNet's auxiliary heads are training-only."""
    import keras_cnns
    from export.savedmodel import has_random_ops, load_probabilities

    built = keras_cnns.create_model(model, num_classes=4, input_shape=(32, 32, 3), **options)
    path, _ = _export_model_file(built, tmp_path, model)
    assert has_random_ops(path) == []
    x = np.random.RandomState(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    run = load_probabilities(path)
    first, second = run(x), run(x)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (3, 4)  # one output: no auxiliary heads


def _conv_bn_model():
    """Conv -> BN pairs that fold (plain, bias-free, depthwise with multiplier 2, BN without centre, inside a
    nested model) and two that must not (a ReLU between them; a conv output used twice)."""
    import tf_keras as keras

    L = keras.layers
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(inner_in, L.BatchNormalization(name="inner_bn")(L.Conv2D(6, 1, name="inner_conv")(inner_in)),
                        name="inner")
    x = inputs = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(name="bn_plain")(L.Conv2D(4, 3, padding="same", use_bias=False)(x)))
    x = L.BatchNormalization(center=False, name="bn_depthwise")(L.DepthwiseConv2D(3, depth_multiplier=2,
                                                                                padding="same")(x))
    x = L.BatchNormalization(name="bn_after_relu")(L.Conv2D(6, 1, activation="relu")(x))
    shared = L.Conv2D(6, 1)(x)
    x = L.Add()([L.BatchNormalization(name="bn_shared")(shared), shared])
    x = inner(x)
    model = keras.Model(inputs, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))
    rs = np.random.RandomState(0)
    for bn in [l for l in model.layers if "bn" in l.name] + [inner.get_layer("inner_bn")]:
        bn.set_weights([rs.uniform(0.5, 2.0, w.shape) if "variance" in w.name or "gamma" in w.name
                        else rs.normal(0, 0.5, w.shape) for w in bn.weights])
    return model


def test_batch_norms_fold_into_their_convolutions_in_the_serving_graph(tmp_path):
    import tensorflow as tf

    from export.fold import fold_batch_norms

    model = _conv_bn_model()
    x = np.random.RandomState(1).normal(0, 1, (4, 8, 8, 3)).astype(np.float32)
    before = model(x, training=False).numpy()
    folded = fold_batch_norms(model)

    def bns(m):
        return sorted(l.name for l in m.layers if type(l).__name__ == "BatchNormalization")

    assert bns(folded) == ["bn_after_relu", "bn_shared"] and bns(folded.get_layer("inner")) == []
    np.testing.assert_allclose(folded(x, training=False).numpy(), before, atol=1e-6)
    assert bns(model) == ["bn_after_relu", "bn_depthwise", "bn_plain", "bn_shared"]  # the original is untouched
    np.testing.assert_array_equal(model(x, training=False).numpy(), before)
    assert fold_batch_norms(folded) is folded  # nothing left to fold

    path, report = _export_model_file(model, tmp_path, "convbn")
    graph = tf.saved_model.load(path).signatures["probabilities"].graph.as_graph_def()
    ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
    assert sum(op.startswith("FusedBatchNorm") for op in ops) == 2  # the two that cannot fold
    assert report["artifacts"][1]["max_abs_diff"] <= 1e-5


def test_tflite_files_carry_labels_use_builtin_ops_and_run_in_litert(trained):
    data = load_data("digits", (32, 32, 1))
    x = data.test.x[:8].astype(np.float32)
    for variant in ("float32", "int8"):
        path = os.path.join(trained["path"], "tflite", f"model_{variant}.tflite")
        assert tflite.read_labels(path) == [str(i) for i in range(10)]
        content = open(path, "rb").read()
        tflite.check_builtin_only(content)
        assert not any(op.startswith("FLEX") or op == "CUSTOM" for op in tflite.op_names(content))
        runner = tflite.Runner(path)
        assert type(runner.interpreter).__module__.startswith("ai_edge_litert")  # the phone runtime, not TF
        probabilities = runner(x)
        assert probabilities.shape == (8, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=0.05)
    assert tflite.Runner(os.path.join(trained["path"], "tflite", "model_int8.tflite")).input["dtype"] == np.uint8


def test_a_fitted_temperature_travels_into_the_export_and_its_probabilities_are_calibrated(trained, tmp_path):
    from keras_cnns.training import calibration

    fitted = trained["metrics"]["calibration"]
    path, report = run_export(trained["run"], output=str(tmp_path), formats=plan_formats(tflite_out=True),
                              temperature="fitted")
    assert report["ok"]  # every artifact against the calibrated Keras model
    record = json.load(open(os.path.join(path, "export.json")))["temperature"]
    assert record["value"] == fitted["temperature"] and record["layer"] == "output"
    data = load_data("digits", (32, 32, 1))
    x = data.test.x.astype(np.float32)
    raw = tflite.Runner(os.path.join(trained["path"], "tflite", "model_float32.tflite"))(x)
    calibrated = tflite.Runner(os.path.join(path, "tflite", "model_float32.tflite"))(x)
    np.testing.assert_allclose(calibrated, calibration.temperature_scaled(raw, fitted["temperature"]), atol=1e-4)
    np.testing.assert_array_equal(calibrated.argmax(1), raw.argmax(1))
    # the phone's probabilities have the calibration error evaluation reported after the temperature
    assert calibration.reliability(calibrated, data.test.y)["ece"] == pytest.approx(fitted["ece_after_temperature"],
                                                                                    abs=1e-3)
    with pytest.raises(CnnkitError, match="already has the temperature .* folded in"):
        run_export(path, output=str(tmp_path), temperature=2.0)
    for bad, message in (("warm", "is fitted or a number > 0"), (0, "is fitted or a number > 0")):
        with pytest.raises(CnnkitError, match=message):
            run_export(trained["run"], output=str(tmp_path / "bad"), temperature=bad)
    with pytest.raises(CnnkitError, match="--temperature fitted takes the temperature a training run fitted"):
        run_export("lenet5", output=str(tmp_path / "bad"), temperature="fitted")
    assert not os.path.exists(tmp_path / "bad")


def test_a_new_export_is_the_next_version_and_leaves_the_old_one_alone(trained):
    before = _digest(trained["path"])
    path, _ = run_export(trained["run"], output=os.path.dirname(trained["base"]))
    assert path.endswith(os.path.join("lenet5", "2"))
    assert _digest(trained["path"]) == before
    with pytest.raises(CnnkitError, match="already exists; exports never overwrite"):
        run_export(trained["run"], output=os.path.dirname(trained["base"]), version=1)


def test_out_of_tolerance_fails_the_export_naming_the_artifact(trained, monkeypatch):
    # A zero tolerance fails the TFLite artifact (its kernels round differently); the SavedModel graph may
    # fail too under oneDNN's fused kernels, so the message is matched for the TFLite entry wherever it is.
    monkeypatch.setattr(parity, "FLOAT_TOLERANCE", 0.0)
    versions = sorted(os.listdir(trained["base"]))
    with pytest.raises(CnnkitError, match=r"out of tolerance, nothing exported: (.*; )?tflite_float32: max \|diff\|"):
        run_export(trained["run"], output=os.path.dirname(trained["base"]), formats=plan_formats(tflite_out=True))
    assert sorted(os.listdir(trained["base"])) == versions  # nothing published, nothing half-written
    report = validate(trained["path"])
    assert not report["ok"]


def test_a_failing_variant_is_reported_with_every_row_or_left_out_on_request(trained, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cnnkit.cli import cli
    from export.exporter import ExportFailed

    monkeypatch.setattr(parity, "MIN_AGREEMENT", 1.01)  # no quantized artifact can pass; float ones still do
    formats = plan_formats(tflite_out=True, quantize="dynamic")
    with pytest.raises(ExportFailed, match=r"tflite_dynamic: .*accuracy [\d.]+% \(Keras [\d.]+%\)") as failed:
        run_export(trained["run"], output=str(tmp_path / "none"), formats=formats)
    rows = {r["artifact"]: r for r in failed.value.report["artifacts"]}
    assert set(rows) == {"keras", "saved_model", "tflite_float32", "tflite_dynamic"}
    assert rows["tflite_float32"]["ok"] and not rows["tflite_dynamic"]["ok"] and rows["tflite_dynamic"]["accuracy"] > 0
    assert not os.path.exists(tmp_path / "none" / "lenet5" / "1")  # all or nothing by default
    # the CLI prints every row on failure, in JSON too, and exits 1
    out = CliRunner().invoke(cli, ["export", trained["run"], "--output", str(tmp_path / "cli"), "--tflite",
                                   "--quantize", "dynamic", "--json"])
    assert out.exit_code == 1
    assert [r["artifact"] for r in json.loads(out.stdout)["artifacts"]][-1] == "tflite_dynamic"
    # --allow-failed-variants publishes the rest; the failed row stays in the report, marked
    path, report = run_export(trained["run"], output=str(tmp_path / "some"), formats=formats,
                              allow_failed_variants=True)
    assert report["ok"] and report["not_published"] == ["tflite_dynamic"]
    assert [r["artifact"] for r in report["artifacts"] if not r["published"]] == ["tflite_dynamic"]
    assert not os.path.exists(os.path.join(path, "tflite", "model_dynamic.tflite"))
    assert os.path.exists(os.path.join(path, "tflite", "model_float32.tflite"))
    meta = json.load(open(os.path.join(path, "export.json")))
    assert [a["artifact"] for a in meta["artifacts"]] == ["saved_model", "tflite_float32"]
    assert "Not published" in open(os.path.join(path, "report.md")).read()
    # --all (low_precision_optional): a low-precision file out of tolerance is left out and the exact ones ship...
    path, report = run_export(trained["run"], output=str(tmp_path / "all"), formats=formats,
                              low_precision_optional=True)
    assert report["not_published"] == ["tflite_dynamic"]
    assert [a["artifact"] for a in json.load(open(os.path.join(path, "export.json")))["artifacts"]] == [
        "saved_model", "tflite_float32"]
    assert "low precision: left out, the exact files ship" in open(os.path.join(path, "report.md")).read()
    # ... but never without an exact artifact that failed
    monkeypatch.setattr(parity, "FLOAT_TOLERANCE", 0.0)
    monkeypatch.setattr(parity, "FLOAT16_TOLERANCE", 0.0)
    with pytest.raises(ExportFailed, match="tflite_float32: max"):
        run_export(trained["run"], output=str(tmp_path / "exact"), formats=formats, low_precision_optional=True)
    assert not os.path.exists(tmp_path / "exact" / "lenet5" / "1")


def test_validate_recomputes_the_report(trained):
    report = validate(trained["path"])
    assert report["ok"] and report["labelled"] and len(report["artifacts"]) >= 10  # keras, 8 artifacts, OpenVINO
    assert [r["artifact"] for r in report["artifacts"]] == [r["artifact"] for r in trained["report"]["artifacts"]]
    with pytest.raises(CnnkitError, match="not a cnnkit export"):
        validate(trained["run"])


def test_full_disk_mid_export_publishes_nothing(trained, monkeypatch):
    from export import child

    def full(content, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(tflite, "write", full)  # in this process: the converter runs here (a child's OSError
    monkeypatch.setattr(child, "run", lambda what, function, *args, **kwargs: function(*args))  # comes back as one)
    versions = sorted(os.listdir(trained["base"]))
    with pytest.raises(CnnkitError, match="no space left on the device .* earlier versions are untouched"):
        run_export(trained["run"], output=os.path.dirname(trained["base"]), formats=plan_formats(tflite_out=True))
    assert sorted(os.listdir(trained["base"])) == versions


def test_int8_needs_calibration_data_and_unknown_sources_fail(tmp_path):
    with pytest.raises(CnnkitError, match="int8 quantization needs calibration images"):
        run_export("lenet5", output=str(tmp_path), formats=plan_formats(quantize="int8"))
    with pytest.raises(CnnkitError, match="unknown model 'lenet6'"):
        run_export("lenet6", output=str(tmp_path))
    with pytest.raises(CnnkitError, match="does not exist"):
        run_export(str(tmp_path / "missing.keras"), output=str(tmp_path))
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    with pytest.raises(CnnkitError, match="cannot load model"):
        run_export(str(tmp_path / "broken.keras"), output=str(tmp_path / "out"))
    assert not [p for p in tmp_path.rglob("saved_model.pb")]  # nothing was exported


def test_calibration_data_quantizes_a_model_file_and_its_held_out_split_checks_it(trained, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "cnnkit", *a], capture_output=True, text=True,  # noqa
                                    timeout=600, cwd=str(tmp_path))
    model_file = os.path.join(trained["run"], "best.keras")  # a bare model file: no data of its own
    out = run("export", model_file, "--tflite", "--quantize", "int8", "--calibration-data", "digits", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    rows = {r["artifact"]: r for r in report["artifacts"]}
    assert report["ok"] and rows["tflite_int8"]["top1_agreement"] >= 0.98
    assert report["images"] == len(load_data("digits", (32, 32, 1)).test)  # real images, not noise
    out = cnnkit_here("export", model_file, "--tflite", "--quantize", "int8", "--calibration-data", "nowhere")
    assert out.returncode == 2 and "nowhere" in out.stderr and "Traceback" not in out.stderr


def test_quantize_is_per_format_so_tflite_float16_and_onnx_go_in_one_export(trained, tmp_path):
    import onnx

    assert plan_formats(quantize="tflite=float16,onnx=none") == ["saved_model", "tflite-float32", "tflite-float16",
                                                                 "onnx"]
    assert plan_formats(quantize="tflite=float16,onnx=int8") == ["saved_model", "tflite-float32", "tflite-float16",
                                                                 "onnx", "onnx-int8"]
    assert plan_formats(onnx_out=True, quantize="int8") == ["saved_model", "onnx", "onnx-int8"]
    assert plan_formats(onnx_out=True, quantize="float16") == ["saved_model", "onnx", "onnx-float16"]
    assert plan_formats(onnx_out=True, quantize="dynamic") == ["saved_model", "tflite-float32", "tflite-dynamic",
                                                               "onnx"]  # TFLite's own mode brings TFLite in
    for wrong, message in (("onnx=dynamic", "onnx takes none, float16, int8"),
                           ("coreml=int8", "the formats are tflite and onnx"), ("int4", "unknown --quantize")):
        with pytest.raises(CnnkitError, match=message):
            plan_formats(quantize=wrong)
    path, report = run_export(trained["run"], output=str(tmp_path), formats=plan_formats(
        quantize="tflite=float16,onnx=float16"))
    assert report["ok"] and [r["artifact"] for r in report["artifacts"]] == [
        "keras", "saved_model", "tflite_float32", "tflite_float16", "onnx", "onnx_float16"]
    assert {r["images"] for r in report["artifacts"]} == {report["images"]}  # every row says what it compared
    rows = {r["artifact"]: r for r in report["artifacts"]}
    assert rows["onnx_float16"]["tolerance"] == "max |diff| <= 0.01" and rows["onnx_float16"]["top1_agreement"] >= 0.98
    assert rows["onnx_float16"]["bytes"] < 0.6 * rows["onnx"]["bytes"]  # half-precision weights
    graph = onnx.load(os.path.join(path, "onnx", "model_float16.onnx")).graph
    weights = [t for t in graph.initializer if len(t.dims) == 4]  # the convolution kernels, in half precision
    assert weights and {t.data_type for t in weights} == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]  # pixels in as before


def test_the_report_spends_less_per_image_on_big_models():
    from keras_cnns import create_model
    from keras_cnns.analysis import profile_model

    plans = {name: parity.evaluation_plan(profile_model(create_model(name)).macs, 2000)
             for name in ("lenet5", "resnet50", "vgg16", "efficientnet_b7")}
    assert plans["lenet5"] == (2000, 20, 64)  # a small model compares every held-out image, 64 at a time
    assert plans["vgg16"][0] < plans["resnet50"][0] < 2000 and plans["efficientnet_b7"][0] >= 32
    assert plans["efficientnet_b7"][2] < plans["vgg16"][2] < plans["resnet50"][2] < 64  # smaller batches too
    for name, (images, repeats, batch) in plans.items():  # the MACs spent per artifact stay within the budget
        macs = profile_model(create_model(name)).macs
        assert images * macs <= max(parity.EVALUATION_MACS, 32 * macs) and 3 <= repeats <= 20
        assert batch * macs <= max(parity.BATCH_MACS, macs)  # one batch's activations stay bounded


def test_onnx_as_big_models_convert_it_is_exact_with_the_nhwc_transposes_folded(trained, tmp_path, monkeypatch):
    import onnx

    from export import child, onnx_format

    backends = []
    run = child.run

    def running(what, *args, **kwargs):
        backends.append(kwargs.get("pure_python_protobuf"))
        return run(what, *args, **kwargs)

    monkeypatch.setattr(onnx_format, "PURE_PYTHON_PROTOBUF_ABOVE_BYTES", 0)  # LeNet-5 converts as VGG-16 does
    monkeypatch.setattr(child, "run", running)
    path, report = run_export(trained["run"], output=str(tmp_path), formats=plan_formats(onnx_out=True))
    rows = {r["artifact"]: r for r in report["artifacts"]}
    assert report["ok"] and backends == [True] and rows["onnx"]["max_abs_diff"] <= 1e-5
    model = onnx.load(os.path.join(path, "onnx", "model.onnx"))
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == [
        "probabilities"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 3 and ops.count("Transpose") <= 2  # NHWC transposes folded, not one per conv


def test_the_memory_watch_counts_children_and_kills_the_whole_tree(tmp_path):
    """What the memory test relies on: a parent that holds little while its child holds 300 MB is measured
    at 300 MB or more, and above the ceiling both are killed."""
    import time

    from benchmarks._record import run_watched

    pid_file = tmp_path / "child.pid"
    child = (f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
             "x = bytearray(300 << 20); x[::4096] = b'1' * len(x[::4096]); time.sleep(30)")
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    run = run_watched([sys.executable, "-c", parent], ceiling_mb=250)
    assert run["killed"] and run["peak_mb"] > 250 and run["seconds"] < 25
    time.sleep(0.5)
    assert _gone(pid_file.read_text())


def test_a_mid_size_model_exports_to_every_format_within_the_memory_goal(tmp_path):
    """ResNet-18 (45 MB of weights) to every format in a child process whose memory, its converters' included
    (benchmarks._record.tree_memory_mb), is watched and which is killed above issue 16's goal of 6x the weights +
    2 GB (2.3 GB; measured 1.53 GB on 2 cores, AVX-512), so a memory regression fails here rather than on a
    user's machine."""
    from benchmarks._record import run_watched
    from benchmarks.export_cost import GOAL_PLUS_MB, GOAL_TIMES_WEIGHTS
    from keras_cnns import create_model

    weights_mb = create_model("resnet18", input_shape=(64, 64, 3)).count_params() * 4 / 2 ** 20
    ceiling_mb = GOAL_TIMES_WEIGHTS * weights_mb + GOAL_PLUS_MB
    run = run_watched([sys.executable, "-m", "cnnkit", "export", "resnet18", "--weights", "none", "--all",
                       "--input-size", "64", "--calibration-data", "shapes:8", "--allow-failed-variants", "--json",
                       "--output", str(tmp_path)], ceiling_mb=ceiling_mb)
    assert not run["killed"], (f"export passed the {ceiling_mb:.0f} MB ceiling ({run['peak_mb']} MB when killed; "
                               f"anonymous+file MB per process: {run['peak_processes']})")
    assert run["returncode"] == 0, run["stderr"][-2000:]
    out = run["stdout"]
    report = json.loads(out)
    kinds = {r["kind"] for r in report["artifacts"]}
    assert {"savedmodel", "tflite-float32", "tflite-float16", "tflite-dynamic", "tflite-int8", "onnx",
            "onnx-float16", "onnx-int8"} <= kinds  # every converter ran (untrained int8 rows may be left unpublished)
    # in child processes (export/child.py: one takes the next converter while it stays small): the goal above
    # holds because of that, and a converter moved back into the exporting process fails here
    assert run["descendants"] >= 1, run["descendants"]


def _killed_by_the_kernel():
    os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does


def _refuses():
    raise CnnkitError("a clear message from the child")


def _protobuf_backend():
    from google.protobuf.internal import api_implementation

    return api_implementation.Type()


def _full_disk():
    raise OSError(errno.ENOSPC, "No space left on device", "model.tflite")


def test_converters_child_process_returns_raises_and_reports_its_death():
    from export import child

    assert child.run("the check", _protobuf_backend) == "upb"
    assert child.run("the check", _protobuf_backend, pure_python_protobuf=True) == "python"  # big models' ONNX
    assert child.run("the check", os.getenv, "TF_ONEDNN_USE_SYSTEM_ALLOCATOR") == "1"
    with pytest.raises(CnnkitError, match="^a clear message from the child$"):
        child.run("the check", _refuses)
    with pytest.raises(OSError) as full:  # the exporter turns it into "no space left on the device"
        child.run("the check", _full_disk)
    assert full.value.errno == errno.ENOSPC and full.value.filename == "model.tflite"
    with pytest.raises(CnnkitError, match=r"the TFLite conversion was killed by SIGKILL \(out of memory\?\) in its "
                                          "child process; nothing was published"):
        child.run("the TFLite conversion", _killed_by_the_kernel)


def _failing():
    raise ValueError("a converter's own error")


def _memory_hog():
    global _HELD
    _HELD = bytearray(300 << 20)
    _HELD[::4096] = b"1" * len(_HELD[::4096])  # resident, not only reserved


def test_an_exports_converters_share_a_child_while_it_stays_small():
    """Starting a child (interpreter + TensorFlow) costs more than converting a small model: within reuse() the
    next job goes to the same child, unless it failed, grew past the limit or needs another environment."""
    from export import child

    with child.reuse():
        first, second = child.run("the check", os.getpid), child.run("the check", os.getpid)
        assert first == second != os.getpid()
        assert child.run("the check", _protobuf_backend, pure_python_protobuf=True) == "python"  # its own child
        assert child.run("the check", _protobuf_backend) == "upb" and child.run("the check", os.getpid) == first
        with pytest.raises(ValueError, match="a converter's own error"):
            child.run("the check", _failing)
        after_failure = child.run("the check", os.getpid)
        assert after_failure != first and _gone(first)
    assert _gone(after_failure)  # every child ended with the block
    with child.reuse(keep_below_mb=200):
        child.run("the check", _memory_hog)  # 300 MB resident afterwards: not kept
        hog_pid = child.run("the check", os.getpid)
        assert child.run("the check", os.getpid) == hog_pid  # a small one is
    with child.reuse():
        idle = child.run("the check", os.getpid)
        os.kill(idle, signal.SIGKILL)  # the kernel's out-of-memory killer takes the waiting child
        while not _gone(idle):
            time.sleep(0.05)
        assert child.run("the check", os.getpid) != idle  # the job goes to a fresh child, not to the dead one
    with child.reuse(keep_below_mb=0):
        assert child.run("the check", os.getpid) != child.run("the check", os.getpid)
    assert child.run("the check", os.getpid) != child.run("the check", os.getpid)  # outside reuse(): always fresh


def _gone(pid):
    """Process ``pid`` has ended: reaped, or a zombie whose threads have all exited (its parent can reap it)."""
    try:
        zombie = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def test_the_keras_model_is_released_before_the_converters_run(tmp_path, monkeypatch):
    """The converters run in child processes while the exporter waits: it must not hold the Keras model (or a
    compressed copy) then, or its memory stacks on theirs."""
    import gc
    import weakref

    from export import child, exporter

    models, seen = [], []
    load, run = exporter.load_source, child.run

    def loading(*args, **kwargs):
        src = load(*args, **kwargs)
        models.append(weakref.ref(src.model))
        return src

    def converting(what, *args, **kwargs):
        gc.collect()
        seen.append((what, [ref() is None for ref in models]))
        return run(what, *args, **kwargs)

    monkeypatch.setattr(exporter, "load_source", loading)
    monkeypatch.setattr(child, "run", converting)
    path, report = run_export("lenet5", output=str(tmp_path), formats=plan_formats(tflite_out=True, onnx_out=True),
                              weights="none")
    assert report["ok"] and [what.split(" of ")[0] for what, _ in seen] == [
        "the TFLite conversion (float32)", "the ONNX conversion"]
    assert all(released == [True] for _, released in seen)


def test_grouped_convolutions_export_to_onnx_and_tflite_as_plain_conv_ops(tmp_path):
    """tf_keras runs a grouped Conv2D (AlexNet's towers, ResNeXt) through an XLA-compiled function that tf2onnx
    cannot convert; the export graph uses TensorFlow's own grouped Conv2D op instead, which ONNX Runtime and
    LiteRT run and which agrees with Keras."""
    import onnx
    import tf_keras as keras

    model = keras.Sequential([keras.Input((16, 16, 4)), keras.layers.Conv2D(4, 3, groups=2),  # AlexNet's towers
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3), keras.layers.Softmax()])
    path, report = _export_model_file(model, tmp_path, "grouped",  # 4 channels: no photo model, so MediaPipe
                                      formats=plan_formats(tflite_out=True, onnx_out=True))  # is not asked
    assert report["ok"] and {r["kind"] for r in report["artifacts"]} >= {"onnx", "tflite-float32"}
    tflite_row = next(r for r in report["artifacts"] if r["kind"] == "tflite-float32")
    assert not tflite_row["mediapipe"]["loads"] and "takes 4 channels (not checked)" in tflite_row["mediapipe"]["error"]
    graph = onnx.load(os.path.join(path, "onnx", "model.onnx")).graph
    (conv,) = [node for node in graph.node if node.op_type == "Conv"]
    assert [a.i for a in conv.attribute if a.name == "group"] == [2]


def test_a_function_tf2onnx_leaves_unconverted_is_a_clear_error_not_a_broken_file(tmp_path):
    import tensorflow as tf

    from export import onnx_format

    class Compiled(tf.Module):
        @tf.function(jit_compile=True)
        def inner(self, x):
            return tf.nn.softmax(x * 2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="images")])
        def probabilities(self, images):
            return {"probabilities": self.inner(images)}

    module = Compiled()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"probabilities": module.probabilities})
    with pytest.raises(CnnkitError, match="tf2onnx left TensorFlow ops ONNX Runtime cannot run.*--tflite"):
        onnx_format.convert(str(tmp_path / "sm"), str(tmp_path / "model.onnx"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith("model.onnx")]  # no file, no temporary left


def test_ops_without_a_tflite_builtin_are_a_clear_error(tmp_path):
    import tensorflow as tf

    class Odd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32, name="images")])
        def probabilities(self, images):
            s = tf.linalg.svd(tf.reshape(images, [-1, 4, 4]), compute_uv=False)
            return {"probabilities": tf.nn.softmax(s)}

    module = Odd()
    tf.saved_model.save(module, str(tmp_path / "odd"), signatures={"probabilities": module.probabilities})
    with pytest.raises(CnnkitError, match="cannot be expressed as TFLite builtin ops"):
        tflite.convert(str(tmp_path / "odd"), "float32")


def test_export_cli_untrained_zoo_model_and_validate(tmp_path, monkeypatch):
    run = lambda *a: subprocess.run([sys.executable, "-m", "cnnkit", *a], capture_output=True, text=True,  # noqa
                                    timeout=600, cwd=str(tmp_path))
    out = run("export", "--tflite", "mobilenet", "--weights", "none", "--input-size", "96", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert [r["artifact"] for r in report["artifacts"]] == ["keras", "saved_model", "tflite_float32"]
    assert report["ok"] and not report["labelled"]
    # its batch-norm statistics were estimated on the evaluation images: the outputs depend on the input, so
    # the comparison means something (with the initial statistics every probability was 0.001 for every image)
    assert "batch-norm statistics of" in out.stderr and "warning" not in report
    assert report["artifacts"][0]["output_spread"] > parity.MIN_OUTPUT_SPREAD
    assert os.path.exists(tmp_path / "exports" / "mobilenet" / "1" / "tflite" / "model_float32.tflite")
    monkeypatch.chdir(tmp_path)  # validate in this process (cnnkit_here), from the same folder
    out = cnnkit_here("validate", "exports/mobilenet/1")
    assert out.returncode == 0 and "tflite_float32" in out.stdout
    out = cnnkit_here("validate", ".")
    assert out.returncode == 2 and out.stderr.startswith("cnnkit: error: ") and len(out.stderr.splitlines()) == 1
    # an artifact that no longer matches its Keras model: validate says so and exits 1
    from keras_cnns.files import load_model_file

    keras_file = str(tmp_path / "exports" / "mobilenet" / "1" / "keras" / "model.keras")
    model = load_model_file(keras_file)
    kernel, bias = model.layers[-2].get_weights()
    model.layers[-2].set_weights([kernel * 3.0, bias])
    model.save(keras_file)
    out = cnnkit_here("validate", "exports/mobilenet/1")
    assert out.returncode == 1 and "OUT OF TOLERANCE" in out.stdout


def test_a_model_whose_outputs_ignore_the_input_gets_a_warning(tmp_path):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5, kernel_initializer="zeros"), keras.layers.Softmax()])
    _, report = _export_model_file(model, tmp_path, "flat")
    assert report["ok"] and "hardly depend on the input" in report["warning"]
    assert "Warning:" in open(os.path.join(report["path"], "report.md")).read()


def test_the_random_op_check_finds_random_ops(tmp_path):
    import tensorflow as tf

    from export.savedmodel import has_random_ops

    class Noisy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def serve(self, x):
            return {"y": x + tf.random.uniform(tf.shape(x))}

    module = Noisy()
    tf.saved_model.save(module, str(tmp_path / "noisy"), signatures={"serving_default": module.serve})
    assert has_random_ops(str(tmp_path / "noisy")) == ["RandomUniform"]


def _litert_kernels(path):
    """The weight input of every conv / depthwise conv / dense op, as LiteRT's interpreter holds it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    ops = [op for op in interpreter._get_ops_details()
           if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    return [interpreter.get_tensor(op["inputs"][1]) for op in ops if op["inputs"][1] >= 0]


def test_qat_pruning_and_clustering_fine_tune_then_export(trained):
    formats = plan_formats(quantize="qat", prune=0.5, cluster=16)
    assert formats == ["saved_model", "tflite-float32", "tflite-qat", "tflite-pruned", "tflite-clustered"]
    path, report = run_export(trained["run"], output=os.path.dirname(trained["base"]), formats=formats, prune=0.5,
                              cluster=16)
    rows = {r["artifact"]: r for r in report["artifacts"]}
    assert report["ok"]
    # measured on the .tflite files the rows describe: the weights LiteRT runs each conv / dense op with
    pruned, clustered = (_litert_kernels(os.path.join(path, "tflite", f"model_{n}.tflite")) for n in ("pruned",
                                                                                                     "clustered"))
    sparsity = sum(int((k == 0).sum()) for k in pruned) / sum(k.size for k in pruned)
    assert abs(sparsity - 0.5) <= 0.01 and rows["tflite_pruned"]["sparsity"] == pytest.approx(sparsity)
    assert max(len(np.unique(k)) for k in clustered) <= 16
    assert rows["tflite_clustered"]["max_unique_values_per_kernel"] == max(len(np.unique(k)) for k in clustered)
    with open(os.path.join(path, "tflite", "model_float32.tflite"), "rb") as f:
        float_gzip = len(gzip.compress(f.read()))
    for name in ("pruned", "clustered"):  # the download form beside each compressed file: that file, gzipped
        with open(os.path.join(path, "tflite", f"model_{name}.tflite"), "rb") as f, \
                open(os.path.join(path, "tflite", f"model_{name}.tflite.gz"), "rb") as g:
            packed = g.read()
            assert gzip.decompress(packed) == f.read() and len(packed) == rows[f"tflite_{name}"]["gzip_bytes"]
    assert rows["tflite_pruned"]["gzip_bytes"] < 0.8 * float_gzip  # zeros compress
    assert rows["tflite_clustered"]["gzip_bytes"] < 0.8 * float_gzip  # 16 distinct values compress
    # with --prune, the clustered model is the pruned one, clustered with its zeros kept (Deep Compression's order)
    assert rows["tflite_clustered"]["pruned_first"] == 0.5
    zeros = sum(int((k == 0).sum()) for k in clustered) / sum(k.size for k in clustered)
    assert zeros >= 0.49 and rows["tflite_clustered"]["sparsity"] == pytest.approx(zeros)
    assert rows["tflite_clustered"]["gzip_bytes"] < rows["tflite_pruned"]["gzip_bytes"]
    for name in ("tflite_qat", "tflite_pruned", "tflite_clustered"):
        assert rows[name]["top1_agreement"] >= 0.98 and rows[name]["ok"]
    assert rows["tflite_qat"]["bytes"] < rows["tflite_float32"]["bytes"] / 3  # integer kernels
    # the reference model was not touched by the fine-tuning
    assert rows["keras"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])


def test_an_export_is_a_source_for_more_formats_and_keeps_its_earlier_ones(trained, tmp_path):
    earlier, _ = run_export(trained["run"], output=str(tmp_path / "a"), formats=plan_formats(tflite_out=True))
    path, report = run_export(earlier, output=str(tmp_path / "b"), formats=plan_formats(onnx_out=True))
    assert path.endswith(os.path.join("lenet5", "1")) and report["ok"] and report["labelled"]
    # the earlier version's TFLite file is rebuilt into the new one and checked again, beside the new ONNX
    assert [r["artifact"] for r in report["artifacts"]] == ["keras", "saved_model", "onnx", "tflite_float32"]
    assert report["carried_over"] == ["tflite-float32"] and report["not_carried_over"] == []
    assert client.LocalModel(os.path.dirname(path), runtime="tflite").kind == "tflite-float32"
    # what cannot be rebuilt without the run is named, not silently dropped
    from export.exporter import _carry_over
    from export.source import ExportSource

    src = ExportSource(model=None, name="x", labels=[], preprocessing={}, origin="old",
                       earlier_artifacts=("saved_model", "tflite_int8", "tflite_pruned", "onnx"))
    assert _carry_over(src, ["saved_model"], can_calibrate=False) == (["saved_model", "onnx"], ["onnx"],
                                                                      ["tflite-int8", "tflite-pruned"])


def test_compression_needs_the_training_data(tmp_path):
    with pytest.raises(CnnkitError, match="fine-tune on the training data"):
        run_export("lenet5", output=str(tmp_path), formats=plan_formats(prune=0.5), prune=0.5)


def test_quickstart_is_the_whole_pipeline_offline(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cnnkit", "quickstart", "--json"], capture_output=True, text=True,
                         timeout=900, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["test_accuracy"] >= 0.97 and result["report"]["ok"]
    assert {r["artifact"] for r in result["report"]["artifacts"]} >= {"saved_model", "tflite_float32", "tflite_int8",
                                                                        "onnx", "onnx_int8"}
    assert os.path.exists(tmp_path / "exports" / "lenet5" / "1" / "saved_model.pb")
    assert os.path.islink(tmp_path / "runs" / "latest")
    # then served: one real PNG per digit through the embedded server's REST and gRPC APIs
    served = result["served"]
    assert sorted(os.listdir(tmp_path / "samples")) == [f"{d}_0.png" for d in range(10)]
    assert all(s["rest"] == s["grpc"] for s in served)
    assert sum(s["rest"] == os.path.basename(s["image"])[0] for s in served) >= 8
    assert [s["true"] for s in served] == [os.path.basename(s["image"])[0] for s in served]  # the table's column


def test_int8_model_with_int8_input_and_output(trained, tmp_path):
    path, report = run_export(trained["run"], output=str(tmp_path), formats=plan_formats(quantize="int8"),
                              int8_io="int8")
    runner = tflite.Runner(os.path.join(path, "tflite", "model_int8.tflite"))
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    assert report["ok"]


# --- a model file carries its own contract --------------------------------------------------------------

def _cnnkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_a_model_file_exports_as_its_run_wherever_it_is_copied(tmp_path, photos):
    """runs/X, runs/X/best.keras and a copy of best.keras elsewhere give the same labels, preprocessing, data
    and predictions (before, the file exported with class_0.. and ImageNet's mean/std: 0 of 60 agreed)."""
    import shutil

    from export import savedmodel

    run = train(TrainConfig(model="lenet5", data=photos, input_size=32, epochs=3, output=str(tmp_path / "run")))
    os.makedirs(tmp_path / "elsewhere")
    shutil.copy(os.path.join(run.run_dir, "best.keras"), tmp_path / "elsewhere" / "model.keras")
    metas, outputs = [], []
    data = load_data(photos, (32, 32, 1), val_split=0.15, test_split=0.15)
    for i, source in enumerate((run.run_dir, os.path.join(run.run_dir, "best.keras"),
                                str(tmp_path / "elsewhere" / "model.keras"))):
        path, report = run_export(source, output=str(tmp_path / f"e{i}"))
        assert report["ok"] and report["labelled"]  # the run's held-out photos, with their labels
        metas.append(json.load(open(os.path.join(path, "export.json"))))
        outputs.append(savedmodel.load_probabilities(path)(data.test.x.astype(np.float32)))
    for meta in metas:
        assert meta["labels"] == ["bar", "cross", "disc"] and meta["name"] == "lenet5"
        assert meta["preprocessing"] == metas[0]["preprocessing"] != {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}
        assert meta["data"] == photos
    for out in outputs[1:]:
        np.testing.assert_array_equal(out.argmax(1), outputs[0].argmax(1))
        np.testing.assert_allclose(out, outputs[0], atol=1e-6)
    # the export's own Keras file carries the contract too: exported again from a copy, the same export
    shutil.copy(os.path.join(path, "keras", "model.keras"), tmp_path / "again.keras")
    again, _ = run_export(str(tmp_path / "again.keras"), output=str(tmp_path / "e3"))
    assert json.load(open(os.path.join(again, "export.json")))["labels"] == metas[0]["labels"]


def test_a_keras_file_from_elsewhere_needs_labels_and_preprocessing(tmp_path):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.save(tmp_path / "foreign.keras")
    out = cnnkit_here("export", str(tmp_path / "foreign.keras"), "--output", str(tmp_path / "e"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.startswith("cnnkit: error")]
    assert "carries no class names or preprocessing" in line and "--labels FILE and --preprocessing" in line
    assert not os.path.exists(tmp_path / "e" / "foreign")  # nothing left behind
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    out = _cnnkit("export", str(tmp_path / "foreign.keras"), "--labels", str(tmp_path / "labels.txt"),
                  "--preprocessing", "tf", "--output", str(tmp_path / "e"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.load(open(tmp_path / "e" / "foreign" / "1" / "export.json"))
    assert meta["labels"] == ["cat", "dog"] and meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(CnnkitError, match="has 2 outputs but 3 class names"):
        run_export(str(tmp_path / "foreign.keras"), output=str(tmp_path / "e"), labels=str(tmp_path / "three.txt"),
                   preprocessing="tf")
    with pytest.raises(CnnkitError, match="cannot read --preprocessing"):
        run_export(str(tmp_path / "foreign.keras"), output=str(tmp_path / "e"), labels=str(tmp_path / "labels.txt"),
                   preprocessing="{bad")


def test_export_without_a_format_writes_what_auto_may_serve_here_and_saved_model_alone_when_asked(trained, tmp_path):
    from export.choice import default_plan

    out = cnnkit_here("export", trained["run"], "--output", str(tmp_path / "default"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    planned, why = default_plan()
    kinds = [a["kind"] for a in json.load(open(os.path.join(report["path"], "export.json")))["artifacts"]]
    left_out = report.get("not_published", [])  # a low-precision file out of tolerance (a CPU with int8 files)
    assert kinds == ["savedmodel", *(k for k in planned[1:] if k.replace("-", "_") not in left_out)]
    assert {"tflite-float32", "onnx", "openvino"} <= set(kinds) and not set(left_out) & {"tflite_float32", "onnx"}
    assert report["default_plan"] == {"formats": planned, "why": why}  # the console says the same (log)
    out = cnnkit_here("export", trained["run"], "--saved-model", "--output", str(tmp_path / "alone"), "--json")
    path = json.loads(out.stdout)["path"]
    assert [a["kind"] for a in json.load(open(os.path.join(path, "export.json")))["artifacts"]] == ["savedmodel"]


def test_weights_and_input_size_with_a_run_or_file_are_refused(trained):
    for source in (trained["run"], os.path.join(trained["run"], "best.keras")):
        for option in (("--weights", "imagenet"), ("--input-size", "64")):
            out = cnnkit_here("export", source, *option)
            assert out.returncode == 2 and f"{option[0]}" in out.stderr and "zoo model name" in out.stderr


@pytest.mark.parametrize("artifact", ["saved_model.pb", "tflite/model_float32.tflite", "onnx/model.onnx"])
def test_a_damaged_artifact_is_one_line_under_validate_and_predict(trained, tmp_path, artifact):
    import shutil

    broken = tmp_path / "lenet5" / "1"
    shutil.copytree(trained["path"], broken)
    with open(broken / artifact, "r+b") as f:  # truncated, as by a full disk or an interrupted copy
        f.truncate(400)
    photo = tmp_path / "x.png"
    Image.fromarray(np.full((40, 50), 128, np.uint8)).save(photo)
    model = ("--model", str(broken), "--runtime", "savedmodel") if artifact == "saved_model.pb" else \
        ("--model", str(broken / artifact))
    commands = [("validate", str(broken)), ("predict", str(photo), *model)]
    if artifact.endswith(".tflite"):  # the phone's runtime reads the same file
        commands.append(("predict", str(photo), *model, "--runtime", "mediapipe"))
    for args in commands:
        out = _cnnkit(*args)
        errors = [line for line in out.stderr.splitlines() if line.startswith("cnnkit: error")]
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert len(errors) == 1 and f"cannot load {broken / artifact}" in errors[0]


def test_export_name_stays_inside_the_export_base(tmp_path):
    for bad in ("../evil", "a/b", ".hidden", " "):
        with pytest.raises(CnnkitError, match="letters, digits"):
            run_export("lenet5", output=str(tmp_path / "base"), name=bad)
    assert not os.path.exists(tmp_path / "evil") and not os.path.exists(tmp_path / "base")


def test_failed_commands_leave_no_empty_folders(tmp_path, monkeypatch):
    """An export that fails (here: a converter refuses) and a run that fails before its first epoch (here: a
    model option the model does not take) leave nothing behind, not even an empty folder."""
    def refuse(*args, **kwargs):
        raise CnnkitError("the converter refuses")

    monkeypatch.setattr(tflite, "convert_for", refuse)
    with pytest.raises(CnnkitError, match="the converter refuses"):
        run_export("lenet5", output=str(tmp_path / "exports"), formats=plan_formats(tflite_out=True))
    assert not os.path.exists(tmp_path / "exports")
    monkeypatch.chdir(tmp_path)
    out = cnnkit_here("train", "lenet5", "--data", "shapes:6", "--epochs", "1", "-o", "no_such_option=1")
    assert out.returncode == 2 and "no_such_option" in out.stderr
    assert not os.path.exists(tmp_path / "runs") or os.listdir(tmp_path / "runs") == []


def test_untrained_with_quantized_variants_is_refused_before_converting(tmp_path):
    out = cnnkit_here("export", "lenet5", "--quantize", "int8", "--calibration-data", "shapes:6", "--output",
                      str(tmp_path))
    assert out.returncode == 2 and "untrained" in out.stderr and "--allow-failed-variants" in out.stderr
    assert "out of tolerance" not in out.stderr and not os.listdir(tmp_path)


def test_an_untrained_model_leaves_out_the_bfloat16_ir_and_says_why(tmp_path, monkeypatch, capfd):
    import dataclasses

    from export import formats

    bf16 = formats.FORMATS["openvino-bf16"]  # as on a CPU with bfloat16, which this one may not be
    monkeypatch.setitem(formats.FORMATS, "openvino-bf16", dataclasses.replace(bf16, available=lambda: None))
    out = cnnkit_here("export", "lenet5", "--weights", "none", "--openvino", "--json", "--output", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert [r["artifact"] for r in json.loads(out.stdout)["artifacts"]] == ["keras", "saved_model", "openvino"]
    said = out.stderr + capfd.readouterr().err  # the log goes to the process's stderr
    assert "untrained" in said and "openvino-bf16 would fail its top-1 agreement gate" in said


def test_benchmarks_rewrite_results_only_with_record(tmp_path, monkeypatch):
    from benchmarks import _record

    results = tmp_path / "RESULTS.md"
    results.write_text("a\n<!-- s:start -->\nrecorded\n<!-- s:end -->\nb\n")
    monkeypatch.setattr(_record, "RESULTS", str(results))
    _record.replace_section("s", "smoke run", record=False)
    assert "recorded" in results.read_text() and "smoke" not in results.read_text()
    _record.replace_section("s", "measured", record=True)
    assert results.read_text() == "a\n<!-- s:start -->\nmeasured\n<!-- s:end -->\nb\n"


class _H5Runner:
    """The toy format's runtime: the Keras H5 file run in tf_keras, normalised as its export.json says."""

    def __init__(self, path, threads=None):
        from export.exporter import keras_reference
        from keras_cnns.files import load_model_file, read_json

        meta = read_json(os.path.join(os.path.dirname(os.path.dirname(path)), "export.json"))
        model = load_model_file(path)
        self.run = keras_reference(model, meta["preprocessing"])
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.classes = int(model.outputs[0].shape[-1])

    def __call__(self, images):
        return self.run(images)


def _build_h5(job, fmt, path):
    from keras_cnns.files import load_model_file

    load_model_file(os.path.join(job.out, "keras", "model.keras")).save(path)
    return {"note": "toy"}


def test_a_new_export_format_is_one_module_and_one_table_row(tmp_path, monkeypatch):
    """A format registered here (a Keras H5 file with its own runtime) goes through the plan, the build, the
    parity report, validate and a local prediction without a line changed elsewhere."""
    from export import formats
    from export.local import LocalModel, runtimes

    monkeypatch.setitem(formats.RUNTIMES, "h5", formats.Runtime("h5", _H5Runner, "--format keras-h5", ".h5"))
    monkeypatch.setitem(formats.FORMATS, "keras-h5", formats.Format("keras-h5", "keras_h5", "h5/model.h5", "h5",
                                                                    _build_h5, "float32"))
    plan = plan_formats(tflite_out=True, extra=["keras-h5"])
    assert plan == ["saved_model", "tflite-float32", "keras-h5"]
    path, report = run_export("lenet5", output=str(tmp_path), formats=plan, weights="none")
    rows = {r["artifact"]: r for r in report["artifacts"]}
    assert report["ok"] and rows["keras_h5"]["kind"] == "keras-h5" and rows["keras_h5"]["note"] == "toy"
    assert rows["keras_h5"]["tolerance"] == "max |diff| <= 0.0001" and rows["keras_h5"]["max_abs_diff"] <= 1e-4
    meta = json.load(open(os.path.join(path, "export.json")))
    assert meta["artifacts"][-1] == {"artifact": "keras_h5", "kind": "keras-h5", "path": "h5/model.h5", "note": "toy"}
    assert [r["artifact"] for r in validate(path)["artifacts"]] == ["keras", "saved_model", "tflite_float32",
                                                                    "keras_h5"]
    assert "h5" in runtimes()
    photo = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32), np.uint8)).save(photo, format="PNG")
    toy, served = LocalModel(path, runtime="h5"), LocalModel(path, runtime="savedmodel")
    assert toy.kind == "keras-h5" and toy.input_shape == (32, 32, 1) and toy.labels == meta["labels"]
    (got,), (want,) = toy.classify([photo.getvalue()]), served.classify([photo.getvalue()])
    assert got.runtime == "keras-h5" and got.label == want.label and abs(got.score - want.score) < 1e-4
    with pytest.raises(CnnkitError, match="unknown export format nope"):
        plan_formats(extra=["nope"])
