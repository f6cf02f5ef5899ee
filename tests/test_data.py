"""Data specs, splits, real image folders (corrupt files included), .npz files, augmentation, pipelines."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_cnns.data import (
    augment_image,
    generate_shapes,
    load_data,
    make_dataset,
    parse_augment,
    stratified_split,
)
from keras_cnns.errors import CnnkitError


def test_digits_are_the_real_scikit_learn_digits_split_stratified_and_deterministic():
    a = load_data("digits", (32, 32, 1))
    b = load_data("digits", (32, 32, 1))
    assert a.class_names == [str(i) for i in range(10)]
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert len(a.test) == pytest.approx(0.15 * 1797, abs=10)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert a.train.x.shape[1:] == (32, 32, 1) and a.train.x.dtype == np.uint8
    counts = np.bincount(a.test.y)
    assert counts.min() >= 25 and counts.max() <= 29  # every digit in the test split, in proportion
    assert a.in_memory
    from sklearn.datasets import load_digits  # read from its data file, without importing scikit-learn

    from keras_cnns.data import digits_8x8

    pixels, labels = digits_8x8()
    reference = load_digits()
    np.testing.assert_array_equal(pixels, reference.images)
    np.testing.assert_array_equal(labels, reference.target)


def test_channels_follow_the_model():
    rgb = load_data("digits", (16, 16, 3))
    assert rgb.train.x.shape[1:] == (16, 16, 3)
    np.testing.assert_array_equal(rgb.train.x[..., 0], rgb.train.x[..., 2])  # grey replicated
    grey = load_data("shapes:10", (16, 16, 1))
    assert grey.train.x.shape[1:] == (16, 16, 1)


def test_generated_shapes_are_deterministic_rgb_and_balanced():
    x1, y1, names = generate_shapes(per_class=5)
    x2, _, _ = generate_shapes(per_class=5)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (20, 32, 32, 3) and names == ["circle", "square", "triangle", "cross"]
    assert np.bincount(y1).tolist() == [5, 5, 5, 5]
    assert not np.array_equal(x1[0], x1[1])


def test_stratified_split_keeps_every_class_in_every_part():
    y = np.repeat(np.arange(4), 20)
    rest, val, test = stratified_split(y, (0.25, 0.25))
    assert sorted(np.concatenate([rest, val, test]).tolist()) == list(range(80))
    for part in (val, test):
        assert np.bincount(y[part]).tolist() == [5, 5, 5, 5]


def test_normalised_training_pipeline_has_zero_mean_unit_std():
    data = load_data("digits", (32, 32, 1))
    ds = make_dataset(data, "train", 256, data.preprocessing)
    x = np.concatenate([b[0].numpy() for b in ds])
    assert abs(x.mean()) < 0.02 and x.std() == pytest.approx(1.0, abs=0.02)
    y = np.concatenate([b[1].numpy() for b in ds])
    assert y.shape == (len(data.train), 10) and np.all(y.sum(axis=1) == 1)  # one-hot


def _write_image(path, colour, size=20, fmt=None):
    Image.new("RGB", (size, size), colour).save(path, format=fmt)


@pytest.fixture
def photo_dir(tmp_path):
    """Real PNG and JPEG files in class folders, plus a fake and a truncated image."""
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(6):
            _write_image(folder / f"{i}.png", colour)
            _write_image(folder / f"{i}.jpg", colour, fmt="JPEG")
    (tmp_path / "red" / "notes.txt").write_text("not an image, ignored by extension")
    (tmp_path / "red" / "fake.jpg").write_bytes(b"this is text with a .jpg name")
    good = (tmp_path / "blue" / "0.png").read_bytes()
    (tmp_path / "blue" / "cut.png").write_bytes(good[: len(good) // 2])
    return tmp_path


def test_image_folder_decodes_real_files_and_skips_corrupt_ones_by_name(photo_dir):
    data = load_data(str(photo_dir), (8, 8, 3))
    assert data.class_names == ["blue", "red"]
    assert len(data.train) + len(data.val) + len(data.test) == 24
    skipped = sorted(p.split("/")[-1] for p, _ in data.skipped)
    assert skipped == ["cut.png", "fake.jpg"]
    red = data.train.x[data.train.y == 1]
    assert red[..., 0].mean() > 150 and red[..., 2].mean() < 80  # RGB order kept


def test_every_format_the_contract_names_is_read_from_a_folder(photo_dir):
    from keras_cnns.imaging import EXTENSIONS, FORMATS

    assert FORMATS == ("JPEG", "PNG", "GIF", "BMP", "WebP")  # one list: predict --help, its errors, the README
    for fmt, ending in (("GIF", ".gif"), ("BMP", ".bmp"), ("WEBP", ".webp")):
        assert ending in EXTENSIONS
        _write_image(photo_dir / "red" / f"more{ending}", (220, 20, 20), fmt=fmt)
    data = load_data(str(photo_dir), (8, 8, 3))
    assert len(data.train) + len(data.val) + len(data.test) == 27 and len(data.skipped) == 2


def test_strict_mode_stops_on_a_corrupt_image_naming_it_without_claiming_to_skip_it(photo_dir, caplog):
    with pytest.raises(CnnkitError, match=r"fake.jpg \(not a readable image"):
        load_data(str(photo_dir), (8, 8, 3), strict=True)
    assert "skipping" not in caplog.text


def test_a_folder_too_big_for_ram_streams_from_disk(photo_dir, monkeypatch):
    import keras_cnns.data as data_module

    monkeypatch.setattr(data_module, "_ram_budget", lambda: 0)
    data = load_data(str(photo_dir), (8, 8, 3))
    assert not data.in_memory and len(data.train.paths) == len(data.train)
    x, y = next(iter(make_dataset(data, "train", 64, data.preprocessing)))
    assert x.shape[1:] == (8, 8, 3) and y.shape[1] == 2


@pytest.mark.parametrize("layout, message", [
    ({}, "no class sub-folders"),
    ({"a": 2, "b": 0}, "class folder\\(s\\) with no images in .*: b"),
    ({"a": 4}, "single class"),
    ({"a": 0, "b": 0}, "no images"),
])
def test_bad_folders_fail_before_training(tmp_path, layout, message):
    for name, count in layout.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            _write_image(tmp_path / name / f"{i}.png", (i * 40, 0, 0))
    with pytest.raises(CnnkitError, match=message):
        load_data(str(tmp_path), (8, 8, 3))


def test_npz_file_with_class_names(tmp_path):
    x = np.random.RandomState(0).rand(30, 10, 10).astype(np.float32)  # floats in [0, 1]
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(30) % 3, class_names=np.array(["a", "b", "c"]))
    data = load_data(str(path), (12, 12, 1))
    assert data.class_names == ["a", "b", "c"] and data.train.x.dtype == np.uint8
    assert data.train.x.max() > 200  # scaled from [0, 1] to [0, 255]


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 8, 8))}, "has no array x or y"),
    ({"x": np.full((9, 8, 8), np.nan), "y": np.arange(9) % 3}, "NaN"),
    ({"x": np.zeros((9, 8, 8)), "y": np.arange(8) % 3}, "9 images but 8 labels"),
    ({"x": np.zeros((9, 8, 8)), "y": np.arange(9) * 0.5}, "integer class indices"),
    ({"x": np.zeros((9, 8, 8, 2)), "y": np.arange(9) % 3}, "must have shape"),
])
def test_bad_npz_files_are_clear_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(CnnkitError, match=message):
        load_data(str(path), (8, 8, 1))


def test_unreadable_npz_and_unknown_specs(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(CnnkitError, match="cannot read"):
        load_data(str(broken), (8, 8, 1))
    with pytest.raises(CnnkitError, match="not an existing folder or .npz file"):
        load_data("imagenet", (8, 8, 1))
    with pytest.raises(CnnkitError, match="does not exist"):
        load_data(str(tmp_path / "missing.npz"), (8, 8, 1))
    with pytest.raises(CnnkitError, match="unknown Keras data set"):
        load_data("keras:svhn", (8, 8, 1))


def test_augmentations_do_what_they_say_and_are_reproducible():
    image = tf.constant(np.tile(np.arange(8, dtype=np.float32)[None, :, None], (8, 1, 3)) * 30)
    seed = tf.constant([3, 4], tf.int64)
    flips = [augment_image(image, tf.constant([s, 0], tf.int64), ("flip",)).numpy() for s in range(16)]
    assert any(np.array_equal(f, image.numpy()[:, ::-1]) for f in flips)
    assert any(np.array_equal(f, image.numpy()) for f in flips)
    # crop: a translated view of the reflect-padded image (pad 2 at 16x16), at a different place per seed
    spot = np.zeros((16, 16, 3), np.float32)
    spot[7, 9] = 255.0
    padded = np.pad(spot, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    offsets = set()
    for s in range(24):
        crop = augment_image(tf.constant(spot), tf.constant([s, 1], tf.int64), ("crop",)).numpy()
        found = [(dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(crop, padded[dy:dy + 16, dx:dx + 16])]
        assert len(found) == 1, s
        offsets.add(found[0])
    assert len(offsets) >= 5 and offsets - {(2, 2)}  # the content moves, to many places
    noise = augment_image(image, seed, ("noise",)).numpy()
    assert 3 < np.abs(noise - image.numpy()).mean() < 20
    colour = augment_image(image, seed, ("color",)).numpy()
    assert not np.allclose(colour, image.numpy())
    every = ("flip", "crop", "noise", "color")
    np.testing.assert_array_equal(augment_image(image, seed, every), augment_image(image, seed, every))
    assert parse_augment("flip, crop") == ("flip", "crop")
    with pytest.raises(CnnkitError, match="unknown augmentation rotate"):
        parse_augment("flip,rotate")


def test_the_same_image_is_augmented_differently_in_each_epoch(tmp_path):
    # 18 gradients told apart by their brightness (12 grey levels apart), so each is found after shuffling
    x = np.stack([np.tile(np.linspace(0, 20, 16, dtype=np.float32)[None, :, None], (16, 1, 3)) + 12 * i
                  for i in range(18)]).astype(np.uint8)
    np.savez(tmp_path / "grey.npz", x=x, y=np.arange(18) % 2)
    data = load_data(str(tmp_path / "grey.npz"), (16, 16, 3))
    raw = {"scale": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3}
    ds = make_dataset(data, "train", 64, raw, training=True, augment=("crop", "noise"), seed=1)

    def by_source(batch):
        return {int(round((img.mean() - 10) / 12)): img for img in batch}

    first, second = (by_source(next(iter(ds))[0].numpy()) for _ in range(2))
    assert sorted(first) == sorted(second) and len(first) == len(data.train)
    for i in first:  # the same source image, two epochs: different pixels
        assert np.abs(first[i] - second[i]).mean() > 3


def test_training_pipeline_shuffles_and_augments_differently_each_epoch():
    data = load_data("shapes:8", (16, 16, 3))
    ds = make_dataset(data, "train", 64, data.preprocessing, training=True, augment=("noise",), seed=1)
    first, second = [next(iter(ds))[0].numpy() for _ in range(2)]
    assert not np.allclose(first, second)
    again = make_dataset(data, "train", 64, data.preprocessing, training=True, augment=("noise",), seed=1)
    np.testing.assert_array_equal(first, next(iter(again))[0].numpy())  # same seed, same first epoch
