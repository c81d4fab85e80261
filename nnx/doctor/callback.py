"""The :class:`Doctor` callback: monitor a training run, then diagnose it.

    doctor = nnx.doctor.Doctor(out_dir="runs/demo")
    trainer = nnx.Trainer(model, loss="cross_entropy", callbacks=[doctor])
    trainer.fit(x, y, epochs=20, validation_data=(x_val, y_val))
    doctor.report          # findings; also printed, and written to runs/demo/doctor.*

Before training it runs the static checks (:mod:`nnx.doctor.static`) on the
model, the loss and the data; during training its :class:`Monitor` keeps
statistics on the device; at the end it runs the detectors, reconciles their
fixes into one recommendation and, with ``verify_fixes=True``, retrains copies
of the run to keep only the fixes that help (:mod:`nnx.doctor.verify`).
Nothing is read from the device inside a step.
"""

from __future__ import annotations

import sys
from time import perf_counter

from ..losses import get_loss
from ..train.callbacks import Callback
from .detectors import run_detectors
from .meta import early_stopping_of, run_meta
from .monitor import FLUSH_EVERY, Monitor
from .reconcile import recommend
from .report import Report
from .static import check, check_symmetry, to_host
from .verify import VERIFY_STEPS, RunCopy, verify

__all__ = ["Doctor", "DOCTOR_EVERY"]

#: the doctor samples per-layer statistics every this many steps (and every one of the
#: monitor's first steps). On the digits default (a 512-256 MLP, batch 64, 630 steps) a
#: sampled step costs about a fifth of a plain step more, and the doctor's own time
#: (Doctor.seconds: checks, monitor, detectors and report) is 2.8% of training time
#: (scripts/bench.py --workload doctor).
DOCTOR_EVERY = 25


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
    figure : draw ``doctor.png``: ``"auto"`` when the report has warnings or errors,
        True always, False never.
    verify_fixes : when the run has warnings or errors with a fix that is a setting
        (learning rate, initialisation, activation, scaling, penalty, schedule),
        retrain a copy of the run from the same initial weights for
        ``verify_steps`` steps with each fix applied, report what each did, and keep
        only those that help.

    Attributes
    ----------
    report : the :class:`Report` of the last run (None before its end).
    seconds : the doctor's own time in the last run, in seconds: ``"checks"`` (before
        the first step), ``"monitor"`` (inside the steps), ``"report"`` (the diagnosis
        and its files) and ``"verify"`` (retraining copies of the run to try fixes).
    """

    #: with several ranks, only rank 0 runs it (it prints and writes files)
    rank0_only = True

    def __init__(self, *, every: int = DOCTOR_EVERY, out_dir: str | None = None,
                 data=None, validation_data=None, test_data=None, static: bool = True,
                 verbose: bool = True, figure: bool | str = "auto", print_fn=print,
                 flush_every: int = FLUSH_EVERY, verify_fixes: bool = False,
                 verify_steps: int = VERIFY_STEPS) -> None:
        self.monitor = Monitor(every, flush_every)
        self.out_dir = out_dir
        self.data, self.validation_data, self.test_data = data, validation_data, test_data
        self.static, self.verbose, self.figure = static, verbose, figure
        self.print_fn = print_fn
        self.verify_fixes, self.verify_steps = bool(verify_fixes), int(verify_steps)
        self.static_findings: list = []
        self.report: Report | None = None
        self.seconds = dict.fromkeys(("checks", "monitor", "report", "verify"), 0.0)
        self._trainer = None
        self._copy: RunCopy | None = None

    @property
    def trace(self):
        return self.monitor.trace

    # --- callback hooks ---------------------------------------------------

    def on_train_begin(self, trainer) -> None:
        start = perf_counter()
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        model, loss = trainer.model, get_loss(trainer.loss)
        self._trainer, self._model, self._loss = trainer, model, loss
        self.report = None
        x, y = self.data if self.data is not None else (trainer.x_train, trainer.y_train)
        validation = (self.validation_data if self.validation_data is not None
                      else trainer.validation_data)
        if self.static:
            self.static_findings = check(model, loss, x, y, validation_data=validation,
                                         test_data=self.test_data)
        self._copy = RunCopy.of(trainer) if self.verify_fixes else None
        self.monitor.attach(model)
        self.monitor.begin_step(trainer.step)
        meta = self.trace.meta
        meta.clear()
        meta.update(run_meta(trainer, loss, model, to_host(model, y) if y is not None else None))
        self.monitor.seconds = 0.0
        self.seconds["checks"] = perf_counter() - start

    def on_backward_end(self, trainer, state) -> None:
        start = perf_counter()
        self.monitor.after_backward(state.step)
        self.seconds["monitor"] += perf_counter() - start

    def on_step_end(self, trainer, state) -> None:
        start = perf_counter()
        self.monitor.after_update(state.step, state.loss, trainer.optimizer.lr)
        self.monitor.begin_step(state.step + 1)
        self.seconds["monitor"] += perf_counter() - start

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
        start = perf_counter()
        self.seconds["monitor"] += self.monitor.seconds  # its observer, inside the forward
        self.monitor.flush()
        model = self.monitor.model
        self.monitor.detach()
        findings = list(self.static_findings)
        if error is not None:
            self.trace.meta["stopped_by"] = f"{type(error).__name__}: {error}"
        self._note_early_stopping()
        findings += run_detectors(self.trace, findings)
        if model is not None and self.trace.n_steps:
            _confirm_symmetry(findings, model, self.trace.n_steps)
        report = Report(findings, self.trace)
        report.recommendation = recommend(report.findings)
        if self._copy is not None and not report.healthy:
            tried = perf_counter()
            report.trials = verify(self._copy, self.trace, report, _quiet_doctor,
                                   steps=self.verify_steps)
            report.recommendation = recommend(report.findings, report.trials)
            self.seconds["verify"] = perf_counter() - tried
        self.report = report
        if self.out_dir:
            figure = (not report.healthy) if self.figure == "auto" else bool(self.figure)
            report.write(self.out_dir, figure=figure)
        if self.verbose:
            self.print_fn(report.summary())
        self.seconds["report"] = perf_counter() - start - self.seconds["verify"]
        return report

    def _note_early_stopping(self) -> None:
        """Record the epoch whose weights early stopping restored, if it did."""
        stop = early_stopping_of(self._trainer) if self._trainer is not None else None
        if stop is not None and getattr(stop, "restore", False) and (
                stop.stopped_epoch is not None and stop.best_epoch is not None):
            self.trace.meta["restored_epoch"] = int(stop.best_epoch)


def _quiet_doctor() -> Doctor:
    """The doctor a verification run trains under: the detectors only (the data checks
    are run on the trial's data by :mod:`.verify`)."""
    return Doctor(static=False, verbose=False, figure=False)


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
