"""Writing files so that a reader never sees half of one: every file cnnkit writes goes through here."""
import contextlib
import os


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
