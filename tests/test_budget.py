"""The accuracy budget: which artifact of an export ``auto`` serves (export/choice.py).

Every expected choice below is worked out by hand from the report rows the test writes: the held-out split has
200 images, so one image is 0.5 accuracy points and 0.5% of top-1 agreement; the default budget is agreement >=
99.5% (at most one flip in 200) and at most one image of accuracy lost.
"""
import json
import os

import pytest

from export import choice
from export.choice import Budget, choose
from keras_cnns.errors import CnnkitError

IMAGES = 200
KERAS_ACCURACY = 0.9


def _row(artifact, kind, latency_ms, agreement=1.0, accuracy=KERAS_ACCURACY, ok=True):
    return {"artifact": artifact, "kind": kind, "latency_ms": latency_ms, "top1_agreement": agreement,
            "accuracy": accuracy, "ok": ok, "max_abs_diff": 0.0}


def _version(tmp_path, rows, spread=0.9, labelled=True, cpu="here", published=None):
    """A version folder with an export.json naming the artifacts and a report.json holding ``rows``."""
    folder = tmp_path / "1"
    folder.mkdir(exist_ok=True)
    keras = _row("keras", "keras", 3.0)
    keras["output_spread"] = spread
    if not labelled:
        for row in [keras, *rows]:
            row["accuracy"] = None
    paths = {"saved_model": "", "tflite_float32": "tflite/model_float32.tflite", "onnx": "onnx/model.onnx",
             "onnx_int8": "onnx/model_int8.onnx", "tflite_int8": "tflite/model_int8.tflite",
             "openvino_int8": "openvino/model_int8.xml", "openvino_bf16": "openvino/model_bf16.xml",
             "tflite_float16": "tflite/model_float16.tflite"}
    names = published if published is not None else [r["artifact"] for r in rows]
    meta = {"artifacts": [{"artifact": a, "kind": next(r["kind"] for r in rows if r["artifact"] == a),
                           "path": paths[a]} for a in names]}
    report = {"images": IMAGES, "artifacts": [keras, *rows],
              "cpu": choice.cpu_description() if cpu == "here" else cpu}
    (folder / "export.json").write_text(json.dumps(meta))
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder)


def _exact_rows():
    return [_row("saved_model", "savedmodel", 1.2), _row("tflite_float32", "tflite-float32", 0.8),
            _row("onnx", "onnx", 0.9)]


def test_int8_within_one_image_of_accuracy_and_995_agreement_is_served(tmp_path):
    # one flip in 200 (99.5%), one image lost (0.5 points): exactly at both limits, so within the budget
    rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.3, agreement=0.995, accuracy=0.895)]
    chosen = choose(_version(tmp_path, rows))
    assert (chosen.artifact, chosen.kind) == ("onnx_int8", "onnx-int8")
    assert chosen.path == os.path.join(str(tmp_path / "1"), "onnx/model_int8.onnx")
    assert "0.30 ms" in chosen.reason and "0.80 ms" in chosen.reason and "tflite_float32" in chosen.reason
    assert "99.5%" in chosen.reason and "89.50%" in chosen.reason and "Keras 90.00%" in chosen.reason


@pytest.mark.parametrize("agreement, accuracy, why", [
    (0.99, 0.9, "top-1 agreement 99.0% < 99.5%"),          # two flips in 200, no accuracy lost (they cancel)
    (0.995, 0.89, "loses 1.00 accuracy points (> 0.50)"),  # one flip, but two images of accuracy lost
])
def test_int8_one_image_past_the_default_budget_is_passed_over_and_named(tmp_path, agreement, accuracy, why):
    rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.3, agreement=agreement, accuracy=accuracy)]
    chosen = choose(_version(tmp_path, rows))
    assert chosen.artifact == "tflite_float32"  # the fastest exact artifact
    assert f"onnx_int8 ({why})" in chosen.reason
    considered = {c["artifact"]: c for c in chosen.considered}
    assert considered["onnx_int8"]["within"] is False and considered["onnx_int8"]["why"] == why
    assert all(considered[a]["within"] for a in ("saved_model", "tflite_float32", "onnx"))


def test_max_accuracy_drop_widens_the_budget_and_exact_closes_it(tmp_path):
    # agreement 98.5% and 1 point lost: outside the default, within --max-accuracy-drop 1 (agreement >= 98.5%)
    rows = _exact_rows() + [_row("openvino_int8", "openvino-int8", 0.3, agreement=0.985, accuracy=0.89)]
    version = _version(tmp_path, rows)
    assert choose(version).artifact == "tflite_float32"
    assert choose(version, Budget(max_accuracy_drop=1)).artifact == "openvino_int8"
    # 0.9 points: 1 point lost is past it
    assert choose(version, Budget(max_accuracy_drop=0.9)).artifact == "tflite_float32"
    assert choose(version, Budget(exact=True)).artifact == "tflite_float32"
    assert "not exact (--exact)" in {c["why"] for c in choose(version, Budget(exact=True)).considered}
    with pytest.raises(CnnkitError, match="--exact"):
        Budget(exact=True, max_accuracy_drop=1)
    for bad in (-0.1, 100.5):
        with pytest.raises(CnnkitError, match="between 0 and 100"):
            Budget(max_accuracy_drop=bad)


def test_the_fastest_of_several_passing_low_precision_artifacts_wins(tmp_path):
    rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.5), _row("tflite_int8", "tflite-int8", 0.4),
                            _row("openvino_bf16", "openvino-bf16", 0.45)]
    assert choose(_version(tmp_path, rows)).artifact == "tflite_int8"


def test_low_precision_must_be_clearly_faster_than_the_fastest_exact_artifact(tmp_path):
    # 0.8 ms exact: 0.8 / 1.1 = 0.727 ms is the slowest low-precision latency that still wins
    for latency, chosen in ((0.72, "onnx_int8"), (0.74, "tflite_float32"), (0.79, "tflite_float32")):
        rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", latency)]
        got = choose(_version(tmp_path, rows))
        assert got.artifact == chosen, latency
    assert "within the budget but not 1.1x faster" in got.reason


def test_failed_or_unpublished_rows_are_never_chosen(tmp_path):
    rows = [_row("saved_model", "savedmodel", 1.2), _row("tflite_float32", "tflite-float32", 0.1, ok=False),
            _row("onnx", "onnx", 0.9), _row("tflite_int8", "tflite-int8", 0.05)]
    chosen = choose(_version(tmp_path, rows, published=["saved_model", "onnx"]))
    assert chosen.artifact == "onnx"
    considered = {c["artifact"]: c["why"] for c in chosen.considered}
    assert considered["tflite_float32"] == "not published"
    # published but out of tolerance (a version exported with --allow-failed-variants keeps the row)
    chosen = choose(_version(tmp_path, rows, published=["saved_model", "tflite_float32", "onnx", "tflite_int8"]))
    assert {c["artifact"]: c["why"] for c in chosen.considered}["tflite_float32"] == "failed the parity report"
    assert chosen.artifact == "tflite_int8"


def test_an_untrained_model_is_served_exact_whatever_its_agreement(tmp_path):
    # near-uniform answers (spread below parity.MIN_OUTPUT_SPREAD = 1e-3): agreement proves nothing
    rows = _exact_rows() + [_row("tflite_int8", "tflite-int8", 0.1)]
    chosen = choose(_version(tmp_path, rows, spread=5e-4))
    assert chosen.artifact == "tflite_float32"
    assert "untrained" in {c["artifact"]: c["why"] for c in chosen.considered}["tflite_int8"]
    assert choose(_version(tmp_path, rows, spread=2e-3)).artifact == "tflite_int8"


def test_without_labels_agreement_alone_decides(tmp_path):
    rows = _exact_rows() + [_row("tflite_int8", "tflite-int8", 0.1, agreement=0.995)]
    assert choose(_version(tmp_path, rows, labelled=False)).artifact == "tflite_int8"
    rows[-1]["top1_agreement"] = 0.99
    assert choose(_version(tmp_path, rows, labelled=False)).artifact == "tflite_float32"


def test_the_choice_says_when_the_latencies_come_from_another_cpu(tmp_path):
    rows = _exact_rows()
    assert "not this CPU" not in choose(_version(tmp_path, rows)).reason
    other = {"model": "Some Other CPU", "flags": ["avx2", "avx512f", "avx512_vnni"]}
    reason = choose(_version(tmp_path, rows, cpu=other)).reason
    assert "measured on Some Other CPU (avx2,avx512f,avx512_vnni), not this CPU" in reason


def test_a_version_without_a_report_is_served_by_its_savedmodel(tmp_path):
    from export.local import choose as choose_local
    from export.local import pick_artifact

    (tmp_path / "1").mkdir()
    assert pick_artifact(str(tmp_path / "1")) == ("savedmodel", str(tmp_path / "1"))
    assert "no parity report" in choose_local(str(tmp_path / "1")).reason
