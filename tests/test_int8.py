"""int8 that keeps its accuracy (export/int8.py): the per-layer report names the layer that loses it, and the
automatic mode keeps the fewest layers in float to meet a budget, on images it did not decide on (TFLite, ONNX)."""
import json
import os

import numpy as np
import pytest

from export import int8
from keras_cnns.errors import CnnkitError

SPEC, SIZE = "shapes:200", 16
UNIT = {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}


def build_outlier_model(path):
    """A small CNN trained on generated shapes (99% on its test split), then given an outlier range without
    changing what it computes: conv_a's most active channel is scaled by 1000 (ReLU commutes with a positive
    scale) and conv_b reads that channel divided by 1000. One int8 scale for conv_a's output then leaves its other
    channels a level or two: plain full-integer TFLite and ONNX fall to chance. Saved with its contract at ``path``
    (also benchmarks/int8_rescue.py's first model)."""
    import tf_keras as keras

    from keras_cnns.data import load_data
    from keras_cnns.files import save_model_atomic
    from keras_cnns.training.runs import contract

    data = load_data(SPEC, (SIZE, SIZE, 3))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv_b")(a)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="fc")(x), name="outlier")
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(data.train.x / 255.0, data.train.y, epochs=40, batch_size=32, verbose=0)
    channel = int(keras.Model(inputs, a)(data.train.x[:64] / 255.0).numpy().mean(axis=(0, 1, 2)).argmax())
    before = model(data.test.x / 255.0).numpy()
    kernel, bias = model.get_layer("conv_a").get_weights()
    kernel[..., channel] *= 1000
    bias[channel] *= 1000
    model.get_layer("conv_a").set_weights([kernel, bias])
    kernel, bias = model.get_layer("conv_b").get_weights()
    kernel[:, :, channel, :] /= 1000
    model.get_layer("conv_b").set_weights([kernel, bias])
    np.testing.assert_allclose(model(data.test.x / 255.0).numpy(), before, atol=1e-4)  # the same function
    save_model_atomic(model, str(path), contract("outlier", data.class_names, UNIT, (SIZE, SIZE, 3),
                                                 {"spec": SPEC, "val_split": 0.15, "test_split": 0.15}, "test"))
    return str(path)


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    return build_outlier_model(tmp_path_factory.mktemp("outlier") / "outlier.keras")


def _row(report, artifact="tflite_int8"):
    return next(r for r in report["artifacts"] if r["artifact"] == artifact)


def test_plain_int8_is_refused_and_the_report_blames_the_outlier_layer(outlier_model, tmp_path):
    from export import export, plan_formats
    from export.exporter import ExportFailed

    with pytest.raises(ExportFailed) as failed:
        export(outlier_model, str(tmp_path), plan_formats(tflite_out=True, onnx_out=True, quantize="int8",
                                                          extra=["tflite-dynamic"]))
    keras_accuracy = failed.value.report["artifacts"][0]["accuracy"]
    assert keras_accuracy >= 0.95
    for artifact in ("tflite_int8", "onnx_int8"):
        row = _row(failed.value.report, artifact)
        assert row["accuracy"] <= 0.5 and not row["ok"]  # collapsed
        assert row["int8_layers"][0]["layer"] == "conv_a"  # ranked worst: it loses the most
        assert row["int8_layers"][0]["added_db"] > 2 * max(r["added_db"] or 0 for r in row["int8_layers"][1:])
        assert f"{artifact}: max |diff|" in str(failed.value)
    assert str(failed.value).count("worst int8 layers: conv_a") == 2 and "--max-accuracy-drop" in str(failed.value)
    # dynamic range: int8 weights (per channel: conv_a's are exact enough), but each op quantizes its input on the
    # fly with one scale: conv_b, which reads the outlier tensor, is where it collapses; conv_a computes in float
    dynamic = _row(failed.value.report, "tflite_dynamic")
    assert dynamic["accuracy"] <= 0.5 and [r["layer"] for r in dynamic["int8_layers"]][0] == "conv_b"
    assert next(r for r in dynamic["int8_layers"] if r["layer"] == "conv_a")["sqnr_db"] >= 40
    row = _row(failed.value.report)
    assert row["calibration"]["images"] == 200 and row["calibration"]["source"] == f"training split of {SPEC}"
    assert row["calibration"]["classes"] == 4 and row["calibration"]["warnings"] == []


def test_automatic_mode_keeps_the_layers_to_blame_in_float_within_the_budget(outlier_model, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cnnkit.cli import cli
    from export import export, plan_formats

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the quantizers leave nothing in the working directory
    final, report = export(outlier_model, str(tmp_path), plan_formats(tflite_out=True, onnx_out=True,
                                                                      quantize="int8"), max_accuracy_drop="1")
    row = _row(report)
    mixed = row["mixed"]
    # decided on the validation split; the parity gate judged it on the test split, within the budget
    assert mixed["decided_on"] == f"validation split of {SPEC}" and mixed["met"]
    assert report["ok"] and row["tolerance"] == "accuracy drop <= 1 pt (--max-accuracy-drop)"
    assert report["artifacts"][0]["accuracy"] - row["accuracy"] <= 0.01 + 1e-9
    assert mixed["float_layers"] == ["conv_a", "conv_b"]  # the outlier tensor's producer and reader
    assert mixed["full_int8"]["accuracy"] <= 0.5 and mixed["chosen"]["accuracy"] >= mixed["keras_accuracy"] - 0.01
    assert mixed["chosen"]["bytes"] > mixed["full_int8"]["bytes"] and "Edge TPU" in mixed["delegates"]
    # the file itself: conv_a's and conv_b's outputs are float32 tensors, the classifier still integer
    with open(f"{final}/tflite/model_int8.tflite", "rb") as f:
        content = f.read()
    floats = int8.float_tensors(content)
    assert set(mixed["float_ops"]) <= floats
    assert not any("/fc/" in name for name in floats)
    assert row["mediapipe"]["loads"] and row["mediapipe"]["top1_agreement"] >= 0.98  # the phone's runtime runs it
    # ONNX: the same layers float in the QDQ file (no DequantizeLinear feeds them), the classifier still int8
    onnx_mixed = _row(report, "onnx_int8")["mixed"]
    assert onnx_mixed["met"] and onnx_mixed["float_layers"] == ["conv_a", "conv_b"] and _row(report, "onnx_int8")["ok"]
    assert onnx_mixed["full_int8"]["accuracy"] <= 0.5
    import onnx

    nodes = {n.name: n for n in onnx.load(f"{final}/onnx/model_int8.onnx").graph.node}
    dequantized = {name for name, n in nodes.items() if any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    conv_nodes = [name for name, n in nodes.items() if n.op_type == "Conv"]
    assert len(conv_nodes) == 2 and not dequantized & set(conv_nodes)
    assert any("/fc/" in name for name in dequantized)
    with open(f"{final}/report.md", encoding="utf-8") as f:
        markdown = f.read()
    assert "## tflite_int8: where int8 loses accuracy" in markdown and "| conv_a | CONV_2D |" in markdown
    assert "## onnx_int8: where int8 loses accuracy" in markdown
    assert "kept in float to stay within 1 points" in markdown
    # validate shows it again, and holds the file to the same budget
    out = CliRunner().invoke(cli, ["validate", final])
    assert out.exit_code == 0, out.output
    assert "tflite_int8: worst int8 layers: conv_a" in out.output
    assert "tflite_int8: kept in float: conv_a, conv_b" in out.output
    assert "onnx_int8: kept in float: conv_a, conv_b" in out.output
    assert os.listdir(tmp_path / "cwd") == []
    with open(f"{final}/export.json", encoding="utf-8") as f:
        assert _row({"artifacts": json.load(f)["artifacts"]})["mixed"]["float_layers"] == ["conv_a", "conv_b"]


def test_openvino_int8_by_nncf_collapses_on_the_outlier_and_its_accuracy_control_restores_it(outlier_model, tmp_path):
    """NNCF quantizes activations per tensor too: plain, the outlier range takes the file to chance; with a budget,
    nncf.quantize_with_accuracy_control on the validation split puts conv_b (the outlier tensor's reader) back in
    float, and the parity gate holds the file to that budget on the test split."""
    from export import export
    from export.exporter import ExportFailed

    formats = ["saved_model", "openvino-int8"]
    with pytest.raises(ExportFailed, match="openvino_int8: max"):
        export(outlier_model, str(tmp_path / "plain"), formats)
    final, report = export(outlier_model, str(tmp_path / "budget"), formats, max_accuracy_drop="openvino=1")
    row = _row(report, "openvino_int8")
    assert report["ok"] and row["tolerance"] == "accuracy drop <= 1 pt (--max-accuracy-drop)"
    assert report["artifacts"][0]["accuracy"] - row["accuracy"] <= 0.01 + 1e-9
    assert "conv_b" in row["float_layers"] and "fc" not in row["float_layers"]
    assert row["accuracy_control"] == {"max_accuracy_drop": 1.0, "decided_on": f"validation split of {SPEC}",
                                       "decision_images": row["accuracy_control"]["decision_images"]}
    assert row["accuracy_control"]["decision_images"] >= 100


def test_a_budget_without_an_int8_format_is_a_clear_error(outlier_model, tmp_path):
    from export import export, plan_formats

    with pytest.raises(CnnkitError, match="--max-accuracy-drop keeps full-integer"):
        export(outlier_model, str(tmp_path), plan_formats(tflite_out=True), max_accuracy_drop="1")
