"""The doctor's fixes work: each actionable finding, fixed as its own fix text says, is gone;
conflicting fixes become one recommendation; verified fixes are kept only when they help."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from doctor_runs import blobs, by_id, train

import nnx
from nnx.doctor import Finding, check
from nnx.doctor.reconcile import flags, recommend
from nnx.optim import get_optimizer
from nnx.schedules import Exponential

pytestmark = pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")


def digits(scale=1.0):
    import nnx.data

    ds = nnx.data.load("digits")
    return (ds.x_train * scale).astype(np.float32), ds.y_train.astype(np.int64)


def spirals():
    import nnx.data

    ds = nnx.data.load("spirals")
    return ds.x_train.astype(np.float32), ds.y_train.astype(np.int64)


def suggestion(f: Finding) -> dict:
    """The settings the fix text itself suggests: every setting of ``f.action``, each read
    back from the text (so the text, not only the action, carries a working value)."""
    assert f.action, f"{f.id} has no actionable fix: {f.fix}"
    found = {}
    for key, value in f.action.items():
        text = flags({key: value})
        assert text.split(" (")[0].split(": ")[0] in f.fix or _in_words(key, f.fix), (text,
                                                                                         f.fix)
        m = re.search(r"--[a-z-]+ ([^\s),:]+)", text)
        found[key] = type(value)(m.group(1)) if m and not isinstance(value, bool) else value
    assert found == f.action
    return found


def _in_words(key, fix) -> bool:
    words = {"standardize_targets": "y_train.std(0)", "schedule": "step // ",
             "output": "output=None"}
    return words.get(key, "\0") in fix


# --- the runs: each takes the settings a fix changes -----------------------------------------

def blob_run(*, lr=0.1, optimizer="sgd", init="auto", activation="relu", sizes=(2, 64, 64, 3),
             epochs=3, batch_size=32, data=None, verify_fixes=False, **opt):
    x, y = data if data is not None else blobs(600)
    model = nnx.mlp(list(sizes), activation=activation, init=init)
    return train(model, x, y, optimizer=get_optimizer(optimizer, lr=lr, **opt), lr=lr,
                 epochs=epochs, batch_size=batch_size, verify_fixes=verify_fixes)


def _standardised(x):
    return ((x - x.mean(0)) / (x.std(0) + 1e-8)).astype(np.float32)


CASES = {
    # finding id: (run with the failure, keyword arguments of the broken run)
    "non-finite": (blob_run, dict(optimizer="momentum", lr=30.0)),
    "exploding-gradients": (blob_run, dict(lr=3.0, batch_size=64)),
    "vanishing-gradients": (blob_run, dict(activation="sigmoid", sizes=[2] + [16] * 14 + [3],
                                           epochs=8)),
    "vanishing-activations": (blob_run, dict(activation="tanh", init="normal:0.01",
                                             sizes=[2] + [32] * 6 + [3], epochs=10)),
    "zero-gradients": (blob_run, dict(init="zeros", sizes=(2, 16, 16, 3), epochs=4)),
    "symmetric-units": (blob_run, dict(init="zeros", sizes=(2, 16, 16, 3), epochs=4)),
    "stalled-weights": (blob_run, dict(lr=1e-8, sizes=(2, 32, 3), epochs=5)),
    "lr-too-high": (blob_run, dict(activation="tanh", sizes=(2, 16, 3), lr=8.0, epochs=200,
                                   batch_size="full", data=blobs(600, spread=2.0))),
    "loss-spikes": (blob_run, dict(activation="tanh", sizes=(2, 16, 3), lr=8.0, epochs=200,
                                   batch_size="full", data=blobs(600, spread=2.0))),
    "loss-oscillation": (blob_run, dict(activation="tanh", sizes=(2, 16, 3), lr=8.0,
                                        epochs=200, batch_size="full",
                                        data=blobs(600, spread=2.0))),
    "lr-too-low": (blob_run, dict(lr=1e-6, sizes=(2, 16, 3), epochs=5)),
    "dead-relu": (blob_run, dict(lr=1.0, sizes=(64, 128, 128, 10), epochs=10,
                                 data=digits())),
    "saturated-units": (blob_run, dict(lr=1.0, activation="sigmoid", sizes=(64, 64, 10),
                                       epochs=20, data=digits(16.0))),
    "initial-loss-off": (blob_run, dict(init="normal:3", sizes=(2, 32, 3), epochs=2)),
    "under-training": (blob_run, dict(lr=0.01, epochs=100, batch_size="full",
                                      data=spirals())),
    "over-regularised": (blob_run, dict(l2=1.0, sizes=(2, 32, 3), epochs=10)),
}


def apply(kwargs: dict, fix: dict) -> dict:
    """The broken run's settings with the fix's settings changed."""
    assert set(fix) <= {"init", "activation", "lr", "l2"}, fix
    return {**kwargs, **fix}


@pytest.mark.parametrize("finding_id", list(CASES))
def test_the_fix_text_makes_the_symptom_go_away(finding_id):
    run, broken = CASES[finding_id]
    report = run(**broken)
    f = by_id([g for g in report.findings if g.severity != "info"], finding_id)
    fixed = run(**apply(broken, suggestion(f)))
    assert finding_id not in fixed.ids("warning"), fixed.summary()


def test_schedule_penalty_and_target_fixes_make_the_symptom_go_away():
    x, y = spirals()
    per_step = Exponential(0.1, 0.95)
    report = train(nnx.mlp([2, 64, 64, 3]), x, y, epochs=20, schedule=per_step)
    f = by_id(report.findings, "lr-schedule-collapse")
    assert suggestion(f) == {"schedule": "per-epoch"} and "step // " in f.fix
    spe = report.trace.meta["steps_per_epoch"]
    fixed = train(nnx.mlp([2, 64, 64, 3]), x, y, epochs=20,
                  schedule=lambda step: per_step(step // spe))
    assert "lr-schedule-collapse" not in fixed.ids("warning")
    # unscaled regression targets: standardised as the fix text says
    rng = np.random.default_rng(0)
    xr = rng.standard_normal((600, 3)).astype(np.float32)
    yr = (xr @ np.array([[3.0], [2.0], [1.0]]) * 3e4 + 1e5).astype(np.float32)
    report = train(nnx.mlp([3, 16, 1]), xr, yr, loss="mse", optimizer="adam", lr=1e-3,
                   epochs=5)
    f = by_id(report.findings, "below-baseline")
    assert suggestion(f) == {"standardize_targets": True}
    m, s = yr.mean(0), yr.std(0)
    fixed = train(nnx.mlp([3, 16, 1]), xr, (yr - m) / s, loss="mse", optimizer="adam",
                  lr=1e-3, epochs=5)
    assert "below-baseline" not in fixed.ids("warning")


def test_static_fixes_make_the_finding_go_away():
    x, y = blobs(300, d=6)
    model = nnx.mlp([6, 8, 3]).init("cpu", 0)
    for raw in ((np.clip(x * 40 + 120, 0, 255)).astype(np.float32),  # pixels
                x * np.array([1e4, 1e-2, 1, 1, 1, 1], dtype=np.float32)):  # mixed units
        found = [f for f in check(model, "cross_entropy", raw, y) if f.severity != "info"]
        assert found and all(suggestion(f) == {"standardize": True} for f in found)
        assert not check(model, "cross_entropy", _standardised(raw), y)
    relu_out = nnx.mlp([6, 8, 3], output="relu").init("cpu", 0)
    f = by_id(check(relu_out, "cross_entropy", x, y), "output-loss-mismatch")
    assert suggestion(f) == {"output": "linear"}
    assert "output-loss-mismatch" not in {
        g.id for g in check(nnx.mlp([6, 8, 3], output=None).init("cpu", 0), "cross_entropy",
                            x, y)}


def test_overfitting_fixed_by_early_stopping_as_its_fix_text_says():
    from nnx.doctor import Doctor
    from nnx.train import EarlyStopping, Trainer

    x, y = blobs(1000, spread=2.0)

    def run(callbacks=()):
        doctor = Doctor(verbose=False)
        Trainer(nnx.mlp([2, 256, 256, 3]), optimizer="adam", lr=3e-3,
                callbacks=[doctor, *callbacks]).fit(x[:40], y[:40], epochs=150,
                                                    batch_size=20,
                                                    validation_data=(x[500:], y[500:]))
        return doctor.report

    f = by_id(run().findings, "overfitting")
    patience = suggestion(f)["early_stopping"]
    assert f"--early-stopping {patience}" in f.fix
    assert "overfitting" not in run([EarlyStopping(patience=patience)]).ids("warning")


# --- one recommendation ---------------------------------------------------------------------

def test_conflicting_fixes_become_one_recommendation():
    high = Finding("lr-too-high", "error", "t", "c", "--lr 0.1", action={"lr": 0.1})
    stalled = Finding("stalled-weights", "error", "t", "c", "--lr 10", action={"lr": 10.0})
    sym = Finding("symmetric-units", "error", "t", "c", "--init auto", action={"init": "auto"})
    rec = recommend([stalled, high, sym])
    assert rec.action == {"init": "auto", "lr": 0.1}
    assert rec.set_aside == [("stalled-weights", "lr", 10.0)]
    assert str(rec) == ("recommended: --init auto --lr 0.1; instead of --lr 10 "
                        "(stalled-weights)")
    # a real run: zero initialisation, where every finding's fix is the same one
    report = blob_run(init="zeros", sizes=(2, 16, 16, 3), epochs=4)
    assert report.recommendation.action == {"init": "auto"}
    assert not report.recommendation.set_aside


# --- verified fixes ---------------------------------------------------------------------------

TRIED = re.compile(r"tried (--[a-z-]+ \S+( --[a-z-]+ \S+)*): loss [\d.e+-]+ after \d+ steps "
                   r"\(was [\d.e+-]+\)(, [a-z -]+ gone)?; (kept|dropped)")


def test_verified_fixes_are_tried_and_reported():
    x, y = digits(16.0)  # sigmoid units saturated by lr 1.0 on pixels 0-16
    report = train(nnx.mlp([64, 64, 10], activation="sigmoid"), x, y, lr=1.0, epochs=20,
                   verify_fixes=True)
    assert report.trials, report.summary()
    trial = report.trials[0]
    assert TRIED.fullmatch(str(trial)), str(trial)
    assert trial.kept and trial.loss < trial.was and trial.action == {"lr": 0.1}
    assert report.recommendation.verified is trial
    assert str(trial) in report.summary()
    data = report.to_dict()
    assert data["verified_fixes"][0]["kept"] is True
    assert data["recommendation"]["flags"] == "--lr 0.1"


def test_a_fix_that_does_not_help_is_dropped():
    from nnx.doctor import Report
    from nnx.doctor.callback import _quiet_doctor
    from nnx.doctor.verify import RunCopy, verify
    from nnx.train import Trainer

    x, y = blobs(600)
    trainer = Trainer(nnx.mlp([2, 32, 3]), optimizer="sgd", lr=0.1)
    doctor = _quiet_doctor()
    copies = []

    class Keep(nnx.train.Callback):
        def on_train_begin(self, t):
            copies.append(RunCopy.of(t))

    trainer.fit(x, y, epochs=3, batch_size=32, callbacks=[Keep(), doctor])
    wrong = Finding("lr-too-low", "warning", "t", "c", "--lr 1e-06", action={"lr": 1e-6})
    trials = verify(copies[0], doctor.trace, Report([wrong], doctor.trace), _quiet_doctor,
                    steps=50)
    assert len(trials) == 1 and not trials[0].kept and trials[0].loss > trials[0].was
    assert str(trials[0]).endswith("; dropped")
    assert recommend([wrong], trials) is None


def test_verification_is_skipped_on_healthy_runs():
    report = blob_run(lr=0.1, sizes=(2, 32, 3), epochs=5, verify_fixes=True)
    assert report.healthy and report.trials == [] and report.recommendation is None


def test_verified_scaling_fixes():
    x, y = digits(255.0)  # raw 0-255 pixels
    report = train(nnx.mlp([64, 64, 10], activation="tanh"), x, y, lr=0.01, epochs=10,
                   verify_fixes=True)
    scaled = [t for t in report.trials if t.action == {"standardize": True}]
    assert scaled and scaled[0].kept and "unscaled-inputs" in scaled[0].gone
    assert report.recommendation.action == {"standardize": True}
    rng = np.random.default_rng(0)
    xr = rng.standard_normal((600, 3)).astype(np.float32)
    yr = (xr @ np.array([[3.0], [2.0], [1.0]]) * 3e4 + 1e5).astype(np.float32)
    report = train(nnx.mlp([3, 16, 1]), xr, yr, loss="mse", optimizer="adam", lr=1e-3,
                   epochs=5, verify_fixes=True)
    trial = report.trials[0]
    assert trial.action == {"standardize_targets": True} and trial.kept
    assert "mean squared error / target variance" in str(trial) and trial.loss < 0.5 * trial.was


def test_verification_never_breaks_a_run_on_any_model_shape(tmp_path):
    """Every model shape of the monitor's table, trained with a learning rate that breaks
    it, so that there are fixes to try: the run ends, the report is written (without the
    figure, which the monitor's tests draw), and each trial either ran or says why it
    could not."""
    from test_monitor import MODELS, _data

    from nnx.doctor import Doctor
    from nnx.train import Trainer

    tried = 0
    for name, (build, loss) in MODELS.items():
        model = build()
        x, y = _data(loss)
        if loss == "mse" and model.n_out not in (None, 1):
            y = np.repeat(y, model.n_out, axis=1)
        doctor = Doctor(out_dir=str(tmp_path / name), verbose=False, verify_fixes=True,
                        every=2, figure=False)
        try:
            Trainer(model, loss, "sgd", lr=50.0, callbacks=[doctor]).fit(x, y, epochs=3,
                                                                          batch_size=16)
        except nnx.NonFiniteError as exc:
            doctor.finish(exc)
        report = doctor.report
        assert report is not None, name
        actionable = [f for f in report.findings if f.severity != "info" and f.action]
        assert bool(report.trials) == bool(actionable), (name, report.summary())
        tried += bool(report.trials)
        for trial in report.trials:
            assert trial.error is None or "cannot be rebuilt" in trial.error, (name, trial)
        data = json.loads((tmp_path / name / "doctor.json").read_text())
        assert len(data["verified_fixes"]) == len(report.trials), name
    assert tried >= len(MODELS) // 2  # the learning rate broke most of them


def test_exploding_towards_the_input_fixed_by_its_initialisation():
    broken = dict(activation="tanh", init="normal:1", sizes=[2] + [64] * 10 + [3], lr=1e-3,
                  epochs=2)
    report = blob_run(**broken)
    f = next(g for g in report.findings if g.id == "exploding-gradients"
             and "input" in g.title)
    assert suggestion(f) == {"init": "auto"}
    fixed = blob_run(**apply(broken, suggestion(f)))
    assert not any(g.id == "exploding-gradients" and "input" in g.title
                   for g in fixed.findings)
