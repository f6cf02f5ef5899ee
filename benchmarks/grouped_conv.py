"""Grouped convolutions in training: tf_keras' XLA-compiled path against TensorFlow's own kernel
(keras_cnns/layers/grouped.py), graph-mode training steps of the models that have them.

    python benchmarks/grouped_conv.py [--models resnext50_32x4d:64,alexnet:227] [--batch-size 16]

Both paths are timed in one process, alternating (xla, native, xla, native, ...), and each again in a fresh
process of its own. With --record, rewrites the grouped_conv section of benchmarks/RESULTS.md and writes
benchmarks/results/grouped_conv.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, record_rows, replace_section  # noqa: E402

PATHS = ("xla", "native")


def stepper(name, input_size, batch_size, path):
    """A compiled training step (SGD, momentum 0.9) of a fresh ``name`` whose grouped convolutions take ``path``."""
    import tensorflow as tf
    import tf_keras as keras

    from keras_cnns import create_model

    model = create_model(name, num_classes=10, input_shape=(input_size, input_size, 3))
    for layer in model.layers:
        if path == "xla":  # back to tf_keras' own path (create_model moved them where it can)
            vars(layer).pop("_jit_compiled_convolution_op", None)
        elif isinstance(layer, keras.layers.Conv2D) and layer.groups > 1:
            assert "_jit_compiled_convolution_op" in vars(layer), "this CPU keeps the XLA path (no oneDNN)"
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss = keras.losses.SparseCategoricalCrossentropy()
    x = tf.random.stateless_uniform((batch_size, input_size, input_size, 3), (0, 1), maxval=1.0)
    y = tf.random.stateless_uniform((batch_size,), (0, 2), maxval=10, dtype=tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            out = out[0] if isinstance(out, list) else out
            value = loss(y, out)
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_weights), model.trainable_weights))
        return value

    return step


def timed(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    return (time.perf_counter() - start) / steps


def alternating(name, input_size, batch_size, steps, repeats):
    steppers = {}
    for path in PATHS:
        steppers[path] = stepper(name, input_size, batch_size, path)
        steppers[path]().numpy()  # trace and warm up
    times = {path: [] for path in PATHS}
    for _ in range(repeats):
        for path in PATHS:
            times[path].append(timed(steppers[path], steps))
    return {path: sorted(t)[len(t) // 2] for path, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnext50_32x4d:64,alexnet:227", help="MODEL:INPUT_SIZE, ...")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # MODEL:PATH, in a process of its own
    add_record_option(parser)
    args = parser.parse_args()
    if args.one:
        name, size, path = args.one.split(":")
        step = stepper(name, int(size), args.batch_size, path)
        step().numpy()
        print(json.dumps(sorted(timed(step, args.steps) for _ in range(args.repeats))[args.repeats // 2]))
        return
    rows = []
    for name, size in (m.split(":") for m in filter(None, args.models.split(","))):
        size = int(size)
        together = alternating(name, size, args.batch_size, args.steps, args.repeats)
        apart = {}
        for path in PATHS:
            out = subprocess.run([sys.executable, __file__, "--one", f"{name}:{size}:{path}",
                                  "--batch-size", str(args.batch_size), "--steps",
                                  str(args.steps), "--repeats", str(args.repeats)], capture_output=True, text=True,
                                 check=True)
            apart[path] = json.loads(out.stdout.strip().splitlines()[-1])
        row = {"model": name, "input_size": size, "batch_size": args.batch_size,
               "alternating_s": together, "separate_s": apart}
        rows.append(row)
        print(json.dumps(row), flush=True)
    command, described = record_rows("grouped_conv", rows)
    lines = ["| model | input, batch | XLA path (tf_keras) | TensorFlow's kernel | speed-up | measured |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        for how, key in (("alternating in one process", "alternating_s"), ("separate processes", "separate_s")):
            xla, native = r[key]["xla"], r[key]["native"]
            lines.append(f"| {r['model']} | {r['input_size']}x{r['input_size']}, {r['batch_size']} | "
                         f"{xla * 1000:.0f} ms | {native * 1000:.0f} ms | {xla / native:.1f}x | {how} |")
    replace_section("grouped_conv", record=args.record,
                    body=f"`{command}` on {described}; one training step, median of {args.repeats} runs of "
                         f"{args.steps}\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
