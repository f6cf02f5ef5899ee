"""Serving overload benchmark: offered load above the embedded server's capacity, before and after its
bounds. Goodput (answered req/s), p99 of the answered requests and the share refused with 503.

    python benchmarks/serving_overload.py [--clients 256] [--requests 8] [--model mobilenet_v2@96]

"unbounded" runs `cnnkit serve` with a worker per client and no queue limit (what a thread per connection
amounts to); "bounded" with its defaults (16 workers, 64 waiting): the connections beyond them are refused
at once with 503 instead of all sharing two cores. REST, one image per request, closed loop; with --record, rewrites the
serving_overload section of benchmarks/RESULTS.md and writes benchmarks/results/serving_overload.json.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, record_rows, replace_section  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--model", default="mobilenet_v2@96", help="zoo name, @input size")
    add_record_option(parser)
    args = parser.parse_args()

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    from export import export
    from serving.loadgen import run_load, sample_images, spawn_server
    from serving.server import DEFAULT_QUEUE, DEFAULT_WORKERS

    name, _, size = args.model.partition("@")
    images = sample_images()
    settings = {"unbounded": ["--workers", str(args.clients), "--queue", str(args.clients)],
                "bounded": ["--workers", str(DEFAULT_WORKERS), "--queue", str(DEFAULT_QUEUE)]}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        export(name, output=scratch, input_size=int(size) if size else None)
        for label, options in settings.items():
            proc, rest_port, _, _ = spawn_server(scratch, "--no-grpc", *options)
            try:
                result = run_load(f"http://127.0.0.1:{rest_port}", name, images, args.clients, args.requests,
                                  warmup=0)
            finally:
                proc.terminate()
                proc.wait(60)
            offered = args.clients * args.requests
            rows.append({"setting": label, "options": " ".join(options), **result,
                         "refused_share": round(result["errors"] / offered, 3)})
            print(json.dumps(rows[-1]), flush=True)
    command, described = record_rows("serving_overload", rows)
    lines = [f"{args.clients} clients x {args.requests} requests, {args.model}, REST:", "",
             "| server | options | answered | goodput req/s | p50 ms | p99 ms | refused (503) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | `{r['options']}` | {r['requests']} | {r['rps']:.0f} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r['refused_share']:.0%} |")
    replace_section("serving_overload", record=args.record, body=f"`{command}` on {described}\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
