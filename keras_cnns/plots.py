"""Charts: the notes' model comparison (operations on x, parameters on y, bubble area = memory of
weights + one image's activations, as float32), training history, confusion matrices and reliability diagrams."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Write the figure to ``path`` through a temporary sibling (atomic) and close it."""
    from keras_cnns.files import replaced_atomically

    try:
        with replaced_atomically(path, ".png") as tmp:
            fig.savefig(tmp)
    finally:
        _pyplot().close(fig)
    return path


def plot_model_comparison(rows, path, title="CNN architectures: operations vs parameters vs memory"):
    """``rows``: dicts with name, macs, params, activations. Writes a PNG to ``path`` atomically."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_history(rows, path, title="training history"):
    """Loss, accuracy and learning rate per epoch from ``history.csv`` rows."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker=".", label=("validation " if prefix else "training ") + label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].plot(epochs, [r.get("lr") for r in rows], marker=".")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    axes[2].grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(matrix, class_names, path, title="confusion matrix"):
    """Rows: true class, columns: predicted class, counts written in the cells."""
    plt = _pyplot()
    k = len(class_names)
    side = min(12, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), class_names, rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        high = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > high else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(found, path, title="reliability"):
    """Accuracy against confidence per bin (``calibration.reliability``): on the diagonal a model is calibrated,
    below it over-confident. With a fitted temperature, its bins beside the model's own."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    series = [("model", found["bins"], found["ece"], "tab:blue")]
    if found.get("temperature"):
        series.append((f"temperature {found['temperature']:.2f}", found["bins_after_temperature"],
                       found["ece_after_temperature"], "tab:orange"))
    for name, rows, ece, colour in series:
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color=colour,
                label=f"{name}: ECE {ece:.1%}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_lr_find(found, path):
    """The learning-rate range test (training.lr_find): each step's loss and the smoothed one against the
    learning rate, log scale, with the suggestion marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=100)
    ax.plot(found["lr"], found["loss"], color="tab:blue", alpha=0.3, linewidth=1, label="loss per step")
    ax.plot(found["lr"], found["smoothed"], color="tab:blue", label="smoothed")
    if found.get("suggested"):
        ax.axvline(found["suggested"], color="tab:orange", linestyle="--",
                   label=f"suggested {found['suggested']:.2g}")
    ax.set_xscale("log")
    smoothed = found["smoothed"]
    if smoothed:  # up to the fall's bottom and a little above: the blow-up at the end would squash the curve
        lowest = smoothed.index(min(smoothed))
        top = max(smoothed[: lowest + 1])
        span = max(top - smoothed[lowest], 1e-9)
        ax.set_ylim(smoothed[lowest] - 0.1 * span, top + 0.5 * span)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test: {found.get('model', '')}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
