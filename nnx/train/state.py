"""The Trainer's state as host values: what a checkpoint holds and a resume puts back.

:func:`trainer_state` is ``Trainer.state_dict()`` and :func:`load_trainer_state`
is ``Trainer.load_state_dict()``. The state is a dict of four entries, the
layout :func:`nnx.checkpoint.save_checkpoint` writes and
:func:`nnx.checkpoint.load_checkpoint` returns:

- ``"meta"``: JSON values: ``architecture`` and ``dtype`` of the model,
  ``epoch`` (completed epochs), ``step`` (global steps), ``rng`` (the host
  shuffle generator's state), ``device_rngs`` (Dropout layers' generators),
  ``history``, ``seed``, ``backend``, ``n_train`` and ``batch_size`` and, when
  ``fit`` was interrupted inside an epoch, ``resume_point`` (``batch``, ``seen``
  and the epoch's metric ``sums`` so far; ``rng`` is then the state before the
  epoch's shuffle, so the resumed run redraws the same order);
- ``"params"``: host arrays of every parameter and buffer (``get_weights()``);
- ``"optimizer"``: ``optimizer.state_dict()``;
- ``"callbacks"``: ``{"EarlyStopping_0": state, ...}``, each callback's
  ``state_dict()``, named by class and rank within the class.
"""

from __future__ import annotations

import copy
import warnings

from .. import backends
from ..checkpoint import check_architecture, check_weights
from ..errors import CheckpointError

__all__ = ["trainer_state", "load_trainer_state", "callback_keys"]


def callback_keys(callbacks):
    """``("EarlyStopping_0", cb)``: callbacks named by class and rank within the class."""
    seen: dict[str, int] = {}
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, -1) + 1
        yield f"{name}_{seen[name]}", cb


def trainer_state(trainer, pending: dict | None = None) -> dict:
    """Everything a resumed run needs to continue ``trainer`` exactly (host copies).

    ``pending`` is a resume point loaded but not yet continued by ``fit`` (with
    the ``n_train`` and ``batch_size`` it belongs to): it is kept, so loading a
    state and saving it again gives the same state.
    """
    model, point = trainer.model, trainer.interrupted_at
    meta = {"architecture": model.config(), "dtype": model.dtype,
            "epoch": int(trainer.completed_epochs), "step": int(trainer.step),
            "rng": trainer.rng.bit_generator.state,
            "device_rngs": {la.name: la.rng.get_state() for la in model.layers
                            if getattr(la, "rng", None) is not None},
            "history": trainer.history.to_dict(), "backend": model.backend.label,
            "seed": trainer.seed, "n_train": int(trainer.n_train),
            "batch_size": int(trainer.batch_size), **trainer.parallel.checkpoint_meta()}
    if point is not None:
        meta.update(epoch=int(point["epoch"]), rng=point["epoch_rng"],
                    resume_point={k: point[k] for k in ("batch", "seen", "sums")})
    elif pending is not None:
        meta.update(n_train=pending["n_train"], batch_size=pending["batch_size"],
                    resume_point={k: pending[k] for k in ("batch", "seen", "sums")})
    callbacks = {}
    for key, cb in callback_keys(trainer.active_callbacks):
        state = cb.state_dict()
        if state is not None:
            callbacks[key] = dict(state)
    return {"meta": meta, "params": model.get_weights(),
            "optimizer": trainer.optimizer.state_dict(model.backend), "callbacks": callbacks}


def _damaged(source, key, value, expected: str) -> CheckpointError:
    return CheckpointError(f"{source} is damaged: its {key!r} is {value!r}, not {expected}; "
                           "use an earlier checkpoint or start a new run")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_meta(meta, source) -> None:
    """Types of the metadata a resume uses, before anything is changed."""
    if not isinstance(meta, dict):
        raise _damaged(source, "meta", type(meta).__name__, "a dict")
    for key in ("epoch", "step"):
        if not _count(meta.get(key)):
            raise _damaged(source, key, meta.get(key), "a count")
    for key in ("rng", "device_rngs", "history", "resume_point"):
        value = meta.get(key)
        if not isinstance(value, dict) and (key == "rng" or value is not None):
            raise _damaged(source, key, value, "a dict")
    if not all(isinstance(v, list) for v in (meta.get("history") or {}).values()):
        raise _damaged(source, "history", meta["history"], "a dict of lists")
    if meta.get("resume_point") is not None:
        _check_point(meta["resume_point"], source)


def _check_point(point: dict, source) -> None:
    for key in ("batch", "seen"):
        if not _count(point.get(key)):
            raise _damaged(source, f"resume_point.{key}", point.get(key), "a count")
    sums = point.get("sums", {})
    if not isinstance(sums, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums.values()):
        raise _damaged(source, "resume_point.sums", sums, "a dict of numbers")


def _check_data(trainer, meta, source) -> None:
    """A state saved inside an epoch continues only on data of the same size, in batches of
    the same size; at an epoch boundary other data is allowed, with a warning."""
    if not trainer.n_train:  # outside fit: the data is not known yet
        return
    point = meta.get("resume_point")
    n, size = meta.get("n_train"), meta.get("batch_size")
    if n in (None, trainer.n_train) and size in (None, trainer.batch_size):
        if point is not None and point["batch"] >= trainer.steps_per_epoch:
            raise _damaged(source, "resume_point.batch", point["batch"],
                           f"a batch of the {trainer.steps_per_epoch} of an epoch")
        return
    if point is not None:
        raise CheckpointError(
            f"{source} stopped inside an epoch of {n} examples in batches of {size}; resume "
            f"it with the same data and batch size (this run has {trainer.n_train} and "
            f"{trainer.batch_size})")
    warnings.warn(f"{source} was trained on {n} examples in batches of {size}, this run has "
                  f"{trainer.n_train} and {trainer.batch_size}: it continues, but will not "
                  "match an uninterrupted run", stacklevel=5)


def _checked_rng(rng, state, source) -> None:
    """Refuse a generator state that ``rng`` cannot take (tried on a copy)."""
    try:
        copy.deepcopy(rng).bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise _damaged(source, "rng", state, f"a generator state ({exc})") from None


def _optimizer_state(state: dict, dtype: str) -> dict:
    """Float arrays cast to the model's dtype (a float64 run's state into a float32 run)."""
    xp = backends.get("numpy").xp
    return {k: (xp.astype(v, getattr(xp, dtype)) if hasattr(v, "dtype")
                and xp.isdtype(v.dtype, "real floating") else v) for k, v in state.items()}


def load_trainer_state(trainer, state: dict, source="the state") -> dict:
    """Put ``state`` (from :func:`trainer_state` or a checkpoint) into ``trainer``'s model,
    optimizer, generators and callbacks; return its ``meta`` for the trainer's own counters.

    Everything is checked first — metadata types, architecture, data size for
    a state saved inside an epoch, weights, generator and optimizer state — so
    a refused state changes nothing. ``source`` names it in errors (a path).
    """
    try:
        meta, params, opt_state = state["meta"], state["params"], state["optimizer"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{source} is not a trainer state: it needs 'meta', 'params' "
                              "and 'optimizer' entries") from None
    _check_meta(meta, source)
    model = trainer.model
    check_architecture(model, meta.get("architecture", {}), source)
    _check_data(trainer, meta, source)
    check_weights(model, params, source)
    _checked_rng(trainer.rng, meta["rng"], source)
    # the optimizer checks its own entries before it changes anything
    trainer.optimizer.load_state_dict(_optimizer_state(opt_state, model.dtype), model.backend)
    model.set_weights(params)
    trainer.rng.bit_generator.state = meta["rng"]
    rngs = meta.get("device_rngs") or {}
    for la in model.layers:
        if la.name in rngs and getattr(la, "rng", None) is not None:
            la.rng.set_state(rngs[la.name])
    saved = state.get("callbacks") or {}
    for key, cb in callback_keys(trainer.active_callbacks):
        if key in saved:
            cb.load_state_dict(saved[key])
    return meta
