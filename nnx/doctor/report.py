"""The doctor's report: a terminal summary, ``doctor.json``, ``doctor.md`` and ``doctor.png``.

A healthy run is summarised in one line; otherwise findings are listed by
severity, each with its cause and fix, then the fixes that were tried on a copy
of the run (with ``Doctor(verify_fixes=True)``) and the one recommendation.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from ..atomic import write_bytes
from .detectors import loss_spikes
from .figure import plot_trace
from .findings import SEVERITIES, Finding, sort_findings
from .trace import Trace

__all__ = ["Report", "plot_trace"]


@dataclass
class Report:
    """Findings of one run and the trace they were drawn from."""

    findings: list = field(default_factory=list)
    trace: Trace | None = None
    files: dict = field(default_factory=dict)
    #: the one fix to try first (:class:`~nnx.doctor.reconcile.Recommendation`), or None
    recommendation: object = None
    #: verified fixes (:class:`~nnx.doctor.verify.Trial`), when they were tried
    trials: list = field(default_factory=list)

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
        return "\n".join(lines + self._advice())

    def _advice(self) -> list[str]:
        """The verified fixes and the recommendation, as report lines."""
        lines = []
        if self.trials:
            steps = self.trials[0].steps
            lines.append(f"  fixes tried on a copy of the run ({steps} steps from the same "
                         "start):")
            lines += [f"    {t}" for t in self.trials]
            if not any(t.kept for t in self.trials):
                lines.append("    none of them helped within this budget")
        if self.recommendation is not None:
            lines.append(f"  {self.recommendation}")
        return lines

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        d = {"healthy": self.healthy, "findings": [f.to_dict() for f in self.findings],
             "recommendation": (None if self.recommendation is None
                                else self.recommendation.to_dict()),
             "verified_fixes": [t.to_dict() for t in self.trials]}
        if self.trace is not None:
            t = self.trace
            d["run"] = {k: v for k, v in t.meta.items() if _jsonable(v)}
            d["loss"] = {"steps": t.loss_steps.tolist(),
                         "values": [v if math.isfinite(v) else None for v in t.loss.tolist()],
                         "spikes": t.loss_steps[loss_spikes(t)].tolist()}
            d["series"] = t.layer_series()
            d["epochs"] = [dict(e) for e in t.epochs]  # host floats (Doctor.on_epoch_end)
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
        advice = self._advice()
        if advice:
            lines += ["## What to change", ""] + [f"- {a.strip()}" for a in advice] + [""]
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
                                          json.dumps(self.to_dict(), separators=(",", ":")))
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
    write_bytes(path, text.encode("utf-8"))  # whole or not at all, never through a link
    return path
