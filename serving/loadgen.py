"""A closed-loop load generator for TF Serving's APIs (``cnnkit bench serve``, benchmarks/serving.py).

Each of ``concurrency`` clients has its own connection and sends one image per request, waiting for
each answer before the next (like a fleet of single-image callers). Reports requests/s and latency
percentiles; any failed request is counted, never hidden.
"""
import threading
import time

import numpy as np

from serving.client import connect


def sample_images(count=16):
    """PNG bytes of bundled digits (any model's ``serving_bytes`` decodes and resizes them)."""
    import io

    from PIL import Image

    from keras_cnns.data import digits_8x8

    images = []
    for pixels in digits_8x8()[0][:count]:
        buffer = io.BytesIO()
        Image.fromarray((pixels * 16).clip(0, 255).astype(np.uint8)).resize((32, 32)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def run_load(url, model, images, concurrency, requests_per_client, grpc=False, warmup=2):
    """Returns {concurrency, requests, errors, seconds, rps, p50_ms, p90_ms, p99_ms, max_ms}."""
    latencies = [[] for _ in range(concurrency)]
    errors = []
    ready = threading.Barrier(concurrency + 1)

    def client_loop(n):
        c = connect(url, grpc)
        try:
            for k in range(warmup):
                c.classify(model, [images[(n + k) % len(images)]])
        except Exception as err:
            errors.append(repr(err))
        ready.wait()
        for k in range(requests_per_client):
            image = images[(n * requests_per_client + k) % len(images)]
            start = time.perf_counter()
            try:
                c.classify(model, [image])
            except Exception as err:
                errors.append(repr(err))
                continue
            latencies[n].append(time.perf_counter() - start)

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    done = np.array([x for per_client in latencies for x in per_client]) * 1000
    percentile = (lambda q: round(float(np.percentile(done, q)), 2)) if len(done) else (lambda q: None)
    return {"concurrency": concurrency, "requests": int(len(done)), "errors": len(errors),
            "seconds": round(seconds, 3), "rps": round(len(done) / seconds, 1), "p50_ms": percentile(50),
            "p90_ms": percentile(90), "p99_ms": percentile(99), "max_ms": percentile(100),
            "first_error": errors[0] if errors else None}


def spawn_server(base, *options, timeout=120, env=None):
    """``cnnkit serve BASE`` in a child process on free ports -> (process, REST port, gRPC port, log path).
    ``env``: variables to set for the child on top of this process's environment.

    The load generator then competes with the server only for CPU, not for the GIL. The server's log
    (stderr) goes to a temporary file, so that it can never fill a pipe and stall the server.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    log = tempfile.NamedTemporaryFile("w+", prefix="cnnkit-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", base, "--port", "0", "--grpc-port", "0",
                             "--json", *options], stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    line = proc.stdout.readline()
    timer.cancel()
    if not line:
        proc.kill()
        raise RuntimeError("cnnkit serve did not start:\n" + open(log.name).read())
    ready = json.loads(line)
    return proc, ready["rest_port"], ready["grpc_port"], log.name
