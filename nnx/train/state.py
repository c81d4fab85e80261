"""The Trainer's state as host values: what a checkpoint holds and a resume puts back.

:func:`trainer_state` is ``Trainer.state_dict()`` and :func:`load_trainer_state`
is ``Trainer.load_state_dict()``. The state is a dict of four entries, the
layout :func:`nnx.checkpoint.save_checkpoint` writes and
:func:`nnx.checkpoint.load_checkpoint` returns:

- ``"meta"``: JSON values: ``architecture`` and ``dtype`` of the model,
  ``epoch`` (completed epochs), ``step`` (global steps), ``rng`` (the host
  shuffle generator's state), ``device_rngs`` (Dropout layers' generators),
  ``history``, ``seed``, ``backend``, ``n_train`` and ``batch_size``, ``data``
  (the fingerprint of the data given to ``fit``, :mod:`nnx.data.fingerprint`:
  a resume on other data is refused unless forced) and, when ``fit`` was
  interrupted, ``resume_point`` (``batch``, ``seen`` and the epoch's metric
  ``sums`` so far; ``rng`` is then the state before the epoch's shuffle, so the
  resumed run redraws the same order; batch 0 after an interrupt on an epoch's
  last step);
- ``"params"``: host arrays of every parameter and buffer (``get_weights()``);
- ``"optimizer"``: ``optimizer.state_dict()``;
- ``"callbacks"``: ``{"EarlyStopping_0": state, ...}``, each callback's
  ``state_dict()``, named by class and rank within the class.
"""

from __future__ import annotations

import math
import warnings

from .. import backends
from ..data.fingerprint import fingerprint
from ..data.prepare import split_validation
from .batches import resolve_batch_size
from .state_checks import DataInfo, callback_keys, check_state

__all__ = ["trainer_state", "load_trainer_state", "check_resume_state", "callback_keys",
           "resume_data", "fit_data_fingerprint"]


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
            "batch_size": int(trainer.batch_size), "data": fit_data_fingerprint(trainer),
            **trainer.parallel.checkpoint_meta()}
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


def fit_data_fingerprint(trainer) -> dict | None:
    """The fingerprint of the data given to the trainer's last ``fit`` (computed once per
    ``fit``, when a checkpoint or a resume first needs it), None before any ``fit``."""
    if trainer._fingerprint is None and trainer._fit_data is not None:
        trainer._fingerprint = fingerprint(*trainer._fit_data, trainer.backend)
    return trainer._fingerprint


def resume_data(trainer, x, y, batch_size, validation_split: float = 0.0) -> DataInfo:
    """What ``fit(x, y, batch_size=..., validation_split=...)`` would continue on, found
    without moving anything to the device (for a check before the run starts)."""
    n = len(x)
    if validation_split:
        n = len(split_validation(x, y, validation_split, trainer.loss.task,
                                 trainer.backend.rng([trainer.seed, 2]))[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit gives its own warnings
        size = resolve_batch_size(batch_size, n)
    return DataInfo(n, size, math.ceil(n / size),
                    lambda: fingerprint(x, y, trainer.backend))


def check_resume_state(trainer, state, source, *, x=None, y=None, batch_size=128,
                       validation_split: float = 0.0, callbacks=(),
                       force_resume: bool = False) -> None:
    """``Trainer.check_state_dict``: every check ``fit(x, y, batch_size=...,
    validation_split=..., callbacks=..., resume=state, force_resume=...)`` runs before it
    changes anything (:func:`~nnx.train.state_checks.check_state`), and nothing else; the
    data is checked when ``x`` is given."""
    data = None if x is None else resume_data(trainer, x, y, batch_size, validation_split)
    trainer.parallel.check_resume(state, source)
    check_state(trainer, state, source, data=data,
                callbacks=trainer.callbacks + list(callbacks), force_resume=force_resume)


def _optimizer_state(state: dict, dtype: str) -> dict:
    """Float arrays cast to the model's dtype (a float64 run's state into a float32 run)."""
    xp = backends.get("numpy").xp
    return {k: (xp.astype(v, getattr(xp, dtype)) if hasattr(v, "dtype")
                and xp.isdtype(v.dtype, "real floating") else v) for k, v in state.items()}


def load_trainer_state(trainer, state: dict, source="the state", *,
                       force_resume: bool = False) -> dict:
    """Put ``state`` (from :func:`trainer_state` or a checkpoint) into ``trainer``'s model,
    optimizer, generators and callbacks; return its ``meta`` for the trainer's own counters.

    Everything is checked first (:func:`nnx.train.state_checks.check_state`:
    metadata types, architecture, the data of the ``fit`` in progress, weights,
    generators, optimizer and callback states), so a refused state changes
    nothing. ``source`` names it in errors (a path). Warnings (other data, when
    forced; Dropout streams of another backend) point at the caller of ``fit``.
    """
    data = None
    if trainer.n_train:  # inside fit: the data it continues on is known
        data = DataInfo(trainer.n_train, trainer.batch_size, trainer.steps_per_epoch,
                        lambda: fit_data_fingerprint(trainer))
    meta, note, skipped = check_state(trainer, state, source, data=data,
                                      force_resume=force_resume)
    if note:
        warnings.warn(note, stacklevel=4)
    if skipped:
        warnings.warn(f"{source} was saved on {meta.get('backend')}: the Dropout streams of "
                      f"{', '.join(skipped)} start afresh on {trainer.model.backend.label}",
                      stacklevel=4)
    if trainer._fit_data is None:  # loaded outside fit: a state saved again keeps its data
        trainer._fingerprint = meta.get("data")
    model, params = trainer.model, state["params"]
    trainer.optimizer.load_state_dict(_optimizer_state(state["optimizer"], model.dtype),
                                      model.backend)
    model.set_weights(params)
    trainer.rng.bit_generator.state = meta["rng"]
    rngs = meta.get("device_rngs") or {}
    for la in model.layers:
        if la.name in rngs and la.name not in skipped and getattr(la, "rng", None) is not None:
            la.rng.set_state(rngs[la.name])
    saved = state.get("callbacks") or {}
    for key, cb in callback_keys(trainer.active_callbacks):
        if key in saved:
            cb.load_state_dict(saved[key])
    return meta
