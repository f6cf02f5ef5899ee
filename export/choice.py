"""Which artifact of an export answers: the fastest whose answers stay within the user's accuracy budget.

A static graph can be quantized and compiled for the CPU's integer and bfloat16 units; on a 2-core CPU with
AVX512-VNNI and BF16 the same MobileNet v2 answered 2.4-3.1x faster in int8 than in float32, with the same answers
on the held-out images (measured for issue 43); on AVX2 alone int8 gains little or loses (benchmarks/RESULTS.md,
Deployment). Every artifact's parity row already measures how far its answers are from
the Keras model's, so ``auto`` (``cnnkit predict`` and ``cnnkit serve``) serves the artifact with the lowest
batch-1 latency in the report among those within the **budget**:

- exact artifacts (float32: the SavedModel, TFLite, ONNX, OpenVINO; within 1e-4 of the Keras model) always are;
- by default a low-precision one (float16, bfloat16, int8) is when it gives the Keras model's top-1 answer on at
  least 99.5% of the export's held-out images (MIN_AGREEMENT) and loses no more accuracy than one of those images;
- ``--max-accuracy-drop PTS`` widens that: PTS accuracy points may be lost, and as many points of agreement;
- ``--exact``: exact artifacts only (what ``auto`` chose before budgets).

A model whose answers hardly depend on the input (untrained: parity.constant_output_warning) is served exact:
agreement proves nothing there. Without labels on the held-out images, agreement alone decides. The latencies are
those the export measured; the report records the CPU they were measured on, and the choice says when it differs
from the one serving (``cnnkit validate`` there measures them again).
"""
import dataclasses
import os

from export import parity

#: the share of held-out images on which a low-precision artifact must give the Keras model's top-1 answer
MIN_AGREEMENT = 0.995
#: a low-precision artifact is served instead of the fastest exact one only when it is at least this much faster at
#: batch 1 (the report's medians of a few calls move by several percent between runs: LeNet-5's 0.05 ms files
#: tie within that)
MIN_SPEEDUP = 1.1
#: CPU features that decide which low-precision arithmetic runs fast (int8 dot products, bfloat16)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
#: int8 dot-product instructions. Without them (AVX2 alone) int8 gains little or loses, measured on a 2-core AVX2
#: EPYC (benchmarks/RESULTS.md, Deployment): MobileNet v2 224 at batch 1, LiteRT int8 6.2 ms against 5.4 float32,
#: ONNX Runtime 9.0 against 7.0, OpenVINO int8 (NNCF) level with float32; ResNet-50, OpenVINO int8 1.12x its float32
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: what --runtime auto may serve, written by `cnnkit export` without a format flag: each runtime's float32 file
DEFAULT_EXACT = ("tflite-float32", "onnx", "openvino")
#: ... and, where the CPU has INT8_FLAGS, the int8 files (those that need calibration images)
DEFAULT_INT8 = ("tflite-int8", "openvino-int8")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How far a served artifact's answers may be from the Keras model's."""
    #: exact artifacts only (--exact)
    exact: bool = False
    #: accuracy points a low-precision artifact may lose (--max-accuracy-drop); None: one held-out image's worth
    max_accuracy_drop: float = None

    def __post_init__(self):
        from keras_cnns.errors import CnnkitError

        if self.exact and self.max_accuracy_drop is not None:
            raise CnnkitError("--exact serves float32 artifacts only; --max-accuracy-drop widens the budget of "
                              "low-precision ones: give one of them")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 100:
            raise CnnkitError(f"--max-accuracy-drop is accuracy points between 0 and 100, got "
                              f"{self.max_accuracy_drop}")

    def describe(self):
        if self.exact:
            return "exact (--exact): float32 artifacts only"
        if self.max_accuracy_drop is None:
            return (f"top-1 agreement >= {MIN_AGREEMENT:.1%} and at most one held-out image of accuracy lost")
        return (f"top-1 agreement >= {MIN_AGREEMENT - self.max_accuracy_drop / 100:.1%} and at most "
                f"{self.max_accuracy_drop:g} accuracy points lost (--max-accuracy-drop)")

    def judge(self, row, keras_row, images):
        """None when the parity ``row`` of a low-precision artifact is within the budget, else why not."""
        if self.exact:
            return "not exact (--exact)"
        loss = 100 / images if self.max_accuracy_drop is None else self.max_accuracy_drop
        agreement = MIN_AGREEMENT - (0 if self.max_accuracy_drop is None else self.max_accuracy_drop / 100)
        if row["top1_agreement"] < agreement - 1e-9:
            return f"top-1 agreement {row['top1_agreement']:.1%} < {agreement:.1%}"
        if row.get("accuracy") is not None and keras_row.get("accuracy") is not None:
            lost = (keras_row["accuracy"] - row["accuracy"]) * 100
            if lost > loss + 1e-9:
                return f"loses {lost:.2f} accuracy points (> {loss:.2f})"
        return None


@dataclasses.dataclass
class Choice:
    """The artifact chosen for a version: its kind and path, and why (one line a person reads)."""
    kind: str
    path: str
    artifact: str
    reason: str
    #: [{artifact, kind, latency_ms, within: bool, why}] for every artifact of the report
    considered: list = dataclasses.field(default_factory=list)

    def as_dict(self):
        return {"artifact": self.artifact, "kind": self.kind, "reason": self.reason, "considered": self.considered}


def cpu_description():
    """{"model", "flags"}: the CPU an export's latencies are measured on (flags: SPEED_FLAGS it has)."""
    import platform
    import re

    from keras_cnns.training.precision import cpu_flags

    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.+)", f.read())
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    flags = cpu_flags()
    return {"model": model, "flags": [f for f in SPEED_FLAGS if f in flags]}


def default_plan(can_calibrate=True, flags=None):
    """(format names, why) that ``cnnkit export`` writes when no format is named: the SavedModel and what
    ``--runtime auto`` may serve on this CPU kind (DEFAULT_EXACT where available; DEFAULT_INT8 where the CPU has
    int8 dot products and there are calibration images; the bfloat16 IR where OpenVINO runs bfloat16 here).
    ``flags``: the CPU's SPEED_FLAGS (default: this one's)."""
    from export.formats import FORMATS

    flags = cpu_description()["flags"] if flags is None else flags
    int8 = [f for f in INT8_FLAGS if f in flags]
    names = list(DEFAULT_EXACT) + ["openvino-bf16"] + (list(DEFAULT_INT8) if int8 and can_calibrate else [])
    names = [n for n in names if FORMATS[n].available is None or FORMATS[n].available() is None]
    if not int8:
        why = (f"no int8 file: this CPU ({','.join(flags) or 'no SIMD flags read'}) has no int8 dot-product "
               f"instructions ({', '.join(INT8_FLAGS)}), where int8 gains little over float32 or loses")
    elif not can_calibrate:
        why = "no int8 file: the source has no images to calibrate on (--calibration-data SPEC)"
    else:
        why = f"int8 files: this CPU has {', '.join(int8)}"
    return ["saved_model", *names], why


def choose(version_dir, budget=None, report=None, meta=None):
    """The Choice for an export version (a cnnkit export, with its report.json and export.json): the lowest batch-1
    latency among the artifacts that passed the parity report and are within ``budget`` (a Budget; default:
    Budget())."""
    from export.formats import by_kind
    from keras_cnns.files import read_json

    budget = budget or Budget()
    report = report or read_json(os.path.join(version_dir, "report.json"))
    meta = meta or read_json(os.path.join(version_dir, "export.json"))
    paths = {a["artifact"]: os.path.join(version_dir, a["path"]) for a in meta["artifacts"]}
    keras_row = report["artifacts"][0]
    untrained = keras_row.get("output_spread", 1.0) < parity.MIN_OUTPUT_SPREAD
    considered, eligible = [], []
    for row in report["artifacts"][1:]:
        if row["artifact"] not in paths:
            why = "not published"
        elif not row["ok"]:
            why = "failed the parity report"
        elif by_kind(row["kind"]).exact:
            why = None
        elif untrained:
            why = "the model's answers hardly depend on the input (untrained?): agreement proves nothing"
        else:
            why = budget.judge(row, keras_row, report["images"])
        considered.append({"artifact": row["artifact"], "kind": row["kind"], "latency_ms": row["latency_ms"],
                           "within": why is None, "why": why or "within the budget"})
        if why is None:
            eligible.append(row)
    exact = min((r for r in eligible if by_kind(r["kind"]).exact), key=lambda r: r["latency_ms"], default=None)
    low = min((r for r in eligible if not by_kind(r["kind"]).exact), key=lambda r: r["latency_ms"], default=None)
    if exact is None and low is None:
        return Choice("savedmodel", version_dir, "saved_model", "no artifact passed the parity report: the SavedModel",
                      considered)
    if low is not None and (exact is None or low["latency_ms"] * MIN_SPEEDUP <= exact["latency_ms"]):
        best = low
        reason = (f"{low['artifact']}: the fastest within the budget ({budget.describe()}), {low['latency_ms']:.2f} "
                  f"ms at batch 1" + (f" against {exact['latency_ms']:.2f} ms for the fastest exact artifact "
                                      f"({exact['artifact']})" if exact else "")
                  + f"; top-1 agreement {low['top1_agreement']:.1%}")
        if low.get("accuracy") is not None and keras_row.get("accuracy") is not None:
            reason += f", accuracy {low['accuracy']:.2%} (Keras {keras_row['accuracy']:.2%})"
    else:
        best = exact
        reason = f"{exact['artifact']}: the fastest exact artifact, {exact['latency_ms']:.2f} ms at batch 1"
        if low is not None:
            reason += (f"; {low['artifact']} is within the budget but not {MIN_SPEEDUP:g}x faster "
                       f"({low['latency_ms']:.2f} ms)")
        outside = [c for c in considered if not c["within"] and c["latency_ms"] * MIN_SPEEDUP <= exact["latency_ms"]]
        if outside:
            reason += "; faster but outside the budget: " + ", ".join(f"{c['artifact']} ({c['why']})"
                                                                     for c in outside)
    measured_on = report.get("cpu")
    if measured_on and measured_on != cpu_description():
        reason += (f"; latencies measured on {measured_on['model']} ({','.join(measured_on['flags'])}), not this CPU: "
                   "`cnnkit validate` here measures them again")
    return Choice(best["kind"], paths[best["artifact"]], best["artifact"], reason, considered)
