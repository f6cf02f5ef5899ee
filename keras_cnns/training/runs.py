"""The run directory: what one training run leaves behind, and how to read it back.

::

    RUN_DIR/
      config.json      every hyper-parameter, the seed, library versions, the command line
      labels.txt       one class name per line, in output order
      best.keras       the inference model at the best validation accuracy (written atomically)
      last.keras       the inference model after the last completed epoch
      history.csv      one row per epoch: losses, metrics, learning rate, seconds
      history.png      loss / accuracy / learning rate per epoch
      metrics.json     final test metrics (present once the run has finished)
      confusion.png    the test confusion matrix
      logs/            TensorBoard
      backup/          BackupAndRestore state while the run is in progress (for --resume)
      snapshots/       snapshot-ensemble members, one per learning-rate cycle

``runs/latest`` is a symbolic link to the newest run.
"""
import json
import os
import re
import time

from keras_cnns.errors import CnnkitError
from keras_cnns.files import CONTRACT_ENTRY, load_model_file, read_json, write_atomic

DEFAULT_ROOT = "runs"


def write_labels(run_dir, labels):
    write_atomic(os.path.join(run_dir, "labels.txt"), "\n".join(labels) + "\n")


def new_run_dir(name, output=None, root=DEFAULT_ROOT):
    """Create the run directory: ``output`` if given (must not hold a run yet), else ``root/NAME-TIME``."""
    if output:
        if os.path.exists(os.path.join(output, "config.json")):
            raise CnnkitError(f"{output} already holds a run; continue it with --resume {output} "
                              "or choose another --output")
        os.makedirs(output, exist_ok=True)
        return os.path.abspath(output)
    os.makedirs(root, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{stamp}")
    path, n = base, 1
    while True:
        try:
            os.makedirs(path)
            return os.path.abspath(path)
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


def update_latest(run_dir):
    """Point ``<parent>/latest`` at ``run_dir`` (replaced atomically; skipped where links are not allowed)."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    link = os.path.join(parent, "latest")
    if os.path.exists(link) and not os.path.islink(link):
        return None
    tmp = f"{link}.tmp-{os.getpid()}"
    try:
        os.symlink(os.path.basename(os.path.abspath(run_dir)), tmp)
        os.replace(tmp, link)
    except OSError:
        return None
    return link


def resolve_run_dir(path):
    """A run directory the user named (``runs/latest`` included); a clear error when it is not a run."""
    if os.path.isfile(path) and os.path.exists(os.path.join(os.path.dirname(path) or ".", "config.json")):
        raise CnnkitError(f"{path} is a model file of the run {os.path.dirname(path) or '.'}; give the run "
                          "directory (its best.keras is used)")
    if not os.path.isdir(path):
        raise CnnkitError(f"run directory {path} does not exist")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise CnnkitError(f"{path} is not a run directory (no config.json); `cnnkit train` makes one")
    return os.path.realpath(path)


def read_config(run_dir):
    return read_json(os.path.join(resolve_run_dir(run_dir), "config.json"))


def read_labels(run_dir):
    with open(os.path.join(run_dir, "labels.txt"), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_run_model(run_dir, which="best"):
    """The saved inference model of a run: ``best`` (falls back to ``last``) or ``last``."""
    run_dir = resolve_run_dir(run_dir)
    for name in ((which, "last") if which == "best" else (which,)):
        path = os.path.join(run_dir, f"{name}.keras")
        if os.path.exists(path):
            return load_model_file(path)
    raise CnnkitError(f"{run_dir} has no saved model yet (no completed epoch); resume it with --resume")


def contract(name, labels, preprocessing, input_shape, data, source):
    """What a model file must carry so that it exports, serves and predicts exactly as where it came from,
    wherever it is copied: the model name, class names, preprocessing, input shape, the image contract
    (keras_cnns.imaging), the data ({"spec", "val_split", "test_split"}: the parity report's held-out images)
    and its source (a run folder, or what an export came from)."""
    from keras_cnns.imaging import RULE

    return {"cnnkit_contract": 1, "model": name, "labels": list(labels), "preprocessing": preprocessing,
            "input_shape": list(input_shape), "image": RULE, "data": data, "run": source}


def model_contract(run_dir):
    """The ``contract`` of a run's model files; None for a folder that holds no run (a multi-worker run's
    non-chief workers save into one of their own)."""
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        return None
    config = read_config(run_dir)
    data = config["data"]
    return contract(config["model"], read_labels(run_dir), config["preprocessing"], config["input_shape"],
                    {"spec": data["spec"], "val_split": data["val_split"], "test_split": data["test_split"]},
                    os.path.realpath(run_dir))


def read_model_contract(path):
    """The contract a model file carries (``save_model_atomic``), else that of the run folder it sits in,
    else None. A file whose contract entry is unreadable is a clear error, never a guess."""
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if CONTRACT_ENTRY in archive.namelist():
                try:
                    return json.loads(archive.read(CONTRACT_ENTRY).decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as err:
                    raise CnnkitError(f"{path}: its {CONTRACT_ENTRY} is damaged ({err})") from None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(os.path.join(folder, "config.json")) and os.path.exists(os.path.join(folder, "labels.txt")):
        return model_contract(folder)
    return None
