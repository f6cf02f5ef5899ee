"""The image contract: how an encoded photo of any size and aspect becomes the model's input, in every place.

A phone app runs MediaPipe Tasks' ``ImageClassifier``, which nothing of ours can change: the app decodes the
photo (JPEG with libjpeg's accurate integer DCT, as Pillow, Android and browsers do) and MediaPipe stretches
the whole image to the model's input size (no crop, the aspect ratio not kept) with OpenCV's bilinear warp,
which samples the source at ``x_in = x_out * in_size / out_size`` (pixel corners, no half-pixel offset, no
antialiasing) and gives whole pixel values. cnnkit does the same everywhere else, so that a photo gets the
same answer on the phone, the server and the laptop, and the accuracy a run reports is the deployed one:

- the training pipeline (folders of photos of any size, decoded once, and the test split it evaluates);
- the SavedModel's ``serving_bytes`` and ``classify`` signatures (TF Serving, ``cnnkit serve``);
- ``cnnkit predict`` on a TFLite or ONNX file (Pillow's decoder and ``resize_numpy``, without TensorFlow).

``resize`` is OpenCV's arithmetic: each sample at the nearest 1/32 of a pixel, exact bilinear weights,
rounded half up; it gives MediaPipe Tasks 1.2.2's pixels exactly, and ``decode`` gives Pillow's
(tests/test_imaging.py). Two near misses measured before: TensorFlow's own ``ResizeBilinear`` without
half-pixel centres was off by up to 1 level, enough for an untrained MobileNet to change its answer on 27% of
full-size photos, and TensorFlow's default JPEG decoding (the fast DCT) by up to 15 levels. The price of
matching the phone: a large downscale samples the photo rather than averaging it (aliasing), as MediaPipe does.
"""
import numpy as np

#: OpenCV's bilinear warp places each sample at a 1/32 of a pixel (INTER_BITS = 5); its weights are then exact
STEPS = 32
#: the image formats every path reads (training folders, the SavedModel, the server, predict, the model page), and
#: their file name endings (a training folder's images are found by them)
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")

RULE = ("the whole image stretched to the input size (no crop, aspect not kept), bilinear at pixel corners "
        "without antialiasing, rounded to whole pixel values: what MediaPipe Tasks does on a phone")


def decode(data, channels):
    """tf op: encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, channels] (a GIF's first frame); JPEG with the
    accurate integer DCT. Raises at run time if it is not an image."""
    import tensorflow as tf

    image = tf.cond(tf.io.is_jpeg(data),
                    lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(data, channels=channels, expand_animations=False))
    image.set_shape([None, None, channels])
    return image


def resize(images, size):
    """tf op: images [N, H, W, C] or [H, W, C] (any number type) -> float32 of ``size`` (h, w), whole values."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    batched = images.shape.rank == 4
    x = images if batched else images[None]  # cast after the gathers: a 12 MP photo is 144 MB in float32

    def axis(n_in, n_out):
        fixed = tf.cast(tf.round(tf.range(n_out, dtype=tf.float64) * tf.cast(n_in / n_out, tf.float64) * STEPS),
                        tf.int32)
        low = tf.minimum(fixed // STEPS, n_in - 1)
        return low, tf.minimum(low + 1, n_in - 1), tf.cast(fixed % STEPS, tf.float32) / STEPS

    (top, bottom, dy), (left, right, dx) = axis(tf.shape(x)[1], size[0]), axis(tf.shape(x)[2], size[1])

    def across(rows):
        low = tf.cast(tf.gather(rows, left, axis=2), tf.float32)
        return low + (tf.cast(tf.gather(rows, right, axis=2), tf.float32) - low) * dx[None, None, :, None]

    upper, lower = across(tf.gather(x, top, axis=1)), across(tf.gather(x, bottom, axis=1))
    x = tf.floor(upper + (lower - upper) * dy[None, :, None, None] + 0.5)
    return x if batched else x[0]


def _axis(n_in, n_out):
    fixed = np.round(np.arange(n_out, dtype=np.float64) * (n_in / n_out) * STEPS).astype(np.int64)
    low = np.minimum(fixed // STEPS, n_in - 1)
    return low, np.minimum(low + 1, n_in - 1), (fixed % STEPS).astype(np.float32) / STEPS


def resize_numpy(image, size):
    """``resize`` for one image (H, W, C) in NumPy: float32 of ``size`` (h, w), whole values."""
    image = np.asarray(image)  # gathered in its own type, then float32: the whole photo never is
    (top, bottom, dy), (left, right, dx) = _axis(image.shape[0], size[0]), _axis(image.shape[1], size[1])
    dx = dx[None, :, None]

    def across(rows):
        low, high = rows[:, left].astype(np.float32), rows[:, right].astype(np.float32)
        return low + (high - low) * dx

    upper, lower = across(image[top]), across(image[bottom])
    return np.floor(upper + (lower - upper) * dy[:, None, None] + 0.5)
