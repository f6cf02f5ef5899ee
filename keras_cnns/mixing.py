"""mixup and CutMix: training batches whose images, and labels, are mixtures of two images.

mixup (Zhang et al. 2018) blends two whole images, x = lam x_i + (1 - lam) x_j; CutMix (Yun et al. 2019)
pastes a box of x_j into x_i, with lam the part of x_i that is left. In both the target is the same mixture
of the two one-hot (or label-smoothed) targets, so it still sums to 1, and lam ~ Beta(alpha, alpha), one per
batch. As in timm, each image is paired with the batch read backwards (image i with image B-1-i) and with both
enabled a batch uses CutMix with probability ``switch_prob``, else mixup. Every draw is stateless, from the
batch's seed: a run with --seed N --deterministic mixes the same way again.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Mix:
    mixup: float = 0.0  # Beta alpha; 0: off
    cutmix: float = 0.0
    switch_prob: float = 0.5  # with both on: the chance that a batch uses CutMix

    def __bool__(self):
        return self.mixup > 0 or self.cutmix > 0


def _beta(seed, alpha):
    import tensorflow as tf

    gammas = tf.random.stateless_gamma([2], seed=seed, alpha=alpha)
    return gammas[0] / (gammas[0] + gammas[1])


def _cutmix_mask(shape, lam, seed):
    """A (H, W) mask, True in a box of about (1 - lam) of the area at a random centre (clipped at the
    borders), and the part of the image outside it."""
    import tensorflow as tf

    height, width = shape[1], shape[2]
    cut = tf.sqrt(1.0 - lam)
    box_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
    box_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
    centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = centre[0] % height, centre[1] % width
    y0, y1 = tf.clip_by_value(cy - box_h // 2, 0, height), tf.clip_by_value(cy + box_h - box_h // 2, 0, height)
    x0, x1 = tf.clip_by_value(cx - box_w // 2, 0, width), tf.clip_by_value(cx + box_w - box_w // 2, 0, width)
    rows, cols = tf.range(height), tf.range(width)
    mask = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(height * width, tf.float32)
    return mask, kept


def mix_batch(images, target, seed, mix, weights=None):
    """-> (images, target, weights) of one batch mixed by ``mix`` (a :class:`Mix`) from a stateless ``seed``;
    ``weights`` (per-image loss weights, e.g. class weights) are mixed as the targets are."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=4)
    partner_images, partner_target = tf.reverse(images, [0]), tf.reverse(target, [0])

    def mixup():
        lam = _beta(seeds[1], mix.mixup)
        return lam * images + (1.0 - lam) * partner_images, lam

    def cutmix():
        mask, kept = _cutmix_mask(tf.shape(images), _beta(seeds[2], mix.cutmix), seeds[3])
        return tf.where(mask[None, :, :, None], partner_images, images), kept

    if mix.mixup > 0 and mix.cutmix > 0:
        use_cutmix = tf.random.stateless_uniform([], seeds[0]) < mix.switch_prob
        mixed, lam = tf.cond(use_cutmix, cutmix, mixup)
    else:
        mixed, lam = cutmix() if mix.cutmix > 0 else mixup()
    target = lam * target + (1.0 - lam) * partner_target
    if weights is not None:
        weights = lam * weights + (1.0 - lam) * tf.reverse(weights, [0])
    return mixed, target, weights
