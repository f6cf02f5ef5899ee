"""A pytest plugin that keeps the suite inside its machine: every test's peak resident memory and wall time
are logged, and a test whose process (or any child process it waited for) peaks above the budget fails.

The peak is the kernel's own high-water mark (VmHWM), reset before each test through /proc/self/clear_refs,
so a test is charged for what it allocated, not for what an earlier test left behind; child processes are
charged through RUSAGE_CHILDREN (the largest peak of any child reaped so far), which is why a test whose CLI
subprocess blows up is caught as well. The budget (MB) is CNNKIT_TEST_MEMORY_BUDGET_MB, default 6 GB: two
xdist workers at the budget still fit the 24 GB CI machine beside their children.

The log (one line per test: worker, peak MB, growth MB, children's peak MB, seconds, test id) goes to
``--memory-log`` (default ``.pytest_cache/cnnkit-memory.tsv``); the terminal summary lists the ten largest.
"""
import os
import resource
import time

import pytest

DEFAULT_BUDGET_MB = 6144
_HEADER = "worker\tpeak_mb\tgrowth_mb\tchildren_peak_mb\tseconds\ttest\n"


def budget_mb():
    return int(os.environ.get("CNNKIT_TEST_MEMORY_BUDGET_MB", DEFAULT_BUDGET_MB))


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size (Linux 4.0+)
    except OSError:  # elsewhere the peak is the process's whole life: stricter, never looser
        pass


def _children_peak_mb():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def pytest_addoption(parser):
    parser.addoption("--memory-log", default=os.path.join(".pytest_cache", "cnnkit-memory.tsv"),
                     help="file for each test's peak resident memory and wall time (tab-separated)")


def pytest_configure(config):
    path = config._memory_log = os.path.abspath(config.getoption("memory_log"))  # tests may chdir
    if not hasattr(config, "workerinput"):  # the controller (or a plain run) starts a fresh log
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(_HEADER)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _reset_peak()
    item._memory = {"budget": budget_mb(), "rss": _status_mb("VmRSS"), "children": _children_peak_mb(),
                    "start": time.monotonic()}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    start = getattr(item, "_memory", None)
    if start is None or call.when not in ("call", "teardown"):
        return
    peak = _status_mb("VmHWM")
    children = _children_peak_mb()
    child_peak = children if children > start["children"] else 0.0  # a child of this test set a new high
    if call.when == "call":
        limit = start["budget"]
        over = [f"{what} peaked at {mb:.0f} MB" for what, mb in (("the test process", peak),
                                                                   ("a child process", child_peak)) if mb > limit]
        if over and report.outcome != "failed":
            report.outcome = "failed"
            report.longrepr = (f"memory budget exceeded: {' and '.join(over)}, above the {limit} MB budget "
                               f"(CNNKIT_TEST_MEMORY_BUDGET_MB, tests/memory_guard.py); build less, release what "
                               f"was built (clear_session, gc), or run the heavy part in a child process")
        return
    worker = getattr(item.config, "workerinput", {}).get("workerid", "main")
    line = (f"{worker}\t{peak:.0f}\t{_status_mb('VmRSS') - start['rss']:.0f}\t{child_peak:.0f}\t"
            f"{time.monotonic() - start['start']:.1f}\t{item.nodeid}\n")
    with open(item.config._memory_log, "a") as f:
        f.write(line)


def read_log(path):
    rows = []
    with open(path) as f:
        next(f, None)
        for line in f:
            worker, peak, growth, children, seconds, test = line.rstrip("\n").split("\t", 5)
            rows.append({"worker": worker, "peak_mb": float(peak), "growth_mb": float(growth),
                         "children_peak_mb": float(children), "seconds": float(seconds), "test": test})
    return rows


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput") or not os.path.exists(config._memory_log):
        return
    rows = read_log(config._memory_log)
    if not rows:
        return
    terminalreporter.section("largest tests by peak resident memory (MB)")
    for row in sorted(rows, key=lambda r: -max(r["peak_mb"], r["children_peak_mb"]))[:10]:
        terminalreporter.write_line(f"{row['peak_mb']:7.0f} (+{row['growth_mb']:.0f}, children "
                                    f"{row['children_peak_mb']:.0f}) {row['seconds']:6.1f} s  {row['test']}")
    terminalreporter.write_line(f"budget {budget_mb()} MB; every test in {config._memory_log}")
