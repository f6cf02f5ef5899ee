"""``cnnkit serve / predict``: thin wrappers over the :mod:`serving` package."""
import json
import logging
import os

import click

from cnnkit._common import log_to_stderr, table
from cnnkit._quiet import import_tensorflow
from cnnkit._quiet import stderr_silenced as native_logs_silenced
from export.local import runtimes as local_runtimes
from serving.runtime import choices as serve_runtimes

budget_options = (
    click.option("--exact", is_flag=True,
                 help="auto runs exact artifacts only (float32: the Keras model's answers within 1e-4), never a "
                      "float16, bfloat16 or int8 one however fast."),
    click.option("--max-accuracy-drop", type=click.FloatRange(0, 100), metavar="PTS",
                 help="auto may run a low-precision artifact that loses up to PTS accuracy points (and agrees on "
                      "PTS points fewer images) on the export's held-out images. Default budget: top-1 agreement "
                      ">= 99.5% and at most one held-out image of accuracy lost."),
)


def with_budget(command):
    for option in reversed(budget_options):
        command = option(command)
    return command


def _budget(exact, max_accuracy_drop):
    from export.choice import Budget

    return Budget(exact=exact, max_accuracy_drop=max_accuracy_drop)


@click.command()
@click.argument("export_base", metavar="EXPORT_BASE", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 makes the server reachable from other machines.")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(0, 65535), help="REST port.")
@click.option("--grpc-port", default=8500, show_default=True, type=click.IntRange(0, 65535),
              help="gRPC port (PredictionService, ModelService).")
@click.option("--no-grpc", is_flag=True, help="Serve REST only.")
@click.option("--batching", is_flag=True, help="Batch concurrent requests server-side (more throughput under load).")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-timeout-ms", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="How long a batch waits for more requests after its first.")
@click.option("--batch-threads", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--keep-versions", default=2, show_default=True, type=click.IntRange(min=1),
              help="Newest versions of each model kept loaded (a request may name any of them).")
@click.option("--poll-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0.05),
              help="How often EXPORT_BASE is rescanned for new or removed versions.")
@click.option("--max-body-mb", default=64, show_default=True, type=click.IntRange(min=1),
              help="Larger request bodies are refused with 413.")
@click.option("--workers", default=16, show_default=True, type=click.IntRange(min=1),
              help="Request threads per API (REST, gRPC): a REST request gets one only once it has arrived whole, so "
                   "idle, stalled and slow clients hold none. Memory in flight is at most about workers x (10 x "
                   "--max-body-mb, what a body of JSON numbers takes parsed; or one image being decoded: the "
                   "export's --max-megapixels x 15 bytes) plus the loaded models.")
@click.option("--queue", default=64, show_default=True, type=click.IntRange(min=0),
              help="Requests (REST) or calls (gRPC) that may wait for a worker; beyond them the server answers "
                   "503 + Retry-After / RESOURCE_EXHAUSTED at once (overloaded, retry).")
@click.option("--read-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a REST request's body may take to arrive after its headers; a slower client is dropped.")
@click.option("--idle-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a REST connection may take to send a request's headers whole, from connecting or from "
                   "its last answer (idle keep-alive connections included); then it is closed.")
@click.option("--queue-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.01),
              help="A REST request that waited this long for a worker is answered 503 then (its client has most "
                   "likely given up).")
@click.option("--runtime", "serve_runtime", type=click.Choice(serve_runtimes()), default="auto", show_default=True,
              help="What runs each model: auto is the fastest artifact of its export within the accuracy budget "
                   "(the lowest batch-1 latency in its parity report: LiteRT, ONNX Runtime, OpenVINO or the "
                   "SavedModel, in float32 or, where its answers stay within the budget, int8, float16 or "
                   "bfloat16); a name forces that runtime's exact artifact. Decoding and the API stay the "
                   "SavedModel's; GET /v1/models/NAME/metadata says what answers and why.")
@with_budget
@click.option("--emit-config", is_flag=True,
              help="Do not serve: write TF Serving deployment files (Dockerfile, models.config, batching and "
                   "monitoring configs, docker-compose.yml with nginx serving the model page on :8080, nginx.conf, "
                   "Kubernetes manifests) for EXPORT_BASE to --output.")
@click.option("--output", default="tfserving", show_default=True, type=click.Path(file_okay=False),
              help="Where --emit-config writes.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout: the files written, or the ports and models once serving.")
def serve(export_base, host, port, grpc_port, no_grpc, batching, max_batch_size, batch_timeout_ms, batch_threads,
          keep_versions, poll_seconds, max_body_mb, workers, queue, read_timeout, idle_timeout, queue_timeout,
          serve_runtime, exact, max_accuracy_drop, emit_config, output, as_json):
    """Serve every model under EXPORT_BASE (or one model's folder) with TF Serving's REST and gRPC APIs.

    \b
    EXPORT_BASE holds NAME/VERSION/ SavedModels, as `cnnkit export` writes them. The newest version of
    each model answers by default; a new version folder dropped in is picked up while serving, and a
    removed one is retired, without failing requests in flight. SIGTERM drains and stops.
    \b
      open http://localhost:8501/       the model page: try a model on your images, watch the metrics
      curl localhost:8501/v1/models/lenet5
      curl -d '{"instances": [...]}' localhost:8501/v1/models/lenet5:predict
      cnnkit predict digit.png --server http://localhost:8501 --model lenet5
    \b
    In production run TF Serving itself:  cnnkit serve exports --emit-config --output tfserving
    """
    if emit_config:
        from serving.config import emit

        with native_logs_silenced():  # reading the exports' signatures starts TensorFlow
            paths, names = emit(export_base, output, keep_versions, max_batch_size, batch_timeout_ms, batch_threads)
        if as_json:
            click.echo(json.dumps({"models": names, "files": paths}))
            return
        click.echo(f"TF Serving files for {', '.join(names)}:")
        for path in paths:
            click.echo(f"  {path}")
        click.echo(f"build and run:  cd {output} && docker compose up --build")
        return
    import_tensorflow(serving=True)
    from serving.server import ModelServer

    log_to_stderr("serving", "cnnkit serve")
    _raise_descriptor_limit()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")
    logging.getLogger("serving").info("oneDNN kernels %s (TF_ENABLE_ONEDNN_OPTS=%s)",
                                      "on" if onednn == "1" else "off", onednn)
    options = {"max_batch_size": max_batch_size, "timeout_s": batch_timeout_ms / 1000, "threads": batch_threads}
    server = ModelServer(export_base, host=host, rest_port=port, grpc_port=None if no_grpc else grpc_port,
                         batching=options if batching else None, keep_versions=keep_versions,
                         poll_seconds=poll_seconds, max_body_bytes=max_body_mb << 20, workers=workers, queue=queue,
                         read_timeout=read_timeout, idle_timeout=idle_timeout, queue_timeout=queue_timeout,
                         runtime=serve_runtime, budget=_budget(exact, max_accuracy_drop))
    with native_logs_silenced():  # the runtimes' own start-up lines (LiteRT: "Created TensorFlow Lite XNNPACK ...")
        server.start()
    if as_json:
        click.echo(json.dumps({"host": host, "rest_port": server.rest_port, "grpc_port": server.grpc_port,
                               "models": server.repository.names(),
                               "runtimes": server.repository.runtimes(reasons=True)}))
    server.serve_forever()


def _raise_descriptor_limit():
    """Every open REST connection takes a file descriptor: use the hard limit the system allows (as servers do),
    not the soft default (often 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--model", required=True,
              help="With --server: the model name. Without: an export (exports/NAME or exports/NAME/VERSION), "
                   "a .tflite or an .onnx file, run in-process, or a zoo model name (run in Keras, --weights).")
@click.option("--weights", metavar="imagenet|none|FILE",
              help="For a zoo model name as --model: its ImageNet checkpoint (the default where one exists), "
                   "none, or a checkpoint file (.h5 / .pth as published).")
@click.option("--server", metavar="URL", help="A TF Serving or `cnnkit serve` endpoint: http://host:8501 "
                                               "(REST) or host:8500 with --grpc.")
@click.option("--grpc", "use_grpc", is_flag=True, help="Talk gRPC to --server.")
@click.option("--version", "model_version", type=click.IntRange(min=1), help="Ask the server for this version.")
@click.option("--runtime", type=click.Choice(local_runtimes()), default="auto",
              show_default=True,
              help="Locally, which artifact of an export runs: auto = the fastest within the accuracy budget, by "
                   "the batch-1 latency in the export's parity report (printed with the reason); a runtime's name = "
                   "its exact artifact; mediapipe = the float32 TFLite file (or the .tflite given) in MediaPipe "
                   "Tasks' ImageClassifier from its metadata alone, the whole image resized by MediaPipe: what a "
                   "phone app sees.")
@with_budget
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 5))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def predict(images, model, weights, server, use_grpc, model_version, runtime, exact, max_accuracy_drop, top_k,
            as_json):
    """Classify IMAGES (JPEG, PNG, GIF, BMP, WebP) on a model server, with a local artifact, or with a zoo model's
    ImageNet weights; print top-k labels.

    \b
    Examples:
      cnnkit predict 7.png --model exports/lenet5
      cnnkit predict 7.png --model lenet5 --server http://localhost:8501
      cnnkit predict elephant.jpg --model mobilenet_v2 --weights imagenet --top-k 5
    """
    from keras_cnns.errors import CnnkitError
    from serving.client import predict_files

    if use_grpc and not server:
        raise CnnkitError("--grpc needs --server HOST:PORT")
    if model_version and not server:
        raise CnnkitError("--version asks a server for a version; locally give the version folder as --model")
    if weights and server:
        raise CnnkitError("--weights builds a zoo model locally; a server runs its own")
    if runtime != "auto" and server:
        raise CnnkitError("--runtime picks a local artifact; a server runs its SavedModel")
    if (exact or max_accuracy_drop is not None) and (server or runtime != "auto"):
        raise CnnkitError("--exact and --max-accuracy-drop are the budget of --runtime auto on a local export; a "
                          "server has its own (cnnkit serve --exact / --max-accuracy-drop)")
    budget = _budget(exact, max_accuracy_drop)
    import_tensorflow(serving=True)
    chosen = []
    with native_logs_silenced():
        results = predict_files(images, model, server=server, grpc=use_grpc, version=model_version, top_k=top_k,
                                runtime=runtime, weights=weights, budget=budget, on_choice=chosen.append)
    if chosen and not as_json:
        click.echo(f"runs on {chosen[0].reason}", err=True)
    good = [(path, p) for path, p in results if not isinstance(p, Exception)]
    failed = [str(p) for _, p in results if isinstance(p, Exception)]
    if as_json:
        click.echo(json.dumps({"predictions": [{"image": path, **p.as_dict()} for path, p in good],
                               "errors": failed, **({"runtime": chosen[0].as_dict()} if chosen else {})}))
    elif good:
        rows = [(path, p.label, f"{p.score:.3f}", ", ".join(f"{label} {score:.3f}" for label, score in p.top[1:]))
                for path, p in good]
        click.echo(table(("image", "label", "score", "next"), rows, right=(2,)))
    for message in failed:
        click.echo(f"cnnkit: error: {message}", err=True)
    if failed:
        raise click.exceptions.Exit(2)


COMMANDS = (serve, predict)
