"""Callbacks that make a run directory: history, atomic checkpoints, snapshots, NaN guard.

Keras' own callbacks (BackupAndRestore, EarlyStopping, TensorBoard, ReduceLROnPlateau, the progress
bar) are used as they are; these add what a resumable, inspectable run needs on top.
"""
import csv
import logging
import math
import os
import shutil
import time

import tf_keras as keras

from keras_cnns.files import replaced_atomically, save_model_atomic, write_atomic
from keras_cnns.training.runs import model_contract
from keras_cnns.training.schedules import learning_rate_at

log = logging.getLogger(__name__)


def read_history(path):
    """Rows of ``history.csv`` as dicts of floats, ``epoch`` an int counted from 1 as the console counts;
    [] when there is none. (Runs written before 0.1.0 counted from 0: they are read shifted by one.)"""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)})
    if rows and rows[0]["epoch"] == 0:
        for row in rows:
            row["epoch"] += 1
    return rows


class EpochLogs(keras.callbacks.Callback):
    """First in the list: adds the learning rate to every epoch's logs and names the main output's
    metrics plainly (GoogLeNet logs ``predictions_accuracy``; this adds ``accuracy``)."""

    def __init__(self, main_output=None):
        super().__init__()
        self.main_output = main_output

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lr"] = learning_rate_at(self.model.optimizer)
        if self.main_output:
            for prefix in ("", "val_"):
                head = f"{prefix}{self.main_output}_"
                for key in [k for k in logs if k.startswith(head)]:
                    logs.setdefault(prefix + key[len(head):], logs[key])  # never the total "loss"


def duration(seconds):
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: a time a person reads."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TimeLeft(keras.callbacks.Callback):
    """After each epoch, a line with how long it took and about how long the run has left (``log``: a logger). The
    first epoch also traces and compiles the training graph, so the estimate uses the epochs after it once there
    are some, and the first line says why it was slow."""

    def __init__(self, epochs, log):
        super().__init__()
        self.epochs, self.log, self.done = epochs, log, []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.done.append(time.perf_counter() - self._start)
        left = self.epochs - (epoch + 1)
        typical = self.done[1:] or self.done
        line = f"epoch {epoch + 1}/{self.epochs}: {duration(self.done[-1])}"
        if len(self.done) == 1:
            line += " (the first also builds and compiles the training graph)"
        if left:
            line += f"; about {duration(left * sum(typical) / len(typical))} left"
        self.log.info("%s", line)


class TerminateOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and records where: epoch, step and learning rate."""

    def __init__(self):
        super().__init__()
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.message = (f"training diverged: the loss became {float(loss)} at epoch {self._epoch + 1}, "
                            f"step {batch + 1} (learning rate {learning_rate_at(self.model.optimizer):.6g}); "
                            "lower --lr or add --warmup-epochs")
            self.model.stop_training = True


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Before every validation (so before the checkpoints chosen by it are written), sets the batch-norm
    statistics to those of the training split (``dataset``: un-augmented, shuffled); see batchnorm.py."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset
        self.recalibrator = None

    def on_test_begin(self, logs=None):
        from keras_cnns.training.batchnorm import Recalibrator

        self.recalibrator = self.recalibrator or Recalibrator(self.model)
        self.recalibrator(self.dataset)


class AveragedWeights(keras.callbacks.Callback):
    """--ema: the optimizer averages the trainable weights in every step (optimizers.make_optimizer); training
    steps on the raw weights, and what is validated, checkpointed (last/best.keras, snapshots) and so exported is
    the average. Placed before RecalibrateBatchNorm, this swaps the average in when validation begins (the
    batch-norm statistics are then re-estimated for it); ``restorer()``, placed after the checkpointing callbacks
    and before BackupAndRestore, puts the raw weights and their statistics back once the epoch is saved - except
    after the last epoch: the run ends on the average. The average is optimizer state, which BackupAndRestore
    keeps with the raw weights: a resumed run goes on averaging where it stopped."""

    def __init__(self):
        super().__init__()
        self._raw = None  # the raw weights and batch-norm statistics while the average is in

    def _variables(self):
        from keras_cnns.training.batchnorm import batch_norm_layers

        statistics = [v for layer in batch_norm_layers(self.model, trainable_only=False)
                      for v in (layer.moving_mean, layer.moving_variance)]
        return self.model.trainable_variables, statistics

    def on_test_begin(self, logs=None):
        from keras_cnns.training.optimizers import averaged_weights

        if self._raw is not None:
            return
        weights, statistics = self._variables()
        self._raw = keras.backend.batch_get_value(weights + statistics)
        keras.backend.batch_set_value(list(zip(weights, keras.backend.batch_get_value(
            averaged_weights(self.model.optimizer, weights)))))

    def restorer(self):
        outer = self

        class Restore(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                last = epoch + 1 >= self.params.get("epochs", 0) or self.model.stop_training
                if outer._raw is not None and not last:
                    weights, statistics = outer._variables()
                    keras.backend.batch_set_value(list(zip(weights + statistics, outer._raw)))
                    outer._raw = None

        return Restore()


class RunRecorder(keras.callbacks.Callback):
    """Owns ``history.csv`` and the ``last.keras`` / ``best.keras`` checkpoints of a run directory.

    Every epoch: one history row (all logs plus lr and wall time), ``last.keras``, and ``best.keras``
    when ``monitor`` improved (ties: lower ``tie_break``) - each written atomically. ``save_model`` is the model to save (the
    inference model: GoogLeNet without its auxiliary heads). On a resumed run the first epoch tells
    where BackupAndRestore restored to; history rows from that epoch on (written after the last
    backup, before the kill) are dropped so the file has each epoch exactly once.
    """

    def __init__(self, run_dir, save_model, monitor="val_accuracy", tie_break="val_loss"):
        super().__init__()
        self.run_dir = run_dir
        self.save_model = save_model
        self.monitor = monitor
        self.tie_break = tie_break
        self.best_loss = None
        self.session_epochs = 0
        self.path = os.path.join(run_dir, "history.csv")
        self.rows = None
        self.best = None
        self.best_epoch = None
        self._started = None

    def _better(self, value, loss):
        """Higher accuracy wins; on a tie (common on a small validation set) the lower loss wins."""
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or value > self.best:
            return True
        return value == self.best and loss is not None and self.best_loss is not None and loss < self.best_loss

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()
        if self.rows is None:
            self.rows = [r for r in read_history(self.path) if r["epoch"] <= epoch]  # epoch: 0-based, rows: 1-based
            for r in self.rows:
                if self._better(r.get(self.monitor), r.get(self.tie_break)):
                    self.best, self.best_loss, self.best_epoch = r[self.monitor], r.get(self.tie_break), r["epoch"] - 1

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        if not all(math.isfinite(v) for v in values.values()):
            log.warning("epoch %d has non-finite metrics; checkpoints not updated", epoch + 1)
            return
        row = {"epoch": epoch + 1, **values, "seconds": round(time.time() - self._started, 3)}
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        lines = [",".join(keys)] + [",".join(_fmt(r.get(k)) for k in keys) for r in self.rows]
        write_atomic(self.path, "\n".join(lines) + "\n")
        contract = model_contract(self.run_dir)  # inside every checkpoint: a copied file exports as its run
        save_model_atomic(self.save_model, os.path.join(self.run_dir, "last.keras"), contract)
        self.session_epochs += 1
        if self._better(values.get(self.monitor), values.get(self.tie_break)):
            self.best, self.best_loss, self.best_epoch = values[self.monitor], values.get(self.tie_break), epoch
            # the same model state as last.keras: a copy of it, not a second serialisation (0.7 s for MobileNet v2)
            with replaced_atomically(os.path.join(self.run_dir, "best.keras")) as tmp:
                shutil.copyfile(os.path.join(self.run_dir, "last.keras"), tmp)


def _fmt(value):
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else repr(float(value))


class SnapshotSaver(keras.callbacks.Callback):
    """Snapshot ensembles (Huang et al.): saves ``snapshots/epochNNN.keras`` at the end of each cyclic
    learning-rate cycle, when the rate is at its minimum."""

    def __init__(self, run_dir, save_model, epochs):
        super().__init__()
        self.folder = os.path.join(run_dir, "snapshots")
        self.save_model = save_model
        self.epochs = set(epochs)

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.epochs:
            os.makedirs(self.folder, exist_ok=True)
            save_model_atomic(self.save_model, os.path.join(self.folder, f"epoch{epoch + 1:03d}.keras"),
                              model_contract(os.path.dirname(self.folder)))
