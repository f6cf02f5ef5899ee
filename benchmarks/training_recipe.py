"""Which of the training recipe's flags help on a small, imbalanced folder (issue 27)?

A folder of 300 PNG photos at 32x32 in 4 classes, one of them rare (120 / 90 / 60 / 30 images: the largest class
has 4x the smallest, so --class-weight auto would balance it), the shapes of keras_cnns.data with extra grain.
Each configuration trains ResNet-20 and MobileNet v2 with `cnnkit train` (a process each, seeds 0 and 1) and is
judged on a separate balanced folder of 400 photos drawn the same way: accuracy, mean per-class recall, the rare
class's recall, expected calibration error (ECE, 15 bins), and the ECE after the temperature the run fitted on its
validation split (what `cnnkit export --temperature fitted` ships). First, full-batch L-BFGS against Adam:
LeNet-5 on the digits, test accuracy per gradient evaluation.

    python benchmarks/training_recipe.py [--epochs 30] [--seeds 0,1] [--models resnet20_cifar,mobilenet_v2]
        [--only "baseline;--ema 0.95"] [--record]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _record import add_record_option, machine, replace_section  # noqa: E402

COUNTS = (120, 90, 60, 30)  # the last class is the rare one
#: the baseline has no class weights; every other row adds one flag to it
CONFIGS = {
    "baseline": ["--class-weight", "none"],
    "--class-weight balanced": ["--class-weight", "balanced"],
    "--augment flip,crop": ["--class-weight", "none", "--augment", "flip,crop"],
    "--augment randaugment": ["--class-weight", "none", "--augment", "randaugment"],
    "--mixup 0.2": ["--class-weight", "none", "--mixup", "0.2"],
    "--cutmix 1.0": ["--class-weight", "none", "--cutmix", "1.0"],
    "--label-smoothing 0.1": ["--class-weight", "none", "--label-smoothing", "0.1"],
    "--ema 0.95": ["--class-weight", "none", "--ema", "0.95"],
    "--lr auto": ["--class-weight", "none", "--lr", "auto"],
    "all: balanced, flip,crop, mixup 0.2, ema 0.95": ["--class-weight", "balanced", "--augment", "flip,crop",
                                                      "--mixup", "0.2", "--ema", "0.95"],
}


def write_folder(root, counts, seed):
    """PNG photos of the 4 shapes, ``counts[i]`` of class i, with grain (noise sd 40) on top of the shapes' own."""
    from PIL import Image

    from keras_cnns.data import generate_shapes

    x, y, names = generate_shapes(per_class=max(counts), size=32, seed=seed)
    rng = np.random.RandomState(seed + 100)
    for label, name in enumerate(names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i, index in enumerate(np.where(y == label)[0][:counts[label]]):
            image = np.clip(x[index] + rng.normal(0, 40, x[index].shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(os.path.join(root, name, f"{i:03d}.png"))
    return names


def judge(run_dir, test_folder):
    """The run's best model on the balanced folder: accuracy, per-class recall, ECE before and after the temperature
    the run fitted (folded into the model as the export folds it)."""
    from keras_cnns.training import calibration, runs
    from keras_cnns.training.evaluation import evaluate_run

    found = evaluate_run(run_dir, data_spec=test_folder, confusion_png=False, calibrate=False)
    recall = {name: c["recall"] for name, c in found["per_class"].items()}
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    temperature = metrics["calibration"]["temperature"]
    model = runs.load_run_model(run_dir)
    calibration.apply_temperature(model, temperature)
    after = evaluate_run(run_dir, data_spec=test_folder, model=model, confusion_png=False, calibrate=False)
    return {"accuracy": found["accuracy"], "mean_recall": float(np.mean(list(recall.values()))),
            "rare_recall": recall["cross"], "ece": found["ece"], "ece_after_temperature": after["ece"],
            "temperature": temperature, "lr": runs.read_config(run_dir)["train"]["lr"],
            "seconds": metrics["train_seconds"]}


def lbfgs_against_adam(work, seeds):
    """LeNet-5 on the digits: Adam (the defaults: 30 epochs) against full-batch L-BFGS at 10 and 30 iterations."""
    from keras_cnns.training.callbacks import read_history

    rows = []
    for name, flags in (("adam, 30 epochs", ["--epochs", "30"]),
                        ("lbfgs, 10 iterations", ["--optimizer", "lbfgs", "--epochs", "10"]),
                        ("lbfgs, 30 iterations", ["--optimizer", "lbfgs", "--epochs", "30"])):
        found = []
        for seed in seeds:
            run_dir = os.path.join(work, "digits", f"{name.split(',')[0]}-{flags[-1]}-{seed}")
            subprocess.run([sys.executable, "-m", "cnnkit", "train", "lenet5", "--seed", str(seed), "--output", run_dir,
                            *flags], check=True, capture_output=True, text=True)
            metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
            config = json.load(open(os.path.join(run_dir, "config.json")))
            steps = metrics["epochs_completed"] * -(-config["data"]["train"] // config["train"]["batch_size"])
            found.append({"accuracy": metrics["accuracy"], "seconds": metrics["train_seconds"],
                          "final_loss": read_history(os.path.join(run_dir, "history.csv"))[-1]["loss"],
                          "gradients": metrics["lbfgs"]["evaluations"] if "lbfgs" in metrics else steps,
                          "full_batch": "lbfgs" in metrics})
        rows.append({"config": name, "full_batch": found[0]["full_batch"],
                     **{k: float(np.mean([f[k] for f in found])) for k in ("accuracy", "seconds", "gradients",
                                                                             "final_loss")}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def section(rows, digits, epochs, seeds):
    """The RESULTS.md section: the recipe table, then L-BFGS against Adam."""
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; `python benchmarks/training_recipe.py "
             f"--epochs {epochs} --seeds {seeds}`. Mean of the seeds; the balanced test folder has 400 photos "
             "(100 a class: its accuracy is also the mean per-class recall), so one photo is 0.25 points, one "
             "rare-class photo 1 point.", "",
             "| model | configuration | accuracy | rare-class recall | ECE | ECE after T |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['config']} | {100 * row['accuracy']:.1f}% | "
                     f"{100 * row['rare_recall']:.1f}% | {row['ece']:.3f} | {row['ece_after_temperature']:.3f} |")
    lines += ["", "Full-batch L-BFGS against Adam, LeNet-5 on the digits (1,257 training images), test accuracy:", "",
              "| optimizer | test accuracy | final training loss | gradient evaluations | training seconds |",
              "|---|---:|---:|---:|---:|"]
    for row in digits:
        unit = "full-batch" if row["full_batch"] else "mini-batch (32)"
        lines.append(f"| {row['config']} | {100 * row['accuracy']:.1f}% | {row['final_loss']:.2g} | "
                     f"{row['gradients']:.0f} {unit} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--models", default="resnet20_cifar,mobilenet_v2")
    parser.add_argument("--only", help="configuration names separated by ';' (names hold commas; default: all)")
    parser.add_argument("--from-log", metavar="FILE",
                        help="no training: the tables from the rows an earlier run printed (one JSON object a line), "
                             "for a run stopped before its end")
    add_record_option(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.from_log:
        printed = [json.loads(line) for line in open(args.from_log) if line.startswith("{")]
        rows, digits = [r for r in printed if "model" in r], [r for r in printed if "model" not in r]
        if args.record:  # like RESULTS.md: a trial run leaves the recorded rows as they are
            json.dump({"machine": machine(), "rows": rows, "digits": digits, "epochs": args.epochs, "seeds": seeds,
                       "from_log": True}, open(os.path.join(HERE, "results", "training_recipe.json"), "w"), indent=1)
        body = section(rows, digits, args.epochs, args.seeds)
        replace_section("training_recipe", body, record=args.record)
        print(body)
        return
    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only.split(";")}
    work = tempfile.mkdtemp(prefix="recipe-")
    names = write_folder(os.path.join(work, "train"), COUNTS, seed=1)
    assert names[-1] == "cross"
    write_folder(os.path.join(work, "test"), (100,) * 4, seed=2)
    digits = lbfgs_against_adam(work, seeds)
    rows = []
    for model in args.models.split(","):
        for name, flags in configs.items():
            found = []
            for seed in seeds:
                run_dir = os.path.join(work, "runs", f"{model}-{len(rows)}-{seed}")
                started = time.time()
                command = [sys.executable, "-m", "cnnkit", "train", model, "--data", os.path.join(work, "train"),
                           "--input-size", "32", "--epochs", str(args.epochs), "--seed", str(seed), "--output",
                           run_dir, *flags]
                subprocess.run(command, check=True, capture_output=True, text=True)
                found.append({**judge(run_dir, os.path.join(work, "test")), "wall": time.time() - started})
            row = {"model": model, "config": name, "runs": found,
                   **{k: float(np.mean([f[k] for f in found])) for k in ("accuracy", "mean_recall", "rare_recall",
                                                                          "ece", "ece_after_temperature")}}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    if args.record:
        json.dump({"machine": machine(), "rows": rows, "digits": digits, "epochs": args.epochs, "seeds": seeds},
                  open(os.path.join(HERE, "results", "training_recipe.json"), "w"), indent=1)
    body = section(rows, digits, args.epochs, args.seeds)
    replace_section("training_recipe", body, record=args.record)
    print(body)


if __name__ == "__main__":
    main()
