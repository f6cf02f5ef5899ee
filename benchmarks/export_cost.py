"""Export cost: wall time and peak resident memory of `cnnkit export` per format, for each family's largest
canonical model (untrained weights, canonical input size).

    python benchmarks/export_cost.py [--models vgg19,resnet152,...] [--formats saved_model,tflite,onnx]
                                     [--ceiling-gb 22] [--merge]

Each cell is one `cnnkit export MODEL [--tflite | --onnx]` in its own process (the SavedModel is always
written, so the tflite and onnx cells include it), the memory of that process and its children (the converters)
sampled every 0.1 s (benchmarks._record.tree_memory_mb: mapped libraries counted once), and killed above the
ceiling. With --record, rewrites the export_cost section of
benchmarks/RESULTS.md and writes benchmarks/results/export_cost.json; ``--merge`` keeps the recorded rows this
run does not measure again (only when they were measured on a machine with the same description).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, record_rows, replace_section, run_watched  # noqa: E402

#: the issue's list: the largest canonical model of every family
MODELS = ("vgg19", "alexnet", "resnet152", "wide_resnet101_2", "resnext101_64x4d", "densenet201", "efficientnet_b7",
          "mobilenet_v2", "squeezenet1_1")
FLAGS = {"saved_model": [], "tflite": ["--tflite"], "onnx": ["--onnx"]}
#: issue 16's goal for the peak resident memory of an export: 6x the model's weights + 2 GB
GOAL_TIMES_WEIGHTS, GOAL_PLUS_MB = 6, 2048


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--formats", default=",".join(FLAGS))
    parser.add_argument("--ceiling-gb", type=float, default=22.0)
    parser.add_argument("--merge", action="store_true", help="Keep recorded rows not measured again (same machine).")
    add_record_option(parser)
    args = parser.parse_args()
    rows = []
    for name in filter(None, args.models.split(",")):
        for fmt in filter(None, args.formats.split(",")):
            scratch = tempfile.mkdtemp(prefix="export-cost-")
            try:
                run = run_watched([sys.executable, "-m", "cnnkit", "export", name, "--weights", "none", *FLAGS[fmt],
                                   "--json", "--output", scratch], ceiling_mb=args.ceiling_gb * 1024)
                weights = _weights_mb(scratch, name)
                row = {"model": name, "format": fmt, "weights_mb": weights, "seconds": run["seconds"],
                       "peak_mb": run["peak_mb"], "ok": run["returncode"] == 0,
                       "note": "killed at the ceiling" if run["killed"] else
                       ("" if run["returncode"] == 0 else run["stderr"].strip().splitlines()[-1][:160])}
                if run["returncode"] == 0:
                    report = json.loads(run["stdout"])
                    row["images"] = report["images"]
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            rows.append(row)
            print(json.dumps(row), flush=True)
    command = "python benchmarks/export_cost.py " + " ".join(sys.argv[1:])
    rows = [{**r, "command": command.strip()} for r in rows]
    earlier = _earlier_rows(rows) if args.merge else []
    rows = sorted(earlier + rows, key=lambda r: (MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS),
                                                 list(FLAGS).index(r["format"])))
    _, described = record_rows("export_cost", rows)
    command = "` and `".join(dict.fromkeys(r["command"] for r in rows))
    lines = ["| model | weights | format | wall | peak RSS | peak / weights | goal: 6x weights + 2 GB | parity images "
             "| result |", "|---|---:|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        ratio, goal = "", ""
        if r.get("weights_mb"):
            limit = GOAL_TIMES_WEIGHTS * r["weights_mb"] + GOAL_PLUS_MB
            ratio = f"{r['peak_mb'] / r['weights_mb']:.0f}x"
            goal = f"{limit / 1024:.1f} GB: {'met' if r['peak_mb'] <= limit else 'not met'}"
        lines.append(f"| {r['model']} | {r['weights_mb'] or '?'} MB | {r['format']} | {r['seconds']:.0f} s | "
                     f"{r['peak_mb'] / 1024:.1f} GB | {ratio} | {goal} | {r.get('images', '')} | "
                     f"{'ok' if r['ok'] else r['note']} |")
    replace_section("export_cost", record=args.record, body=f"`{command}` on {described}\n\n" + "\n".join(lines))


def _earlier_rows(rows):
    """The recorded rows of (model, format) pairs not in ``rows``, if recorded on a machine like this one."""
    from benchmarks._record import RESULTS, machine

    path = os.path.join(os.path.dirname(RESULTS), "results", "export_cost.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        recorded = json.load(f)
    if recorded["machine"] != machine():
        print(f"not merging: recorded on {recorded['machine']}", file=sys.stderr)
        return []
    measured = {(r["model"], r["format"]) for r in rows}
    return [{**r, "command": r.get("command", recorded["command"])} for r in recorded["rows"]
            if (r["model"], r["format"]) not in measured]


def _weights_mb(base, name):
    """MB of the SavedModel's variables (the model's weights), or None when nothing was exported."""
    from export.onnx_format import weights_bytes

    return round(weights_bytes(os.path.join(base, name, "1")) / 2 ** 20) or None


if __name__ == "__main__":
    main()
