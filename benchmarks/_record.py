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
        flags = ",".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in found)
    except (OSError, AttributeError):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} cores {cpu}" + (f" ({flags})" if flags else "") + f", {memory:.1f} GiB, "
            f"{'GPU ' + str(len(gpus)) if gpus else 'no GPU'}, {platform.system()}, TensorFlow {tf.__version__}")


def replace_section(name, body):
    """Rewrite the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in RESULTS.md."""
    text = open(RESULTS, encoding="utf-8").read()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text:
        raise KeyError(f"RESULTS.md has no {start} marker")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(RESULTS, "w", encoding="utf-8") as f:
        f.write(f"{head}{start}\n{body}\n{end}{tail}")
