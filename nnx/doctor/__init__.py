"""The doctor: names what went wrong in a training run, where, and how to fix it.

- :func:`check` runs the checks that need no training (output layer vs loss,
  symmetric initial weights, custom derivatives, input scaling, labels, class
  balance, train/test leakage).
- :class:`Doctor` is the training callback that does all of the below:
  ``nnx.Trainer(model, callbacks=[nnx.doctor.Doctor(out_dir="runs/x")])``.
- :class:`Monitor` gathers per-layer statistics on the device while training
  and reads them on the host a few times per epoch.
- :func:`run_detectors` turns the monitored :class:`Trace` into findings, and
  judges them: a cause without a symptom, or a symptom another finding
  explains, is a note.
- :func:`recommend` merges the findings' fixes into one :class:`Recommendation`;
  with ``Doctor(verify_fixes=True)`` each fix is first tried on a copy of the run
  (:mod:`nnx.doctor.verify`) and only those that help are kept.
- :class:`Report` prints them by severity and writes ``doctor.json``,
  ``doctor.md`` and (when something was found) ``doctor.png``.
- :func:`lr_find` runs a learning-rate range test on a copy of the model.

Every finding has a stable id from :data:`CATALOGUE`; the thresholds are the
constants of :mod:`nnx.doctor.findings`.
"""

from __future__ import annotations

from ..train.lr_finder import LRFinderResult, clone_model, lr_find
from .callback import Doctor
from .detectors import run_detectors
from .findings import CATALOGUE, SEVERITIES, Finding
from .monitor import Monitor
from .reconcile import Recommendation, recommend
from .report import Report, plot_trace
from .static import check, check_data, check_model, duplicate_rows, findings_from_gradcheck
from .trace import Trace

__all__ = ["Doctor", "CATALOGUE", "SEVERITIES", "Finding", "Monitor", "Trace", "Report", "check",
           "check_model", "check_data", "duplicate_rows", "findings_from_gradcheck",
           "run_detectors", "plot_trace", "lr_find", "LRFinderResult", "clone_model",
           "recommend", "Recommendation"]
