"""scikit-learn estimators: the library's own estimator checks, and its model-selection tools."""

from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnx.errors import ConfigError, DataError, MissingExtra

pytest.importorskip("sklearn")

from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from nnx.sklearn import NNXClassifier, NNXRegressor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: small and quick, still enough to pass the checks' accuracy floors
QUICK = {"hidden": (16,), "epochs": 20, "lr": 0.01, "random_state": 0}


@parametrize_with_checks([NNXClassifier(**QUICK), NNXRegressor(**QUICK)])
def test_estimator_checks(estimator, check):
    check(estimator)


def test_array_api_check_passes_with_dispatch_enabled():
    # SCIPY_ARRAY_API must be set before SciPy is imported: a fresh process
    code = """
import json, warnings
from sklearn.utils.estimator_checks import check_estimator
from nnx.sklearn import NNXClassifier, NNXRegressor
quick = dict(hidden=(8,), epochs=5, lr=0.01, random_state=0)
results = []
def record(estimator, check_name, exception, status, **_):
    if "array_api" in check_name:
        results.append([type(estimator).__name__, check_name, status, repr(exception)])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for est in (NNXClassifier(**quick), NNXRegressor(**quick)):
        check_estimator(est, on_fail=None, callback=record)
print(json.dumps(results))
"""
    env = {"SCIPY_ARRAY_API": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r[0] for r in results] == ["NNXClassifier", "NNXRegressor"]
    assert all(r[2] == "passed" for r in results), results


def _classification(n=240, seed=0):
    return make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=3,
                               random_state=seed)


def test_pipeline_grid_search_and_cross_validation():
    x, y = _classification()
    pipe = make_pipeline(StandardScaler(), NNXClassifier(hidden=(16,), epochs=15, lr=0.01,
                                                         random_state=0))
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6, scores
    grid = GridSearchCV(pipe, {"nnxclassifier__hidden": [(4,), (32,)],
                               "nnxclassifier__activation": ["relu", "tanh"]}, cv=3)
    grid.fit(x, y)
    assert set(grid.best_params_) == {"nnxclassifier__hidden", "nnxclassifier__activation"}
    assert grid.best_score_ > 0.6
    assert grid.predict(x).shape == (len(x),)


def test_regressor_in_a_grid_search_and_with_a_target_far_from_zero():
    x, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    y = 50.0 + y / y.std() * 10.0  # mean 50, std 10: unscaled, MSE steps would crawl
    reg = make_pipeline(StandardScaler(), NNXRegressor(hidden=(32,), epochs=60, lr=0.01,
                                                       random_state=0))
    assert cross_val_score(reg, x, y, cv=3).min() > 0.9
    grid = GridSearchCV(NNXRegressor(hidden=(16,), epochs=30, random_state=0),
                        {"lr": [1e-3, 1e-2]}, cv=2).fit(x, y)
    assert grid.best_params_ == {"lr": 1e-2}
    two = np.stack([y, -y], axis=1)
    fitted = NNXRegressor(hidden=(16,), epochs=40, lr=0.01, random_state=0).fit(x, two)
    assert fitted.predict(x).shape == (200, 2) and fitted.score(x, two) > 0.9


def test_string_labels_come_back_as_strings():
    x, y = _classification()
    names = np.array(["cat", "dog", "bird"])[y]
    clf = NNXClassifier(**QUICK).fit(x, names)
    assert list(clf.classes_) == ["bird", "cat", "dog"]
    assert set(clf.predict(x)) <= {"bird", "cat", "dog"}
    proba = clf.predict_proba(x)
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(x)), proba, rtol=1e-12)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(x))


def test_pickle_holds_host_weights_and_gives_the_same_predictions():
    x, y = _classification()
    clf = NNXClassifier(**QUICK).fit(x, y)
    blob = pickle.dumps(clf)
    state = clf.__getstate__()
    assert "_model" not in state
    assert all(type(v) is np.ndarray for v in state["_weights"].values())
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))
    assert again.get_params() == clf.get_params()


def test_fitted_attributes_and_random_state():
    x, y = _classification()
    rs = np.random.RandomState(3)
    clf = NNXClassifier(hidden=(8,), epochs=3, random_state=rs)
    assert not hasattr(clf, "classes_")
    with pytest.raises(NotFittedError):
        clf.predict(x)
    clf.fit(x, y)
    assert clf.random_state is rs  # the parameter object is never replaced
    assert clf.n_features_in_ == 6 and clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    a = NNXClassifier(hidden=(8,), epochs=3, random_state=7).fit(x, y).predict_proba(x)
    b = NNXClassifier(hidden=(8,), epochs=3, random_state=7).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)


def test_settings_are_checked_by_fit_not_by_the_constructor():
    x, y = _classification(60)
    clf = NNXClassifier(activation="nope", epochs=2)
    with pytest.raises(ConfigError, match="unknown activation 'nope'"):
        clf.fit(x, y)
    with pytest.raises(ConfigError, match="batch size"):
        NNXClassifier(batch_size=0, epochs=2).fit(x, y)
    with pytest.raises(DataError, match="at least two classes"):
        NNXClassifier(epochs=2).fit(x, np.zeros(len(x)))


@pytest.mark.parametrize("device", ["strict:device1", "torch"])
def test_other_devices_and_float32(device):
    from nnx import backends

    try:
        backends.get(device)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    x, y = _classification()
    clf = NNXClassifier(hidden=(16,), epochs=10, lr=0.01, device=device, dtype="float32",
                        random_state=0).fit(x, y)
    assert clf.score(x, y) > 0.7
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(x), clf.predict(x))


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delitem(sys.modules, "nnx.sklearn")
    with pytest.raises(MissingExtra, match=r"pip install 'nnx-trainer\[sklearn\]'"):
        importlib.import_module("nnx.sklearn")
