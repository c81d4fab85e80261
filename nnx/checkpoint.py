"""Models and checkpoints on disk: ``.npz`` files read with ``allow_pickle=False``.

A file holds the architecture and metadata as a JSON document (stored as a
uint8 array named ``__meta__``) and every array under a prefixed name:
``param/dense_0.w`` (parameters and buffers), ``opt/dense_0.w/m`` (optimizer
state), ``callback/EarlyStopping_0/dense_0.w`` (callback state). Writes are
atomic: a temporary file in the same directory is written, flushed, fsync-ed
and renamed over the target, so a crash at any moment leaves the previous file
intact. A model with NaN or infinite weights is never written
(:class:`NonFiniteWeights`) unless asked for.

    nnx.save(model, "model.npz");  model = nnx.load("model.npz", device="torch")
    save_checkpoint("ckpt.npz", trainer);  trainer.fit(x, y, epochs=20, resume="ckpt.npz")
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings

import numpy as np

from .errors import CheckpointError, ConfigError

FORMAT = "nnx-model"
VERSION = 1

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "restore", "atomic_write",
           "model_is_finite", "NonFiniteWeights"]


class NonFiniteWeights(CheckpointError):
    """Refused to write a model holding NaN or infinite values."""


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-directory temp file, fsync, rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        delay = os.environ.get("NNX_TEST_SLOW_WRITE")  # lets tests kill us mid-write
        if delay:
            time.sleep(float(delay))
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}; check that the "
                              "directory exists and is writable") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _pack(meta: dict, arrays: dict) -> bytes:
    buf = io.BytesIO()
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, __meta__=blob, **arrays)
    return buf.getvalue()


def _damaged(path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged ({why}) and cannot be loaded; it was probably "
                           "truncated or corrupted after it was written. Use an earlier "
                           "checkpoint or the saved model, or retrain")


def _unpack(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no model or checkpoint at {path}; check the path")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory; pass the .npz file inside it")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # numpy and zipfile raise many types on damaged input
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None
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
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer nnx (format version "
                              f"{meta['version']}, this one reads {VERSION}); upgrade nnx")
    if "architecture" not in meta:
        raise _damaged(path, "no architecture in the metadata")
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


def _weights(model, path, allow_nonfinite: bool) -> dict:
    weights = model.get_weights()
    bad = None if allow_nonfinite else _nonfinite(weights)
    if bad is not None:
        raise NonFiniteWeights(f"{bad} holds NaN or infinite values, so the model was not "
                               f"written to {path}")
    return weights


def save(model, path, *, allow_nonfinite: bool = False) -> None:
    """Save the architecture and parameters of ``model`` to ``path`` (``.npz``), atomically.

    Raises :class:`NonFiniteWeights` (a CheckpointError) when a parameter holds
    NaN or infinity, unless ``allow_nonfinite``.
    """
    if getattr(model, "backend", None) is None:
        raise ConfigError("the model has no parameters yet; initialise or train it first")
    weights = _weights(model, path, allow_nonfinite)
    arrays = {f"param/{k}": v for k, v in weights.items()}
    atomic_write(path, _pack({**_model_meta(model), "kind": "model"}, arrays))


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


def _set_weights(model, weights, path) -> None:
    expected = {f"{la.name}.{k}" for la in model.layers for group in (la.params, la.state)
                for k in group}
    extra = sorted(set(weights) - expected)
    if extra:
        raise CheckpointError(f"{path} has arrays this model does not: {', '.join(extra)}; it "
                              "was saved from a different architecture")
    try:
        model.set_weights(weights)
    except ConfigError as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from None


def load(path, device="cpu", dtype: str | None = None):
    """Load a model saved by :func:`save` (or the model inside a checkpoint) onto ``device``.

    ``device`` is a device string or Backend, so a model trained on one backend
    loads on any other. ``dtype`` defaults to the saved one. A ``.safetensors``
    path is read by :func:`nnx.export.load_safetensors`.
    """
    from .layers import build

    if os.fspath(path).lower().endswith(".safetensors"):
        from .export.safetensors_file import load_safetensors

        return load_safetensors(path, device, dtype)
    meta, arrays = _unpack(path)
    try:
        model = build(meta["architecture"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the saved architecture ({exc}); was it "
                              "saved with a custom layer that is not registered here? Call "
                              "nnx.register_layer(cls) first") from None
    model.init(device, 0, dtype or meta.get("dtype", "float32"))
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    _set_weights(model, weights, path)
    return model


def save_checkpoint(path, trainer, epoch: int | None = None, *,
                    allow_nonfinite: bool = False) -> None:
    """Write everything needed to resume ``trainer`` after ``epoch`` completed epochs.

    Holds the architecture, parameters and buffers, optimizer state, the host
    shuffle generator's state, the device generators of Dropout layers, the
    global step, the history, the state of the callbacks in use (early stopping
    counters, best values) and the data shape. After an interrupted ``fit``
    (``trainer.interrupted_at`` set) it also records the position inside the
    epoch, so the resumed run redraws the same shuffle and continues at the next
    step. ``epoch`` defaults to the number of epochs in the trainer's history.
    Raises :class:`NonFiniteWeights` for a model with NaN or infinite weights.
    """
    point = trainer.interrupted_at
    if epoch is None:
        epoch = point["epoch"] if point else len(trainer.history)
    model, opt = trainer.model, trainer.optimizer
    arrays = {f"param/{k}": v for k, v in _weights(model, path, allow_nonfinite).items()}
    scalars = {}
    for k, v in opt.state_dict(model.backend).items():
        if isinstance(v, np.ndarray):
            arrays[f"opt/{k}"] = v
        else:
            scalars[k] = v
    callbacks = {}
    for key, cb in _keyed(trainer.active_callbacks):
        state = cb.state_dict()
        if state is None:
            continue
        state = dict(state)
        for name, arr in (state.pop("arrays", None) or {}).items():
            arrays[f"callback/{key}/{name}"] = np.asarray(arr)
        callbacks[key] = state
    meta = {**_model_meta(model), "kind": "checkpoint", "epoch": int(epoch),
            "step": int(trainer.step), "optimizer": scalars,
            "rng": trainer.rng.bit_generator.state,
            "device_rngs": {la.name: la.rng.get_state() for la in model.layers
                            if getattr(la, "rng", None) is not None},
            "history": trainer.history.to_dict(), "callbacks": callbacks,
            "backend": model.backend.label, "seed": trainer.seed,
            "n_train": int(trainer.n_train), "batch_size": int(trainer.batch_size)}
    if point is not None:
        meta["epoch"] = int(point["epoch"])
        meta["rng"] = point["epoch_rng"]
        meta["resume_point"] = {k: point[k] for k in ("batch", "seen", "sums")}
    atomic_write(path, _pack(_jsonable(meta), arrays))


def _keyed(callbacks):
    """``("EarlyStopping_0", cb)``: callbacks named by class and rank within the class."""
    seen: dict[str, int] = {}
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, -1) + 1
        yield f"{name}_{seen[name]}", cb


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
    """Read a checkpoint into host objects.

    Returns ``{"meta": dict, "params": {name: ndarray}, "optimizer": state_dict,
    "callbacks": {key: state}}``; :func:`restore` puts it into a trainer.
    """
    meta, arrays = _unpack(path)
    if meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{path} is a saved model, not a checkpoint; to continue "
                              "training pass the run's checkpoint.npz")
    for key in ("epoch", "step", "rng", "optimizer"):
        if key not in meta:
            raise _damaged(path, f"no {key!r} in the metadata")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    opt.update(meta.get("optimizer", {}))
    callbacks = {k: dict(v) for k, v in meta.get("callbacks", {}).items()}
    for k, v in arrays.items():
        if k.startswith("callback/"):
            key, name = k[len("callback/"):].split("/", 1)
            callbacks.setdefault(key, {}).setdefault("arrays", {})[name] = v
    return {"meta": meta, "params": params, "optimizer": opt, "callbacks": callbacks}


def restore(trainer, ckpt: dict, path="checkpoint") -> int:
    """Put a checkpoint's weights, optimizer, generators, callbacks and history into ``trainer``.

    Call after the trainer knows its data (``fit`` does this for ``resume=``).
    Returns the number of completed epochs.
    """
    from .train.history import History

    meta, model = ckpt["meta"], trainer.model
    check_architecture(model, meta["architecture"], path)
    point = meta.get("resume_point")
    same_data = (meta.get("n_train") in (None, trainer.n_train)
                 and meta.get("batch_size") in (None, trainer.batch_size))
    if point is not None and not same_data:
        raise CheckpointError(
            f"{path} stopped inside an epoch of {meta['n_train']} examples in batches of "
            f"{meta['batch_size']}; resume it with the same data and batch size (this run has "
            f"{trainer.n_train} and {trainer.batch_size})")
    if not same_data:
        warnings.warn(f"{path} was trained on {meta['n_train']} examples in batches of "
                      f"{meta['batch_size']}, this run has {trainer.n_train} and "
                      f"{trainer.batch_size}: it continues, but will not match an "
                      "uninterrupted run", stacklevel=3)
    _set_weights(model, ckpt["params"], path)
    opt_state = {k: (v.astype(model.dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                     else v) for k, v in ckpt["optimizer"].items()}
    trainer.optimizer.load_state_dict(opt_state, model.backend)
    trainer.rng.bit_generator.state = meta["rng"]
    for la in model.layers:
        state = meta.get("device_rngs", {}).get(la.name)
        if state is not None and getattr(la, "rng", None) is not None:
            la.rng.set_state(state)
    states = ckpt.get("callbacks", {})
    for key, cb in _keyed(trainer.active_callbacks):
        if key in states:
            cb.load_state_dict(states[key])
    trainer.step = int(meta["step"])
    trainer._resume_point = point
    trainer.history = History(meta.get("history"))
    return int(meta["epoch"])
