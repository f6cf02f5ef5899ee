"""The notes' model comparison chart: operations on x, parameters on y, bubble area = memory
(weights + one image's activations, as float32)."""
import os


def plot_model_comparison(rows, path, title="CNN architectures: operations vs parameters vs memory"):
    """``rows``: dicts with name, macs, params, activations. Writes a PNG to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("nothing to plot: no models given")
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    memory = {r["name"]: 4 * (r["params"] + r["activations"]) for r in rows}
    biggest = max(memory.values()) or 1
    for r in rows:
        x, y = r["macs"] / 1e9, r["params"] / 1e6
        size = 60 + 2400 * memory[r["name"]] / biggest
        ax.scatter(x, y, s=size, alpha=0.45, edgecolors="black", linewidths=0.6)
        ax.annotate(f"{r['name']} ({memory[r['name']] / 2**20:.0f} MiB)", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operations per image (G multiply-accumulates, log scale)")
    ax.set_ylabel("parameters (millions, log scale)")
    ax.margins(0.15)
    ax.set_title(title + "\n(bubble area: memory = weights + activations of one image)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
