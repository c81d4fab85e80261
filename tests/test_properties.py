"""Property-based tests: whatever a user feeds the validators and the config
parser, the answer is a result or an nnx error, never a traceback of another kind."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnx
from nnx import settings as config
from nnx.data.checks import check_xy
from nnx.errors import USER_ERRORS

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
#: any float a file can hold, NaN and infinities included
floats = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf]))

values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                   st.lists(st.integers(-5, 600), max_size=4))
keys = st.one_of(st.sampled_from(sorted(config.BY_NAME)), st.text(max_size=12))


@SETTINGS
@given(keys, values)
def test_check_value_accepts_or_names_the_problem(key, value):
    try:
        out = config.check_value(key, value, "test")
    except USER_ERRORS as exc:
        assert str(exc)
    else:
        assert out == value or (key == "batch_size" and isinstance(value, str))


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(config.BY_NAME)), values, max_size=5))
def test_resolve_never_raises_anything_else(flags):
    try:
        resolved = config.resolve(flags)
    except USER_ERRORS as exc:
        assert str(exc)
    else:
        assert set(resolved) == set(config.BY_NAME)


@SETTINGS
@given(st.text(max_size=200))
def test_toml_text_never_raises_anything_else(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "run.toml"
    path.write_text(text, encoding="utf-8")
    try:
        config.load_toml(path)
    except USER_ERRORS as exc:
        assert str(exc)


dtypes = st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "int8"])


@st.composite
def xy_pairs(draw):
    n = draw(st.integers(0, 12))
    features = draw(st.integers(0, 4))
    shape = draw(st.sampled_from([(n, features), (n,), (n, features, 2), ()]))
    x = np.asarray(draw(st.lists(floats,
                                 min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                   dtype=np.float64).reshape(shape)
    x = x.astype(draw(dtypes)) if np.isfinite(x).all() else x
    y_n = draw(st.sampled_from([n, max(n - 1, 0), n + 1]))
    y = np.asarray(draw(st.lists(st.one_of(st.floats(-3, 12), st.just(np.nan)), min_size=y_n,
                                 max_size=y_n)))
    if draw(st.booleans()):
        y = np.round(y[np.isfinite(y)]) if draw(st.booleans()) else y
    return x, y


@SETTINGS
@given(xy_pairs(), st.sampled_from(["classification", "regression"]),
       st.sampled_from([None, 2, 10]))
def test_check_xy_returns_clean_arrays_or_a_data_error(pair, task, n_classes):
    x, y = pair
    try:
        checked = check_xy(x, y, task, n_classes)
    except USER_ERRORS as exc:
        assert str(exc)
    else:
        assert checked.x.dtype == np.float32 and np.isfinite(checked.x).all()
        assert checked.x.shape[0] == checked.y.shape[0] > 0


@SETTINGS
@given(xy_pairs())
def test_trainer_fit_accepts_or_raises_an_nnx_error(pair):
    x, y = pair
    trainer = nnx.Trainer(nnx.mlp([3, 4, 3]), "cross_entropy", "sgd", lr=0.1)
    try:
        trainer.fit(x, y, epochs=1, batch_size=4)
    except USER_ERRORS as exc:
        assert str(exc)


#: a TOML value of any type (strings quoted as TOML basic strings)
toml_values = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(
        lambda f: "nan" if f != f else ("inf" if f == float("inf") else
                                       "-inf" if f == float("-inf") else repr(f))),
    st.sampled_from(["true", "false", '"full"', '"64"', '""', '"8,4"', "[2, 2.5]", "[4]",
                     '"relu"', '"sgd"', '"float16"', '"xor"', '"cpu"', '"none"', "[true]"]),
    st.text(alphabet="abc,.-1", max_size=6).map(lambda t: '"' + t + '"'))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(config.BY_NAME)), toml_values, max_size=4))
def test_a_settings_file_ends_in_a_run_or_one_error_line(tmp_path_factory, monkeypatch, capsys,
                                                        table):
    """Any settings file through the command line: exit 0 or 2, never a bug (exit 1)."""
    from nnx import cli

    work = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(work)
    (work / "run.toml").write_text("".join(f"{k} = {v}\n" for k, v in table.items()))
    # small and quick whatever the file says: these flags override it
    argv = ["--config", str(work / "run.toml"), "--dataset", "xor", "--epochs", "1",
            "--hidden", "4", "--no-doctor", "--no-lr-find", "--quiet", "--out",
            str(work / "out")]
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "internal error" not in err and "Traceback" not in err
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1


_FLAGS = sorted("--" + s.name.replace("_", "-") for s in config.SETTINGS) + [
    "--resume", "--config", "--epoch", "--no-batchnorm", "-x"]
_WORDS = st.one_of(st.sampled_from(["-1", "0", "1.5", "nan", "inf", "full", "64", "", "8,0",
                                    "relu", "cpu", "float16", "1e400", "--quiet"]),
                   st.text(alphabet="ab1-.,=", max_size=5))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_FLAGS), _WORDS), max_size=3))
def test_command_line_arguments_end_in_a_run_or_one_error_line(tmp_path_factory, monkeypatch,
                                                               capsys, pairs):
    """Any flags and values: exit 0 or 2, never a bug (exit 1)."""
    from nnx import cli

    work = tmp_path_factory.mktemp("argv")
    monkeypatch.chdir(work)
    argv = [word for pair in pairs for word in pair]
    # small and quick: later flags win
    argv += ["--dataset", "xor", "--epochs", "1", "--hidden", "4", "--no-doctor",
             "--no-lr-find", "--quiet", "--out", str(work / "out")]
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "internal error" not in err and "Traceback" not in err
