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

``resize`` is TensorFlow's ``ResizeBilinear`` with ``half_pixel_centers=False`` (TF 1's ``resize_bilinear``),
rounded to whole values: measured against MediaPipe Tasks 1.2.2 it is within 1 of every pixel, and
``decode`` gives Pillow's pixels exactly (tests/test_imaging.py). TensorFlow's default JPEG decoding (the
fast DCT) differed from Pillow's by up to 15 levels, enough to flip a near-tie. The price of matching the
phone: a large downscale samples the photo rather than averaging it (aliasing), as MediaPipe does.
"""
import numpy as np

RULE = ("the whole image stretched to the input size (no crop, aspect not kept), bilinear at pixel corners "
        "without antialiasing, rounded to whole pixel values: what MediaPipe Tasks does on a phone")


def decode(data, channels):
    """tf op: encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, channels] (a GIF's first frame); JPEG with the
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
    x = images if batched else images[None]
    x = tf.raw_ops.ResizeBilinear(images=x, size=tf.constant(size, tf.int32), align_corners=False,
                                  half_pixel_centers=False)
    x = tf.round(x)
    return x if batched else x[0]


def _axis(n_in, n_out):
    position = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
    low = np.floor(position).astype(np.int64)
    return low, np.minimum(low + 1, n_in - 1), (position - low).astype(np.float32)


def resize_numpy(image, size):
    """``resize`` for one image (H, W, C) in NumPy: float32 of ``size`` (h, w), whole values."""
    image = np.asarray(image, np.float32)
    (top, bottom, dy), (left, right, dx) = _axis(image.shape[0], size[0]), _axis(image.shape[1], size[1])
    dx = dx[None, :, None]
    upper = image[top][:, left] + (image[top][:, right] - image[top][:, left]) * dx
    lower = image[bottom][:, left] + (image[bottom][:, right] - image[bottom][:, left]) * dx
    return np.round(upper + (lower - upper) * dy[:, None, None])
