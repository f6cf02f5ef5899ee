"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) on a threading HTTP server.

::

    GET  /v1/models/NAME[/versions/V]            version status
    GET  /v1/models/NAME[/versions/V]/metadata   signature defs
    POST /v1/models/NAME[/versions/V]:predict    {"instances": [...]} or {"inputs": ...}
    POST /v1/models/NAME[/versions/V]:classify   classification signatures only
    GET  /monitoring/prometheus/metrics          Prometheus metrics

Binary inputs travel as ``{"b64": "..."}``; binary outputs whose name ends in ``_bytes`` come back the
same way. Errors are ``{"error": "..."}`` with the HTTP status TF Serving gives the error's code.
"""
import base64
import concurrent.futures
import http.server
import json
import logging
import re
import socket
import threading
import time
import urllib.parse

import numpy as np
from google.protobuf import json_format

from serving import metrics as metrics_module
from serving.api import classify, signature_map, status_response
from serving.errors import ServingError, invalid, not_found

log = logging.getLogger("serving")
ENTRYPOINT = "REST"
ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                   r"(?P<what>/metadata|:predict|:classify|:regress)?$")


def _decode(value):
    """JSON -> Python with ``{"b64": s}`` turned into bytes and strings into UTF-8 bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise invalid("a {\"b64\": ...} value is not valid base64") from None
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _encode(value, name):
    """numpy -> JSON: bytes as text, or ``{"b64": ...}`` for ``*_bytes`` outputs and non-UTF-8 data."""
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return value.tolist()
        return [_encode(v, name) for v in value] if value.ndim else _encode(value.item(), name)
    if isinstance(value, bytes):
        if not name.endswith("_bytes"):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value.item() if isinstance(value, np.generic) else value


def parse_predict(body, input_names):
    """(inputs dict, row format?) from a predict request body."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object with \"instances\" or \"inputs\"")
    if ("instances" in body) == ("inputs" in body):
        raise invalid("the request needs exactly one of \"instances\" (row format) or \"inputs\" (columnar)")
    single = input_names[0] if len(input_names) == 1 else None
    if "instances" in body:
        instances = _decode(body["instances"])
        if not isinstance(instances, list) or not instances:
            raise invalid("\"instances\" must be a non-empty list")
        named = all(isinstance(i, dict) for i in instances)
        if single and not named:
            return {single: instances}, True
        if not named:
            raise invalid(f"each instance must be an object naming the inputs {input_names}")
        keys = set(instances[0])
        if any(set(i) != keys for i in instances):
            raise invalid("every instance must name the same inputs")
        return {k: [i[k] for i in instances] for k in keys}, True
    inputs = _decode(body["inputs"])
    if isinstance(inputs, dict) and not (single and set(inputs) - set(input_names)):
        return inputs, False
    if single:
        return {single: inputs}, False
    raise invalid(f"\"inputs\" must be an object naming the inputs {input_names}")


def format_predict(outputs, row):
    if not row:
        if len(outputs) == 1:
            (name, value), = outputs.items()
            return {"outputs": _encode(value, name)}
        return {"outputs": {k: _encode(v, k) for k, v in outputs.items()}}
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return {"predictions": _encode(value, name)}
    count = len(next(iter(outputs.values())))
    return {"predictions": [{k: _encode(v[i], k) for k, v in outputs.items()} for i in range(count)]}


def classify_json(servable, body):
    """``:classify``: JSON examples (with an optional shared ``context``) -> ``{"results": [[[label, score],
    ...], ...]}``, on a classification signature."""
    import tensorflow as tf

    examples = body.get("examples") if isinstance(body, dict) else None
    if not isinstance(examples, list) or not examples:
        raise invalid("\"examples\" must be a non-empty list of objects")
    context = _decode(body.get("context", {}))
    serialized = []
    for example in examples:
        if not isinstance(example, dict):
            raise invalid("each example must be an object of feature name -> value")
        features = {}
        for key, value in {**context, **_decode(example)}.items():
            values = value if isinstance(value, list) else [value]
            if all(isinstance(v, bytes) for v in values):
                features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
            elif all(isinstance(v, (int, float)) for v in values):
                features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
            else:
                raise invalid(f"feature {key!r} must be a list of numbers or strings")
        serialized.append(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    classes, scores = classify(servable, body.get("signature_name"), serialized)
    return {"results": [[[_encode(c, "classes"), float(s)] for c, s in zip(cs, ss)]
                        for cs, ss in zip(classes, scores)]}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cnnkit-serving"
    #: TCP_NODELAY: with Nagle's algorithm on, the body written after the headers waits for the client's
    #: delayed ACK, which measured 48 ms per request at one client instead of 2-3 ms
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        log.debug("%s - %s", self.address_string(), format % args)

    def setup(self):
        super().setup()
        self._answered = False
        self.server.track(self, True)

    def handle_one_request(self):
        """Wait for a request's first byte (a new connection: up to the read deadline; a kept-alive one: up
        to the idle timeout), then read it under the server's read deadline."""
        server = self.server
        self.connection.settimeout(server.idle_timeout if self._answered else server.read_timeout)
        self._answered = True
        try:
            if not self.connection.recv(1, socket.MSG_PEEK):
                self.close_connection = True
                return
        except OSError:  # idle too long, or reset
            self.close_connection = True
            return
        self.connection.settimeout(server.read_timeout)
        server.reading(self, True)
        try:
            super().handle_one_request()
        finally:
            self.server.reading(self, False)

    def finish(self):
        self.server.track(self, False)
        super().finish()

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method):
        self.server.busy(self, True)
        try:
            self._dispatch(method)
        finally:
            self.server.busy(self, False)
            if self.server.draining:
                self.close_connection = True

    def _dispatch(self, method):
        start = time.perf_counter()
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if method == "GET" and path == metrics_module.PATH:
            return self._send(200, self.server.metrics.exposition(), metrics_module.CONTENT_TYPE)
        match = ROUTE.match(path)
        name = match["name"] if match else None
        what = (match["what"] or "") if match else ""
        api = {"/metadata": "metadata", ":predict": "predict", ":classify": "classify",
               ":regress": "regress"}.get(what, "status")
        status = "OK"
        try:
            body = self._read_body() if method == "POST" else None
            if not match or (method == "POST") != what.startswith(":"):
                raise not_found(f"Malformed request: {method} {self.path}")
            result = self._api(api, name, match["version"], body)
            self._send(200, json.dumps(result).encode("utf-8"))
        except ServingError as err:
            status = err.code
            self._error(err.http_status, err.message)
        except _TooLarge as err:
            status = "RESOURCE_EXHAUSTED"
            self.close_connection = True
            self._error(413, str(err))
        except RecursionError:  # nested too deeply for the JSON parser or the conversions after it
            status = "INVALID_ARGUMENT"
            self._error(400, "the request is nested too deeply")
        except Exception as err:  # a bug, not the client's fault: report it and keep serving
            status = "INTERNAL"
            log.exception("%s %s failed", method, self.path)
            self._error(500, f"{type(err).__name__}: {err}")
        finally:
            self.server.metrics.observe(self.server.repository.label(name), api, ENTRYPOINT, status,
                                        time.perf_counter() - start)

    def _api(self, api, name, version, body):
        repository = self.server.repository
        if version is not None:
            if not version.isdigit():
                raise invalid(f"version must be a number, got {version!r}")
            version = int(version)
        if api == "status":
            return json_format.MessageToDict(status_response(repository, name, version),
                                             preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
        servable = repository.get(name, version)
        if api == "metadata":
            return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
                    "metadata": {"signature_def": json_format.MessageToDict(
                        signature_map(servable), preserving_proto_field_name=True)}}
        if api == "regress":
            raise invalid(f"{name} has no regression signature; use :predict")
        if api == "classify":
            return classify_json(servable, body)
        signature = body.get("signature_name") if isinstance(body, dict) else None
        inputs, row = parse_predict(body, sorted(servable.input_specs(signature or "serving_default")))
        output_filter = body.get("output_filter") or ()
        return format_predict(servable.predict(signature, inputs, output_filter), row)

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise invalid("a POST needs a Content-Length header")
        length = int(length)
        if length > self.server.max_body_bytes:
            remaining = length if length <= 4 * self.server.max_body_bytes else 0
            while remaining > 0:  # read it away so that the client gets to see the 413
                chunk = self.rfile.read(min(1 << 16, remaining))
                remaining = remaining - len(chunk) if chunk else 0
            raise _TooLarge(f"request body of {length} bytes is over the limit of {self.server.max_body_bytes}")
        raw = self._read_exactly(length)
        self.server.reading(self, False)
        try:
            return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError; an integer of over 4300 digits
            raise invalid(f"JSON Parse error: {str(err)[:200]}") from None

    def _read_exactly(self, length):
        chunks, remaining = [], length
        while remaining > 0:
            chunk = self.rfile.read(min(1 << 20, remaining))
            if not chunk:
                self.close_connection = True
                raise invalid(f"the request body ended after {length - remaining} of {length} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _error(self, code, message):
        self._send(code, json.dumps({"error": message}).encode("utf-8"))

    def _send(self, code, payload, content_type="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.server.draining or self.server.waiting():  # others queue for a worker: hand this one over
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


class _TooLarge(Exception):
    pass


def _no_constant(name):
    raise invalid(f"JSON Parse error: {name} is not a number TF Serving accepts")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise invalid(f"JSON Parse error: number {text[:40]} is out of range")
    return value


OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


class RestServer(http.server.HTTPServer):
    """A fixed pool of ``workers`` threads serves connections; up to ``queue`` more wait for one; beyond that
    a connection is answered 503 at once and closed. A request must arrive whole (headers and body) within
    ``read_timeout`` seconds of its first byte, or its connection is dropped; a keep-alive connection idles
    at most ``idle_timeout`` seconds, and is closed after a response whenever connections are waiting; a
    connection that waited over ``queue_timeout`` seconds for a worker is answered 503 when it gets one.
    ``stop`` lets requests in flight finish, then closes idle connections."""

    allow_reuse_address = True
    #: listen backlog; socketserver's default of 5 resets connections when many clients connect at once
    request_queue_size = 1024

    def __init__(self, address, repository, metrics, max_body_bytes, workers=16, queue=64, read_timeout=10.0,
                 idle_timeout=10.0, queue_timeout=10.0):
        super().__init__(address, Handler)
        self.repository = repository
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.workers, self.queue = workers, queue
        self.read_timeout, self.idle_timeout, self.queue_timeout = read_timeout, idle_timeout, queue_timeout
        self.draining = False
        self._connections = {}  # handler -> busy?
        self._reading = {}  # handler -> time its request's first byte arrived
        self._rejected = []  # (socket, time) answered 503: closed once the client had time to read it
        self._waiting = 0
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rest")
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="rest-reaper", daemon=True)
        self._reaper.start()

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self._overloaded(request)
            return
        with self._lock:
            self._waiting += 1
        self._pool.submit(self._work, request, client_address, time.monotonic())

    def _work(self, request, client_address, queued_at):
        with self._lock:
            self._waiting -= 1
        if time.monotonic() - queued_at > self.queue_timeout:  # its client has most likely given up: refuse
            self._overloaded(request)
            self._slots.release()
            return
        try:
            self.finish_request(request, client_address)
        except Exception:  # a client that vanished mid-request: nothing to answer
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def _overloaded(self, request):
        self.metrics.observe(self.repository.label(None), "predict", ENTRYPOINT, "UNAVAILABLE", 0.0)
        body = json.dumps({"error": f"overloaded: {self.workers} requests in progress and up to {self.queue} "
                                    f"waiting (at most {self.queue_timeout:g} s); retry"}).encode()
        try:
            request.settimeout(1.0)
            request.sendall(OVERLOADED % (len(body), body))
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._rejected.append((request, time.monotonic()))

    def waiting(self):
        with self._lock:
            return self._waiting

    def handle_error(self, request, client_address):
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, handler, open_):
        with self._lock:
            if open_:
                self._connections[handler] = False
            else:
                self._connections.pop(handler, None)
                self._reading.pop(handler, None)

    def busy(self, handler, busy):
        with self._lock:
            self._connections[handler] = busy

    def reading(self, handler, started):
        with self._lock:
            if started:
                self._reading[handler] = time.monotonic()
            else:
                self._reading.pop(handler, None)

    def _reap(self):
        """Drop connections whose request did not arrive in time; close answered-503 sockets."""
        while not self._stopped.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [h for h, since in self._reading.items() if now - since > self.read_timeout]
                for h in late:
                    self._reading.pop(h, None)
                done = [(s, t) for s, t in self._rejected if now - t > 0.5]
                self._rejected = [(s, t) for s, t in self._rejected if now - t <= 0.5]
            for handler in late:
                log.info("dropping %s: its request did not arrive within %gs", handler.client_address[0],
                         self.read_timeout)
                _shutdown(handler.connection)
            for sock, _ in done:
                try:
                    sock.setblocking(False)
                    while sock.recv(1 << 16):  # read away what the client sent, so closing sends no reset
                        pass
                except OSError:
                    pass
                sock.close()

    def stop(self):
        """Stop accepting, let in-flight requests finish, close idle keep-alive connections, join."""
        self.draining = True
        self.shutdown()
        with self._lock:
            idle = [h for h, busy in self._connections.items() if not busy]
        for handler in idle:
            _shutdown(handler.connection)  # wakes a thread waiting for the next request
        self._pool.shutdown(wait=True)
        self._stopped.set()
        self.server_close()


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
