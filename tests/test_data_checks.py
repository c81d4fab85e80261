"""One data check for the loaders, the Trainer and the doctor: nnx.data.check_xy and
check_labels, the Trainer's refusals of bad training data, and property tests of the
Trainer's check (random arrays must pass or raise an NnxError, never anything else).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from small_trainers import adam_trainer

import nnx
from nnx.data import check_xy
from nnx.errors import ConfigError, DataError, NnxError
from nnx.train import Trainer

# --- check_xy ---------------------------------------------------------------------------------


def test_check_xy_returns_training_dtypes():
    x, y, one_hot = check_xy(np.ones((3, 2), np.float64), [0, 1, 1.0], "classification", 2)
    assert x.dtype == np.float32 and y.dtype == np.int64 and not one_hot
    x, y, one_hot = check_xy(np.ones((3, 2)), np.eye(3), "classification", 3)
    assert one_hot and y.tolist() == [0, 1, 2]
    _, y, _ = check_xy(np.ones((3, 2)), [[1], [0], [1]], "classification")
    assert y.tolist() == [1, 0, 1]
    _, y, _ = check_xy(np.ones((3, 2)), np.array([True, False, True]), "classification")
    assert y.dtype == np.int64
    _, y, one_hot = check_xy(np.ones((3, 2), np.uint8), [0.5, 1, 2], "regression")
    assert y.shape == (3, 1) and y.dtype == np.float32 and not one_hot


@pytest.mark.parametrize("x,y,kw,match", [
    (np.ones((3, 2)), [0, 1], {}, "x has 3 rows but y has 2"),
    (np.ones((0, 2)), np.zeros(0), {}, "empty"),
    (np.ones(3), [0, 1, 0], {}, "must be 2-D.*reshape\\(-1, 1\\)"),
    (np.ones((3, 2, 2)), [0, 1, 0], {}, "must be 2-D.*flatten"),
    (np.array([[1, 2], [np.nan, np.inf], [3, np.nan]]), [0, 1, 0], {},
     "3 NaN or infinite values \\(first in row 1\\)"),
    (np.ones((3, 2)), [0, -2, 1], {}, "label -2 in row 1 is negative"),
    (np.ones((3, 2)), [0, 1.5, 1], {}, "label 1.5 in row 1 is not a whole number"),
    (np.ones((3, 2)), [0, 1, np.nan], {}, "row 2 is nan"),
    (np.ones((3, 2)), [0, 1, 7], {"n_classes": 3}, "label 7 in row 2 is out of range.*0..2"),
    (np.ones((2, 2)), [[0.5, 0.2], [0, 1]], {}, "one-hot.*row 0"),
    (np.ones((2, 2)), np.eye(2), {"n_classes": 3}, "2 one-hot columns but there are 3"),
    (np.ones((3, 2)), np.ones((3, 2, 1)), {}, "one entry"),
    (np.array([["a", "b"]]), [0], {}, "x must be numeric"),
    (np.ones((2, 2)), ["a", "b"], {}, "y must be numeric"),
    (np.full((2, 2), 1e300), [0, 1], {}, "too large for float32"),
    (np.ones((3, 2)), [0.0, np.inf, 1], {"task": "regression"},
     "1 regression targets are NaN or infinite \\(first in row 1\\)"),
])
def test_check_xy_errors(x, y, kw, match):
    kw = {"task": "classification", **kw}
    with pytest.raises(DataError, match=match) as err:
        check_xy(x, y, where="test data", **kw)
    assert str(err.value).startswith("test data")


def test_check_xy_unknown_task():
    with pytest.raises(ConfigError, match="task"):
        check_xy(np.ones((2, 2)), [0, 1], "ranking")


# --- one check for the loaders, the Trainer and the doctor ------------------------------------


SOFT_NOT_SUMMING_TO_1 = [[0.2, 0.3], [0.5, 0.5]]


def test_rows_that_are_not_distributions_are_refused_by_loader_and_trainer_alike():
    import nnx

    x = np.ones((2, 3), np.float32)
    with pytest.raises(DataError, match="read as one-hot rows.*row 0.*sum 0.5") as loader:
        check_xy(x, SOFT_NOT_SUMMING_TO_1, "classification")
    tr = nnx.Trainer(nnx.mlp([3, 2]), "cross_entropy")
    with pytest.raises(DataError, match="read as one-hot rows.*row 0.*sum 0.5") as trainer:
        tr.fit(x, SOFT_NOT_SUMMING_TO_1, epochs=1)
    assert str(loader.value).split(": ", 1)[1] == str(trainer.value).split(": ", 1)[1]
    # binary cross-entropy: each output is its own yes/no probability, rows need not sum to 1
    tr = nnx.Trainer(nnx.mlp([3, 2]), "bce")
    assert len(tr.fit(x, SOFT_NOT_SUMMING_TO_1, epochs=1, batch_size=2)) == 1


def test_check_xy_with_a_loss_keeps_soft_labels_and_names_the_model():
    x = np.ones((3, 2))
    soft = np.array([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]])
    _, y, one_hot = check_xy(x, soft, loss="cross_entropy", n_out=2)
    assert y.dtype == np.float32 and np.array_equal(y, soft.astype(np.float32)) and not one_hot
    _, y, one_hot = check_xy(x, soft, "classification")  # a loader: labels by argmax
    assert y.tolist() == [1, 0, 0] and one_hot
    _, y, _ = check_xy(x, [0.0, 1.0, 1.0], loss="bce", n_out=1)  # whole numbers: labels
    assert y.dtype == np.int64
    _, y, _ = check_xy(x, [0.2, 1.0, 0.9], loss="bce", n_out=1)  # probabilities, one column
    assert y.shape == (3, 1) and y.dtype == np.float32
    x64, _, _ = check_xy(x, [0, 1, 1], loss="cross_entropy", n_out=2, dtype="float64")
    assert x64.dtype == np.float64
    cases = [
        ({"loss": "cross_entropy", "n_out": 3}, [0, 1, 3],
         "label 3 in row 2 is out of range for 3 classes.*model with 3 output"),
        ({"loss": "cross_entropy", "n_out": 3}, [1, 2, 3], "subtract 1"),
        ({"loss": "bce", "n_out": 1}, [0, 1, 2], "label 2 in row 2 is out of range for 2"),
        ({"loss": "bce", "n_out": 1}, [0.5, 1.5, 0.0], "probabilities in \\[0, 1\\]; row 1"),
        ({"loss": "bce", "n_out": 4}, [0, 1, 3], "shape \\(n, 4\\).*use cross_entropy"),
        ({"loss": "cross_entropy", "n_out": 3}, np.eye(2)[[0, 1, 1]],
         "2 one-hot columns but the model has 3 outputs"),
        ({"loss": "mse", "n_out": 2}, [1.0, 2.0, 3.0], "1 target column"),
        ({"loss": "mse"}, [1e300, 0.0, 1.0], "too large for float32"),
        ({"loss": "cross_entropy", "input_shape": (5,)}, [0, 1, 1], "2 features but the model "
                                                                    "expects 5"),
        ({"loss": "cross_entropy", "input_shape": (2, 1, 1)}, [0, 1, 1],
         "takes images \\(n, 2, 1, 1\\).*x.reshape\\(-1, 2, 1, 1\\)"),
    ]
    for kw, y, match in cases:
        with pytest.raises(DataError, match=match):
            check_xy(x, y, where="test data", **kw)
    with pytest.raises(ConfigError, match="mse is for regression"):
        check_xy(x, [0, 1, 1], "classification", loss="mse")
    with pytest.raises(ConfigError, match="dtype"):
        check_xy(x, [0, 1, 1], "classification", dtype="int32")


def test_images_are_checked_against_the_models_input_shape():
    x = np.zeros((4, 3, 3, 1), np.float32)
    xc, _, _ = check_xy(x, [0, 1, 0, 1], loss="cross_entropy", input_shape=(3, 3, 1))
    assert xc.shape == (4, 3, 3, 1)
    with pytest.raises(DataError, match="input_shape=\\(height, width, channels\\)"):
        check_xy(x, [0, 1, 0, 1], loss="cross_entropy", input_shape=(9,))


def test_check_labels_is_the_doctors_label_rule():
    import nnx
    from nnx.data import check_labels
    from nnx.doctor import check

    assert check_labels([0, 2, 1], n_out=3)[0].tolist() == [0, 2, 1]
    with pytest.raises(DataError, match="y: label 3 in row 0 is out of range"):
        check_labels([3, 0], "y", loss="cross_entropy", n_out=3)
    model = nnx.mlp([2, 3]).init("cpu", 0)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    (f,) = [f for f in check(model, "cross_entropy", x, np.array([3, 0, 1, 2]))
            if f.id == "labels-out-of-range"]
    assert "label 3 in row 0 is out of range for 3 classes" in f.title
    rows = [f for f in check(model, "cross_entropy", x, np.full((4, 3), 0.2))
            if f.id == "labels-out-of-range"]
    assert rows and "read as one-hot rows" in rows[0].title


# --- the Trainer's data -----------------------------------------------------------------------


def test_data_problems_are_data_errors_that_say_where(blobs_400):
    tr = adam_trainer()
    x, y = blobs_400.x_train, blobs_400.y_train
    nan_x = x.copy()
    nan_x[7, 1] = np.nan
    bad_label = y.copy()
    bad_label[11] = 3
    cases = [
        ((x[:, :1], y), "1 features but the model expects 2"),
        ((x, y[:-1]), "y needs one entry"),
        ((nan_x, y), "row 7"),
        ((x, bad_label), "label 3 in row 11 is out of range"),
        ((x, y - 1), "label -1"),
        ((x[:, :, None], y), "must be 2-D"),
        ((x, y + 0.5), "whole numbers"),
        ((x[:0], y[:0]), "empty"),
    ]
    for (xx, yy), match in cases:
        with pytest.raises(DataError, match=match):
            tr.fit(xx, yy, epochs=1)
    with pytest.raises(DataError, match="validation data"):
        tr.fit(x, y, epochs=1, validation_data=(nan_x, y))
    assert tr.step == 0  # nothing ran


def test_regression_target_columns_must_match_outputs():
    x = np.zeros((20, 3), np.float32)
    tr = Trainer(nnx.mlp([3, 4, 2]), "mse")
    with pytest.raises(DataError, match="1 target column"):
        tr.fit(x, np.zeros(20), epochs=1)


def test_arrays_that_cannot_come_to_the_host_are_data_errors():
    import nnx

    torch = pytest.importorskip("torch")
    tr = nnx.Trainer(nnx.mlp([2, 2]), device="numpy")
    x = torch.ones((4, 2), requires_grad=True)
    with pytest.raises(DataError, match="training data x is not a numeric array.*requires grad"):
        tr.fit(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=2)
    with pytest.raises(DataError, match="training data x is not a numeric array"):
        tr.fit([[1.0, 2.0], [3.0]], [0, 1], epochs=1)


# --- properties: the trainer's data check -----------------------------------------------------


PROPS = settings(max_examples=50, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8,
                           np.bool_, np.complex64, np.str_])


@st.composite
def _arrays(draw, rows):
    dtype = draw(_DTYPES)
    ndim = draw(st.integers(0, 3))
    shape = tuple([rows] + [draw(st.integers(0, 4)) for _ in range(ndim - 1)]) if ndim else ()
    if dtype is np.str_:
        return np.full(shape, "a")
    a = draw(hnp.arrays(dtype, shape, elements=None if dtype in (np.bool_, np.complex64) else
                        hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True)
                        if np.dtype(dtype).kind == "f" else
                        hnp.from_dtype(np.dtype(dtype))))
    return a


@st.composite
def _pairs(draw):
    n = draw(st.integers(0, 6))
    if draw(st.booleans()):  # near-valid: (n, 3) features and small integer or float labels
        x = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64, np.int64])), (n, 3),
                            elements=st.integers(-100, 100)))
        y = np.asarray(draw(st.lists(st.sampled_from([0, 1, 2, 3, -1, 0.5]), min_size=n,
                                     max_size=n)), dtype=draw(st.sampled_from(["int64",
                                                                                "float64"])))
    else:
        x = draw(_arrays(n))
        y = draw(_arrays(draw(st.sampled_from([n, n, n + 1]))))
    if draw(st.booleans()) and x.size and x.dtype.kind == "f":
        x = x.copy()
        flat = x.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x, y


@pytest.fixture(scope="module")
def trainers():
    return {loss: nnx.Trainer(nnx.mlp([3, 4, 3 if loss != "bce" else 1]), loss)
            for loss in ("cross_entropy", "mse", "bce")}


@PROPS
@given(pair=_pairs(), loss=st.sampled_from(["cross_entropy", "mse", "bce"]))
def test_trainer_data_check_succeeds_or_raises_an_nnx_error(trainers, pair, loss):
    from nnx.train.device_data import to_device_xy

    x, y = pair
    tr = trainers[loss]  # on NumPy: the device arrays are host arrays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            xc, yc = to_device_xy(tr, x, y, "training data")
        except NnxError as exc:
            assert "training data" in str(exc) or "numeric" in str(exc)
            return
    assert xc.shape == (len(yc), 3) and np.isfinite(xc.astype(np.float64)).all()
    if loss == "cross_entropy" and yc.ndim == 1:
        assert yc.dtype == np.int64 and (0 <= yc).all() and (yc < 3).all()
    if loss == "mse":
        assert yc.ndim == 2 and np.isfinite(yc).all()


@PROPS
@given(pair=_pairs())
def test_fit_succeeds_or_raises_an_nnx_error(pair):
    x, y = pair
    tr = nnx.Trainer(nnx.mlp([3, 3]), "cross_entropy", nnx.SGD(0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            h = tr.fit(x, y, epochs=1, batch_size=2)
        except NnxError:
            return
    assert len(h) == 1 and math.isfinite(h["loss"][0])
