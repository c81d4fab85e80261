"""The :class:`Doctor` callback: monitor a training run, then diagnose it.

    doctor = nnx.doctor.Doctor(out_dir="runs/demo")
    trainer = nnx.Trainer(model, loss="cross_entropy", callbacks=[doctor])
    trainer.fit(x, y, epochs=20, validation_data=(x_val, y_val))
    doctor.report          # findings; also printed, and written to runs/demo/doctor.*

Before training it runs the static checks (:mod:`nnx.doctor.static`) on the
model, the loss and the data; during training its :class:`Monitor` keeps
statistics on the device; at the end it runs the detectors and writes the
report. Nothing is read from the device inside a step.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ..losses import get_loss
from ..train.callbacks import Callback
from .detectors import run_detectors
from .monitor import DEFAULT_EVERY, FLUSH_EVERY, Monitor
from .report import Report
from .static import check, check_symmetry, to_host

__all__ = ["Doctor"]


class Doctor(Callback):
    """Watch training and report what went wrong, where, and how to fix it.

    Parameters
    ----------
    every : sample per-layer statistics every ``every`` steps (the loss is kept for
        every step).
    out_dir : where to write ``doctor.json``, ``doctor.md`` and ``doctor.png``
        (nothing is written when None).
    data : the training ``(x, y)``, for the data checks (labels, scaling, balance);
        by default the arrays passed to ``Trainer.fit``.
    validation_data : held-out ``(x, y)`` checked for leakage; by default the
        trainer's validation data. test_data : another held-out pair to check.
    static : run the checks before training.
    verbose : print the summary at the end of training (``print_fn``).
    """

    def __init__(self, *, every: int = DEFAULT_EVERY, out_dir: str | None = None,
                 data=None, validation_data=None, test_data=None, static: bool = True,
                 verbose: bool = True, figure: bool = True, print_fn=print,
                 flush_every: int = FLUSH_EVERY) -> None:
        self.monitor = Monitor(every, flush_every)
        self.out_dir = out_dir
        self.data, self.validation_data, self.test_data = data, validation_data, test_data
        self.static, self.verbose, self.figure = static, verbose, figure
        self.print_fn = print_fn
        self.static_findings: list = []
        self.report: Report | None = None
        self._trainer = None

    @property
    def trace(self):
        return self.monitor.trace

    # --- callback hooks ---------------------------------------------------

    def on_train_begin(self, trainer) -> None:
        model, loss = trainer.model, get_loss(trainer.loss)
        self._trainer, self._model, self._loss = trainer, model, loss
        self.report = None
        x, y = self.data if self.data is not None else (trainer.x_train, trainer.y_train)
        validation = (self.validation_data if self.validation_data is not None
                      else trainer.validation_data)
        if self.static:
            self.static_findings = check(model, loss, x, y, validation_data=validation,
                                         test_data=self.test_data)
        self.monitor.attach(model)
        self.monitor.begin_step(trainer.step)
        self._meta(trainer, loss, model, y)

    def on_backward_end(self, trainer, state) -> None:
        self.monitor.after_backward(state.step)

    def on_step_end(self, trainer, state) -> None:
        self.monitor.after_update(state.step, state.loss, trainer.optimizer.lr)
        self.monitor.begin_step(state.step + 1)

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        entry = {"epoch": int(epoch)}
        entry.update({k: float(v) for k, v in (logs or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
        self.trace.epochs.append(entry)

    def on_train_end(self, trainer) -> None:
        # the trainer calls this from a ``finally``: an exception may be on its way out
        self.finish(sys.exc_info()[1])

    # --- the diagnosis --------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> Report:
        """Read the last statistics, run the detectors and write the report.

        Called by ``on_train_end``; call it yourself after a run that stopped with
        an exception (``error``), e.g. a :class:`~nnx.errors.NonFiniteError`.
        """
        if self.report is not None:
            return self.report
        self.monitor.flush()
        model = self.monitor.model
        self.monitor.detach()
        findings = list(self.static_findings)
        if error is not None:
            self.trace.meta["stopped_by"] = f"{type(error).__name__}: {error}"
        findings += run_detectors(self.trace, findings)
        if model is not None and self.trace.n_steps:
            _confirm_symmetry(findings, model, self.trace.n_steps)
        self.report = Report(findings, self.trace)
        if self.out_dir:
            self.report.write(self.out_dir, figure=self.figure)
        if self.verbose:
            self.print_fn(self.report.summary())
        return self.report

    def _meta(self, trainer, loss, model, y) -> None:
        meta = self.trace.meta
        meta.clear()
        opt = trainer.optimizer
        meta["loss"] = loss.name
        meta["task"] = loss.task
        meta["optimizer"] = type(opt).__name__
        meta["lr"] = float(opt.lr)
        meta["device"] = model.backend.label
        meta["n_outputs"] = model.n_out
        meta["layers"] = [la.name for la in model.layers]
        meta["n_train"] = int(trainer.n_train)
        meta["batch_size"] = int(trainer.batch_size)
        meta["steps_per_epoch"] = int(trainer.steps_per_epoch)
        meta["full_batch"] = trainer.batch_size >= trainer.n_train
        yh = to_host(model, y) if y is not None else None
        n_classes = model.n_out if loss.task == "classification" else None
        if loss.name == "sigmoid_binary_cross_entropy":
            n_classes = 2
        if yh is not None and loss.task == "classification" and yh.ndim == 1:
            counts = np.bincount(np.asarray(yh, dtype=np.int64).clip(0))
            meta["majority_share"] = float(counts.max() / counts.sum())
            if loss.name == "softmax_cross_entropy":
                n_classes = max(n_classes or 0, int(counts.size))
        meta["n_classes"] = n_classes
        expected = loss.expected_initial(n_classes) if n_classes else None
        meta["expected_initial_loss"] = expected
        if loss.task == "regression" and yh is not None:
            meta["target_sq_mean"] = float(np.mean(np.asarray(yh, dtype=np.float64) ** 2))
        if expected is not None and not math.isfinite(expected):
            meta["expected_initial_loss"] = None


def _confirm_symmetry(findings, model, n_steps) -> None:
    """Say in each symmetric-units finding whether the copies survived training."""
    before = [f for f in findings if f.id == "symmetric-units"]
    if not before:
        return
    after = {f.layers[0]: f for f in check_symmetry(model, after_steps=n_steps)}
    for f in before:
        still = after.get(f.layers[0])
        if still is not None:
            f.title += f"; still {still.evidence['identical_units']} identical after " \
                       f"{n_steps} steps"
            f.steps.append(n_steps)
        f.evidence["identical_after_training"] = (still.evidence["identical_units"]
                                                  if still is not None else 0)
