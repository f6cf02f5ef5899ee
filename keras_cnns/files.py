"""The file layer: writing so that a reader never sees half a file (every file cnnkit writes goes through
``replaced_atomically``), JSON, and saved model files (with the contract they carry: keras_cnns.training.runs)."""
import contextlib
import json
import os

from keras_cnns.errors import CnnkitError


@contextlib.contextmanager
def replaced_atomically(path, suffix=""):
    """Yields a hidden temporary sibling of ``path`` (ending in ``suffix``: writers that go by the extension) to
    write; renamed onto ``path`` when the block ends without an error, removed in any case otherwise. A full
    disk, a kill or an exception leaves ``path`` as it was, and a reader listing the folder for ``*.keras`` or
    ``*.png`` never meets the half-written file."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path, data):
    """Write ``data`` (str or bytes) through a temporary sibling and a rename: never half a file."""
    binary = isinstance(data, bytes)
    with replaced_atomically(path) as tmp, open(tmp, "wb" if binary else "w",
                                                 encoding=None if binary else "utf-8") as f:
        f.write(data)
    return path


#: the entry of a ``.keras`` file (a zip archive) that holds its contract (see ``model_contract``)
CONTRACT_ENTRY = "cnnkit.json"


def save_model_atomic(model, path, contract=None):
    """``model.save(path)`` through a temporary sibling and a rename (Keras needs the .keras suffix), with
    ``contract`` (see ``model_contract``) inside the file: Keras reads its own entries and ignores this one."""
    import zipfile

    with replaced_atomically(path, ".keras") as tmp:
        model.save(tmp)
        if contract is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(CONTRACT_ENTRY, json.dumps(contract, indent=2, default=_jsonable))


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def remove_if_empty(folder):
    """Remove ``folder`` if nothing is in it (what a failed command created and never filled)."""
    try:
        os.rmdir(folder)
    except OSError:  # not empty, or already gone
        pass


def load_model_file(path):
    """Load a saved tf_keras model (``.keras`` or ``.h5``) with the zoo's custom layers known."""
    import tf_keras as keras

    import keras_cnns.layers  # noqa: F401  (registers the custom layers)
    import keras_cnns.training.schedules  # noqa: F401

    if not os.path.exists(path):
        raise CnnkitError(f"model file {path} does not exist")
    from keras_cnns.layers.grouped import use_native_grouped_convolutions

    try:
        model = _load_keras_archive(path) if path.endswith(".keras") else keras.models.load_model(path, compile=False)
    except Exception as err:  # a damaged or foreign file
        raise CnnkitError(f"cannot load model {path}: {err}") from None
    use_native_grouped_convolutions(model)
    return float32_model(model)


def _load_keras_archive(path):
    """A ``.keras`` file as ``tf_keras.models.load_model(path, compile=False)`` loads it, without its cost:
    tf_keras lets h5py read the weights inside the zip archive, where every backward seek starts the member
    over from its beginning, so the load grows with size x seeks (FractalNet-20's 135 MB: 28 s). Here the
    weights are extracted once and the same config is deserialized the same way, then loaded from the copy
    (2 s). An archive with assets (or without h5 weights) goes through tf_keras's own loader."""
    import shutil
    import tempfile
    import zipfile

    import tf_keras as keras
    from tf_keras.src.saving.serialization_lib import ObjectSharingScope  # as load_model deserializes

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "model.weights.h5" not in names or any(name.startswith("assets/") for name in names):
            return keras.models.load_model(path, compile=False)
        config = json.loads(archive.read("config.json"))
        config["compile_config"] = None  # compile=False
        with tempfile.TemporaryDirectory(prefix="cnnkit-load-") as tmp:
            weights = os.path.join(tmp, "model.weights.h5")
            with archive.open("model.weights.h5") as src, open(weights, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            with ObjectSharingScope():
                model = keras.saving.deserialize_keras_object(config, safe_mode=True)
            model.load_weights(weights)
    return model


def _mixed(policy):
    """A dtype policy (its name, or its config as saved) that computes in bfloat16 or float16."""
    name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
    return isinstance(name, str) and name.startswith("mixed_")


def _float32_config(config):
    """``config`` with every mixed-precision dtype policy replaced by float32 (nested models included)."""
    if isinstance(config, dict):
        return {k: "float32" if k == "dtype" and _mixed(v) else _float32_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def float32_model(model):
    """A model trained with mixed precision (``--precision bfloat16``) as a float32 model: its weights are float32
    already, only its layers compute in bfloat16/float16. Loaded checkpoints are float32, so what is exported,
    evaluated or fine-tuned computes as every runtime does (TFLite has no bfloat16 convolution). Other models
    are returned as they are."""
    import tf_keras as keras

    if not any(_mixed(layer.dtype_policy.name) for layer in model.submodules if isinstance(layer, keras.layers.Layer)):
        return model
    rebuilt = model.__class__.from_config(_float32_config(model.get_config()))
    rebuilt.set_weights(model.get_weights())
    return rebuilt
