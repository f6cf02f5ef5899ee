"""The ``cnnkit`` command line. Thin: parse, call one library function, print.

User errors (unknown model, bad option, bad input size) print one line on stderr and exit with
status 2 — never a traceback.
"""
import json
import sys

import click

from cnnkit import __version__
from cnnkit._common import log_to_stderr, parse_options, table
from cnnkit._quiet import import_tensorflow
from keras_cnns.errors import CnnkitError

DEFAULT_COMPARISON = ("alexnet", "vgg16", "vgg19", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101",
                      "resnet152", "squeezenet1_0", "densenet121", "mobilenet_v2", "efficientnet_b0")


class CnnkitGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnkitError as err:
            click.echo(f"cnnkit: error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=CnnkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="cnnkit")
def cli():
    """cnnkit: classic CNN architectures from definition to deployment.

    \b
    Explore the model zoo:
      cnnkit models                      every model with params, MACs, input size, ImageNet weights, paper
      cnnkit predict cat.jpg --model mobilenet_v2   ImageNet top-3 with its pretrained weights
      cnnkit summary resnet18            layer-by-layer output shapes and parameters
      cnnkit profile mobilenet_v2        params, MACs and activation memory per layer
    Train and compare:
      cnnkit train lenet5                LeNet-5 on the bundled digits -> runs/latest
      cnnkit lr-find resnet20_cifar --data ./photos --input-size 32   the learning-rate range test
      cnnkit evaluate runs/latest        test metrics and a confusion matrix
      cnnkit finetune runs/latest --data ./photos --strategy auto
      cnnkit finetune mobilenet_v2 --data ./photos   from its ImageNet weights
      cnnkit ensemble RUN_DIR RUN_DIR    average several runs into one model
    Deploy:
      cnnkit quickstart                  train, export every format, print the parity table
      cnnkit export runs/latest --tflite --onnx --quantize int8
      cnnkit validate exports/lenet5/1   re-run the parity report
      cnnkit serve exports               TF Serving's REST (8501) and gRPC (8500) APIs
      cnnkit predict 7.png --model exports/lenet5          (or --server http://localhost:8501)
      cnnkit serve exports --emit-config Dockerfile, TF Serving configs, compose, Kubernetes
    Measure:
      cnnkit bench train resnet18 --input-size 32   images/s eager vs graph vs XLA
      cnnkit bench infer exports/lenet5/1           latency of every artifact and runtime
      cnnkit bench data --data ./photos             is training input-bound?
      cnnkit bench serve http://localhost:8501 --model lenet5   requests/s, p50/p99 latency
    """
    log_to_stderr("keras_cnns", "cnnkit")
    log_to_stderr("serving.client", "cnnkit")
    log_to_stderr("export", "cnnkit")


def _build(name, input_size, channels, num_classes, options):
    import keras_cnns

    info = keras_cnns.get_model_info(name)
    shape = None
    if input_size or channels:
        h, w, c = info.input_shape
        shape = (input_size or h, input_size or w, channels or c)
    model = keras_cnns.create_model(info.name, num_classes=num_classes, input_shape=shape, **parse_options(options))
    return info, keras_cnns.inference_model(model)


def _fmt(n):
    from keras_cnns.analysis import format_count

    return format_count(n)


model_argument = click.argument("model", metavar="MODEL")
build_options = [
    click.option("--input-size", type=click.IntRange(min=1), help="Square input side (default: the model's own)."),
    click.option("--channels", type=click.IntRange(min=1), help="Input channels (default: the model's own)."),
    click.option("--num-classes", type=click.IntRange(min=1), help="Classifier outputs (default: the model's own)."),
    click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                 help="Family option, e.g. -o alpha=0.5 -o batch_norm=true (repeatable)."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object."),
]


def with_build_options(f):
    for option in reversed(build_options):
        f = option(f)
    return f


@cli.command()
@click.option("--family", help="Only this family (e.g. resnet, vgg, mobilenet).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def models(family, as_json):
    """List every model: family, parameters, MACs at its default input, input size, published ImageNet
    weights (their top-1; `--weights imagenet`), year, paper."""
    import_tensorflow()
    import keras_cnns
    from keras_cnns.pretrained import find_checkpoint
    from keras_cnns.stats import zoo_stats

    if family and family not in keras_cnns.list_families():
        raise CnnkitError(f"unknown family {family!r}; families: {', '.join(keras_cnns.list_families())}")
    out = []
    for name in keras_cnns.list_models(family):
        info = keras_cnns.get_model_info(name)
        stats = zoo_stats(name)
        checkpoint = find_checkpoint(name)
        pretrained = checkpoint and {"source": checkpoint.source, "url": checkpoint.url,
                                     "imagenet_top1": checkpoint.top1, "preprocessing": checkpoint.preprocessing_name}
        out.append({"name": name, "family": info.family, "params": stats["params"], "macs": stats["macs"],
                    "activations": stats["activations"], "input_shape": list(info.input_shape),
                    "num_classes": info.num_classes, "year": info.year, "paper": info.paper,
                    "description": info.description, "reference_params": info.reference_params,
                    "reference": info.reference, "pretrained": pretrained})
    if as_json:
        click.echo(json.dumps({"models": out}))
        return
    rows = [(r["name"], r["family"], _fmt(r["params"]), _fmt(r["macs"]), "x".join(map(str, r["input_shape"])),
             _pretrained_cell(r["pretrained"]), r["year"], r["paper"]) for r in out]
    click.echo(table(("model", "family", "params", "MACs", "input", "ImageNet", "year", "paper"), rows, right=(2, 3)))


def _pretrained_cell(pretrained):
    if not pretrained:
        return "-"
    source = "Keras" if pretrained["source"].startswith("Keras") else "torchvision"
    return f"{pretrained['imagenet_top1']:.1f}% {source}" if pretrained["imagenet_top1"] else source


@cli.command()
@model_argument
@with_build_options
def summary(model, input_size, channels, num_classes, options, as_json):
    """Layer-by-layer output shapes and parameter counts of MODEL."""
    import_tensorflow()
    from keras_cnns.analysis import profile_model

    info, built = _build(model, input_size, channels, num_classes, options)
    profile = profile_model(built)
    if as_json:
        click.echo(json.dumps({"model": info.name, "input_shape": list(profile.input_shape),
                               "params": profile.params, "trainable_params": profile.trainable_params,
                               "layers": [{"name": l.name, "type": l.type, "output_shape": list(l.output_shape),
                                           "params": l.params} for l in profile.layers]}))
        return
    rows = [(l.name, l.type, str(tuple(l.output_shape[1:])), f"{l.params:,}") for l in profile.layers]
    click.echo(f"{info.name} ({info.paper}, {info.year}), input {'x'.join(map(str, profile.input_shape))}")
    click.echo(table(("layer", "type", "output shape", "params"), rows, right=(3,)))
    click.echo(f"\ntotal params: {profile.params:,}   trainable: {profile.trainable_params:,}   "
               f"non-trainable: {profile.params - profile.trainable_params:,}")


@cli.command()
@model_argument
@with_build_options
@click.option("--layers/--no-layers", "show_layers", default=True, help="Show the per-layer table.")
@click.option("--tf-check", is_flag=True,
              help="Cross-check the MACs against TensorFlow's profiler on the frozen graph.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True),
              help="Also draw the comparison chart (ops vs params, bubble = weights + activations memory) to this PNG.")
@click.option("--compare", help="Comma-separated models for --plot (default: the notes' set plus MODEL).")
def profile(model, input_size, channels, num_classes, options, as_json, show_layers, tf_check, plot_path,
            compare):
    """Parameters, multiply-accumulates and activation memory of MODEL, per layer and in total.

    MACs count convolutions and fully connected layers; activation memory counts the elements one
    image's forward pass holds (layers that can run in place excluded), at 4 bytes each.
    """
    import_tensorflow()
    from keras_cnns.analysis import profile_model, tf_profiler_flops

    info, built = _build(model, input_size, channels, num_classes, options)
    prof = profile_model(built)
    result = prof.to_dict()
    result["model"] = info.name
    if tf_check:
        flops = tf_profiler_flops(built)
        matched = sum(flops.get(op, 0) for op in ("Conv2D", "DepthwiseConv2dNative", "MatMul"))
        result["tf_profiler"] = {"flops_by_op": flops, "conv_matmul_flops": matched,
                                 "ratio_to_2x_macs": matched / (2 * prof.macs) if prof.macs else None}
    if plot_path:
        result["plot"] = _comparison_plot(plot_path, compare, info.name)
    if as_json:
        click.echo(json.dumps(result))
        return
    if show_layers:
        rows = [(l.name, l.type, str(tuple(l.output_shape[1:])), f"{l.params:,}", f"{l.macs:,}",
                 f"{l.activations:,}") for l in prof.layers]
        click.echo(table(("layer", "type", "output", "params", "MACs", "activations"), rows, right=(3, 4, 5)))
        click.echo()
    click.echo(f"{info.name} at {'x'.join(map(str, prof.input_shape))}:")
    click.echo(f"  params       {prof.params:>16,}  ({prof.param_bytes / 2**20:.1f} MiB as float32)")
    click.echo(f"  MACs         {prof.macs:>16,}  ({_fmt(prof.macs)} multiply-accumulates per image)")
    click.echo(f"  activations  {prof.activations:>16,}  ({prof.activation_bytes / 2**20:.1f} MiB per image, forward)")
    if tf_check:
        tfp = result["tf_profiler"]
        click.echo(f"  TF profiler: conv + matmul FLOPs {tfp['conv_matmul_flops']:,} = "
                   f"{tfp['ratio_to_2x_macs']:.6f} x (2 x MACs); all counted ops {sum(tfp['flops_by_op'].values()):,}")
    if plot_path:
        click.echo(f"  chart written to {plot_path}")


def _comparison_plot(path, compare, extra):
    import keras_cnns
    from keras_cnns.plots import plot_model_comparison
    from keras_cnns.stats import zoo_stats

    names = [n.strip() for n in compare.split(",") if n.strip()] if compare else list(DEFAULT_COMPARISON)
    if extra not in names:
        names.append(extra)
    canonical = [keras_cnns.get_model_info(name).name for name in names]
    rows = [{"name": name, **zoo_stats(name)} for name in canonical]
    plot_model_comparison(rows, path)
    return {"path": path, "models": [r["name"] for r in rows]}


from cnnkit.cli_bench import COMMANDS as _BENCH_COMMANDS  # noqa: E402
from cnnkit.cli_export import COMMANDS as _EXPORT_COMMANDS  # noqa: E402
from cnnkit.cli_serve import COMMANDS as _SERVING_COMMANDS  # noqa: E402
from cnnkit.cli_train import COMMANDS as _TRAINING_COMMANDS  # noqa: E402

for _command in _TRAINING_COMMANDS + _EXPORT_COMMANDS + _SERVING_COMMANDS + _BENCH_COMMANDS:
    cli.add_command(_command)


def main(argv=None):
    return cli.main(args=argv, prog_name="cnnkit")


if __name__ == "__main__":
    sys.exit(main())
