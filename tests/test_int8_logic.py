"""The per-layer int8 report's arithmetic and the automatic mode's search (export/int8.py), without a converter:
every expected value is worked out by hand in the comment beside it."""
import math

import numpy as np
import pytest

from export import int8
from keras_cnns.errors import CnnkitError


def test_channel_sqnr_averages_each_channels_noise_to_signal_ratio():
    # channel 0: signal 1, noise 0.1^2 = 0.01 -> ratio 0.01; channel 1: signal 100, noise 1 -> ratio 0.01;
    # mean 0.01 -> 10 log10(1 / 0.01) = 20 dB
    reference = np.array([[1.0, 10.0], [-1.0, -10.0]])
    assert int8.channel_sqnr_db(reference, reference + [[0.1, 1.0], [-0.1, -1.0]]) == pytest.approx(20.0)
    # a channel lost entirely counts once (ratio capped at 1), however small: (1 + 0) / 2 -> 10 log10(2) = 3.0103 dB
    assert int8.channel_sqnr_db(reference, reference * [[0, 1]]) == pytest.approx(10 * math.log10(2))
    # noise larger than the signal is still a ratio of 1: 10 log10(1 / 1) = 0 dB
    assert int8.channel_sqnr_db(reference, reference * [[-9, -9]]) == pytest.approx(0.0)
    # a channel that is zero in the reference does not count: only channel 1, ratio 1 / 100 -> 20 dB
    silent = np.array([[0.0, 10.0], [0.0, -10.0]])
    assert int8.channel_sqnr_db(silent, silent + [[5.0, 1.0], [5.0, -1.0]]) == pytest.approx(20.0)
    assert math.isnan(int8.channel_sqnr_db(np.zeros((3, 2)), np.ones((3, 2))))
    # channels are the last axis of any shape (NHWC): the same 20 dB from a (1, 2, 1, 2) tensor
    assert int8.channel_sqnr_db(reference.reshape(1, 2, 1, 2),
                                (reference + [[0.1, 1.0], [-0.1, -1.0]]).reshape(1, 2, 1, 2)) == pytest.approx(20.0)


def test_channel_sqnr_sees_the_channels_one_int8_scale_crushes():
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 1, (64, 8)).astype(np.float32)
    x[:, 0] *= 1000  # one outlier channel
    scale = x.max() / 255
    q = np.round(x / scale) * scale
    whole = 10 * np.log10((x ** 2).mean() / ((x - q) ** 2).mean())
    assert whole > 40 and int8.channel_sqnr_db(x, q) < 3  # the whole tensor hides what the channels lose
    assert int8.channel_sqnr_db(x, x) > 100  # exact


@pytest.mark.parametrize("tensor, op, layer", [
    ("mobilenet_v2/conv1_relu6/Relu6;mobilenet_v2/conv1_conv/BiasAdd", "", "conv1_relu6 + conv1_conv"),
    ("StatefulPartitionedCall/StatefulPartitionedCall_1/lenet5/c1_conv/BiasAdd", "", "c1_conv"),
    # the mobile graph of a grayscale model wraps it (exporter.rgb_input): its layers, not the model, are named
    ("lenet5_rgb/lenet5/c1_conv/BiasAdd;lenet5_rgb/lenet5/c1_conv/Conv2D", "", "c1_conv"),
    ("lenet5_rgb/rgb_to_gray/Conv2D2", "", "rgb_to_gray"),
    ("lenet5_rgb/lenet5/f6/MatMul;lenet5_rgb/lenet5/f6/BiasAdd", "", "f6"),
    ("serving_default_images:0", "MUL", "input normalisation (mul)"),
    ("StatefulPartitionedCall:0", "SOFTMAX", "output (softmax)"),
    ("probabilities", "", "output (probabilities)"),
])
def test_layer_names_are_the_keras_layers_an_op_stands_for(tensor, op, layer):
    assert int8.layer_name(tensor, op) == layer


def test_layers_are_ranked_by_the_sqnr_they_add_and_keeping_one_float_takes_its_neighbours():
    # a -> b -> c, and d reads a: a loses 60 - 30 = 30 dB against the exact input, b 30 - 25 = 5, c 25 - 24 = 1,
    # d 30 - 29 = 1; an unmeasured layer adds nothing known (None) and ranks last
    rows = [{"tensor": "a", "ids": ["A"], "sqnr_db": 30.0, "inputs": []},
            {"tensor": "b", "ids": ["B1", "B2"], "sqnr_db": 25.0, "inputs": ["a"]},
            {"tensor": "c", "ids": ["C"], "sqnr_db": 24.0, "inputs": ["b"]},
            {"tensor": "d", "ids": ["D"], "sqnr_db": 29.0, "inputs": ["a"]},
            {"tensor": "e", "ids": ["E"], "sqnr_db": None, "inputs": ["c", "d"]}]
    ranked = int8._ranked(rows)
    assert [(r["tensor"], r["added_db"]) for r in ranked] == [("a", 30.0), ("b", 5.0), ("c", 1.0), ("d", 1.0),
                                                                ("e", None)]
    by = {r["tensor"]: r for r in ranked}
    # float_ops: the producers of its inputs, itself, its readers
    assert by["a"]["float_ops"] == ["A", "B1", "B2", "D"]
    assert by["b"]["float_ops"] == ["A", "B1", "B2", "C"]
    assert by["e"]["float_ops"] == ["C", "D", "E"]
    assert "inputs" not in by["a"]
    assert int8.float_set([by["b"], by["c"]]) == ["A", "B1", "B2", "C", "E"]
    # the worst input decides: e reads c (24 dB) and d (29 dB); measured at 20 dB it adds 24 - 20 = 4
    graph = [("a", 30.0, []), ("b", 25.0, ["a"]), ("c", 24.0, ["b"]), ("d", 29.0, ["a"]), ("e", 20.0, ["c", "d"])]
    again = int8._ranked([{"tensor": t, "ids": [t.upper()], "sqnr_db": db, "inputs": i} for t, db, i in graph])
    assert {r["tensor"]: r["added_db"] for r in again}["e"] == 4.0


def test_search_keeps_the_fewest_ranked_layers_in_float():
    """1, 2, 4, ... then the fewest between: here the first 5 ranked layers are needed, never more."""
    ranked = [{"float_ops": [f"t{i}"]} for i in range(20)]
    calls = []

    def evaluate(layers):
        calls.append(len(layers))
        return len(layers) >= 5, {"accuracy": None}

    chosen, trials = int8.search(ranked, evaluate, 1.0)
    assert len(chosen) == 5 and calls == [0, 1, 2, 4, 8, 6, 5] and trials[-1]["ok"]
    assert [t["float_layers"] for t in trials] == [0, 1, 2, 4, 8, 6, 5] and [t["ok"] for t in trials] == [
        False, False, False, False, True, True, True]
    assert int8.search(ranked, lambda layers: (False, {}), 1.0)[0] is None  # not even with all of them


def test_a_search_whose_answer_is_every_ranked_layer_finds_it_and_none_when_plain_int8_passes():
    ranked = [{"float_ops": [f"t{i}"]} for i in range(20)]
    calls = []

    def only_all(layers):
        calls.append(len(layers))
        return len(layers) == 20, {}

    chosen, _ = int8.search(ranked, only_all, 1.0)
    # 0, 1, 2, 4, 8, 16 fail; all 20 pass; then between 16 and 20: 18, 19 fail
    assert len(chosen) == 20 and calls == [0, 1, 2, 4, 8, 16, 20, 18, 19]
    chosen, trials = int8.search(ranked, lambda layers: (True, {}), 1.0)
    assert chosen == [] and len(trials) == 1  # plain int8 is within the budget: nothing kept float
    assert int8.search([], lambda layers: (False, {}), 1.0) == (None, [{"float_layers": 0, "ok": False}])


def test_a_decision_judges_accuracy_lost_or_agreement_without_labels():
    # Keras answers 0, 1, 2, 0 to images labelled 0, 1, 2, 3: 75% right
    decision = int8.Decision(np.zeros((4, 2, 2, 1)), np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]), "validation")
    same = np.eye(4)[[0, 1, 2, 2]]  # one answer differs (25% agreement lost) but it was wrong either way
    assert decision.judge(same, 0.0) == (0.75, 0.75, True)
    worse = np.eye(4)[[0, 1, 0, 0]]  # 50% right: 25 points lost
    assert decision.judge(worse, 25.0) == (0.5, 0.75, True) and decision.judge(worse, 24.9)[2] is False
    unlabelled = int8.Decision(np.zeros((50, 1)), None, np.zeros(50, int), "calibration images")
    # 49 of 50 = 98% agreement: the parity gate's limit, inclusive; 48 of 50 is out
    assert unlabelled.judge(np.eye(2)[[0] * 49 + [1]], 1.0) == (None, 0.98, True)
    assert unlabelled.judge(np.eye(2)[[0] * 48 + [1] * 2], 100.0)[2] is False


def test_the_budget_names_each_int8_runtime_or_all_of_them():
    assert int8.parse_budget(None) == {}
    assert int8.parse_budget("0.5") == {"tflite": 0.5, "onnx": 0.5, "openvino": 0.5}
    assert int8.parse_budget("openvino=1.5") == {"openvino": 1.5}
    assert int8.parse_budget(" tflite = 2 , onnx=0 ") == {"tflite": 2.0, "onnx": 0.0}
    assert int8.parse_budget("100") == {"tflite": 100.0, "onnx": 100.0, "openvino": 100.0}
    # one number stands for every runtime, so the first (tflite) is the part named
    for bad, part in (("-1", "tflite=-1"), ("lots", "tflite=lots"), ("coreml=1", "coreml=1"),
                      ("tflite=200", "tflite=200"), ("tflite=100.5", "tflite=100.5"), ("onnx=-0.1", "onnx=-0.1")):
        with pytest.raises(CnnkitError) as refused:
            int8.parse_budget(bad)
        assert str(refused.value) == (f"--max-accuracy-drop {part!r}: accuracy points (0-100) lost at most, for every "
                                      "int8 format or per format as tflite=PTS,onnx=PTS,openvino=PTS")


def test_calibration_warnings_at_their_limits():
    assert int8.calibration_warnings(50, np.arange(50) % 4, classes=4) == []  # 50: enough
    few, = int8.calibration_warnings(49, np.arange(49) % 4, classes=4)
    assert few == ("only 49 calibration images (at least 50 recommended): the activation ranges they give may not "
                   "cover other images")
    one, = int8.calibration_warnings(200, np.zeros(200))
    assert one == "the calibration images are all of one class: the ranges of the others are guessed"
    two, = int8.calibration_warnings(200, np.arange(200) % 2, classes=4)
    assert two == "the calibration images cover 2 of the 4 classes: the ranges of the others are guessed"
    assert int8.calibration_warnings(200, np.arange(200) % 4, classes=4) == []
    assert int8.calibration_warnings(200, None) == [] and int8.calibration_warnings(200, np.array([])) == []


def _mixed(met=True, float_layers=("conv_a", "conv_b")):
    return {"max_accuracy_drop": 1.0, "decided_on": "validation split of shapes:200", "decision_images": 120,
            "met": met, "float_layers": list(float_layers) if met else [], "keras_accuracy": 0.99,
            "full_int8": {"accuracy": 0.25, "top1_agreement": 0.25, "bytes": 2048, "latency_ms": 0.5},
            "chosen": {"accuracy": 0.99, "top1_agreement": 1.0, "bytes": 3072, "latency_ms": 0.75},
            "delegates": "a note"}


def test_the_automatic_modes_paragraph_says_what_it_kept_and_what_it_cost():
    assert int8.mixed_text(_mixed()) == (
        "**Automatic mixed int8/float:** 2 layer(s) kept in float to stay within 1 points on 120 images (validation "
        "split of shapes:200; Keras 99.00%; one image is 0.83 points): conv_a, conv_b. Accuracy 25.00% -> 99.00%, "
        "size 2.0 -> 3.0 KiB, batch-1 latency 0.50 -> 0.75 ms. Note: a note.")
    assert int8.mixed_text(_mixed(float_layers=())) == (
        "**Automatic mixed int8/float:** plain int8 is within 1 points on 120 images (validation split of "
        "shapes:200; Keras 99.00%; one image is 0.83 points): 25.00%; no layer kept in float.")
    assert int8.mixed_text(_mixed(met=False)) == (
        "**Automatic mixed int8/float:** not within 1 points on 120 images (validation split of shapes:200; Keras "
        "99.00%; one image is 0.83 points) even with every ranked layer in float (full int8: 25.00%); the file is "
        "plain int8.")
    unlabelled = dict(_mixed(), keras_accuracy=None)
    assert "on 120 unlabelled images (validation split of shapes:200: top-1 agreement)" in int8.mixed_text(unlabelled)


def test_the_report_names_the_worst_layers_with_what_each_loses():
    layers = [{"layer": "conv_a", "op": "CONV_2D", "sqnr_db": 1.234, "added_db": 58.766, "rmse_per_scale": 12.3456},
              {"layer": "fc", "op": "FULLY_CONNECTED", "sqnr_db": None, "added_db": None, "rmse_per_scale": None},
              {"layer": "conv_b", "op": "CONV_2D", "sqnr_db": 40.0, "added_db": 0.5, "rmse_per_scale": 0.4}]
    row = {"artifact": "tflite_int8", "int8_layers": layers, "int8_layers_measured_on": 16}
    assert int8.worst_text(row) == "conv_a (-58.8 dB), conv_b (-0.5 dB)"  # unmeasured layers are not named
    assert int8.worst_text(row, count=1) == "conv_a (-58.8 dB)"
    assert int8.worst_text({"artifact": "onnx"}) == ""
    text = int8.markdown([{"artifact": "onnx"}, row])
    assert "## tflite_int8: where int8 loses accuracy" in text and "on 16 held-out images" in text
    assert "| conv_a | CONV_2D | 1.23 | 58.77 | 12.346 |" in text and "| fc | FULLY_CONNECTED | n/a | n/a | n/a |" in text
    assert "## onnx" not in text and text.endswith("\n")
    assert int8.markdown([{"artifact": "onnx"}]) == ""


def test_channel_sqnr_of_nhwc_tensors_scalars_and_integer_outputs():
    # NHWC (1, 3, 1, 2): channel 0 holds 1, 1, 1 with noise 0.5 each -> ratio 0.25; channel 1 holds 10, 10, 10 exact
    # -> ratio 0; mean 0.125 -> 10 log10(8) = 9.0309 dB (the channels are the last axis, not axis 1 or -2)
    reference = np.array([1.0, 10.0] * 3).reshape(1, 3, 1, 2)
    quantized = reference + np.array([0.5, 0.0] * 3).reshape(1, 3, 1, 2)
    assert int8.channel_sqnr_db(reference, quantized) == pytest.approx(10 * math.log10(8))
    # a scalar is one channel: signal 4, noise 1 -> 10 log10(4) = 6.0206 dB
    assert int8.channel_sqnr_db(2.0, 1.0) == pytest.approx(10 * math.log10(4))
    # integer outputs (a quantized file's uint8) are compared as numbers, never wrapped around:
    # channel 0: 10 vs 12 -> ratio 4 / 100; channel 1: 200 vs 190 -> 100 / 40000; mean 0.02125
    ratio = (4 / 100 + 100 / 40000) / 2
    got = int8.channel_sqnr_db(np.array([[10, 200]], np.uint8), np.array([[12, 190]], np.uint8))
    assert got == pytest.approx(10 * math.log10(1 / ratio))


def test_layer_names_of_the_input_normalisation_ops_and_defaults():
    for op in ("MUL", "SUB", "DIV", "ADD"):
        assert int8.layer_name("serving_default_images:0", op) == f"input normalisation ({op.lower()})"
    assert int8.layer_name("probabilities:0") == "output (probabilities)"  # no op given: the tensor's own name
    assert int8.layer_name("StatefulPartitionedCall/lenet5_rgb/lenet5/c1_conv/BiasAdd") == "c1_conv"


def test_sqnr_added_is_rounded_to_four_decimals_and_an_unmeasured_layer_ranks_last():
    rows = [{"tensor": "a", "ids": ["A"], "sqnr_db": 30.123456, "inputs": []},  # adds 60 - 30.123456 = 29.876544
            {"tensor": "b", "ids": ["B"], "sqnr_db": 29.623456, "inputs": ["a"]},  # adds 0.5
            {"tensor": "c", "ids": ["C"], "sqnr_db": None, "inputs": ["b"]}]
    ranked = int8._ranked(rows)
    assert [(r["tensor"], r["added_db"]) for r in ranked] == [("a", 29.8765), ("b", 0.5), ("c", None)]


def test_the_worst_three_layers_are_named_and_the_search_logs_what_it_kept(caplog):
    import logging

    layers = [{"layer": f"conv_{i}", "added_db": 10.0 - i} for i in range(4)]
    assert int8.worst_text({"int8_layers": layers}) == "conv_0 (-10.0 dB), conv_1 (-9.0 dB), conv_2 (-8.0 dB)"
    ranked = [{"float_ops": [f"t{i}"]} for i in range(20)]
    with caplog.at_level(logging.INFO, logger="export"):
        int8.search(ranked, lambda layers: (len(layers) >= 5, {}), 1.5)
    assert caplog.records[-1].getMessage() == "int8 within 1.5 points with 5 layer(s) in float (of 20 ranked)"


def test_report_md_section_word_for_word():
    row = {"artifact": "tflite_int8", "int8_layers_measured_on": 16,
           "int8_layers": [{"layer": "conv_a", "op": "CONV_2D", "sqnr_db": 1.234, "added_db": 58.766,
                            "rmse_per_scale": 12.3456}],
           "mixed": _mixed(), "calibration": {"warnings": ["only 10 calibration images", "one class"]}}
    assert int8.markdown([row]) == "\n".join([
        "", "## tflite_int8: where int8 loses accuracy", "",
        "Each quantized layer's output against the float model's on 16 held-out images: SQNR over output channels "
        "(higher is better, at most 60 dB) and what the layer itself loses against its inputs, worst first; "
        "rmse/scale is the error in quantization steps. All layers: report.json.", "",
        "| layer | op | SQNR (dB) | lost here (dB) | rmse/scale |", "|---|---|---:|---:|---:|",
        "| conv_a | CONV_2D | 1.23 | 58.77 | 12.346 |", "", int8.mixed_text(_mixed()), "",
        "**Calibration warning:** only 10 calibration images.", "", "**Calibration warning:** one class."]) + "\n"
    two = int8.markdown([row, dict(row, artifact="onnx_int8", mixed=None, calibration=None)])
    assert two.count("## ") == 2 and two.count("**Automatic mixed") == 1 and two.count("Calibration warning") == 2


def test_the_automatic_modes_sizes_and_an_unknown_accuracy():
    mixed = _mixed()
    mixed["full_int8"] = dict(mixed["full_int8"], bytes=1024000, accuracy=None)  # 1000.0 KiB
    mixed["chosen"] = dict(mixed["chosen"], bytes=2048000)
    text = int8.mixed_text(mixed)
    assert "Accuracy n/a -> 99.00%, size 1000.0 -> 2000.0 KiB" in text
