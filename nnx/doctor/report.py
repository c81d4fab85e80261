"""The doctor's report: a terminal summary, ``doctor.json``, ``doctor.md`` and ``doctor.png``.

A healthy run is summarised in one line; otherwise findings are listed by
severity, each with its cause and fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .detectors import loss_spikes, spike_events
from .findings import SEVERITIES, Finding, sort_findings
from .trace import Trace

__all__ = ["Report", "plot_trace"]


@dataclass
class Report:
    """Findings of one run and the trace they were drawn from."""

    findings: list = field(default_factory=list)
    trace: Trace | None = None
    files: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.findings = sort_findings(_dedupe(self.findings))

    @property
    def healthy(self) -> bool:
        """No warnings and no errors."""
        return not any(f.severity in ("warning", "error") for f in self.findings)

    def ids(self, severity: str | None = None) -> set:
        """Finding ids, optionally of one severity and above."""
        rank = SEVERITIES.index(severity) if severity else 0
        return {f.id for f in self.findings if SEVERITIES.index(f.severity) >= rank}

    def get(self, finding_id: str) -> list[Finding]:
        return [f for f in self.findings if f.id == finding_id]

    def __contains__(self, finding_id: str) -> bool:
        return any(f.id == finding_id for f in self.findings)

    # --- text ----------------------------------------------------------------

    def _scope(self) -> str:
        t = self.trace
        if t is None or t.n_steps == 0:
            return "before training"
        return (f"{t.n_steps} steps, {len(t.layers)} activation layers and "
                f"{len(t.weight_layers())} weight layers monitored")

    def _counts(self) -> dict:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def summary(self, *, verbose: bool = False) -> str:
        """The terminal report. One line when healthy (plus infos when ``verbose``)."""
        counts = self._counts()
        if self.healthy:
            line = f"doctor: healthy - no problems found ({self._scope()})"
            if counts["info"]:
                line += f"; {_plural(counts['info'], 'note')}"
            return "\n".join([line] + [f"  - {f}" for f in self.findings]) if verbose else line
        head = ", ".join(_plural(counts[s], s) for s in reversed(SEVERITIES) if counts[s])
        lines = [f"doctor: {head} ({self._scope()})"]
        for f in self.findings:
            if f.severity != "info" or verbose:
                lines += [f"  {f}", f"      cause: {f.cause}", f"      fix:   {f.fix}"]
        if counts["info"] and not verbose:
            lines.append(f"  (+{_plural(counts['info'], 'info note')} in doctor.md)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        d = {"healthy": self.healthy, "findings": [f.to_dict() for f in self.findings]}
        if self.trace is not None:
            t = self.trace
            d["run"] = {k: v for k, v in t.meta.items() if _jsonable(v)}
            d["loss"] = {"steps": t.loss_steps.tolist(),
                         "values": [float(v) if np.isfinite(v) else None for v in t.loss],
                         "spikes": t.loss_steps[loss_spikes(t)].tolist()}
            d["series"] = t.layer_series()
            d["epochs"] = [{k: v for k, v in e.items() if _jsonable(v)} for e in t.epochs]
        return d

    def markdown(self) -> str:
        lines = ["# Doctor's report", ""]
        lines.append("**Healthy**: no problems found." if self.healthy else
                     f"**{len(self.findings)} finding(s)**, most severe first.")
        lines += ["", f"Scope: {self._scope()}.", ""]
        if self.trace is not None and self.trace.meta:
            lines += ["| run | |", "|---|---|"]
            for k, v in self.trace.meta.items():
                if isinstance(v, (str, int, float, bool)) and v is not None:
                    lines.append(f"| {k} | {v} |")
            lines.append("")
        for f in self.findings:
            lines.append(f"## {f.severity.upper()}: `{f.id}`"
                         + (f" ({', '.join(f.layers)})" if f.layers else ""))
            lines += ["", f.title, "", f"**Cause.** {f.cause}", "", f"**Fix.** {f.fix}", ""]
            if f.steps:
                lines += [f"Steps: {', '.join(map(str, f.steps[:20]))}", ""]
            if f.evidence:
                lines.append("Evidence: `" + json.dumps(f.evidence, sort_keys=True) + "`")
                lines.append("")
        if "png" in self.files:
            lines += [f"![diagnostics]({os.path.basename(self.files['png'])})", ""]
        return "\n".join(lines)

    def write(self, out_dir: str, *, figure: bool = True) -> dict:
        """Write ``doctor.json``, ``doctor.md`` and (with a trace) ``doctor.png``; return paths."""
        os.makedirs(out_dir, exist_ok=True)
        if figure and self.trace is not None and self.trace.n_steps:
            self.files["png"] = plot_trace(self.trace, os.path.join(out_dir, "doctor.png"),
                                           self.findings)
        self.files["json"] = _atomic_text(os.path.join(out_dir, "doctor.json"),
                                          json.dumps(self.to_dict(), indent=1))
        self.files["md"] = _atomic_text(os.path.join(out_dir, "doctor.md"), self.markdown())
        return dict(self.files)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n > 1 else ''}"


def _dedupe(findings):
    seen, out = set(), []
    for f in findings:
        key = (f.id, f.title)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _atomic_text(path: str, text: str) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


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
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
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
