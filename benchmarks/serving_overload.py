"""Serving overload benchmark: the embedded server beyond its capacity, and beside hundreds of idle and
slow-drip connections. REST, one image per request, closed-loop clients that do not back off.

    python benchmarks/serving_overload.py [--clients 256] [--seconds 20] [--model mobilenet_v2@96]

Rows, each a `cnnkit serve` child process of its own:
- "capacity": as many clients as workers (16): the goodput the server can give;
- "unbounded": --clients clients, a worker per client and no queue limit (what a thread per connection amounts to);
- "bounded": --clients clients on the defaults (16 workers, 64 waiting): the rest is refused at once with 503;
  "bounded, back-off": the same with clients that wait the second Retry-After asks for;
- "quiet" / "700 hostile": 8 clients, the defaults, without and then with 600 connections that send nothing
  and 100 that drip headers a byte a second, held open for the whole run (deadlines raised past it).
Each row also says how many cores the server and the load generator (this process: the clients, on the same
two cores) used. With --record, rewrites the serving_overload section of benchmarks/RESULTS.md and writes
benchmarks/results/serving_overload.json.
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, record_rows, replace_section  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20, help="length of each run")
    parser.add_argument("--model", default="mobilenet_v2@96", help="zoo name, @input size")
    add_record_option(parser)
    args = parser.parse_args()

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    from export import export
    from serving.client import connect
    from serving.loadgen import hostile_connections, run_load, sample_images, spawn_server
    from serving.server import DEFAULT_QUEUE, DEFAULT_WORKERS

    name, _, size = args.model.partition("@")
    images = sample_images()
    defaults = ["--workers", str(DEFAULT_WORKERS), "--queue", str(DEFAULT_QUEUE)]
    settings = [("capacity", defaults, DEFAULT_WORKERS, 0),
                ("unbounded", ["--workers", str(args.clients), "--queue", str(args.clients)], args.clients, 0),
                ("bounded", defaults, args.clients, 0),
                ("bounded, back-off", defaults, args.clients, 0),
                ("quiet", defaults + ["--idle-timeout", "600"], 8, 0),
                ("700 hostile", defaults + ["--idle-timeout", "600"], 8, 700)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        export(name, output=scratch, input_size=int(size) if size else None, weights="none")
        for label, options, clients, hostile in settings:
            proc, rest_port, _, _ = spawn_server(scratch, "--no-grpc", *options)
            try:
                with hostile_connections(rest_port, stalled=600 if hostile else 0, dripping=100 if hostile else 0):
                    time.sleep(2 if hostile else 0)
                    url = f"http://127.0.0.1:{rest_port}"
                    connect(url).classify(name, images[:1])  # the first call's set-up, outside the measurement
                    server, own, start = _cpu_seconds(proc.pid), _own_cpu_seconds(), time.monotonic()
                    result = run_load(url, name, images, clients, 1, warmup=0, seconds=args.seconds,
                                      back_off="back-off" in label)
                    wall = time.monotonic() - start
                    result["server_cores"] = round((_cpu_seconds(proc.pid) - server) / wall, 2)
                    result["loadgen_cores"] = round((_own_cpu_seconds() - own) / wall, 2)
            finally:
                proc.terminate()
                proc.wait(60)
            offered = result["requests"] + result["errors"]
            rows.append({"setting": label, "options": " ".join(options), "clients": clients,
                         "hostile_connections": hostile, **result,
                         "refused_share": round(result["refused"] / max(offered, 1), 3)})
            print(json.dumps(rows[-1]), flush=True)
    command, described = record_rows("serving_overload", rows)
    lines = [f"{args.model}, REST, {args.seconds:g} s per row:", "",
             "| setting | options | clients | hostile connections | answered | goodput req/s | p50 ms | p99 ms | "
             "max ms | refused (503) | slowest 503 ms | other errors | server cores | load generator cores |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | `{r['options']}` | {r['clients']} | {r['hostile_connections']} | "
                     f"{r['requests']} | {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                     f"{r['refused_share']:.0%} | {r['refused_max_ms'] or '-'} | {r['errors'] - r['refused']} | "
                     f"{r['server_cores']} | {r['loadgen_cores']} |")
    replace_section("serving_overload", record=args.record, body=f"`{command}` on {described}\n\n" + "\n".join(lines))


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
