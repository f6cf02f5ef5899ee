"""A closed-loop load generator for TF Serving's APIs (``cnnkit bench serve``, benchmarks/serving.py).

Each of ``concurrency`` clients has its own connection and sends one image per request, waiting for
each answer before the next (like a fleet of single-image callers). Reports requests/s and latency
percentiles; any failed request is counted, never hidden.
"""
import contextlib
import socket
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


def run_load(url, model, images, concurrency, requests_per_client, grpc=False, warmup=2, seconds=None,
             back_off=False):
    """Returns {concurrency, requests, errors, seconds, rps, p50_ms, p90_ms, p99_ms, max_ms, refused,
    refused_max_ms, first_error}: latencies of the answered requests; ``errors`` counts every failed one, of
    which ``refused`` were the server's overload answer (REST 503, gRPC RESOURCE_EXHAUSTED). With ``seconds``,
    each client sends until that much time has passed instead of ``requests_per_client`` requests (goodput
    over a fixed time). A refused client moves straight on to its next request, or with ``back_off`` waits the
    second that the server's Retry-After asks for."""
    latencies = [[] for _ in range(concurrency)]
    refused, errors = [], []
    ready, go = threading.Barrier(concurrency + 1), threading.Barrier(concurrency + 1)
    deadline = []

    def client_loop(n):
        c = connect(url, grpc)
        try:
            for k in range(warmup):
                c.classify(model, [images[(n + k) % len(images)]])
        except Exception as err:
            errors.append(repr(err))
        ready.wait()
        go.wait()  # once the deadline is set
        k = 0
        while (k < requests_per_client) if seconds is None else (time.perf_counter() < deadline[0]):
            image = images[(n * requests_per_client + k) % len(images)]
            k += 1
            start = time.perf_counter()
            try:
                c.classify(model, [image])
            except Exception as err:
                errors.append(repr(err))
                if "answered 503" in str(err) or "RESOURCE_EXHAUSTED" in str(err):
                    refused.append(time.perf_counter() - start)
                    if back_off:
                        time.sleep(1.0)
                continue
            latencies[n].append(time.perf_counter() - start)

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    deadline.append(start + (seconds or 0))
    go.wait()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    done = np.array([x for per_client in latencies for x in per_client]) * 1000
    percentile = (lambda q: round(float(np.percentile(done, q)), 2)) if len(done) else (lambda q: None)
    return {"concurrency": concurrency, "requests": int(len(done)), "errors": len(errors),
            "seconds": round(seconds, 3), "rps": round(len(done) / seconds, 1), "p50_ms": percentile(50),
            "p90_ms": percentile(90), "p99_ms": percentile(99), "max_ms": percentile(100), "refused": len(refused),
            "refused_max_ms": round(max(refused) * 1000, 2) if refused else None,
            "first_error": errors[0] if errors else None}


@contextlib.contextmanager
def hostile_connections(port, stalled=600, dripping=100, interval=1.0, host="127.0.0.1"):
    """While in the block: ``stalled`` connections to the REST port that send nothing, and ``dripping`` ones
    that send a request's headers one byte every ``interval`` seconds without ever finishing them (a slowloris).
    Yields the list of sockets; each one the server closes stays closed."""
    sockets = [socket.create_connection((host, port)) for _ in range(stalled + dripping)]
    stop = threading.Event()
    header = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 1_000_000

    def drip():
        sent = 0
        while not stop.wait(interval):
            for sock in sockets[stalled:]:
                try:
                    sock.send(header[sent:sent + 1])
                except OSError:
                    pass
            sent += 1

    thread = threading.Thread(target=drip, name="drip", daemon=True)
    thread.start()
    try:
        yield sockets
    finally:
        stop.set()
        thread.join()
        for sock in sockets:
            sock.close()


def spawn_server(base, *options, timeout=120, env=None, preexec_fn=None):
    """``cnnkit serve BASE`` in a child process on free ports -> (process, REST port, gRPC port, log path).
    ``env``: variables to set for the child on top of this process's environment; ``preexec_fn``: run in the
    child before it starts (to lower its resource limits, say).

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
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, preexec_fn=preexec_fn)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    line = proc.stdout.readline()
    timer.cancel()
    if not line:
        proc.kill()
        raise RuntimeError("cnnkit serve did not start:\n" + open(log.name).read())
    proc.ready = ready = json.loads(line)  # what it serves: {"models", "runtimes", ...}
    return proc, ready["rest_port"], ready["grpc_port"], log.name
