"""The notes' Deep Compression figure, SqueezeNet in about 0.5 MB, measured: SqueezeNet 1.0 (with batch norm, folded
into its kernels on export) trained on generated shapes at 64x64, exported with ``--prune 0.75 --cluster 16
--quantize int8``: the pruned model is clustered with its zeros kept, made full-integer, and gzipped for download.

Sizes are whole ``.tflite`` files (graph, metadata and labels included) and their ``.gz`` download form (DEFLATE:
LZ77 and Huffman coding, as HTTP and app bundles compress). The notes' figure is for the 1000-class model (1,248,424
parameters: 3.2 bits a parameter in 0.5 MB); this one has 4 classes (737,476 parameters), so it is compared in bits
a parameter.

    python benchmarks/deep_compression.py [--record]
"""
import argparse
import gzip
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _record import add_record_option, cnnkit, machine, replace_section  # noqa: E402

NOTES_BYTES, NOTES_PARAMETERS = 0.5e6, 1_248_424


def main():
    import keras_cnns

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-epochs", default="12")
    add_record_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = os.path.join(folder, "run")
        cnnkit("train", "squeezenet1_0", "-o", "batch_norm=true", "--data", "shapes:200", "--input-size", "64",
               "--epochs", "20", "--lr", "0.001", "--output", run)
        report = json.loads(cnnkit("export", run, "--output", os.path.join(folder, "exports"), "--prune", "0.75",
                                   "--cluster", "16", "--quantize", "int8", "--finetune-epochs", args.finetune_epochs,
                                   "--json"))
        for r in report["artifacts"]:
            if r["artifact"] in ("tflite_float32", "tflite_int8"):
                with open(os.path.join(report["path"], "tflite", r["file"]), "rb") as f:
                    r["gzip_bytes"] = len(gzip.compress(f.read(), mtime=0))
    parameters = keras_cnns.create_model("squeezenet1_0", num_classes=4, input_shape=(64, 64, 3)).count_params()
    notes_bits = NOTES_BYTES * 8 / NOTES_PARAMETERS
    lines = ["| artifact | accuracy (Keras " f"{report['artifacts'][0]['accuracy']:.1%}) | file | download (.gz) | "
             "bits a parameter (download) | zeros | values a kernel |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["artifacts"]:
        if r["artifact"].startswith("tflite"):
            lines.append(f"| {r['artifact']} | {r['accuracy']:.1%} | {r['bytes'] / 1e3:,.0f} kB | "
                         f"{r['gzip_bytes'] / 1e3:,.0f} kB | {r['gzip_bytes'] * 8 / parameters:.2f} | "
                         f"{r.get('sparsity', 0):.0%} | {r.get('max_unique_values_per_kernel', '')} |")
    best = next(r for r in report["artifacts"] if r["artifact"] == "tflite_clustered")
    body = (f"Measured on {machine()}: `python benchmarks/deep_compression.py --record` (SqueezeNet 1.0, 4 classes, "
            f"{parameters:,} parameters, 64x64, test split of shapes:200, {report['images']} images).\n\n"
            + "\n".join(lines) + f"\n\nThe notes: 0.5 MB for {NOTES_PARAMETERS:,} parameters = {notes_bits:.2f} bits a "
            f"parameter. Pruned (75%), clustered (16 values a kernel before batch-norm folding) and int8: "
            f"{best['gzip_bytes'] * 8 / parameters:.2f} bits a parameter downloaded, "
            f"{best['gzip_bytes'] / 1e3:,.0f} kB here; at that rate the 1000-class model's parameters would take "
            f"{best['gzip_bytes'] * NOTES_PARAMETERS / parameters / 1e6:.2f} MB. On the phone the file is stored "
            f"unpacked ({best['bytes'] / 1e3:,.0f} kB: one byte a weight) so that LiteRT can memory-map it.")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "deep_compression.json"), "w") as f:
        rows = [{k: v for k, v in r.items() if k != "int8_layers"} for r in report["artifacts"]]  # in the export
        json.dump({"machine": machine(), "parameters": parameters, "artifacts": rows}, f, indent=1)
    print(body)
    replace_section("deep_compression", body, args.record)


if __name__ == "__main__":
    main()
