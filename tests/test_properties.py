"""Property-based tests: whatever a user feeds the validators, the config parser, the
command line or a resume (a checkpoint damaged in any way), the answer is a result or an
nnx error, never a traceback of another kind; the command line ends with exit status 0,
2 or 130; a refused resume leaves the run directory as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
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
    """Any settings file through the command line: exit 0, 2 or 130, never a bug (exit 1)."""
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
    _ended_cleanly(code, err)


def _ended_cleanly(code, err: str) -> None:
    """Exit status 0, 2 (one error line) or 130, and never a bug's report."""
    assert code in (0, 2, 130), err
    assert "internal error" not in err and "Traceback" not in err
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1


_FLAGS = sorted("--" + s.name.replace("_", "-") for s in config.SETTINGS) + [
    "--resume", "--config", "--epoch", "--no-batchnorm", "-x", "--force-resume",
    "--batch-size"]
#: "@run" stands for a finished run directory, "@ckpt" for its checkpoint
_WORDS = st.one_of(st.sampled_from(["-1", "0", "1.5", "nan", "inf", "full", "64", "", "8,0",
                                    "relu", "cpu", "float16", "1e400", "--quiet", "@run",
                                    "@ckpt", "@run/missing", "--force-resume"]),
                   st.text(alphabet="ab1-.,=", max_size=5))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-epoch xor run (created once; resumed runs may extend it)."""
    from nnx import cli

    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["--dataset", "xor", "--epochs", "2", "--hidden", "4", "--no-doctor",
                     "--no-lr-find", "--quiet", "--out", str(out)]) == 0
    return out


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_FLAGS), _WORDS), max_size=3))
def test_command_line_arguments_end_in_a_run_or_one_error_line(tmp_path_factory, monkeypatch,
                                                               capsys, finished_run, pairs):
    """Any flags and values, resumes of a real run among them: exit 0, 2 or 130, never a bug
    (exit 1)."""
    from nnx import cli

    work = tmp_path_factory.mktemp("argv")
    monkeypatch.chdir(work)
    real = {"@run": str(finished_run), "@ckpt": str(finished_run / "checkpoint.npz"),
            "@run/missing": str(finished_run / "missing")}
    argv = [real.get(word, word) for pair in pairs for word in pair]
    # small and quick: later flags win
    argv += ["--dataset", "xor", "--epochs", "1", "--hidden", "4", "--no-doctor",
             "--no-lr-find", "--quiet", "--out", str(work / "out")]
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    _ended_cleanly(code, capsys.readouterr().err)


# --- damaged checkpoints: refused, and the run directory left as it was ---------------------

#: for each metadata key a resume reads, values of the wrong type or out of range
_BAD_META = {
    "epoch": [-1, 1.5, "3", None, [1], {"n": 1}, True],
    "step": [-4, 2.5, "10", None, [0]],
    "rng": [None, 3, "PCG64", [], {"bit_generator": "PCG64"}, {"state": 1}],
    "architecture": ["mlp", 3, [], {"layers": "dense"}, {"layers": [1]},
                     {"layers": [{"type": 5}]}, {"layers": [{"type": "Dense", "config": 3}]}],
    "history": [3, "loss", [1.0], {"loss": 0.5}, {"loss": ["a"]}, {"epoch": [1], "loss": [1, 2]}],
    "resume_point": [3, "x", [], {"batch": -1, "seen": 0}, {"batch": "0", "seen": 0},
                     {"batch": 0, "seen": 0, "sums": {"loss": "x"}}, {"batch": 10**6, "seen": 0}],
    "optimizer": [3, "adam", [], {"name": "sgd", "t": 1, "lr": 0.01}, {"name": "adam"},
                  {"name": "adam", "t": -1, "lr": 0.01}, {"name": "adam", "t": "x", "lr": 0.01},
                  {"name": "adam", "t": 1, "lr": "fast"}, {"name": "adam", "t": 1, "lr": None}],
    "callbacks": [3, "x", [], {"ModelCheckpoint_0": 5}, {"ModelCheckpoint_0": {"best": "x"}},
                  {"ModelCheckpoint_0": {}}],
    "dtype": ["int32", "float16", 5, None],
    "version": ["1", 99, [1], None, 1.0],
    "kind": ["model", 7, None],
    "format": ["other", 1, None],
    "data": [5, "xor", {"x_shape": 1}, {"x_shape": [800, 2], "x_dtype": "float32",
                                        "y_shape": [800], "y_dtype": "int64",
                                        "digest": "crc32:00000000"}],
    "n_train": ["x", -1, 1.5],
    "batch_size": ["x", -2, [128]],
    "device_rngs": [3, "x", {"dropout_3": 5}],
    "world_size": [2, 0, "x"],
    "seed": ["x", -1, 0.5],
    "backend": [5, None, ["numpy"]],
}


def _transposed(a):
    return a.T.copy() if a.ndim == 2 and a.shape[0] != a.shape[1] else np.zeros(a.shape + (2,))


#: (name, which arrays, what is done to one of them)
_BAD_ARRAYS = [
    ("a parameter of another shape", "param/", _transposed),
    ("a parameter one row short", "param/", lambda a: a[:-1]),
    ("integer weights", "param/", lambda a: a.astype(np.int64)),
    ("weights as text", "param/", lambda a: a.astype(str)),
    ("a NaN weight", "param/", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0,
                                                  np.nan, a).astype(a.dtype)),
    ("an infinite weight", "param/", lambda a: np.full_like(a, np.inf)),
    ("a missing parameter", "param/", None),
    ("optimizer state of another shape", "opt/", _transposed),
    ("integer optimizer state", "opt/", lambda a: a.astype(np.int64)),
    ("a missing optimizer slot", "opt/", None),
]


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(arrays.pop("__meta__").tobytes()), arrays


def _damage(path, choice) -> None:
    """Write a damaged copy of the checkpoint at ``path``: a metadata value of a wrong type,
    an array changed or removed, an array of no parameter, or the file truncated."""
    kind, *what = choice
    if kind == "truncate":
        blob = path.read_bytes()
        path.write_bytes(blob[:what[0] % len(blob)])
        return
    meta, arrays = _read(path)
    if kind == "meta":
        key, value = what
        meta[key] = value
    elif kind == "extra":
        arrays["param/dense_9.w"] = np.zeros((2, 2), np.float32)
    else:
        prefix, change, index = what
        names = sorted(k for k in arrays if k.startswith(prefix))
        name = names[index % len(names)]
        if change is None:
            del arrays[name]
        else:
            arrays[name] = change(arrays[name])
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, __meta__=blob, **arrays)


damages = st.one_of(
    st.sampled_from(sorted(_BAD_META)).flatmap(
        lambda k: st.tuples(st.just("meta"), st.just(k), st.sampled_from(_BAD_META[k]))),
    st.tuples(st.sampled_from(_BAD_ARRAYS), st.integers(0, 10)).map(
        lambda t: ("array", t[0][1], t[0][2], t[1])),
    st.tuples(st.just("extra")),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
)


def _xor():
    return nnx.data.load("xor", seed=0)


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    """A checkpoint of a 2-8-2 MLP with Adam after two epochs on xor, and the data."""
    from nnx.checkpoint import save_checkpoint

    ds = _xor()
    tr = nnx.Trainer(nnx.mlp([2, 8, 2]), lr=0.01)
    tr.fit(ds.x_train, ds.y_train, epochs=2, batch_size=64,
           callbacks=[nnx.train.ModelCheckpoint(tmp_path_factory.mktemp("ck") / "x.npz")])
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.npz"
    save_checkpoint(path, tr)
    return path, ds


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damages)
def test_a_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path_factory, checkpoint_file,
                                                             damage):
    """Any wrong metadata type, changed, removed or added array, or truncation: a
    CheckpointError naming the file, from the check alone and from fit, and the trainer
    exactly as it was."""
    from nnx.checkpoint import load_checkpoint
    from nnx.errors import CheckpointError

    good, ds = checkpoint_file
    path = tmp_path_factory.mktemp("bad") / "checkpoint.npz"
    path.write_bytes(good.read_bytes())
    _damage(path, damage)
    tr = nnx.Trainer(nnx.mlp([2, 8, 2]), lr=0.01, seed=1)
    cbs = [nnx.train.ModelCheckpoint(tmp_path_factory.mktemp("cb") / "x.npz")]
    before = tr.model.get_weights()
    with pytest.raises(CheckpointError) as caught:
        tr.check_state_dict(load_checkpoint(path), source=str(path), x=ds.x_train,
                            y=ds.y_train, batch_size=64, callbacks=cbs)
    assert str(path) in str(caught.value), caught.value
    with pytest.raises(CheckpointError):
        tr.fit(ds.x_train, ds.y_train, epochs=4, batch_size=64, resume=path, callbacks=cbs)
    assert tr.step == 0 and tr.completed_epochs == 0
    after = tr.model.get_weights()
    assert all(np.array_equal(after[k], v) for k, v in before.items())


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damages)
def test_a_refused_resume_leaves_the_run_directory_as_it_was(tmp_path_factory, capsys,
                                                             finished_run, damage):
    """The same damage through ``--resume``: one error line, exit 2, and every file of the
    run (config.json included) byte for byte as before; nothing added."""
    import shutil

    from nnx import cli

    run = tmp_path_factory.mktemp("copy") / "run"
    shutil.copytree(finished_run, run)
    _damage(run / "checkpoint.npz", damage)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code = cli.main(["--resume", str(run), "--epochs", "40", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, (damage, err)
    _ended_cleanly(code, err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
