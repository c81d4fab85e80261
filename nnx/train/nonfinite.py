"""NaN and infinity during training: skip the step, or find where it started.

The two modes are small objects (:class:`SkipNonFinite`, :class:`RaiseOnNonFinite`,
one per epoch) that the training step calls at fixed points: before the forward
pass, just before and just after the optimizer update, and at logging points.

``on_nonfinite="skip"`` (:class:`SkipGuard`): every step keeps copies of the
parameters, buffers and optimizer state, and after the update puts the old
values back wherever the loss was not finite (``where`` on the device: no host
read). The optimizer's step counter still advances.

``on_nonfinite="raise"`` (the default): the trainer checks the loss sum at
logging points only, and names where a failure began by replaying the epoch
from a snapshot taken at its start (:mod:`nnx.train.replay`).
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from .. import inplace
from ..errors import ConfigError, NonFiniteError
from .metrics import read_scalar
from .replay import LOWER_LR, Blame, Snapshot, first_nonfinite_param, replay, training_arrays

__all__ = ["MODES", "check_mode", "nonfinite_mode", "NonFiniteMode", "RaiseOnNonFinite",
           "SkipNonFinite", "SkipGuard", "NO_STEP"]

#: larger than any step number: "no non-finite step yet"
NO_STEP = 2**62


def _copy(x):
    return array_namespace(x).asarray(x, copy=True)


class SkipGuard:
    """Undo the effect of steps whose loss is not finite, on the device."""

    def __init__(self, model, optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self._saved: list = []
        self._known: set = set()

    def begin(self) -> None:
        """Copy parameters, buffers and optimizer state (before the forward pass)."""
        self._saved = [(d, k, _copy(d[k])) for d, k in
                       training_arrays(self.model, self.optimizer)]
        self._known = set(self.optimizer.state)

    def end(self, ok) -> None:
        """After the update: keep the new values where ``ok`` (0-d bool), else the old."""
        xp = array_namespace(ok)
        for d, k, old in self._saved:
            inplace.copy_(d, k, xp.where(ok, d[k], old))
        for name, slots in self.optimizer.state.items():
            if name not in self._known:  # created by this step: its old value was zero
                for s in slots:
                    inplace.copy_(slots, s, xp.where(ok, slots[s], 0.0))
        self._saved = []


def last_good_checkpoint(callbacks) -> str:
    """A sentence naming the last checkpoint a callback wrote (``last_saved``), if any."""
    for cb in reversed(callbacks):
        last = getattr(cb, "last_saved", None)
        if last:
            path, epoch = last
            return f"The last good checkpoint is {path} (after epoch {epoch})."
    return "No checkpoint was written in this run."


def _unreplayed(trainer, step: int, last: int) -> Blame:
    """What can be said without a replay that found the first NaN: the parameters now."""
    bad = first_nonfinite_param(trainer.model)
    if step == NO_STEP:
        what = "every batch loss was finite but they were so large that their sum overflowed"
    else:
        what = "the loss became NaN or infinite"
    if bad:
        what += f"; {bad} is now NaN or infinite"
    else:
        what += (" (replaying the epoch from its start did not repeat it: the device may not "
                 "be deterministic)")
    lr = trainer.optimizer.lr
    cause = (f"the learning rate ({lr:g}) is probably too high, or the inputs are unscaled; "
             f"{LOWER_LR}, or standardize the inputs (--standardize)")
    return Blame(last, bad.split(".")[0] if bad else None, what, cause)


# --- the modes ---------------------------------------------------------------------------


class NonFiniteMode:
    """What the training step does about a NaN or infinite loss; one object per epoch.

    The step calls :meth:`before_step` before the forward pass,
    :meth:`before_update` just before the optimizer update and
    :meth:`after_update` just after it, which returns the 0-d ``keep`` flag for
    :class:`~nnx.train.metrics.MetricSums` (None: every batch counts). None of
    them reads the device. At logging points :meth:`check` and
    :meth:`check_validation` may raise; :meth:`logs` adds to the epoch's logs,
    :meth:`state` and :meth:`load` carry the mode's sums over a resume.
    """

    name = ""
    #: batches may be dropped from the metric sums (``keep`` is not None)
    skipping = False

    def before_step(self) -> None: ...
    def before_update(self, lr: float) -> None: ...

    def after_update(self, value, step: int):
        return None

    def check(self, trainer, loss_sum: float) -> None: ...
    def check_validation(self, trainer, val_loss: float) -> None: ...

    def logs(self) -> dict:
        return {}

    def state(self) -> dict:
        return {}

    def load(self, sums: dict) -> None: ...


class RaiseOnNonFinite(NonFiniteMode):
    """``on_nonfinite="raise"``: remember the first non-finite step on the device and,
    at a logging point, replay the epoch from its snapshot to name where it began."""

    name = "raise"

    def __init__(self, trainer, epoch: int, batch: int, batch_of) -> None:
        # ranks would replay their own rows apart, without the gradients' sum: no replay
        single = getattr(trainer, "parallel", None) is None or not trainer.parallel.active
        self.snapshot = Snapshot(trainer, batch) if single else None
        self.epoch, self.batch_of = epoch, batch_of
        b = trainer.backend
        self.first_bad = b.xp.full((), NO_STEP, dtype=b.xp.int64, device=b.device)

    def before_update(self, lr):
        if self.snapshot is not None:
            self.snapshot.lrs.append(lr)

    def after_update(self, value, step):
        xp = array_namespace(value)
        ok = xp.isfinite(value)
        self.first_bad = xp.minimum(self.first_bad, xp.where(ok, self.first_bad, step))
        return None

    def check(self, trainer, loss_sum):
        if not math.isfinite(loss_sum):
            raise self.error(trainer, read_scalar(self.first_bad))

    def check_validation(self, trainer, val_loss):
        if not math.isfinite(val_loss):  # the last update broke the model after its loss was summed
            raise self.error(trainer, trainer.step - 1)

    def error(self, trainer, step: int) -> NonFiniteError:
        """The error naming the step, the layer and the likely cause of the first NaN/inf.

        ``step`` is the first step whose loss was not finite, or ``NO_STEP`` when
        every loss was finite but their sum overflowed. The replay leaves the
        model as it was just before the failing step.
        """
        last = trainer.step - 1 if step == NO_STEP else step
        blame = None
        if self.snapshot is not None and self.snapshot.step <= last:
            blame = replay(trainer, self.snapshot, last, self.batch_of, trainer.steps_per_epoch)
        if blame is None:
            blame = _unreplayed(trainer, step, last)
        elif step not in (NO_STEP, blame.step):
            blame.what += f"; the loss was non-finite from step {step}"
        message = (f"training produced NaN or infinity at step {blame.step} (epoch "
                   f"{self.epoch + 1}): {blame.what}. Likely cause: {blame.cause}. "
                   f"{last_good_checkpoint(trainer.active_callbacks)}")
        return NonFiniteError(message, step=blame.step, layer=blame.layer)


class SkipNonFinite(NonFiniteMode):
    """``on_nonfinite="skip"``: a step with a non-finite loss leaves the parameters and
    optimizer state as they were and adds nothing to the metrics; counted in ``skipped``."""

    name = "skip"
    skipping = True

    def __init__(self, trainer, epoch: int, batch: int, batch_of) -> None:
        self.guard = SkipGuard(trainer.model, trainer.optimizer)
        b = trainer.backend
        self.skipped = b.xp.zeros((), dtype=b.xp.int64, device=b.device)

    def before_step(self):
        self.guard.begin()

    def after_update(self, value, step):
        xp = array_namespace(value)
        ok = xp.isfinite(value)
        self.guard.end(ok)
        self.skipped = self.skipped + xp.astype(~ok, xp.int64)
        return ok

    def logs(self):
        return {"skipped": read_scalar(self.skipped)}

    def state(self):
        return self.logs()

    def load(self, sums):
        self.skipped = self.skipped + sums.get("skipped", 0)


#: ``on_nonfinite`` names and their modes
MODES = {"raise": RaiseOnNonFinite, "skip": SkipNonFinite}


def check_mode(name) -> str:
    """``name`` if it is an ``on_nonfinite`` mode, else a ConfigError."""
    if name not in MODES:
        raise ConfigError(f"on_nonfinite must be 'raise' or 'skip', got {name!r}")
    return name


def nonfinite_mode(name: str, trainer, epoch: int, batch: int, batch_of) -> NonFiniteMode:
    """The mode ``name`` for ``epoch`` of ``trainer``, starting at ``batch`` (a resume point);
    ``batch_of(b)`` returns the device ``(x, y)`` of batch ``b`` (for a replay)."""
    return MODES[check_mode(name)](trainer, epoch, batch, batch_of)
