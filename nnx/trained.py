"""A model with the preprocessing of its data: what ``nnx.load`` returns.

:class:`TrainedModel` is a :class:`~nnx.layers.Sequential` (it trains, saves and
exports like one) that also holds a :class:`~nnx.data.preprocessing.Preprocessing`,
so its :meth:`~TrainedModel.predict`, :meth:`~TrainedModel.predict_proba`,
:meth:`~TrainedModel.evaluate` and :meth:`~TrainedModel.summary` take raw data
and give answers in the data's own terms (class names, target units)::

    model = nnx.load("runs/wine/model.npz")
    model.predict(raw_x)          # as the run: pixels scaled, features standardised
    model.predict_proba(raw_x)    # (n, classes)

Inference runs in eval mode (no dropout, BatchNorm running statistics) on the
model's device, in batches; results come back as host NumPy arrays.
"""

from __future__ import annotations

import numpy as np

from .data.preprocessing import Preprocessing
from .errors import ConfigError
from .layers.sequential import Sequential
from .losses import get_loss

__all__ = ["TrainedModel", "with_preprocessing", "with_run_preprocessing", "output_labels",
           "probabilities", "confusion", "scores"]


class TrainedModel(Sequential):
    """A Sequential whose ``predict``/``predict_proba``/``evaluate`` apply ``preprocessing``.

    Parameters
    ----------
    layers, input_shape : as :class:`~nnx.layers.Sequential`
    preprocessing : the :class:`~nnx.data.preprocessing.Preprocessing` of its data
        (None: nothing recorded, so inputs are taken as they are and ``predict``
        returns the raw outputs)
    """

    def __init__(self, layers, input_shape=None, preprocessing: Preprocessing | None = None):
        super().__init__(layers, input_shape=input_shape)
        self.preprocessing = preprocessing if preprocessing is not None else Preprocessing()

    # --- the network on raw data ----------------------------------------------------------

    @property
    def task(self) -> str | None:
        """"classification", "regression", or None when the file does not say."""
        return self.preprocessing.task

    @property
    def class_names(self) -> list[str] | None:
        """The names of classes ``0..C-1`` (None: the labels are the numbers)."""
        return self.preprocessing.class_names

    @property
    def loss(self):
        """The loss the model was trained with (by default the task's usual one)."""
        name = self.preprocessing.loss
        if name is None and self.task == "regression":
            name = "mse"
        elif name is None and self.task == "classification":
            name = "bce" if self.n_out == 1 else "cross_entropy"
        if name is None:
            raise ConfigError("this model records no task (it was saved without its "
                              "preprocessing), so its outputs cannot be read as labels or "
                              "targets; save it with nnx.save(model, path, preprocessing="
                              "nnx.data.Preprocessing(task=...))")
        return get_loss(name)

    def prepare(self, x, where: str = "x") -> np.ndarray:
        """Raw ``x`` -> the network's inputs (host float32), as the run prepared them."""
        shape = self.input_shape or ((self.n_in,) if self.n_in else None)
        return self.preprocessing.transform_x(x, shape, where)

    def outputs(self, x, batch_size: int = 4096, *, prepared: bool = False) -> np.ndarray:
        """The network's outputs ``(n, n_out)`` on raw ``x`` (or on ``prepared`` inputs),
        in eval mode, as a host float array."""
        if self.backend is None:
            raise ConfigError("the model has no parameters yet; train or load it first")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        xh = np.asarray(x, dtype=np.float32) if prepared else self.prepare(x)
        xd = self.backend.asarray(xh, self.dtype)
        n = xh.shape[0]
        outs = [self.backend.to_numpy(self.forward(xd[i:min(i + batch_size, n), ...],
                                                   train=False)[0])
                for i in range(0, n, batch_size)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.n_out or 0))

    def predict(self, x, batch_size: int = 4096) -> np.ndarray:
        """Answers on raw ``x``: class names (or labels ``(n,)`` int64 without names) for a
        classifier, targets ``(n, k)`` in their own units for a regression model, the raw
        outputs when the task is not recorded."""
        return self.answers(self.outputs(x, batch_size))

    def answers(self, out: np.ndarray) -> np.ndarray:
        """What :meth:`predict` returns, from host outputs ``(n, n_out)``."""
        if self.task == "classification":
            return self.preprocessing.names(output_labels(out))
        if self.task == "regression":
            return self.preprocessing.inverse_y(out)
        return out

    def predict_proba(self, x, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities ``(n, C)`` on raw ``x`` (columns in ``class_names`` order)."""
        if self.task != "classification":
            raise ConfigError(f"predict_proba needs a classifier; this model's task is "
                              f"{self.task or 'not recorded'}: use predict")
        return probabilities(self.loss, self.outputs(x, batch_size))

    def evaluate(self, x, y, batch_size: int = 4096, *, prepared: bool = False) -> dict:
        """Mean loss (on the network's scale, as in training) and accuracy, or MAE, MSE,
        RMSE and R² in the targets' own units, on raw ``(x, y)`` (or ``prepared`` ones,
        as the network sees them: scaled inputs, encoded labels, scaled targets)."""
        y_model = np.asarray(y) if prepared else self.preprocessing.encode_y(y)
        return scores(self, self.outputs(x, batch_size, prepared=prepared), y_model)

    def confusion_matrix(self, x, y, batch_size: int = 4096) -> np.ndarray:
        """Counts ``(C, C)``: row = true class, column = predicted class, on raw data."""
        labels = self.preprocessing.encode_y(y)
        return confusion(labels, output_labels(self.outputs(x, batch_size)), self.n_classes)

    @property
    def n_classes(self) -> int | None:
        return self.preprocessing.n_classes or (
            (2 if self.n_out == 1 else self.n_out) if self.task == "classification" else None)

    def summary(self, print_fn=print) -> None:
        """The layer table (see :meth:`Sequential.summary`), then the preprocessing."""
        super().summary(print_fn)
        print_fn("Preprocessing:")
        for line in self.preprocessing.describe():
            print_fn(f"  {line}")


def with_preprocessing(model: Sequential, preprocessing: Preprocessing) -> TrainedModel:
    """A TrainedModel of ``model``'s layers (the same layer objects, parameters included)."""
    out = TrainedModel(model.layers, model.input_shape, preprocessing)
    out.backend, out.dtype = model.backend, model.dtype
    if "_buffer" in model.__dict__:
        out._buffer = model.__dict__["_buffer"]
    return out


def with_run_preprocessing(model: Sequential, loss, ds, *, standardize: bool = False,
                           trained_on: dict | None = None):
    """``(model, ds)`` for a run on Dataset ``ds``: the model with the preprocessing fitted on
    ``ds`` (see :meth:`Preprocessing.for_dataset`), and ``ds`` as the model sees it."""
    prep = Preprocessing.for_dataset(ds, loss=loss.name, standardize=standardize,
                                     trained_on=trained_on)
    return with_preprocessing(model, prep), prep.apply(ds)


def output_labels(out: np.ndarray) -> np.ndarray:
    """Class indices ``(n,)`` from outputs ``(n, C)``; one column is a binary logit."""
    if out.shape[1] == 1:
        return (out[:, 0] > 0).astype(np.int64)
    return np.argmax(out, axis=1).astype(np.int64)


def probabilities(loss, out: np.ndarray) -> np.ndarray:
    """The loss's probabilities ``(n, C)`` of host outputs, in float64."""
    return np.asarray(loss.predict_proba(np.asarray(out, dtype=np.float64)))


def confusion(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 counts ``(C, C)``: row = true class, column = predicted class."""
    c = int(n_classes)
    flat = np.asarray(true, np.int64) * c + np.asarray(predicted, np.int64)
    return np.bincount(flat, minlength=c * c).reshape(c, c)


def scores(model: TrainedModel, out: np.ndarray, y_model: np.ndarray) -> dict:
    """Loss and metrics of host outputs against targets on the network's scale."""
    loss = model.loss
    value, _ = loss(np.asarray(out, dtype=np.float64), y_model)
    result = {"loss": float(value), "n": int(out.shape[0])}
    if model.task == "classification":
        result["accuracy"] = float(np.mean(output_labels(out) == y_model))
        return result
    pred = model.preprocessing.inverse_y(out).astype(np.float64)
    true = model.preprocessing.inverse_y(y_model.reshape(out.shape)).astype(np.float64)
    err = pred - true
    spread = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    explained = 1.0 - (err ** 2).sum(axis=0) / np.where(spread > 0, spread, np.nan)
    result.update(mae=float(np.mean(np.abs(err))), mse=float(np.mean(err ** 2)),
                  rmse=float(np.sqrt(np.mean(err ** 2))),
                  r2=float(np.mean(explained)) if np.isfinite(explained).all() else None)
    return result
