"""Run a converter in a child process of its own, so its peak does not stack on the exporter's memory.

The child is spawned (a fresh interpreter: no TensorFlow state is inherited, none is left behind). What a
converter holds at its peak, and what it keeps afterwards (TensorFlow's function caches, protobuf arenas:
5.4 GB were still resident after converting VGG-19 to ONNX in the exporting process), ends with the child.
As with any spawned process, a script that exports must guard its entry point (``if __name__ == "__main__":``).
"""
import os
import signal

from keras_cnns.errors import CnnkitError

#: TensorFlow's oneDNN builds allocate through a pool that keeps every block it has held until the process
#: ends (after VGG-19's Keras model was deleted: 1.3 GB still resident, reused by TensorFlow only). The
#: children, and the ``cnnkit export`` process itself, use the system allocator: freed memory goes back.
SYSTEM_ALLOCATOR = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}


def run(what, function, *args, pure_python_protobuf=False):
    """``function(*args)`` in a fresh child process: its result, or its exception raised here. A child that
    dies (e.g. killed by the kernel for want of memory) is a CnnkitError naming ``what``.
    ``pure_python_protobuf``: the child uses protobuf's pure-Python backend (see onnx_format._convert)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, args), daemon=True)
    environment = {key: os.environ.get(key, value) for key, value in SYSTEM_ALLOCATOR.items()}
    if pure_python_protobuf:
        environment["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)  # the child's environment from its first instruction: it inherits ours
    try:
        process.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        process.join()
        code = process.exitcode
        if code < 0:
            how = f"was killed by {signal.Signals(-code).name}" + (" (out of memory?)" if code == -signal.SIGKILL
                                                                   else "")
        else:  # e.g. the child re-ran a script without the guard and refused to start another process
            how = f'exited with code {code} (a script that exports needs an `if __name__ == "__main__":` guard)'
        raise CnnkitError(f"{what} {how} in its child process; nothing was published") from None
    finally:
        receive.close()
    process.join()
    if not ok:
        raise value
    return value


def _child(send, function, args):
    try:
        result = (True, function(*args))
    except Exception as err:  # noqa: BLE001 - every error goes back to the parent
        result = (False, err)
    try:
        send.send(result)
    except Exception:  # noqa: BLE001 - an exception that cannot be pickled goes back as its message
        send.send((False, CnnkitError(f"{type(result[1]).__name__}: {result[1]}")))
    send.close()

