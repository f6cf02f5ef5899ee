"""float32 against mixed bfloat16 training, the Keras graph `cnnkit train` runs: what ``--precision auto`` rests on.

    python benchmarks/precision.py [--models lenet5,resnet20_cifar,resnet18,mobilenet_v2] [--batch-size 64]

Measured both ways, because they can disagree on a shared machine: in one process, the two precisions'
steps interleaved (A B A B ...), and in separate processes, one per precision, alternated (A B A B).
Each number is the median images/s of ``--steps`` timed ``train_on_batch`` calls after warm-up. With
--record, rewrites the precision section of benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, machine, replace_section  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")


def stepper(name, policy, batch_size, input_size):
    """A `cnnkit train`-compiled graph step of ``name`` built under ``policy``."""
    import tf_keras as keras

    from keras_cnns.training import bench

    keras.mixed_precision.set_global_policy(policy)
    try:
        _, _, steppers, _, _ = bench.keras_steppers(name, ("graph",), batch_size, input_size)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return steppers["graph"]


def rates(steps_by_policy, batch_size, steps):
    """{policy: images/s median}: the policies' steps interleaved one by one."""
    times = {p: [] for p in steps_by_policy}
    for _ in range(steps):
        for policy, step in steps_by_policy.items():
            start = time.perf_counter()
            step()
            times[policy].append(time.perf_counter() - start)
    return {p: round(batch_size / statistics.median(t), 1) for p, t in times.items()}


def child(name, policy, batch_size, input_size, steps):
    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    step = stepper(name, policy, batch_size, input_size)
    step()
    print(json.dumps(rates({policy: step}, batch_size, steps)[policy]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20_cifar,resnet18,mobilenet_v2")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="separate-process runs per precision, alternated")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "POLICY"), help=argparse.SUPPRESS)
    add_record_option(parser)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.batch_size, args.input_size, args.steps)

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    rows = []
    for name in args.models.split(","):
        steps = {p: stepper(name, p, args.batch_size, args.input_size) for p in POLICIES}
        for step in steps.values():
            step()
        together = rates(steps, args.batch_size, args.steps)
        apart = {p: [] for p in POLICIES}
        for _ in range(args.rounds):
            for policy in POLICIES:
                out = subprocess.run([sys.executable, __file__, "--child", name, policy, "--batch-size",
                                      str(args.batch_size), "--input-size", str(args.input_size), "--steps",
                                      str(args.steps)], capture_output=True, text=True, check=True)
                apart[policy].append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append((name, together, apart))
        print(name, together, apart, flush=True)
    lines = ["| model | float32 images/s | mixed bfloat16 images/s | bf16 / f32 |",
             "|---|---|---|---|"]
    for name, together, apart in rows:
        f32, bf16 = statistics.median(apart["float32"]), statistics.median(apart["mixed_bfloat16"])
        lines.append(f"| {name}, one process | {together['float32']} | {together['mixed_bfloat16']} | "
                     f"{together['mixed_bfloat16'] / together['float32']:.2f}x |")
        lines.append(f"| {name}, separate processes | {', '.join(map(str, apart['float32']))} | "
                     f"{', '.join(map(str, apart['mixed_bfloat16']))} | {bf16 / f32:.2f}x |")
    command = ("python benchmarks/precision.py " + " ".join(sys.argv[1:])).strip()
    body = (f"`{command}` on {machine()}; batch {args.batch_size} at {args.input_size}x{args.input_size}, SGD "
            "momentum, the Keras graph\n\n" + "\n".join(lines))
    replace_section("precision", body, record=args.record)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
