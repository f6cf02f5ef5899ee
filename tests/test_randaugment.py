"""RandAugment: each of the paper's 14 operations does what PIL's (which the paper's and timm's implementations
call) does at the same magnitude, and a seed applies N of them at magnitude M."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from keras_cnns import randaugment as ra
from keras_cnns.data import augment_image, parse_augment
from keras_cnns.errors import CnnkitError


def _photo(seed=0, size=(24, 32)):
    """A smooth colour gradient with a bright square and noise: every operation changes it."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    image = np.stack([40 + 5 * xx, 30 + 6 * yy, 200 - 3 * xx - 2 * yy], -1) + rng.normal(0, 6, size + (3,))
    image[5:12, 8:18] += 60
    return np.clip(image, 10, 230).astype(np.uint8)  # not the full range: autocontrast has work to do


def _pil(op, image, magnitude, sign):
    """The operation as timm's auto_augment.py writes it with PIL."""
    at, pil = ra.levels(magnitude), Image.fromarray(image)
    fill = (int(ra.FILL),) * 3
    enhance = 1.0 + sign * at["enhance"]
    out = {
        "identity": lambda: pil,
        "autocontrast": lambda: ImageOps.autocontrast(pil),
        "equalize": lambda: ImageOps.equalize(pil),
        "solarize": lambda: ImageOps.solarize(pil, at["solarize"]),
        "posterize": lambda: ImageOps.posterize(pil, at["posterize"]),
        "color": lambda: ImageEnhance.Color(pil).enhance(enhance),
        "contrast": lambda: ImageEnhance.Contrast(pil).enhance(enhance),
        "brightness": lambda: ImageEnhance.Brightness(pil).enhance(enhance),
        "sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(enhance),
        "rotate": lambda: pil.rotate(sign * at["rotate"], resample=Image.BILINEAR, fillcolor=fill),
        "shear_x": lambda: pil.transform(pil.size, Image.AFFINE, (1, sign * at["shear"], 0, 0, 1, 0),
                                         resample=Image.BILINEAR, fillcolor=fill),
        "shear_y": lambda: pil.transform(pil.size, Image.AFFINE, (1, 0, 0, sign * at["shear"], 1, 0),
                                         resample=Image.BILINEAR, fillcolor=fill),
        "translate_x": lambda: pil.transform(pil.size, Image.AFFINE, (1, 0, sign * at["translate"] * pil.size[0],
                                                                      0, 1, 0), resample=Image.BILINEAR, fillcolor=fill),
        "translate_y": lambda: pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, sign * at["translate"] *
                                                                      pil.size[1]), resample=Image.BILINEAR,
                                             fillcolor=fill),
    }[op]()
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("op", ra.OPS)
@pytest.mark.parametrize("magnitude, sign", [(9, 1.0), (5, -1.0)])
def test_each_operation_does_what_pil_does(op, magnitude, sign):
    image = _photo()
    ours = ra.apply(op, image.astype(np.float32), magnitude, sign).numpy()
    theirs = _pil(op, image, magnitude, sign)
    assert ours.shape == image.shape and ours.min() >= 0 and ours.max() <= 255
    differ = np.abs(ours - theirs)
    if op in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        # resampled (PIL drops the fraction: one level); where a sample point straddles the border, TensorFlow blends the
        # picture with the fill and PIL takes one or the other: compared where both sample the picture alone
        inside = ra.apply(op, np.zeros_like(image, np.float32), magnitude, sign).numpy() == 0
        assert inside.mean() > 0.5 and differ[inside].max() < 1.01, (op, differ[inside].max())
    else:  # pixel maps: PIL's to the level (one level of rounding allowed)
        assert differ.max() <= 1, (op, differ.max())
    if op != "identity":
        assert np.abs(ours - image).mean() > 1, op  # it did something


def test_magnitude_zero_leaves_the_image_as_it_is_and_solarize_ten_inverts_all():
    image = _photo().astype(np.float32)
    for op in ("rotate", "solarize", "posterize", "color", "contrast", "brightness", "sharpness", "shear_x",
               "translate_y"):
        np.testing.assert_allclose(ra.apply(op, image, 0, 1.0).numpy(), image, atol=1, err_msg=op)
    np.testing.assert_array_equal(ra.apply("solarize", image, 10).numpy(), 255 - image)


def test_a_seed_applies_n_operations_of_magnitude_m():
    image = _photo(1).astype(np.float32)
    for i in range(6):
        seed = tf.constant([i, 3], tf.int64)
        ops, signs = (t.numpy() for t in ra.choices(seed, 3))
        expected = image
        for op, sign in zip(ops, signs):
            expected = ra.apply(ra.OPS[op], expected, 7, sign).numpy()
        np.testing.assert_array_equal(ra.randaugment(tf.constant(image), seed, 3, 7).numpy(), expected)
    drawn = np.concatenate([ra.choices(tf.constant([i, 0], tf.int64), 2)[0].numpy() for i in range(300)])
    assert set(drawn) == set(range(len(ra.OPS)))  # uniformly, every operation: 600 draws of 14
    assert np.bincount(drawn).min() > 20


def test_the_augment_option_takes_randaugment_with_its_n_and_m():
    assert parse_augment("flip, randaugment") == ("flip", "randaugment:2:9")
    assert parse_augment("randaugment:3:5") == ("randaugment:3:5",)
    for bad in ("randaugment:0", "randaugment:2:11", "randaugment:x", "randaugment:1:2:3"):
        with pytest.raises(CnnkitError, match="randaugment.*takes N operations"):
            parse_augment(bad)
    image = tf.constant(_photo(2).astype(np.float32))
    seed = tf.constant([4, 2], tf.int64)
    out = augment_image(image, seed, ("randaugment:2:9",)).numpy()
    assert out.shape == image.shape and np.abs(out - image.numpy()).mean() > 0.5
    np.testing.assert_array_equal(out, augment_image(image, seed, ("randaugment:2:9",)).numpy())  # seeded
