"""The Python API's answers to a user's mistakes: nnx's own error with the words the command
line uses, never a NumPy, torch or IndexError, and nothing silently wrong (a size truncated,
a first CSV row lost, a non-float dtype taken). NumPy integers count wherever ints do."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import nnx
from nnx.data import load_file
from nnx.errors import CheckpointError, ConfigError, DataError, NnxError
from nnx.train import EarlyStopping, ProgressBar, ReduceLROnPlateau, Trainer

X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = np.arange(40) % 2


def _trainer(**kw):
    return Trainer(nnx.mlp([3, 4, 2]), "cross_entropy", "sgd", lr=0.1, **kw)


def _torch_needing_grad():
    torch = pytest.importorskip("torch")
    return torch.ones((40, 3), requires_grad=True)


#: (what, call, error type, words the message holds)
MISTAKES = [
    ("negative seed", lambda: _trainer(seed=-1), ConfigError, ["seed", "from 0", "-1"]),
    ("seed too large", lambda: _trainer(seed=2**64), ConfigError, ["seed", "2**63"]),
    ("seed as text", lambda: _trainer(seed="1"), ConfigError, ["seed"]),
    ("model init with a negative seed", lambda: nnx.mlp([3, 2]).init("cpu", -5), ConfigError,
     ["seed"]),
    ("int32 dtype", lambda: _trainer(dtype="int32"), ConfigError, ["float32", "int32"]),
    ("float16 dtype", lambda: _trainer(dtype="float16"), ConfigError, ["float16"]),
    ("unknown dtype", lambda: _trainer(dtype="bogus"), ConfigError, ["bogus"]),
    ("model init in int64", lambda: nnx.mlp([3, 2]).init("cpu", 0, "int64"), ConfigError,
     ["int64"]),
    ("empty x", lambda: _trainer().fit(X[:0], Y[:0], epochs=1), DataError, ["empty"]),
    ("x as text", lambda: _trainer().fit(np.full((40, 3), "a"), Y, epochs=1), DataError, ["x"]),
    ("labels as text", lambda: _trainer().fit(X, np.array(["a", "b"] * 20), epochs=1),
     DataError, ["y"]),
    ("a torch tensor that requires grad",
     lambda: _trainer().fit(_torch_needing_grad(), Y, epochs=1), DataError, ["x"]),
    ("predict on nothing", lambda: _trainer().predict(X[:0]), DataError, ["empty"]),
    ("predict on text", lambda: _trainer().predict(np.full((2, 3), "a")), DataError,
     ["numeric"]),
    ("predict a torch tensor that requires grad",
     lambda: _trainer().predict(_torch_needing_grad()), DataError, ["x"]),
    ("fractional layer size", lambda: nnx.mlp([2, 2.5, 3]), ConfigError, ["2.5", "integers"]),
    ("layer size as text", lambda: nnx.mlp([2, "64", 3]), ConfigError, ["'64'"]),
    ("boolean layer size", lambda: nnx.mlp([2, True, 3]), ConfigError, ["True"]),
    ("fractional Dense size", lambda: nnx.layers.Dense(2.0, 3), ConfigError, ["n_in"]),
    ("fractional epochs", lambda: _trainer().fit(X, Y, epochs=1.5), ConfigError, ["epochs"]),
    ("fractional batch size", lambda: _trainer().fit(X, Y, epochs=1, batch_size=2.5),
     ConfigError, ["batch size"]),
    ("patience 0", lambda: EarlyStopping(patience=0), ConfigError, ["patience"]),
    ("a model no memory holds", lambda: nnx.mlp([2, 10**6, 10**6, 2]).init("cpu", 0),
     ConfigError, ["dense_2", "do not fit in memory"]),
]


@pytest.mark.parametrize("what, call, kind, words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_an_nnx_error_naming_it(what, call, kind, words):
    with pytest.raises(NnxError) as caught:
        call()
    assert isinstance(caught.value, kind), (what, type(caught.value), caught.value)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_numpy_integers_count_wherever_ints_do():
    i = np.int64
    model = nnx.mlp([i(3), np.int32(4), i(2)])
    assert [la.n_out for la in model.layers if hasattr(la, "bias")] == [4, 2]
    assert all(type(la.n_in) is int for la in model.layers if la.n_in is not None)
    tr = Trainer(model, "cross_entropy", "sgd", lr=0.1, seed=i(3), dtype=np.float32)
    h = tr.fit(X, Y, epochs=i(2), batch_size=np.int32(16), validation_split=np.float32(0.25))
    assert len(h) == 2 and tr.batch_size == 16 and type(tr.seed) is int
    assert set(tr.evaluate(X, Y, batch_size=i(8))) >= {"loss", "accuracy"}
    for built in (nnx.layers.Dense(i(2), i(3)), nnx.layers.BatchNorm(i(4)),
                  EarlyStopping(patience=i(2)), ReduceLROnPlateau(patience=i(2)),
                  ProgressBar(every=i(5))):
        assert built is not None
    assert nnx.mlp([3, 2]).init("cpu", i(7)).dtype == "float32"


def test_load_takes_only_float_dtypes_and_names_the_wrong_one(tmp_path):
    path = tmp_path / "m.npz"
    nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 0), path)
    for bad in ("int32", "float16", "bool"):
        with pytest.raises(ConfigError, match=f"float32.*float64.*{bad}"):
            nnx.load(path, dtype=bad)
    assert nnx.load(path, dtype="float64").dtype == "float64"
    assert nnx.load(path, dtype=np.float64).dtype == "float64"


def test_a_model_with_non_finite_weights_is_refused_unless_asked_for(tmp_path):
    model = nnx.mlp([3, 4, 2]).init("cpu", 0)
    weights = model.get_weights()
    weights["dense_0.w"][1, 2] = np.inf
    model.set_weights(weights)
    nnx.save(model, tmp_path / "inf.npz", allow_nonfinite=True)
    with pytest.raises(CheckpointError, match="NaN or infinite values in dense_0.w.*"
                                              "allow_nonfinite=True"):
        nnx.load(tmp_path / "inf.npz")
    loaded = nnx.load(tmp_path / "inf.npz", allow_nonfinite=True)
    assert np.isinf(loaded.get_weights()["dense_0.w"][1, 2])


ROWS = "a,b,label\n0.5,1,0\n1.5,2,1\n2.5,3,0\n3.5,4,1\n"


def _write(path, text: str, encoding: str, gz: bool = False) -> str:
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


@pytest.mark.parametrize("encoding, gz, header", [
    ("utf-8-sig", False, True), ("utf-8-sig", False, False), ("utf-8-sig", True, True),
    ("utf-16", False, True), ("utf-16", False, False), ("utf-8", False, True)])
def test_a_csv_with_a_byte_order_mark_keeps_its_header_and_first_row(tmp_path, encoding, gz,
                                                                      header):
    text = ROWS if header else ROWS.split("\n", 1)[1]
    name = "d.csv.gz" if gz else "d.csv"
    ds = load_file(_write(tmp_path / name, text, encoding, gz), test_fraction=0.25)
    assert len(ds.x_train) + len(ds.x_test) == 4  # no row lost, the header not read as one
    assert ds.n_features == 2


def test_a_csv_label_column_named_after_a_byte_order_mark_is_found(tmp_path):
    text = "label,a,b\n0,0.5,1\n1,1.5,2\n0,2.5,3\n1,3.5,4\n"
    ds = load_file(_write(tmp_path / "d.csv", text, "utf-8-sig"), test_fraction=0.25)
    features = np.concatenate([ds.x_train, ds.x_test])
    assert sorted(features[:, 0].tolist()) == [0.5, 1.5, 2.5, 3.5]  # not the labels
