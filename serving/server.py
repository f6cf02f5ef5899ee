"""The embedded model server: TF Serving's REST and gRPC APIs over a watched export base.

For a machine without Docker, and for tests. Production is TF Serving itself (``serving/container``);
the same clients work against both.
"""
import concurrent.futures
import logging
import signal
import threading

import grpc

from serving.front import RestServer
from serving.grpc_api import add_services
from serving.metrics import Metrics
from serving.repository import ModelRepository

log = logging.getLogger("serving")
DEFAULT_MAX_BODY_MB = 64
#: request workers per API (REST and gRPC each), and connections (REST) / calls (gRPC) that may wait for one
DEFAULT_WORKERS = 16
DEFAULT_QUEUE = 64


class ModelServer:
    """``start()`` loads every model under ``base`` and listens; ``stop()`` drains and closes.

    Port 0 picks a free port (read ``rest_port`` / ``grpc_port`` after ``start``); ``grpc_port=None``
    turns gRPC off. ``batching``: None, or {"max_batch_size", "timeout_s", "threads"}. ``runtime``: what runs
    each version's model (serving/runtime.py): ``auto``, the fastest artifact of its export within ``budget`` (an
    export.choice.Budget; default: Budget()), or one runtime.

    Bounded work: each API has ``workers`` threads and lets ``queue`` more requests (REST) or calls (gRPC)
    wait; beyond that REST answers 503 and gRPC RESOURCE_EXHAUSTED at once. REST connections are read by an
    event loop (serving/front.py) and hold no worker until their request has arrived whole: its headers
    within ``idle_timeout`` seconds of connecting or of the last answer, its body within ``read_timeout``
    seconds of the headers, or the connection is dropped; a request that waited over ``queue_timeout``
    seconds for a worker is answered 503 (gRPC calls carry their clients' own deadlines).
    """

    def __init__(self, base, host="127.0.0.1", rest_port=8501, grpc_port=8500, batching=None, keep_versions=2,
                 poll_seconds=1.0, max_body_bytes=DEFAULT_MAX_BODY_MB << 20, grace_seconds=30,
                 workers=DEFAULT_WORKERS, queue=DEFAULT_QUEUE, read_timeout=10.0, idle_timeout=10.0,
                 queue_timeout=10.0, runtime="auto", budget=None):
        self.metrics = Metrics()
        self.repository = ModelRepository(base, keep_versions=keep_versions, batching=batching,
                                          on_batch=self._record_batch, runtime=runtime, budget=budget)
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.poll_seconds = poll_seconds
        self.max_body_bytes = max_body_bytes
        self.grace_seconds = grace_seconds
        self.workers, self.queue, self.read_timeout, self.idle_timeout = workers, queue, read_timeout, idle_timeout
        self.queue_timeout = queue_timeout
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads = []
        self._rest = self._grpc = None

    def _record_batch(self, model, size):
        self.metrics.batch_size.labels(model).observe(size)

    def start(self):
        from keras_cnns.errors import CnnkitError

        self._listen()  # the ports first: one in use fails at once, not after every model has loaded
        try:
            self.repository.scan()
            if not self.repository.names():
                raise CnnkitError(f"no servable model under {self.repository.base}: expected NAME/VERSION folders "
                                  "with saved_model.pb (what `cnnkit export` writes)")
        except BaseException:
            self._rest.server_close()
            if self._grpc is not None:
                self._grpc.stop(None)
            raise
        if self._grpc is not None:
            self._grpc.start()
        self._rest.start()
        self._spawn(self._watch, "watch")
        log.info("serving %s: REST and the model page http://%s:%d/, gRPC %s", ", ".join(self.repository.names()),
                 self.host, self.rest_port, f"{self.host}:{self.grpc_port}" if self._grpc else "off")
        return self

    def _listen(self):
        """Bind the REST port and the gRPC port (neither answers yet); one in use is a CnnkitError naming it."""
        from keras_cnns.errors import CnnkitError

        try:
            self._rest = RestServer((self.host, self.rest_port), self.repository, self.metrics, self.max_body_bytes,
                                    self.workers, self.queue, self.read_timeout, self.idle_timeout,
                                    self.queue_timeout)
        except OSError as err:
            raise CnnkitError(f"cannot listen on {self.host}:{self.rest_port}: {err.strerror} (--port picks "
                              "another)") from None
        self.rest_port = self._rest.server_address[1]
        if self.grpc_port is not None:
            options = [("grpc.max_receive_message_length", self.max_body_bytes),
                       ("grpc.max_send_message_length", self.max_body_bytes), ("grpc.so_reuseport", 0)]
            self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=self.workers), options=options,
                                     maximum_concurrent_rpcs=self.workers + self.queue)
            add_services(self._grpc, self.repository, self.metrics)
            try:
                port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
            except RuntimeError:  # grpcio 1.60+ raises where older ones returned 0
                port = 0
            if port == 0:
                self._rest.server_close()
                self._grpc = None
                raise CnnkitError(f"cannot listen for gRPC on {self.host}:{self.grpc_port}: in use or not allowed "
                                  "(--grpc-port picks another, --no-grpc serves REST only)")
            self.grpc_port = port

    def _spawn(self, target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self):
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.repository.scan()
            except Exception:  # a transient file system error must not stop serving
                log.exception("rescanning %s failed", self.repository.base)

    def stop(self):
        """Graceful: no new connections; requests in flight (queued batches too) finish; then close."""
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        log.info("shutting down: finishing requests in flight")
        grpc_done = self._grpc.stop(self.grace_seconds) if self._grpc else None
        if self._rest:
            self._rest.stop()
        if grpc_done is not None:
            grpc_done.wait(self.grace_seconds)
        for thread in self._threads:
            thread.join(self.grace_seconds)
        self.repository.close()
        self._stopped.set()

    def serve_forever(self):
        """Block until SIGTERM or SIGINT, then stop gracefully."""
        def on_signal(signum, frame):
            log.info("received %s", signal.Signals(signum).name)
            threading.Thread(target=self.stop, daemon=True).start()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
