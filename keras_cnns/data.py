"""Data sets for training: one ``--data SPEC`` string -> train/val/test splits -> tf.data pipelines.

Spec forms:

- ``digits`` - the real 8x8 handwritten digits that ship with scikit-learn (1,797 images, offline);
- ``shapes`` or ``shapes:N`` - generated RGB images of coloured circles, squares, triangles and
  crosses on noisy backgrounds, N per class (default 300), the same for the same N every time;
- a directory of class sub-folders of JPEG/PNG/GIF/BMP images;
- an ``.npz`` file with arrays ``x`` (N, H, W[, C]) and ``y`` (N,), optional ``class_names``;
- ``keras:cifar10``, ``keras:cifar100``, ``keras:mnist``, ``keras:fashion_mnist`` and ``tfds:NAME``
  (these download on first use; the rest of the path is the same as for ``.npz``).

Images are held as uint8 at the model's input size. Splits are stratified and deterministic (they
depend on the data only, never on the training seed). A data set that fits in RAM (the notes: "keep
a small dataset in RAM") is decoded once and kept there; a directory too large for that is decoded
on the fly by parallel tf.data map calls. Normalisation (scale to [0, 1], then per-channel mean/std
of the training split) runs inside the pipeline and is recorded, so export can put it in the graph.
"""
import dataclasses
import io
import logging
import os

import numpy as np

from keras_cnns import imaging
from keras_cnns.errors import CnnkitError
from keras_cnns.mixing import mix_batch

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = imaging.EXTENSIONS
KERAS_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")
SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
#: randaugment[:N[:M]] besides (keras_cnns/randaugment.py)
AUGMENTATIONS = ("flip", "crop", "noise", "color", "randaugment")
SPEC_HELP = ("digits, shapes[:N], a folder of class sub-folders, a .npz file with x/y arrays, "
             "keras:cifar10|cifar100|mnist|fashion_mnist or tfds:NAME")


def _ram_budget():
    """Bytes of decoded images we are willing to hold in memory: a quarter of RAM, at most 4 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return min(total // 4, 4 << 30)


@dataclasses.dataclass
class Split:
    """One split: labels ``y`` and either decoded images ``x`` (uint8, N x H x W x C) or file ``paths``."""

    y: np.ndarray
    x: np.ndarray = None
    paths: list = None

    def __len__(self):
        return len(self.y)


@dataclasses.dataclass
class ImageData:
    spec: str
    class_names: list
    input_shape: tuple
    train: Split
    val: Split
    test: Split
    #: files that could not be decoded: (path, reason)
    skipped: list = dataclasses.field(default_factory=list)
    preprocessing: dict = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def in_memory(self):
        return self.train.x is not None

    def split(self, name):
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)


# --------------------------------------------------------------------------------------------------
# Sources: each returns (images or paths, labels, class names)


def digits_8x8():
    """scikit-learn's 8x8 digits (1797, values 0..16) and their labels, read from the data file it ships without
    importing scikit-learn (which costs every command that trains or exports on the digits 1 s); through its
    loader where that file is not found."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.exists(path):
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def _digits():
    pixels, labels = digits_8x8()
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    # frame each 8x8 digit in a 12x12 field, as MNIST centres its 20x20 digits in 28x28 (LeNet-5 then
    # pads to 32): a digit that touches the border loses its edge strokes to 'valid' convolutions
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return images, labels, [str(c) for c in range(10)]


def generate_shapes(per_class=300, size=32, seed=0):
    """Coloured geometric shapes with noise: 4 classes, ``per_class`` images each, deterministic."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images, labels = [], []
    for label, shape in enumerate(SHAPE_CLASSES):
        for _ in range(per_class):
            r = rng.uniform(0.22, 0.36) * size
            cx, cy = rng.uniform(r, size - r, 2)
            dx, dy = xx - cx, yy - cy
            if shape == "circle":
                mask = dx ** 2 + dy ** 2 <= r ** 2
            elif shape == "square":
                mask = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
            elif shape == "triangle":
                mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
            else:
                arm = r * 0.3
                mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
            background = rng.uniform(0, 110, 3)
            colour = rng.uniform(120, 255, 3)
            img = np.where(mask[..., None], colour, background) + rng.normal(0, 18, (size, size, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels, np.int64), list(SHAPE_CLASSES)


def _as_uint8_images(x, where):
    x = np.asarray(x)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise CnnkitError(f"{where}: images must have shape (N, H, W) or (N, H, W, 1|3|4), got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.number):
        raise CnnkitError(f"{where}: images must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise CnnkitError(f"{where}: images contain NaN or infinite values")
    if x.min() < 0:
        raise CnnkitError(f"{where}: pixel values must be in [0, 1] or [0, 255], found {x.min():g}")
    scale = 255.0 if x.max() <= 1.0 else 1.0
    if x.max() * scale > 255:
        raise CnnkitError(f"{where}: pixel values must be in [0, 1] or [0, 255], found {x.max():g}")
    return np.round(x * scale).astype(np.uint8)


def _labels(y, where, num_images):
    y = np.asarray(y).reshape(-1)
    if len(y) != num_images:
        raise CnnkitError(f"{where}: {num_images} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise CnnkitError(f"{where}: labels must be integer class indices, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise CnnkitError(f"{where}: labels must be >= 0, found {y.min()}")
    return y.astype(np.int64)


def _npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError ...
        raise CnnkitError(f"cannot read {path}: {err}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise CnnkitError(f"{path} has no array {' or '.join(missing)}; it needs 'x' (images) and 'y' (labels), "
                          f"found: {', '.join(sorted(arrays)) or 'nothing'}")
    x = _as_uint8_images(arrays["x"], path)
    y = _labels(arrays["y"], path, len(x))
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    return x, y, names


def _keras_dataset(name):
    import tf_keras as keras

    if name not in KERAS_DATASETS:
        raise CnnkitError(f"unknown Keras data set {name!r}; choose one of {', '.join(KERAS_DATASETS)}")
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as err:  # Keras' get_file raises a bare Exception for a failed download
        if "URL fetch failure" not in str(err):
            raise
        raise CnnkitError(f"cannot download the Keras data set {name} ({str(err).splitlines()[0]}); without a "
                          f"network, copy its file into ~/.keras/datasets/ or train on a folder (--data DIR)") from None
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]).reshape(-1), None


def _tfds_dataset(name):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise CnnkitError("tfds: data sets need `pip install tensorflow-datasets`") from None
    splits = tfds.as_numpy(tfds.load(name, split="all", as_supervised=True, batch_size=-1))
    info = tfds.builder(name).info
    names = info.features["label"].names if "label" in info.features else None
    return splits[0], splits[1], names


def _scan_directory(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise CnnkitError(f"{root} has no class sub-folders; expected {root}/<class name>/<image files>")
    paths, labels, empty = [], [], []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            empty.append(name)
        paths += [os.path.join(folder, f) for f in files]
        labels += [index] * len(files)
    if not paths:
        raise CnnkitError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {root}")
    if empty:
        raise CnnkitError(f"class folder(s) with no images in {root}: {', '.join(empty)}")
    return paths, np.array(labels, np.int64), classes


# --------------------------------------------------------------------------------------------------
# Decoding and resizing


def resize_images(images, size, channels, batch=512):
    """uint8 (N, H, W[, C]) -> uint8 (N, size, size, channels), resized by the contract (keras_cnns.imaging)."""
    import tensorflow as tf

    from keras_cnns.imaging import resize

    if images.ndim == 3:
        images = images[..., None]
    out = np.empty((len(images), size, size, channels), np.uint8)
    for start in range(0, len(images), batch):
        chunk = tf.convert_to_tensor(images[start:start + batch])
        chunk = _convert_channels(chunk, channels)
        if chunk.shape[1:3] != (size, size):
            chunk = resize(chunk, (size, size))
        out[start:start + batch] = tf.cast(chunk, tf.uint8)
    return out


def _convert_channels(image, channels):
    import tensorflow as tf

    have = image.shape[-1]
    if have == 4:
        image, have = image[..., :3], 3
    if have == channels:
        return image
    if channels == 3:
        return tf.repeat(image, 3, axis=-1)
    return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), image.dtype)


def decode_file(path, size, channels):
    """tf op: an image file -> uint8 (size, size, channels), resized by the contract (keras_cnns.imaging).
    Raises at run time if it is not an image."""
    import tensorflow as tf

    from keras_cnns.imaging import decode, resize

    return tf.cast(resize(decode(tf.io.read_file(path), channels), (size, size)), tf.uint8)


def _decode_directory(paths, size, channels, keep_pixels):
    """Decode every file once with TensorFlow's own decoder (the one training uses).

    Returns (readable indices, pixels of those or None, unreadable (path, reason) pairs).
    """
    import tensorflow as tf

    index = tf.data.Dataset.range(len(paths))
    files = tf.data.Dataset.from_tensor_slices(paths)
    ds = tf.data.Dataset.zip((index, files)).map(
        lambda i, p: (i, decode_file(p, size, channels)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    good, pixels = [], []
    for i, image in ds.as_numpy_iterator():
        good.append(int(i))
        if keep_pixels:
            pixels.append(image)
    bad = sorted(set(range(len(paths))) - set(good))
    return np.array(good, np.int64), (np.stack(pixels) if keep_pixels and pixels else None), \
        [(paths[i], "not a readable image") for i in bad]


# --------------------------------------------------------------------------------------------------
# Splits and loading


def stratified_split(y, fractions, seed=0):
    """Index arrays, one per fraction plus the rest first: [rest, part1, part2, ...]. Per class, so
    every class appears in every part when it has enough images."""
    rng = np.random.RandomState(seed)
    parts = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        start = 0
        counts = [int(round(f * len(idx))) for f in fractions]
        for k, count in enumerate(counts, start=1):
            parts[k].append(idx[start:start + count])
            start += count
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.array([], np.int64) for p in parts]


def parse_spec(spec):
    """('digits'|'shapes'|'directory'|'npz'|'keras'|'tfds', argument)."""
    text = str(spec).strip()
    if text == "digits":
        return "digits", None
    if text == "shapes" or text.startswith("shapes:"):
        raw = text.partition(":")[2] or "300"
        if not raw.isdigit() or int(raw) < 2:
            raise CnnkitError(f"shapes:N needs N >= 2 images per class, got {raw!r}")
        return "shapes", int(raw)
    for prefix in ("keras", "tfds"):
        if text.startswith(prefix + ":"):
            return prefix, text.partition(":")[2]
    if os.path.isdir(text):
        return "directory", text
    if text.lower().endswith(".npz"):
        if not os.path.isfile(text):
            raise CnnkitError(f"data file {text} does not exist")
        return "npz", text
    raise CnnkitError(f"cannot use --data {text!r}: not an existing folder or .npz file; use one of: {SPEC_HELP}")


def load_data(spec, input_shape, val_split=0.15, test_split=0.15, strict=False, split_seed=0, recorded_by=None):
    """Load ``spec`` and split it (stratified, deterministic) at ``input_shape`` (H, W, C); H must equal W.
    ``recorded_by``: the run or export that recorded ``spec`` (named when its folder or file is gone)."""
    text = str(spec)
    if recorded_by and not os.path.exists(text) and (os.sep in text or text.lower().endswith(".npz")):
        raise CnnkitError(f"{recorded_by} was made from {text}, which no longer exists (moved or deleted?): give "
                          "its new place with --data SPEC")
    size, channels = int(input_shape[0]), int(input_shape[2])
    if input_shape[0] != input_shape[1]:
        raise CnnkitError(f"training needs square inputs, got {input_shape[0]}x{input_shape[1]}")
    for name, value in (("val split", val_split), ("test split", test_split)):
        if not 0 < value < 0.5:
            raise CnnkitError(f"{name} must be between 0 and 0.5, got {value}")
    kind, arg = parse_spec(spec)
    skipped, paths, images, names = [], None, None, None
    if kind == "digits":
        images, y, names = _digits()
    elif kind == "shapes":
        images, y, names = generate_shapes(per_class=arg)
    elif kind == "npz":
        images, y, names = _npz(arg)
    elif kind == "keras":
        images, y, names = _keras_dataset(arg)
        images = _as_uint8_images(images, spec)
    elif kind == "tfds":
        images, y, names = _tfds_dataset(arg)
        images = _as_uint8_images(images, spec)
    else:
        paths, y, names = _scan_directory(arg)
        fits = len(paths) * size * size * channels <= _ram_budget()
        good, images, skipped = _decode_directory(paths, size, channels, keep_pixels=fits)
        if skipped and strict:
            raise CnnkitError(f"{len(skipped)} unreadable image(s) (--strict): " + ", ".join(
                f"{p} ({reason})" for p, reason in skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
        for path, reason in skipped:
            log.warning("skipping %s: %s", path, reason)
        if not len(good):
            raise CnnkitError(f"none of the {len(paths)} image files in {arg} could be decoded")
        paths, y = [paths[i] for i in good], y[good]
        if images is not None:
            paths = None
    num_classes = int(y.max()) + 1 if len(y) else 0
    if names is None:
        names = [str(i) for i in range(num_classes)]
    elif num_classes > len(names):
        raise CnnkitError(f"{spec}: label {num_classes - 1} but only {len(names)} class names")
    counts = np.bincount(y, minlength=len(names))
    if len(y) == 0:
        raise CnnkitError(f"{spec} contains no images")
    if np.count_nonzero(counts) < 2:
        raise CnnkitError(f"{spec} has a single class ({names[int(np.argmax(counts))]}); classification needs at least 2")
    if (counts == 0).any():
        raise CnnkitError(f"{spec}: class(es) without images: {', '.join(n for n, c in zip(names, counts) if c == 0)}")
    if counts.min() < 3:
        raise CnnkitError(f"{spec}: every class needs at least 3 images (train/val/test); "
                          f"{names[int(np.argmin(counts))]} has {counts.min()}")
    if images is not None and (images.ndim == 3 or images.shape[1:] != (size, size, channels)):
        images = resize_images(images, size, channels)
    rest, val_idx, test_idx = stratified_split(y, (val_split, test_split), seed=split_seed)

    def take(idx):
        if images is not None:
            return Split(y=y[idx], x=images[idx])
        return Split(y=y[idx], paths=[paths[i] for i in idx])

    data = ImageData(spec=str(spec), class_names=list(names), input_shape=(size, size, channels), train=take(rest),
                     val=take(val_idx), test=take(test_idx), skipped=skipped)
    data.preprocessing = channel_statistics(data.train, size, channels)
    return data


def channel_statistics(split, size, channels, sample=2048):
    """Per-channel mean/std of the training images in [0, 1] units (a sample when streaming)."""
    if split.x is not None:
        pixels = split.x[:sample * 4].astype(np.float64) / 255.0
    else:
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices(split.paths[:sample]).map(lambda p: decode_file(p, size, channels))
        pixels = np.stack(list(files.as_numpy_iterator())).astype(np.float64) / 255.0
    mean = pixels.reshape(-1, channels).mean(axis=0)
    std = np.maximum(pixels.reshape(-1, channels).std(axis=0), 1e-3)
    return {"scale": 1.0 / 255.0, "mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std]}


# --------------------------------------------------------------------------------------------------
# tf.data pipelines


def normalise(images, preprocessing):
    """tf op: uint8-range images -> (x / 255 - mean) / std, float32."""
    import tensorflow as tf

    x = tf.cast(images, tf.float32) * preprocessing["scale"]
    return (x - tf.constant(preprocessing["mean"], tf.float32)) / tf.constant(preprocessing["std"], tf.float32)


def parse_augment(text):
    """``--augment``: a comma list of AUGMENTATIONS; ``randaugment[:N[:M]]`` is kept as randaugment:N:M."""
    from keras_cnns import randaugment

    names = [a.strip().lower() for a in (text or "").split(",") if a.strip() and a.strip().lower() != "none"]
    names = ["randaugment:%d:%g" % randaugment.parse(a) if a.split(":")[0] == "randaugment" else a for a in names]
    unknown = [a for a in names if a not in AUGMENTATIONS and not a.startswith("randaugment:")]
    if unknown:
        raise CnnkitError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    return tuple(dict.fromkeys(names))


def augment_image(image, seed, augment):
    """Random training-time changes of one float32 image in [0, 255], from a stateless ``seed``
    (so a run is reproducible however many threads map in parallel)."""
    import tensorflow as tf

    from keras_cnns import randaugment

    seeds = tf.random.experimental.stateless_split(seed, num=6)
    size, channels = image.shape[0], image.shape[-1]
    if "flip" in augment:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if "crop" in augment:  # pad by 1/8 of the side (4 pixels at 32x32), crop back at a random place
        pad = max(1, size // 8)
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[1])
    if "color" in augment:
        image = tf.image.stateless_random_brightness(image, 0.15 * 255.0, seeds[2])
        image = tf.image.stateless_random_contrast(image, 0.75, 1.25, seeds[3])
        if channels == 3:
            image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seeds[4])
    if "noise" in augment:
        image = image + tf.random.stateless_normal(tf.shape(image), seeds[5], stddev=0.04 * 255.0)
    for name in augment:
        if name.startswith("randaugment:"):  # after flip and crop, as timm; a seed of its own
            rgb = tf.clip_by_value(image, 0.0, 255.0)
            if channels == 1:  # the operations are written for RGB: a grey image goes through as RGB and back
                rgb = tf.image.grayscale_to_rgb(rgb)
            image = randaugment.randaugment(rgb, tf.random.experimental.stateless_fold_in(seed, 7),
                                            *randaugment.parse(name))[..., :channels]
    return tf.clip_by_value(image, 0.0, 255.0)


def make_dataset(data, split_name, batch_size, preprocessing, training=False, augment=(), seed=0,
                 target_fn=None, drop_remainder=False, options=None, parallel=True, prefetch=True, cache=False,
                 class_weights=None, mix=None):
    """The tf.data pipeline of one split: (decode) -> shuffle -> augment -> batch -> normalise -> prefetch.

    Labels are one-hot (for label smoothing); ``target_fn`` may map them further (GoogLeNet's three
    outputs). ``parallel`` maps and ``prefetch`` use AUTOTUNE; ``cache`` keeps decoded images in memory
    after the first pass (then shuffling happens after decoding). ``cnnkit bench data`` compares these.
    ``class_weights`` (one per class): each element is (image, target, its class's weight), the sample weight
    Keras multiplies that image's loss by. ``mix`` (a :class:`keras_cnns.mixing.Mix`): mixup / CutMix batches.
    """
    import tensorflow as tf

    calls = tf.data.AUTOTUNE if parallel else None
    split = data.split(split_name)
    num_classes = data.num_classes
    size, _, channels = data.input_shape
    labels = tf.data.Dataset.from_tensor_slices(split.y)
    if split.x is not None:
        images = tf.data.Dataset.from_tensor_slices(split.x)
    else:
        images = tf.data.Dataset.from_tensor_slices(split.paths)
    ds = tf.data.Dataset.zip((images, labels))

    def decode(ds):
        return ds.map(lambda p, y: (decode_file(p, size, channels), y), num_parallel_calls=calls, deterministic=True)

    if cache:
        ds = (decode(ds) if split.x is None else ds).cache()
    if training:
        ds = ds.shuffle(min(len(split), 50_000), seed=seed, reshuffle_each_iteration=True)
    if split.x is None and not cache:
        ds = decode(ds)
    if training and augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (augment_image(tf.cast(xy[0], tf.float32), s, augment), xy[1]),
            num_parallel_calls=calls, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if mix:
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda xy, s: (*xy, s))

    def finish(x, y, mix_seed=None):
        x, target = normalise(x, preprocessing), tf.one_hot(y, num_classes)
        weights = None if class_weights is None else tf.gather(tf.constant(class_weights, tf.float32), y)
        if mix:
            x, target, weights = mix_batch(x, target, mix_seed, mix, weights)
        out = x, (target_fn(target) if target_fn else target)
        return out if weights is None else (*out, weights)

    ds = ds.map(finish, num_parallel_calls=calls, deterministic=True)
    if options is not None:
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def write_samples(data, folder, split="test", per_class=1):
    """Save ``per_class`` images of each class of an in-memory split as PNG files (``LABEL_N.png``): real
    image files to send to a model server or ``cnnkit predict``. Returns the paths."""
    from PIL import Image

    from keras_cnns.files import write_atomic

    part = data.split(split)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for label, name in enumerate(data.class_names):
        for n, i in enumerate(np.flatnonzero(part.y == label)[:per_class]):
            image = part.x[i]
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
            paths.append(write_atomic(os.path.join(folder, f"{name}_{n}.png"), buffer.getvalue()))
    return paths
