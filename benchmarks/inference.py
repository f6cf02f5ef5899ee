"""Inference benchmark: every artifact of one export side by side (what `cnnkit bench infer` measures),
and what batch-norm folding (export/fold.py) buys the SavedModel graph with oneDNN on and off.

    python benchmarks/inference.py [--model mobilenet_v2] [--input-size 224] [--repeats 20]

Exports the zoo model untrained (latency does not depend on the weights) with every format, int8
calibrated on the bundled shapes data, runs `bench_infer` at batch 1 and 32 with 1 and 2 threads,
draws benchmarks/results/inference.png, then times the Keras graph (`tf.function`) of --folding-models
unfolded and folded, interleaved, in one child process per oneDNN setting (TensorFlow reads
TF_ENABLE_ONEDNN_OPTS once, at import). With --record, rewrites the inference section of benchmarks/RESULTS.md and
writes benchmarks/results/inference.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, machine, replace_section  # noqa: E402

BATCHES = (1, 32)


def folding_rates(models, input_size, repeats):
    """{model: {batch: {"unfolded": ms, "folded": ms}}}: the medians of rounds of interleaved timings."""
    import numpy as np
    import tensorflow as tf

    import keras_cnns
    from export.fold import fold_batch_norms
    from export.parity import latency_ms

    out = {}
    for name in models:
        model = keras_cnns.create_model(name, input_shape=(input_size, input_size, 3))
        variants = {"unfolded": model, "folded": fold_batch_norms(model)}
        fns = {k: tf.function(lambda x, m=m: m(x, training=False)) for k, m in variants.items()}
        images = np.random.RandomState(0).uniform(-1, 1, (max(BATCHES), input_size, input_size, 3)).astype(np.float32)
        out[name] = {}
        for batch in BATCHES:
            x = tf.constant(images[:batch])
            times = {k: [] for k in fns}
            for _ in range(3):
                for k, fn in fns.items():
                    times[k].append(latency_ms(lambda v, fn=fn: fn(v).numpy(), x, repeats))
            out[name][batch] = {k: round(float(np.median(v)), 1) for k, v in times.items()}
    return out


def _folding_in_child(onednn, models, input_size, repeats):
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, __file__, "--folding-child", "--folding-models", ",".join(models),
                          "--input-size", str(input_size), "--repeats", str(repeats)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _infer_table(result):
    lines = ["| runtime | threads | batch 1 ms | batch 32 ms | batch 32 images/s |", "|---|---|---|---|---|"]
    keyed = {(r["runtime"], r["threads"], r["batch"]): r for r in result["rows"]}
    for runtime, threads in dict.fromkeys((r["runtime"], r["threads"]) for r in result["rows"]):
        one, many = keyed.get((runtime, threads, 1)), keyed.get((runtime, threads, 32))
        lines.append(f"| {runtime} | {threads} | {one['latency_ms'] if one else ''} | "
                     f"{many['latency_ms'] if many else ''} | {many['images_per_s'] if many else ''} |")
    return lines


def _folding_table(folding):
    lines = ["| model | batch | oneDNN on: unfolded ms | folded ms | speed-up | oneDNN off: unfolded ms | folded ms |",
             "|---|---|---|---|---|---|---|"]
    on, off = folding["1"], folding["0"]
    for name in on:
        for batch in on[name]:
            a, b = on[name][batch], off[name][batch]
            lines.append(f"| {name} | {batch} | {a['unfolded']} | {a['folded']} | "
                         f"{a['unfolded'] / a['folded']:.1f}x | {b['unfolded']} | {b['folded']} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per runtime and batch size")
    parser.add_argument("--folding-models", default="mobilenet_v2,resnet18,efficientnet_b0")
    parser.add_argument("--folding-child", action="store_true", help=argparse.SUPPRESS)
    add_record_option(parser)
    args = parser.parse_args()
    models = args.folding_models.split(",")

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    if args.folding_child:
        print(json.dumps(folding_rates(models, args.input_size, max(3, args.repeats // 4))))
        return
    from export import export, plan_formats
    from export.bench import bench_infer, plot

    with tempfile.TemporaryDirectory() as scratch:
        path, _ = export(args.model, output=scratch, formats=plan_formats(everything=True), calibration_data="shapes",
                         input_size=args.input_size)
        result = bench_infer(path, BATCHES, (1, 2), args.repeats)
        plot(result, os.path.join(HERE, "results", "inference.png"))
    result["export"] = f"{args.model} at {args.input_size}x{args.input_size}, untrained, `--all`"
    folding = {onednn: _folding_in_child(onednn, models, args.input_size, args.repeats) for onednn in ("1", "0")}

    command = "python benchmarks/inference.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("model", args.model), ("input_size", args.input_size),
                                                      ("repeats", args.repeats)))
    body = [f"`{command}` on {machine()}", "",
            f"**{result['export']}**: {result['macs_per_image']:,} MACs per image, measured matmul peak "
            f"{result['peak_gflops']} GFLOP/s. TensorFlow rows use its own thread pools (\"tf\"), oneDNN "
            f"{'on' if result['tf_onednn'] else 'off'}.", "",
            *_infer_table(result), "", "![inference latency](results/inference.png)", "",
            f"**Batch-norm folding** (`tf.function` of the Keras model, {args.input_size}x{args.input_size}, "
            "unfolded and folded interleaved; one process per oneDNN setting):", "", *_folding_table(folding)]
    replace_section("inference", record=args.record, body="\n".join(body))
    with open(os.path.join(HERE, "results", "inference.json"), "w") as f:
        json.dump({"machine": machine(), "command": command, "infer": result, "folding": folding}, f, indent=1)
    print("\n".join(body))


if __name__ == "__main__":
    main()
