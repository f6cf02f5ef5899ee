"""Mutation testing of the logic modules with mutmut: does a one-line bug in a module fail one of its own tests?

Each module in MODULES is mutated (mutmut's operators: a changed operator, constant, argument, return value ...)
and every mutant is run against the module's own fast tests, in a copy of the working tree (``mutants/`` and
mutmut's caches never touch the checkout). A mutant is *killed* when a test fails, *survives* when all pass;
those known to change nothing (``tools/mutation_equivalent.txt``: one mutant a line, with the reason) do not
count. The score is killed / (mutants with tests - equivalent ones); a mutant that makes a test hang (mutmut stops it
at its timeout) or crash counts as killed.

    pip install -e ".[dev]"                          # mutmut is a dev dependency
    python tools/mutation.py                         # every module: tools/mutation_results.md and .json
    python tools/mutation.py keras_cnns/imaging.py   # one module; its rows are replaced in the results
    python tools/mutation.py --report                # the results again, after editing the equivalents

The results list each surviving mutant with its diff: a test that fails on it is the fix (or, where the change
makes no difference anyone could observe, a line in mutation_equivalent.txt saying why).

Runs on Linux (mutmut forks a worker per mutant from a process that has imported the tests).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tools")
RESULTS_MD = os.path.join(HERE, "mutation_results.md")
RESULTS_JSON = os.path.join(HERE, "mutation_results.json")
EQUIVALENT = os.path.join(HERE, "mutation_equivalent.txt")
#: the goal of issue 40: killed share of the non-equivalent mutants of each module
GOAL = 0.90

#: module -> the tests that own it (pytest arguments): fast ones, so that a module's mutants run in minutes
MODULES = {
    "keras_cnns/training/class_weights.py": ["tests/test_class_weights.py"],
    "keras_cnns/training/calibration.py": ["tests/test_calibration.py"],
    "keras_cnns/training/schedules.py": ["tests/test_schedules.py"],
    # the range test on a real model trains for seconds per mutant: its arithmetic is tested on scripted losses
    "keras_cnns/training/lr_find.py": ["tests/test_lr_find.py", "-k", "not lies_between"],
    "keras_cnns/training/callbacks.py": ["tests/test_ema.py", "tests/test_callbacks.py"],
    "keras_cnns/imaging.py": ["tests/test_imaging.py", "tests/test_image_budget.py"],
    "keras_cnns/mixing.py": ["tests/test_mixing.py"],
    "keras_cnns/randaugment.py": ["tests/test_randaugment.py"],
    "keras_cnns/analysis.py": ["tests/test_analysis.py"],
    "keras_cnns/registry.py": ["tests/test_registry.py"],
    "export/choice.py": ["tests/test_budget.py"],
    "export/int8.py": ["tests/test_int8_logic.py"],
    "serving/front.py": ["tests/test_serving_limits.py"],
    "serving/rest.py": ["tests/test_serving_limits.py"],
    "serving/batching.py": ["tests/test_serving_limits.py"],
}
#: a module's mutants may take this long before the rest are left unrun (reported as such)
MODULE_TIMEOUT_S = 1800


def module_name(path):
    return path[:-3].replace("/", ".")


def read_equivalent():
    """{mutant name: reason} from tools/mutation_equivalent.txt (``NAME  # reason``; blank lines and # lines skipped)."""
    found = {}
    if os.path.exists(EQUIVALENT):
        with open(EQUIVALENT, encoding="utf-8") as f:
            for line in f:
                name, _, reason = line.partition("#")
                if name.strip():
                    found[name.strip()] = reason.strip()
    return found


def tracked_copy(target):
    """The working tree's files (tracked and untracked, not ignored) copied to ``target``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, name))


def mutmut_config(module, tests):
    lines = ["[mutmut]", "source_paths=", "    keras_cnns", "    export", "    serving", "only_mutate=",
             f"    {module}", "also_copy=", "    pytest.ini", "pytest_add_cli_args_test_selection="]
    lines += [f"    {t}" for t in tests]
    lines += ["pytest_add_cli_args=", "    -p", "    no:cacheprovider", "    -q", "    -x",
              # TensorFlow's thread pools do not survive a fork from a process that ran ops: each mutant's worker
              # is forked from a server that has imported the tests but run nothing
              "process_isolation=forkserver", "forkserver_warmup=collect"]
    return "\n".join(lines) + "\n"


def run_module(module, tests):
    """{module, mutants: {name: status}, seconds, note} of one module's mutation run."""
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="cnnkit-mutation-") as work:
        tracked_copy(work)
        with open(os.path.join(work, "setup.cfg"), "w", encoding="utf-8") as f:
            f.write(mutmut_config(module, tests))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        note = ""
        try:
            subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=work, env=env, timeout=MODULE_TIMEOUT_S,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        except subprocess.TimeoutExpired:
            note = f"stopped after {MODULE_TIMEOUT_S} s: the mutants not run are counted as not run"
        except subprocess.CalledProcessError as err:
            tail = err.stderr.decode(errors="replace").strip().splitlines()[-5:]
            note = "mutmut failed: " + " | ".join(tail)
        listed = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                                capture_output=True, text=True).stdout
        mutants = dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", listed, re.M))
        diffs = {name: _diff(work, env, name) for name, status in mutants.items() if status in ("survived", "suspicious")}
    return {"module": module, "tests": tests, "mutants": mutants, "diffs": diffs,
            "seconds": round(time.time() - start, 1), "note": note}


def _diff(work, env, name):
    """The changed lines of a mutant (mutmut show), without the file header."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env, capture_output=True,
                         text=True).stdout
    return "\n".join(line for line in out.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---")))


def score(result, equivalent):
    statuses = result["mutants"].values()
    count = {s: sum(1 for x in statuses if x == s) for s in set(statuses)}
    survivors = [n for n, s in result["mutants"].items() if s in ("survived", "suspicious") and n not in equivalent]
    equivalent_here = [n for n in result["mutants"] if n in equivalent]
    # a mutant that makes the tests hang (an endless loop: mutmut stops it at its timeout) or crash is caught
    killed = count.get("killed", 0) + count.get("timeout", 0) + count.get("segfault", 0)
    counted = killed + len(survivors)
    return {"mutants": len(result["mutants"]), "killed": killed, "survived": len(survivors),
            "timeouts": count.get("timeout", 0),
            "equivalent": len(equivalent_here), "no_tests": count.get("no tests", 0),
            "not_run": count.get("not checked", 0), "score": killed / counted if counted else None,
            "survivors": sorted(survivors, key=_natural), "no_tests_list": sorted(
                (n for n, s in result["mutants"].items() if s == "no tests"), key=_natural)}


def _natural(name):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def write_results(results):
    equivalent = read_equivalent()
    with open(RESULTS_JSON, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    lines = ["# Mutation testing: results", "",
             "Written by `python tools/mutation.py` (mutmut; each module against its own tests, listed below).",
             f"Score: killed / (mutants with tests - equivalent); the goal is {GOAL:.0%} per module. Equivalent",
             "mutants, each with its reason: tools/mutation_equivalent.txt. A mutant that made the tests hang past",
             "mutmut's timeout counts as killed (an endless loop is caught); on a loaded machine a slow test can hang",
             "too, so a module with many of them is worth running again on a quiet one.", "",
             "| module | tests | mutants | killed (of them hung) | survived | equivalent | no tests | score | time |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    details = []
    for module, result in sorted(results.items()):
        s = score(result, equivalent)
        shown = "n/a" if s["score"] is None else f"{s['score']:.1%}"
        lines.append(f"| {module} | {' '.join(t.replace('tests/', '') for t in result['tests'])} | {s['mutants']} | "
                     f"{s['killed']} ({s['timeouts']}) | {s['survived']} | {s['equivalent']} | {s['no_tests']} | "
                     f"{shown} | {result['seconds']:.0f} s |")
        if s["survivors"] or s["no_tests_list"] or result["note"]:
            details += ["", f"## {module}", ""]
            if result["note"]:
                details.append(f"Note: {result['note']}")
            for name in s["survivors"]:
                details += [f"- `{name.rsplit('.', 1)[-1]}` survived:", "", "  ```diff",
                            *(f"  {line}" for line in result.get("diffs", {}).get(name, "").splitlines()), "  ```"]
            if s["no_tests_list"]:
                details.append("No test reaches: " + ", ".join(f"`{n.rsplit('.', 1)[-1]}`"
                                                               for n in s["no_tests_list"]))
    with open(RESULTS_MD, "w", encoding="utf-8") as f:
        f.write("\n".join(lines + details) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to run (paths as in MODULES); default: all")
    parser.add_argument("--report", action="store_true",
                        help="rewrite mutation_results.md from the recorded results (after editing the equivalents)")
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        sys.exit(f"not in MODULES: {', '.join(unknown)}; the modules are {', '.join(MODULES)}")
    results = {}
    if os.path.exists(RESULTS_JSON):
        with open(RESULTS_JSON, encoding="utf-8") as f:
            results = {m: r for m, r in json.load(f).items() if m in MODULES}
    if args.report:
        write_results(results)
        print(f"results: {os.path.relpath(RESULTS_MD, ROOT)}")
        return
    for module in args.modules or list(MODULES):
        print(f"{module}: mutating, against {' '.join(MODULES[module])} ...", flush=True)
        results[module] = run_module(module, MODULES[module])
        write_results(results)
        s = score(results[module], read_equivalent())
        shown = "n/a" if s["score"] is None else f"{s['score']:.1%}"
        print(f"{module}: {s['killed']} killed, {s['survived']} survived, {s['no_tests']} without tests: {shown} "
              f"({results[module]['seconds']:.0f} s) {results[module]['note']}", flush=True)
    print(f"results: {os.path.relpath(RESULTS_MD, ROOT)}")


if __name__ == "__main__":
    main()
