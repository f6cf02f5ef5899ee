import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's own pool keeps what a test freed; with the system allocator (as `cnnkit export` runs) it goes back
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
_USER_ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")

# isort: off
import keras_cnns  # noqa: E402,F401 - first, so TensorFlow starts as cnnkit sets it up (oneDNN on for training)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
# isort: on

pytest_plugins = ["memory_guard"]  # each test's peak memory logged, and failed above the budget

tf.constant(0)  # TensorFlow has read TF_ENABLE_ONEDNN_OPTS; subprocesses get cnnkit's own defaults, not ours
if _USER_ONEDNN is None:
    os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)


#: the loggers the CLI routes to the terminal (cnnkit/_common.log_to_stderr): an in-process CLI call (CliRunner)
#: must not leave them so for the tests that follow it in the same worker (caplog sees nothing then)
CLI_LOGGERS = ("keras_cnns", "serving", "serving.client", "export")


@pytest.fixture(autouse=True)
def _cli_logging_restored():
    import logging

    saved = {name: (list(lg.handlers), lg.propagate, lg.level)
             for name, lg in ((n, logging.getLogger(n)) for n in CLI_LOGGERS)}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from an empty Keras graph and fixed seeds."""
    keras.backend.clear_session()
    tf.random.set_seed(0)
    np.random.seed(0)
    yield
    keras.backend.clear_session()
    release_memory()


@pytest.fixture(scope="session")
def default_lenet_run(tmp_path_factory, worker_id):
    """LeNet-5 trained on the bundled digits with every default (the README's main job), trained once per test
    session: the first test process that asks trains it under a file lock, the others (xdist workers) wait
    and reuse the finished run. Treat it as read-only. -> TrainResult (run_dir, metrics)."""
    import fcntl
    import json

    from keras_cnns.training import TrainConfig, TrainResult, train

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # the folder every worker of this session shares
        root = root.parent
    run_dir = root / "default-lenet" / "run"
    run_dir.parent.mkdir(exist_ok=True)
    with open(root / "default-lenet" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run_dir / "metrics.json").exists():
            train(TrainConfig(output=str(run_dir)))
    with open(run_dir / "metrics.json") as f:
        return TrainResult(str(run_dir), json.load(f))


def release_memory():
    """What the test built goes back to the system, so that the next test's peak is its own (memory_guard)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


#: modules whose tests train a model, export one, or build the zoo's biggest: all of them are "slow", so that
#: `pytest -n 2 -m "not slow" tests` is a quick loop of a few minutes (CI runs everything)
SLOW_MODULES = {"test_batchnorm.py", "test_bench.py", "test_export.py", "test_mobile.py", "test_pretrained.py",
                "test_serving.py", "test_train_cli.py", "test_training.py", "test_zoo_build.py"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains, exports or builds big models (not in the quick loop; CI runs it)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def write_photos(root, per_class=90, size=48, seed=1, sizes=None, noise=12):
    """A small folder of PNG and JPEG photos in 3 classes: coloured discs, bars and crosses on noisy backgrounds.
    ``sizes``: (low, high) to draw each photo's height and width from apart (full-size, non-square photos);
    ``noise``: the grain's standard deviation (fine texture, which shrinking a full-size photo may alias)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    for name in ("disc", "bar", "cross"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            height, width = rng.randint(*sizes, 2) if sizes else (size, size)
            yy, xx = np.mgrid[0:height, 0:width] + 0.5
            r = rng.uniform(0.2, 0.35) * min(height, width)
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            u, v = (xx - cx, yy - cy) if rng.randint(2) else (yy - cy, xx - cx)  # horizontal or vertical
            if name == "disc":
                mask = u ** 2 + v ** 2 <= r ** 2
            elif name == "bar":
                mask = (np.abs(u) <= r) & (np.abs(v) <= r * 0.25)
            else:
                mask = ((np.abs(u) <= r) & (np.abs(v) <= r * 0.22)) | ((np.abs(v) <= r) & (np.abs(u) <= r * 0.22))
            image = np.where(mask[..., None], rng.uniform(130, 255, 3), rng.uniform(0, 110, 3))
            image = image + rng.normal(0, noise, (height, width, 3))
            ext = "jpg" if i % 3 == 0 else "png"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(root, name, f"{i:03d}.{ext}"))
    return str(root)


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """270 photos (PNG and JPEG) of discs, bars and crosses in three class folders."""
    return write_photos(tmp_path_factory.mktemp("photos"))
