"""RandAugment (Cubuk et al. 2019, "RandAugment: Practical automated data augmentation with a reduced search
space"): each training image gets N operations drawn uniformly, with replacement, from the paper's 14, all at
one magnitude M on a 0-10 scale (timm's scale; `--augment randaugment:N:M`, default N=2, M=9 as timm's
rand-m9-n2). Geometric operations and the enhancements take a random sign, as in timm. Solarize and posterize
take their increasing forms (timm's "inc" variants: the threshold falls and bits go as M rises), so that every
operation grows stronger with M; in the original AutoAugment code those two grew weaker.

Written on tf.image and TensorFlow's projective transform (no maintained RandAugment works with tf_keras: Keras'
own is Keras 3, KerasCV's too), on float32 images in [0, 255] inside tf.data, from stateless seeds. Each operation
follows PIL's ImageOps / ImageEnhance, which the paper's and timm's implementations call; tests/test_randaugment.py
checks them one by one against PIL.
"""
import math

from keras_cnns.errors import CnnkitError

#: the paper's operations, in its order
OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast", "brightness",
       "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
DEFAULT_N, DEFAULT_M, MAX_M = 2, 9, 10
#: at magnitude 10: degrees, shear factor, translation (fraction of the side), enhancement (1 +- this)
ROTATE, SHEAR, TRANSLATE, ENHANCE = 30.0, 0.3, 0.45, 0.9
FILL = 128.0  # what geometric operations bring in at the borders (timm's)


def parse(text):
    """``randaugment[:N[:M]]`` -> (N, M)."""
    parts = text.split(":")
    try:
        n = int(parts[1]) if len(parts) > 1 and parts[1] else DEFAULT_N
        m = float(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_M
    except ValueError:
        n = m = -1
    if len(parts) > 3 or not 1 <= n <= 10 or not 0 <= m <= MAX_M:
        raise CnnkitError(f"--augment {text}: randaugment[:N[:M]] takes N operations (1-10) of magnitude M (0-10), "
                          f"e.g. randaugment:2:9")
    return n, m


def levels(magnitude):
    """What magnitude M (0-10) means for each operation (before its random sign)."""
    level = magnitude / MAX_M
    return {"rotate": ROTATE * level, "shear": SHEAR * level, "translate": TRANSLATE * level,
            "enhance": ENHANCE * level, "solarize": 256.0 - 256.0 * level, "posterize": 8 - int(round(4 * level))}


def choices(seed, n):
    """The N operation indices and their signs (+1 / -1) a stateless ``seed`` draws. -> (int32 [n], float32 [n])"""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=2)
    ops = tf.random.stateless_uniform([n], seeds[0], 0, len(OPS), dtype=tf.int32)
    signs = tf.where(tf.random.stateless_uniform([n], seeds[1]) < 0.5, -1.0, 1.0)
    return ops, signs


def randaugment(image, seed, n=DEFAULT_N, magnitude=DEFAULT_M):
    """N operations drawn by ``seed`` applied in turn to one float32 image in [0, 255] (H x W x C)."""
    import tensorflow as tf

    ops, signs = choices(seed, n)
    for i in range(n):
        image = tf.switch_case(ops[i], [lambda op=op, x=image, sign=signs[i]: apply(op, x, magnitude, sign) for op in OPS])
    return image


def apply(op, image, magnitude, sign=1.0):
    """One operation ``op`` (a name of OPS) at ``magnitude`` with ``sign``, on a float32 image in [0, 255]."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image, tf.float32)
    at = levels(magnitude)
    if op == "identity":
        return image
    if op == "autocontrast":
        return _autocontrast(image)
    if op == "equalize":
        return _equalize(image)
    if op == "solarize":  # PIL: every pixel at or above the threshold inverted
        return tf.where(image >= at["solarize"], 255.0 - image, image)
    if op == "posterize":  # keep the high bits
        shift = 8 - at["posterize"]
        return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(_uint8(image), shift), shift), tf.float32)
    if op in ("color", "contrast", "brightness", "sharpness"):
        factor = 1.0 + sign * at["enhance"]
        degenerate = {"color": _grey, "contrast": _mean_grey, "brightness": tf.zeros_like,
                      "sharpness": _smoothed}[op](image)
        return _truncated(degenerate + factor * (image - degenerate))  # PIL's ImageEnhance: a blend
    size = tf.cast(tf.shape(image)[:2], tf.float32)  # (height, width)
    if op == "rotate":
        angle = sign * at["rotate"] * math.pi / 180.0  # counter-clockwise, about the centre (PIL's rotate)
        cy, cx = (size[0] - 1) / 2, (size[1] - 1) / 2
        c, s = tf.cos(angle), tf.sin(angle)
        # output (x, y) samples input (c x - s y + ..., s x + c y + ...) relative to the centre
        transform = [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0]
    elif op == "shear_x":  # PIL's affine (1, v, 0, 0, 1, 0) on pixel corners: input x = x + v (y + 1/2) at centres
        v = sign * at["shear"]
        transform = [1.0, v, v / 2, 0.0, 1.0, 0.0, 0.0, 0.0]
    elif op == "shear_y":
        v = sign * at["shear"]
        transform = [1.0, 0.0, 0.0, v, 1.0, v / 2, 0.0, 0.0]
    elif op == "translate_x":  # input x = x + v: the content moves by -v pixels
        transform = [1.0, 0.0, sign * at["translate"] * size[1], 0.0, 1.0, 0.0, 0.0, 0.0]
    elif op == "translate_y":
        transform = [1.0, 0.0, 0.0, 0.0, 1.0, sign * at["translate"] * size[0], 0.0, 0.0]
    else:
        raise CnnkitError(f"unknown RandAugment operation {op!r}; choose from {', '.join(OPS)}")
    transform = tf.cast(tf.stack(transform), tf.float32)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(images=image[None], transforms=transform,
                                                output_shape=tf.shape(image)[:2], fill_value=FILL,
                                                interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def _uint8(image):
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _truncated(image):
    """As PIL stores a blend or a stretch: clipped to 0..255, the fraction dropped."""
    import tensorflow as tf

    return tf.floor(tf.clip_by_value(image, 0.0, 255.0))


def _grey(image):
    """PIL's L conversion (ITU-R 601-2 luma), as the colour enhancement's degenerate image."""
    import tensorflow as tf

    if image.shape[-1] != 3:
        return image
    luma = tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    return tf.broadcast_to(tf.round(luma), tf.shape(image))


def _mean_grey(image):
    """PIL's contrast enhancement blends with the mean of the grey image (rounded)."""
    import tensorflow as tf

    grey = _grey(image)[..., :1]
    return tf.fill(tf.shape(image), tf.round(tf.reduce_mean(grey)))


def _smoothed(image):
    """PIL's SMOOTH filter (3x3 [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13) inside, the border pixels as they are."""
    import tensorflow as tf

    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    channels = image.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    inner = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0])
    inner = tf.pad(inner, [[1, 1], [1, 1], [0, 0]])
    mask = tf.pad(tf.ones_like(inner[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
    return mask * inner + (1 - mask) * image


def _autocontrast(image):
    """PIL's autocontrast (no cut-off): each channel stretched so its darkest pixel is 0 and its brightest 255."""
    import tensorflow as tf

    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1e-6), 1.0)
    offset = tf.where(high > low, -low * scale, 0.0)
    return _truncated(image * scale + offset)


def _equalize(image):
    """PIL's equalize, channel by channel: a cumulative histogram as the lookup table, step = (pixels - the last
    level's count) // 255; a channel with one level (or nearly) is left as it is."""
    import tensorflow as tf

    pixels = tf.cast(_uint8(image), tf.int32)
    channels = []
    for c in range(image.shape[-1]):
        channel = pixels[..., c]
        histogram = tf.math.bincount(tf.reshape(channel, [-1]), minlength=256, maxlength=256)
        last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0))[None])[0]
        step = (tf.reduce_sum(histogram) - last) // 255
        lut = (tf.cumsum(histogram, exclusive=True) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(lut, 0, 255)
        channels.append(tf.where(step > 0, tf.gather(lut, channel), channel))
    return tf.cast(tf.stack(channels, axis=-1), tf.float32)

