"""What a model does to raw data around the network, saved with the model.

A :class:`Preprocessing` holds everything between a user's raw arrays and the
network, so that a saved model answers on raw data as the run did:

- inputs: the per-example shape the data came in (``(8, 8)`` images,
  ``(13,)`` features), the uint8 pixel scaling (``/ 255``, applied to uint8
  input) and the feature :class:`~nnx.data.Standardizer` fitted on the
  training split;
- outputs: the task and loss, the class names (label ``i`` is
  ``class_names[i]``) and, for regression, the target Standardizer, inverted
  on prediction.

It lives on the host: :meth:`Preprocessing.for_dataset` fits it on a
:class:`~nnx.data.Dataset`, :meth:`to_meta` / :meth:`from_meta` put it in a
model file, and :class:`nnx.trained.TrainedModel` applies it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from .checks import check_labels, to_host
from .dataset import TASKS
from .prepare import Standardizer

__all__ = ["Preprocessing", "describe_shape"]


def describe_shape(shape) -> str:
    """``(64,)`` -> ``"64 features"``, ``(28, 28)`` -> ``"28x28 images"``."""
    shape = tuple(shape)
    if len(shape) == 1:
        return f"{shape[0]} feature{'s' if shape[0] != 1 else ''}"
    return "x".join(map(str, shape)) + " images"


@dataclass
class Preprocessing:
    """Raw data to network inputs, and network outputs to answers (host side).

    Attributes
    ----------
    task : "classification", "regression", or None (not recorded)
    loss : the loss name the model was trained with, or None
    input_shape : per-example shape of the raw data, e.g. ``(8, 8)`` or ``(13,)``
    pixel_scale : 255.0 when uint8 pixels were divided by 255 (applied to uint8 input)
    x_scaler : feature Standardizer (mean and std of the training split) or None
    y_scaler : regression target Standardizer, inverted on prediction, or None
    class_names : names of classes ``0..C-1`` or None (the labels are their names)
    n_classes : number of classes, for classification
    trained_on : ``{"dataset": ..., "seed": ...}`` of the run, when known
    """

    task: str | None = None
    loss: str | None = None
    input_shape: tuple | None = None
    pixel_scale: float | None = None
    x_scaler: Standardizer | None = None
    y_scaler: Standardizer | None = None
    class_names: list | None = None
    n_classes: int | None = None
    trained_on: dict | None = None

    def __post_init__(self):
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            self.n_classes = self.n_classes or len(self.class_names)
            if len(self.class_names) != self.n_classes:
                raise ConfigError(f"{len(self.class_names)} class names for {self.n_classes} "
                                  "classes; give one name per class")

    # --- fitting --------------------------------------------------------------------------

    @classmethod
    def for_dataset(cls, ds, *, loss: str | None = None, standardize: bool = False,
                    trained_on: dict | None = None) -> Preprocessing:
        """The preprocessing of a run on ``ds``: with ``standardize``, features scaled by
        the training split's mean and std and, for regression, the targets too."""
        regression = ds.task == "regression"
        return cls(task=ds.task, loss=loss,
                   input_shape=tuple(ds.meta.get("image_shape") or (ds.n_features,)),
                   pixel_scale=ds.meta.get("pixel_scale"),
                   x_scaler=Standardizer().fit(ds.x_train) if standardize else None,
                   y_scaler=Standardizer().fit(ds.y_train) if standardize and regression
                   else None,
                   class_names=ds.meta.get("class_names"), n_classes=ds.n_classes,
                   trained_on=trained_on)

    def apply(self, ds):
        """``ds`` as the network sees it: features (and regression targets) scaled.

        ``ds`` is a loaded Dataset, whose pixels the loader has already scaled.
        """
        if self.x_scaler is None and self.y_scaler is None:
            return ds
        x_tr, x_te = ds.x_train, ds.x_test
        if self.x_scaler is not None:
            x_tr, x_te = self.x_scaler.transform(x_tr), self.x_scaler.transform(x_te)
        y_tr, y_te = ds.y_train, ds.y_test
        if self.y_scaler is not None:
            y_tr, y_te = self.y_scaler.transform(y_tr), self.y_scaler.transform(y_te)
        return dataclasses.replace(ds, x_train=x_tr, x_test=x_te, y_train=y_tr, y_test=y_te)

    # --- inputs ---------------------------------------------------------------------------

    def transform_x(self, x, model_shape: tuple | None = None, where: str = "x") -> np.ndarray:
        """Raw ``x`` (n, *input_shape) or flat rows -> float32 network inputs.

        ``model_shape`` is what the network takes per example: ``(n_in,)`` or
        ``(height, width, channels)``. uint8 input is divided by ``pixel_scale``;
        then the feature Standardizer applies. A wrong feature count or image shape
        is a DataError naming both shapes.
        """
        x = to_host(x, what=where)
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where} must be numeric, got dtype {x.dtype}")
        if x.ndim < 2:
            raise DataError(f"{where} must have one row (or image) per example, got shape "
                            f"{x.shape}; for one example use x[None]")
        flat = self._check_shape(tuple(x.shape[1:]), model_shape, where)
        if x.dtype == np.uint8 and self.pixel_scale:
            x = x.astype(np.float32) / np.float32(self.pixel_scale)
        elif self.pixel_scale and x.dtype.kind in "iu":
            x = x.astype(np.float32) / np.float32(self.pixel_scale)  # pixel values as int
        elif self.pixel_scale and x.size and float(np.max(x)) > 1.0:
            warnings.warn(f"{where}: values go up to {float(np.max(x)):g}, but the model was "
                          f"trained on uint8 pixels divided by {self.pixel_scale:g}; pass the "
                          "uint8 pixels (or divide by it yourself)", stacklevel=3)
        x = np.asarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
            raise DataError(f"{where}: {int(bad.sum())} example(s) hold NaN or infinite "
                            f"values (first in row {int(np.argmax(bad))}); clean them first")
        n = x.shape[0]
        if self.x_scaler is not None:
            x = self.x_scaler.transform(x.reshape(n, flat))
        target = tuple(model_shape) if model_shape else (flat,)
        return x.reshape((n, *target))

    def _check_shape(self, per: tuple, model_shape, where: str) -> int:
        """The flat width of one example, after checking ``per`` fits; else a DataError."""
        raw = self.input_shape
        target = tuple(model_shape) if model_shape else None
        if (not raw and not target) or per in _accepted(raw, target):
            return int(np.prod(per))
        trained = describe_shape(raw or target)
        if raw and target and len(raw) > 1 and len(target) == 1:
            trained += f" ({int(np.prod(raw))} features once flattened)"
        raise DataError(f"{where} has {describe_shape(per)} per example (shape "
                        f"{(None, *per)}) but the model was trained on {trained}; pass data "
                        "of that shape")

    # --- outputs --------------------------------------------------------------------------

    def encode_y(self, y, where: str = "y") -> np.ndarray:
        """Labels or targets as the network's loss takes them: class indices (names mapped
        back) for classification, scaled float targets (n, k) for regression."""
        y = to_host(y, what=where)
        if self.task == "classification":
            return self._encode_labels(np.asarray(y), where)
        if y.dtype.kind in "USO":
            raise DataError(f"{where} holds text ({_first(y)!r}) but the model is a regression "
                            "model predicting numbers; pass numeric targets, or a classifier")
        if y.dtype.kind not in "biuf":
            raise DataError(f"{where} must be numeric, got dtype {y.dtype}")
        n = y.shape[0]
        targets = np.asarray(y, dtype=np.float64).reshape(n, -1)
        if not np.isfinite(targets).all():
            raise DataError(f"{where}: regression targets hold NaN or infinite values")
        k = self._n_targets()
        if k is not None and targets.shape[1] != k:
            raise DataError(f"{where} has {targets.shape[1]} target column(s) but the model "
                            f"predicts {k}")
        out = targets.astype(np.float32)
        return self.y_scaler.transform(out) if self.y_scaler is not None else out

    def _n_targets(self) -> int | None:
        return None if self.y_scaler is None else int(self.y_scaler.mean.shape[0])

    def _encode_labels(self, y: np.ndarray, where: str) -> np.ndarray:
        c = self.n_classes
        what = f"the model is a classifier of {c} classes" if c else "the model is a classifier"
        if self.class_names and c and c <= 12:
            what += f" ({', '.join(self.class_names)})"
        if y.dtype.kind in "USO":
            names = np.char.strip(y.astype(str).reshape(-1))
            if not self.class_names:
                raise DataError(f"{where} holds text labels ({_first(names)!r}) but {what} "
                                "with numbered labels; pass the numbers 0..C-1")
            index = {name: i for i, name in enumerate(self.class_names)}
            unknown = [v for v in names.tolist() if v not in index]
            if unknown:
                row = int(np.argmax([v not in index for v in names.tolist()]))
                raise DataError(f"{where}: label {unknown[0]!r} in row {row} is not one of the "
                                f"model's classes; {what}")
            return np.asarray([index[v] for v in names.tolist()], dtype=np.int64)
        try:
            labels, _ = check_labels(y, where, n_classes=c)
        except DataError as exc:
            raise DataError(f"{exc} ({what})") from None
        return labels

    def inverse_y(self, out: np.ndarray) -> np.ndarray:
        """Network outputs (n, k) of a regression model -> targets in their own units."""
        out = np.asarray(out, dtype=np.float32)
        return self.y_scaler.inverse_transform(out) if self.y_scaler is not None else out

    def names(self, labels: np.ndarray) -> np.ndarray:
        """Class indices (n,) -> their names (str array), or the indices without names."""
        if not self.class_names:
            return np.asarray(labels)
        return np.asarray(self.class_names, dtype=str)[np.asarray(labels, dtype=np.int64)]

    # --- in a model file ------------------------------------------------------------------

    def to_meta(self) -> tuple[dict, dict]:
        """``(json, arrays)``: a JSON-ready dict and the scalers' arrays by name."""
        meta = {"task": self.task, "loss": self.loss,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "pixel_scale": self.pixel_scale, "class_names": self.class_names,
                "n_classes": self.n_classes, "trained_on": self.trained_on}
        arrays = {}
        for key, scaler in (("x", self.x_scaler), ("y", self.y_scaler)):
            if scaler is not None:
                arrays[f"{key}_mean"], arrays[f"{key}_std"] = scaler.mean, scaler.std
        return meta, arrays

    @classmethod
    def from_meta(cls, meta: dict, arrays: dict) -> Preprocessing:
        """The inverse of :meth:`to_meta`; raises ValueError for a damaged record."""
        if not isinstance(meta, dict):
            raise ValueError("the preprocessing record is not a table")
        scalers = {}
        for key in ("x", "y"):
            if f"{key}_mean" in arrays:
                scalers[key] = Standardizer(arrays[f"{key}_mean"], arrays[f"{key}_std"])
        try:
            return cls(task=meta.get("task"), loss=meta.get("loss"),
                       input_shape=meta.get("input_shape"), pixel_scale=meta.get("pixel_scale"),
                       x_scaler=scalers.get("x"), y_scaler=scalers.get("y"),
                       class_names=meta.get("class_names"), n_classes=meta.get("n_classes"),
                       trained_on=meta.get("trained_on"))
        except (ConfigError, TypeError) as exc:
            raise ValueError(f"unreadable preprocessing record ({exc})") from None

    def to_json(self) -> dict:
        """One JSON-ready dict, the scalers' arrays as lists under ``"arrays"`` (for formats
        whose metadata is text: safetensors headers, ONNX properties)."""
        meta, arrays = self.to_meta()
        return {**meta, "arrays": {k: np.asarray(v).tolist() for k, v in arrays.items()}}

    @classmethod
    def from_json(cls, record: dict) -> Preprocessing:
        """The inverse of :meth:`to_json`; raises ValueError for a damaged record."""
        if not isinstance(record, dict):
            raise ValueError("the preprocessing record is not a table")
        record = dict(record)
        arrays = {k: np.asarray(v, dtype=np.float32)
                  for k, v in (record.pop("arrays", None) or {}).items()}
        return cls.from_meta(record, arrays)

    def describe(self) -> list[str]:
        """Lines for a model summary: inputs, scaling, task and outputs."""
        lines = []
        if self.input_shape is not None:
            lines.append(f"input: {describe_shape(self.input_shape)} per example")
        steps = []
        if self.pixel_scale:
            steps.append(f"uint8 pixels / {self.pixel_scale:g}")
        if self.x_scaler is not None:
            steps.append("features standardised (mean and std of the training split)")
        lines.append("scaling: " + ("; ".join(steps) if steps else "none"))
        if self.task == "classification":
            names = self.class_names or [str(i) for i in range(self.n_classes or 0)]
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            lines.append(f"task: classification, {self.n_classes} classes: {shown}")
        elif self.task == "regression":
            lines.append("task: regression")
            if self.y_scaler is not None:
                lines.append("target: standardised for training (mean "
                             f"{_numbers(self.y_scaler.mean)}, std {_numbers(self.y_scaler.std)})"
                             "; predictions are in the target's own units")
        else:
            lines.append("task: not recorded (predictions are the raw outputs)")
        if self.loss:
            lines.append(f"loss: {self.loss}")
        if self.trained_on:
            lines.append("trained on: " + ", ".join(f"{k} {v}" for k, v in
                                                     self.trained_on.items()))
        return lines


def _accepted(raw, target) -> list[tuple]:
    """The per-example shapes raw data may have: as trained, as the network takes it, flat
    rows, and ``(h, w)`` images as ``(h, w, 1)`` or the other way round."""
    fits = [s for s in (raw, target, (int(np.prod(raw or target)),)) if s]
    fits += [s + (1,) for s in fits if len(s) == 2]
    return fits + [s[:-1] for s in fits if len(s) == 3 and s[-1] == 1]


def _first(values) -> str:
    flat = np.asarray(values).reshape(-1)
    return str(flat[0]) if flat.size else ""


def _numbers(a) -> str:
    return ", ".join(f"{float(v):.4g}" for v in np.asarray(a).reshape(-1)[:4]) + (
        ", ..." if np.asarray(a).size > 4 else "")
