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
    # --max-accuracy-drop 1 lowers the agreement asked by 1 point, no more: 98.0% is below 98.5%
    rows[-1]["top1_agreement"] = 0.98
    assert choose(_version(tmp_path, rows), Budget(max_accuracy_drop=1)).artifact == "tflite_float32"
    with pytest.raises(CnnkitError) as both:
        Budget(exact=True, max_accuracy_drop=1)
    assert str(both.value) == ("--exact serves float32 artifacts only; --max-accuracy-drop widens the budget of "
                               "low-precision ones: give one of them")
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
    assert got.reason == ("tflite_float32: the fastest exact artifact, 0.80 ms at batch 1; onnx_int8 is within the "
                          "budget but not 1.1x faster (0.79 ms)")
    # exactly 1.1x faster (0.5 x 1.1 == 0.55 in floating point) is fast enough: the limit is inclusive
    assert 0.5 * choice.MIN_SPEEDUP == 0.55
    rows = [_row("saved_model", "savedmodel", 0.55), _row("onnx_int8", "onnx-int8", 0.5)]
    assert choose(_version(tmp_path, rows)).artifact == "onnx_int8"
    rows[-1]["top1_agreement"] = 0.9  # and named as faster though outside the budget
    assert choose(_version(tmp_path, rows)).reason.endswith("outside the budget: onnx_int8 (top-1 agreement 90.0% < "
                                                            "99.5%)")


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
    assert reason == ("tflite_float32: the fastest exact artifact, 0.80 ms at batch 1; latencies measured on Some "
                      "Other CPU (avx2,avx512f,avx512_vnni), not this CPU: `cnnkit validate` here measures them again")


def test_a_version_without_a_report_is_served_by_its_savedmodel(tmp_path):
    from export.local import choose as choose_local
    from export.local import pick_artifact

    (tmp_path / "1").mkdir()
    assert pick_artifact(str(tmp_path / "1")) == ("savedmodel", str(tmp_path / "1"))
    assert "no parity report" in choose_local(str(tmp_path / "1")).reason


def test_every_reason_reads_in_full(tmp_path):
    """The reasons a person reads (predict, metadata, the page), word for word, one per branch of the choice."""
    low = _row("onnx_int8", "onnx-int8", 0.3, agreement=0.995, accuracy=0.895)
    assert choose(_version(tmp_path, _exact_rows() + [low])).reason == (
        "onnx_int8: the fastest within the budget (top-1 agreement >= 99.5% and at most one held-out image of accuracy "
        "lost), 0.30 ms at batch 1 against 0.80 ms for the fastest exact artifact (tflite_float32); top-1 agreement "
        "99.5%, accuracy 89.50% (Keras 90.00%)")
    got = choose(_version(tmp_path, _exact_rows() + [low]), Budget(max_accuracy_drop=2.5))
    assert got.reason.startswith("onnx_int8: the fastest within the budget (top-1 agreement >= 97.0% and at most "
                                 "2.5 accuracy points lost (--max-accuracy-drop)), 0.30 ms")
    # no exact artifact left (a version published with --allow-failed-variants and its exact files failed)
    rows = [_row("saved_model", "savedmodel", 1.2, ok=False), low]
    assert choose(_version(tmp_path, rows)).reason == (
        "onnx_int8: the fastest within the budget (top-1 agreement >= 99.5% and at most one held-out image of accuracy "
        "lost), 0.30 ms at batch 1; top-1 agreement 99.5%, accuracy 89.50% (Keras 90.00%)")
    got = choose(_version(tmp_path, _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.3, agreement=0.98)]))
    assert got.reason == ("tflite_float32: the fastest exact artifact, 0.80 ms at batch 1; faster but outside the "
                          "budget: onnx_int8 (top-1 agreement 98.0% < 99.5%)")
    # the faster ones outside the budget are all named, in the report's order; slower ones are not
    rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.3, agreement=0.98),
                            _row("tflite_int8", "tflite-int8", 0.2, ok=False),
                            _row("openvino_int8", "openvino-int8", 0.85, agreement=0.9)]  # not 1.1x faster
    assert choose(_version(tmp_path, rows)).reason.endswith(
        "faster but outside the budget: onnx_int8 (top-1 agreement 98.0% < 99.5%), tflite_int8 (failed the parity "
        "report)")
    # nothing passed at all: the SavedModel, as it is
    nothing = choose(_version(tmp_path, [_row("saved_model", "savedmodel", 1.2, ok=False)]))
    assert (nothing.kind, nothing.path, nothing.artifact) == ("savedmodel", str(tmp_path / "1"), "saved_model")
    assert nothing.reason == "no artifact passed the parity report: the SavedModel"
    assert nothing.considered == [{"artifact": "saved_model", "kind": "savedmodel", "latency_ms": 1.2,
                                   "within": False, "why": "failed the parity report"}]
    assert Budget(exact=True).describe() == "exact (--exact): float32 artifacts only"


def test_what_is_considered_is_recorded_row_by_row(tmp_path):
    rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.3)]
    got = choose(_version(tmp_path, rows, spread=5e-4))
    assert got.considered == [
        {"artifact": "saved_model", "kind": "savedmodel", "latency_ms": 1.2, "within": True, "why": "within the budget"},
        {"artifact": "tflite_float32", "kind": "tflite-float32", "latency_ms": 0.8, "within": True,
         "why": "within the budget"},
        {"artifact": "onnx", "kind": "onnx", "latency_ms": 0.9, "within": True, "why": "within the budget"},
        {"artifact": "onnx_int8", "kind": "onnx-int8", "latency_ms": 0.3, "within": False,
         "why": "the model's answers hardly depend on the input (untrained?): agreement proves nothing"}]
    assert got.as_dict() == {"artifact": "tflite_float32", "kind": "tflite-float32", "reason": got.reason,
                             "considered": got.considered}


def test_the_limits_of_the_budget_and_of_the_spread_are_inclusive(tmp_path):
    from export import parity

    rows = _exact_rows() + [_row("onnx_int8", "onnx-int8", 0.3)]
    # a spread exactly at parity.MIN_OUTPUT_SPREAD is a model that answers (constant_output_warning agrees)
    assert parity.constant_output_warning(parity.MIN_OUTPUT_SPREAD, 10) is None
    assert choose(_version(tmp_path, rows, spread=parity.MIN_OUTPUT_SPREAD)).artifact == "onnx_int8"
    # a report written before output_spread was recorded: a trained model
    version = _version(tmp_path, rows)
    report = json.loads(open(os.path.join(version, "report.json")).read())
    del report["artifacts"][0]["output_spread"]
    open(os.path.join(version, "report.json"), "w").write(json.dumps(report))
    assert choose(version).artifact == "onnx_int8"
    # 0 and 100 points are budgets a user may give; 0 still lets through a file that loses nothing
    assert choose(_version(tmp_path, rows), Budget(max_accuracy_drop=0)).artifact == "onnx_int8"
    assert Budget(max_accuracy_drop=100).max_accuracy_drop == 100
    # an accuracy missing on the Keras row alone (a report without labels for it) leaves agreement to decide
    rows[-1]["accuracy"] = 0.5
    version = _version(tmp_path, rows)
    report = json.loads(open(os.path.join(version, "report.json")).read())
    report["artifacts"][0]["accuracy"] = None
    open(os.path.join(version, "report.json"), "w").write(json.dumps(report))
    assert choose(version).artifact == "onnx_int8"


def test_the_cpu_is_described_by_its_name_and_its_speed_flags(monkeypatch):
    with open("/proc/cpuinfo") as f:
        lines = f.read().splitlines()
    name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
    described = choice.cpu_description()
    assert described == {"model": name, "flags": [f for f in choice.SPEED_FLAGS if f in flags]}
    assert "avx2" in described["flags"] or "avx2" not in flags
    # where /proc/cpuinfo cannot be read: the platform's word for it, else "CPU", and no flags
    import builtins
    import platform

    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert choice.cpu_description() == {"model": "CPU", "flags": []}
    monkeypatch.setattr(platform, "processor", lambda: "x86_64")
    assert choice.cpu_description() == {"model": "x86_64", "flags": []}
    # a /proc/cpuinfo without a model name (some Arm kernels): the platform's word, and the flags it does list
    import io

    def arm_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            return io.StringIO("processor : 0\nflags : fp asimd avx2\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", arm_cpuinfo)
    assert choice.cpu_description() == {"model": "x86_64", "flags": ["avx2"]}


def test_export_without_a_format_writes_what_auto_may_serve_on_this_cpu_kind(monkeypatch):
    from export import formats, openvino_format

    bf16 = ["openvino-bf16"] if openvino_format.bf16_unavailable() is None else []
    names, why = choice.default_plan(flags=["avx2", "fma"])  # AVX2 alone: int8 is no faster than float32
    assert names == ["saved_model", "tflite-float32", "onnx", "openvino", *bf16]
    assert why == ("no int8 file: this CPU (avx2,fma) has no int8 dot-product instructions (avx512_vnni, avx_vnni, "
                   "amx_int8), where int8 gains little over float32 or loses")
    names, why = choice.default_plan(flags=["avx2", "avx512f", "avx512_vnni"])
    assert names == ["saved_model", "tflite-float32", "onnx", "openvino", *bf16, "tflite-int8", "openvino-int8"]
    assert why == "int8 files: this CPU has avx512_vnni"
    names, why = choice.default_plan(can_calibrate=False, flags=["amx_int8"])
    assert "tflite-int8" not in names and why.startswith("no int8 file: the source has no images to calibrate on")
    # a runtime that is not installed is left out, not an error
    monkeypatch.setitem(formats.FORMATS, "openvino", formats.dataclasses.replace(
        formats.FORMATS["openvino"], available=lambda: "OpenVINO is not installed"))
    monkeypatch.setitem(formats.FORMATS, "openvino-int8", formats.dataclasses.replace(
        formats.FORMATS["openvino-int8"], available=lambda: "NNCF is not installed"))
    assert choice.default_plan(flags=["avx512_vnni"])[0] == ["saved_model", "tflite-float32", "onnx", *bf16,
                                                             "tflite-int8"]
