"""Learning-rate schedules: ``schedule(step) -> lr`` as a Python float.

``step`` counts optimizer steps from 0 (the first update uses ``schedule(0)``).
The trainer sets ``optimizer.lr = schedule(step)`` before each update; nothing
here touches arrays.

- ``Constant(lr)``
- ``StepDecay(lr, step_size, gamma=0.1)``: ``lr * gamma ** (step // step_size)``
- ``Exponential(lr, gamma)``: ``lr * gamma ** step`` (per step; gamma > 1 grows,
  as in a learning-rate range test)
- ``Cosine(lr, total_steps, min_lr=0)``: half a cosine from ``lr`` down to
  ``min_lr`` at ``total_steps``, then ``min_lr``
- ``Warmup(schedule, warmup_steps, shift=False)``: linear warm-up that wraps any
  schedule (see its docstring)

Every schedule has ``config()`` (JSON-serialisable, rebuilt by
``from_config``) and ``describe()`` (one line for logs).
"""

from __future__ import annotations

import math
import operator

from .errors import ConfigError, names_hint
from .optim.base import check_lr, check_range

__all__ = ["Schedule", "Constant", "StepDecay", "Exponential", "Cosine", "Warmup",
           "SCHEDULES", "get_schedule", "from_config"]


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _positive_int(name: str, value) -> int:
    n = _as_int(value)
    if n is None or n <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return n


def _check_step(step) -> int:
    n = _as_int(step)
    if n is None or n < 0:
        raise ConfigError(f"a schedule's step counts optimizer steps from 0, got {step!r}")
    return n


class Schedule:
    """Base class: ``__call__(step) -> float``, ``config()``, ``describe()``."""

    name = "schedule"

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        """Arguments that rebuild this schedule with :func:`from_config`."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The same learning rate at every step."""

    name = "constant"

    def __init__(self, lr: float) -> None:
        self.lr = check_lr(lr)

    def __call__(self, step):
        _check_step(step)
        return self.lr

    def config(self):
        return {"name": self.name, "lr": self.lr}

    def describe(self):
        return f"constant {self.lr:g}"


class StepDecay(Schedule):
    """``lr * gamma ** (step // step_size)``: multiply by ``gamma`` every ``step_size`` steps."""

    name = "step"

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = check_lr(lr)
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, high_ok=True)
        if self.gamma == 0:
            raise ConfigError("gamma must be positive, e.g. gamma=0.1")

    def __call__(self, step):
        return self.lr * self.gamma ** (_check_step(step) // self.step_size)

    def config(self):
        return {"name": self.name, "lr": self.lr, "step_size": self.step_size,
                "gamma": self.gamma}

    def describe(self):
        return f"step decay from {self.lr:g}, times {self.gamma:g} every {self.step_size} steps"


class Exponential(Schedule):
    """``lr * gamma ** step``: multiply by ``gamma`` after every step."""

    name = "exponential"

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr = check_lr(lr)
        self.gamma = check_range("gamma", gamma, 0.0, math.inf)
        if self.gamma == 0:
            raise ConfigError("gamma must be positive, e.g. gamma=0.999")

    def __call__(self, step):
        return self.lr * self.gamma ** _check_step(step)

    def config(self):
        return {"name": self.name, "lr": self.lr, "gamma": self.gamma}

    def describe(self):
        return f"exponential from {self.lr:g}, times {self.gamma:g} every step"


class Cosine(Schedule):
    """``min_lr + (lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2``.

    Reaches ``min_lr`` at ``total_steps`` and stays there (PyTorch's
    ``CosineAnnealingLR`` for one half period).
    """

    name = "cosine"

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0) -> None:
        self.lr = check_lr(lr)
        self.total_steps = _positive_int("total_steps", total_steps)
        self.min_lr = check_range("min_lr", min_lr, 0.0, self.lr, high_ok=True)

    def __call__(self, step):
        frac = min(_check_step(step), self.total_steps) / self.total_steps
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * frac)) / 2.0

    def config(self):
        return {"name": self.name, "lr": self.lr, "total_steps": self.total_steps,
                "min_lr": self.min_lr}

    def describe(self):
        return f"cosine from {self.lr:g} to {self.min_lr:g} over {self.total_steps} steps"


class Warmup(Schedule):
    """Linear warm-up in front of any schedule.

    For ``step < warmup_steps`` the rate is ``target * (step + 1) / warmup_steps``,
    so it starts at ``target / warmup_steps`` (near 0, never exactly 0, which
    would waste a step) and reaches ``target`` at step ``warmup_steps - 1``.

    ``shift=False``: ``target = schedule(step)``, and after the warm-up the
    wrapped schedule continues at the same global step, as if the warm-up had
    scaled its first steps. ``shift=True``: ``target = schedule(0)`` and after
    the warm-up the rate is ``schedule(step - warmup_steps)``, so the wrapped
    schedule starts (e.g. its decay) when the warm-up ends.
    """

    name = "warmup"

    def __init__(self, schedule: Schedule, warmup_steps: int, shift: bool = False) -> None:
        if not isinstance(schedule, Schedule):
            raise ConfigError(f"Warmup wraps a Schedule, got {type(schedule).__name__}; "
                              "e.g. Warmup(Cosine(0.1, 1000), 100)")
        self.schedule = schedule
        self.warmup_steps = _positive_int("warmup_steps", warmup_steps)
        self.shift = bool(shift)

    def __call__(self, step):
        step = _check_step(step)
        if step >= self.warmup_steps:
            return self.schedule(step - self.warmup_steps if self.shift else step)
        target = self.schedule(0 if self.shift else step)
        return target * (step + 1) / self.warmup_steps

    def config(self):
        return {"name": self.name, "warmup_steps": self.warmup_steps, "shift": self.shift,
                "schedule": self.schedule.config()}

    def describe(self):
        then = "then" if self.shift else "into"
        return (f"linear warm-up over {self.warmup_steps} steps {then} "
                f"{self.schedule.describe()}")

    def __repr__(self) -> str:
        return f"Warmup({self.schedule!r}, warmup_steps={self.warmup_steps}, shift={self.shift})"


#: names accepted by get_schedule; "warmup" is a warm-up into a constant rate
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup")

_CLASSES = {c.name: c for c in (Constant, StepDecay, Exponential, Cosine, Warmup)}


def get_schedule(name, lr: float, total_steps: int | None = None, warmup_steps: int = 0,
                 **kw) -> Schedule:
    """Build a schedule by name (see ``SCHEDULES``).

    ``total_steps`` is the length of the whole run (needed by ``cosine``).
    ``warmup_steps > 0`` adds a linear warm-up with ``shift=True``: the named
    schedule starts when the warm-up ends, so ``cosine`` decays over the
    remaining ``total_steps - warmup_steps`` steps. Other keyword arguments
    (``step_size``, ``gamma``, ``min_lr``) go to the schedule. A
    :class:`Schedule` is returned as it is.
    """
    if isinstance(name, Schedule):
        return name
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in SCHEDULES:
        raise ConfigError(names_hint("schedule", str(name), SCHEDULES))
    warmup = _as_int(warmup_steps)
    if warmup is None or warmup < 0:
        raise ConfigError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    warmup_steps = warmup
    if key == "warmup" and not warmup_steps:
        raise ConfigError("schedule 'warmup' needs warmup_steps > 0")
    if key == "cosine":
        if total_steps is None:
            raise ConfigError("the cosine schedule needs total_steps (epochs * steps per epoch)")
        rest = _positive_int("total_steps", total_steps) - warmup_steps
        if rest <= 0:
            raise ConfigError(f"warmup_steps ({warmup_steps}) must be less than total_steps "
                              f"({total_steps})")
        kw["total_steps"] = rest
    cls = Constant if key == "warmup" else _CLASSES[key]
    try:
        base = cls(lr, **kw)
    except TypeError as exc:
        raise ConfigError(f"schedule {key!r}: {exc}") from None
    return Warmup(base, warmup_steps, shift=True) if warmup_steps else base


def from_config(config: dict) -> Schedule:
    """Rebuild a schedule from its ``config()``."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in _CLASSES:
        raise ConfigError(names_hint("schedule", str(name), _CLASSES))
    if name == "warmup":
        cfg["schedule"] = from_config(cfg["schedule"])
    return _CLASSES[name](**cfg)
