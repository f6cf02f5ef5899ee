"""Inference latency and throughput of every artifact of an export, on the same inputs, side by side.

Runtimes: the Keras model (eager call), the SavedModel's ``probabilities`` signature (the static
graph), the Keras model under XLA (``jit_compile``), each TFLite file in the LiteRT interpreter
(XNNPACK) and each ONNX file in ONNX Runtime, at each batch size and (for LiteRT and ONNX Runtime)
each thread count. TensorFlow's own thread pools and its oneDNN setting are fixed when it starts, so
its rows say "tf" and the result says whether oneDNN was on (TF_ENABLE_ONEDNN_OPTS).
Next to them: the arithmetic lower bound, MACs x 2 / the measured matmul peak.

The runtimes are timed alternately, round after round (export.parity.alternated_samples_ms), and the matmul peak
is measured before and after them (the higher taken), so that the machine's load, which can move from one minute
to the next on a shared machine, moves every row and the bound alike.
"""
import os

import numpy as np

from export.exporter import keras_reference
from export.formats import runner_for
from export.parity import alternated_samples_ms
from export.savedmodel import load_probabilities
from keras_cnns.utils import onednn_enabled


def _sig(value):
    return float(f"{value:.4g}")


def _runtimes(export_dir, meta, threads):
    """[(runtime name, threads label, callable float32 pixels -> probabilities)]."""
    import tensorflow as tf

    from keras_cnns.files import load_model_file

    model = load_model_file(os.path.join(export_dir, "keras", "model.keras"))
    reference = keras_reference(model, meta["preprocessing"])
    pre = meta["preprocessing"]
    mean, std = tf.constant(pre["mean"], tf.float32), tf.constant(pre["std"], tf.float32)
    xla = tf.function(lambda x: model((x * pre["scale"] - mean) / std, training=False), jit_compile=True)
    runtimes = [("keras (eager)", "tf", reference),
                ("savedmodel (graph)", "tf", load_probabilities(export_dir)),
                ("keras + xla", "tf", lambda images: xla(tf.constant(images)).numpy())]
    for artifact in meta["artifacts"]:  # the SavedModel is measured above, with the Keras model
        path = os.path.join(export_dir, artifact["path"])
        if artifact["kind"] != "savedmodel":
            runtimes += [(artifact["artifact"], str(t), runner_for(artifact["kind"], path, threads=t)) for t in threads]
    return runtimes


def bench_infer(export_dir, batch_sizes=(1, 32), threads=(1, 2), repeats=30, seed=0):
    """{"export", "macs_per_image", "peak_gflops", "rows": [{runtime, threads, batch, latency_ms (median), p10_ms,
    p90_ms, images_per_s}]}; the lower-bound rows have no spread."""
    from keras_cnns.analysis import profile_model
    from keras_cnns.errors import CnnkitError
    from keras_cnns.files import load_model_file, read_json
    from keras_cnns.training.bench import matmul_peak_gflops

    meta_path = os.path.join(export_dir, "export.json")
    if not os.path.exists(meta_path):
        raise CnnkitError(f"{export_dir} is not a cnnkit export version folder (no export.json); "
                          "give e.g. exports/lenet5/1")
    meta = read_json(meta_path)
    shape = tuple(meta["input_shape"])
    images = np.random.RandomState(seed).uniform(0, 255, (max(batch_sizes),) + shape).astype(np.float32)
    runtimes = _runtimes(export_dir, meta, threads)
    peaks = [matmul_peak_gflops()]
    rows = []
    for batch in batch_sizes:
        timed = alternated_samples_ms({i: run for i, (_, _, run) in enumerate(runtimes)}, images[:batch], repeats)
        for i, (name, thread_label, _) in enumerate(runtimes):
            times = timed[i]
            latency = float(np.median(times))
            rows.append({"runtime": name, "threads": thread_label, "batch": batch, "latency_ms": _sig(latency),
                         "p10_ms": _sig(float(np.percentile(times, 10))),
                         "p90_ms": _sig(float(np.percentile(times, 90))),
                         "images_per_s": _sig(batch / latency * 1000)})
    macs = profile_model(load_model_file(os.path.join(export_dir, "keras", "model.keras"))).macs
    peaks.append(matmul_peak_gflops())
    peak = max(peaks)
    for batch in batch_sizes:
        bound = macs * 2 * batch / (peak * 1e9) * 1000
        rows.append({"runtime": "lower bound (MACs / peak)", "threads": "-", "batch": batch,
                     "latency_ms": _sig(bound), "p10_ms": None, "p90_ms": None,
                     "images_per_s": _sig(batch / bound * 1000)})
    return {"export": export_dir, "macs_per_image": macs, "peak_gflops": round(peak, 1),
            "peak_gflops_before_after": [round(p, 1) for p in peaks], "tf_onednn": onednn_enabled(), "rows": rows}


def plot(result, path):
    """Bar chart of the best latency per runtime at each batch size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    batches = sorted({r["batch"] for r in result["rows"]})
    names = list(dict.fromkeys(r["runtime"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 0.45 * len(names) + 1.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        best = [min(r["latency_ms"] for r in result["rows"] if r["runtime"] == n and r["batch"] == batch)
                for n in names]
        bars = ax.barh(names, best, color=["tab:grey" if n.startswith("lower") else "tab:blue" for n in names])
        ax.bar_label(bars, labels=[f"{b:.4g}" for b in best], padding=2, fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(right=max(best) * 2)
        ax.set_xlabel("ms per batch (best thread count)")
        ax.set_title(f"batch {batch}")
        ax.invert_yaxis()
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(result["export"]))) + " inference latency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
