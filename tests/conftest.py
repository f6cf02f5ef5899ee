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


def pytest_collection_finish(session):
    """What is imported by now (TensorFlow, the test modules: some 300,000 objects that live as long as the
    process) is moved out of the garbage collector's sight (gc.freeze). A full collection, which runs after each
    test (release_memory) and whenever TensorFlow's graph building triggers one, then takes about 1 ms instead
    of 0.2 s; what the tests themselves allocate is collected as before."""
    import gc

    gc.collect()
    gc.freeze()


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
    """Each test starts from an empty Keras graph and fixed seeds: Python's, NumPy's and TensorFlow's (an
    initializer given no seed draws one from Python's random module, so a model built without this has other
    weights in every run)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
    release_memory()


def shared(tmp_path_factory, worker_id, name, make):
    """A folder made once per test session: the first test process that asks runs ``make(folder)`` under a file
    lock, the others (xdist workers) wait and reuse it. Treat it as read-only. -> the folder (a Path)."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # the folder every worker of this session shares
        root = root.parent
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            make(folder)
            (root / f"{name}.done").touch()
    return folder


def _shared_run(tmp_path_factory, worker_id, name, **config):
    """A run trained once per session, alone in its folder (its parent's ``latest`` link points at it)."""
    import json

    from keras_cnns.training import TrainConfig, TrainResult, train

    run_dir = shared(tmp_path_factory, worker_id, name,
                     lambda folder: train(TrainConfig(output=str(folder / "run"), **config))) / "run"
    with open(run_dir / "metrics.json") as f:
        return TrainResult(str(run_dir), json.load(f))


@pytest.fixture(scope="session")
def default_lenet_run(tmp_path_factory, worker_id):
    """LeNet-5 trained on the bundled digits with every default (the README's main job), trained once per test
    session (see shared). -> TrainResult (run_dir, metrics)."""
    return _shared_run(tmp_path_factory, worker_id, "default-lenet")


@pytest.fixture(scope="session")
def photos_resnet20_run(tmp_path_factory, worker_id, photos):
    """ResNet-20 trained on ``photos`` at 32x32 for 8 epochs (the small-folder defaults), trained once per test
    session (see shared). -> TrainResult (run_dir, metrics)."""
    return _shared_run(tmp_path_factory, worker_id, "photos-resnet20", model="resnet20_cifar", data=photos,
                       input_size=32, epochs=8)


def cnnkit_here(*args, env=None):
    """``python -m cnnkit ARGS`` run in this test process (click's CliRunner): the command's own code, without
    starting another interpreter and TensorFlow (5 s of CPU each). For what only a real process shows (exit on
    a signal, TensorFlow's native start-up output), tests start one. -> (returncode, stdout, stderr) as
    subprocess.run gives them."""
    import subprocess

    from click.testing import CliRunner

    from cnnkit.cli import cli

    out = CliRunner(env=env).invoke(cli, [str(a) for a in args])
    if out.exception is not None and not isinstance(out.exception, SystemExit):
        raise out.exception  # a traceback in a real process: here, the test's own failure
    return subprocess.CompletedProcess(args, out.exit_code, out.stdout, out.stderr)


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
SLOW_MODULES = {"test_batchnorm.py", "test_bench.py", "test_export.py", "test_int8.py", "test_mobile.py",
                "test_params.py", "test_pretrained.py", "test_serving.py", "test_train_cli.py", "test_training.py",
                "test_zoo_build.py"}


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
def photos(tmp_path_factory, worker_id):
    """270 photos (PNG and JPEG) of discs, bars and crosses in three class folders, written once per test session
    (see shared): read-only."""
    return str(shared(tmp_path_factory, worker_id, "photos", write_photos))
