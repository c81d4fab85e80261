"""The commands beside training: predict, evaluate, summary and export of a saved model.

``nnx predict MODEL DATA``, ``nnx evaluate MODEL DATA``, ``nnx summary MODEL`` and
``nnx export MODEL --format onnx|safetensors -o FILE`` are parsed by
:mod:`nnx.cli_commands` and run here. MODEL is a run's ``model.npz`` or
``checkpoint.npz`` (or a ``.safetensors`` export); it carries its
preprocessing, so DATA is raw: a ``.npz`` (``x``, optional ``y``,
``x_test``/``y_test``), ``.npy`` (``x``), ``.csv`` (features, with or without
the label column), ``.h5``, a folder of IDX files, or a built-in dataset
name. Of DATA the test set is used when it has one (the stored test arrays,
the test IDX files, or a built-in dataset's test split with the run's seed),
else every row; ``split`` chooses.

Nothing here parses arguments or prints: each command returns its text.
Every user mistake is an :mod:`nnx.errors` exception; files are written
atomically.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError, ConfigError, DataError

__all__ = ["Inputs", "open_model", "read_inputs", "predict", "evaluate", "summary", "export",
           "COMMANDS", "SPLITS", "FORMATS"]

#: ``nnx <command> ...`` runs one of these on a saved model; anything else trains
COMMANDS = ("predict", "evaluate", "summary", "export")
SPLITS = ("auto", "test", "train")
FORMATS = ("onnx", "safetensors")
#: what each command does, and its arguments (the command line's help)
HELP = {"predict": "labels or values (and class probabilities) as CSV",
        "evaluate": "loss, accuracy and a confusion matrix, or MAE, RMSE and R2",
        "summary": "layers, output shapes, parameter counts and preprocessing",
        "export": "write the model as ONNX or safetensors"}
MODEL_HELP = "a run's model.npz or checkpoint.npz (or a .safetensors export)"
DATA_HELP = ("raw data: .npz (x, optional y, x_test/y_test), .npy (x), .csv (features, with or "
             "without the label column), .h5, a folder of IDX files, or a dataset name")
_DATA_SUFFIXES = (".csv", ".csv.gz", ".h5", ".hdf5", ".npy")


@dataclass
class Inputs:
    """Raw rows of DATA: ``x`` (n, ...), ``y`` (n, ...) or None, and ``what`` they are."""

    x: np.ndarray
    y: np.ndarray | None
    what: str


def open_model(path, device: str = "cpu"):
    """The :class:`~nnx.trained.TrainedModel` in ``path``; a data file or folder given as
    MODEL is named as such (the arguments are MODEL then DATA)."""
    from .checkpoint import load
    from .data import DATASETS

    text = os.fspath(path)
    if (os.path.isdir(text) or text.lower().endswith(_DATA_SUFFIXES)
            or (text.lower() in DATASETS and not os.path.exists(text))):
        raise CheckpointError(f"MODEL {text} is a dataset, not a model: the arguments are "
                              "MODEL then DATA, e.g. nnx predict runs/<run>/model.npz "
                              f"{text}")
    try:
        return load(text, device=device)
    except CheckpointError as exc:
        if text.lower().endswith(".npz") and "not an nnx model" in str(exc):
            raise CheckpointError(f"{exc}. Is {text} DATA? The arguments are MODEL then "
                                  "DATA") from None
        raise


def _flat_width(model) -> int | None:
    shape = model.preprocessing.input_shape or model.input_shape or (
        (model.n_in,) if model.n_in else None)
    return int(np.prod(shape)) if shape else None


def _choose(name: str, main, test, split: str):
    """``(x, y, what)`` of the split to use, by ``split`` (see the module docstring)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test" and test is None:
        raise DataError(f"{name} has no test set; use --split train (every row)")
    if test is not None and split != "train":
        return (*test, f"the test set of {name}")
    return (*main, f"the {'training set' if test is not None else 'rows'} of {name}")


def read_inputs(model, data, *, split: str = "auto", data_dir=None) -> Inputs:
    """The raw rows of ``data`` (a file, an IDX folder or a dataset name) to give ``model``."""
    from . import data as datamod

    text = os.fspath(data)
    key = text.strip().lower()
    if key in datamod.DATASETS or key in datamod._ALIASES:
        run = model.preprocessing.trained_on or {}
        seed = run.get("seed", 0) if str(run.get("dataset", "")).lower() == key else 0
        ds = datamod.load(key, data_dir=data_dir, seed=int(seed), quiet=True)
        x, y, what = _choose(ds.name, (ds.x_train, ds.y_train), (ds.x_test, ds.y_test), split)
        return Inputs(x, y, f"{what}, split with seed {seed}")
    folder = datamod.idx_folder_of(text)
    if folder is not None:
        from .data.idx_folder import read_idx_set

        _, main, test, _ = read_idx_set(*folder)
        return Inputs(*_choose(text, main, test, split))
    if not os.path.isfile(text):
        raise DataError(f"DATA {text} does not exist; pass a data file (.npz, .npy, .csv, .h5), "
                        "a folder of IDX files or a dataset name")
    from .data.files import read_arrays

    x, y, test, _ = read_arrays(text, n_features=_flat_width(model) or 0)
    return Inputs(*_choose(text, (x, y), test, split))


def _labelled(inputs: Inputs, data) -> Inputs:
    if inputs.y is None:
        raise DataError(f"DATA {data} has no labels or targets (y) to evaluate against; add "
                        "them (an .npz array y, a CSV label column), or use nnx predict")
    return inputs


def _cell(value) -> str:
    return f"{value:.7g}" if isinstance(value, (float, np.floating)) else str(value)


def predict(model_path, data, *, out=None, device: str = "cpu", split: str = "auto",
            data_dir=None, batch_size: int = 4096) -> tuple[str | None, str]:
    """Predict on ``data``; returns ``(csv text or None, message)``.

    The CSV has a header and one row per example: ``prediction`` (the class name
    or label; the value, or ``prediction_0...`` for several targets), then for a
    classifier ``p_<class>`` per class. With ``out`` it is written there
    (atomically) and None is returned in its place.
    """
    from .trained import probabilities

    model = open_model(model_path, device)
    inputs = read_inputs(model, data, split=split, data_dir=data_dir)
    raw = model.outputs(inputs.x, batch_size)
    answers = model.answers(raw)
    columns = [answers.reshape(answers.shape[0], -1)[:, j]
               for j in range(int(np.prod(answers.shape[1:])))]
    names = (["prediction"] if len(columns) == 1 else
             [f"{'prediction' if model.task else 'output'}_{j}" for j in range(len(columns))])
    if model.task == "classification":
        proba = probabilities(model.loss, raw)
        classes = model.class_names or [str(i) for i in range(proba.shape[1])]
        names += [f"p_{c}" for c in classes]
        columns += [proba[:, j] for j in range(proba.shape[1])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for i in range(inputs.x.shape[0]):
        writer.writerow([_cell(col[i]) for col in columns])
    message = f"predicted {inputs.x.shape[0]} examples ({inputs.what}) with {model_path}"
    if out is None:
        return buf.getvalue(), message
    from .checkpoint import atomic_write

    atomic_write(out, buf.getvalue().encode("utf-8"))
    return None, f"{message}; wrote {out}"


def evaluate(model_path, data, *, device: str = "cpu", split: str = "auto", data_dir=None,
             batch_size: int = 4096) -> list[str]:
    """Loss and accuracy with a confusion matrix, or loss, MAE, RMSE and R², on ``data``."""
    model = open_model(model_path, device)
    inputs = _labelled(read_inputs(model, data, split=split, data_dir=data_dir), data)
    y_model = model.preprocessing.encode_y(inputs.y, where=f"{data}: y")
    from .trained import confusion, output_labels, scores

    out = model.outputs(inputs.x, batch_size)
    result = scores(model, out, y_model)
    lines = [f"{model_path} on {result['n']} examples ({inputs.what})"]
    if model.task == "classification":
        lines.append(f"loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f}")
        matrix = confusion(y_model, output_labels(out), model.n_classes)
        names = model.class_names or [str(i) for i in range(model.n_classes)]
        return lines + _confusion_lines(matrix, names)
    scaled = " on the standardised target" if model.preprocessing.y_scaler is not None else ""
    r2 = "n/a (constant targets)" if result["r2"] is None else f"{result['r2']:.4f}"
    lines.append(f"loss {result['loss']:.4f} ({model.loss.name}{scaled})  mae "
                 f"{result['mae']:.4g}  rmse {result['rmse']:.4g}  r2 {r2}")
    return lines


def _confusion_lines(matrix: np.ndarray, names: list[str]) -> list[str]:
    if len(names) > 20:  # too wide to read: the most frequent mistakes instead
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:10]
        pairs = [np.unravel_index(i, off.shape) for i in order if off.flat[i] > 0]
        return ["most frequent mistakes (true -> predicted: count):"] + [
            f"  {names[t]} -> {names[p]}: {int(off[t, p])}" for t, p in pairs]
    width = max(max(len(n) for n in names), len(str(int(matrix.max(initial=0)))), 4)
    lines = ["confusion matrix (rows: true class, columns: predicted class):",
             " " * (width + 2) + "".join(f" {n:>{width}}" for n in names)]
    for name, row in zip(names, matrix):
        lines.append(f"  {name:>{width}}" + "".join(f" {int(v):>{width}}" for v in row))
    return lines


def summary(model_path) -> list[str]:
    """Layers, output shapes, parameter counts and the preprocessing of a model file."""
    model = open_model(model_path)
    lines = [f"{model_path}: {len(model.layers)} layers, {model.dtype}"]
    model.summary(print_fn=lines.append)
    return lines


def export(model_path, fmt: str, out, *, head: str | None = None) -> str:
    """Write ``model_path`` as ONNX (``head``: None, "softmax" or "sigmoid") or safetensors to
    ``out``, with the preprocessing in the file's metadata; returns what was written."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = open_model(model_path)
    record = model.preprocessing.to_json()
    if fmt == "safetensors":
        from .export import to_safetensors

        to_safetensors(model, out, metadata={"preprocessing": record})
        return f"wrote {out} (safetensors: weights, architecture and preprocessing)"
    import json

    from .checkpoint import atomic_write
    from .export import to_onnx

    proto = to_onnx(model, None, head=head)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "nnx.preprocessing", json.dumps(record)
    atomic_write(out, proto.SerializeToString())
    note = ""
    if model.preprocessing.x_scaler is not None or model.preprocessing.pixel_scale:
        note = ("; the graph takes the network's inputs: scale raw data as the "
                "nnx.preprocessing metadata says first (nnx predict does it for you)")
    return f"wrote {out} (ONNX, head {head or 'none: logits'}){note}"
