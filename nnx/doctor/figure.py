"""The doctor's figure, ``doctor.png``: the loss with its spikes, gradient norms, update
ratios, activation statistics and dead/saturated fractions over training."""

from __future__ import annotations

import numpy as np

from ..plot import save_figure
from .detectors import loss_spikes, spike_events
from .trace import Trace

__all__ = ["plot_trace"]


def plot_trace(trace: Trace, path: str, findings=()) -> str:
    """The diagnostic figure: loss with spikes, gradient norms, update ratios,
    activation statistics and dead/saturated fractions over training."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    (ax_loss, ax_grad, ax_upd), (ax_mean, ax_std, ax_units) = axes
    colors = plt.get_cmap("viridis")
    _plot_loss(ax_loss, trace)
    _plot_gradients(ax_grad, ax_upd, trace, colors)
    _plot_activations(ax_mean, ax_std, ax_units, trace, colors)
    if trace.n_steps:
        first = int(trace.loss_steps[0])
        span = (first, max(int(trace.loss_steps[-1]), first + 1))
        for ax in axes.flat:
            ax.set_xlim(*span)
    bad = [f for f in findings if f.severity in ("warning", "error")]
    title = ("doctor: healthy" if not bad else
             "doctor: " + ", ".join(dict.fromkeys(f.id for f in bad)))
    fig.suptitle(title)
    # fixed spacing: tight_layout costs more than the rest of the figure together
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.07, top=0.9, wspace=0.25, hspace=0.32)
    try:
        save_figure(fig, path, dpi=90)  # whole or not at all, never through a link
    finally:
        plt.close(fig)
    return path


def _plot_loss(ax, trace: Trace) -> None:
    """The loss of every step, spikes marked, the first non-finite step drawn."""
    ok = np.isfinite(trace.loss)
    ax.plot(trace.loss_steps[ok], trace.loss[ok], lw=0.8, color="tab:blue", label="loss")
    spikes = loss_spikes(trace)
    if spikes.size:
        events = spike_events(spikes).size
        ax.scatter(trace.loss_steps[spikes], trace.loss[spikes], color="red", zorder=3,
                   s=18, label=f"spikes ({events}, {spikes.size} steps)")
    if (~ok).any():
        ax.axvline(trace.loss_steps[~ok][0], color="red", ls="--", label="first non-finite")
    if ok.any() and np.nanmin(trace.loss[ok]) > 0 and (
            np.nanmax(trace.loss[ok]) > 10 * np.nanmin(trace.loss[ok])):
        ax.set_yscale("log")  # only when the loss spans more than a decade
    ax.set(title="training loss (every step)", xlabel="step")
    ax.legend(fontsize=8)


def _plot_gradients(ax_grad, ax_upd, trace: Trace, colors) -> None:
    """Gradient norms and update/weight ratios per weight matrix."""
    steps = trace.sample_steps
    weights = list(enumerate(trace.params))
    for k, (j, (layer, _)) in enumerate(weights):
        c = colors(k / max(1, len(weights) - 1))
        _semilog(ax_grad, steps, trace.grad_norm[:, j], c, layer)
        w, u = trace.weight_norm[:, j], trace.update_norm[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            _semilog(ax_upd, steps, np.where(w > 0, u / w, np.nan), c, layer)
    ax_grad.set(title="gradient norm per layer (weights)", xlabel="step")
    ax_upd.axhline(1e-3, color="grey", ls=":", lw=1, label="1e-3 (rule of thumb)")
    ax_upd.set(title="update / weight ratio per step", xlabel="step")
    for ax in (ax_grad, ax_upd):
        if ax.lines:
            ax.legend(fontsize=7)


def _dead_fractions(trace: Trace, k: int, unit) -> list:
    return [np.nan if w.active[k] is None or w.rows == 0 else
            float(((w.active[k] == 0) & unit.can_die).sum() / unit.can_die.sum())
            for w in trace.windows]


def _plot_activations(ax_mean, ax_std, ax_units, trace: Trace, colors) -> None:
    """Activation means and stds per layer, and the dead/saturated fractions."""
    steps = trace.sample_steps
    for k, unit in enumerate(trace.layers):
        c = colors(k / max(1, len(trace.layers) - 1))
        a = trace.act[:, k, :] if trace.act.size else np.zeros((0, 5))
        ax_mean.plot(steps, a[:, 2], color=c, lw=1, label=f"{unit.label} a")
        ax_mean.plot(steps, a[:, 0], color=c, lw=1, ls="--")
        ax_std.plot(steps, a[:, 3], color=c, lw=1, label=f"{unit.label} a")
        ax_std.plot(steps, a[:, 1], color=c, lw=1, ls="--")
        if unit.can_die.any():
            ax_units.plot([w.last_step for w in trace.windows], _dead_fractions(trace, k, unit),
                          color=c, marker="o", label=f"{unit.label} dead")
        if unit.saturates.any():
            ax_units.plot(steps, a[:, 4], color=c, ls="--", label=f"{unit.label} saturated")
    ax_mean.set(title="activation mean (solid: a, dashed: pre-activation z)", xlabel="step")
    ax_std.set(title="activation std (solid: a, dashed: z)", xlabel="step")
    ax_units.set(title="dead / saturated fraction of units", xlabel="step", ylim=(-0.02, 1.02))
    for ax in (ax_mean, ax_std, ax_units):
        if ax.lines:
            ax.legend(fontsize=7)


def _semilog(ax, x, y, color, label) -> None:
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) & (y > 0)
    if ok.any():
        ax.semilogy(np.asarray(x)[ok], y[ok], color=color, lw=1, label=label)
