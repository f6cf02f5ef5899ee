"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest): request targets and JSON bodies to
answers. The event-driven front end that reads requests and hands them to workers is serving/front.py.

::

    GET  /v1/models/NAME[/versions/V]            version status
    GET  /v1/models/NAME[/versions/V]/metadata   signature defs
    POST /v1/models/NAME[/versions/V]:predict    {"instances": [...]} or {"inputs": ...}
    POST /v1/models/NAME[/versions/V]:classify   classification signatures only
    GET  /monitoring/prometheus/metrics          Prometheus metrics
    GET  /                                       the model page (serving/web/index.html): ``/?models=a,b``

Binary inputs travel as ``{"b64": "..."}``; binary outputs whose name ends in ``_bytes`` come back the
same way. Errors are ``{"error": "..."}`` with the HTTP status TF Serving gives the error's code.
"""
import base64
import json
import logging
import re
import urllib.parse
from typing import NamedTuple

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


class Call(NamedTuple):
    """A request's route: which API on which model (``name`` None for the metrics or a bad target)."""
    method: str
    target: str
    api: str  # status, metadata, predict, classify, regress or metrics
    name: str | None
    version: str | None
    ok: bool  # the target names an API that takes this method

    @property
    def work(self):
        """Whether it runs a model (a worker's job): every POST. GETs only read what is in memory."""
        return self.method == "POST"


def route(method, target):
    path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
    if path == metrics_module.PATH:
        return Call(method, target, "metrics", None, None, method == "GET")
    if path in ("/", "/index.html"):
        return Call(method, target, "page", None, None, method == "GET")
    match = ROUTE.match(path)
    what = (match["what"] or "") if match else ""
    api = {"/metadata": "metadata", ":predict": "predict", ":classify": "classify", ":regress": "regress"}.get(
        what, "status")
    ok = bool(match) and method in ("GET", "POST") and (method == "POST") == what.startswith(":")
    return Call(method, target, api, match["name"] if match else None, match["version"] if match else None, ok)


class Reply(NamedTuple):
    code: int  # HTTP status
    payload: bytes
    status: str = "OK"  # TF Serving's error code, for the metrics
    content_type: str = "application/json"
    headers: tuple = ()  # more (name, value) pairs


def error_reply(code, message, status, headers=()):
    return Reply(code, json.dumps({"error": message}).encode("utf-8"), status, headers=headers)


def overloaded_reply(message):
    return error_reply(503, message, "UNAVAILABLE", (("Retry-After", "1"),))


PAGE_HEADERS = (("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                # everything the page needs is in it; it talks to this server only
                ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                            "img-src blob:; connect-src 'self'; form-action 'none'"))


def page(repository, target):
    """The model page, or (without ``?models=``) a redirect to it naming every model served now."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    if "models" not in query:
        location = "/?" + urllib.parse.urlencode({"models": ",".join(repository.names())}, safe=",")
        return Reply(302, b"", content_type="text/plain", headers=(("Location", location),))
    from importlib.resources import files

    html = files("serving").joinpath("web", "index.html").read_bytes()
    return Reply(200, html, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def answer(repository, metrics, call, body):
    """The reply to ``call`` with ``body`` (the raw request body of a POST); never raises."""
    if call.api == "metrics" and call.ok:
        return Reply(200, metrics.exposition(repository.runtimes()), content_type=metrics_module.CONTENT_TYPE)
    if call.api == "page" and call.ok:
        return page(repository, call.target)
    try:
        if not call.ok:
            raise not_found(f"Malformed request: {call.method} {call.target}")
        result = _api(repository, call, _parse_body(body) if call.method == "POST" else None)
        return Reply(200, json.dumps(result).encode("utf-8"))
    except ServingError as err:
        return error_reply(err.http_status, err.message, err.code)
    except RecursionError:  # nested too deeply for the JSON parser or the conversions after it
        return error_reply(400, "the request is nested too deeply", "INVALID_ARGUMENT")
    except Exception as err:  # a bug, not the client's fault: report it and keep serving
        log.exception("%s %s failed", call.method, call.target)
        return error_reply(500, f"{type(err).__name__}: {err}", "INTERNAL")


def _parse_body(raw):
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError; an integer of over 4300 digits
        raise invalid(f"JSON Parse error: {str(err)[:200]}") from None


def _api(repository, call, body):
    name, version = call.name, call.version
    if version is not None:
        if not version.isdigit():
            raise invalid(f"version must be a number, got {version!r}")
        version = int(version)
    if call.api == "status":
        return json_format.MessageToDict(status_response(repository, name, version),
                                         preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    servable = repository.get(name, version)
    if call.api == "metadata":
        # "runtime" is cnnkit's own (TF Serving's answer has signature_def alone): what answers, and why
        return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": json_format.MessageToDict(
                    signature_map(servable), preserving_proto_field_name=True),
                    "runtime": {"artifact": servable.runtime, "reason": servable.runtime_reason}}}
    if call.api == "regress":
        raise invalid(f"{name} has no regression signature; use :predict")
    if call.api == "classify":
        return classify_json(servable, body)
    signature = body.get("signature_name") if isinstance(body, dict) else None
    inputs, row = parse_predict(body, sorted(servable.input_specs(signature or "serving_default")))
    output_filter = body.get("output_filter") or ()
    return format_predict(servable.predict(signature, inputs, output_filter), row)


def _no_constant(name):
    raise invalid(f"JSON Parse error: {name} is not a number TF Serving accepts")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise invalid(f"JSON Parse error: number {text[:40]} is out of range")
    return value
