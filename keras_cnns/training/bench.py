"""Training throughput per execution mode (eager, graph = ``tf.function``, XLA), measured side by side.

The modes run interleaved in one process (eager, graph, xla, eager, graph, xla, ...), each on its own
copy of the model with the same weights and the same batch, through the same Keras ``train_on_batch``
path ``cnnkit train --mode`` uses. Reported per mode: images/s (median and spread over the repeats),
the time of the first step (tracing / XLA compilation), the number of traces, and the achieved
GFLOP/s next to this machine's measured float32 matmul peak.
"""
import statistics
import time

import numpy as np

MODES = ("eager", "graph", "xla")


def matmul_peak_gflops(n=1024, repeats=10):
    """Best float32 GFLOP/s of an n x n matmul in a compiled graph: the machine's practical peak."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=(1, 2))
    b = tf.random.stateless_normal([n, n], seed=(3, 4))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def keras_steppers(model_name, modes=MODES, batch_size=32, input_size=None, num_classes=10, seed=0):
    """One model copy per mode (same weights, same batch) compiled as ``cnnkit train --mode`` compiles it.

    Returns (info, input shape, {mode: step function}, {mode: first-step seconds}, {mode: model}).
    """
    import tensorflow as tf
    import tf_keras as keras

    import keras_cnns
    from keras_cnns.errors import CnnkitError

    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise CnnkitError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
    info = keras_cnns.get_model_info(model_name)
    h, w, c = info.input_shape
    shape = (input_size or h, input_size or w, c)
    x, y = batch_of(batch_size, shape, num_classes, seed)
    x, y = tf.constant(x), tf.constant(np.eye(num_classes, dtype=np.float32)[y])
    steppers, first_step, models, weights = {}, {}, {}, None
    for mode in modes:
        tf.random.set_seed(seed)
        model = keras_cnns.inference_model(keras_cnns.create_model(info.name, num_classes=num_classes,
                                                                   input_shape=shape))
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                      run_eagerly=mode == "eager", jit_compile=mode == "xla")
        model.optimizer.build(model.trainable_variables)  # as `cnnkit train` does: the step traces once
        step = (lambda m: lambda: m.train_on_batch(x, y))(model)  # returns the loss: the step has finished
        start = time.perf_counter()
        step()
        first_step[mode] = time.perf_counter() - start
        steppers[mode], models[mode] = step, model
    return info, shape, steppers, first_step, models


def batch_of(batch_size, shape, num_classes, seed=0):
    """The fixed training batch every framework and mode gets: (NHWC float32 images, integer labels)."""
    rng = np.random.RandomState(seed)
    return (rng.uniform(-1, 1, (batch_size,) + tuple(shape)).astype(np.float32),
            rng.randint(0, num_classes, batch_size))


def interleave(steppers, batch_size, steps, repeats):
    """{name: [images/s per repeat]}, the steppers taking turns (A B C A B C ...) so that drift in the
    machine's speed touches each alike."""
    rates = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    return rates


def summarize(rates, first_step, macs, peak, traces=None):
    results = {}
    for name, values in rates.items():
        median = statistics.median(values)
        gflops = median * macs * 2 * 3 / 1e9  # forward + backward ~ 3 forward passes
        results[name] = {"images_per_s": round(median, 1), "min": round(min(values), 1),
                         "max": round(max(values), 1), "first_step_s": round(first_step[name], 3),
                         "traces": (traces or {}).get(name, 0), "gflops": float(f"{gflops:.4g}"),
                         "fraction_of_peak": float(f"{gflops / peak:.4g}")}
    return results


def bench_train(model_name, modes=MODES, batch_size=32, input_size=None, steps=10, repeats=3, num_classes=10,
                seed=0):
    """{"model", "input_shape", "batch_size", "macs_per_image", "peak_gflops", "modes": {mode: {...}}}."""
    from keras_cnns.analysis import profile_model

    info, shape, steppers, first_step, models = keras_steppers(model_name, modes, batch_size, input_size,
                                                               num_classes, seed)
    rates = interleave(steppers, batch_size, steps, repeats)
    macs = profile_model(models[modes[0]]).macs
    peak = matmul_peak_gflops()
    traces = {}
    for mode, model in models.items():
        fn = model.train_function
        traces[mode] = fn.experimental_get_tracing_count() if hasattr(fn, "experimental_get_tracing_count") else 0
    return {"model": info.name, "input_shape": list(shape), "batch_size": batch_size, "steps": steps,
            "repeats": repeats, "macs_per_image": macs, "peak_gflops": round(peak, 1),
            "modes": summarize(rates, first_step, macs, peak, traces)}


#: (name, make_dataset options): from a plain sequential pipeline to cnnkit's default and beyond
PIPELINES = (
    ("sequential", {"parallel": False, "prefetch": False}),
    ("parallel map", {"parallel": True, "prefetch": False}),
    ("parallel map + prefetch (default)", {"parallel": True, "prefetch": True}),
    ("+ cache", {"parallel": True, "prefetch": True, "cache": True}),
)


def bench_data(spec, model_name="lenet5", batch_size=32, input_size=None, batches=50, augment="flip,crop",
               steps=10, repeats=3):
    """Input-pipeline images/s per variant (from the second pass on, so a cache is warm), next to the model's
    graph-mode training rate on the same batch size: training is input-bound when the pipeline is slower.
    Each rate is the median of ``repeats`` measurements; ``spread`` holds their min and max."""
    import keras_cnns
    from keras_cnns.data import load_data, make_dataset, parse_augment

    info = keras_cnns.get_model_info(model_name)
    h, w, c = info.input_shape
    shape = (input_size or h, input_size or w, c)
    data = load_data(spec, shape)
    preprocessing = {"scale": 1 / 255, "mean": [0.0] * c, "std": [1.0] * c}
    pipelines, spread = {}, {}
    for name, options in PIPELINES:
        ds = make_dataset(data, "train", batch_size, preprocessing, training=True, augment=parse_augment(augment),
                          **options).repeat()
        iterator = iter(ds)
        for _ in range(len(data.train) // batch_size + 1):  # one pass: fills a cache, warms the threads
            next(iterator)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            count = 0
            for _ in range(batches):
                x, _ = next(iterator)
                count += int(x.shape[0])
            rates.append(count / (time.perf_counter() - start))
        pipelines[name] = round(float(np.median(rates)), 1)
        spread[name] = [round(min(rates), 1), round(max(rates), 1)]
        del iterator
    trained = bench_train(info.name, ["graph"], batch_size, input_size, steps, repeats=repeats,
                          num_classes=data.num_classes)["modes"]["graph"]
    default = pipelines["parallel map + prefetch (default)"]
    return {"data": spec, "model": info.name, "batch_size": batch_size, "images": len(data.train),
            "in_memory": data.in_memory, "pipelines": pipelines, "spread": spread,
            "train_images_per_s": trained["images_per_s"], "train_spread": [trained["min"], trained["max"]],
            "input_bound": default < trained["images_per_s"]}
