"""Fixes that are proven: retrain a copy of the run with each fix applied, keep what helps.

:class:`RunCopy` remembers, when training starts, everything needed to train the
same run again: the architecture, the initial weights, a fresh optimizer, the
seed, the data and the schedule. :func:`verify` trains it for a short budget
(``VERIFY_STEPS`` steps, or the run's own length when shorter) once per
distinct fix of the report's warnings and errors, with that fix applied, and
compares the mean training loss over the budget's last steps with the original
run's over the same steps (same start, same shuffles). A fix is kept when the
loss falls by ``KEEP_GAIN``, or when the symptom it was meant for is gone and
the loss did not rise by more than that. Fixes that need the whole run to judge
(early stopping) are not tried.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import NnxError
from ..train.callbacks import Callback
from .meta import schedule_of
from .reconcile import flags
from .static import check_data

__all__ = ["RunCopy", "Trial", "verify", "VERIFY_STEPS", "KEEP_GAIN", "VERIFIABLE"]

#: steps each verification run trains for (at most the run's own steps)
VERIFY_STEPS = 200
#: a fix is kept when it lowers the loss by this fraction
KEEP_GAIN = 0.02
#: at most this many single fixes are tried, root causes first
MAX_TRIALS = 4
#: the settings a short retraining can judge
VERIFIABLE = {"lr", "init", "activation", "output", "standardize", "standardize_targets",
              "weight_decay", "l2", "clip_norm", "optimizer", "schedule"}


@dataclass
class Trial:
    """One verification run: a fix, the loss it reached, and whether it is kept."""

    action: dict
    sources: list
    steps: int = 0
    loss: float = math.nan
    was: float = math.nan
    gone: list = field(default_factory=list)
    still: list = field(default_factory=list)
    kept: bool = False
    error: str | None = None
    units: str = "loss"

    def outcome(self) -> str:
        if self.error:
            return f"could not run ({self.error})"
        gone = f", {' and '.join(self.gone)} gone" if self.gone else ""
        return (f"{self.units} {self.loss:.4g} after {self.steps} steps "
                f"(was {self.was:.4g}){gone}")

    def __str__(self) -> str:
        verdict = "kept" if self.kept else "dropped"
        return f"tried {flags(self.action)}: {self.outcome()}; {verdict}"

    def to_dict(self) -> dict:
        return {"action": self.action, "flags": flags(self.action), "sources": self.sources,
                "steps": self.steps, "loss": _finite(self.loss), "was": _finite(self.was),
                "gone": self.gone, "still": self.still, "kept": self.kept,
                "error": self.error, "text": str(self)}


def _finite(v):
    return float(v) if math.isfinite(v) else None


class RunCopy:
    """What it takes to train the run again from its start, taken at ``on_train_begin``."""

    @classmethod
    def of(cls, trainer) -> RunCopy:
        self = cls()
        model = trainer.model
        self.config = model.config()
        # the initial weights, as host copies (an in-place optimizer changes the arrays);
        # the model is rebuilt from them only when a fix is tried
        self.weights = {k: np.array(v, copy=True) for k, v in model.get_weights().items()}
        try:
            from ..layers import build

            build(self.config)
            self.model = None
        except NnxError:  # a user's layer that is not registered: keep a copy of the objects
            self.model = copy.deepcopy(model, {id(model.backend): model.backend})
        self.optimizer = copy.deepcopy(trainer.optimizer)
        self.loss, self.backend, self.seed = trainer.loss, trainer.backend, trainer.seed
        self.dtype = model.dtype
        self.x, self.y = trainer.x_train, trainer.y_train
        self.validation = trainer.validation_data
        self.batch_size, self.steps_per_epoch = trainer.batch_size, trainer.steps_per_epoch
        self.schedule = schedule_of(trainer)
        return self


class _StopAfter(Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, trainer, state) -> None:
        if state.step + 1 >= self.steps:
            trainer.stop_training = True


# --- applying a fix --------------------------------------------------------------

def _rebuilt(run: RunCopy, action: dict):
    """The model for ``action``: rebuilt from its configuration with a new initialisation,
    activation or output, else a copy with the original initial weights."""
    from ..layers import build
    if not action.keys() & {"init", "activation", "output"}:
        model = (build(run.config) if run.model is None
                 else copy.deepcopy(run.model, {id(run.backend): run.backend}))
        model.init(run.backend, 0, run.dtype)
        model.set_weights(run.weights)
        return model
    if run.model is not None:
        raise _Skip("the model has layers that cannot be rebuilt from their configuration")
    layers = [copy.deepcopy(spec) for spec in run.config["layers"]]
    if action.get("output") == "linear":
        layers = _without_output_activation(layers)
    output = _output_activation(layers)
    for spec in layers:
        _change_layer(spec, action, is_output=spec is output)
    return build({**run.config, "layers": layers})


def _change_layer(spec: dict, action: dict, *, is_output: bool) -> None:
    """Apply ``init`` / ``activation`` to one layer configuration, in place."""
    cfg, activation = spec["config"], action.get("activation")
    if "init" in cfg and (action.get("init") or activation):
        cfg["init"] = "auto"  # a new activation gets the initialisation that suits it
    if activation and spec["type"] == "ActivationLayer" and not is_output:
        cfg["activation"] = activation
    if activation == "relu" and cfg.get("family") not in (None, "linear"):
        cfg["family"] = "relu"


def _output_activation(layers):
    """The activation layer after the last weight layer, if any."""
    for spec in reversed(layers):
        if spec["type"] == "ActivationLayer":
            return spec
        if "n_out" in spec["config"]:
            return None
    return None


def _without_output_activation(layers):
    last = _output_activation(layers)
    return [spec for spec in layers if spec is not last]


def _optimizer(run: RunCopy, action: dict):
    from ..optim import get_optimizer

    if "optimizer" in action:
        return get_optimizer(action["optimizer"], lr=action.get("lr"))
    opt = copy.deepcopy(run.optimizer)
    for key in ("lr", "l2", "weight_decay", "clip_norm"):
        if key in action:
            setattr(opt, key, action[key])
    return opt


def _host(a):
    return np.asarray(a) if type(a).__module__.startswith("numpy") else None


def _standardise(train, held_out, what: str, eps: float):
    """``(train, held_out, std)`` standardised with the training set's statistics."""
    th = _host(train)
    if th is None:
        raise _Skip(f"the {what} are not host arrays")
    m, s = th.mean(0), th.std(0) + eps
    ho = _host(held_out) if held_out is not None else None
    return (((th - m) / s).astype(th.dtype),
            held_out if ho is None else ((ho - m) / s).astype(th.dtype), s)


def _standardised(run: RunCopy, action: dict):
    """``(x, y, validation, loss scale)`` with the inputs or targets standardised as asked."""
    x, y, val = run.x, run.y, run.validation
    scale = 1.0
    if action.get("standardize"):
        x, vx, _ = _standardise(x, None if val is None else val[0], "inputs", 1e-8)
        val = None if val is None else (vx, val[1])
    if action.get("standardize_targets"):
        y, vy, s = _standardise(y, None if val is None else val[1], "targets", 1e-12)
        val = None if val is None else (val[0], vy)
        scale = float(np.mean(s ** 2))
    return x, y, val, scale


def _schedule(run: RunCopy, action: dict):
    if run.schedule is None or action.get("schedule") != "per-epoch":
        return run.schedule
    schedule, per_epoch = run.schedule, max(1, run.steps_per_epoch)
    return lambda step: schedule(step // per_epoch)


class _Skip(Exception):
    """A fix this run cannot try."""


# --- running the trials -----------------------------------------------------------------

def _window(steps: int, per_epoch: int) -> slice:
    k = max(1, min(per_epoch, steps // 4))
    return slice(steps - k, steps)


def _train(run: RunCopy, action: dict, steps: int, watch):
    """Train the copy with ``action`` applied for ``steps`` steps under the doctor ``watch()``
    returns: ``(report, loss scale)``."""
    from ..errors import NonFiniteError
    from ..train import Trainer

    model = _rebuilt(run, action)
    x, y, val, scale = _standardised(run, action)
    doctor = watch()
    trainer = Trainer(model, run.loss, _optimizer(run, action), device=run.backend,
                      seed=run.seed, dtype=run.dtype, schedule=_schedule(run, action),
                      callbacks=[doctor, _StopAfter(steps)])
    try:
        trainer.fit(x, y, epochs=math.ceil(steps / max(1, run.steps_per_epoch)),
                    batch_size=run.batch_size, validation_data=val)
    except NonFiniteError as exc:
        doctor.finish(exc)
    # the data checks too, on the data the fix trained on (scaling fixes clear them)
    data = [f.id for f in check_data(model, run.loss, x, y) if f.severity != "info"]
    return doctor.report, scale, set(data)


def _trial(run: RunCopy, trace, action: dict, sources: list, steps: int, watch) -> Trial:
    t = Trial(dict(action), list(sources), steps=steps)
    window = _window(steps, run.steps_per_epoch)
    was = trace.loss[window]
    t.was = float(np.mean(was)) if was.size and np.isfinite(was).all() else math.inf
    try:
        report, scale, data = _train(run, action, steps, watch)
    except _Skip as exc:
        t.error = str(exc)
        return t
    except (NnxError, ValueError, TypeError, ArithmeticError) as exc:
        t.error = f"{type(exc).__name__}: {exc}"
        return t
    _judge(t, report, window, scale, data)
    return t


def _judge(t: Trial, report, window: slice, scale: float, data: set) -> None:
    """Fill in the trial's loss, the symptoms gone and whether the fix is kept."""
    got = report.trace.loss[window] if report.trace.n_steps >= t.steps else np.array([np.inf])
    t.loss = float(np.mean(got)) if np.isfinite(got).all() else math.inf
    if scale != 1.0:  # standardised targets: compare errors relative to the targets' variance
        t.was, t.units = t.was / scale, "mean squared error / target variance"
    left = report.ids("warning") | data
    t.gone = [s for s in t.sources if s not in left]
    t.still = [s for s in t.sources if s in left]
    better = t.loss <= (1 - KEEP_GAIN) * t.was
    cured = bool(t.gone) and not t.still and t.loss <= (1 + KEEP_GAIN) * t.was
    t.kept = math.isfinite(t.loss) and (better or cured)


def _candidates(findings) -> list[tuple[dict, list]]:
    """Distinct verifiable actions of the warnings and errors, root causes first."""
    from .reconcile import _rank

    out: list[tuple[dict, list]] = []
    for f in sorted((f for f in findings if f.severity != "info" and f.action), key=_rank):
        action = {k: v for k, v in f.action.items() if k in VERIFIABLE}
        if not action:
            continue
        for known, sources in out:
            if known == action:
                sources.append(f.id)
                break
        else:
            out.append((action, [f.id]))
    return out[:MAX_TRIALS]


def _combined(trials: list[Trial]):
    """The union of the kept fixes when they set different settings, or None."""
    kept = [t for t in trials if t.kept]
    if len(kept) < 2:
        return None
    merged, sources = {}, []
    for t in kept:
        if merged.keys() & t.action.keys():
            return None
        merged.update(t.action)
        sources += t.sources
    return merged, sources


def verify(run: RunCopy, trace, report, watch, *, steps: int = VERIFY_STEPS) -> list[Trial]:
    """Try each distinct fix of ``report`` on a copy of ``run``; see the module docstring.

    ``watch()`` returns a fresh doctor callback (no static checks, no verification) that
    each retraining runs under, to tell whether the symptom is gone.
    """
    steps = max(1, min(int(steps), trace.n_steps))
    trials = [_trial(run, trace, action, sources, steps, watch)
              for action, sources in _candidates(report.findings)]
    both = _combined(trials)
    if both is not None:
        together = _trial(run, trace, both[0], both[1], steps, watch)
        best = min(t.loss for t in trials if t.kept)
        together.kept = together.kept and together.loss < best
        trials.append(together)
    return trials
