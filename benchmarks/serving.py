"""Serving benchmark: requests/s and p50/p99 latency of the embedded server at 1, 8 and 32 concurrent
clients, REST and gRPC, with and without server-side batching (and oneDNN), for a tiny and a mid-size model,
with the model run by the SavedModel (TensorFlow) or by the export's fastest exact artifact (``--runtime auto``).

    python benchmarks/serving.py [--requests 40] [--models lenet5,mobilenet_v2@96] [--onednn off,on]
        [--runtimes savedmodel,auto]

Exports the models (untrained weights: throughput does not depend on them; SavedModel, TFLite, ONNX and,
where installed, OpenVINO, each with its parity report) to a scratch folder, runs
``cnnkit serve`` in a child process per setting and the load generator (``cnnkit bench serve``'s) in
this one, then (with --record) rewrites the serving section of benchmarks/RESULTS.md and writes
benchmarks/results/serving.json.
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
    parser.add_argument("--requests", type=int, default=40, help="requests per client per setting")
    parser.add_argument("--models", default="lenet5,mobilenet_v2@96", help="zoo names, @input size")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--onednn", default="off", help="TensorFlow's oneDNN kernels in the server: off (cnnkit "
                                                        "serve's default), on, or off,on for both")
    parser.add_argument("--runtimes", default="savedmodel,auto",
                        help="cnnkit serve --runtime values to compare (auto: the export's fastest exact artifact)")
    add_record_option(parser)
    args = parser.parse_args()
    if not args.onednn or set(args.onednn.split(",")) - {"on", "off"}:
        parser.error(f"--onednn takes off, on or off,on; got {args.onednn!r}")

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    from export import export, plan_formats
    from export.openvino_format import missing as openvino_missing
    from serving.loadgen import run_load, sample_images, spawn_server

    levels = [int(c) for c in args.concurrency.split(",")]
    images = sample_images()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.models.split(","):
            name, _, size = spec.partition("@")
            base = os.path.join(scratch, name)
            formats = plan_formats(tflite_out=True, onnx_out=True, openvino_out=not openvino_missing())
            export(name, output=base, input_size=int(size) if size else None, weights="none", formats=formats)
            for runtime, batching, onednn in [(r, b, o) for r in args.runtimes.split(",") for b in (False, True)
                                              for o in args.onednn.split(",")]:
                proc, rest_port, grpc_port, _ = spawn_server(base, "--runtime", runtime,
                                                             *(["--batching"] if batching else []),
                                                             env={"TF_ENABLE_ONEDNN_OPTS": str(int(onednn == "on"))})
                ran = proc.ready["runtimes"][name]["1"]["runtime"]
                try:
                    for protocol, url in (("rest", f"http://127.0.0.1:{rest_port}"),
                                          ("grpc", f"127.0.0.1:{grpc_port}")):
                        for c in levels:
                            result = run_load(url, name, images, c, args.requests, grpc=protocol == "grpc")
                            rows.append({"model": spec, "runtime": runtime, "ran": ran, "protocol": protocol,
                                         "batching": batching, "onednn": onednn, **result})
                            print(json.dumps(rows[-1]), flush=True)
                finally:
                    proc.terminate()
                    proc.wait(60)
    command, described = record_rows("serving", rows)
    lines = ["| model | --runtime (ran) | API | batching | oneDNN | clients | req/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['runtime']} ({r['ran']}) | {r['protocol']} "
                     f"| {'on' if r['batching'] else 'off'} | {r['onednn']} "
                     f"| {r['concurrency']} "
                     f"| {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    replace_section("serving", record=args.record, body=f"`{command}` on {described}\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
