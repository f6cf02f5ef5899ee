"""keras_cnns.files: a file is replaced whole or not at all; a saved model loads as tf_keras loads it."""
import os

import pytest

from keras_cnns.files import replaced_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(OSError):
        with replaced_atomically(str(path), ".json") as tmp:
            assert tmp.endswith(".json") and os.path.dirname(tmp) == str(tmp_path)
            assert os.path.basename(tmp).startswith(".")  # hidden from a reader listing *.json
            with open(tmp, "w") as f:
                f.write("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    with replaced_atomically(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
        assert path.read_text() == "old"  # not yet: only when the block ends
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]


def test_a_keras_file_loads_as_tf_keras_loads_it_and_one_with_assets_through_tf_keras(tmp_path, monkeypatch):
    """load_model_file reads a .keras archive's weights from an extracted copy (tf_keras reads them inside the
    zip, where each backward seek starts the member over): the same model as tf_keras's own loader gives."""
    import zipfile

    import numpy as np
    import tf_keras as keras

    import keras_cnns
    from keras_cnns.errors import CnnkitError
    from keras_cnns.files import load_model_file

    built = keras_cnns.create_model("alexnet", num_classes=5, input_shape=(67, 67, 3))  # LRN, two towers (grouped)
    for w in built.weights:  # trained-looking statistics, not the initial ones
        w.assign(np.random.RandomState(len(w.name)).normal(0, 0.05, w.shape).astype(w.dtype.as_numpy_dtype) + 0.5)
    path = str(tmp_path / "m.keras")
    built.save(path)
    calls = []  # what went through tf_keras's own loader
    original = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: calls.append(a) or original(*a, **k))
    ours, theirs = load_model_file(path), original(path, compile=False)
    assert ours.get_config() == theirs.get_config() and len(ours.weights) == len(built.weights)
    for a, b, c in zip(ours.weights, theirs.weights, built.weights):
        assert a.name == b.name and np.array_equal(a.numpy(), b.numpy()) and np.array_equal(a.numpy(), c.numpy())
    x = np.random.RandomState(0).uniform(0, 1, (2, 67, 67, 3)).astype(np.float32)
    np.testing.assert_array_equal(ours(x).numpy(), built(x).numpy())

    with_assets = str(tmp_path / "assets.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(with_assets, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("assets/vocabulary.txt", "a\nb\n")
    assert load_model_file(with_assets).count_params() == built.count_params() and calls == [(with_assets,)]
    (tmp_path / "broken.keras").write_bytes(open(path, "rb").read()[:5000])
    with pytest.raises(CnnkitError, match="cannot load model .*broken.keras"):
        load_model_file(str(tmp_path / "broken.keras"))


def test_a_full_temporary_disk_while_loading_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """The weights are extracted to a temporary folder: no space there is a CnnkitError naming the cause, and
    the half-written copy is removed."""
    import glob
    import shutil
    import tempfile

    import keras_cnns
    from keras_cnns.errors import CnnkitError
    from keras_cnns.files import load_model_file

    path = str(tmp_path / "m.keras")
    keras_cnns.create_model("lenet5").save(path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def full(src, dst, length=0):
        dst.write(src.read(1000))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(CnnkitError, match=r"cannot load model .*m\.keras: .*No space left on device"):
        load_model_file(path)
    assert glob.glob(str(tmp_path / "tmp" / "*")) == []
    monkeypatch.undo()
    assert load_model_file(path).count_params() == 61_706
