"""mixup and CutMix: the labels are the same mixture as the images, and they still sum to 1."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from keras_cnns.data import load_data, make_dataset
from keras_cnns.mixing import Mix, mix_batch

B, K = 6, 4


def _batch():
    """Image i is filled with the value i + 1, of class i % K (so its partner B-1-i is of another class)."""
    images = tf.constant(np.arange(1, B + 1, dtype=np.float32)[:, None, None, None] * np.ones((B, 8, 10, 3), np.float32))
    labels = np.arange(B) % K
    return images, tf.one_hot(labels, K), labels


def _seed(i):
    return tf.constant([i, 7], tf.int64)


def test_mixup_blends_the_images_as_it_blends_the_labels():
    images, target, labels = _batch()
    for i in range(5):
        mixed, soft, _ = mix_batch(images, target, _seed(i), Mix(mixup=0.4))
        soft, mixed = soft.numpy(), mixed.numpy()
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
        lam = soft[np.arange(B), labels]  # the weight of each image's own class
        partner = np.arange(B)[::-1]
        expected = lam[:, None, None, None] * images.numpy() + (1 - lam)[:, None, None, None] * images.numpy()[partner]
        np.testing.assert_allclose(mixed, expected, rtol=1e-5)
        assert np.allclose(lam, lam[0]) and 0 < lam[0] < 1  # one lam per batch


def test_cutmix_pastes_a_box_whose_area_is_the_partners_label_weight():
    images, target, labels = _batch()
    boxes = 0
    for i in range(10):
        mixed, soft, _ = mix_batch(images, target, _seed(i), Mix(cutmix=1.0))
        mixed, soft = mixed.numpy(), soft.numpy()
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
        partner = np.arange(B)[::-1]
        for j in range(B):
            own = mixed[j] == j + 1
            assert np.all(own | (mixed[j] == partner[j] + 1))  # pixels are pasted, never blended
            if partner[j] != j:
                assert soft[j, labels[j]] == pytest.approx(own.mean(), abs=1e-6)
        boxes += not np.all(mixed == images.numpy())
    assert boxes >= 5


def test_with_both_a_batch_uses_cutmix_at_the_switch_probability_and_a_seed_repeats_it():
    images, target, _ = _batch()
    mix = Mix(mixup=1.0, cutmix=1.0, switch_prob=0.3)
    cut = [bool(np.isin(mix_batch(images, target, _seed(i), mix)[0].numpy(), np.arange(1, B + 1)).all())
           for i in range(200)]
    assert 0.2 < np.mean(cut) < 0.4
    first, second = (mix_batch(images, target, _seed(3), mix)[0].numpy() for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_class_weights_are_mixed_like_the_labels_and_label_smoothing_takes_soft_labels():
    images, target, labels = _batch()
    weights = tf.constant([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    _, soft, mixed_weights = mix_batch(images, target, _seed(1), Mix(mixup=0.4), weights)
    lam = soft.numpy()[0, labels[0]]
    np.testing.assert_allclose(mixed_weights.numpy(), lam * weights.numpy() + (1 - lam) * weights.numpy()[::-1],
                               rtol=1e-6)
    probabilities = tf.nn.softmax(tf.random.stateless_normal((B, K), [1, 2]))
    smoothed = soft * 0.9 + 0.1 / K
    expected = -tf.reduce_mean(tf.reduce_sum(smoothed * tf.math.log(probabilities), 1))
    assert float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(soft, probabilities)) == \
        pytest.approx(float(expected), rel=1e-5)


def test_the_training_pipeline_mixes_and_the_other_splits_do_not():
    data = load_data("shapes:20", (16, 16, 3))
    pre = {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}
    targets = np.concatenate([t.numpy() for _, t in make_dataset(data, "train", 8, pre, training=True,
                                                                mix=Mix(mixup=0.4))])
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    assert (targets.max(1) < 1).mean() > 0.5  # soft
    plain = np.concatenate([t.numpy() for _, t in make_dataset(data, "val", 8, pre)])
    assert set(np.unique(plain)) == {0.0, 1.0}


def _reference_box(height, width, lam, cy, cx):
    """The CutMix paper's box (Yun et al. 2019, its official rand_bbox): sides H sqrt(1 - lam) and W sqrt(1 - lam)
    as integers, centred at (cy, cx), clipped at the borders."""
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h - cut_h // 2, 0, height)
    x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w - cut_w // 2, 0, width)
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("lam", [0.75, 0.36, 0.9])
def test_the_cutmix_box_is_the_papers_at_every_centre_borders_included(lam):
    import tensorflow as tf

    from keras_cnns.mixing import _cutmix_mask

    height, width = 8, 12  # not square: the rows follow the height, the columns the width
    clipped = 0
    for s in range(40):
        seed = tf.constant([s, 7], tf.int64)
        centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32).numpy()
        cy, cx = int(centre[0]) % height, int(centre[1]) % width  # the draw: the row from the first number
        mask, kept = _cutmix_mask(tf.constant([1, height, width, 3]), tf.constant(lam), seed)
        expected = _reference_box(height, width, lam, cy, cx)
        np.testing.assert_array_equal(mask.numpy(), expected, err_msg=f"seed {s}, centre {cy, cx}")
        assert float(kept) == pytest.approx(1 - expected.sum() / (height * width))
        full = int(height * np.sqrt(1 - lam)) * int(width * np.sqrt(1 - lam))
        clipped += int(expected.sum() < full)
    assert 0 < clipped < 40  # some boxes were cut by a border, some were whole


def test_a_mix_is_on_when_either_alpha_is_positive():
    assert not Mix() and not Mix(mixup=0.0, cutmix=0.0)
    assert Mix(mixup=0.2) and Mix(cutmix=0.5) and Mix(cutmix=1.0)
