"""The parity report: every artifact against the Keras model on the same images.

Per artifact: file size, max |difference| of the probabilities, top-1 agreement, accuracy on held-out
data (when there are labels) and the median latency of one batch-1 call (the artifacts timed alternately, round
after round, where they fit in memory together: the choice of ``--runtime auto`` rests on these, export/choice.py). Tolerances: float artifacts
max |diff| <= 1e-4; float16 <= 1e-2; bfloat16 <= 5e-2 and top-1 agreement >= 98%; quantized ones top-1
agreement >= 98% and accuracy no more than 1 point below the Keras model's.
"""
import os
import time

import numpy as np

FLOAT_TOLERANCE = 1e-4
FLOAT16_TOLERANCE = 1e-2
#: bfloat16 (OpenVINO on CPUs with AVX512-BF16 or AMX) is also held to top-1 agreement (openvino_format.judge)
BFLOAT16_TOLERANCE = 5e-2
MIN_AGREEMENT = 0.98
MAX_ACCURACY_DROP = 0.01
#: below this, the Keras model's probabilities barely depend on the input and agreement proves little
MIN_OUTPUT_SPREAD = 10 * FLOAT_TOLERANCE


def constant_output_warning(spread, images):
    """A warning when no class probability varies by more than MIN_OUTPUT_SPREAD over the images, else None."""
    if spread >= MIN_OUTPUT_SPREAD:
        return None
    return (f"the Keras model's outputs hardly depend on the input (no probability varies by more than {spread:.1e} "
            f"over {images} images), so agreement within {FLOAT_TOLERANCE:g} proves little: export a trained model")


def artifact_files(path):
    """The files of a one-file artifact: the file itself, and an OpenVINO IR's weights (``.bin``) beside its graph."""
    return [path, path[:-len(".xml")] + ".bin"] if path.endswith(".xml") else [path]


def _size(path):
    """Bytes of a file, or of a SavedModel (graph + variables; other artifacts share its directory)."""
    if os.path.isdir(path):
        files = [os.path.join(path, "saved_model.pb")]
        files += [os.path.join(d, f) for d, _, names in os.walk(os.path.join(path, "variables")) for f in names]
        return sum(os.path.getsize(f) for f in files if os.path.exists(f))
    return sum(os.path.getsize(f) for f in artifact_files(path) if os.path.exists(f))


def latency_samples_ms(run, image, repeats=20):
    """Wall times (ms) of ``repeats`` calls on ``image``, after warm-up."""
    for _ in range(3):
        run(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1000)
    return np.asarray(times)


def latency_ms(run, image, repeats=20):
    """Median wall time of one call, after warm-up."""
    return float(np.median(latency_samples_ms(run, image, repeats)))


#: the report keeps every runner open (to time them alternately) while the artifacts' files add up to less than this
ALTERNATE_BELOW_BYTES = 400 << 20
#: rounds of alternation: each runner gets repeats / ROUNDS calls a round
ROUNDS = 4


def alternated_latency_ms(runs, image, repeats=20, rounds=ROUNDS):
    """{key: median wall time of one call} of ``runs`` ({key: callable}), see ``alternated_samples_ms``."""
    return {key: float(np.median(times)) for key, times in alternated_samples_ms(runs, image, repeats, rounds).items()}


def alternated_samples_ms(runs, image, repeats=20, rounds=ROUNDS):
    """{key: wall times (ms) of ``repeats`` calls} of ``runs`` ({key: callable}) timed in turn, round after round,
    so that a change of the machine's load or clock during the measurement moves them all alike (timed one after
    another, the first and the last can see different machines)."""
    for run in runs.values():
        for _ in range(3):
            run(image)
    samples = {key: [] for key in runs}
    per_round = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for key, run in runs.items():
            for _ in range(per_round):
                start = time.perf_counter()
                run(image)
                samples[key].append((time.perf_counter() - start) * 1000)
    return {key: np.asarray(times) for key, times in samples.items()}


#: multiply-accumulates one artifact may spend on the report's images, and on its batch-1 latency repeats:
#: LeNet-5 compares 2000 images, ResNet-50 about 480, VGG-16 about 130 (minutes, not half an hour, on 2 cores)
EVALUATION_MACS = 2e12
LATENCY_MACS = 2e11
#: multiply-accumulates of one evaluation batch: activation memory grows with them, and 64 images of
#: EfficientNet-B7 at 600x600 in one batch took the export past 14 GB (B7: batches of 2, VGG-16: 6)
BATCH_MACS = 1e11


def evaluation_plan(macs_per_image, available):
    """(images to compare, latency repeats, batch size) for a model of this cost: fewer and smaller for big
    models, at least 32 images, 3 repeats and batches of 1."""
    macs = max(macs_per_image, 1)
    images = min(available, max(32, int(EVALUATION_MACS / macs)))
    repeats = min(20, max(3, int(LATENCY_MACS / macs)))
    return images, repeats, min(64, max(1, int(BATCH_MACS / macs)))


def predict_batches(run, images, batch_size=64):
    """``run`` over ``images`` in batches of ``batch_size``: the probabilities of all of them."""
    return np.concatenate([run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def compare(reference, artifacts, images, labels=None, batch_size=64, repeats=20, check=None):
    """Rows of the report. ``reference``/runners: float32 pixels (N, H, W, C) -> probabilities.

    ``artifacts``: [(name, kind, path, open_runner, tolerance, budget)]; each runner is opened and compared in turn;
    while their files add up to less than ALTERNATE_BELOW_BYTES all stay open and their batch-1 latencies are timed
    alternately at the end (``alternated_latency_ms``), else each is timed and released in turn, so that one
    artifact's runtime is in memory at a time. ``tolerance``: the largest |difference| allowed, or
    None for a quantized artifact (held to top-1 agreement and accuracy); ``budget``: the accuracy points a
    quantized artifact may lose when the user set one (--max-accuracy-drop: then with labels it is held to that
    alone), else None. ``repeats``: batch-1 latency calls per row.
    ``check(row, path, outputs)``: more checks of a row, given the artifact's outputs on ``images``.
    """
    def predict(run):
        return predict_batches(run, images, batch_size)

    expected = predict(reference)
    ref_top1 = expected.argmax(axis=1)
    ref_accuracy = float((ref_top1 == labels).mean()) if labels is not None else None
    rows = [{"artifact": "keras", "kind": "keras", "file": None, "bytes": None, "max_abs_diff": 0.0,
             "top1_agreement": 1.0, "accuracy": ref_accuracy, "latency_ms": None,
             "tolerance": None, "ok": True, "output_spread": float(np.ptp(expected, axis=0).max()),
             "images": int(len(images))}]
    # small enough to hold every runner at once: their latencies are timed alternately at the end
    alternate = sum(_size(a[2]) for a in artifacts) < ALTERNATE_BELOW_BYTES
    kept = {0: reference}
    for name, kind, path, open_runner, limit, budget in artifacts:
        run = open_runner()
        got = predict(run)
        top1 = got.argmax(axis=1)
        row = {"artifact": name, "kind": kind, "bytes": _size(path),
               "file": "saved_model.pb" if os.path.isdir(path) else os.path.basename(path),
               "max_abs_diff": float(np.abs(got - expected).max()),
               "top1_agreement": float((top1 == ref_top1).mean()),
               "accuracy": float((top1 == labels).mean()) if labels is not None else None,
               "latency_ms": None if alternate else latency_ms(run, images[:1], repeats), "images": int(len(images))}
        if alternate:
            kept[len(rows)] = run
        del run
        if limit is not None:
            row["tolerance"] = f"max |diff| <= {limit:g}"
            row["ok"] = row["max_abs_diff"] <= limit
        elif budget is not None and labels is not None:
            row["tolerance"] = f"accuracy drop <= {budget:g} pt (--max-accuracy-drop)"
            row["ok"] = (ref_accuracy - row["accuracy"]) * 100 <= budget + 1e-9
        else:
            row["tolerance"] = f"top-1 agreement >= {MIN_AGREEMENT:.0%}, accuracy drop <= {MAX_ACCURACY_DROP * 100:g} pt"
            drop_ok = row["accuracy"] is None or ref_accuracy - row["accuracy"] <= MAX_ACCURACY_DROP + 1e-9
            row["ok"] = row["top1_agreement"] >= MIN_AGREEMENT and drop_ok
        if check:
            check(row, path, got)
        rows.append(row)
    if not alternate:
        rows[0]["latency_ms"] = latency_ms(reference, images[:1], repeats)
        kept = {}
    for index, ms in alternated_latency_ms(kept, images[:1], repeats).items():
        rows[index]["latency_ms"] = ms
    rows[0]["latency_timing"] = "alternated" if alternate else "one after another"
    return rows


def _mediapipe(check):
    """The report's MediaPipe Tasks column: loads from metadata alone? agrees with LiteRT? which names?"""
    if check is None:
        return ""
    if not check["loads"]:
        return "refused: " + check["error"].split(": ", 1)[-1]
    names = ", ".join(check["names"][:5]) + (" ..." if len(check["names"]) > 5 else "")
    full = check.get("full_size")
    full = f"; full-size photos: {full['top1_agreement']:.1%} of {full['photos']} agree with {full['against']}" \
        if full else ""
    return f"{check['top1_agreement']:.1%} of {check['images']} agree with LiteRT{full}; {names}"


def markdown(rows, title):
    lines = [f"# {title}", "", "| artifact | file | size | max abs diff | top-1 agreement | accuracy | latency (batch 1) "
             "| tolerance | MediaPipe Tasks | ok |", "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        size = f"{r['bytes'] / 1024:.1f} KiB" if r["bytes"] is not None else ""
        accuracy = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "n/a"
        lines.append(f"| {r['artifact']} | {r['file'] or ''} | {size} | {r['max_abs_diff']:.2e} | "
                     f"{r['top1_agreement']:.2%} | {accuracy} | {r['latency_ms']:.2f} ms | {r['tolerance'] or ''} | "
                     f"{_mediapipe(r.get('mediapipe'))} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"
