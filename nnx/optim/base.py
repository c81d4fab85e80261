"""The Optimizer base class, global-norm clipping and hyperparameter checks.

An optimizer updates every ``params[k]`` of ``model.parameters()`` from
``grads[k]`` and then zeroes ``grads[k]``. Its state (momentum, moments) is
created lazily on the parameters' device with their dtype. Nothing in a step
reads a device value on the host: learning rates and bias corrections are
Python floats, and clipping scales the gradients by a 0-d device array.

Updates go through :mod:`nnx.inplace`: in place on NumPy, CuPy, torch and
array-api-strict, reassigned on libraries whose arrays are immutable. Once a
gradient has been used it serves as scratch space for the update, so most
updates allocate no parameter-sized temporary on NumPy. Where the model's
backend registers ``out=`` functions (``backend.fast``: NumPy, CuPy, torch),
SGD with momentum and Adam use them to fold a copy into the next operation.

Where the model keeps its parameters in one flat buffer (:mod:`nnx.layers.flat`:
NumPy, CuPy, torch), the built-in optimizers update the whole buffer at once: the
same elementwise operations as the per-parameter loop, so bitwise the same values,
in a handful of calls instead of a few per parameter. Their state is flat too;
``opt.state["dense_0.w"]["m"]`` is a view into it, so checkpoints do not change.
"""

from __future__ import annotations

import math
import numbers

from .. import inplace
from ..backends import array_namespace
from ..errors import CheckpointError, ConfigError

__all__ = ["Optimizer", "clip_grad_norm_", "global_norm", "check_lr", "elementwise"]


def elementwise(update):
    """Mark an ``_update`` whose maths is elementwise, so that it may run once on the
    whole flat parameter buffer instead of once per parameter. A subclass that
    overrides ``_update`` with maths that looks at a parameter's shape (per-matrix
    norms) leaves it unmarked and keeps the per-parameter loop."""
    update.elementwise = True
    return update


def check_lr(lr, *, allow_zero: bool = False) -> float:
    """Return ``lr`` as a float, or raise ConfigError saying what to pass."""
    ok = isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(lr)
    if not ok or lr < 0 or (lr == 0 and not allow_zero):
        raise ConfigError(f"learning rate must be a positive finite number, got {lr!r}; "
                          "pass e.g. lr=0.01 for SGD or lr=0.001 for Adam")
    return float(lr)


def check_range(name: str, value, low: float, high: float, *, high_ok: bool = False) -> float:
    """``value`` as a float in ``[low, high)`` (``[low, high]`` with ``high_ok``)."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))
    if not ok or value < low or value > high or (value == high and not high_ok):
        bracket = "]" if high_ok else ")"
        raise ConfigError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {value!r}")
    return float(value)


def _check_nonneg(name: str, value) -> float:
    return check_range(name, value, 0.0, math.inf)


def global_norm(grads) -> object:
    """sqrt of the sum of squares of every array in ``grads``, as a 0-d device array."""
    total = None
    for g in grads:
        xp = array_namespace(g)
        flat = g if g.ndim == 1 else xp.reshape(g, (-1,))
        sq = xp.vecdot(flat, flat)  # a dot product: no parameter-sized temporary
        total = sq if total is None else total + sq
    return xp.sqrt(total)


def clip_grad_norm_(groups, max_norm: float):
    """Scale every gradient by ``min(1, max_norm / (norm + 1e-6))`` (as PyTorch does).

    ``groups`` is ``model.parameters()``: ``[(layer_name, params, grads), ...]``.
    ``norm`` is the global norm over all gradients. The scale stays a 0-d device
    array, so there is no host sync. Returns the norm before clipping.
    """
    grads = [g[k] for _, _, g in groups for k in g]
    if not grads:
        return None
    norm = global_norm(grads)
    xp = array_namespace(norm)
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    for _, _, g in groups:
        for k in g:
            inplace.mul_(g, k, scale)
    return norm


class Optimizer:
    """Base class. Subclasses set ``name`` and ``slots`` and implement ``_update``.

    Parameters
    ----------
    lr : learning rate (positive). ``opt.lr`` is a plain float that schedules
        may change between steps (a scheduled 0 is allowed).
    l2 : L2 penalty coupled to the loss: ``l2 * p`` is added to the gradient
        (this is ``weight_decay`` in PyTorch's SGD, RMSprop and Adam).
    weight_decay : decoupled decay ``p -= lr * weight_decay * p``, applied before
        the update as in PyTorch's AdamW, for every optimizer.
    clip_norm : clip the global gradient norm to this value first (None: off).

    Each step: clip, add ``l2 * p`` to the gradient, decay ``p``, apply the
    optimizer's update, zero the gradient.
    """

    name = "optimizer"
    #: names of the per-parameter state arrays ("m", "v")
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float, *, l2: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        self.lr = check_lr(lr)
        self.l2 = _check_nonneg("l2", l2)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        if clip_norm is not None:
            clip_norm = check_range("clip_norm", clip_norm, 0.0, math.inf)
            if clip_norm == 0:
                raise ConfigError("clip_norm must be positive (or None to disable clipping)")
        self.clip_norm = clip_norm
        self.t = 0
        #: "dense_0.w" -> {"m": array, ...}
        self.state: dict[str, dict] = {}
        self._loaded = False
        self._fast = None
        #: (buffer, {slot: flat array}) of the flat path, rebuilt when either changes
        self._flat = None

    def step(self, model) -> None:
        """Update every parameter of ``model`` from its gradient, then zero the gradients.

        ``model`` has ``parameters() -> [(layer_name, params, grads), ...]`` (a
        ``Sequential``), or is that list itself.
        """
        groups = model.parameters() if hasattr(model, "parameters") else model
        # the backend's out= functions (backends.fast), when the model has a backend
        self._fast = getattr(getattr(model, "backend", None), "fast", None)
        lr = check_lr(self.lr, allow_zero=True)
        if self._loaded:
            self._check_loaded(groups)
        self.t += 1
        buffer = self._flat_buffer(model)
        if buffer is not None:
            self._step_flat(buffer, lr)
            return
        if self.clip_norm is not None:
            clip_grad_norm_(groups, self.clip_norm)
        decay = 1.0 - lr * self.weight_decay
        for layer, params, grads in groups:
            for k in params:
                state = self._slots(f"{layer}.{k}", params[k])
                if self.l2:
                    inplace.add_(grads, k, self.l2 * params[k])
                if self.weight_decay:
                    inplace.mul_(params, k, decay)
                self._update(params, grads, k, state, lr)
                inplace.zero_(grads, k)

    # --- the flat path --------------------------------------------------------------

    def _flat_buffer(self, model):
        """The model's synced :class:`~nnx.layers.flat.ParameterBuffer` when this
        optimizer's update is elementwise and the buffers can be written, else None."""
        if not getattr(type(self)._update, "elementwise", False):
            return None
        buffer = getattr(model, "parameter_buffer", None)
        if buffer is None or not inplace.writeable(buffer.params):
            return None
        return buffer

    def _step_flat(self, buffer, lr: float) -> None:
        """The per-parameter step, each operation applied once to the whole buffer."""
        params, grads = {"all": buffer.params}, {"all": buffer.grads}
        state = self._flat_state(buffer)
        if self.clip_norm is not None:
            clip_grad_norm_([("all", params, grads)], self.clip_norm)
        if self.l2:
            inplace.add_(grads, "all", self.l2 * buffer.params)
        if self.weight_decay:
            inplace.mul_(params, "all", 1.0 - lr * self.weight_decay)
        fast = self._fast_for(buffer.params, buffer.grads)
        if fast is not None and self._fused_update(fast, buffer.params, buffer.grads, state, lr):
            return  # one kernel did the update and zeroed the gradients
        self._update(params, grads, "all", state, lr)
        inplace.zero_(grads, "all")

    def _fused_update(self, fast, p, g, state: dict, lr: float) -> bool:
        """Apply the update and zero ``g`` with the backend's fused kernel for this
        optimizer (``fast.<name>_update``, CuPy), bitwise equal to :meth:`_update`;
        False (nothing done) where there is none. Subclasses that have one override it."""
        return False

    def _flat_state(self, buffer) -> dict:
        """``{slot: flat array}`` laid out like ``buffer``; ``self.state`` holds views of it.

        Rebuilt from ``self.state`` (copied in) whenever the buffer changed or an
        entry of ``self.state`` is no longer the view (a loaded checkpoint, a restored
        snapshot): what ``self.state`` says is always what the next step uses.
        """
        if self._flat is not None and self._flat[0] is buffer and self._flat_intact():
            return self._flat[1]
        xp = array_namespace(buffer.params)
        flats, views = {}, {}
        for slot in self.slots:
            flats[slot] = xp.zeros_like(buffer.params)
            views[slot] = buffer.views(flats[slot])
            for name, view in zip(buffer.names, views[slot]):
                old = self.state.get(name, {}).get(slot)
                if old is not None:
                    view[...] = old
        state = dict(self.state)
        for i, name in enumerate(buffer.names):
            state[name] = {slot: views[slot][i] for slot in self.slots}
        self.state = state
        self._flat = (buffer, flats, [(name, slot, views[slot][i]) for slot in self.slots
                                      for i, name in enumerate(buffer.names)])
        return flats

    def __getstate__(self) -> dict:
        # a copy's state arrays are its own: it builds its flat state again
        return {**self.__dict__, "_flat": None}

    def _flat_intact(self) -> bool:
        state = self.state
        for name, slot, view in self._flat[2]:
            entry = state.get(name)
            if entry is None or entry.get(slot) is not view:
                return False
        return True

    def _update(self, params: dict, grads: dict, k: str, state: dict, lr: float) -> None:
        """Apply the update to ``params[k]``; ``grads[k]`` may be used as scratch."""
        raise NotImplementedError

    def _fast_for(self, *arrays):
        """The backend's ``out=`` functions when every array can be written, else None.

        They compute the same operations as the standard path (bitwise equal
        results) with fewer temporaries and passes over memory.
        """
        fast = self._fast
        if fast is None or not all(inplace.writeable(a) for a in arrays):
            return None
        return fast

    def _slots(self, name: str, p) -> dict:
        state = self.state.get(name)
        if state is None:
            xp = array_namespace(p)
            state = self.state[name] = {s: xp.zeros_like(p) for s in self.slots}
        return state

    def config(self) -> dict:
        """JSON-serialisable hyperparameters (for the run directory)."""
        return {"name": self.name, "lr": self.lr, "l2": self.l2,
                "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}

    def state_dict(self, backend) -> dict:
        """Host copies of the state: ``{"name", "t", "lr", "dense_0.w/m": ndarray, ...}``."""
        out = {"name": self.name, "t": self.t, "lr": float(self.lr)}
        for pname, slots in self.state.items():
            for slot, arr in slots.items():
                # to_numpy may share memory with the live array (NumPy, torch CPU)
                out[f"{pname}/{slot}"] = backend.to_numpy(arr).copy()
        return out

    def load_state_dict(self, state: dict, backend) -> None:
        """Restore :meth:`state_dict` output onto ``backend``; the next step resumes exactly.

        Scalars may be Python values or 0-d host arrays (as read from ``.npz``).
        Shapes and dtypes are checked against the model at the next step.
        """
        name = str(state.get("name", self.name))
        if name != self.name:
            raise CheckpointError(f"optimizer state is for {name!r}, not {self.name!r}; "
                                  f"use the optimizer the checkpoint was trained with")
        try:
            t, lr = int(state["t"]), float(state["lr"])
        except KeyError as exc:
            raise CheckpointError(f"optimizer state has no {exc.args[0]!r} entry") from None
        slots: dict[str, dict] = {}
        for key, value in state.items():
            if "/" not in key:
                continue
            pname, slot = key.rsplit("/", 1)
            if slot not in self.slots:
                raise CheckpointError(f"optimizer state entry {key!r} is not used by "
                                      f"{self.name} (it keeps {list(self.slots) or 'nothing'})")
            slots.setdefault(pname, {})[slot] = backend.asarray(value, str(value.dtype))
        self.t, self.lr, self.state, self._loaded = t, lr, slots, True

    def _check_loaded(self, groups) -> None:
        names = set()
        for layer, params, _ in groups:
            for k, p in params.items():
                name = f"{layer}.{k}"
                names.add(name)
                if not self.slots:
                    continue
                state = self.state.get(name, {})
                for slot in self.slots:
                    s = state.get(slot)
                    if s is None:
                        raise CheckpointError(f"optimizer state has no {name}/{slot}; the "
                                              "checkpoint is for a different model")
                    if tuple(s.shape) != tuple(p.shape) or s.dtype != p.dtype:
                        raise CheckpointError(
                            f"optimizer state {name}/{slot} is {tuple(s.shape)} {s.dtype}, "
                            f"the parameter is {tuple(p.shape)} {p.dtype}")
        extra = sorted(set(self.state) - names)
        if extra:
            raise CheckpointError(f"optimizer state has entries for parameters the model does "
                                  f"not have: {', '.join(extra)}")
        self._loaded = False

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"
