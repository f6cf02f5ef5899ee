"""Recording helpers the benchmark scripts share: the machine description and RESULTS.md sections."""
import os
import platform
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def machine():
    """"2 cores AMD EPYC (avx2), 23.4 GiB, Linux, TensorFlow 2.21.0": what the numbers were measured on."""
    import tensorflow as tf

    cpu, flags = platform.processor() or "CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = re.search(r"model name\s*:\s*(.+)", info).group(1).strip()
        found = set(re.search(r"flags\s*:\s*(.+)", info).group(1).split())
        flags = ",".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                     "amx_tile", "amx_bf16", "amx_int8") if f in found)
    except (OSError, AttributeError):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} cores {cpu}" + (f" ({flags})" if flags else "") + f", {memory:.1f} GiB, "
            f"{'GPU ' + str(len(gpus)) if gpus else 'no GPU'}, {platform.system()}, TensorFlow {tf.__version__}")


def add_record_option(parser):
    parser.add_argument("--record", action="store_true",
                        help="rewrite this benchmark's section of benchmarks/RESULTS.md (a trial run leaves it as it is)")


def replace_section(name, body, record=True):
    """Rewrite the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in RESULTS.md, if ``record``
    (the benchmark's ``--record``): a trial or smoke run must not overwrite the recorded measurement."""
    if not record:
        print(f"(not recorded in benchmarks/RESULTS.md: pass --record to rewrite its {name} section)")
        return
    text = open(RESULTS, encoding="utf-8").read()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text:
        raise KeyError(f"RESULTS.md has no {start} marker")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(RESULTS, "w", encoding="utf-8") as f:
        f.write(f"{head}{start}\n{body}\n{end}{tail}")


def run_watched(command, ceiling_mb=None, poll_seconds=0.1):
    """Run ``command`` (argv list) in a child process, sampling the memory of it and its descendants together
    (the exporter runs its converters in child processes; see ``tree_memory_mb``); kill them above ``ceiling_mb``.
    Returns {"returncode", "stdout", "stderr", "peak_mb", "peak_processes", "seconds", "killed", "descendants"}
    (``peak_processes``: each process's share at the peak; ``descendants``: how many processes below it were seen,
    the exporter's converter children, when they live past one sample)."""
    import signal
    import subprocess
    import tempfile
    import time

    start = time.perf_counter()
    # its output goes to files, not pipes: a child that writes more than a pipe holds (64 KiB) while nothing reads
    # until it ends would wait for ever
    out_file, err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, stdout=out_file, stderr=err_file, text=True, start_new_session=True)
    peak, at_peak, killed, seen = 0.0, "", False, set()
    while proc.poll() is None:
        mb, processes = tree_memory_mb(proc.pid, seen)
        if mb > peak:
            peak, at_peak = mb, processes
        if ceiling_mb and mb > ceiling_mb:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(poll_seconds)
    proc.wait()
    out, err = (_read_back(f) for f in (out_file, err_file))
    return {"returncode": proc.returncode, "stdout": out, "stderr": err, "peak_mb": round(peak),
            "peak_processes": at_peak, "seconds": round(time.perf_counter() - start, 1), "killed": killed,
            "descendants": len(seen - {proc.pid})}


def _read_back(file):
    with file:
        file.seek(0)
        return file.read()


def tree_memory_mb(pid, seen=None):
    """Physical memory of process ``pid`` and all its descendants, in MB (0 once it is gone): every process's
    anonymous and shared memory, plus the mapped files of the one that maps the most. Mapped files (TensorFlow's
    libraries: 0.44 GB resident per process) are one set of pages in the page cache however many processes map
    them, and their residency depends on the kernel's read-ahead, not on the program: summing VmRSS counted them
    once per process and measured the same export 1.8 GB on one machine, 2.6 GB on another. Returns
    (MB, "pid command anon+file, ..." for each process); their pids are added to ``seen``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grown = {pid}, True
    while grown:  # children, their children, ...
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree, grown = tree | more, bool(more)
    if seen is not None:
        seen |= tree
    own, files, described = 0.0, 0.0, []
    for p in sorted(tree):
        try:
            with open(f"/proc/{p}/status") as f:
                kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                      if k in ("RssAnon", "RssShmem", "RssFile")}
            with open(f"/proc/{p}/cmdline", "rb") as f:
                name = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[-40:]
        except (OSError, ValueError):
            continue
        anon, mapped = (kb.get("RssAnon", 0) + kb.get("RssShmem", 0)) / 1024, kb.get("RssFile", 0) / 1024
        own, files = own + anon, max(files, mapped)
        described.append(f"{p} [{name}] {anon:.0f}+{mapped:.0f}")
    return own + files, ", ".join(described)


def record_rows(script, rows):
    """Write ``benchmarks/results/SCRIPT.json`` (machine, command, rows); returns (command, machine)."""
    import json
    import sys

    command = f"python benchmarks/{script}.py " + " ".join(sys.argv[1:])
    described = machine()
    folder = os.path.join(os.path.dirname(RESULTS), "results")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{script}.json"), "w") as f:
        json.dump({"machine": described, "command": command.strip(), "python": platform.python_version(),
                   "rows": rows}, f, indent=1)
    return command.strip(), described


def cnnkit(*args, ok=(0,)):
    """``python -m cnnkit ARGS`` as a user types it: its stdout; a SystemExit with its stderr for another exit code."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True)
    if out.returncode not in ok:
        raise SystemExit(f"cnnkit {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout
