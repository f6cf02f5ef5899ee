"""Where deployment happens: the same model answered by PyTorch (the dynamic framework's natural paths) and by
cnnkit's exported artifacts, batch-1 latency and batch-32 throughput on this CPU.

    python benchmarks/deployment.py [--models mobilenet_v2,resnet50] [--rounds 5] [--separate] [--record]

- PyTorch: the ImageNet-form twins of benchmarks/torch_models.py (parameter counts equal to cnnkit's), eager float32,
  eager with bfloat16 autocast, and ``torch.compile`` (Inductor) float32; ``torch.inference_mode``.
- cnnkit: ``cnnkit export`` of the same architecture at 224x224 in every runtime's float32 and int8 form (OpenVINO's
  int8 by NNCF) and bfloat16 where the CPU has it, each opened as ``cnnkit serve`` opens it (export.formats.runner_for);
  ``chosen`` is the artifact ``--runtime auto`` serves within the default accuracy budget (export/choice.py).
  MobileNet v2 is first trained for a few epochs on the bundled shapes at 224x224 (so that the budget judges real
  answers, held-out agreement and accuracy in the table); ResNet-50 is measured untrained (speed only: an untrained
  model is always served exact, so its ``chosen`` is the float32 artifact).
- Every variant runs with 2 threads. In one process the variants alternate round by round (``--rounds``): batch 1 is
  the median of each round's calls, batch 32 the median round. ``--separate``: each variant in a process of its own
  per round, the order rotating, since two frameworks in one process can slow each other.

Results: benchmarks/results/deployment.json, and the deployment section of RESULTS.md with ``--record``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
THREADS = 2
SIZE = 224
TORCH = ("torch eager fp32", "torch eager bf16", "torch.compile fp32")
#: cnnkit's formats measured (those this machine can write): float32 and int8 of each runtime, bfloat16 IR
FORMATS = ("tflite-float32", "tflite-int8", "onnx", "onnx-int8", "openvino", "openvino-int8", "openvino-bf16")


def export_model(name, out):
    """(version folder, report, export seconds) of ``name`` at 224x224 exported in FORMATS (those available)."""
    from export import export, plan_formats
    from export.formats import FORMATS as TABLE

    formats = plan_formats(extra=[f for f in FORMATS if TABLE[f].available is None or TABLE[f].available() is None])
    start = time.time()
    if name == "mobilenet_v2":  # trained on the bundled shapes, so the budget judges real answers
        from keras_cnns.training import TrainConfig, train

        run = train(TrainConfig(model=name, data="shapes:150", input_size=SIZE, epochs=3, batch_size=16,
                                output=os.path.join(out, "runs")), verbose=0).run_dir
        path, report = export(run, output=out, formats=formats, low_precision_optional=True)
    else:  # untrained: speed only. Its near-uniform answers flip in low precision, so the agreement gates are
        # opened here (this benchmark's export only) to keep those files to time; auto serves such a model exact
        from export import parity

        gates = parity.MIN_AGREEMENT, parity.MAX_ACCURACY_DROP
        parity.MIN_AGREEMENT, parity.MAX_ACCURACY_DROP = 0.0, 1.0
        try:
            path, report = export(name, output=out, formats=formats, weights="none", input_size=SIZE,
                                  calibration_data="shapes:150", allow_failed_variants=True)
        finally:
            parity.MIN_AGREEMENT, parity.MAX_ACCURACY_DROP = gates
    return path, report, time.time() - start


def torch_runner(name, variant):
    import torch
    from torch_models import create_imagenet

    torch.set_num_threads(THREADS)
    model = create_imagenet(name).eval()
    if variant == "torch.compile fp32":
        model = torch.compile(model)

    def run(x):
        with torch.inference_mode():
            if variant == "torch eager bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x).float()
            return model(x)

    return run, lambda batch: torch.randn(batch, 3, SIZE, SIZE)


def cnnkit_runner(kind, path):
    import numpy as np

    from export.formats import runner_for

    runner = runner_for(kind, path, threads=THREADS)
    rng = np.random.default_rng(0)
    return runner, lambda batch: rng.uniform(0, 255, (batch, SIZE, SIZE, 3)).astype(np.float32)


def measure(run, make, calls=10):
    """(batch-1 ms per call: the median of ``calls``, batch-32 images/s of one call) after a warm-up."""
    import numpy as np

    one, many = make(1), make(32)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(one)
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    run(many)
    return float(np.median(times)), 32 / (time.perf_counter() - start)


def open_variant(name, variant, artifacts):
    if variant in TORCH:
        return torch_runner(name, variant)
    kind, path = artifacts[variant]
    return cnnkit_runner(kind, path)


def alternating(name, variants, artifacts, rounds):
    """{variant: {"batch1_ms": [...], "batch32_ips": [...]}} measured round-robin in this process."""
    opened = {}
    for variant in variants:
        run, make = open_variant(name, variant, artifacts)
        run(make(1)), run(make(32))  # warm-up (torch.compile compiles here)
        opened[variant] = (run, make)
    found = {v: {"batch1_ms": [], "batch32_ips": []} for v in variants}
    for _ in range(rounds):
        for variant, (run, make) in opened.items():
            ms, ips = measure(run, make)
            found[variant]["batch1_ms"].append(ms)
            found[variant]["batch32_ips"].append(ips)
    return found


def separate(name, variants, artifacts, rounds):
    """The same, each variant in a fresh process per round (the order rotating)."""
    found = {v: {"batch1_ms": [], "batch32_ips": []} for v in variants}
    for r in range(rounds):
        for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps([name, variant, artifacts])],
                                 capture_output=True, text=True, check=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            found[variant]["batch1_ms"].append(got["batch1_ms"][0])
            found[variant]["batch32_ips"].append(got["batch32_ips"][0])
    return found


def child(spec):
    name, variant, artifacts = json.loads(spec)
    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    print(json.dumps(alternating(name, [variant], artifacts, 1)[variant]))


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def table(results):
    lines = []
    for name, result in results.items():
        chosen = result["chosen"]
        left = [r for r, row in result["rows"].items() if not row["ok"]]
        lines += ["", f"**{name}** at {SIZE}x{SIZE}, {THREADS} threads ({result['trained']}; export {result['export_s']:.0f} s"
                  f" for {len(result['artifacts'])} artifacts" + (f"; out of tolerance, not published: "
                                                                  f"{', '.join(left)}" if left else "")
                  + f"). `--runtime auto` serves **{chosen['artifact']}**: {chosen['reason']}.", "",
                  "| variant | batch 1 ms (one process) | batch 1 ms (separate) | batch 32 img/s (one process) | "
                  "batch 32 img/s (separate) | top-1 agreement, accuracy (held-out) |", "|---|---:|---:|---:|---:|---|"]
        for variant, m in result["one_process"].items():
            s = result.get("separate", {}).get(variant)
            row = result["rows"].get(variant)
            quality = "" if row is None else (f"{row['top1_agreement']:.1%}, "
                                              + ("n/a" if row["accuracy"] is None else f"{row['accuracy']:.1%}"))
            mark = " (chosen)" if variant == chosen["artifact"] else ""
            apart = ("", "") if s is None else (f"{median(s['batch1_ms']):.2f}", f"{median(s['batch32_ips']):.1f}")
            lines.append(f"| {variant}{mark} | {median(m['batch1_ms']):.2f} | {apart[0]} | "
                         f"{median(m['batch32_ips']):.1f} | {apart[1]} | {quality} |")
        eager = median(result["one_process"]["torch eager fp32"]["batch1_ms"])
        best_torch = min(median(result["one_process"][v]["batch1_ms"]) for v in TORCH)
        mine = median(result["one_process"][chosen["artifact"]]["batch1_ms"])
        eager32 = median(result["one_process"]["torch eager fp32"]["batch32_ips"])
        best32 = max(median(result["one_process"][v]["batch32_ips"]) for v in TORCH)
        mine32 = median(result["one_process"][chosen["artifact"]]["batch32_ips"])
        lines += ["", f"cnnkit's chosen artifact against PyTorch eager float32: {eager / mine:.2f}x at batch 1, "
                  f"{mine32 / eager32:.2f}x at batch 32; against PyTorch's best: {best_torch / mine:.2f}x and "
                  f"{mine32 / best32:.2f}x (one process)."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet50")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--separate", action="store_true", help="also each variant in processes of its own")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true", help="rewrite the deployment section of RESULTS.md")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    from _record import machine, replace_section

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    from export.local import choose
    from keras_cnns.files import read_json

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            path, report, seconds = export_model(name, os.path.join(scratch, name))
            meta = read_json(os.path.join(path, "export.json"))
            artifacts = {a["artifact"]: (a["kind"], os.path.join(path, a["path"])) for a in meta["artifacts"]}
            variants = list(TORCH) + list(artifacts)
            print(f"{name}: exported in {seconds:.0f} s; measuring {', '.join(variants)}", flush=True)
            result = {"export_s": seconds, "artifacts": list(artifacts), "chosen": choose(path).as_dict(),
                      "trained": "trained 3 epochs on shapes:150" if name == "mobilenet_v2" else "untrained",
                      "rows": {r["artifact"]: r for r in report["artifacts"]},
                      "one_process": alternating(name, variants, artifacts, args.rounds)}
            if args.separate:
                result["separate"] = separate(name, variants, artifacts, max(1, args.rounds // 2))
            results[name] = result
            print(table({name: result}), flush=True)
    command = " ".join(["python", "benchmarks/deployment.py", *sys.argv[1:]])
    body = f"Measured on {machine()}: `{command}`.\n" + table(results)
    with open(os.path.join(HERE, "results", "deployment.json"), "w") as f:
        json.dump({"machine": machine(), "results": results}, f, indent=1, default=str)
    replace_section("deployment", body, record=args.record)


if __name__ == "__main__":
    main()
