"""One training step op by op, TensorFlow's graph against PyTorch eager: where the static graph loses.

    python benchmarks/op_profile.py [--model mobilenet_v2] [--batch-size 64] [--input-size 32] [--steps 5]

The TensorFlow step is the Keras graph (`train_on_batch`, SGD momentum) traced by TensorFlow's profiler,
with one inter-op thread so that each op's time is wall time (as PyTorch's profiler reports it); the
PyTorch step is its twin (benchmarks/torch_models.py) under ``torch.profiler``. Per op type: milliseconds
per step and calls per step. Also each framework's CPU time / wall time over the timed steps: how many
of the cores its kernels keep busy. Each framework runs in its own process. With --record, rewrites the
op-profile section of benchmarks/RESULTS.md.
"""
import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, machine, replace_section  # noqa: E402


def _cpu_per_wall(step, steps):
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - start
    return round((time.process_time() - cpu) / wall, 2), round(1000 * wall / steps, 1)


def tensorflow(model_name, batch_size, input_size, steps):
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    from cnnkit._quiet import import_tensorflow

    tf = import_tensorflow()
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from keras_cnns.training import bench

    _, _, steppers, _, _ = bench.keras_steppers(model_name, ("graph",), batch_size, input_size)
    step = steppers["graph"]
    for _ in range(2):
        step()
    busy, ms = _cpu_per_wall(step, steps)
    folder = tempfile.mkdtemp(prefix="cnnkit-profile-")
    tf.profiler.experimental.start(folder)
    for _ in range(steps):
        step()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(sorted(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True))[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals, calls = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or "::" in name:  # executor bookkeeping (ExecutorState::Process), not an op
                    continue
                kind = name.rsplit(":", 1)[1].replace("_MklNative", "").replace("_Mkl", "")
                totals[kind] += event.duration_ps / 1e9
                calls[kind] += 1
    return {"ms_per_step": ms, "cpu_per_wall": busy,
            "ops": {k: [round(v / steps, 1), calls[k] // steps] for k, v in totals.most_common(12)}}


def pytorch(model_name, batch_size, input_size, steps):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks import torch_models
    from keras_cnns.training import bench

    model = torch_models.create(model_name)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = bench.batch_of(batch_size, (input_size, input_size, 3), 10)
    x, y = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype("int64"))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(2):
        step()
    busy, ms = _cpu_per_wall(step, steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    return {"ms_per_step": ms, "cpu_per_wall": busy, "torch_threads": torch.get_num_threads(),
            "ops": {e.key: [round(e.self_cpu_time_total / 1000 / steps, 1), e.count // steps] for e in rows}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--framework", choices=("tensorflow", "pytorch"), help=argparse.SUPPRESS)
    add_record_option(parser)
    args = parser.parse_args()
    if args.framework:
        run = tensorflow if args.framework == "tensorflow" else pytorch
        print(json.dumps(run(args.model, args.batch_size, args.input_size, args.steps)))
        return
    results = {}
    for framework in ("tensorflow", "pytorch"):
        out = subprocess.run([sys.executable, __file__, "--framework", framework, "--model", args.model,
                              "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
                              "--steps", str(args.steps)], capture_output=True, text=True, check=True)
        results[framework] = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [f"**{args.model}**, batch {args.batch_size} at {args.input_size}x{args.input_size}: TensorFlow graph "
             f"{results['tensorflow']['ms_per_step']} ms per step, CPU/wall {results['tensorflow']['cpu_per_wall']} "
             f"(one inter-op thread); PyTorch eager {results['pytorch']['ms_per_step']} ms, CPU/wall "
             f"{results['pytorch']['cpu_per_wall']}", "", "| framework | op | ms per step | calls per step |",
             "|---|---|---|---|"]
    for framework, result in results.items():
        lines += [f"| {framework} | {op} | {ms} | {n} |" for op, (ms, n) in result["ops"].items()]
    command = ("python benchmarks/op_profile.py " + " ".join(sys.argv[1:])).strip()
    replace_section("op_profile", f"`{command}` on {machine()}\n\n" + "\n".join(lines), record=args.record)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
