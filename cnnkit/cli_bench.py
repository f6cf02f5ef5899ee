"""``cnnkit bench ...``: measurements on this machine (results are recorded in benchmarks/RESULTS.md)."""
import json

import click

from cnnkit._common import table
from cnnkit._quiet import import_tensorflow


@click.group()
def bench():
    """Measure throughput and latency on this machine (see benchmarks/RESULTS.md)."""


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of positive integers")
    return values


@bench.command("serve")
@click.argument("url", metavar="URL")
@click.option("--model", required=True, help="Model name on the server.")
@click.option("--grpc", "use_grpc", is_flag=True, help="URL is host:port of the gRPC API.")
@click.option("--concurrency", default="1,8,32", show_default=True, help="Client counts to run, one after another.")
@click.option("--requests", "per_client", default=50, show_default=True, type=click.IntRange(min=1),
              help="Requests per client at each concurrency.")
@click.option("--images", "image_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Image files to send (default: bundled digits as PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench_serve(url, model, use_grpc, concurrency, per_client, image_files, as_json):
    """Closed-loop load on a TF Serving or `cnnkit serve` endpoint: requests/s and p50/p90/p99 latency
    per concurrency, one image per request."""
    import_tensorflow()
    from serving.client import connect
    from serving.loadgen import run_load, sample_images

    levels = _int_list(concurrency)
    images = [open(f, "rb").read() for f in image_files] or sample_images()
    connect(url, use_grpc).status(model)  # a clear error now rather than 100% failed requests
    results = [run_load(url, model, images, c, per_client, grpc=use_grpc) for c in levels]
    if as_json:
        click.echo(json.dumps({"url": url, "model": model, "protocol": "grpc" if use_grpc else "rest",
                               "results": results}))
        return
    click.echo(table(("clients", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms"),
                     [(r["concurrency"], r["requests"], r["errors"], r["rps"], r["p50_ms"], r["p90_ms"], r["p99_ms"])
                      for r in results], right=(0, 1, 2, 3, 4, 5, 6)))


@bench.command("train")
@click.argument("model", metavar="MODEL")
@click.option("--modes", default="eager,graph,xla", show_default=True, help="Execution modes, interleaved.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--input-size", type=click.IntRange(min=1), help="Square input side (default: the model's own).")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1), help="Steps per measurement.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Measurements per mode (median and spread are reported).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench_train(model, modes, batch_size, input_size, steps, repeats, as_json):
    """Training images/s of MODEL per execution mode, interleaved in one process, with the time to the
    first step (tracing / compilation), traces, and GFLOP/s against the measured matmul peak."""
    import_tensorflow()
    from keras_cnns.training.bench import bench_train as run

    result = run(model, [m.strip() for m in modes.split(",") if m.strip()], batch_size, input_size, steps, repeats)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['model']} {tuple(result['input_shape'])}, batch {batch_size}; matmul peak "
               f"{result['peak_gflops']} GFLOP/s")
    click.echo(table(("mode", "images/s", "min", "max", "first step s", "traces", "GFLOP/s", "of peak"),
                     [(m, r["images_per_s"], r["min"], r["max"], r["first_step_s"], r["traces"], r["gflops"],
                       f"{r['fraction_of_peak']:.1%}") for m, r in result["modes"].items()],
                     right=(1, 2, 3, 4, 5, 6, 7)))


@bench.command("data")
@click.option("--data", "spec", default="digits", show_default=True, metavar="SPEC",
              help="digits, shapes[:N], a folder of class folders, a .npz file (as for `cnnkit train`).")
@click.option("--model", default="lenet5", show_default=True, help="The model whose training rate to compare with.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--input-size", type=click.IntRange(min=1), help="Square input side (default: the model's own).")
@click.option("--batches", default=50, show_default=True, type=click.IntRange(min=1), help="Batches timed per variant.")
@click.option("--augment", default="flip,crop", show_default=True, help="Augmentation in the pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench_data(spec, model, batch_size, input_size, batches, augment, as_json):
    """Input-pipeline images/s with and without parallel map / prefetch / cache, next to the model's
    training step rate: says whether training is input-bound."""
    import_tensorflow()
    from keras_cnns.training.bench import bench_data as run

    result = run(spec, model, batch_size, input_size, batches, augment)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{spec}: {result['images']} training images ({'in memory' if result['in_memory'] else 'files'}), "
               f"batch {batch_size}")
    click.echo(table(("pipeline", "images/s (median)", "min-max"),
                     [(name, rate, "-".join(str(v) for v in result["spread"][name]))
                      for name, rate in result["pipelines"].items()], right=(1, 2)))
    click.echo(f"{result['model']} trains at {result['train_images_per_s']} images/s (graph mode): "
               + ("INPUT-BOUND, the pipeline is slower" if result["input_bound"] else "not input-bound"))


@bench.command("infer")
@click.argument("export_dir", metavar="EXPORT_DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--batch-sizes", default="1,32", show_default=True)
@click.option("--threads", default="1,2", show_default=True, help="LiteRT / ONNX Runtime thread counts.")
@click.option("--repeats", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--chart", type=click.Path(dir_okay=False), help="Write a PNG bar chart here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench_infer(export_dir, batch_sizes, threads, repeats, chart, as_json):
    """Latency and throughput of every artifact of an export version (Keras, SavedModel, XLA, each TFLite
    variant in LiteRT, ONNX Runtime) on the same inputs, next to the MACs / peak lower bound."""
    import_tensorflow()
    from export.bench import bench_infer as run
    from export.bench import plot

    result = run(export_dir, _int_list(batch_sizes), _int_list(threads), repeats)
    if chart:
        result["chart"] = plot(result, chart)
    if as_json:
        click.echo(json.dumps(result))
        return
    before, after = result["peak_gflops_before_after"]
    click.echo(f"{export_dir}: {result['macs_per_image']:,} MACs per image; matmul peak {result['peak_gflops']} "
               f"GFLOP/s (before the runs {before}, after {after}); TensorFlow's oneDNN kernels "
               f"{'on' if result['tf_onednn'] else 'off'}; runtimes timed alternately")
    click.echo(table(("runtime", "threads", "batch", "ms (median)", "p10-p90 ms", "images/s"),
                     [(r["runtime"], r["threads"], r["batch"], r["latency_ms"],
                       f"{r['p10_ms']}-{r['p90_ms']}" if r["p10_ms"] is not None else "", r["images_per_s"])
                      for r in result["rows"]], right=(2, 3, 4, 5)))
    if chart:
        click.echo(f"chart: {chart}")


COMMANDS = (bench,)
