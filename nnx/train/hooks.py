"""The callback contract: the hooks the Trainer calls, and what a step looks like to them.

A callback overrides any of the hooks of :class:`Callback`; each receives the
:class:`~nnx.train.Trainer`. ``state`` is a :class:`StepState` (device arrays:
do not read them every step — that would wait for the device each time).
``logs`` holds host floats, read once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["StepState", "Callback", "Hooks"]


@dataclass
class StepState:
    """One training step, as callbacks see it.

    ``x`` ``(batch, n_in)`` and ``y`` are the device batch, ``output`` the
    logits ``(batch, n_out)``, ``loss`` the 0-d batch-mean loss on the device.
    """

    step: int
    epoch: int
    batch: int
    x: Any
    y: Any
    output: Any
    loss: Any


class Callback:
    """Base class: every hook is a no-op; override the ones you need.

    The trainer calls only the hooks a callback overrides. A callback with state
    that a resumed run needs (counters, best values) returns it from
    :meth:`state_dict` (JSON values, or host arrays under ``"arrays"``); checkpoints
    store it and :meth:`load_state_dict` puts it back on resume.
    """

    #: run ``on_epoch_end`` after every other callback (checkpoints see the whole epoch)
    epoch_end_last = False

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_backward_end(self, trainer, state: StepState) -> None: ...
    def on_step_end(self, trainer, state: StepState) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...

    def state_dict(self) -> dict | None:
        """What a resumed run needs to continue this callback exactly (None: nothing)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (from a checkpoint)."""


def _overriding(callbacks, name: str) -> list:
    """Bound ``name`` methods of the callbacks that override it (the base one is a no-op)."""
    base = getattr(Callback, name)
    return [getattr(cb, name) for cb in callbacks if getattr(type(cb), name, base) is not base]


class Hooks:
    """The hooks of a list of callbacks, each a list of bound methods in call order.

    Callbacks run in list order, except that ``on_epoch_end`` of those with
    ``epoch_end_last`` (checkpoints) runs after every other one, so a
    checkpoint holds the other callbacks' state for the epoch. Only overridden
    hooks are listed, so a step with no step hooks builds no :class:`StepState`.
    """

    def __init__(self, callbacks) -> None:
        callbacks = list(callbacks)
        self.on_train_begin = _overriding(callbacks, "on_train_begin")
        self.on_epoch_begin = _overriding(callbacks, "on_epoch_begin")
        self.on_backward_end = _overriding(callbacks, "on_backward_end")
        self.on_step_end = _overriding(callbacks, "on_step_end")
        last = sorted(callbacks, key=lambda cb: bool(getattr(cb, "epoch_end_last", False)))
        self.on_epoch_end = _overriding(last, "on_epoch_end")
        self.on_train_end = _overriding(callbacks, "on_train_end")
        #: whether any step hook needs a StepState
        self.want_state = bool(self.on_backward_end or self.on_step_end)
