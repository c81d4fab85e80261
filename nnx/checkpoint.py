"""Models and checkpoints on disk: ``.npz`` files read with ``allow_pickle=False``.

A file holds the architecture and metadata as a JSON document (stored as a
uint8 array named ``__meta__``) and every array under a prefixed name:
``param/dense_0.w`` (parameters and buffers), ``opt/dense_0.w/m`` (optimizer
state), ``callback/EarlyStopping_0/dense_0.w`` (callback state). Writes are
atomic: a temporary file in the same directory is written, flushed, fsync-ed
and renamed over the target, so a crash at any moment leaves the previous file
intact. A model with NaN or infinite weights is never written
(:class:`NonFiniteWeights`) unless asked for.

A checkpoint is a trainer's ``state_dict()`` on disk: this module packs and
unpacks it and knows nothing of training (the Trainer owns what its state
holds and how it is put back).

    nnx.save(model, "model.npz");  model = nnx.load("model.npz", device="torch")
    save_checkpoint("ckpt.npz", trainer);  trainer.fit(x, y, epochs=20, resume="ckpt.npz")
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .arguments import float_dtype
from .atomic import write_bytes
from .errors import CheckpointError, ConfigError
from .model_file import check_declared, check_stored_values, declared_model, memory_bytes

FORMAT = "nnx-model"
VERSION = 1

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "restore", "atomic_write",
           "model_is_finite", "check_architecture", "check_weights", "NonFiniteWeights"]


class NonFiniteWeights(CheckpointError):
    """Refused to write a model holding NaN or infinite values."""


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: :func:`nnx.atomic.write_bytes` (a temporary
    file of its own in the same directory, fsync, rename; never through a link). A failed
    write is a :class:`~nnx.errors.WriteError` naming the file and the reason."""
    write_bytes(path, data)


def _pack(meta: dict, arrays: dict) -> bytes:
    buf = io.BytesIO()
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, __meta__=blob, **arrays)
    return buf.getvalue()


def _damaged(path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged ({why}) and cannot be loaded; it was probably "
                           "truncated or corrupted after it was written. Use an earlier "
                           "checkpoint or the saved model, or retrain")


def _read_arrays(path: str) -> dict:
    """Every array of the ``.npz`` file ``path``, once its entries' sizes are known to fit
    in memory (read from the zip directory, before anything is decompressed)."""
    try:
        with zipfile.ZipFile(path) as z:
            size = sum(info.file_size for info in z.infolist())
        limit = memory_bytes()
        if limit is not None and size > limit:
            raise CheckpointError(f"{path} holds {size / 2**30:,.1f} GiB of arrays, more "
                                  f"than this machine's {limit / 2**30:,.1f} GiB; it is damaged "
                                  "or not meant for this machine, and nothing was read")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except Exception as exc:  # numpy and zipfile raise many types on damaged input
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None


def _check_format(path, meta: dict, arrays: dict) -> None:
    """The metadata's format keys, then the architecture against the stored parameters
    (before any model is allocated from it)."""
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise _damaged(path, f"its format version is {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer nnx (format version "
                              f"{meta['version']}, this one reads {VERSION}); upgrade nnx")
    if "architecture" not in meta:
        raise _damaged(path, "no architecture in the metadata")
    if meta.get("dtype", "float32") not in ("float32", "float64"):
        raise _damaged(path, f"its dtype is {meta['dtype']!r}, not float32 or float64")
    if meta.get("kind", "model") not in ("model", "checkpoint"):
        raise _damaged(path, f"its kind is {meta['kind']!r}")
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    check_declared(declared_model(meta["architecture"], path), weights, path)


def _unpack(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no model or checkpoint at {path}; check the path")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory; pass the .npz file inside it")
    arrays = _read_arrays(path)
    blob = arrays.pop("__meta__", None)
    if blob is None:
        raise CheckpointError(f"{path} is a .npz file but not an nnx model or checkpoint "
                              "(no metadata); save models with nnx.save")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"unreadable metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nnx model or checkpoint")
    _check_format(path, meta, arrays)
    return meta, arrays


def _nonfinite(weights: dict) -> str | None:
    for k, v in weights.items():
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            return k
    return None


def model_is_finite(model) -> bool:
    """True when every parameter and buffer of ``model`` is finite (reads a host copy)."""
    return _nonfinite(model.get_weights()) is None


def _model_meta(model) -> dict:
    return {"format": FORMAT, "version": VERSION, "architecture": model.config(),
            "dtype": model.dtype}


def _with_preprocessing(meta: dict, arrays: dict, preprocessing) -> None:
    """Add ``preprocessing`` (a :class:`~nnx.data.preprocessing.Preprocessing`, or None) to a
    file's metadata and arrays (``prep/x_mean``, ...): how raw data becomes the model's."""
    if preprocessing is None:
        return
    record, prep_arrays = preprocessing.to_meta()
    meta["preprocessing"] = record
    arrays.update({f"prep/{k}": np.asarray(v) for k, v in prep_arrays.items()})


def _preprocessing_of(path, meta: dict, arrays: dict | None):
    """The Preprocessing a file holds (None for a file saved without one); ``arrays`` None:
    a text-only record (:meth:`~nnx.data.preprocessing.Preprocessing.to_json`)."""
    if "preprocessing" not in meta:
        return None
    from .data.preprocessing import Preprocessing

    try:
        if arrays is None:
            return Preprocessing.from_json(meta["preprocessing"])
        return Preprocessing.from_meta(meta["preprocessing"], {
            k[len("prep/"):]: v for k, v in arrays.items() if k.startswith("prep/")})
    except (ValueError, KeyError) as exc:
        raise _damaged(path, f"preprocessing: {exc}") from None


def _finite_weights(weights: dict, path, allow_nonfinite: bool) -> dict:
    bad = None if allow_nonfinite else _nonfinite(weights)
    if bad is not None:
        raise NonFiniteWeights(f"{bad} holds NaN or infinite values, so the model was not "
                               f"written to {path}")
    return weights


def save(model, path, *, allow_nonfinite: bool = False, preprocessing=None) -> None:
    """Save the architecture and parameters of ``model`` to ``path`` (``.npz``), atomically.

    ``preprocessing`` (default: ``model.preprocessing``, which a model from
    :func:`load` or a training run has) is saved with it: the scaling, class
    names, input shape and task that let ``load(path).predict(raw_x)`` answer as
    the run did. Raises :class:`NonFiniteWeights` (a CheckpointError) when a
    parameter holds NaN or infinity, unless ``allow_nonfinite``.
    """
    if getattr(model, "backend", None) is None:
        raise ConfigError("the model has no parameters yet; initialise or train it first")
    weights = _finite_weights(model.get_weights(), path, allow_nonfinite)
    arrays = {f"param/{k}": v for k, v in weights.items()}
    meta = {**_model_meta(model), "kind": "model"}
    _with_preprocessing(meta, arrays, preprocessing if preprocessing is not None
                        else getattr(model, "preprocessing", None))
    atomic_write(path, _pack(_jsonable(meta), arrays))


def _describe(layer: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in layer.get("config", {}).items())
    return f"{layer.get('type', '?')}({args})"


#: layer settings that only choose initial weights: a checkpoint's weights replace them
_INIT_ONLY = ("init", "family")


def _structure(layer: dict) -> tuple:
    config = {k: v for k, v in layer.get("config", {}).items() if k not in _INIT_ONLY}
    return layer.get("type"), config


def check_architecture(model, arch, path) -> None:
    """Raise CheckpointError, naming the first differing layer, unless ``model`` has the
    architecture ``arch`` (a saved ``model.config()``) that ``path`` holds."""
    mine = model.config()["layers"]
    theirs = arch.get("layers", [])
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if _structure(a) != _structure(b):
            name = model.layers[i].name
            raise CheckpointError(f"{path} was saved from a different model: layer {i} "
                                  f"({name}) is {_describe(b)} in the file but {_describe(a)} "
                                  "here; build the same architecture or start a new run")
    if len(mine) != len(theirs):
        raise CheckpointError(f"{path} holds a model with {len(theirs)} layers, this one has "
                              f"{len(mine)}; build the same architecture (same hidden sizes "
                              "and activations) or start a new run")


def check_weights(model, weights: dict, path) -> None:
    """Raise CheckpointError unless ``weights`` (host arrays by ``"dense_0.w"`` name, as
    ``path`` holds them) are exactly the parameters and buffers of ``model``, shapes
    included; the model is not touched."""
    expected = {f"{la.name}.{k}": tuple(v.shape) for la in model.layers
                for group in (la.params, la.state) for k, v in group.items()}
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise CheckpointError(f"{path} has arrays this model does not: {', '.join(extra)}; it "
                              "was saved from a different architecture")
    for key, shape in expected.items():
        if key not in weights:
            raise CheckpointError(f"{path} does not fit this model: weights have no entry "
                                  f"{key!r}")
        if tuple(getattr(weights[key], "shape", ())) != shape:
            raise CheckpointError(f"{path} does not fit this model: {key} has shape "
                                  f"{tuple(getattr(weights[key], 'shape', ()))}, the model "
                                  f"expects {shape}")


def _set_weights(model, weights, path) -> None:
    check_weights(model, weights, path)
    try:
        model.set_weights(weights)
    except ConfigError as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from None


def load(path, device="cpu", dtype: str | None = None, *, allow_nonfinite: bool = False):
    """Load a model saved by :func:`save` (or the model inside a checkpoint) onto ``device``.

    Returns a :class:`~nnx.trained.TrainedModel`: a Sequential whose ``predict``,
    ``predict_proba``, ``evaluate`` and ``summary`` apply the preprocessing saved
    with it. ``device`` is a device string or Backend, so a model trained on one
    backend loads on any other. ``dtype`` (float32 or float64) defaults to the saved
    one. A ``.safetensors`` path is read by :func:`nnx.safetensors_io.load_safetensors`.
    The architecture is checked against the stored arrays before anything is
    allocated; a model holding NaN or infinity is refused (CheckpointError) unless
    ``allow_nonfinite``.
    """
    from .trained import TrainedModel, with_preprocessing

    dtype = None if dtype is None else float_dtype(dtype)
    if os.fspath(path).lower().endswith(".safetensors"):
        from .safetensors_io import load_safetensors, read_safetensors

        model = load_safetensors(path, device, dtype, allow_nonfinite=allow_nonfinite)
        extra = read_safetensors(path)[0].get("nnx")
        return with_preprocessing(model, _preprocessing_of(path, extra if isinstance(
            extra, dict) else {}, None))
    meta, arrays = _unpack(path)  # the architecture fits the arrays: nothing huge follows
    built = declared_model(meta["architecture"], path)
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    check_stored_values(weights, path, allow_nonfinite)
    model = TrainedModel(built.layers, built.input_shape, _preprocessing_of(path, meta, arrays))
    model.init(device, 0, dtype or meta.get("dtype", "float32"))
    _set_weights(model, weights, path)
    return model


def save_checkpoint(path, trainer, epoch: int | None = None, *,
                    allow_nonfinite: bool = False) -> None:
    """Write a trainer's state to ``path`` atomically, so that ``fit(resume=path)`` continues it.

    ``trainer`` is a :class:`~nnx.train.Trainer` (its ``state_dict()`` is written)
    or such a state dict: architecture, parameters and buffers, optimizer
    state, the host shuffle generator's state, the device generators of
    Dropout layers, the global step, the history, the callbacks' state and the
    data shape; after an interrupted ``fit``, also the position inside the
    epoch. ``epoch`` overrides the number of completed epochs recorded, unless
    the state stopped inside an epoch. Raises :class:`NonFiniteWeights` for a
    model with NaN or infinite weights.
    """
    state = trainer.state_dict() if hasattr(trainer, "state_dict") else trainer
    meta = dict(state["meta"])
    if epoch is not None and meta.get("resume_point") is None:
        meta["epoch"] = int(epoch)
    params = _finite_weights(state["params"], path, allow_nonfinite)
    arrays = {f"param/{k}": v for k, v in params.items()}
    scalars = {}
    for k, v in state["optimizer"].items():
        if isinstance(v, np.ndarray):
            arrays[f"opt/{k}"] = v
        else:
            scalars[k] = v
    callbacks = {}
    for key, cb_state in (state.get("callbacks") or {}).items():
        cb_state = dict(cb_state)
        for name, arr in (cb_state.pop("arrays", None) or {}).items():
            arrays[f"callback/{key}/{name}"] = np.asarray(arr)
        callbacks[key] = cb_state
    meta.update(format=FORMAT, version=VERSION, kind="checkpoint", optimizer=scalars,
                callbacks=callbacks)
    _with_preprocessing(meta, arrays, getattr(getattr(trainer, "model", None), "preprocessing",
                                              None))
    atomic_write(path, _pack(_jsonable(meta), arrays))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def load_checkpoint(path) -> dict:
    """Read a checkpoint into host objects: the trainer state that was saved.

    Returns ``{"meta": dict, "params": {name: ndarray}, "optimizer": state_dict,
    "callbacks": {key: state}}``, which ``Trainer.load_state_dict`` (or
    ``fit(resume=...)``) puts back into a trainer.
    """
    meta, arrays = _unpack(path)
    if meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{path} is a saved model, not a checkpoint; to continue "
                              "training pass the run's checkpoint.npz")
    for key in ("epoch", "step", "rng", "optimizer"):
        if key not in meta:
            raise _damaged(path, f"no {key!r} in the metadata")
    for key in ("optimizer", "callbacks"):
        if not isinstance(meta.get(key, {}), dict):
            raise _damaged(path, f"{key!r} in the metadata is not a table")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    opt.update(meta["optimizer"])
    return {"meta": meta, "params": params, "optimizer": opt,
            "callbacks": _callback_states(meta, arrays)}


def _callback_states(meta: dict, arrays: dict) -> dict:
    """``{key: state}``: the JSON part of each callback's state with its arrays put back."""
    callbacks = {k: dict(v) if isinstance(v, dict) else v
                 for k, v in meta.get("callbacks", {}).items()}
    for k, v in arrays.items():
        if k.startswith("callback/") and "/" in k[len("callback/"):]:
            key, name = k[len("callback/"):].split("/", 1)
            if isinstance(callbacks.setdefault(key, {}), dict):
                callbacks[key].setdefault("arrays", {})[name] = v
    return callbacks


def restore(trainer, ckpt: dict, path="checkpoint") -> int:
    """Put a checkpoint (from :func:`load_checkpoint`) into ``trainer``; returns the number
    of completed epochs. The same as ``trainer.load_state_dict(ckpt, source=path)``."""
    trainer.load_state_dict(ckpt, source=path)
    return int(ckpt["meta"]["epoch"])
