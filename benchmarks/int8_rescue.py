"""int8 that keeps its accuracy: plain full-integer TFLite and ONNX against ``--max-accuracy-drop 1``, three models.

Each model is exported twice through the CLI (``cnnkit export ... --tflite --onnx --quantize int8``), once plain and
once with the automatic mode; the table gives, on the test split the parity report judges (never the validation
split the automatic mode decided on): accuracy, top-1 agreement with Keras, size and batch-1 latency, and how many
layers stayed float. Models, trained here on generated data (no download):

- ``outlier``: the test suite's small CNN with an outlier activation range (tests/test_int8.py);
- ``efficientnet_b0`` at 32x32 on shapes:200, 15 epochs of Adam (swish and squeeze-excitation: the usual victim);
- ``mobilenet_v2`` at 32x32 on shapes:200, 8 epochs of Adam.

    python benchmarks/int8_rescue.py [--record]
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _record import add_record_option, cnnkit, machine, replace_section  # noqa: E402

TRAIN = {
    "efficientnet_b0": ["--data", "shapes:200", "--input-size", "32", "--epochs", "15", "--optimizer", "adam",
                        "--lr", "0.001"],
    "mobilenet_v2": ["--data", "shapes:200", "--input-size", "32", "--epochs", "8", "--optimizer", "adam",
                     "--lr", "0.003"],
}


def source(model, folder):
    """The model to export: a run folder trained here, or the outlier model's .keras file."""
    if model == "outlier":
        sys.path.insert(0, os.path.join(HERE, "..", "tests"))
        from test_int8 import build_outlier_model

        return build_outlier_model(os.path.join(folder, "outlier.keras"))
    run = os.path.join(folder, model)
    cnnkit("train", model, *TRAIN[model], "--output", run)
    return run


def measure(model, folder):
    os.makedirs(folder)
    src = source(model, folder)
    rows = {}
    for mode, extra in (("plain", []), ("automatic", ["--max-accuracy-drop", "1"])):
        report = json.loads(cnnkit("export", src, "--output", os.path.join(folder, mode), "--tflite", "--onnx",
                                   "--quantize", "int8", "--allow-failed-variants", "--json", *extra))
        keras = report["artifacts"][0]
        for r in report["artifacts"]:
            if r["artifact"] in ("tflite_int8", "onnx_int8"):
                mixed = r.get("mixed") or {}
                rows.setdefault(r["artifact"], {"keras_accuracy": keras["accuracy"], "images": report["images"]})[mode] = {
                    "accuracy": r["accuracy"], "top1_agreement": r["top1_agreement"], "bytes": r["bytes"],
                    "latency_ms": r["latency_ms"], "ok": r["ok"], "float_layers": len(mixed.get("float_layers", [])),
                    "ranked_layers": len(r.get("int8_layers", [])), "worst": [x["layer"] for x in r["int8_layers"][:3]],
                    "met_on_validation": mixed.get("met")}
    return rows


def table(results):
    lines = ["| model | format | Keras | plain int8: accuracy / agreement | size | ms | automatic: accuracy / agreement "
             "| size | ms | Keras layers kept float | gate |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for model, formats in results.items():
        for fmt, r in formats.items():
            p, a = r["plain"], r["automatic"]
            lines.append(f"| {model} | {fmt} | {r['keras_accuracy']:.1%} | {p['accuracy']:.1%} / "
                         f"{p['top1_agreement']:.1%} | {p['bytes'] / 1024:.0f} KiB | {p['latency_ms']:.2f} | "
                         f"{a['accuracy']:.1%} / {a['top1_agreement']:.1%} | {a['bytes'] / 1024:.0f} KiB | "
                         f"{a['latency_ms']:.2f} | {a['float_layers']} of {a['ranked_layers']} | "
                         f"{'plain ' + ('passes' if p['ok'] else 'refused')}, automatic "
                         f"{'passes' if a['ok'] else 'refused'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="outlier,efficientnet_b0,mobilenet_v2")
    add_record_option(parser)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            results[model] = measure(model, os.path.join(folder, model))
            print(json.dumps({model: results[model]}))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "int8_rescue.json"), "w") as f:
        json.dump({"machine": machine(), "results": results}, f, indent=1)
    body = (f"Measured on {machine()}: `python benchmarks/int8_rescue.py --record`. Test split of each data set "
            f"(the automatic mode decided on the validation split); latency: LiteRT / ONNX Runtime, 2 threads, batch "
            f"1, median.\n\n{table(results)}")
    print(body)
    replace_section("int8_rescue", body, args.record)


if __name__ == "__main__":
    main()
