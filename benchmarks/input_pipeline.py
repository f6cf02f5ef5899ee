"""Input-pipeline benchmark: tf.data images/s with and without parallel map / prefetch / cache (what
`cnnkit bench data` measures), next to the model's training rate, for in-memory data and for JPEG files
decoded from disk.

    python benchmarks/input_pipeline.py [--batches 40]

Cases: the bundled digits (in memory) for LeNet-5; a folder of 256x256 JPEG files (the shapes data
written out, 300 per class) read from disk on every pass, as a folder too big for RAM is, for LeNet-5
at 32x32 and MobileNet v2 at 96x96. With --record, rewrites the input_pipeline section of benchmarks/RESULTS.md and
writes benchmarks/results/input_pipeline.json.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._record import add_record_option, machine, replace_section  # noqa: E402


def write_jpeg_folder(folder, per_class=300, size=256):
    """The shapes data as real JPEG files in class folders; returns ``folder``."""
    from PIL import Image

    from keras_cnns.data import SHAPE_CLASSES, generate_shapes

    images, labels, _ = generate_shapes(per_class=per_class, size=size)
    for i, (image, label) in enumerate(zip(images, labels)):
        os.makedirs(os.path.join(folder, SHAPE_CLASSES[label]), exist_ok=True)
        Image.fromarray(image).save(os.path.join(folder, SHAPE_CLASSES[label], f"{i}.jpg"), quality=90)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches timed per pipeline variant")
    add_record_option(parser)
    args = parser.parse_args()

    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    from keras_cnns import data
    from keras_cnns.training.bench import PIPELINES, bench_data

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_jpeg_folder(os.path.join(scratch, "jpegs"))
        results.append({**bench_data("digits", "lenet5", batches=args.batches), "data": "digits (in memory)",
                        "input_size": 32})
        data._ram_budget = lambda: 0  # stream from disk, as a folder larger than a quarter of RAM is
        for model, size in (("lenet5", 32), ("mobilenet_v2", 96)):
            results.append({**bench_data(folder, model, input_size=size, batches=args.batches),
                            "data": "1,200 JPEG files, 256x256, from disk", "input_size": size})

    names = [name for name, _ in PIPELINES]
    body = [f"`python benchmarks/input_pipeline.py --batches {args.batches}` on {machine()}", "",
            "| data | model | " + " | ".join(names) + " | training images/s | input-bound |",
            "|---|---|" + "---|" * (len(names) + 2)]
    for r in results:
        body.append(f"| {r['data']} | {r['model']} @{r['input_size']} | "
                    + " | ".join(str(r["pipelines"][n]) for n in names)
                    + f" | {r['train_images_per_s']} | {'yes' if r['input_bound'] else 'no'} |")
    replace_section("input_pipeline", record=args.record, body="\n".join(body))
    with open(os.path.join(HERE, "results", "input_pipeline.json"), "w") as f:
        json.dump({"machine": machine(), "results": results}, f, indent=1)
    print("\n".join(body))


if __name__ == "__main__":
    main()
