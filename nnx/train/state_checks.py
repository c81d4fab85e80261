"""Every check of a trainer state before a resume changes anything.

:func:`check_state` is what ``Trainer.load_state_dict`` runs first and what
``Trainer.check_state_dict`` runs alone: the metadata's types (each key of
:mod:`nnx.train.state` against its rule), the architecture, the data the run
continues on (its size and, when the state holds one, its fingerprint), the
weights (names, shapes, float dtypes, finite values), the generators, the
optimizer state (names, counters, every slot's shape) and the callbacks'
states (each loaded into a copy of its callback). Any failure is a
:class:`~nnx.errors.CheckpointError` naming ``source``, and nothing has changed.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import NamedTuple

from ..checkpoint import check_architecture, check_weights
from ..data.fingerprint import describe, is_fingerprint, same_data
from ..errors import CheckpointError, NnxError

__all__ = ["DataInfo", "check_state", "callback_keys"]


def callback_keys(callbacks):
    """``("EarlyStopping_0", cb)``: callbacks named by class and rank within the class."""
    seen: dict[str, int] = {}
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, -1) + 1
        yield f"{name}_{seen[name]}", cb


class DataInfo(NamedTuple):
    """The data a resumed run continues on: the training size after the validation split,
    the batch size and steps of an epoch, and its fingerprint (a function: computed only
    when the state holds one to compare with)."""

    n_train: int
    batch_size: int
    steps_per_epoch: int
    fingerprint: object  # () -> dict, or None


def _damaged(source, key, value, expected: str) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(f"{source} is damaged: its {key!r} is {shown}, not {expected}; "
                           "use an earlier checkpoint or start a new run")


def _count(value, minimum: int = 0) -> bool:
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and value >= minimum)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _history(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, list)
        and all(x is None or _number(x) for x in v) for k, v in value.items())


def _architecture(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("layers"), list) and all(
        isinstance(la, dict) and isinstance(la.get("type"), str)
        and isinstance(la.get("config", {}), dict) for la in value["layers"])


def _dict_or_none(value) -> bool:
    return value is None or isinstance(value, dict)


#: the rule of each metadata key a resume reads: (test, what it must be, required)
META_RULES = {
    "architecture": (_architecture, "a model configuration", True),
    "epoch": (_count, "a count", True),
    "step": (_count, "a count", True),
    "rng": (lambda v: isinstance(v, dict), "a dict", True),
    "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'", False),
    "device_rngs": (lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(s, dict) for s in v.values())), "a dict", False),
    "history": (lambda v: v is None or _history(v), "a dict of lists of numbers", False),
    "resume_point": (_dict_or_none, "a dict", False),
    "backend": (lambda v: isinstance(v, str), "a backend name", False),
    "seed": (lambda v: v is None or _count(v), "a whole number >= 0", False),
    "n_train": (_count, "a count of examples", False),
    "batch_size": (_count, "a batch size", False),
    "world_size": (lambda v: _count(v, 1), "a number of ranks", False),
    "rank_device_rngs": (lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
                         "a list of dicts", False),
    "data": (lambda v: v is None or is_fingerprint(v), "a data fingerprint", False),
}


def check_meta(meta, source) -> None:
    """Types of the metadata a resume uses (:data:`META_RULES`), before anything is changed."""
    if not isinstance(meta, dict):
        raise _damaged(source, "meta", type(meta).__name__, "a dict")
    for key, (test, expected, required) in META_RULES.items():
        if key not in meta:
            if required:
                raise CheckpointError(f"{source} is damaged: its metadata has no {key!r}; use "
                                      "an earlier checkpoint or start a new run")
            continue
        if not test(meta[key]):
            raise _damaged(source, key, meta[key], expected)
    history = meta.get("history") or {}
    epochs = history.get("epoch", [])
    if any(len(v) > len(epochs) for v in history.values()):
        raise _damaged(source, "history", history, "lists of one value per epoch")
    if meta.get("resume_point") is not None:
        _check_point(meta["resume_point"], source)


def _check_point(point: dict, source) -> None:
    for key in ("batch", "seen"):
        if not _count(point.get(key)):
            raise _damaged(source, f"resume_point.{key}", point.get(key), "a count")
    sums = point.get("sums", {})
    if not isinstance(sums, dict) or not all(_number(v) for v in sums.values()):
        raise _damaged(source, "resume_point.sums", sums, "a dict of numbers")


def _other_data(saved: dict, fp: dict, source) -> CheckpointError:
    return CheckpointError(
        f"{source} was trained on other data ({describe(saved)}, {saved['digest']}) than this "
        f"run's ({describe(fp)}, {fp['digest']}); resume with the run's data, or pass "
        "--force-resume (force_resume=True in Python) to continue on this data, which will "
        "not match an uninterrupted run")


def check_data(meta, source, data: DataInfo | None, force_resume: bool) -> str | None:
    """Refuse to continue on data other than the state's (by fingerprint) unless
    ``force_resume``; a state saved inside an epoch continues only on data of the same size
    in batches of the same size. Returns a warning to give, or None."""
    if data is None:  # outside fit: the data is not known yet
        return None
    saved = meta.get("data")
    other = False
    if saved is not None and data.fingerprint is not None:
        fp = data.fingerprint()
        other = not same_data(saved, fp)
        if other and not force_resume:
            raise _other_data(saved, fp, source)
    point = meta.get("resume_point")
    n, size = meta.get("n_train"), meta.get("batch_size")
    if n in (None, data.n_train) and size in (None, data.batch_size):
        if point is not None and point["batch"] >= data.steps_per_epoch:
            raise _damaged(source, "resume_point.batch", point["batch"],
                           f"a batch of the {data.steps_per_epoch} of an epoch")
        return f"{source} was trained on other data: it continues as asked, but will not " \
               "match an uninterrupted run" if other else None
    if point is not None:
        raise CheckpointError(
            f"{source} stopped inside an epoch of {n} examples in batches of {size}; resume "
            f"it with the same data and batch size (this run has {data.n_train} and "
            f"{data.batch_size})")
    return (f"{source} was trained on {n} examples in batches of {size}, this run has "
            f"{data.n_train} and {data.batch_size}: it continues, but will not match an "
            "uninterrupted run")


def _check_params(model, params, source) -> None:
    if not isinstance(params, dict):
        raise _damaged(source, "params", type(params).__name__, "a dict of arrays")
    check_weights(model, params, source)
    for key, value in params.items():
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind != "f":
            raise CheckpointError(f"{source} is damaged: the weights {key} are of dtype "
                                  f"{getattr(value, 'dtype', type(value).__name__)}, not "
                                  "floats; use an earlier checkpoint or start a new run")
        if not bool(_finite(value)):
            raise CheckpointError(f"{source} holds NaN or infinite weights in {key}; a run "
                                  "cannot continue from them: use an earlier checkpoint or "
                                  "start a new run")


def _finite(value) -> bool:
    from .. import backends

    xp = backends.get("numpy").xp
    return bool(xp.all(xp.isfinite(value)))


def _checked_rng(rng, state, source) -> None:
    """Refuse a generator state that ``rng`` cannot take (tried on a copy)."""
    try:
        copy.deepcopy(rng).bit_generator.state = state
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _damaged(source, "rng", state, f"a generator state ({exc})") from None


def _check_device_rngs(trainer, meta, source) -> list[str]:
    """Try each Dropout generator's saved state (then put the current one back); returns the
    layers whose state came from another backend and cannot be taken (not restored)."""
    rngs, skipped = meta.get("device_rngs") or {}, []
    same_backend = meta.get("backend") in (None, trainer.model.backend.label)
    for la in trainer.model.layers:
        rng = getattr(la, "rng", None)
        if la.name not in rngs or rng is None:
            continue
        before = rng.get_state()
        try:
            rng.set_state(rngs[la.name])
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
            if same_backend:
                raise _damaged(source, f"device_rngs.{la.name}", rngs[la.name],
                               f"a generator state ({exc})") from None
            skipped.append(la.name)
        finally:
            rng.set_state(before)
    return skipped


def check_optimizer(optimizer, model, state, source) -> None:
    """The optimizer state fits ``optimizer`` and ``model``: its name, counters and one
    float array of the parameter's shape per parameter and slot (none before a step)."""
    if not isinstance(state, dict):
        raise _damaged(source, "optimizer", type(state).__name__, "a dict")
    name = state.get("name", optimizer.name)
    if name != optimizer.name:
        raise CheckpointError(f"{source}: optimizer state is for {name!r}, not "
                              f"{optimizer.name!r}; use the optimizer the checkpoint was "
                              "trained with")
    for key, test, expected in (("t", _count, "a count"), ("lr", _rate, "a learning rate")):
        if key not in state:
            raise CheckpointError(f"{source}: optimizer state has no {key!r} entry")
        value = state[key]
        value = value.item() if getattr(value, "shape", None) == () else value
        if not test(value):
            raise _damaged(source, f"optimizer.{key}", value, expected)
    _check_slots(optimizer, model, state, source)


def _rate(value) -> bool:
    return _number(value) and math.isfinite(value) and value >= 0


def _check_slots(optimizer, model, state, source) -> None:
    """Every ``"dense_0.w/m"`` entry: a slot of ``optimizer`` for a parameter of ``model``,
    a float array of the parameter's shape; all of them, or none (before a first step)."""
    shapes = {f"{la.name}.{k}": tuple(v.shape) for la in model.layers
              for k, v in la.params.items()}
    found = set()
    for key, value in state.items():
        if "/" not in key:
            continue
        pname, slot = key.rsplit("/", 1)
        if slot not in optimizer.slots:
            keeps = list(optimizer.slots) or "nothing"
            raise CheckpointError(f"{source}: optimizer state entry {key!r} is not used by "
                                  f"{optimizer.name} (it keeps {keeps})")
        if pname not in shapes:
            raise CheckpointError(f"{source}: optimizer state has entries for parameters the "
                                  f"model does not have: {pname}")
        shape = tuple(getattr(value, "shape", ()))
        if getattr(getattr(value, "dtype", None), "kind", None) != "f" or shape != shapes[pname]:
            raise CheckpointError(
                f"{source} is damaged: optimizer state {key} is {shape} "
                f"{getattr(value, 'dtype', type(value).__name__)}, the parameter is "
                f"{shapes[pname]} floats; use an earlier checkpoint")
        found.add(key)
    wanted = {f"{p}/{s}" for p in shapes for s in optimizer.slots}
    if found and found != wanted:
        raise CheckpointError(f"{source}: optimizer state has no {sorted(wanted - found)[0]}; "
                              "the checkpoint is for a different model")


def _check_callbacks(trainer, callbacks, saved, source) -> None:
    """Load each callback's saved state into a copy of it: a state it cannot take is
    refused here, before the real callbacks change."""
    if not isinstance(saved, dict):
        raise _damaged(source, "callbacks", type(saved).__name__, "a dict")
    for key, cb in callback_keys(callbacks):
        if key not in saved:
            continue
        trial = copy.copy(cb)
        try:
            if not isinstance(saved[key], dict):
                raise TypeError("not a dict")
            trial.load_state_dict(saved[key])
        except NnxError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _damaged(source, f"callbacks.{key}", saved[key],
                           f"a state of {type(cb).__name__} ({type(exc).__name__}: {exc})"
                           ) from None
        weights = getattr(trial, "best_weights", None)
        if isinstance(weights, dict) and weights:
            check_weights(trainer.model, weights, f"{source} (the best weights of {key})")


def check_state(trainer, state, source, *, data: DataInfo | None = None, callbacks=None,
                force_resume: bool = False) -> tuple[dict, str | None, list[str]]:
    """Every check of ``state`` against ``trainer`` (see the module docstring).

    Returns ``(meta, warning or None, layers whose Dropout stream is not restored)``.
    ``callbacks`` are the run's (default: the trainer's last ``fit``'s).
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} is not a trainer state: it needs 'meta', 'params' "
                              "and 'optimizer' entries")
    try:
        meta, params, opt_state = state["meta"], state["params"], state["optimizer"]
    except KeyError:
        raise CheckpointError(f"{source} is not a trainer state: it needs 'meta', 'params' "
                              "and 'optimizer' entries") from None
    check_meta(meta, source)
    model = trainer.model
    check_architecture(model, meta["architecture"], source)
    note = check_data(meta, source, data, force_resume)
    _check_params(model, params, source)
    _checked_rng(trainer.rng, meta["rng"], source)
    skipped = _check_device_rngs(trainer, meta, source)
    check_optimizer(trainer.optimizer, model, opt_state, source)
    _check_callbacks(trainer, trainer.active_callbacks if callbacks is None else callbacks,
                     state.get("callbacks") or {}, source)
    return meta, note, skipped
