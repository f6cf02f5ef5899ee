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


COMMANDS = (bench,)
