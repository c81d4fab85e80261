"""Training curves with matplotlib (Agg backend: works with no display)."""

from __future__ import annotations

import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_history(history, path=None, title=None):
    """Figure with loss and accuracy (or MAE) panels, train and validation,
    and a learning-rate panel when the rate changed. Returns the figure."""
    plt = _pyplot()
    h = history.history
    epochs = h.get("epoch", [])
    metric = "accuracy" if "accuracy" in h else ("mae" if "mae" in h else None)
    lr = h.get("lr", [])
    panels = ["loss"] + ([metric] if metric else []) + (["lr"] if len(set(lr)) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        if key == "lr":
            ax.plot(epochs, lr, color="tab:green")
            ax.set_yscale("log")
            ax.set_ylabel("learning rate")
            ax.set_title("learning rate")
        else:
            ax.plot(epochs, h[key], label="train", marker=".")
            if f"val_{key}" in h:
                ax.plot(epochs, h[f"val_{key}"], label="validation", marker=".")
            ax.set_ylabel(key)
            ax.set_title(key)
            ax.legend()
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path) -> None:
    """Save ``fig`` as PNG atomically (temporary file, then rename) and close it."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        _pyplot().close(fig)
