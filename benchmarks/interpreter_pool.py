"""Would ``cnnkit serve`` answer more with a pool of single-thread LiteRT interpreters than with its one interpreter
on every core (serving/runtime.py)? MobileNet v2's float32 ``.tflite`` from ``cnnkit export``, batch 1, images/s:

    python benchmarks/interpreter_pool.py [--sizes 96,224] [--seconds 6]

Settings: ``one-2t`` one interpreter with 2 threads shared by 4 calling threads (what the server does),
``two-1t`` two interpreters with 1 thread each and 4 callers, ``one-1t`` one interpreter, 1 thread, 1 caller.
Each setting runs alternating in one process, then each in a fresh process; the numbers in benchmarks/RESULTS.md
(Serving, "Would more interpreters serve more?") come from it.
"""
import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
#: setting -> (interpreters, threads each, calling threads)
SETTINGS = {"one-2t": (1, 2, 4), "two-1t": (2, 1, 4), "one-1t": (1, 1, 1)}


def images_per_second(path, side, setting, seconds):
    import numpy as np

    from export.formats import runner_for

    count, threads, callers = SETTINGS[setting]
    x = np.random.default_rng(0).uniform(0, 255, (1, side, side, 3)).astype(np.float32)
    pool = queue.Queue()
    for _ in range(count):
        runner = runner_for("tflite-float32", path, threads=threads)
        runner(x)  # warm
        pool.put(runner)
    done = []
    stop = time.perf_counter() + seconds

    def call():
        n = 0
        while time.perf_counter() < stop:
            runner = pool.get()
            try:
                runner(x)
            finally:
                pool.put(runner)
            n += 1
        done.append(n)

    workers = [threading.Thread(target=call) for _ in range(callers)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="96,224", help="input sizes of MobileNet v2")
    parser.add_argument("--seconds", type=float, default=6.0, help="per setting and round")
    parser.add_argument("--one", nargs=3, metavar=("PATH", "SIDE", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        path, side, setting = args.one
        print(f"{images_per_second(path, int(side), setting, args.seconds):.1f}")
        return

    from benchmarks._record import machine
    from cnnkit._quiet import import_tensorflow

    import_tensorflow()
    from export import export, plan_formats

    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        for side in (int(s) for s in args.sizes.split(",")):
            out = os.path.join(scratch, str(side))
            version, _ = export("mobilenet_v2", output=out, input_size=side, weights="none",
                                formats=plan_formats(tflite_out=True))
            path = os.path.join(version, "tflite", "model_float32.tflite")
            together = {s: [] for s in SETTINGS}
            for _ in range(2):
                for setting in SETTINGS:
                    together[setting].append(round(images_per_second(path, side, setting, args.seconds), 1))
            alone = {s: [] for s in SETTINGS}
            for _ in range(2):
                for setting in SETTINGS:
                    run = subprocess.run([sys.executable, __file__, "--one", path, str(side), setting, "--seconds",
                                          str(args.seconds)], capture_output=True, text=True, check=True)
                    alone[setting].append(float(run.stdout.strip().splitlines()[-1]))
            for setting in SETTINGS:
                print(f"{side}x{side} {setting}: one process, alternating {together[setting]} img/s; "
                      f"separate processes {alone[setting]} img/s")


if __name__ == "__main__":
    main()
