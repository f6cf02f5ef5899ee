"""The end-of-run batch-norm consistency check (keras_cnns/training/batchnorm.py): its inference passes over
the training split run eagerly or as one traced function (the trace included), on MobileNet v2 at 32x32.

    python benchmarks/bn_check.py                 both ways, alternating in one process, then each in a fresh one

Prints seconds per check; the numbers in benchmarks/RESULTS.md ("Batch-norm consistency check") come from it.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
MODES = ("eager", "traced")


def checker():
    """mode -> seconds of one check over the digits training split (64 batches of 32 at most)."""
    import tensorflow as tf

    import keras_cnns
    from keras_cnns.data import load_data, make_dataset

    model = keras_cnns.create_model("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3))
    data = load_data("digits", (32, 32, 3))
    dataset = make_dataset(data, "train", 32, {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}, training=True)

    def run(mode):
        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True) if mode == "traced" \
            else (lambda x: model(x, training=False))
        start = time.perf_counter()
        for x, _ in dataset.take(64):
            forward(x)
        return time.perf_counter() - start

    return run


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(f"{checker()(sys.argv[2]):.2f}")
        sys.exit(0)
    run = checker()
    alternating = {m: [] for m in MODES}
    for _ in range(2):
        for mode in MODES:
            alternating[mode].append(round(run(mode), 2))
    separate = {m: [] for m in MODES}
    for _ in range(2):
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--one", mode], capture_output=True, text=True, check=True)
            separate[mode].append(float(out.stdout.strip().splitlines()[-1]))
    print("in one process, alternating (s):", alternating)
    print("separate processes (s):", separate)
