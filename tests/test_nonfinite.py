"""NaN and infinity in training. The raise mode names the step and the layer, and the
cause it finds (weights already bad, a learning rate far too high, a gradient); a
NaN that a replay does not repeat is still reported. The skip mode drops the step as
if it never ran. The mode's name is checked.

That skipping reads nothing on the host per step is in test_syncs.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from array_api_compat import array_namespace
from small_trainers import adam_trainer

import nnx
from nnx.errors import ConfigError, NonFiniteError
from nnx.train import Callback, Trainer

# --- raise: the step, the layer and the cause -------------------------------------------------


def test_nonfinite_weights_are_named_with_step_and_layer(backend, blobs_400):
    tr = Trainer(nnx.mlp([2, 16, 16, 3], activation="sigmoid"), optimizer=nnx.SGD(0.1),
                 device=backend)
    w = tr.model.get_weights()
    w["dense_2.w"][3, 1] = np.inf
    tr.model.set_weights(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's inf * 0 warnings
        with pytest.raises(NonFiniteError) as err:
            tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=2, batch_size=32)
    assert err.value.step == 0 and err.value.layer == "dense_2"
    assert "dense_2.w was already NaN or infinite before step 0" in str(err.value)
    assert len(tr.history) == 0


def test_huge_learning_rate_is_blamed_on_the_learning_rate(blobs_400):
    tr = Trainer(nnx.mlp([2, 16, 16, 3], activation="sigmoid"), optimizer=nnx.SGD(1e37))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow warnings
        with pytest.raises(NonFiniteError) as err:
            tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=3, batch_size=32)
    e = err.value
    assert 0 < e.step < tr.steps_per_epoch and e.layer == "dense_4"
    msg = str(e)
    assert f"step {e.step}" in msg and "learning rate (1e+37) is far too high" in msg
    assert "--lr" in msg and "No checkpoint was written" in msg
    # the model is left as it was before the failing step: finite
    assert all(np.isfinite(v).all() for v in tr.model.get_weights().values())
    assert tr.step == e.step


def test_huge_learning_rate_on_a_sigmoid_net_raises_nonfinite(blobs_300):
    tr = Trainer(nnx.mlp([2, 16, 3], activation="sigmoid"), optimizer=nnx.SGD(1e38))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError) as err:
            tr.fit(blobs_300.x_train, blobs_300.y_train, epochs=3, batch_size=32)
    assert isinstance(err.value.step, int) and err.value.layer is not None
    assert f"step {err.value.step}" in str(err.value) and "learning rate" in str(err.value)


class _Root(nnx.Layer):
    """``y = sqrt(|x|)``: finite everywhere, but its derivative is infinite at 0."""

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        y = xp.sqrt(xp.abs(x))

        def backward(dy):
            return dy * 0.5 * xp.sign(x) / y

        return y, backward


def test_nonfinite_gradient_is_traced_to_its_layer_and_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2)).astype(np.float32)
    x[3] = [0.0, 1.0]  # in the first batch of 8
    y = rng.integers(0, 3, 32)
    model = nnx.Sequential([nnx.Dense(2, 2), _Root(), nnx.Dense(2, 3)])
    tr = Trainer(model, optimizer=nnx.SGD(0.1))
    w = tr.model.get_weights()
    w["dense_0.w"] = np.eye(2, dtype=np.float32)  # pass x through unchanged
    tr.model.set_weights(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError) as err:
            tr.fit(x, y, epochs=2, batch_size=8, shuffle=False)
    assert err.value.step == 0 and err.value.layer == "_root_1"
    msg = str(err.value)
    assert "gradient in _root_1 became NaN or infinite at step 0 while the loss was finite" in msg
    assert "the loss was non-finite from step 1" in msg


class _Bomb(nnx.Layer):
    """Identity that, in training, multiplies its input by infinity from global step ``at`` on.

    It reads the step from its trainer, so a replay of the epoch repeats it exactly.
    """

    builtin = True

    def __init__(self, at: int):
        super().__init__()
        self.at, self.trainer = at, None

    def forward(self, x, *, train=False):
        if train and self.trainer.step >= self.at:
            x = x * float("inf")

        def backward(dy):
            return dy

        return x, backward


def _bombed(at: int, **kw):
    model = nnx.Sequential([nnx.Dense(2, 4), _Bomb(at), nnx.Dense(4, 2)])
    tr = Trainer(model, **kw)
    model.layers[1].trainer = tr
    return tr, model.layers[1].name


def test_inf_injected_after_the_data_check_names_step_and_layer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.arange(40) % 2
    tr, bomb = _bombed(3, optimizer=nnx.SGD(0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError) as err:
            tr.fit(x, y, epochs=2, batch_size=10)
    assert err.value.step == 3 and err.value.layer == bomb
    assert "step 3" in str(err.value) and bomb in str(err.value)


def test_nonfinite_that_a_replay_does_not_repeat_is_still_reported():
    """As on a device that is not deterministic: the replay finds nothing, the step is named."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    tr = Trainer(nnx.mlp([2, 8, 8, 2], activation="sigmoid"), optimizer=nnx.SGD(0.1))

    class Poison(Callback):  # corrupt one gradient at global step 5
        def on_backward_end(self, trainer, state):
            if state.step == 5:
                trainer.model.layers[2].grads["b"][0] = np.nan

    with pytest.raises(NonFiniteError) as err:
        tr.fit(x, y, epochs=2, batch_size=8, callbacks=[Poison()], shuffle=False)
    assert err.value.step == 6 and "did not repeat it" in str(err.value)


# --- skip -------------------------------------------------------------------------------------


def test_skip_mode_leaves_the_model_as_if_the_bad_step_never_ran():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    bad = x.copy()
    bad[:10] = 3e38  # the first batch overflows in the forward pass
    sizes = [2, 8, 3]
    skip = Trainer(nnx.mlp(sizes), optimizer=nnx.SGD(0.1, momentum=0.9), seed=7,
                   on_nonfinite="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h = skip.fit(bad, y, epochs=3, batch_size=10, shuffle=False)
    plain = Trainer(nnx.mlp(sizes), optimizer=nnx.SGD(0.1, momentum=0.9), seed=7)
    ref = plain.fit(x[10:], y[10:], epochs=3, batch_size=10, shuffle=False)
    assert h["skipped"] == [1, 1, 1]
    assert h["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    for k, v in plain.model.get_weights().items():
        np.testing.assert_allclose(skip.model.get_weights()[k], v, rtol=1e-6, err_msg=k)


def test_skip_keeps_the_parameters_finite():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.arange(40) % 2
    tr, _ = _bombed(6, optimizer=nnx.Adam(0.01), on_nonfinite="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h = tr.fit(x, y, epochs=2, batch_size=10)
    assert h["skipped"] == [0, 2]
    assert all(np.isfinite(v).all() for v in tr.model.get_weights().values())


# --- the mode ---------------------------------------------------------------------------------


def test_on_nonfinite_must_be_raise_or_skip():
    with pytest.raises(ConfigError, match="on_nonfinite"):
        adam_trainer(on_nonfinite="ignore")


def test_nonfinite_modes_are_chosen_by_name():
    from nnx.train import nonfinite

    assert set(nonfinite.MODES) == {"raise", "skip"}
    assert nonfinite.MODES["skip"].skipping and not nonfinite.MODES["raise"].skipping
    with pytest.raises(nnx.ConfigError, match="on_nonfinite must be 'raise' or 'skip'"):
        nonfinite.check_mode("ignore")
