"""``cnnkit train / evaluate / finetune / ensemble``: thin wrappers over :mod:`keras_cnns.training`."""
import json
import os
import sys

import click

from cnnkit._common import parse_options, table
from cnnkit._quiet import import_tensorflow
from keras_cnns.errors import CnnkitError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lbfgs")
SCHEDULES = ("constant", "step", "exponential", "inverse-time", "cosine", "sgdr", "plateau")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")


class _LearningRate(click.ParamType):
    name = "LR|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, float):
            return value
        try:
            rate = float(value)
        except ValueError:
            rate = 0.0
        if not 0 < rate < float("inf"):
            self.fail(f"{value!r} is neither a learning rate > 0 nor auto", param, ctx)
        return rate

# options train and finetune share; each is named like its TrainConfig field
_fit_options = [
    click.option("--epochs", type=click.IntRange(min=1), help="Epochs to train (train: 30, finetune: 10)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                 help="Global batch size (split across replicas)."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True,
                 help="momentum/nesterov use rho 0.9; adam/adamw beta1 0.9, beta2 0.999. lbfgs: full-batch L-BFGS "
                      "(SciPy), one iteration an epoch, its line search in place of a learning rate; for a training "
                      "split that fits in memory, on a model without batch norm, without augmentation or mixing."),
    click.option("--lr", type=_LearningRate(),
                 help="Initial learning rate (default: 0.01 for sgd/momentum/nesterov/adagrad, 0.003 for adam/adamw, "
                      "0.001 for rmsprop). auto: a tenth of where the loss bottoms out in the learning-rate range "
                      "test (cnnkit lr-find), run first; config.json records it."),
    click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True,
                 help="rho of momentum / nesterov."),
    click.option("--schedule", type=click.Choice(SCHEDULES), default="cosine", show_default=True,
                 help="Learning-rate schedule: step (x gamma every --step-epochs), exponential (a0 e^-kt), "
                      "inverse-time (a0/(1+kt)), cosine, sgdr (warm restarts), plateau (x gamma when val loss stalls)."),
    click.option("--warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Linear warm-up in front of the schedule."),
    click.option("--step-epochs", type=click.IntRange(min=1), help="step: epochs between drops (default a third)."),
    click.option("--gamma", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
                 help="step / plateau: factor per drop."),
    click.option("--decay", type=click.FloatRange(min=0), default=0.1, show_default=True,
                 help="exponential / inverse-time: k per epoch."),
    click.option("--restart-epochs", type=click.IntRange(min=1), help="sgdr: length of the first cycle."),
    click.option("--t-mul", type=click.FloatRange(min=1), default=2.0, show_default=True,
                 help="sgdr: each cycle this many times longer."),
    click.option("--min-lr", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="cosine / sgdr / plateau: floor."),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="L2 weight decay (decoupled for adamw)."),
    click.option("--l1", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="L1 penalty on kernels (with --l2: elastic net)."),
    click.option("--l2", type=click.FloatRange(min=0), default=0.0, show_default=True, help="L2 penalty on kernels."),
    # the rule of keras_cnns.training.batchnorm.default_momentum (importing it here would start TensorFlow)
    click.option("--bn-momentum", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 help="Batch-norm moving-average momentum for every batch-norm layer. Default: 1 - 10 / (steps per "
                      "epoch), clipped to [0.9, 0.99] (0.9 below 100 steps an epoch, 0.99 from 1000)."),
    click.option("--bn-recalibrate", type=click.Choice(("auto", "always", "never")), default="auto",
                 show_default=True,
                 help="Before every validation (so before each checkpoint), set batch-norm statistics to those of "
                      "the un-augmented training split. auto: unless an epoch has 1000+ steps and the moving "
                      "average spans at most a tenth of it."),
    click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True),
    click.option("--class-weight", metavar="auto|balanced|none|FILE", default="auto", show_default=True,
                 help="Weigh each image's loss by its class: balanced = inverse frequency (every class weighs the "
                      "same); auto = balanced when the largest class has more than 3x the training images of the "
                      "smallest (said in the log), else none; FILE = a JSON object {class name: weight}."),
    click.option("--augment", default="", metavar="LIST",
                 help="Comma list of flip, crop, noise, color, randaugment[:N:M] (RandAugment: N of 14 operations "
                      "per image at magnitude M of 10; 2 and 9 by default)."),
    click.option("--mixup", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="ALPHA",
                 help="mixup: each training batch blends image pairs and their labels by lam ~ Beta(ALPHA, ALPHA) "
                      "(0.2-0.4 usual; 0: off)."),
    click.option("--cutmix", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="ALPHA",
                 help="CutMix: a box of one image pasted into another, labels mixed by area (1.0 usual; 0: off)."),
    click.option("--mix-switch-prob", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="With --mixup and --cutmix: the chance that a batch uses CutMix rather than mixup."),
    click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="DECAY",
                 help="Keep an exponential moving average of the weights (average = DECAY * average + (1 - DECAY) * "
                      "weights, every step): validation, the checkpoints and so the export use the average, with "
                      "batch-norm statistics re-estimated for it. Its span, 1 / (1 - DECAY) steps, should be well "
                      "under the run's length (0.99 for a few hundred steps; 0.9999 for ImageNet)."),
    click.option("--early-stopping", type=click.IntRange(min=1), metavar="PATIENCE",
                 help="Stop after this many epochs without a better validation accuracy."),
    click.option("--mode", type=click.Choice(("graph", "eager", "xla")), default="graph", show_default=True,
                 help="graph: compiled tf.function; xla: also XLA jit-compiled; eager: op by op (dynamic)."),
    click.option("--precision", type=click.Choice(("auto", "float32", "mixed_float16", "bfloat16", "mixed_bfloat16")),
                 default="auto", show_default=True,
                 help="Arithmetic of the layers (weights and the exported model stay float32). auto: mixed bfloat16 "
                      "on a CPU with AVX512-BF16 or AMX unless the model has depthwise convolutions (measured faster "
                      "there), else float32; config.json says what it chose and why. mixed_float16 is for GPUs."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--deterministic", is_flag=True, help="Deterministic ops: same seed, same numbers (slower)."),
    click.option("--val-split", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.15,
                 show_default=True, help="Fraction held out for validation (stratified)."),
    click.option("--test-split", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.15,
                 show_default=True, help="Fraction held out for the final test."),
    click.option("--strict", is_flag=True, help="Stop on an unreadable image instead of skipping it."),
    click.option("--output", type=click.Path(file_okay=False), help="Run directory (default runs/MODEL-TIME)."),
    json_option,
]


def fit_options(f):
    for option in reversed(_fit_options):
        f = option(f)
    return f


def _config_kwargs(kwargs):
    """The options that are TrainConfig fields (call after import_tensorflow: it imports tf_keras)."""
    import dataclasses

    from keras_cnns.training import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in kwargs.items() if k in fields and v is not None}


def _verbosity(as_json):
    if as_json:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _report(result, as_json, extra=None, json_only=None):
    """The run's result: ``extra`` printed as lines too, ``json_only`` in --json alone (said while running)."""
    metrics = dict(result.metrics)
    out = {"run_dir": result.run_dir, **(json_only or {}), **(extra or {}), "metrics": metrics}
    if as_json:
        click.echo(json.dumps(out))
        return
    for key, value in (extra or {}).items():
        click.echo(f"{key.replace('_', ' ')}: {f'{value:.6g}' if isinstance(value, float) else value}")
    _print_metrics(metrics)
    if "epochs_completed" in metrics:
        click.echo(f"epochs {metrics['epochs_completed']}, best epoch {metrics['best_epoch']} "
                   f"(validation accuracy {metrics['best_val_accuracy']:.2%}); mode {metrics['mode']}: train step "
                   f"traced {metrics['traces']} time(s), {metrics['train_images_per_second']:,.0f} images/s")
    snap = metrics.get("snapshot_ensemble")
    if snap and "accuracy" in snap:
        click.echo(f"snapshot ensemble of {snap['members']}: test accuracy {snap['accuracy']:.2%} "
                   f"(members: {', '.join(f'{a:.2%}' for a in snap['member_accuracy'])})")
    click.echo(f"run directory: {result.run_dir}")


def _print_metrics(metrics):
    top = next((k for k in metrics if k.startswith("top") and k.endswith("_accuracy")), None)
    click.echo(f"test accuracy {metrics['accuracy']:.2%}" + (f", {top.split('_')[0]} {metrics[top]:.2%}" if top else "")
               + f", loss {metrics['loss']:.4f} on {metrics['samples']} images ({metrics['data']}, {metrics['split']})")
    if metrics.get("warning"):
        click.echo(f"warning: {metrics['warning']}")


@click.command()
@click.argument("model", required=False, metavar="MODEL")
@click.option("--data", default="digits", show_default=True, metavar="SPEC",
              help="digits | shapes[:N] | DIR of class folders | FILE.npz | keras:cifar10 | tfds:NAME.")
@click.option("--input-size", type=click.IntRange(min=1), help="Square input side (default: the model's own).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Model family option (repeatable).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), help="Dropout rate (models that have dropout).")
@click.option("--weights", metavar="imagenet|none|FILE", default="none", show_default=True,
              help="Start from the model's published ImageNet checkpoint (every layer but the classifier when the "
                   "classes differ; the checkpoint's preprocessing is used), a checkpoint file, or none (random).")
@click.option("--snapshots", type=click.IntRange(min=0), default=0,
              help="Snapshot ensemble: N cosine cycles, one saved model at the end of each.")
@click.option("--strategy", type=click.Choice(("default", "mirrored", "multiworker")), default="default",
              show_default=True, help="tf.distribute: mirrored = all GPUs (or CNNKIT_CPU_DEVICES=N logical CPUs); "
                                      "multiworker = MultiWorkerMirroredStrategy from TF_CONFIG.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue a stopped run from its last completed epoch (other options are taken from it).")
@fit_options
def train(model, data, input_size, options, dropout, weights, snapshots, resume_dir, as_json, **kwargs):
    """Train MODEL on --data and write a run directory.

    \b
    Examples:
      cnnkit train lenet5                               LeNet-5 on the bundled digits
      cnnkit train resnet20_cifar --data ./photos --input-size 32 --augment flip,crop
      cnnkit train mobilenet_v2 --input-size 32 --optimizer momentum --lr 0.05 --schedule sgdr
      cnnkit train resnet50 --weights imagenet --data ./photos   full fine-tune from ImageNet
      cnnkit train --resume runs/latest                 continue a killed run
    """
    if kwargs.get("precision") == "mixed_float16" and not os.environ.get("CNNKIT_DEBUG"):
        # on a CPU without float16 kernels TensorFlow writes a native error line at the first step; the
        # trainer says it in words instead (TensorFlow reads this once, when it starts)
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import_tensorflow(multiworker=kwargs.get("strategy") == "multiworker")
    from keras_cnns.training import TrainConfig, resume
    from keras_cnns.training import train as run_training

    if resume_dir:
        result = resume(resume_dir, verbose=_verbosity(as_json))
    else:
        if not model:
            raise CnnkitError("name a MODEL to train (`cnnkit models` lists them) or --resume RUN_DIR")
        config = TrainConfig(model=model, data=data, input_size=input_size, model_options=parse_options(options),
                             dropout=dropout, snapshots=snapshots, weights=weights, **_config_kwargs(kwargs))
        result = run_training(config, verbose=_verbosity(as_json))
    _report(result, as_json)


@click.command()
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--data", metavar="SPEC", help="Another data set (all of it; classes matched by name). "
                                             "Default: the run's own test split.")
@json_option
def evaluate(run_dir, data, as_json):
    """Accuracy, top-5, loss, per-class precision/recall and a confusion-matrix PNG for a run; its calibration
    (expected calibration error over 15 confidence bins, a reliability diagram PNG) before and after a
    temperature fitted on the run's validation split."""
    import_tensorflow()
    from keras_cnns.training import evaluate_run

    metrics = evaluate_run(run_dir, data_spec=data)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    _print_metrics(metrics)
    rows = [(name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", c["support"]) for name, c in metrics["per_class"].items()]
    click.echo(table(("class", "precision", "recall", "images"), rows, right=(1, 2, 3)))
    click.echo(f"confusion matrix: {metrics['confusion_png']}")
    found = metrics.get("calibration")
    if found:
        line = f"calibration: ECE {found['ece']:.1%} over {found['bin_count']} confidence bins"
        if found["temperature"]:
            line += (f"; temperature {found['temperature']:.2f} (fitted on {found['temperature_images']} validation "
                     f"images) gives {found['ece_after_temperature']:.1%}")
        else:
            line += f" ({found['temperature_note']})"
        click.echo(line)
        click.echo(f"reliability diagram: {found['reliability_png']}")


@click.command()
@click.argument("source", metavar="SOURCE")
@click.option("--data", required=True, metavar="SPEC", help="The new data set (same forms as for train).")
@click.option("--strategy", "how", default="auto", show_default=True, metavar="head|top:K|full|auto",
              help="head: only a new classifier; top:K: also the top K blocks; full: everything; auto: from the "
                   "data size and --similar/--different.")
@click.option("--similar/--different", default=True, help="Is the new data like the source's? (for auto)")
@click.option("--lr-factor", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="top:K / full: learning rate = this x the source run's.")
@click.option("--weights", metavar="imagenet|FILE",
              help="For a zoo model name SOURCE: its ImageNet checkpoint (the default) or a checkpoint file.")
@click.option("--input-size", type=click.IntRange(min=1), help="For a zoo model name SOURCE: square input side.")
@fit_options
def finetune(source, data, how, similar, lr_factor, weights, input_size, as_json, **kwargs):
    """Transfer learning: fine-tune SOURCE (a run directory, .keras file, or a zoo model name with its
    pretrained weights) on new --data.

    \b
    Examples:
      cnnkit finetune mobilenet_v2 --weights imagenet --data ./photos --strategy auto
      cnnkit finetune runs/latest --data ./photos --strategy top:2
    """
    import_tensorflow()
    from keras_cnns.training import finetune as run_finetune

    options = _config_kwargs(kwargs)
    options.setdefault("epochs", 10)
    result = run_finetune(source, data, strategy=how, similar=similar, lr_factor=lr_factor,
                          verbose=_verbosity(as_json), weights=weights, input_size=input_size, **options)
    from keras_cnns.training import runs

    plan = runs.read_config(result.run_dir)["train"]["finetune"]  # what auto chose, and why
    _report(result, as_json, extra={"learning_rate": plan["lr"]},  # the strategy was logged when it was chosen
            json_only={"strategy": plan["label"], "why": plan["reason"]})


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--output", type=click.Path(file_okay=False), help="Run directory for the ensemble.")
@json_option
def ensemble(run_dirs, output, as_json):
    """Average several runs (or one run's --snapshots) into one model, evaluated on the test split."""
    import_tensorflow()
    from keras_cnns.training import ensemble_runs

    out, metrics = ensemble_runs(list(run_dirs), output)
    if as_json:
        click.echo(json.dumps({"run_dir": out, "metrics": metrics}))
        return
    _print_metrics(metrics)
    click.echo("members: " + ", ".join(f"{a:.2%}" for a in metrics["member_accuracy"]))
    click.echo(f"run directory: {out}")


@click.command(name="lr-find")
@click.argument("model", metavar="MODEL")
@click.option("--data", default="digits", show_default=True, metavar="SPEC", help="As for train.")
@click.option("--input-size", type=click.IntRange(min=1), help="Square input side (default: the model's own).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Model family option (repeatable).")
@click.option("--steps", type=click.IntRange(min=10), default=200, show_default=True,
              help="Training steps of the test (the data repeats as needed).")
@click.option("--start-lr", type=click.FloatRange(min=0, min_open=True), default=1e-7, show_default=True)
@click.option("--end-lr", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False), default="lr_find.png", show_default=True,
              help="Where to draw the loss against the learning rate.")
@fit_options
def lr_find(model, data, input_size, options, steps, start_lr, end_lr, plot, as_json, **kwargs):
    """The learning-rate range test (Smith 2017): train MODEL from its initial weights for --steps steps while the
    learning rate grows exponentially from --start-lr to --end-lr, plot the loss and suggest a rate (a tenth of
    where the smoothed loss bottoms out). `cnnkit train --lr auto` runs it and trains with the suggestion.

    
    Example:
      cnnkit lr-find resnet20_cifar --data ./photos --input-size 32 --optimizer momentum
    """
    if start_lr >= end_lr:
        raise CnnkitError(f"--start-lr {start_lr:g} must be below --end-lr {end_lr:g}")
    import_tensorflow()
    from keras_cnns.plots import plot_lr_find
    from keras_cnns.training import TrainConfig
    from keras_cnns.training.trainer import find_learning_rate

    kwargs.pop("lr", None)
    config = TrainConfig(model=model, data=data, input_size=input_size, model_options=parse_options(options),
                         **_config_kwargs(kwargs))
    found = find_learning_rate(config, steps=steps, min_lr=start_lr, max_lr=end_lr)
    found["plot"] = plot_lr_find(found, plot)
    if as_json:
        click.echo(json.dumps(found))
        return
    if found["suggested"] is None:
        click.echo(f"the loss never fell ({found['stopped']}): try a larger --end-lr or more --steps")
    else:
        click.echo(f"suggested learning rate: {found['suggested']:.2g} (a tenth of {found['min_loss_lr']:.3g}, where "
                   f"the smoothed loss bottoms out; steepest fall at {found['steepest_lr']:.3g})")
    click.echo(f"{found['stopped']}; plot: {found['plot']}")


COMMANDS = (train, evaluate, finetune, ensemble, lr_find)
