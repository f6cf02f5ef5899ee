"""Prometheus metrics under TF Serving's names, served at its monitoring path."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_US = (100, 250, 500, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 1e7)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Request count (by model, entry point and status), request latency in microseconds, batch sizes; open and
    refused REST connections."""

    def __init__(self):
        disable_created_metrics()  # TF Serving exports no *_created series
        self.registry = CollectorRegistry()
        self.requests = Counter(":tensorflow:serving:request_count", "Requests by model, entry point and status.",
                                ["model_name", "entrypoint", "status"], registry=self.registry)
        self.latency = Histogram(":tensorflow:serving:request_latency",
                                 "Request latency in microseconds, by model, API and entry point.",
                                 ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US,
                                 registry=self.registry)
        self.batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                    "Images per model call when batching is on.", ["model_name"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        # the REST front end's own (TF Serving has no such series)
        self.rest_connections = Gauge("cnnkit_rest_connections", "Open REST connections.", registry=self.registry)
        self.rest_refused = Counter("cnnkit_rest_connections_refused", "REST connections refused at accept: "
                                    "max_connections (what the descriptor limit leaves room for) or fd_limit "
                                    "(the limit itself was hit).", ["reason"], registry=self.registry)
        self.runtime = Gauge("cnnkit_model_runtime", "The artifact each served version answers on (1), chosen "
                             "within the accuracy budget (GET .../metadata says why).",
                             ["model_name", "version", "runtime"], registry=self.registry)

    def observe(self, model, api, entrypoint, status, seconds):
        self.requests.labels(model, entrypoint, status).inc()
        self.latency.labels(model, api, entrypoint).observe(seconds * 1e6)

    def exposition(self, runtimes=None):
        """The metrics in Prometheus' text format; ``runtimes`` ({model: {version: runtime}}) as
        ``cnnkit_model_runtime``, one series per served version (1: the runtime it answers on)."""
        if runtimes is not None:
            self.runtime.clear()
            for model, versions in runtimes.items():
                for version, runtime in versions.items():
                    self.runtime.labels(model, str(version), runtime).set(1)
        return generate_latest(self.registry)
