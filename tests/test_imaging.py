"""The image contract (keras_cnns/imaging.py): cnnkit decodes and resizes a photo exactly as a phone app with
MediaPipe Tasks does, in TensorFlow (training pipeline, SavedModel) and in NumPy (predict)."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_cnns.imaging import decode, resize, resize_numpy

SIZES = [(64, 50), (256, 200), (97, 301), (1000, 600), (33, 35), (8, 8), (5, 7), (13, 9)]


@pytest.fixture(scope="module")
def pixel_probe(tmp_path_factory):
    """A .tflite whose 48 "class scores" are its 4x4x3 input, with standard metadata: MediaPipe Tasks'
    ImageClassifier, given a photo, reports the very pixels it fed the model."""
    from export import tflite

    folder = tmp_path_factory.mktemp("probe")

    class Probe(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
        def probabilities(self, x):
            return {"probabilities": tf.reshape(x, [1, -1])}

    probe = Probe()
    tf.saved_model.save(probe, str(folder / "sm"), signatures={"probabilities": probe.probabilities})
    path = str(folder / "probe.tflite")
    tflite.convert_file(str(folder / "sm"), "float32", path, [f"p{i}" for i in range(48)], "probe")
    runner = tflite.MediaPipeRunner(path)
    yield lambda image: runner.scores(image).reshape(4, 4, 3)
    runner.close()


@pytest.mark.parametrize("shape", SIZES)
def test_resize_is_mediapipes_to_the_pixel(pixel_probe, shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,)).astype(np.uint8)
    phone = pixel_probe(image)
    np.testing.assert_array_equal(resize(image, (4, 4)).numpy(), phone)
    np.testing.assert_array_equal(resize_numpy(image, (4, 4)), phone)
    if shape[0] > 16:  # what the server did before (antialiased) is not what the phone sees
        assert np.abs(tf.image.resize(image, (4, 4), antialias=True).numpy() - phone).max() > 1


def test_resize_numpy_and_tensorflow_agree_at_model_sizes():
    rng = np.random.default_rng(0)
    for shape, size in (((480, 640, 3), (224, 224)), ((256, 200, 1), (32, 32)), ((20, 30, 3), (32, 32))):
        image = rng.integers(0, 256, shape).astype(np.uint8)
        np.testing.assert_array_equal(resize(image, size).numpy(), resize_numpy(image, size))
        batch = resize(np.stack([image, image]), size).numpy()
        assert batch.shape == (2,) + size + (shape[-1],) and np.array_equal(batch[1], resize_numpy(image, size))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF"])
def test_decode_gives_pillows_pixels(fmt):
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # a JPEG-friendly photo
    image = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    data = buffer.getvalue()
    ours = decode(tf.constant(data), 3).numpy()
    np.testing.assert_array_equal(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    if fmt == "JPEG":  # TensorFlow's default (fast) DCT is not what a phone or Pillow decodes
        assert np.abs(tf.io.decode_jpeg(data, channels=3).numpy().astype(int) - ours).max() > 2


def test_the_training_pipeline_decodes_and_resizes_by_the_contract(tmp_path):
    from keras_cnns.data import decode_file

    image = np.random.default_rng(2).integers(0, 256, (90, 130, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.jpg", quality=92)
    pixels = decode_file(str(tmp_path / "photo.jpg"), 32, 3).numpy()
    phone = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))
    np.testing.assert_array_equal(pixels, resize_numpy(phone, (32, 32)).astype(np.uint8))


def test_a_non_square_resize_by_hand():
    """3x5 -> 2x3, worked out from the rule (x_in = x_out * in / out at 1/32 of a pixel, bilinear, half up) on
    I[r][c] = 64 r + 16 c: rows sample 0 and 1.5 (rows 1 and 2, half way); columns 0, 53/32 (1 + 21/32) and
    107/32 (3 + 11/32). Row 0: 0, 16 + 16 x 21/32 = 26.5 -> 27, 48 + 16 x 11/32 = 53.5 -> 54; row 1: the mean of
    rows 1 and 2 there: 96, 122.5 -> 123, 149.5 -> 150."""
    import tensorflow as tf

    from keras_cnns.imaging import resize, resize_numpy

    image = (64 * np.arange(3)[:, None] + 16 * np.arange(5)[None, :]).astype(np.uint8)[..., None]
    expected = np.array([[0, 27, 54], [96, 123, 150]], np.float32)[..., None]
    np.testing.assert_array_equal(resize_numpy(image, (2, 3)), expected)
    np.testing.assert_array_equal(resize(tf.constant(image), (2, 3)).numpy(), expected)
    batch = resize(tf.constant(np.stack([image, image])), (2, 3)).numpy()
    assert batch.shape == (2, 2, 3, 1) and (batch == expected).all()
    # the other way round: 5x3 -> 3x2, the transpose of the same arithmetic
    np.testing.assert_array_equal(resize_numpy(image.transpose(1, 0, 2), (3, 2)), expected.transpose(1, 0, 2))
    # the last row and column are sampled, never read past: 2x2 -> 3x3 samples 0, 2/3 (21/32) and 4/3 (1 + 11/32)
    small = np.array([[0, 32], [64, 96]], np.uint8)[..., None]
    np.testing.assert_array_equal(resize_numpy(small, (3, 3))[..., 0], [[0, 21, 32], [42, 63, 74], [64, 85, 96]])
