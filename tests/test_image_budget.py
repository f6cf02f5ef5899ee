"""Decompression bombs: an encoded image whose header declares more pixels than the export's budget is
refused by the SavedModel itself (so under TF Serving too) before it is decoded: cheaply, with a 400."""
import base64
import io
import re
import resource
import struct
import zlib

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from export import export as run_export
from export.savedmodel import gif_frames, image_size
from serving.server import ModelServer


def _pil(fmt, size=(53, 37), **options):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buffer, fmt, **options)
    return buffer.getvalue()


def _png(width, height, pixel_data=b"\0" * 4000):
    """A 1 KB PNG that declares width x height: its IDAT holds a few compressed rows only."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixel_data)) + \
        chunk(b"IEND", b"")


def _jpeg(width, height):
    data = bytearray(_pil("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif(width, height):
    data = bytearray(_pil("GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _bmp(width, height):
    data = bytearray(_pil("BMP"))
    data[18:26] = struct.pack("<ii", width, -height)  # negative: a top-down bitmap
    return bytes(data)


def _webp(width, height):
    data = bytearray(_pil("WEBP", lossless=True))
    bits = struct.unpack("<I", bytes(data[21:25]))[0] & ~((1 << 28) - 1)
    data[21:25] = struct.pack("<I", bits | (width - 1) | ((height - 1) << 14))
    return bytes(data)


BOMBS = {"png": _png(20000, 20000), "jpeg": _jpeg(60000, 60000), "gif": _gif(65535, 65535),
         "bmp": _bmp(30000, 30000), "webp": _webp(16384, 16384)}


@pytest.mark.parametrize("fmt, make", [("png", _png), ("jpeg", _jpeg), ("gif", _gif), ("bmp", _bmp), ("webp", _webp)])
def test_the_header_size_is_read_without_decoding(fmt, make):
    assert [int(v) for v in image_size(tf.constant(make(1234, 987)))] == [1234, 987]
    assert len(make(1234, 987)) < 8192  # a few KB: the bombs below are this small too


def test_truncated_and_unknown_headers_read_as_zero_or_fail_cleanly():
    assert [int(v) for v in image_size(tf.constant(b""))] == [0, 0]
    assert [int(v) for v in image_size(tf.constant(b"GIF8"))] == [0, 0]
    assert [int(v) for v in image_size(tf.constant(b"not an image at all"))] == [0, 0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="JPEG"):
        image_size(tf.constant(b"\xff\xd8\xff\xe0 truncated"))


def _animation(frames, size=(100, 80)):
    images = [Image.fromarray(np.full(size[::-1], (i * 37) % 256, np.uint8)).convert("P") for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=frames > 1, append_images=images[1:], duration=10, loop=0)
    return buffer.getvalue()


def test_gif_frames_are_counted_by_walking_the_blocks():
    for frames in (1, 2, 7):
        assert int(gif_frames(tf.constant(_animation(frames)), 100)) == frames
    assert int(gif_frames(tf.constant(_animation(150)), 100)) == 101  # stops counting past the limit
    assert int(gif_frames(tf.constant(b"GIF89a"), 100)) == 0  # truncated: nothing to walk
    assert int(gif_frames(tf.constant(_animation(3)[:60]), 100)) == 1


@pytest.fixture(scope="module")
def budget_export(tmp_path_factory):
    """An untrained RGB zoo model exported with a 1 MP budget (SavedModel only)."""
    base = tmp_path_factory.mktemp("budget")
    path, _ = run_export("squeezenet1_1", output=str(base), formats=["saved_model"], input_size=64, max_megapixels=1,
                         weights="none")
    return str(base), path


def test_the_savedmodel_itself_refuses_bombs_before_decoding(budget_export):
    """Plain TensorFlow, as TF Serving runs it: InvalidArgument naming the size, little memory, no decode."""
    serve = tf.saved_model.load(budget_export[1]).signatures["serving_bytes"]
    ok = serve(image_bytes=tf.constant([_pil("PNG", (1000, 1000)), _pil("JPEG", (1000, 1000))]))  # exactly 1 MP passes
    assert ok["probabilities"].shape == (2, 1000)
    animations = [_animation(300, (1000, 1000)), _animation(3, (1000, 1000))]
    liar = _png(100, 100, b"\0" * 100_000_000)  # the header says 100x100; the data inflates to 100 MB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for bomb in BOMBS.values():
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"image is \d+x\d+, over the 1 MP limit"):
            serve(image_bytes=tf.constant([bomb]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image is 1001x1000, over the 1 MP limit"):
        serve(image_bytes=tf.constant([_png(1001, 1000)]))
    # TensorFlow inflates every frame of a GIF: 300 frames of 1000x1000 (a 1 MB file) would take 300 MB
    with pytest.raises(tf.errors.InvalidArgumentError, match="GIF has over 100 frames of 1000x1000"):
        serve(image_bytes=tf.constant(animations[:1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="GIF has 3 frames of 1000x1000: over the limit"):
        serve(image_bytes=tf.constant(animations[1:]))
    try:  # a header that lies low: the decoder goes by the header and never inflates the rest
        assert serve(image_bytes=tf.constant([liar]))["probabilities"].shape == (1, 1000)
    except tf.errors.InvalidArgumentError as err:
        assert "PNG" in str(err)
    # decoding any one of them would take gigabytes (20000x20000x3 is 1.2 GB); refusing took next to nothing
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100
    assert serve(image_bytes=tf.constant([_animation(5, (64, 64))]))["probabilities"].shape == (1, 1000)


def test_the_server_answers_400_and_invalid_argument_and_keeps_serving(budget_export):
    base, _ = budget_export
    good = _pil("PNG", (64, 64))
    with ModelServer(base, rest_port=0, grpc_port=0, poll_seconds=0.2) as server:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/squeezenet1_1:predict"
        for fmt, bomb in BOMBS.items():
            body = {"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(bomb).decode()}]}
            response = requests.post(url, json=body, timeout=60)
            assert response.status_code == 400, (fmt, response.text)
            assert re.search(r"^image is \d+x\d+, over the 1 MP limit$", response.json()["error"]), response.text
            assert "Traceback" not in response.text
        classify = url.replace(":predict", ":classify")
        body = {"signature_name": "classify", "examples": [{"image/encoded": {"b64": base64.b64encode(
            BOMBS["jpeg"]).decode()}}]}
        response = requests.post(classify, json=body, timeout=60)
        assert response.status_code == 400 and "over the 1 MP limit" in response.json()["error"]
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "squeezenet1_1", "serving_bytes"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([BOMBS["png"]]))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MP limit" in err.value.details()
        body = {"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(good).decode()}]}
        assert requests.post(url, json=body, timeout=60).status_code == 200
