"""Import TensorFlow without the C++ start-up chatter that precedes absl's log initialisation.

TensorFlow's native libraries write "All log messages before absl::InitializeLog()..." and
CUDA-probe lines straight to file descriptor 2 while loading, before any Python setting applies.
The CLI owns the terminal, so it silences fd 2 for exactly that import and device discovery; real
errors raised afterwards are printed as usual.
"""
import contextlib
import os
import sys

_terminal = None  # the real stderr while file descriptor 2 is silenced


def terminal_stderr():
    """Where cnnkit's own messages go: the real stderr, also while native output is silenced."""
    return _terminal or sys.stderr


@contextlib.contextmanager
def stderr_silenced():
    global _terminal
    if os.environ.get("CNNKIT_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    outer, _terminal = _terminal, _terminal or os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        if outer is None:
            _terminal.close()
        _terminal = outer
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow(multiworker=False, serving=False, export=False):
    """Import TensorFlow quietly.

    ``CNNKIT_CPU_DEVICES=N`` splits the CPU into N logical devices (to try ``--strategy mirrored`` on a
    machine without GPUs), and ``multiworker`` creates the MultiWorkerMirroredStrategy: both must
    happen before TensorFlow starts its devices. ``serving``: oneDNN kernels off unless the user set
    TF_ENABLE_ONEDNN_OPTS (measured: 1.3-2.9x the embedded server's requests/s with MobileNet v2 at one
    client, benchmarks/RESULTS.md); TensorFlow reads the variable once, when it is first imported.
    ``export``: the system allocator (see export/child.py: SYSTEM_ALLOCATOR), so that the memory of the
    models the exporter releases goes back to the system before its converters run.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if export and "tensorflow" not in sys.modules:
        from export.child import SYSTEM_ALLOCATOR

        for key, value in SYSTEM_ALLOCATOR.items():
            os.environ.setdefault(key, value)
    if serving and "tensorflow" not in sys.modules:
        import keras_cnns

        if keras_cnns.ONEDNN_DEFAULTED:
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    with stderr_silenced():
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        if multiworker:
            from keras_cnns.training.trainer import make_strategy

            make_strategy("multiworker")
        cpus = tf.config.list_physical_devices("CPU")
        count = os.environ.get("CNNKIT_CPU_DEVICES", "")
        if count.isdigit() and int(count) > 1 and cpus:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(count))])
        tf.config.list_logical_devices()
        import keras_cnns  # noqa: F401
    return tf
