"""Models and checkpoints on disk: ``.npz`` read with ``allow_pickle=False``.

A file holds the architecture and metadata as a JSON document (stored as a
uint8 array named ``__meta__``) and every array under a prefixed name:
``param/dense_0.w``, ``opt/dense_0.w/m``. Writes are atomic: a temporary file
in the same directory is written, flushed, fsync-ed and renamed over the
target, so a crash or ``kill -9`` at any moment leaves the previous file intact.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile

import numpy as np

from .errors import CheckpointError

FORMAT = "nnx-model"
VERSION = 1

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "atomic_write",
           "model_is_finite"]


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-directory temp file + fsync + rename)."""
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


def _unpack(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no model or checkpoint at {path}; check the path")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError,
            json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupted ({type(exc).__name__}); it cannot be loaded. "
            "Use an earlier checkpoint or retrain") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nnx model or checkpoint")
    return meta, arrays


def model_is_finite(model) -> bool:
    """True when every parameter and buffer of ``model`` is finite (reads the host copy)."""
    return all(np.isfinite(v).all() for v in model.get_weights().values())


def _model_meta(model) -> dict:
    return {"format": FORMAT, "version": VERSION, "architecture": model.config(),
            "dtype": model.dtype}


def save(model, path) -> None:
    """Save architecture and parameters to ``path`` (``.npz``), atomically."""
    arrays = {f"param/{k}": v for k, v in model.get_weights().items()}
    atomic_write(path, _pack({**_model_meta(model), "kind": "model"}, arrays))


def _check_same_architecture(model, arch, path) -> None:
    mine = model.config()["layers"]
    theirs = arch.get("layers", [])
    if len(mine) != len(theirs):
        raise CheckpointError(f"{path} holds a model with {len(theirs)} layers, this one has "
                              f"{len(mine)}; use the same --hidden/--activation settings or "
                              "start a new run")
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            raise CheckpointError(f"{path}: layer {i} differs ({b['type']} {b['config']} in "
                                  f"the file, {a['type']} {a['config']} here); use the same "
                                  "architecture or start a new run")


def load(path, device="cpu", dtype: str | None = None):
    """Load a model saved by :func:`save` (or the model inside a checkpoint) onto ``device``."""
    from .layers import build

    meta, arrays = _unpack(path)
    model = build(meta["architecture"])
    model.init(device, 0, dtype or meta.get("dtype", "float32"))
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    _set_weights(model, weights, path)
    return model


def _set_weights(model, weights, path) -> None:
    from .errors import ConfigError

    try:
        model.set_weights(weights)
    except ConfigError as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from None


def save_checkpoint(path, trainer, epoch: int | None = None) -> None:
    """Everything needed to resume ``trainer`` after ``epoch`` completed epochs.

    After an interrupted ``fit`` (``trainer.interrupted_at`` set) the checkpoint
    also records the position inside the epoch, so the resumed run redraws the
    same shuffle and continues at the next step. ``epoch`` defaults to the
    number of epochs in the trainer's history.
    """
    point = trainer.interrupted_at
    if epoch is None:
        epoch = point["epoch"] if point else len(trainer.history)
    model, opt = trainer.model, trainer.optimizer
    arrays = {f"param/{k}": v for k, v in model.get_weights().items()}
    scalars = {}
    for k, v in opt.state_dict(model.backend).items():
        if isinstance(v, np.ndarray):
            arrays[f"opt/{k}"] = v
        else:
            scalars[k] = v
    meta = {**_model_meta(model), "kind": "checkpoint", "epoch": int(epoch),
            "step": int(trainer.step), "optimizer": scalars,
            "rng": trainer.rng.bit_generator.state,
            "device_rngs": {la.name: la.rng.get_state() for la in model.layers
                            if getattr(la, "rng", None) is not None},
            "history": trainer.history.to_dict(), "backend": model.backend.label,
            "seed": trainer.seed}
    if point is not None:
        meta["epoch"] = int(point["epoch"])
        meta["rng"] = point["epoch_rng"]
        meta["resume_point"] = {k: point[k] for k in ("batch", "seen", "loss_sum", "metric_sum")}
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
    """Read a checkpoint: ``{"meta": dict, "params": {...}, "optimizer": {...}}`` (host)."""
    meta, arrays = _unpack(path)
    if meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{path} is a saved model, not a checkpoint; to continue "
                              "training pass the run's checkpoint.npz")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    opt.update(meta.get("optimizer", {}))
    return {"meta": meta, "params": params, "optimizer": opt}


def restore(trainer, ckpt: dict, path="checkpoint") -> int:
    """Put a checkpoint's weights, optimizer, RNG and history into ``trainer``.

    Returns the number of completed epochs.
    """
    from .train.history import History

    meta = ckpt["meta"]
    _check_same_architecture(trainer.model, meta["architecture"], path)
    _set_weights(trainer.model, ckpt["params"], path)
    trainer.optimizer.load_state_dict(ckpt["optimizer"], trainer.model.backend)
    trainer.rng.bit_generator.state = meta["rng"]
    for la in trainer.model.layers:
        state = meta.get("device_rngs", {}).get(la.name)
        if state is not None and getattr(la, "rng", None) is not None:
            la.rng.set_state(state)
    trainer.step = int(meta["step"])
    trainer._resume_point = meta.get("resume_point")
    trainer.history = History(meta.get("history"))
    return int(meta["epoch"])
