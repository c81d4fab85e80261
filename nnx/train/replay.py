"""Finding where a NaN or infinity began: device snapshots and a checked replay.

With ``on_nonfinite="raise"`` the trainer keeps a :class:`Snapshot` (device
copies) of the model and optimizer at the start of each epoch. When the loss
sum turns out to be non-finite at a logging point, :func:`replay` restores the
snapshot and re-runs the epoch's steps one layer at a time, reading every
intermediate array on the host, until the first NaN or infinity appears: in a
layer's output, in the loss, in a gradient or in an update. Replays are exact on
deterministic devices (CPU); when a replay does not reproduce the failure the
message falls back to the parameters as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from array_api_compat import array_namespace

from .. import inplace

__all__ = ["Snapshot", "Blame", "replay", "first_nonfinite_param", "training_arrays",
           "LOWER_LR"]

#: the usual fix, in library and command-line terms
LOWER_LR = "lower it (lr=, --lr) or clip gradients (clip_norm=1.0, --clip-norm 1.0)"


def _copy(x):
    return array_namespace(x).asarray(x, copy=True)


def _finite(x) -> bool:
    xp = array_namespace(x)
    return bool(xp.all(xp.isfinite(x)))


def _max_abs(x) -> float:
    xp = array_namespace(x)
    return float(xp.max(xp.abs(x))) if x.ndim == 0 or x.shape[0] else 0.0


def _model_arrays(model):
    """``(dict, key)`` of every parameter and buffer of ``model``."""
    return [(group, k) for la in model.layers for group in (la.params, la.state) for k in group]


def _opt_arrays(opt):
    return [(slots, s) for slots in opt.state.values() for s in slots]


def training_arrays(model, optimizer) -> list:
    """``(dict, key)`` of every parameter, buffer and optimizer slot: all a step changes."""
    return _model_arrays(model) + _opt_arrays(optimizer)


class Snapshot:
    """Device copies of everything a training step changes, taken at ``batch`` of an epoch.

    ``lrs`` collects the learning rate of each step taken since, so a replay
    uses the same rates as the run.
    """

    def __init__(self, trainer, batch: int) -> None:
        model, opt = trainer.model, trainer.optimizer
        self.arrays = [_copy(d[k]) for d, k in _model_arrays(model)]
        self.opt_state = {name: {s: _copy(v) for s, v in slots.items()}
                          for name, slots in opt.state.items()}
        self.opt_t = opt.t
        self.rngs = {la.name: la.rng.get_state() for la in model.layers
                     if getattr(la, "rng", None) is not None}
        self.step, self.batch = trainer.step, batch
        self.lrs: list[float] = []

    def restore(self, trainer) -> None:
        model, opt = trainer.model, trainer.optimizer
        for (d, k), saved in zip(_model_arrays(model), self.arrays):
            inplace.copy_(d, k, saved)
        opt.state = {name: {s: _copy(v) for s, v in slots.items()}
                     for name, slots in self.opt_state.items()}
        opt.t = self.opt_t
        for la in model.layers:
            if la.name in self.rngs:
                la.rng.set_state(self.rngs[la.name])
        model.zero_grads()
        trainer.step = self.step


@dataclass
class Blame:
    """Where the first NaN or infinity appeared (``step``, ``layer``), ``what`` and ``cause``."""

    step: int
    layer: str | None
    what: str
    cause: str


def first_nonfinite_param(model) -> str | None:
    """``"dense_1.w"``: the first parameter or buffer (forward order) holding NaN or inf."""
    for la in model.layers:
        for group in (la.params, la.state):
            for k, v in group.items():
                if not _finite(v):
                    return f"{la.name}.{k}"
    return None


def _weights_of(layer) -> str:
    if not layer.params:
        return ""
    big = max(_max_abs(v) for v in layer.params.values())
    return f", largest |parameter| {big:.3g}"


def _forward_blame(step, layer, x, lr) -> Blame:
    """A layer turned finite inputs and parameters into NaN or inf."""
    big_in = _max_abs(x)
    what = (f"the output of {layer.name} became NaN or infinite in the forward pass of step "
            f"{step} (largest |input| {big_in:.3g}{_weights_of(layer)})")
    weights = max((_max_abs(v) for v in layer.params.values()), default=0.0)
    if big_in > 1e4 and big_in >= weights:
        cause = ("its inputs are very large: standardize the features (--standardize) or "
                 "lower the learning rate (--lr)")
    else:
        cause = (f"values grew until they overflowed: the learning rate ({lr:g}) is probably "
                 f"too high for this model; {LOWER_LR}")
    return Blame(step, layer.name, what, cause)


def _loss_blame(model, loss, output, step, lr) -> Blame:
    """The loss turned finite outputs into NaN or inf."""
    last = next((la for la in reversed(model.layers) if la.params), model.layers[-1])
    what = (f"the {loss.name} loss became NaN or infinite at step {step} on finite "
            f"outputs as large as {_max_abs(output):.3g} (from {last.name}{_weights_of(last)})")
    if loss.task == "classification":
        cause = (f"the weights grew until the loss overflowed: the learning rate ({lr:g}) is "
                 f"far too high; {LOWER_LR}")
    else:
        cause = ("the outputs or targets are too large: standardize the regression "
                 f"targets, or the learning rate ({lr:g}) is too high; {LOWER_LR}")
    return Blame(step, last.name, what, cause)


def _checked_gradients(trainer, x, y, step: int, lr: float) -> Blame | None:
    """Forward, loss and backward of one step, one layer at a time, every array checked."""
    model, loss = trainer.model, trainer.loss
    h, backwards = x, []
    for la in model.layers:
        out, backward = la.forward(h, train=True)
        if not _finite(out):
            return _forward_blame(step, la, h, lr)
        h = out
        backwards.append((la, backward))
    value, dy = loss(h, y)
    if not _finite(value) or not _finite(dy):
        return _loss_blame(model, loss, h, step, lr)
    for la, backward in reversed(backwards):
        dy = backward(dy)
        if not (_finite(dy) and all(_finite(g) for g in la.grads.values())):
            model.zero_grads()
            return Blame(step, la.name,
                         f"the gradient in {la.name} became NaN or infinite at step {step} "
                         "while the loss was finite",
                         "exploding gradients, or a derivative that is infinite at these "
                         f"inputs (learning rate {lr:g}); {LOWER_LR}")
    return None


def replay(trainer, snapshot: Snapshot, bad_step: int, batch_of,
           n_batches: int) -> Blame | None:
    """Re-run steps from ``snapshot`` up to ``bad_step``, checking every array on the host.

    ``batch_of(b)`` returns the device batch ``(x, y)`` of batch ``b`` of the
    epoch. The model is left as it was just before the step that produced the
    first non-finite value (or before ``bad_step``); returns None when nothing
    non-finite appears (the device did not repeat the run).
    ``n_batches`` is the number of batches in the epoch.
    """
    model, opt = trainer.model, trainer.optimizer
    bad_step = min(bad_step, snapshot.step + n_batches - snapshot.batch - 1)
    snapshot.restore(trainer)
    bad = first_nonfinite_param(model)
    if bad is not None:
        return Blame(snapshot.step, bad.split(".")[0],
                     f"{bad} was already NaN or infinite before step {snapshot.step}",
                     "the model was given non-finite weights (set or loaded before training); "
                     "re-initialise it or load a good checkpoint")
    for i, b in enumerate(range(snapshot.batch, snapshot.batch + bad_step - snapshot.step + 1)):
        step = trainer.step = snapshot.step + i
        lr = opt.lr = snapshot.lrs[i] if i < len(snapshot.lrs) else opt.lr
        blame = _checked_gradients(trainer, *batch_of(b), step, lr)
        if blame is not None:
            return blame
        if step == bad_step:  # nothing non-finite: the run did not repeat itself
            model.zero_grads()
            return None
        before = Snapshot(trainer, b)
        opt.step(model)
        bad = first_nonfinite_param(model)
        if bad is not None:
            before.restore(trainer)
            return Blame(step, bad.split(".")[0],
                         f"the update at step {step} made {bad} NaN or infinite (its gradient "
                         "was finite)",
                         f"the learning rate ({lr:g}) is far too high; {LOWER_LR}")
    return None
