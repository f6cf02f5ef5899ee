"""Serving: the embedded server over real HTTP and gRPC (TF Serving's APIs), hot-swap under load, graceful
shutdown, the clients and `cnnkit predict`, and the TF Serving deployment files parsed with its protos."""
import base64
import concurrent.futures
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest import cnnkit_here
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2

from export import export as run_export
from export import plan_formats
from export.choice import Budget
from export.formats import exact_kinds
from keras_cnns.data import load_data
from serving import client, config, tfserving_protos
from serving.loadgen import spawn_server
from serving.server import ModelServer

EXACT = Budget(exact=True)
MODEL = "lenet5"


def _encode(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, default_lenet_run):
    """LeNet-5 trained on digits (the session's default run), exported (SavedModel, TFLite float32 and dynamic-range,
    ONNX, OpenVINO) to BASE/lenet5/1, and test digits as PNG and JPEG bytes with the label the local SavedModel
    gives each (the reference answer)."""
    root = tmp_path_factory.mktemp("serving")
    result = default_lenet_run
    base = root / "exports"
    path, _ = run_export(result.run_dir, output=str(base),
                         formats=plan_formats(tflite_out=True, onnx_out=True) + ["tflite-dynamic", "openvino"])
    data = load_data("digits", (32, 32, 1))
    pixels, truth = data.test.x[:24], data.test.y[:24]
    images = [_encode(p, "PNG" if i % 2 else "JPEG") for i, p in enumerate(pixels)]
    local = client.LocalModel(path, runtime="savedmodel")
    reference = [p.label for p in local.classify(images)]
    files = []
    for i, image in enumerate(images):
        files.append(str(root / f"digit_{i}.{'png' if i % 2 else 'jpg'}"))
        open(files[-1], "wb").write(image)
    return {"root": root, "base": str(base), "path": path, "pixels": pixels, "truth": truth, "images": images,
            "reference": reference, "files": files, "labels": data.class_names}


@pytest.fixture(scope="module")
def server(exported):
    # exact artifacts only: the tests compare its answers with the SavedModel's label for label (the budget's own
    # choice is tested in test_auto_serves_a_low_precision_artifact_only_within_the_budget_...)
    with ModelServer(exported["base"], rest_port=0, grpc_port=0, poll_seconds=0.2, max_body_bytes=1 << 20,
                     budget=EXACT) as s:
        s.url = f"http://127.0.0.1:{s.rest_port}"
        s.target = f"127.0.0.1:{s.grpc_port}"
        yield s


def b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def post(server, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.url}/v1/models/{path}", data=data, timeout=60)


def test_the_reference_model_is_trained(exported):
    labels = exported["labels"]
    correct = sum(r == labels[t] for r, t in zip(exported["reference"], exported["truth"]))
    assert correct >= 20  # of 24: the answers the server must give are meaningful digits


def test_status_and_metadata_follow_tf_serving(server):
    status = requests.get(f"{server.url}/v1/models/{MODEL}").json()
    assert status == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(f"{server.url}/v1/models/{MODEL}/versions/1").json() == status
    meta = requests.get(f"{server.url}/v1/models/{MODEL}/metadata").json()
    assert meta["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serving_uint8", "serving_bytes", "classify", "probabilities"} <= set(signatures)
    assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [int(d["size"]) for d in images["tensor_shape"]["dim"]] == [-1, 32, 32, 1]
    assert signatures["serving_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_b64_png_and_jpeg_give_the_reference_answers(server, exported):
    body = {"signature_name": "serving_bytes", "instances": [b64(i) for i in exported["images"]]}
    response = post(server, f"{MODEL}:predict", body)
    assert response.status_code == 200
    rows = response.json()["predictions"]
    assert [r["labels"] for r in rows] == exported["reference"]
    for row in rows:
        assert set(row) == {"probabilities", "classes", "scores", "top_classes", "top_labels", "labels"}
        assert row["top_labels"][0] == row["labels"] and len(row["scores"]) == 5
        assert sum(row["probabilities"]) == pytest.approx(1, abs=1e-4)


def test_row_and_columnar_formats_agree(server, exported):
    pixels = exported["pixels"][:4].astype(float)
    row = post(server, f"{MODEL}:predict", {"instances": pixels.tolist()}).json()["predictions"]
    columnar = post(server, f"{MODEL}:predict", {"inputs": {"images": pixels.tolist()}}).json()["outputs"]
    np.testing.assert_allclose([r["probabilities"] for r in row], columnar["probabilities"], rtol=1e-6)
    assert [r["classes"] for r in row] == columnar["classes"]
    # one output left: the bare value, as TF Serving does
    only = post(server, f"{MODEL}:predict", {"inputs": pixels.tolist(), "output_filter": ["classes"]}).json()
    assert only == {"outputs": columnar["classes"]}
    named = post(server, f"{MODEL}:predict", {"instances": [{"images": p} for p in pixels.tolist()],
                                              "signature_name": "serving_uint8"}).json()["predictions"]
    assert [r["classes"] for r in named] == columnar["classes"]


def test_grpc_predict_metadata_and_status(server, exported):
    c = client.GrpcClient(server.target)
    response, out = c.predict(MODEL, {"image_bytes": np.array(exported["images"], dtype=object)},
                              signature="serving_bytes")
    assert [label.decode() for label in out["labels"]] == exported["reference"]
    assert response.model_spec.version.value == 1 and response.model_spec.signature_name == "serving_bytes"
    response, out = c.predict(MODEL, {"images": exported["pixels"][:3].astype(np.float32)},
                              output_filter=["probabilities"])
    assert list(out) == ["probabilities"] and out["probabilities"].shape == (3, 10)
    meta = c.metadata(MODEL)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(signatures)
    assert signatures.signature_def["serving_bytes"].inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    status = c.status(MODEL).model_version_status
    assert [(s.version, s.state) for s in status] == [(1, 30)]  # 30 = AVAILABLE
    assert [p.label for p in c.classify(MODEL, exported["images"][:6])] == exported["reference"][:6]


def test_classify_on_the_classification_signature(server, exported):
    images, reference = exported["images"][:5], exported["reference"][:5]
    body = {"signature_name": "classify", "examples": [{"image/encoded": b64(i)} for i in images]}
    results = post(server, f"{MODEL}:classify", body).json()["results"]
    assert [r[0][0] for r in results] == reference
    assert all(len(r) == 5 and r[0][1] >= r[1][1] for r in results)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, "classify"
    for image in images:
        request.input.example_list.examples.add().features.feature["image/encoded"].bytes_list.value.append(image)
    response = client.GrpcClient(server.target).prediction.Classify(request, timeout=60)
    assert [c.classes[0].label for c in response.result.classifications] == reference
    assert response.model_spec.version.value == 1


def test_grpc_errors_carry_tf_serving_codes(server):
    c = client.GrpcClient(server.target)
    stub = c.prediction
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 32, 32, 1), np.float64)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "float64" in err.value.details()
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(client.CnnkitError, match="NOT_FOUND"):
        c.status(MODEL, version=9)


BAD_REQUESTS = [
    ("lenet5:predict", "{not json", 400, "JSON"),
    ("lenet5:predict", {"signature": "x"}, 400, "instances"),
    ("lenet5:predict", {"instances": [[1, 2, 3]]}, 400, "shape"),
    ("lenet5:predict", {"instances": [[[[1]] * 32] * 32, [[[1]] * 31] * 32]}, 400, "ragged"),
    ("lenet5:predict", {"instances": [[[["a"]] * 32] * 32]}, 400, "numbers"),
    ("lenet5:predict", {"instances": [[[[0.5]] * 32] * 32], "signature_name": "serving_uint8"}, 400, "integers"),
    ("lenet5:predict", {"instances": [[[[300]] * 32] * 32], "signature_name": "serving_uint8"}, 400, "range"),
    ("lenet5:predict", {"instances": [{"b64": base64.b64encode(b"not an image").decode()}],
                        "signature_name": "serving_bytes"}, 400, "Unknown image file format"),
    ("lenet5:predict", {"instances": [{"b64": "%%%"}], "signature_name": "serving_bytes"}, 400, "base64"),
    ("lenet5:predict", {"instances": [[[[1]] * 32] * 32], "signature_name": "nope"}, 400, "nope"),
    ("lenet5:predict", {"instances": [[[[1]] * 32] * 32], "output_filter": ["nope"]}, 400, "nope"),
    ("lenet5:classify", {"examples": [{"x": 1}]}, 400, "classification signature"),
    ("lenet5:regress", {"examples": [{"x": 1}]}, 400, "regression"),
    ("nope:predict", {"instances": [1]}, 404, "Servable not found"),
    ("lenet5/versions/7:predict", {"instances": [1]}, 404, "Specific(lenet5, 7)"),
    ("lenet5/versions/x:predict", {"instances": [1]}, 400, "version"),
    ("lenet5:explode", {"instances": [1]}, 404, "Malformed request"),
]


@pytest.mark.parametrize("path,body,status,message", BAD_REQUESTS, ids=[f"{i}" for i in range(len(BAD_REQUESTS))])
def test_bad_requests_get_tf_serving_status_and_a_message(server, exported, path, body, status, message):
    response = post(server, path, body)
    assert response.status_code == status
    assert message in response.json()["error"]
    ok = post(server, f"{MODEL}:predict", {"signature_name": "serving_bytes", "instances": [b64(exported["images"][0])]})
    assert ok.status_code == 200  # still serving


def test_body_over_the_limit_is_refused_with_413(server):
    response = requests.post(f"{server.url}/v1/models/{MODEL}:predict", data=b" " * (2 << 20), timeout=60)
    assert response.status_code == 413 and "limit" in response.json()["error"]
    # a body where none is expected is held to the same limit (never buffered without bound)
    response = requests.get(f"{server.url}/v1/models/{MODEL}", data=b" " * (2 << 20), timeout=60)
    assert response.status_code == 413 and "limit" in response.json()["error"]
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:  # chunked, growing past it
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"%x\r\n%s\r\n" % (1 << 16, b" " * (1 << 16))
        for _ in range(20):
            sock.sendall(piece)
        sock.sendall(b"0\r\n\r\n")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413") and b"over the limit" in answer


def _raw_get(port, target):
    """One GET with the request target sent byte for byte (an HTTP client would normalise ``..`` away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_no_request_reaches_outside_the_export_base(exported, tmp_path):
    base = tmp_path / "exports"
    shutil.copytree(exported["path"], base / MODEL / "1")
    # models planted where traversal names from the export base (or its model folder) would reach them;
    # version 7 marks them: an answer that mentions it came from outside
    shutil.copytree(exported["path"], tmp_path / "secret" / "7")
    shutil.copytree(exported["path"], base / MODEL / "secret" / "7")
    secret = str(tmp_path / "secret").encode()
    targets = [b"/v1/models/../secret", b"/v1/models/%2e%2e/secret", b"/v1/models/%2E%2E%2Fsecret",
               b"/v1/models/..%2Fsecret", b"/v1/models/..%2f..%2f" + secret.lstrip(b"/").replace(b"/", b"%2F"),
               b"/v1/models/" + secret, b"/v1/models/%2F" + secret.lstrip(b"/").replace(b"/", b"%2F"),
               b"/v1/models/secret%00", b"/v1/models/lenet5%00/../../secret", b"/v1/models/lenet5/..%2Fsecret",
               b"/v1/models/lenet5%2Fsecret", b"/v1/models/lenet5/versions/../1", b"/v1/models/lenet5/versions/..%2F7",
               b"/v1/models/lenet5/versions/%2e%2e%2fsecret%2f7"]
    with ModelServer(str(base), rest_port=0, grpc_port=0, poll_seconds=5, budget=EXACT) as s:
        for target in targets:
            for suffix in (b"", b"/metadata"):
                status, body = _raw_get(s.rest_port, target + suffix)
                assert status in (400, 404), (target, suffix, status)
                assert b'"7"' not in body and b"AVAILABLE" not in body, (target, suffix)
        grpc_client = client.GrpcClient(f"127.0.0.1:{s.grpc_port}")
        for name in ("../secret", "%2e%2e/secret", str(tmp_path / "secret"), "secret\x00", "lenet5/secret",
                     "lenet5/../secret", "lenet5\x00/../../secret"):
            for version in (None, 7):
                with pytest.raises(client.CnnkitError, match="NOT_FOUND|INVALID_ARGUMENT"):
                    grpc_client.status(name, version)
        with pytest.raises(client.CnnkitError, match="NOT_FOUND"):
            grpc_client.status(MODEL, 7)
        assert grpc_client.status(MODEL)  # the real model still answers
        assert _raw_get(s.rest_port, b"/v1/models/lenet5")[0] == 200


def test_prometheus_metrics_at_tf_serving_path(server, exported):
    client.RestClient(server.url).classify(MODEL, exported["images"][:2])
    post(server, "nope:predict", {"instances": [1]})
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
    assert re.search(r':tensorflow:serving:request_count_total\{entrypoint="REST",model_name="lenet5",status="OK"\} '
                     r'[1-9]', text)
    assert 'status="NOT_FOUND"' in text
    assert re.search(r':tensorflow:serving:request_latency_bucket\{API="predict",entrypoint="REST",le="\+Inf",'
                     r'model_name="lenet5"\} [1-9]', text)


def _publish(base, source, version):
    """Drop a version in the way `cnnkit export` does: build beside it, then one rename."""
    tmp = os.path.join(base, f".partial-{version}")
    shutil.copytree(source, tmp)
    os.rename(tmp, os.path.join(base, str(version)))


def test_versions_by_request_broken_versions_and_retirement(exported, tmp_path):
    base = tmp_path / MODEL
    _publish(str(base), exported["path"], 1)
    with ModelServer(str(base), rest_port=0, grpc_port=0, poll_seconds=0.1, budget=EXACT) as s:  # one model's folder
        rest = client.RestClient(f"http://127.0.0.1:{s.rest_port}")
        os.makedirs(base / "3")
        (base / "3" / "saved_model.pb").write_bytes(b"garbage")
        _publish(str(base), exported["path"], 2)
        deadline = time.time() + 30
        while time.time() < deadline and len(rest.status(MODEL)["model_version_status"]) < 3:
            time.sleep(0.1)
        states = {int(v["version"]): v for v in rest.status(MODEL)["model_version_status"]}
        assert states[3]["state"] == "END" and "failed to load" in states[3]["status"]["error_message"]
        assert states[2]["state"] == "AVAILABLE" and states[1]["state"] == "AVAILABLE"
        grpc_client = client.GrpcClient(f"127.0.0.1:{s.grpc_port}")
        for asked, served in ((None, 2), (1, 1), (2, 2)):
            response, _ = grpc_client.predict(MODEL, {"images": exported["pixels"][:1].astype(np.float32)}, asked)
            assert response.model_spec.version.value == served
        assert rest.classify(MODEL, exported["images"][:2], version=1)[0].label == exported["reference"][0]
        # the broken version is fixed in place: it loads; keep_versions=2 then retires version 1
        shutil.rmtree(base / "3")
        _publish(str(base), exported["path"], 3)
        _wait_for(rest, 1, "END")
        assert rest.status(MODEL, 3)["model_version_status"][0]["state"] == "AVAILABLE"
        assert rest.status(MODEL, 1)["model_version_status"][0]["state"] == "END"
        with pytest.raises(client.CnnkitError, match="404"):
            rest.classify(MODEL, exported["images"][:1], version=1)


def _wait_for(rest, version, state, timeout=120):
    deadline = time.time() + timeout
    while True:
        try:
            if rest.status(MODEL, version)["model_version_status"][0]["state"] == state:
                return
        except client.CnnkitError:  # 404 until the watcher has seen the version
            pass
        assert time.time() < deadline, f"version {version} never reached {state}"
        time.sleep(0.05)


def test_every_model_under_the_base_is_served(exported, tmp_path):
    for name in ("digits", "lenet5"):
        _publish(str(tmp_path / name), exported["path"], 1)
    (tmp_path / "notes").mkdir()  # not a model: ignored
    with ModelServer(str(tmp_path), rest_port=0, grpc_port=None, budget=EXACT) as s:
        assert s.repository.names() == ["digits", "lenet5"]
        rest = client.RestClient(f"http://127.0.0.1:{s.rest_port}")
        for name in ("digits", "lenet5"):
            assert [p.label for p in rest.classify(name, exported["images"][:3])] == exported["reference"][:3]


def _answers(url, exported):
    """What a server at ``url`` answers for the test images: serving_bytes rows, classify results, and the
    serving_default / serving_uint8 outputs for their pixels."""
    def call(verb, body):
        response = requests.post(f"{url}/v1/models/{MODEL}:{verb}", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    pixels = exported["pixels"][:6].astype(float).tolist()
    return {"bytes": call("predict", {"signature_name": "serving_bytes",
                                      "instances": [b64(i) for i in exported["images"]]})["predictions"],
            "classify": call("classify", {"signature_name": "classify",
                                          "examples": [{"image/encoded": b64(i)} for i in exported["images"][:6]]}),
            "float": call("predict", {"inputs": pixels})["outputs"],
            "uint8": call("predict", {"signature_name": "serving_uint8", "inputs": pixels})["outputs"]}


def test_the_server_answers_the_same_on_every_runtime(exported, server):
    from export.local import pick_artifact
    from export.parity import FLOAT_TOLERANCE
    from serving.runtime import choices

    # auto (--exact) runs the fastest exact artifact of the parity report, not the SavedModel
    fastest = pick_artifact(exported["path"], "auto", EXACT)[0]
    assert server.repository.runtimes() == {MODEL: {1: fastest}} and fastest != "savedmodel"
    found = {}
    for runtime in choices()[1:]:
        with ModelServer(exported["base"], rest_port=0, grpc_port=None, runtime=runtime) as s:
            assert s.repository.runtimes() == {MODEL: {1: exact_kinds()[runtime]}}
            found[runtime] = _answers(f"http://127.0.0.1:{s.rest_port}", exported)
    assert sorted(found) == ["onnx", "openvino", "savedmodel", "tflite"]
    reference = found.pop("savedmodel")
    assert [r["labels"] for r in reference["bytes"]] == exported["reference"]
    for runtime, answers in found.items():
        for key in ("labels", "top_labels", "classes", "top_classes"):
            assert [r[key] for r in answers["bytes"]] == [r[key] for r in reference["bytes"]], (runtime, key)
        for key in ("probabilities", "scores"):
            np.testing.assert_allclose([r[key] for r in answers["bytes"]], [r[key] for r in reference["bytes"]],
                                       atol=FLOAT_TOLERANCE, err_msg=f"{runtime} {key}")
        assert [[c[0] for c in r] for r in answers["classify"]["results"]] == \
            [[c[0] for c in r] for r in reference["classify"]["results"]], runtime
        for signature in ("float", "uint8"):
            assert answers[signature]["top_labels"] == reference[signature]["top_labels"], runtime
            np.testing.assert_allclose(answers[signature]["probabilities"], reference[signature]["probabilities"],
                                       atol=FLOAT_TOLERANCE, err_msg=f"{runtime} {signature}")


def test_a_runtime_the_export_lacks_fails_that_version_and_auto_falls_back_to_the_saved_model(exported, tmp_path):
    from export.local import pick_artifact

    base = tmp_path / MODEL
    _publish(str(base), exported["path"], 1)
    meta_path = base / "1" / "export.json"
    meta = json.loads(meta_path.read_text())
    meta["artifacts"] = [a for a in meta["artifacts"] if a["kind"] != "onnx"]
    meta_path.write_text(json.dumps(meta))
    _publish(str(base), exported["path"], 2)
    os.remove(base / "2" / "report.json")  # no parity report: nothing says another artifact is exact
    _publish(str(base), exported["path"], 3)  # every file but the SavedModel damaged
    for artifact in json.loads((base / "3" / "export.json").read_text())["artifacts"]:
        if artifact["kind"] != "savedmodel":
            open(base / "3" / artifact["path"], "r+b").truncate(100)
    with ModelServer(str(base), rest_port=0, grpc_port=None, runtime="onnx", keep_versions=3) as s:
        states = {v: (state, message) for v, state, _, message in s.repository.status(MODEL)}
        assert states[1][0] == "END" and "has no onnx artifact; export one with `cnnkit export RUN --onnx`" in \
            states[1][1]
        assert states[2][0] == "AVAILABLE" and states[3][0] == "END" and "cannot load" in states[3][1]
        assert s.repository.runtimes() == {MODEL: {2: "onnx"}}
    with ModelServer(str(base), rest_port=0, grpc_port=None, keep_versions=3, budget=EXACT) as s:
        fastest = pick_artifact(str(base / "1"), "auto", EXACT)[0]
        assert fastest != "savedmodel"
        assert s.repository.runtimes() == {MODEL: {1: fastest, 2: "savedmodel", 3: "savedmodel"}}
        rest = client.RestClient(f"http://127.0.0.1:{s.rest_port}")
        for version in (1, 2, 3):
            assert [p.label for p in rest.classify(MODEL, exported["images"][:4], version=version)] == \
                exported["reference"][:4]


def test_auto_serves_a_low_precision_artifact_only_within_the_budget_and_says_which_and_why(exported, tmp_path):
    from export.choice import Budget

    base = tmp_path / MODEL
    _publish(str(base), exported["path"], 1)
    report_path = base / "1" / "report.json"
    report = json.loads(report_path.read_text())
    keras_accuracy = report["artifacts"][0]["accuracy"]
    for row in report["artifacts"]:  # the dynamic-range file 90x faster than every exact one, and as right
        row["latency_ms"] = {"tflite_dynamic": 0.01, "tflite_float32": 0.9}.get(row["artifact"], 1.0)
        if row["artifact"] == "tflite_dynamic":
            row["top1_agreement"], row["accuracy"] = 1.0, keras_accuracy
    report_path.write_text(json.dumps(report))
    with ModelServer(str(base), rest_port=0, grpc_port=None) as s:
        url = f"http://127.0.0.1:{s.rest_port}"
        assert s.repository.runtimes() == {MODEL: {1: "tflite-dynamic"}}
        runtime = requests.get(f"{url}/v1/models/{MODEL}/versions/1/metadata", timeout=30).json()["metadata"]["runtime"]
        assert runtime["artifact"] == "tflite-dynamic"
        assert runtime["reason"].startswith("tflite_dynamic: the fastest within the budget (top-1 agreement >= 99.5%")
        assert "0.01 ms at batch 1 against 0.90 ms for the fastest exact artifact (tflite_float32)" in \
            runtime["reason"]
        metrics = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=30).text
        assert f'cnnkit_model_runtime{{model_name="{MODEL}",runtime="tflite-dynamic",version="1"}} 1.0' in metrics
        labels = [p.label for p in client.RestClient(url).classify(MODEL, exported["images"])]
        # its real answers: int8 weights, so at most one of the 24 digits may differ from the SavedModel's
        assert sum(a != b for a, b in zip(labels, exported["reference"])) <= 1
    with ModelServer(str(base), rest_port=0, grpc_port=None, budget=Budget(exact=True)) as s:
        chosen = s.repository.runtimes(reasons=True)[MODEL][1]
        assert chosen["runtime"] == "tflite-float32"
        assert chosen["reason"].startswith("tflite_float32: the fastest exact artifact, 0.90 ms at batch 1")
    # one flip too many in the report's 200+ held-out digits: the exact artifact answers, and the reason says why
    dynamic = next(r for r in report["artifacts"] if r["artifact"] == "tflite_dynamic")
    dynamic["top1_agreement"] = 0.99
    report_path.write_text(json.dumps(report))
    with ModelServer(str(base), rest_port=0, grpc_port=None) as s:
        chosen = s.repository.runtimes(reasons=True)[MODEL][1]
        assert chosen["runtime"] == "tflite-float32"
        assert "faster but outside the budget: tflite_dynamic (top-1 agreement 99.0% < 99.5%)" in chosen["reason"]


def test_32_concurrent_clients_and_a_hot_swap_lose_no_request(exported, tmp_path):
    """32 clients over REST and gRPC with batching on; while they run, version 2 is published and
    version 1 deleted. Each client makes at least 12 requests and goes on until the swap is done:
    every request succeeds with the right answer, and batches form."""
    base = tmp_path / "exports"
    _publish(str(base / MODEL), exported["path"], 1)
    batching = {"max_batch_size": 16, "timeout_s": 0.005, "threads": 2}
    with ModelServer(str(base), rest_port=0, grpc_port=0, batching=batching, poll_seconds=0.05, budget=EXACT) as s:
        url, target = f"http://127.0.0.1:{s.rest_port}", f"127.0.0.1:{s.grpc_port}"
        images, reference = exported["images"], exported["reference"]
        versions, failures, counts = set(), [], []
        started, swapped = threading.Barrier(33), threading.Event()

        def worker(n):
            rng = random.Random(n)
            rest, rpc = client.RestClient(url), client.GrpcClient(target)
            started.wait()
            done, deadline = 0, time.time() + 300
            while (done < 12 or not swapped.is_set()) and time.time() < deadline:
                i = rng.randrange(len(images))
                try:
                    if rng.random() < 0.5:
                        (p,) = rest.classify(MODEL, [images[i]])
                    else:
                        response, out = rpc.predict(MODEL, {"image_bytes": np.array([images[i]], dtype=object)},
                                                    signature="serving_bytes")
                        versions.add(response.model_spec.version.value)
                        p = client.Prediction(out["labels"][0].decode(), 0, [], MODEL)
                    if p.label != reference[i]:
                        failures.append(f"image {i}: {p.label} != {reference[i]}")
                except Exception as err:
                    failures.append(repr(err))
                done += 1
            counts.append(done)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(worker, n) for n in range(32)]
            started.wait()
            rest = client.RestClient(url)
            try:
                _publish(str(base / MODEL), exported["path"], 2)
                _wait_for(rest, 2, "AVAILABLE")
                shutil.rmtree(base / MODEL / "1")
                _wait_for(rest, 1, "END")
            finally:
                swapped.set()  # the clients stop even if the swap failed
            for future in futures:
                future.result()
        assert failures == []
        assert len(counts) == 32 and min(counts) >= 12
        status = rest.status(MODEL)["model_version_status"]
        assert {(v["version"], v["state"]) for v in status} == {("2", "AVAILABLE"), ("1", "END")}
        assert versions == {1, 2}  # answered by both versions, across the swap
        text = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=30).text
        count = float(re.search(r'processed_batch_size_count\{model_name="lenet5"\} (\S+)', text).group(1))
        assert count < sum(counts)  # fewer model calls than requests: requests were batched


def test_a_corrupt_image_in_a_batch_fails_alone(exported, monkeypatch):
    from serving.batching import Batcher

    failed_batches = []  # sizes of the batches that failed as a whole (then were split)
    real_finish = Batcher._finish

    def finish(self, batch, size):
        if len(batch) > 1:
            try:
                self._run([task.inputs for task in batch], size)
            except Exception:  # noqa: BLE001 - the corrupt image's decode error
                failed_batches.append(len(batch))
        return real_finish(self, batch, size)

    monkeypatch.setattr(Batcher, "_finish", finish)
    with ModelServer(exported["base"], rest_port=0, grpc_port=None,
                     batching={"max_batch_size": 32, "timeout_s": 1.0, "threads": 1}) as s:
        url = f"http://127.0.0.1:{s.rest_port}/v1/models/{MODEL}:predict"
        bodies = [{"signature_name": "serving_bytes", "instances": [b64(img)]} for img in exported["images"][:7]]
        bodies.insert(3, {"signature_name": "serving_bytes", "instances": [b64(b"broken")]})
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda b: requests.post(url, json=b, timeout=60), bodies))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 200, 400, 200, 200, 200, 200]
    labels = [r.json()["predictions"][0]["labels"] for r in responses if r.status_code == 200]
    assert labels == exported["reference"][:7]
    assert failed_batches and max(failed_batches) > 1  # the corrupt image did share a batch, which was split


def test_sigterm_finishes_requests_in_flight(exported, monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)  # as a user's shell has it: serving's default applies
    # a long batch timeout keeps the request in flight while SIGTERM arrives
    proc, port, _, log = spawn_server(exported["base"], "--batching", "--batch-timeout-ms", "3000")
    try:
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
        body = {"signature_name": "serving_bytes", "instances": [b64(exported["images"][0])]}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(requests.post, url, json=body, timeout=60)
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200
        assert response.json()["predictions"][0]["labels"] == exported["reference"][0]
        assert proc.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):
            requests.post(url, json=body, timeout=5)
    finally:
        proc.kill()
    text = open(log).read()
    assert "received SIGTERM" in text and "oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0)" in text


@pytest.mark.parametrize("user_value, expected", [(None, "0"), ("1", "1"), ("0", "0")])
def test_serving_turns_onednn_off_unless_the_user_set_it(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    code = ("import keras_cnns; from cnnkit._quiet import import_tensorflow; import_tensorflow(serving=True); "
            "from keras_cnns.utils import onednn_enabled; print(int(onednn_enabled()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == [expected], out.stderr[-2000:]  # what TensorFlow itself runs with


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=600)


def test_predict_cli_runs_every_artifact_and_the_servers(exported, server):
    files, reference = exported["files"][:4], exported["reference"][:4]
    version = exported["path"]
    runs = [([exported["base"] + "/lenet5", "--exact"], None)]
    runs += [([version, "--runtime", runtime], kind) for runtime, kind in exact_kinds().items()]
    runs += [([os.path.join(version, "tflite", "model_float32.tflite")], "tflite"),
             ([os.path.join(version, "onnx", "model.onnx")], "onnx"),
             ([os.path.join(version, "openvino", "model.xml")], "openvino")]
    for i, (args, kind) in enumerate(runs):  # the first in a real process, the others in this one (cnnkit_here)
        out = (cli if i == 0 else cnnkit_here)("predict", *files, "--model", *args, "--json")
        assert out.returncode == 0, out.stderr
        predictions = json.loads(out.stdout)["predictions"]
        assert [p["label"] for p in predictions] == reference, args
        assert kind is None or {p["runtime"] for p in predictions} == {kind}, args
    for options in (["--server", server.url], ["--server", server.target, "--grpc"]):
        out = cnnkit_here("predict", *files, "--model", MODEL, "--top-k", "2", "--json", *options)
        predictions = json.loads(out.stdout)["predictions"]
        assert [p["label"] for p in predictions] == reference and len(predictions[0]["top"]) == 2
    out = cli("predict", files[0], "--model", MODEL, "--server", server.url)
    assert out.stdout.split("\n")[2].split()[1] == reference[0]  # the table's first row


def test_local_predict_runs_the_fastest_exact_artifact_of_the_parity_report(exported, tmp_path):
    version = tmp_path / "lenet5" / "1"
    shutil.copytree(exported["path"], version)
    report = json.loads((version / "report.json").read_text())
    exact = [r for r in report["artifacts"] if r["kind"] in exact_kinds().values()]
    fastest = min(exact, key=lambda r: r["latency_ms"])
    assert client.LocalModel(str(version), budget=EXACT).kind == fastest["kind"]
    # an artifact that failed parity is never chosen, nor with --exact a quantized one however fast
    assert "tflite-dynamic" in {r["kind"] for r in report["artifacts"]}
    for row in report["artifacts"]:
        row["ok"] = row is not fastest
        if row["kind"] == "tflite-dynamic":
            row["latency_ms"], row["top1_agreement"] = 1e-6, 1.0
            row["accuracy"] = report["artifacts"][0]["accuracy"]
    (version / "report.json").write_text(json.dumps(report))
    second = min((r for r in exact if r is not fastest), key=lambda r: r["latency_ms"])
    local = client.LocalModel(str(version), budget=EXACT)
    assert local.kind == second["kind"]
    assert [p.label for p in local.classify(exported["images"][:6])] == exported["reference"][:6]
    # within the default budget (no flip, no accuracy lost) the quantized file is taken: predict says so
    assert client.LocalModel(str(version)).kind == "tflite-dynamic"
    out = cnnkit_here("predict", exported["files"][0], "--model", str(version), "--json")
    assert json.loads(out.stdout)["runtime"]["artifact"] == "tflite_dynamic"
    out = cnnkit_here("predict", exported["files"][0], "--model", str(version))
    assert "runs on tflite_dynamic: the fastest within the budget" in out.stderr
    out = cnnkit_here("predict", exported["files"][0], "--model", str(version), "--exact", "--json")
    assert json.loads(out.stdout)["runtime"]["artifact"] == second["artifact"]
    # an export without its report (or a bare SavedModel) runs the SavedModel
    (version / "report.json").unlink()
    assert client.LocalModel(str(version)).kind == "savedmodel"
    shutil.rmtree(version / "onnx")
    (version / "export.json").write_text(json.dumps(
        {**json.loads((version / "export.json").read_text()), "artifacts": [{"artifact": "saved_model",
                                                                              "kind": "savedmodel", "path": ""}]}))
    with pytest.raises(client.CnnkitError, match="has no onnx artifact; export one with `cnnkit export RUN --onnx`"):
        client.LocalModel(str(version), runtime="onnx")
    with pytest.raises(client.CnnkitError, match="--runtime chooses among an export's artifacts"):
        client.LocalModel(os.path.join(exported["path"], "onnx", "model.onnx"), runtime="tflite")


def test_predict_passes_over_a_broken_newest_version_and_says_so(exported, tmp_path):
    model_dir = tmp_path / "lenet5"
    shutil.copytree(exported["path"], model_dir / "1")
    shutil.copytree(exported["path"], model_dir / "2")
    for root, _, files in os.walk(model_dir / "2"):  # every artifact of version 2 damaged, its reports intact
        for name in files:
            if not name.endswith(".json") and not name.endswith(".md"):
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(os.path.getsize(os.path.join(root, name)) // 3)
    out = cli("predict", exported["files"][0], "--model", str(model_dir), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)["predictions"][0]
    assert result["version"] == 1 and result["label"] == exported["reference"][0]
    assert "passed over the broken version 2" in out.stderr and "using version 1" in out.stderr
    shutil.rmtree(model_dir / "1")
    out = cli("predict", exported["files"][0], "--model", str(model_dir))
    assert out.returncode == 2 and "no version of" in out.stderr and "Traceback" not in out.stderr


def test_predict_cli_reports_bad_input_and_keeps_the_rest(exported, server, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    for options in ([], ["--server", server.url]):
        model = MODEL if options else exported["base"]
        out = cli("predict", exported["files"][0], str(broken), "--model", model, "--json", *options)
        assert out.returncode == 2
        result = json.loads(out.stdout)
        assert [p["label"] for p in result["predictions"]] == exported["reference"][:1]
        assert len(result["errors"]) == 1 and "broken.png" in result["errors"][0]
        assert ("in none of the image formats JPEG, PNG, GIF, BMP, WebP" if not options
                else "Unknown image file format") in result["errors"][0]
    for args, message in ((["--model", str(tmp_path / "missing")], "does not exist"),
                          (["--model", MODEL, "--server", "http://127.0.0.1:1"], "nothing answers there"),
                          (["--model", MODEL, "--server", f"http://127.0.0.1:{server.grpc_port}"],
                           "does not speak REST (HTTP/1.1): is this the gRPC port?"),
                          (["--model", "nope", "--server", server.url], "404"),
                          (["--model", MODEL, "--grpc"], "--grpc needs --server"),
                          (["--model", MODEL, "--server", server.url, "--runtime", "onnx"], "--runtime picks a local"),
                          (["--model", MODEL, "--server", server.url, "--exact"], "a server has its own"),
                          (["--model", exported["base"], "--exact", "--max-accuracy-drop", "1"],
                           "--exact serves float32 artifacts only")):
        out = cnnkit_here("predict", exported["files"][0], *args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
        assert "Max retries" not in out.stderr and "\\x00" not in out.stderr  # the library's words, raw bytes


def _listening_addresses(port):
    """The addresses a socket listens on at ``port`` (from /proc/net/tcp and tcp6; IPv4-mapped shown as IPv4)."""
    import ipaddress

    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if fields[3] != "0A" or int(hex_port, 16) != port:
                    continue
                raw = bytes.fromhex(address)  # little-endian 32-bit words
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4)))
                found.append(str(getattr(ip, "ipv4_mapped", None) or ip))
    return found


def test_serve_cli_binds_loopback_limits_bodies_and_bench_serve_measures_it(exported):
    proc, port, grpc_port, _ = spawn_server(exported["base"], "--max-body-mb", "1", "--runtime", "onnx")
    try:
        assert proc.ready["runtimes"] == {MODEL: {"1": {"runtime": "onnx", "reason": "--runtime onnx"}}}
        assert _listening_addresses(port) == ["127.0.0.1"]  # not reachable from other machines by default
        assert _listening_addresses(grpc_port) == ["127.0.0.1"]
        url = f"http://127.0.0.1:{port}"
        big = requests.post(f"{url}/v1/models/{MODEL}:predict", data=b'{"instances": [' + b"0," * 700_000 + b"0]}",
                            headers={"Content-Type": "application/json"}, timeout=60)
        assert big.status_code == 413  # 1.4 MB over --max-body-mb 1
        out = cli("bench", "serve", url, "--model", MODEL, "--concurrency", "1,4", "--requests", "5", "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        results = json.loads(out.stdout)["results"]
        assert [(r["concurrency"], r["requests"], r["errors"]) for r in results] == [(1, 5, 0), (4, 20, 0)]
        for r in results:  # a real server answered: a rate, and latency percentiles in order
            assert r["rps"] > 0 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    finally:
        proc.kill()
        proc.wait()


def test_serve_cli_refuses_an_empty_base(tmp_path):
    out = cli("serve", str(tmp_path), "--port", "0", "--grpc-port", "0")
    assert out.returncode == 2 and "no servable model" in out.stderr


def test_emitted_configs_parse_with_tf_serving_protos(exported, tmp_path):
    out = cli("serve", exported["base"], "--emit-config", "--output", str(tmp_path / "tfs"), "--keep-versions", "3",
              "--max-batch-size", "64")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no TensorFlow start-up chatter
    parsed = config.load(str(tmp_path / "tfs"))
    (entry,) = parsed["models.config"].model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (MODEL, "/models/lenet5", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 3
    batching = parsed["batching_parameters.txt"]
    assert batching.max_batch_size.value == 64 and batching.batch_timeout_micros.value == 2000
    assert parsed["monitoring.config"].prometheus_config.enable
    assert parsed["monitoring.config"].prometheus_config.path == "/monitoring/prometheus/metrics"
    service = parsed["docker-compose.yml"]["services"]["tfserving"]
    assert service["volumes"] == [f"{os.path.abspath(exported['base'])}:/models:ro"]
    container = parsed["k8s/deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/lenet5", "port": 8501}
    assert parsed["k8s/hpa.yaml"]["spec"]["scaleTargetRef"]["name"] == parsed["k8s/deployment.yaml"]["metadata"]["name"]
    assert {p["port"] for p in parsed["k8s/service.yaml"]["spec"]["ports"]} == {8500, 8501}
    web = parsed["docker-compose.yml"]["services"]["web"]  # the model page beside TF Serving (run by the page's test)
    assert web["ports"] == ["8080:80"] and "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in web["volumes"]
    assert (tmp_path / "tfs" / "web" / "index.html").read_bytes() == open(config.PAGE, "rb").read()
    dockerfile = open(tmp_path / "tfs" / "Dockerfile").read()
    from importlib.metadata import version

    assert f"ARG TF_SERVING_VERSION={version('tensorflow-serving-api')}" in dockerfile  # pinned to our TF
    for flag in ("--model_config_file=/config/models.config", "--batching_parameters_file=",
                 "--monitoring_config_file="):
        assert flag in dockerfile


def test_config_parsing_catches_a_typo(exported, tmp_path):
    config.emit(exported["base"], str(tmp_path))
    path = tmp_path / "batching_parameters.txt"
    path.write_text(path.read_text().replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(Exception, match="max_batch_sise"):
        config.load(str(tmp_path))
    with pytest.raises(text_format.ParseError):
        tfserving_protos.parse("prometheus_config { enable: maybe }", tfserving_protos.MonitoringConfig)


def _docker_unavailable():
    if not shutil.which("docker"):
        return "docker is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    return None if probe.returncode == 0 else "the Docker daemon is not reachable (docker info failed)"


@pytest.mark.skipif(_docker_unavailable() is not None, reason=str(_docker_unavailable()))
def test_real_tf_serving_container_answers_the_same_clients(exported, tmp_path):
    folder = str(tmp_path / "tfs")
    config.emit(exported["base"], folder)
    tag = "cnnkit-tfserving:test"
    subprocess.run(["docker", "build", "-t", tag, folder], check=True, capture_output=True)
    run = subprocess.run(["docker", "run", "-d", "--rm", "-p", "127.0.0.1::8501", "-p", "127.0.0.1::8500", "-v",
                          f"{os.path.abspath(exported['base'])}:/models:ro", tag], check=True, capture_output=True,
                         text=True)
    container = run.stdout.strip()
    try:
        ports = {p: subprocess.run(["docker", "port", container, p], capture_output=True, text=True,
                                   check=True).stdout.split(":")[-1].strip() for p in ("8501", "8500")}
        rest = client.RestClient(f"http://127.0.0.1:{ports['8501']}")
        deadline = time.time() + 120
        while True:
            try:
                if rest.status(MODEL)["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except client.CnnkitError:
                pass
            assert time.time() < deadline, "TF Serving did not load the model"
            time.sleep(1)
        assert [p.label for p in rest.classify(MODEL, exported["images"])] == exported["reference"]
        rpc = client.GrpcClient(f"127.0.0.1:{ports['8500']}")
        assert [p.label for p in rpc.classify(MODEL, exported["images"])] == exported["reference"]
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium (apt-get install chromium), headless, driven by Playwright; no browser download."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "the model page's tests need Debian's chromium: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


def test_the_model_page_classifies_png_and_jpeg_as_cnnkit_predict_does_follows_new_versions_and_shows_errors(
        exported, browser, tmp_path):
    base = tmp_path / "exports" / MODEL
    _publish(str(base), exported["path"], 1)
    png, jpeg = exported["files"][1], exported["files"][2]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    expected = {os.path.basename(path): p.label for path, p in client.predict_files([png, jpeg], exported["path"])}
    with ModelServer(str(tmp_path / "exports"), rest_port=0, grpc_port=None, poll_seconds=0.2, budget=EXACT) as s:
        page = browser.new_page()
        console_errors = []
        page.on("pageerror", lambda err: console_errors.append(str(err)))
        page.goto(f"http://127.0.0.1:{s.rest_port}/")
        assert page.url.endswith(f"/?models={MODEL}")  # the server named its models
        page.wait_for_selector("body[data-ready]")
        assert page.text_content(f'tr[data-model="{MODEL}"][data-version="1"] .state') == "AVAILABLE"

        page.set_input_files("#file", [png, jpeg])
        for name, label in expected.items():
            top1 = page.wait_for_selector(f'.result[data-file="{name}"] .bar.top1 .label')
            assert top1.text_content() == label
            assert page.get_attribute(f'.result[data-file="{name}"]', "data-version") == "1"
            assert re.search(r"version 1 · [\d.]+ ms", page.text_content(f'.result[data-file="{name}"] .meta'))
        assert len(page.query_selector_all(f'.result[data-file="{os.path.basename(png)}"] .bar')) == 5

        page.set_input_files("#file", [str(corrupt)])
        error = page.wait_for_selector('.result[data-file="corrupt.png"] .error').text_content()
        assert "image" in error.lower() and len(error) > 20  # the server's own message, not a blank
        assert error == requests.post(f"http://127.0.0.1:{s.rest_port}/v1/models/{MODEL}/versions/1:predict", json={
            "signature_name": "serving_bytes", "output_filter": ["top_labels", "scores"],
            "instances": [b64(corrupt.read_bytes())]}, timeout=30).json()["error"]

        _publish(str(base), exported["path"], 2)  # a new version dropped in: listed, and then it answers
        page.wait_for_selector(f'tr[data-model="{MODEL}"][data-version="2"] .state.AVAILABLE', timeout=20_000)
        page.set_input_files("#file", [png])
        page.wait_for_selector(f'.result[data-file="{os.path.basename(png)}"][data-version="2"]')

        # the metrics panel reads the server's own numbers: requests were made, so a rate and latencies show
        page.wait_for_function("document.getElementById('latency').textContent.includes('/')", timeout=10_000)
        assert re.fullmatch(r"[\d.]+ / [\d.]+ / [\d.]+", page.text_content("#latency"))

        # the same page, as `--emit-config` deploys it in front of TF Serving: nginx serves it and passes the
        # REST API through (here to this server, which speaks the same API)
        emitted = tmp_path / "tfserving"
        config.emit(str(tmp_path / "exports"), str(emitted))
        with _nginx(emitted, s.rest_port, tmp_path / "nginx") as port:
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.url.endswith(f"/?models={MODEL}")
            page.wait_for_selector("body[data-ready]")
            page.set_input_files("#file", [png])
            name = os.path.basename(png)
            assert page.wait_for_selector(f'.result[data-file="{name}"] .bar.top1 .label').text_content() == \
                expected[name]
        assert not console_errors
        page.close()


@contextlib.contextmanager
def _nginx(emitted, rest_port, prefix):
    """Debian's nginx running the emitted site, its upstream pointed at ``rest_port``; yields its port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "the model page's test through nginx needs Debian's nginx: apt-get install nginx"
    prefix.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = (emitted / "nginx.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};").replace(
        "root /usr/share/nginx/html;", f"root {emitted / 'web'};").replace("tfserving:8501", f"127.0.0.1:{rest_port}")
    temp = " ".join(f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        f"daemon off; master_process off; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'};\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{ include /etc/nginx/mime.types; access_log off; {temp}\n{site}}}\n")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (prefix / "error.log").read_text()
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
