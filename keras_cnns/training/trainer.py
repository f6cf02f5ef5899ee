"""Training: a zoo model + a data set -> a run directory, with Keras ``fit`` as a compiled static graph.

``mode`` picks how the train step runs: ``graph`` (default) traces it once into a ``tf.function``,
``xla`` also jit-compiles that graph with XLA, ``eager`` runs the same step op by op in Python
(define-by-run, like a dynamic framework). The run records the mode and how many times the step
function was traced.
"""
import dataclasses
import errno
import logging
import math
import os
import platform
import sys
import tempfile
import time

from keras_cnns import files
from keras_cnns.data import load_data, make_dataset, parse_augment
from keras_cnns.errors import CnnkitError, UnknownOptionError
from keras_cnns.mixing import Mix
from keras_cnns.training import batchnorm, class_weights, lbfgs, precision, runs
from keras_cnns.training.callbacks import (
    AveragedWeights,
    EpochLogs,
    RecalibrateBatchNorm,
    RunRecorder,
    SnapshotSaver,
    TerminateOnNaN,
    TimeLeft,
    read_history,
)
from keras_cnns.training.optimizers import DEFAULT_LR, add_weight_penalty, make_optimizer
from keras_cnns.training.schedules import build_schedule, cycle_end_epochs
from keras_cnns.training.transfer import FinetunePlan, prepare_finetune_model

log = logging.getLogger(__name__)

MODES = ("graph", "eager", "xla")
STRATEGIES = ("default", "mirrored", "multiworker")
BN_RECALIBRATE = ("auto", "always", "never")
#: GoogLeNet's auxiliary classifiers: their losses are weighted by 0.3 (Szegedy et al.)
AUX_LOSS_WEIGHT = 0.3


@dataclasses.dataclass
class TrainConfig:
    """Every hyper-parameter of a run; saved in ``config.json`` and enough to resume it."""

    model: str = "lenet5"
    data: str = "digits"
    epochs: int = 30
    batch_size: int = 32
    input_size: int = None
    model_options: dict = dataclasses.field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = None
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: int = 0
    step_epochs: int = None
    gamma: float = 0.1
    decay: float = 0.1
    restart_epochs: int = None
    t_mul: float = 2.0
    min_lr: float = 0.0
    weight_decay: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = None
    #: batch-norm moving-average momentum for every BN layer (None: chosen from the epoch's length, see
    #: batchnorm.default_momentum)
    bn_momentum: float = None
    #: re-estimate batch-norm statistics before every validation: auto (short epochs), always or never
    bn_recalibrate: str = "auto"
    label_smoothing: float = 0.0
    #: auto | balanced | none | a JSON file {class: weight} (class_weights.py; auto: balanced when imbalanced)
    class_weight: str = "auto"
    #: mixup / CutMix Beta alphas (0: off) and, with both on, the chance a batch uses CutMix (keras_cnns.mixing)
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_switch_prob: float = 0.5
    #: exponential moving average of the weights (this decay; None: off): what is validated, saved and exported
    ema: float = None
    augment: tuple = ()
    snapshots: int = 0
    early_stopping: int = None
    mode: str = "graph"
    strategy: str = "default"
    #: auto: mixed bfloat16 where it trains faster (precision.py), float32 elsewhere
    precision: str = "auto"
    seed: int = 0
    deterministic: bool = False
    val_split: float = 0.15
    test_split: float = 0.15
    strict: bool = False
    output: str = None
    #: set by `finetune`: which layers train and why (transfer.FinetunePlan; a dict as read from config.json)
    finetune: FinetunePlan = None
    #: start from pretrained weights: "imagenet" or a checkpoint file (keras_cnns.pretrained); None = random
    weights: str = None

    def validate(self):
        if isinstance(self.finetune, dict):  # as config.json keeps it
            self.finetune = FinetunePlan(**self.finetune)
        data = str(self.data)
        if os.path.isdir(data) or (data.lower().endswith(".npz") and os.path.isfile(data)):
            self.data = os.path.abspath(data)  # the run works from any folder: evaluate, export, resume
        if self.weights == "none":
            self.weights = None
        elif self.weights and self.weights != "imagenet":
            if not os.path.isfile(self.weights):
                raise CnnkitError(f"weights file {self.weights} does not exist (weights are imagenet, none or a file)")
            self.weights = os.path.abspath(self.weights)
        for name, value, allowed in (("mode", self.mode, MODES), ("strategy", self.strategy, STRATEGIES),
                                     ("precision", self.precision, precision.CHOICES)):
            if value not in allowed:
                raise CnnkitError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise CnnkitError(f"epochs must be a positive integer, got {self.epochs}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise CnnkitError(f"batch size must be a positive integer, got {self.batch_size}")
        if not 0 <= self.label_smoothing < 1:
            raise CnnkitError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise CnnkitError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.bn_momentum is not None and not 0 < self.bn_momentum < 1:
            raise CnnkitError(f"batch-norm momentum must be in (0, 1), got {self.bn_momentum}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise CnnkitError(f"warm-up must be shorter than the run: {self.warmup_epochs} of {self.epochs} epochs")
        if self.snapshots and self.snapshots > self.epochs:
            raise CnnkitError(f"{self.snapshots} snapshots need at least as many epochs, got {self.epochs}")
        self.class_weight = class_weights.check(self.class_weight)
        for name in ("mixup", "cutmix"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise CnnkitError(f"--{name} is a Beta distribution's alpha, >= 0 (0: off), got {getattr(self, name)}")
        if self.ema is not None and (isinstance(self.ema, bool) or not 0 < self.ema < 1):
            raise CnnkitError(f"--ema is the moving average's decay, between 0 and 1 (0.99-0.9999 usual), got "
                              f"{self.ema!r}")
        if not 0 <= self.mix_switch_prob <= 1:
            raise CnnkitError(f"--mix-switch-prob is a probability, got {self.mix_switch_prob}")
        self.augment = parse_augment(",".join(self.augment) if isinstance(self.augment, (list, tuple))
                                     else self.augment)
        if self.optimizer == "lbfgs":
            given = [flag for flag, on in (("--lr auto", self.lr == "auto"), ("--ema", self.ema),
                                           ("--snapshots", self.snapshots), ("--mode eager/xla", self.mode != "graph"))
                     if on]
            if given:
                raise CnnkitError(f"--optimizer lbfgs takes its steps by line search over the whole training split: "
                                  f"{', '.join(given)} do not apply to it")
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 0.01)
        elif self.lr != "auto" and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not 0 < self.lr < float("inf")):
            raise CnnkitError(f"the learning rate is a number > 0 or auto (the range test), got {self.lr!r}")
        return self


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    metrics: dict
    model: object = None


# --------------------------------------------------------------------------------------------------
# Devices


def make_strategy(name):
    """``default``: one device; ``mirrored``: all GPUs, else all logical CPUs (set CNNKIT_CPU_DEVICES
    to split the CPU); ``multiworker``: MultiWorkerMirroredStrategy from ``TF_CONFIG``."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    global _MULTIWORKER
    if _MULTIWORKER is None:  # one per process, created before TensorFlow starts its devices
        if not os.environ.get("TF_CONFIG"):
            raise CnnkitError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's task) "
                              "in the environment")
        try:
            _MULTIWORKER = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as err:
            raise CnnkitError(f"MultiWorkerMirroredStrategy must be created before TensorFlow starts: {err}; "
                              "start a fresh process") from None
    return _MULTIWORKER


_MULTIWORKER = None


def is_chief(strategy):
    """True on the one worker that writes the run directory."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and \
        "chief" not in resolver.cluster_spec().as_dict()


# --------------------------------------------------------------------------------------------------


def _versions():
    import tensorflow as tf
    import tf_keras

    import keras_cnns
    from keras_cnns.utils import onednn_enabled

    return {"cnnkit": keras_cnns.__version__, "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "python": platform.python_version(), "tf_onednn": onednn_enabled()}


def _input_shape(config):
    if config.finetune:  # the source model's input
        return tuple(config.finetune.input_shape)
    from keras_cnns import get_model_info

    info = get_model_info(config.model)
    h, _, c = info.input_shape
    size = config.input_size or h
    return (size, size, c)


def _preprocessing(config, data):
    """A fine-tuned model keeps the normalisation its features were learnt with, pretrained weights theirs."""
    if config.finetune:
        return config.finetune.preprocessing
    if not config.weights:
        return data.preprocessing
    from keras_cnns import pretrained

    return pretrained.find_checkpoint(config.model, config.model_options, data.input_shape).preprocessing


def _start_line(config, data, model, steps_per_epoch):
    """What is about to be trained, on what, for how long: the first line of a run (a zoo name given in another
    spelling says which model it is)."""
    from keras_cnns.analysis import count_trainable
    from keras_cnns.registry import get_model_info, is_model_name

    if config.finetune:
        what = f"{model.name} fine-tuned from {config.finetune}"
    else:
        what = get_model_info(config.model).name if is_model_name(config.model) else str(config.model)
        if what != str(config.model):
            what += f" (the zoo's name for {config.model!r})"
    h, w, c = data.input_shape
    return (f"training {what}, {count_trainable(model) / 1e6:.2f}M trainable parameters, at {h}x{w}x{c} on "
            f"{data.spec}: {len(data.train):,} training images, {steps_per_epoch} steps an epoch, {config.epochs} "
            "epochs")


def _build(config, data):
    """The training model (GoogLeNet: three outputs) and the inference model it shares weights with."""
    import keras_cnns

    if config.finetune:
        model = prepare_finetune_model(config.finetune, data.num_classes, data.input_shape)
    else:
        options = dict(config.model_options)
        if config.dropout is not None:
            options["dropout"] = config.dropout
        try:
            model = keras_cnns.create_model(config.model, num_classes=data.num_classes,
                                            input_shape=data.input_shape, weights=config.weights, **options)
        except UnknownOptionError as err:
            if config.dropout is not None and "dropout" in err.options:
                raise CnnkitError(f"{config.model} has no dropout layer to set with --dropout") from None
            raise
    return model, keras_cnns.inference_model(model)


def _batch_norm_plan(model, config, steps_per_epoch):
    """Set every batch-norm layer's momentum and decide on recalibration; the record for config.json."""
    layers = batchnorm.batch_norm_layers(model, trainable_only=False)
    if not layers:
        return {"layers": 0, "recalibrate": False, "why": "the model has no batch-norm layers"}
    momentum = config.bn_momentum or batchnorm.default_momentum(steps_per_epoch)
    batchnorm.set_momentum(model, momentum)
    recalibrate, why = batchnorm.needs_recalibration(steps_per_epoch, momentum)
    if config.ema:
        recalibrate, why = True, "--ema: the averaged weights are validated and saved with statistics of their own"
    if config.bn_recalibrate != "auto":
        recalibrate, why = config.bn_recalibrate == "always", f"--bn-recalibrate {config.bn_recalibrate}"
    return {"layers": len(layers), "momentum": momentum,
            "momentum_from": "--bn-momentum" if config.bn_momentum else f"{steps_per_epoch} steps per epoch",
            "recalibrate": recalibrate, "why": why}


def _compile(model, config, steps_per_epoch, constant_lr=None):
    """``constant_lr``: a plain rate (a variable the LR range test sets each step) instead of the schedule."""
    import tf_keras as keras

    name = "sgdr" if config.snapshots else config.schedule  # snapshot ensembles need the cyclic rate
    schedule = constant_lr if constant_lr is not None else build_schedule(
        name, config.lr, steps_per_epoch, config.epochs, warmup_epochs=config.warmup_epochs,
        step_epochs=config.step_epochs, gamma=config.gamma, decay=config.decay,
        restart_epochs=_restart_epochs(config), t_mul=_t_mul(config), min_lr=config.min_lr)
    decoupled = config.optimizer == "adamw"
    optimizer = make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                               weight_decay=config.weight_decay if decoupled else 0.0,
                               ema=config.ema if constant_lr is None else None)
    # --weight-decay lambda is the gradient lambda * w: an L2 penalty of lambda / 2 * sum(w^2)
    l2 = config.l2 + (0.0 if decoupled else config.weight_decay / 2.0)
    add_weight_penalty(model, l1=config.l1, l2=l2)
    main = model.output_names[0]

    def metrics():
        found = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if model.outputs[0].shape[-1] > 5:
            found.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
        return found

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    if len(model.outputs) > 1:
        loss = {name: loss for name in model.output_names}
        weights = {name: (1.0 if name == main else AUX_LOSS_WEIGHT) for name in model.output_names}
        model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, metrics={main: metrics()},
                      run_eagerly=config.mode == "eager", jit_compile=config.mode == "xla")
    else:
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics(), run_eagerly=config.mode == "eager",
                      jit_compile=config.mode == "xla")
    # Variables made now, not inside the first step: a tf.function that creates variables traces twice. The
    # optimiser's slots, and for a model with several outputs (GoogLeNet) the per-output loss and metric trackers.
    optimizer.build(model.trainable_variables)
    if len(model.outputs) > 1:
        import tensorflow as tf

        outputs = tuple(model(tf.zeros((1, *model.input_shape[1:])), training=False))
        model.compiled_loss.build(outputs)
        model.compiled_metrics.build(outputs, outputs)


def _restart_epochs(config):
    if config.snapshots:  # equal cycles: the cyclic cosine of snapshot ensembles (Huang et al.)
        return max(1, (config.epochs - config.warmup_epochs) // config.snapshots)
    return config.restart_epochs


def _t_mul(config):
    return 1.0 if config.snapshots else config.t_mul


def _write_run_files(run_dir, config, data, model, preprocessing, resumed, bn_plan, precision_plan, weight_plan,
                     lr_plan):
    from keras_cnns.analysis import count_trainable

    path = os.path.join(run_dir, "config.json")
    if resumed:
        saved = files.read_json(path)
        saved.setdefault("resumed", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": sys.argv})
        files.write_json(path, saved)
        return
    files.write_json(path, {
        "model": config.finetune.name if config.finetune else config.model,
        "train": dataclasses.asdict(config),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "params": int(model.count_params()),
        "trainable_params": int(count_trainable(model)),
        "data": {"spec": data.spec, "val_split": config.val_split, "test_split": config.test_split,
                 "train": len(data.train), "val": len(data.val), "test": len(data.test), "in_memory": data.in_memory,
                 "skipped": [p for p, _ in data.skipped]},
        "preprocessing": preprocessing,
        "batch_norm": bn_plan,
        "precision": precision_plan,
        "class_weight": weight_plan,
        "lr_find": lr_plan,
        "versions": _versions(),
        "command": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    runs.write_labels(run_dir, data.class_names)


def train(config, resume_dir=None, verbose=0, data=None):
    """Run ``config`` (a :class:`TrainConfig`) to completion and return a :class:`TrainResult`.

    ``resume_dir``: continue that run from its last completed epoch (BackupAndRestore state).
    ``verbose``: Keras' progress output (0 silent, 1 progress bar, 2 one line per epoch).
    ``data``: an already loaded :class:`~keras_cnns.data.ImageData` for ``config.data``.
    """
    import tensorflow as tf
    import tf_keras as keras

    config.validate()
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    input_shape = _input_shape(config)
    if data is None or tuple(data.input_shape) != tuple(input_shape):
        data = load_data(config.data, input_shape, val_split=config.val_split, test_split=config.test_split,
                         strict=config.strict)
    lr_plan = _resolve_lr(config, data) if config.lr == "auto" else None
    run_dir = _run_dir(config, resume_dir, chief)
    weight_plan = class_weights.resolve(config.class_weight, data.train.y, data.class_names)
    if weight_plan["weights"]:
        log.info("class weights %s", weight_plan["why"])
    replicas = strategy.num_replicas_in_sync
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    if config.ema and 1 / (1 - config.ema) > steps_per_epoch * config.epochs / 4:
        log.warning("--ema %s averages over about %d steps, more than a quarter of this run's %d: the average "
                    "still holds much of the initial weights at the end; --ema %.3g fits this run", config.ema,
                    round(1 / (1 - config.ema)), steps_per_epoch * config.epochs,
                    1 - 10 / (steps_per_epoch * config.epochs))

    gpus = tf.config.list_physical_devices("GPU")
    policy, why = precision.resolve(config.precision, gpus)
    if config.optimizer == "lbfgs" and config.precision == "auto":
        policy, why = "float32", "L-BFGS's line search compares losses that bfloat16 would blur"
    keras.mixed_precision.set_global_policy(policy)
    if policy == "mixed_float16" and not gpus:
        log.warning("--precision mixed_float16 on a CPU: float16 is meant for GPUs and may fall back to slower "
                    "kernels here; a CPU's mixed precision is --precision mixed_bfloat16 (AVX512-BF16 or AMX)")
    try:
        with strategy.scope():
            model, inference = _build(config, data)
            if config.optimizer == "lbfgs":
                lbfgs.refuse_if_needed(config, model, data)
            chosen = precision.for_model(config.precision, policy, why, model)
            if chosen[0] != policy:  # auto, on a second look at the model: built again in that precision
                keras.mixed_precision.set_global_policy(chosen[0])
                model, inference = _build(config, data)
            policy, why = chosen
            if config.precision == "auto":
                log.info("precision auto: %s (%s)", policy, why)
            bn_plan = _batch_norm_plan(model, config, steps_per_epoch)
            _compile(model, config, steps_per_epoch)
        pre = _preprocessing(config, data)
        if chief:
            _write_run_files(run_dir, config, data, model, pre, resumed=bool(resume_dir), bn_plan=bn_plan,
                             precision_plan={"requested": config.precision, "policy": policy, "why": why},
                             weight_plan=weight_plan, lr_plan=lr_plan)
        main = model.output_names[0] if len(model.outputs) > 1 else None
        target_fn = (lambda t: {name: t for name in model.output_names}) if main else None
        options = None
        if config.strategy == "multiworker":
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds = _train_dataset(config, data, model, weight_plan, options)
        val_ds = make_dataset(data, "val", config.batch_size, pre, target_fn=target_fn, options=options)

        if chief:
            log.info("%s", _start_line(config, data, model, steps_per_epoch))
        nan_guard, recorder = TerminateOnNaN(), RunRecorder(run_dir, inference)
        callbacks = _callbacks(config, data, run_dir, inference, pre, main, bn_plan, nan_guard, recorder)
        started, lbfgs_record = time.time(), None
        try:
            if config.optimizer == "lbfgs":
                lbfgs_record = _fit_lbfgs(model, inference, config, data, pre, weight_plan, val_ds, callbacks,
                                          resume_dir, run_dir, verbose)
            else:
                model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                          verbose=verbose)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise CnnkitError(f"no space left on the device while writing {err.filename or run_dir}; completed "
                              f"epochs are kept: free space, then `cnnkit train --resume {run_dir}`") from None
        seconds = time.time() - started
        traces = model.train_function.experimental_get_tracing_count() \
            if hasattr(model.train_function, "experimental_get_tracing_count") else 0
    except BaseException:
        if chief and not resume_dir:  # a run that failed before writing anything leaves no empty folder
            files.remove_if_empty(run_dir)
        raise
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if nan_guard.message:
        kept = "keeps the last good epoch" if os.path.exists(os.path.join(run_dir, "last.keras")) else \
            "has no completed epoch"
        raise CnnkitError(f"{nan_guard.message}; the run directory {run_dir} {kept}")
    try:  # BackupAndRestore removed its state at the end of a finished fit; drop the empty folder
        os.rmdir(os.path.join(run_dir, "backup"))
    except OSError:
        pass
    if not chief:
        return TrainResult(run_dir, {"worker": True, "replicas": replicas}, inference)

    metrics = _final_metrics(config, data, run_dir, inference, pre, bn_plan, recorder, seconds, traces, replicas,
                             policy)
    if lbfgs_record:
        metrics["lbfgs"] = lbfgs_record
    files.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    runs.update_latest(run_dir)
    return TrainResult(run_dir, metrics, inference)


def _train_dataset(config, data, model, weight_plan, options=None):
    """The training batches: shuffled, augmented, weighted by class, mixed; a target for each output."""
    target_fn = (lambda t: {name: t for name in model.output_names}) if len(model.outputs) > 1 else None
    return make_dataset(data, "train", config.batch_size, _preprocessing(config, data), training=True,
                        augment=config.augment, seed=config.seed, target_fn=target_fn, options=options,
                        class_weights=class_weights.as_array(weight_plan, data.class_names),
                        mix=Mix(config.mixup, config.cutmix, config.mix_switch_prob))


def _fit_lbfgs(model, inference, config, data, pre, weight_plan, val_ds, callbacks, resume_dir, run_dir, verbose):
    """--optimizer lbfgs (lbfgs.py): the run's callbacks without BackupAndRestore (a resumed run restarts L-BFGS
    from its last epoch's weights, with a fresh curvature memory). -> what it did, for metrics.json"""
    import tf_keras as keras

    done = len(read_history(os.path.join(run_dir, "history.csv"))) if resume_dir else 0
    if done:
        inference.set_weights(runs.load_run_model(run_dir, "last").get_weights())
    weights = class_weights.as_array(weight_plan, data.class_names)
    objective = make_dataset(data, "train", 256, pre, class_weights=weights)
    train_eval = make_dataset(data, "train", 256, pre)
    kept = [c for c in callbacks if not isinstance(c, keras.callbacks.BackupAndRestore)]
    return lbfgs.fit(model, objective, train_eval, val_ds, kept, config, initial_epoch=done, verbose=verbose)


def find_learning_rate(config, data=None, steps=200, min_lr=1e-7, max_lr=10.0):
    """The learning-rate range test (lr_find.py) of ``config``'s model, from its initial weights, on its
    training split with its batch size, optimizer, penalties, augmentation, class weights and mixing (in
    float32, one device). -> lr_find.range_test's record plus what it ran on."""
    import tf_keras as keras

    from keras_cnns.training import lr_find

    config.validate()
    keras.utils.set_random_seed(config.seed)
    if data is None or tuple(data.input_shape) != tuple(_input_shape(config)):
        data = load_data(config.data, _input_shape(config), val_split=config.val_split,
                         test_split=config.test_split, strict=config.strict)
    model, _ = _build(config, data)
    _compile(model, config, math.ceil(len(data.train) / config.batch_size), constant_lr=min_lr)
    dataset = _train_dataset(config, data, model,
                             class_weights.resolve(config.class_weight, data.train.y, data.class_names))
    found = lr_find.range_test(model, dataset, min_lr=min_lr, max_lr=max_lr, steps=steps)
    keras.backend.clear_session()
    return {**found, "model": config.model, "data": data.spec, "optimizer": config.optimizer,
            "batch_size": config.batch_size, "steps": steps, "min_lr": min_lr, "max_lr": max_lr}


def _resolve_lr(config, data):
    """--lr auto: the range test's suggestion, or a clear refusal."""
    from tf_keras.utils import set_random_seed as keras_seed

    found = find_learning_rate(dataclasses.replace(config), data=data)
    if found["suggested"] is None:
        raise CnnkitError(f"--lr auto: the loss never fell during the learning-rate range test ({found['stopped']}); "
                          "give --lr yourself (cnnkit lr-find shows the curve)")
    keras_seed(config.seed)  # the run's own model starts from the same weights as with a given --lr
    config.lr = float(f"{found['suggested']:.2g}")
    if config.finetune:
        config.finetune.lr = config.lr
    log.info("--lr auto: %s (the range test's minimum %.3g, a tenth of it; %s)", config.lr, found["min_loss_lr"],
             found["stopped"])
    return {key: found[key] for key in ("suggested", "min_loss_lr", "steepest_lr", "stopped", "steps", "min_lr",
                                        "max_lr")}


def _run_dir(config, resume_dir, chief):
    """The run directory: the resumed one, a new one (the chief), or a worker's own."""
    if resume_dir:
        return runs.resolve_run_dir(resume_dir)
    if chief:
        return runs.new_run_dir(config.finetune.name if config.finetune else config.model, config.output)
    # saving is collective: other workers save too, into a directory of their own
    run_dir = os.path.abspath(config.output) if config.output else tempfile.mkdtemp(prefix="cnnkit-worker-")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def _callbacks(config, data, run_dir, inference, pre, main, bn_plan, nan_guard, recorder):
    """The Keras callbacks of a run, in order: logs, the NaN guard, the weight average (--ema) in, batch-norm
    recalibration, the schedule's and early stopping's, TensorBoard, the run recorder (checkpoints), snapshots,
    the raw weights back (--ema), then BackupAndRestore."""
    import tf_keras as keras

    callbacks = [EpochLogs(main), nan_guard, TimeLeft(config.epochs, log)]
    averaged = AveragedWeights() if config.ema else None
    if averaged:  # before the recalibration: the statistics are re-estimated for the averaged weights
        callbacks.append(averaged)
    if bn_plan["recalibrate"]:  # each worker pools the whole training split: the same statistics on all
        callbacks.append(RecalibrateBatchNorm(make_dataset(data, "train", config.batch_size, pre, training=True,
                                                           seed=config.seed + 1)))
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.gamma,
                                                           patience=2, min_lr=config.min_lr))
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.early_stopping))
    callbacks += [keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), profile_batch=0), recorder]
    if config.snapshots:
        ends = cycle_end_epochs(config.epochs, _restart_epochs(config), 1.0, config.warmup_epochs)
        callbacks.append(SnapshotSaver(run_dir, inference, ends[-config.snapshots:]))
    if averaged:  # the checkpoints hold the average, the backup the raw weights (and the average, as optimizer state)
        callbacks.append(averaged.restorer())
    callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")))
    return callbacks


def _final_metrics(config, data, run_dir, inference, pre, bn_plan, recorder, seconds, traces, replicas, policy):
    """After the last epoch: the batch-norm consistency check, the history plot, the test evaluation, and
    what the run measured."""
    from keras_cnns.plots import plot_history
    from keras_cnns.training.evaluation import evaluate_run

    history = read_history(recorder.path)
    check = None
    if bn_plan["layers"] and history:  # does the saved (inference-mode) model do what training reported?
        sample = make_dataset(data, "train", config.batch_size, pre, training=True, seed=config.seed + 2)
        check = batchnorm.consistency_check(inference, sample, history[-1].get("accuracy"))
        if check["warning"]:
            log.warning("%s", check["warning"])
    plot_history(history, os.path.join(run_dir, "history.png"), title=f"{config.model} on {data.spec}")
    metrics = evaluate_run(run_dir, data=data)
    metrics.update({
        "epochs_completed": len(history),
        "best_epoch": (recorder.best_epoch + 1) if recorder.best_epoch is not None else None,
        "best_val_accuracy": recorder.best,
        "mode": config.mode, "traces": int(traces), "strategy": config.strategy, "replicas": replicas,
        "precision": policy,
        "batch_norm": {**bn_plan, "check": check},
        "train_seconds": round(seconds, 2),
        "train_images_per_second": round(len(data.train) * recorder.session_epochs / seconds, 1),
    })
    if config.snapshots:
        from keras_cnns.training.ensemble import evaluate_snapshots

        metrics["snapshot_ensemble"] = evaluate_snapshots(run_dir, data)
    return metrics


def finetune(source, data_spec, strategy="auto", similar=True, lr=None, lr_factor=0.1, verbose=0, weights=None,
             **train_options):
    """Fine-tune ``source`` (run dir, model file, or zoo name with ``weights``) on ``data_spec``; returns the
    trainer's result.

    ``lr`` defaults to the source run's rate for ``head`` and ``lr_factor`` times it otherwise.
    """
    from keras_cnns.training.transfer import plan_finetune

    plan, data = plan_finetune(source, strategy, data_spec, similar, weights, train_options.pop("input_size", None),
                               val_split=train_options.get("val_split", 0.15),
                               test_split=train_options.get("test_split", 0.15),
                               strict=train_options.get("strict", False))
    if plan.preprocessing is None:  # a bare model file: normalise with the new data's statistics
        plan.preprocessing = data.preprocessing
    config = TrainConfig(model=plan.source_model, data=data_spec, finetune=plan, **train_options)
    if lr is None:
        base = plan.source_lr or DEFAULT_LR.get(config.optimizer, 0.01)
        lr = base if plan.strategy == "head" else base * lr_factor
    config.lr = plan.lr = lr
    return train(config, data=data, verbose=verbose)


def resume(run_dir, verbose=0):
    """Continue a run that was stopped (killed, preempted) from its last completed epoch."""
    run_dir = runs.resolve_run_dir(run_dir)
    if os.path.exists(os.path.join(run_dir, "metrics.json")):
        raise CnnkitError(f"{run_dir} has already finished (metrics.json exists); nothing to resume")
    saved = runs.read_config(run_dir)
    saved["train"].setdefault("class_weight", "none")  # a run from before --class-weight trained without
    config = TrainConfig(**saved["train"])
    return train(config, resume_dir=run_dir, verbose=verbose)
