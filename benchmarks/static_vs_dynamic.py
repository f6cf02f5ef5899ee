"""Static vs dynamic graphs, measured: training images/s of the same architecture in TensorFlow (eager,
tf.function graph, XLA) and PyTorch (eager, torch.compile), same batch, optimiser (SGD, momentum 0.9,
lr 0.01) and input, all interleaved in one process; in float32 and/or bfloat16 (TensorFlow's mixed_bfloat16
policy, as `cnnkit train --precision bfloat16` trains; PyTorch's bfloat16 autocast).

    pip install -e ".[bench]"      # PyTorch (CPU)
    python benchmarks/static_vs_dynamic.py [--models resnet18,mobilenet_v2] [--batch-size 64] [--input-size 32]
                                           [--precision float32,bf16]
    python benchmarks/static_vs_dynamic.py --separate "tf graph,torch eager" [--rounds 3] ...

With --record, rewrites the static-vs-dynamic section of benchmarks/RESULTS.md and writes
benchmarks/results/static_vs_dynamic.json. ``--separate`` measures each named variant in a process of its own
instead, the processes alternated (A B A B ...), one framework per interpreter: in one process, one framework's
steps can run slower right after the other's (issue 24). Its rows go to the static_vs_dynamic_separate section.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, machine, replace_section  # noqa: E402

PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16"}  # --precision: the Keras policy of each


def torch_steppers(name, x, y, compiled_too=True, seed=0, bf16=False):
    """{"torch eager": step, "torch.compile": step}, first-step seconds, trainable params; ``bf16``: the
    forward pass and loss under bfloat16 autocast (labels end in " bf16")."""
    import contextlib

    import torch

    from benchmarks import torch_models

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y.astype("int64"))
    steppers, first_step = {}, {}
    torch.manual_seed(seed)
    reference = torch_models.create(name)
    variants = [("torch eager", False)] + ([("torch.compile", True)] if compiled_too else [])
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    for label, compiled in variants:
        label += " bf16" if bf16 else ""
        model = torch_models.create(name)
        model.load_state_dict(reference.state_dict())
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        forward = torch.compile(model) if compiled else model

        def step(forward=forward, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(forward(xt), yt)
            loss.backward()
            optimizer.step()
            return loss.item()

        start = time.perf_counter()
        step()
        first_step[label] = time.perf_counter() - start
        steppers[label] = step
    return steppers, first_step, torch_models.trainable_params(reference)


def compare(name, batch_size, input_size, steps, repeats, compiled_too=True, precisions=("float32",)):
    import tf_keras as keras

    from keras_cnns.analysis import count_trainable
    from keras_cnns.training import bench

    steppers, first_step = {}, {}
    for precision in precisions:
        suffix = "" if precision == "float32" else f" {precision}"
        keras.mixed_precision.set_global_policy(PRECISIONS[precision])
        try:
            info, shape, steps_of, first_of, models = bench.keras_steppers(name, bench.MODES, batch_size, input_size)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        steppers.update({f"tf {k}{suffix}": v for k, v in steps_of.items()})
        first_step.update({f"tf {k}{suffix}": v for k, v in first_of.items()})
        x, y = bench.batch_of(batch_size, shape, 10)
        torch_steps, torch_first, torch_params = torch_steppers(name, x, y, compiled_too, bf16=precision == "bf16")
        steppers.update(torch_steps)
        first_step.update(torch_first)
    keras_params = count_trainable(models["graph"])
    if torch_params != keras_params:
        raise SystemExit(f"{name}: PyTorch has {torch_params:,} trainable parameters, Keras {keras_params:,}")
    rates = bench.interleave(steppers, batch_size, steps, repeats)
    from keras_cnns.analysis import profile_model

    macs = profile_model(models["graph"]).macs
    return {"model": info.name, "input_shape": list(shape), "batch_size": batch_size, "params": keras_params,
            "macs_per_image": macs,
            "results": bench.summarize(rates, first_step, macs, bench.matmul_peak_gflops())}


def measure_one(name, variant, batch_size, input_size, steps, repeats):
    """images/s of one variant ("tf graph", "torch eager", "torch.compile bf16", ...) alone in this process:
    [rate per repeat]."""
    from keras_cnns.training import bench

    framework, _, rest = variant.partition(" ")
    mode, _, precision = rest.partition(" ")
    precision = precision or "float32"
    if framework == "tf":
        import tf_keras as keras

        keras.mixed_precision.set_global_policy(PRECISIONS[precision])
        step = bench.keras_steppers(name, [mode], batch_size, input_size)[2][mode]
    else:  # no TensorFlow model in this process
        import keras_cnns

        h, w, c = keras_cnns.get_model_info(name).input_shape
        x, y = bench.batch_of(batch_size, (input_size or h, input_size or w, c), 10)
        torch_steps, _, _ = torch_steppers(name, x, y, compiled_too=variant.startswith("torch.compile"),
                                           bf16=precision == "bf16")
        step = torch_steps[variant]
    return bench.interleave({variant: step}, batch_size, steps, repeats)[variant]


def separate(args):
    """Each variant in a child process of its own, alternated for ``--rounds`` rounds: {model: {variant: [rates]}}."""
    import subprocess

    found = {}
    variants = [v.strip() for v in args.separate.split(",")]
    for name in args.models.split(","):
        found[name] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                out = subprocess.run([sys.executable, __file__, "--child", variant, "--models", name,
                                      "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
                                      "--steps", str(args.steps), "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                rates = json.loads(out.stdout.strip().splitlines()[-1])
                found[name][variant].append(statistics.median(rates))
                print(name, variant, round(found[name][variant][-1], 1), flush=True)
    return found


def separate_table(found):
    """Markdown rows of ``separate``'s rates, each torch variant set against TensorFlow's graph at its precision."""
    lines = ["| model | variant | images/s per process | median | TF graph / this |", "|---|---|---|---|---|"]
    for name, rates in found.items():
        medians = {v: statistics.median(r) for v, r in rates.items()}
        for variant, values in rates.items():
            bf16 = variant.endswith(" bf16")
            graph = medians.get("tf graph bf16" if bf16 else "tf graph")
            ratio = f"{graph / medians[variant]:.2f}x" if graph and not variant.startswith("tf graph") else ""
            lines.append(f"| {name} | {variant} | {', '.join(f'{x:.1f}' for x in values)} | {medians[variant]:.1f} "
                         f"| {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--precision", default="float32", help="comma list of float32, bf16")
    parser.add_argument("--separate", metavar="VARIANTS",
                        help='comma list of variants, each measured in processes of its own, alternated: "tf graph", '
                             '"tf eager", "tf xla", "torch eager", "torch.compile", each optionally followed by " bf16"')
    parser.add_argument("--rounds", type=int, default=3, help="with --separate: processes per variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_record_option(parser)
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("tf "):
            from cnnkit._quiet import import_tensorflow

            import_tensorflow()
        print(json.dumps(measure_one(args.models, args.child, args.batch_size, args.input_size, args.steps,
                                     args.repeats)))
        return
    if args.separate:
        found = separate(args)
        command = ("python benchmarks/static_vs_dynamic.py " + " ".join(sys.argv[1:])).strip()
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "static_vs_dynamic_separate.json"), "w") as f:
            json.dump({"machine": machine(), "command": command, "rates": found}, f, indent=1)
        body = separate_table(found)
        replace_section("static_vs_dynamic_separate", record=args.record,
                        body=f"`{command}` on {machine()}; batch {args.batch_size} at {args.input_size}x"
                             f"{args.input_size}, images/s of each process (the median of its repeats)\n\n{body}")
        print(body)
        return
    precisions = args.precision.split(",")
    if set(precisions) - set(PRECISIONS):
        parser.error(f"--precision: choose from {', '.join(PRECISIONS)}")

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    import torch

    records = [compare(m, args.batch_size, args.input_size, args.steps, args.repeats, not args.no_compile, precisions)
               for m in args.models.split(",")]
    command = ("python benchmarks/static_vs_dynamic.py " + " ".join(sys.argv[1:])).strip()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "static_vs_dynamic.json"), "w") as f:
        json.dump({"machine": machine(), "command": command, "torch": torch.__version__,
                   "torch_threads": torch.get_num_threads(), "records": records}, f, indent=1)
    lines = []
    for r in records:
        lines += [f"**{r['model']}** {tuple(r['input_shape'])}, batch {r['batch_size']}, {r['params']:,} trainable "
                  "parameters in both frameworks", "",
                  "| framework / mode | images/s (median) | min–max | first step s | GFLOP/s | of peak |",
                  "|---|---|---|---|---|---|"]
        for mode, v in r["results"].items():
            lines.append(f"| {mode} | {v['images_per_s']} | {v['min']}–{v['max']} | {v['first_step_s']} "
                         f"| {v['gflops']} | {v['fraction_of_peak']:.1%} |")
        lines.append("")
    replace_section("static_vs_dynamic", record=args.record, body=f"`{command}` on {machine()}, PyTorch {torch.__version__} "
                    f"({torch.get_num_threads()} threads)\n\n" + "\n".join(lines).rstrip())
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
