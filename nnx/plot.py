"""Training curves, drawn on the host with matplotlib's Agg canvas.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than
through ``pyplot``: nothing opens a window, nothing blocks, the global backend
is left alone and no figure stays registered after it is saved.
"""

from __future__ import annotations

import math

from .atomic import replacing

__all__ = ["plot_history", "save_figure"]


def _figure(n_panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * n_panels, 4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _draw_lr(ax, epochs, lr) -> None:
    ax.plot(epochs, lr, color="tab:green", marker=".")
    if min(lr) > 0:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")


def _draw_metric(ax, epochs, h: dict, key: str) -> None:
    """Train and (when recorded) validation curves of ``key``; log scale for a loss that
    spans more than a decade."""
    ax.plot(epochs, h.get(key, []), label="train", marker=".")
    if f"val_{key}" in h:
        ax.plot(epochs, h[f"val_{key}"], label="validation", marker=".")
    values = _finite(h.get(key, []) + h.get(f"val_{key}", []))
    if key == "loss" and values and min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set_ylabel(key)
    ax.set_title(key)
    ax.legend()


def _panels(h: dict) -> list[str]:
    """``loss``, then ``accuracy`` or ``mae`` when recorded, then ``lr`` when it changed."""
    metric = "accuracy" if "accuracy" in h else ("mae" if "mae" in h else None)
    lr = h.get("lr", [])
    return ["loss"] + ([metric] if metric else []) + (["lr"] if len(set(lr)) > 1 else [])


def plot_history(history, path=None, title=None):
    """Loss and accuracy (or MAE) panels, train and validation, on one figure.

    A third panel shows the learning rate when it changed during the run. The
    loss axis is logarithmic when the loss spans more than a decade. Saves a
    PNG when ``path`` is given; returns the :class:`~matplotlib.figure.Figure`.
    """
    h = history.history if hasattr(history, "history") else dict(history)
    epochs = h.get("epoch") or list(range(1, len(h.get("loss", [])) + 1))
    panels = _panels(h)
    fig, axes = _figure(len(panels))
    for ax, key in zip(axes, panels):
        if key == "lr":
            _draw_lr(ax, epochs, h["lr"])
        else:
            _draw_metric(ax, epochs, h, key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path, dpi: int = 100) -> None:
    """Save ``fig`` as a PNG atomically (:func:`nnx.atomic.replacing`: a temporary file of
    its own in the same directory, then a rename); a failed write is a WriteError naming
    ``path`` and the reason (a full disk, no permission) and leaves the old file."""
    with replacing(path) as f:
        fig.savefig(f, dpi=dpi, format="png")
