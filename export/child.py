"""Run a converter in a child process, so its peak does not stack on the exporter's memory.

The child is spawned (a fresh interpreter: no TensorFlow state is inherited, none is left behind). What a
converter holds at its peak, and what it keeps afterwards (TensorFlow's function caches, protobuf arenas:
5.4 GB were still resident after converting VGG-19 to ONNX in the exporting process), ends with the child.
As with any spawned process, a script that exports must guard its entry point (``if __name__ == "__main__":``).

Starting a child costs more than most conversions: the interpreter and TensorFlow take 6-7 s of CPU, converting
LeNet-5 to TFLite 1 s. Within ``reuse()`` (an export's converters) a child that finished its job therefore takes
the next one, as long as what it kept is small (its resident size below ``KEEP_BELOW_MB``: 0.65 GB after every
LeNet-5 format, 0.74 GB after ResNet-18's at 64x64); a child that grew beyond it (VGG-19) ends after its job.
"""
import contextlib
import os
import signal

from keras_cnns.errors import CnnkitError

#: TensorFlow's oneDNN builds allocate through a pool that keeps every block it has held until the process
#: ends (after VGG-19's Keras model was deleted: 1.3 GB still resident, reused by TensorFlow only). The
#: children, and the ``cnnkit export`` process itself, use the system allocator: freed memory goes back.
SYSTEM_ALLOCATOR = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
#: within ``reuse()``, a child whose resident size after a job is below this takes the next job (a fresh
#: interpreter with TensorFlow imported: 0.62 GB)
KEEP_BELOW_MB = 1024

_kept = None  # within reuse(): {environment: the child waiting for its next job}
_keep_below_mb = 0


@contextlib.contextmanager
def reuse(keep_below_mb=KEEP_BELOW_MB):
    """Within this block a child takes the next job of the same environment while its resident size after a job
    is below ``keep_below_mb`` (0: a fresh child for every job); every child has ended when the block ends."""
    global _kept, _keep_below_mb
    if _kept is not None:  # an outer block decides
        yield
        return
    _kept, _keep_below_mb = {}, keep_below_mb
    try:
        yield
    finally:
        kept, _kept = _kept, None
        for worker in kept.values():
            worker.close()


def run(what, function, *args, pure_python_protobuf=False):
    """``function(*args)`` in a child process: its result, or its exception raised here. A child that dies
    (e.g. killed by the kernel for want of memory) is a CnnkitError naming ``what``. A fresh child for each
    call, except within ``reuse()``.
    ``pure_python_protobuf``: the child uses protobuf's pure-Python backend (see onnx_format._convert)."""
    environment = {key: os.environ.get(key, value) for key, value in SYSTEM_ALLOCATOR.items()}
    if pure_python_protobuf:
        environment["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    key = tuple(sorted(environment.items()))
    worker = _kept.pop(key, None) if _kept is not None else None
    if worker is None or not worker.process.is_alive():  # none kept, or it died while it waited
        if worker is not None:
            worker.close(wait=0)
        worker = _Child(environment)
    try:
        ok, value, resident_mb = worker.call(function, args)
    except (EOFError, OSError):  # the child died: its end of the pipe closed
        code = worker.close()
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}" + (" (out of memory?)" if code == -signal.SIGKILL
                                                                   else "")
        else:  # e.g. the child re-ran a script without the guard and refused to start another process
            how = f'exited with code {code} (a script that exports needs an `if __name__ == "__main__":` guard)'
        raise CnnkitError(f"{what} {how} in its child process; nothing was published") from None
    except BaseException:  # e.g. Ctrl-C while the child works, or arguments that cannot be pickled
        worker.close(wait=0)
        raise
    if ok and _kept is not None and resident_mb < _keep_below_mb:
        _kept[key] = worker
    else:  # a failed job may leave its converter in a bad state: the next one starts afresh
        worker.close()
    if not ok:
        raise value
    return value


class _Child:
    """A spawned interpreter that runs the jobs sent to it, one at a time, until it is sent None."""

    def __init__(self, environment):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True)
        saved = {k: os.environ.get(k) for k in environment}
        os.environ.update(environment)  # the child's environment from its first instruction: it inherits ours
        try:
            self.process.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        theirs.close()  # only the child holds that end now: its death is an EOF here

    def call(self, function, args):
        """(ok, result or exception, the child's resident MB afterwards)"""
        self.connection.send((function, args))
        return self.connection.recv()

    def close(self, wait=60):
        """End the child (it is told to stop; killed if it has not within ``wait`` s); returns its exit code."""
        with contextlib.suppress(OSError):
            self.connection.send(None)
        self.connection.close()
        self.process.join(wait)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        return self.process.exitcode


def return_freed_memory():
    """What Python and the allocator hold but no longer use goes back to the system (``malloc_trim``: glibc only)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _serve(connection):
    while True:
        try:
            job = connection.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        function, args = job
        try:
            result = (True, function(*args))
        except Exception as err:  # noqa: BLE001 - every error goes back to the parent
            result = (False, err)
        return_freed_memory()
        try:
            connection.send((*result, _resident_mb()))
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled goes back as its message
            connection.send((False, CnnkitError(f"{type(result[1]).__name__}: {result[1]}"), _resident_mb()))


def _resident_mb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # not Linux: never kept
        return float("inf")
