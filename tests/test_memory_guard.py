"""The suite's memory guard (tests/memory_guard.py) catches a test that grows past the budget, in its own
process or in a child, and logs every test."""
import os

from memory_guard import read_log

pytest_plugins = ["pytester"]

ALLOCATING_TESTS = '''
import subprocess
import sys

def test_small():
    block = bytearray(20 << 20)
    assert len(block)

def test_large():
    block = bytearray(400 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touched, so resident
    assert len(block)

def test_large_in_a_child():
    subprocess.run([sys.executable, "-c", "b = bytearray(400 << 20); b[::4096] = bytes(len(b[::4096]))"],
                   check=True)
'''


def test_a_test_past_the_budget_fails_in_its_process_or_its_child(pytester, monkeypatch):
    monkeypatch.setenv("CNNKIT_TEST_MEMORY_BUDGET_MB", "300")
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makeconftest('pytest_plugins = ["memory_guard"]')
    pytester.makepyfile(test_alloc=ALLOCATING_TESTS)
    log = pytester.path / "memory.tsv"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--memory-log={log}")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*test_large - *", "*test_large_in_a_child - *"])  # the short summary
    output = result.stdout.str()
    assert "the test process peaked at" in output and "a child process peaked at" in output
    assert "above the 300 MB budget" in output and "largest tests by peak resident memory" in output
    rows = {row["test"].split("::")[-1]: row for row in read_log(log)}
    assert set(rows) == {"test_small", "test_large", "test_large_in_a_child"}
    assert rows["test_large"]["peak_mb"] > 400 > rows["test_small"]["peak_mb"]  # each test's own peak
    assert rows["test_large_in_a_child"]["children_peak_mb"] > 400 > rows["test_large_in_a_child"]["peak_mb"]


def test_the_budget_is_six_gigabytes_unless_set(monkeypatch):
    from memory_guard import budget_mb

    monkeypatch.delenv("CNNKIT_TEST_MEMORY_BUDGET_MB", raising=False)
    assert budget_mb() == 6144
    monkeypatch.setenv("CNNKIT_TEST_MEMORY_BUDGET_MB", "100")
    assert budget_mb() == 100


def test_the_peak_is_reset_before_each_test():
    from memory_guard import _reset_peak, _status_mb

    block = bytearray(200 << 20)
    block[::4096] = bytes(len(block[::4096]))
    del block
    assert _status_mb("VmHWM") - _status_mb("VmRSS") > 150
    _reset_peak()
    assert _status_mb("VmHWM") - _status_mb("VmRSS") < 50
