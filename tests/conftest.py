import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as keras_cnns sets it: test what users run

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from an empty Keras graph and fixed seeds."""
    keras.backend.clear_session()
    tf.random.set_seed(0)
    np.random.seed(0)
    yield
    keras.backend.clear_session()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a longer training run (still part of the CI suite)")
