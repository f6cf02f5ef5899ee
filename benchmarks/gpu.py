"""On a GPU: training and inference images/s of ResNet-50 and MobileNet v2 at 224x224, batch 128, TensorFlow's
compiled graph (float32, mixed_float16, XLA) against PyTorch eager and ``torch.compile`` (float32 and AMP).

    python benchmarks/gpu.py --record          # on the GPU machine: one call, under 8 minutes
    python benchmarks/gpu.py --tiny            # a check of the script on a CPU: 32x32, batch 4, 2 steps

Training: the same model (parameter counts equal, benchmarks/torch_models.py), SGD with momentum, one fixed batch,
the variants taking turns (bench.interleave), each step ending in its loss on the host (the step has finished).
TensorFlow trains through Keras' ``train_on_batch`` as ``cnnkit train`` does (mixed_float16 with Keras' loss
scaling); PyTorch in channels-last with ``torch.autocast`` float16 and a GradScaler. Inference: the forward pass
alone at the same batch, TensorFlow as a ``tf.function`` (XLA: ``jit_compile``), PyTorch under
``torch.inference_mode``. Results: benchmarks/results/gpu.json, and the gpu section of RESULTS.md with --record.
"""
import argparse
import contextlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
CLASSES = 1000


def tf_variants(name, x, y, train):
    """{label: step} for TensorFlow: graph float32, graph mixed_float16, XLA mixed_float16."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    import keras_cnns

    tx, ty = tf.constant(x), tf.constant(np.eye(CLASSES, dtype=np.float32)[y])
    steps = {}
    for label, policy, xla in (("tf graph fp32", "float32", False), ("tf graph mixed fp16", "mixed_float16", False),
                               ("tf xla mixed fp16", "mixed_float16", True)):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = keras_cnns.create_model(name, num_classes=CLASSES, input_shape=x.shape[1:])
        finally:
            keras.mixed_precision.set_global_policy("float32")
        if train:
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "categorical_crossentropy", jit_compile=xla)
            steps[label] = (lambda m: lambda: float(m.train_on_batch(tx, ty)))(model)
        else:
            forward = tf.function(lambda v, m=model: m(v, training=False), jit_compile=xla)
            steps[label] = (lambda f: lambda: f(tx).numpy())(forward)
    return steps


def torch_variants(name, x, y, train):
    """{label: step} for PyTorch: eager float32, eager AMP, torch.compile AMP."""
    import torch
    from torch_models import create_imagenet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    half = torch.float16 if device == "cuda" else torch.bfloat16  # a CPU check runs bfloat16's autocast
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y.astype("int64")).to(device)
    steps = {}
    for label, amp, compiled in (("torch eager fp32", False, False), ("torch eager amp", True, False),
                                 ("torch.compile amp", True, True)):
        model = create_imagenet(name, CLASSES).to(device).to(memory_format=torch.channels_last)
        forward = torch.compile(model) if compiled else model

        def autocast(amp=amp):
            return torch.autocast(device, dtype=half) if amp else contextlib.nullcontext()

        if train:
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            scaler = torch.amp.GradScaler(device, enabled=amp and device == "cuda")

            def step(forward=forward, optimizer=optimizer, scaler=scaler, autocast=autocast):
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = torch.nn.functional.cross_entropy(forward(xt), yt)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                return loss.item()
        else:
            model.eval()

            def step(forward=forward, autocast=autocast):
                with torch.inference_mode(), autocast():
                    return forward(xt).float().cpu()
        steps[label] = step
    return steps


def measure(name, size, batch, steps, repeats, train):
    from keras_cnns.training import bench

    x, y = bench.batch_of(batch, (size, size, 3), CLASSES)
    variants = {**tf_variants(name, x, y, train), **torch_variants(name, x, y, train)}
    first = {}
    for label, step in variants.items():  # tracing, XLA and Inductor compilation happen here
        start = time.perf_counter()
        step()
        first[label] = round(time.perf_counter() - start, 2)
    rates = bench.interleave(variants, batch, steps, repeats)
    return {label: {"images_per_s": round(sorted(r)[len(r) // 2], 1), "min": round(min(r), 1),
                    "max": round(max(r), 1), "first_call_s": first[label]} for label, r in rates.items()}


def device_line():
    import tensorflow as tf
    import torch

    gpus = tf.config.list_physical_devices("GPU")
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (a CPU check)"
    return f"{name}; TensorFlow {tf.__version__} sees {len(gpus)} GPU(s), PyTorch {torch.__version__}"


def table(results):
    lines = []
    for name, parts in results.items():
        for part, rows in parts.items():
            lines += ["", f"**{name}, {part}** (images/s, median of the repeats; first call: tracing and compiling)", "",
                      "| variant | images/s | min-max | first call s |", "|---|---:|---|---:|"]
            lines += [f"| {label} | {r['images_per_s']} | {r['min']}-{r['max']} | {r['first_call_s']} |"
                      for label, r in rows.items()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--tiny", action="store_true", help="32x32, batch 4, 2 steps, 1 repeat: checks the script")
    parser.add_argument("--record", action="store_true", help="rewrite the gpu section of RESULTS.md")
    args = parser.parse_args()
    from _record import machine, replace_section

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    size, batch, steps, repeats = (32, 4, 2, 1) if args.tiny else (224, 128, 10, 3)
    results = {}
    for name in args.models.split(","):
        results[name] = {part: measure(name, size, batch, steps, repeats, train=part == "training")
                         for part in ("training", "inference")}
        print(table({name: results[name]}), flush=True)
    body = (f"Measured on {machine()}; {device_line()}: `python benchmarks/gpu.py{' --tiny' if args.tiny else ''}`, "
            f"{size}x{size}, batch {batch}, {steps} steps x {repeats} repeats.\n" + table(results))
    out = os.path.join(HERE, "results", "gpu_tiny.json" if args.tiny else "gpu.json")
    with open(out, "w") as f:
        json.dump({"machine": machine(), "device": device_line(), "results": results}, f, indent=1)
    replace_section("gpu", body, record=args.record and not args.tiny)


if __name__ == "__main__":
    main()
