"""Shared code for the demos: train with the doctor on, print its findings next to the fixed run.

Run any demo from a source checkout, e.g. ``python scripts/demos/zero_init.py``.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
import warnings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:  # runnable from a source checkout without installing
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import nnx  # noqa: E402
import nnx.data  # noqa: E402
from nnx.doctor import Doctor  # noqa: E402
from nnx.train import Trainer  # noqa: E402

# the broken runs overflow float32 on purpose; the doctor reports it
warnings.filterwarnings("ignore", category=RuntimeWarning)

WIDTH = 96


def digits(*, binary: bool = False, scale: str = "standard", seed: int = 0):
    """The bundled 8x8 digits: ``(x_train, y_train, x_test, y_test)``.

    ``scale``: ``"standard"`` (zero mean, unit variance, from training statistics),
    ``"unit"`` (pixels in [0, 1], as loaded) or ``"pixels"`` (the stored values 0-16).
    ``binary`` turns the labels into even (0) / odd (1).
    """
    data = nnx.data.load("digits", seed=seed)
    x_train, x_test = data.x_train, data.x_test
    if scale == "standard":
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    elif scale == "pixels":
        x_train, x_test = x_train * 16, x_test * 16
    y_train, y_test = data.y_train, data.y_test
    if binary:
        y_train, y_test = y_train % 2, y_test % 2
    return (x_train.astype(np.float32), y_train.astype(np.int64),
            x_test.astype(np.float32), y_test.astype(np.int64))


class Run:
    """One training run with the doctor on: its report and its numbers."""

    def __init__(self, model, x, y, *, loss="cross_entropy", optimizer="sgd", lr=0.1,
                 epochs=20, batch_size=32, validation_data=None, test_data=None, seed=0,
                 callbacks=(), verify=True, **fit_kwargs):
        # verify: when the doctor finds something, retrain copies with its fixes applied
        self.doctor = Doctor(data=(x, y), validation_data=validation_data,
                             test_data=test_data, verbose=False, verify_fixes=verify)
        start = time.perf_counter()
        trainer = Trainer(model, loss=loss, optimizer=optimizer, lr=lr, seed=seed,
                              callbacks=[self.doctor, *callbacks])
        self.error = None
        try:
            trainer.fit(x, y, epochs=epochs, batch_size=batch_size,
                        validation_data=validation_data, **fit_kwargs)
        except nnx.NonFiniteError as exc:  # the doctor still reports what led there
            self.error = exc
            self.doctor.finish(exc)
        self.seconds = time.perf_counter() - start
        self.trainer = trainer
        self.report = self.doctor.report
        trace = self.report.trace
        finite = trace.loss[np.isfinite(trace.loss)]
        self.first_loss = float(trace.loss[0]) if trace.n_steps else float("nan")
        self.last_loss = float(trace.epochs[-1]["loss"]) if trace.epochs else float("nan")
        self.best_loss = float(finite.min()) if finite.size else float("nan")
        self.test = None
        if test_data is not None and self.error is None:
            self.test = trainer.evaluate(*test_data)

    def metric(self, name="accuracy") -> str:
        """``'test accuracy 97.2%'`` (or the loss when there is no accuracy)."""
        if self.test is None:
            return "no test result (training stopped)" if self.error else ""
        if name in self.test:
            return f"test {name} {100 * self.test[name]:.1f}%"
        return f"test loss {self.test['loss']:.4g}"

    def summary(self, metric="accuracy") -> str:
        loss = (f"loss {self.first_loss:.4g} -> {self.last_loss:.4g}"
                if self.trainer is not None else "")
        return ", ".join(p for p in (loss, self.metric(metric), f"{self.seconds:.1f} s") if p)


def header(title: str, story: str) -> None:
    print("=" * WIDTH)
    print(title)
    print(textwrap.fill(" ".join(story.split()), WIDTH))
    print("-" * WIDTH)


def show(label: str, run: Run, *, ids=None, metric="accuracy", details=True) -> None:
    """Print a run: its numbers and the doctor's findings (``ids`` first, then the rest)."""
    print(f"{label}: {run.summary(metric)}")
    findings = [f for f in run.report.findings if f.severity != "info"]
    if ids:
        findings.sort(key=lambda f: (f.id not in ids, ))
    if not findings:
        print("  doctor: healthy - no problems found")
    for i, f in enumerate(findings):
        print(textwrap.fill(str(f), WIDTH, initial_indent="  doctor: ",
                            subsequent_indent="          ", break_on_hyphens=False))
        if details and (i == 0 or (ids and f.id in ids)):
            print(textwrap.fill("fix: " + f.fix, WIDTH, initial_indent="          ",
                                subsequent_indent="               "))
    for trial in run.report.trials:
        print(textwrap.fill(str(trial), WIDTH, initial_indent="  verified: ",
                            subsequent_indent="            ", break_on_hyphens=False))
    if findings and run.report.recommendation is not None:
        print(textwrap.fill(str(run.report.recommendation), WIDTH, initial_indent="  doctor: ",
                            subsequent_indent="          "))


def expect(run: Run, *ids: str) -> None:
    """Fail loudly if the doctor did not name the failure this demo is about (as a warning
    or an error)."""
    named = run.report.ids("warning")
    missing = [i for i in ids if i not in named]
    if missing:
        raise SystemExit(f"demo failed: the doctor did not report {', '.join(missing)}")


def healthy(run: Run) -> None:
    if not run.report.healthy:
        raise SystemExit("demo failed: the fixed run is not healthy:\n" + run.report.summary())
