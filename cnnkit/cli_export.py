"""``cnnkit export / validate / quickstart``: thin wrappers over the :mod:`export` package."""
import json
import os

import click

from cnnkit._common import table
from cnnkit._quiet import import_tensorflow
from cnnkit._quiet import stderr_silenced as native_logs_silenced
from export.formats import FORMATS  # the table only: no TensorFlow imported

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")


def _print_report(report):
    from export.int8 import worst_text

    rows = []
    for r in report["artifacts"]:
        size = f"{r['bytes'] / 1024:,.1f} KiB" if r["bytes"] is not None else ""
        accuracy = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "n/a"
        mp = r.get("mediapipe")
        mediapipe = "" if mp is None else ("n/a" if (mp["error"] or "").endswith("(not checked)") else "refused"
                                           if not mp["loads"] else f"{mp['top1_agreement']:.1%}")
        rows.append((r["artifact"], size, f"{r['max_abs_diff']:.1e}", f"{r['top1_agreement']:.1%}", accuracy,
                     f"{r['latency_ms']:.2f}", mediapipe, "ok" if r["ok"] else "OUT OF TOLERANCE"))
    click.echo(table(("artifact", "size", "max |diff|", "top-1 agree", "accuracy", "ms (batch 1)", "MediaPipe",
                      "parity"), rows, right=(1, 2, 3, 4, 5, 6)))
    for r in report["artifacts"]:
        notes = [f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                 for k, v in r.items() if k in ("sparsity", "max_unique_values_per_kernel", "gzip_bytes")]
        if notes:
            click.echo(f"{r['artifact']}: " + ", ".join(notes))
    for r in report["artifacts"]:
        worst = worst_text(r)
        if worst:
            click.echo(f"{r['artifact']}: worst int8 layers: {worst}")
        if r.get("mixed"):
            mixed = r["mixed"]
            click.echo(f"{r['artifact']}: " + (f"kept in float: {', '.join(mixed['float_layers'])}" if mixed["float_layers"]
                                              else "no layer kept in float" if mixed["met"] else
                                              f"not within {mixed['max_accuracy_drop']:g} points even with every "
                                              "ranked layer in float"))
    if report.get("not_published"):
        click.echo(f"not published (out of tolerance): {', '.join(report['not_published'])}")
    if report.get("warning"):
        click.echo(f"warning: {report['warning']}")
    gpu = report.get("tflite_gpu_delegate")
    if gpu:
        click.echo(f"TFLite GPU delegate: {'compatible' if gpu['compatible'] else 'not fully compatible'}")


@click.command("export")
@click.argument("source", metavar="SOURCE")
@click.option("--output", default="exports", show_default=True, type=click.Path(file_okay=False),
              help="Export base: versions go to OUTPUT/NAME/VERSION.")
@click.option("--saved-model", is_flag=True,
              help="The SavedModel alone (always written: the others derive from it). Without any format flag, "
                   "export writes the SavedModel and what `--runtime auto` may serve on this CPU: TFLite float32, "
                   "ONNX, OpenVINO float32 (when installed), and the int8 TFLite and OpenVINO files where the CPU "
                   "has int8 dot products (VNNI, AMX) and the source has images to calibrate on.")
@click.option("--tflite", "tflite_out", is_flag=True, help="TFLite float32 (+ the --quantize variant).")
@click.option("--onnx", "onnx_out", is_flag=True, help="ONNX (tf2onnx), run with ONNX Runtime.")
@click.option("--openvino", "openvino_out", is_flag=True,
              help="OpenVINO IR (from the float32 ONNX file): float32, bfloat16 where the CPU has it, and with "
                   "--quantize int8 int8 quantized by NNCF on the calibration images.")
@click.option("--all", "everything", is_flag=True,
              help="SavedModel, every TFLite variant, ONNX (float32, float16, int8) and, when OpenVINO is "
                   "installed, its IR (float32, int8 by NNCF, bfloat16 where the CPU has it). A low-precision file "
                   "out of tolerance is reported and left out; the exact ones still ship (and must pass).")
@click.option("--format", "extra", multiple=True, metavar="NAME",
              help=f"One more format by its name (repeatable): {', '.join(FORMATS)}.")
@click.option("--quantize", default="none", show_default=True, metavar="MODE|tflite=MODE,onnx=MODE",
              help="Besides float32, one of none, dynamic, float16, int8, qat: float16 and int8 apply to TFLite and, "
                   "with --onnx, to ONNX as well (int8 = full-integer TFLite with uint8 in/out, ONNX static QDQ; "
                   "float16 = half-precision weights, and arithmetic in ONNX); dynamic and qat are TFLite's (ONNX "
                   "stays float32); qat = quantization-aware fine-tuning, then integer TFLite. Per format: e.g. "
                   "tflite=float16,onnx=int8.")
@click.option("--prune", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="SPARSITY",
              help="Also a pruned TFLite model (e.g. 0.5: half the conv/dense weights zero).")
@click.option("--cluster", type=click.IntRange(min=2), metavar="N",
              help="Also a weight-clustered TFLite model (at most N distinct values per kernel).")
@click.option("--finetune-epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Fine-tuning epochs for qat / --prune / --cluster (on the run's training data).")
@click.option("--int8-io", type=click.Choice(("uint8", "int8")), default="uint8", show_default=True,
              help="Input/output type of full-integer TFLite models (MediaPipe Tasks takes uint8, not int8).")
@click.option("--calibration-data", metavar="SPEC", help="Images for int8 calibration (default: the run's data).")
@click.option("--calibration-images", type=click.IntRange(min=1), default=200, show_default=True,
              help="How many training images int8 calibrates on (fewer than 50, or one class: a warning).")
@click.option("--max-accuracy-drop", metavar="PTS|tflite=PTS,onnx=PTS,openvino=PTS",
              help="Keep int8 within PTS accuracy points of the Keras model: the layers the per-layer report ranks "
                   "worst stay float, the fewest that meet it on the validation images (report.md lists them and "
                   "the size and latency they cost; OpenVINO: NNCF's accuracy control does the same); the parity "
                   "gate then holds the file to PTS.")
@click.option("--name", help="Model name in the export base (default: the model's).")
@click.option("--version", type=click.IntRange(min=1), help="Version number (default: the next free one).")
@click.option("--weights", metavar="imagenet|none|FILE",
              help="For a zoo model name SOURCE: its published ImageNet checkpoint (the default where one exists: "
                   "downloaded once, cached), none (untrained), or a checkpoint file (.h5 / .pth as published).")
@click.option("--input-size", type=click.IntRange(min=1), help="Input side for a zoo model name SOURCE.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Class names (one a line, in output order) for a .keras/.h5 SOURCE that does not carry them "
                   "(one saved by cnnkit train carries its run's).")
@click.option("--preprocessing", metavar="torch|tf|caffe|unit|raw|JSON",
              help="Normalisation for a .keras/.h5 SOURCE that does not carry it: a name, or "
                   "'{\"scale\": S, \"mean\": [...], \"std\": [...]}' applied to pixels 0..255.")
@click.option("--temperature", metavar="fitted|T",
              help="Export calibrated probabilities, softmax(logits / T), T folded into the last layer's weights: "
                   "fitted = the temperature the run fitted on its validation split (cnnkit evaluate shows what it "
                   "does to the calibration error), or a number. The parity report compares with the calibrated "
                   "model; export.json records T.")
@click.option("--opset", type=click.IntRange(min=9), default=17, show_default=True, help="ONNX opset.")
@click.option("--author", default="", help="Author field of the TFLite metadata.")
@click.option("--license", "license_", default="", help="License field of the TFLite metadata.")
@click.option("--max-megapixels", type=click.FloatRange(min=0, min_open=True), default=40.0, show_default=True,
              help="Pixel budget of one encoded image sent to the SavedModel (serving_bytes, classify): a larger "
                   "width x height in the file's header is refused before decoding (InvalidArgument).")
@click.option("--allow-failed-variants", is_flag=True,
              help="Publish the version without the artifacts that fail the parity report (they stay in the "
                   "report, marked not published) instead of publishing nothing. Never without the SavedModel.")
@json_option
def export_command(source, output, saved_model, tflite_out, onnx_out, openvino_out, everything, extra, quantize,
                   prune, cluster, finetune_epochs, int8_io, calibration_data, calibration_images, max_accuracy_drop,
                   name, version, weights, input_size, labels_file, preprocessing, temperature, opset, author,
                   license_, max_megapixels, allow_failed_variants, as_json):
    """Export SOURCE (a run directory, zoo model name or .keras file) and prove every artifact agrees.

    Without a format flag: the SavedModel and what `--runtime auto` may serve on this CPU.

    \b
    Examples:
      cnnkit export runs/latest                         what auto may serve here (see --saved-model)
      cnnkit export runs/latest --tflite --onnx --quantize int8
      cnnkit export --tflite mobilenet                  MobileNet with its ImageNet weights, float32 TFLite
      cnnkit export --tflite resnet50 --weights none    the untrained graph
      cnnkit export runs/latest --all --name digits
      cnnkit export runs/latest --onnx --openvino        ONNX, and OpenVINO IR: float32, bfloat16 where the CPU
                                                         has it (+ int8 by NNCF with --quantize int8)
      cnnkit export runs/latest/best.keras --tflite      a model file carries its run's labels and preprocessing
      cnnkit export model.keras --labels labels.txt --preprocessing torch   a Keras file from elsewhere
      cnnkit export runs/latest --prune 0.5 --cluster 16 --quantize qat
      cnnkit export runs/latest --tflite --quantize int8 --max-accuracy-drop 1   int8, float where it costs accuracy
      cnnkit export runs/latest --tflite --temperature fitted   calibrated probabilities
    """
    import_tensorflow(export=True)
    from export import ExportOptions, export, plan_formats
    from export.exporter import DEFAULT_PLAN, ExportFailed

    named = (saved_model or tflite_out or onnx_out or openvino_out or everything or extra or quantize != "none"
             or prune or cluster)
    formats = plan_formats(saved_model, tflite_out, onnx_out, quantize, everything, prune, cluster, extra,
                           openvino_out) if named else DEFAULT_PLAN
    try:
        with native_logs_silenced():  # the converters' and LiteRT's C++ log lines
            path, report = export(source, output, formats, ExportOptions(
                calibration_data=calibration_data, calibration_images=calibration_images,
                max_accuracy_drop=max_accuracy_drop, name=name, version=version, weights=weights, input_size=input_size,
                opset=opset, prune=prune, cluster=cluster, finetune_epochs=finetune_epochs, int8_io=int8_io,
                author=author, license=license_, max_megapixels=max_megapixels,
                allow_failed_variants=allow_failed_variants, low_precision_optional=everything, labels=labels_file,
                preprocessing=preprocessing, temperature=temperature))
    except ExportFailed as err:  # every row, then the reason; exit 1 as validate does
        click.echo(json.dumps(err.report)) if as_json else _print_report(err.report)
        click.echo(f"cnnkit: error: {err} (--allow-failed-variants publishes the rest)", err=True)
        raise click.exceptions.Exit(1) from None
    if as_json:
        click.echo(json.dumps(report))
        return
    _print_report(report)
    _print_choice(path)
    click.echo(f"exported to {path} (report.md beside the artifacts)")


def _print_choice(version_dir):
    """What ``cnnkit serve`` and ``cnnkit predict`` run of this version by default, and why."""
    from export.local import choose

    click.echo(f"served by default (--runtime auto): {choose(version_dir).reason}")


@click.command()
@click.argument("export_dir", metavar="EXPORT_DIR")
@click.option("--data", metavar="SPEC", help="Held-out images to compare on (default: the run's test split).")
@json_option
def validate(export_dir, data, as_json):
    """Re-run the parity report of an export version directory; exit 1 if an artifact is out of tolerance."""
    import_tensorflow()
    from export import validate as run_validate

    with native_logs_silenced():
        report = run_validate(export_dir, data_spec=data)
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_report(report)
        if report["ok"]:
            _print_choice(export_dir)
    if not report["ok"]:
        raise click.exceptions.Exit(1)


@click.command()
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--output", default="exports", show_default=True, type=click.Path(file_okay=False))
@click.option("--samples", default="samples", show_default=True, type=click.Path(file_okay=False),
              help="Where one PNG test image per class is written (to try `cnnkit predict` on).")
@json_option
def quickstart(epochs, output, samples, as_json):
    """The whole pipeline offline: train LeNet-5 on the bundled digits, export SavedModel + TFLite
    (float32, float16, dynamic, int8) + ONNX (float32, float16, int8), print the parity table, then serve the
    export with the embedded server and classify sample PNGs through its REST and gRPC APIs."""
    import_tensorflow()
    from export import export, plan_formats
    from keras_cnns.data import load_data, write_samples
    from keras_cnns.training import TrainConfig, train
    from keras_cnns.training.runs import read_config
    from serving.client import connect, predict_files
    from serving.server import ModelServer

    result = train(TrainConfig(model="lenet5", data="digits", epochs=epochs), verbose=0 if as_json else 2)
    with native_logs_silenced():
        path, report = export(result.run_dir, output=output, formats=plan_formats(everything=True),
                              low_precision_optional=True)
    data = read_config(result.run_dir)["data"]
    images = write_samples(load_data(data["spec"], (32, 32, 1), data["val_split"], data["test_split"]), samples)
    with ModelServer(output, rest_port=0, grpc_port=0) as server:
        rest = predict_files(images, "lenet5", server=f"http://127.0.0.1:{server.rest_port}")
        grpc = predict_files(images, "lenet5", server=f"127.0.0.1:{server.grpc_port}", grpc=True)
        version = connect(f"http://127.0.0.1:{server.rest_port}").status("lenet5")["model_version_status"][0]
    served = [{"image": image, "true": os.path.basename(image).rsplit("_", 1)[0], "rest": r.label, "grpc": g.label,
               "score": r.score} for (image, r), (_, g) in zip(rest, grpc)]  # write_samples names them LABEL_N.png
    if as_json:
        click.echo(json.dumps({"run_dir": result.run_dir, "test_accuracy": result.metrics["accuracy"],
                               "export": path, "report": report, "served": served}))
        return
    click.echo(f"\ntrained LeNet-5 on digits: test accuracy {result.metrics['accuracy']:.2%} ({result.run_dir})")
    _print_report(report)
    click.echo(f"exported to {path}\n\nembedded server (TF Serving's API), {output}/lenet5 version "
               f"{version['version']} {version['state']}:")
    click.echo(table(("image", "true label", "REST", "gRPC", "score"),
                     [(s["image"], s["true"], s["rest"], s["grpc"], f"{s['score']:.3f}") for s in served], right=(4,)))
    wrong = sum(s["rest"] != s["true"] for s in served)
    if wrong:
        click.echo(f"({wrong} of {len(served)} misclassified: the model's own mistakes, "
                   f"{result.metrics['accuracy']:.2%} on the test split; REST and gRPC agree)"
                   if all(s["rest"] == s["grpc"] for s in served) else "")
    click.echo(f"\nnext:  cnnkit serve {output}          (REST :8501, gRPC :8500; production: --emit-config)\n"
               f"       open http://127.0.0.1:8501/        (the model page: drop an image, read the answer)\n"
               f"       cnnkit predict {images[0]} --model {output}/lenet5")


COMMANDS = (export_command, validate, quickstart)
