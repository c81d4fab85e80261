"""The host-side record of a monitored run: what the detectors and the report read.

The :class:`~nnx.doctor.monitor.Monitor` fills a :class:`Trace` a few times per
epoch from device-side accumulators; :func:`unit_layers` says which layers of a
model it watches. Everything here is NumPy on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..activations import get_activation
from ..layers import ActivationLayer, MixedActivation
from ..layers.images import infer_shapes

#: columns of ``Trace.act`` (one row per sampled step and monitored layer)
ACT_COLUMNS = ("z_mean", "z_std", "a_mean", "a_std", "saturated")


@dataclass
class UnitLayer:
    """A monitored activation layer and the units it transforms.

    Attributes
    ----------
    name : the activation layer (``"activationlayer_1"``).
    owner : the layer whose outputs are these units (``"dense_0"``): the one a
        finding blames, since its weights are what the fix changes.
    activation : the activation spec (``"relu"``; ``"mixed:..."`` for per-unit ones).
    n : number of units.
    can_die : per unit, True when the derivative is exactly 0 for every
        negative input (ReLU): such a unit can die.
    saturates : per unit, True for bounded sigmoid/tanh-like units.
    """

    name: str
    owner: str
    activation: str
    n: int
    can_die: np.ndarray
    saturates: np.ndarray

    @property
    def label(self) -> str:
        return f"{self.owner} ({self.activation})"


_FAMILIES_THAT_SATURATE = ("sigmoid", "tanh")


def _can_die(act) -> bool:
    """True when the derivative is exactly 0 for negative inputs (ReLU-like)."""
    z = np.array([-0.01, -0.5, -1.0, -3.0, -10.0, -100.0])
    try:
        d = np.asarray(act.derivative(z=z, a=act.forward(z)), dtype=np.float64)
    except Exception:  # a custom derivative that only runs on its own library
        return False
    return bool(np.all(d == 0.0))


def _saturates(act) -> bool:
    lo, hi = act.output_range
    return act.family in _FAMILIES_THAT_SATURATE and np.isfinite(lo) and np.isfinite(hi)


def unit_layers(model) -> list[tuple[int, UnitLayer, list]]:
    """``[(index, UnitLayer, per-unit activations), ...]`` for each activation layer."""
    out = []
    owner = None
    for i, layer in enumerate(getattr(model, "layers", ())):
        if isinstance(layer, (ActivationLayer, MixedActivation)):
            if isinstance(layer, ActivationLayer):
                acts = [layer.activation]
                spec = layer.activation.spec
                n = layer.n_out or 0
            else:
                acts = [get_activation(s) for s in layer.per_unit]
                spec = "mixed:" + ",".join(dict.fromkeys(layer.per_unit))
                n = layer.n_out
            out.append((i, spec, acts, n, owner or layer.name, layer))
        elif "w" in layer.params:
            owner = layer.name
    result = []
    for i, spec, acts, n, own, layer in out:
        if isinstance(layer, ActivationLayer):
            n = _width(model, i) or n
            die = np.full(n, _can_die(acts[0]))
            sat = np.full(n, _saturates(acts[0]))
        else:
            die = np.array([_can_die(a) for a in acts])
            sat = np.array([_saturates(a) for a in acts])
        result.append((i, UnitLayer(layer.name, own, spec, n, die, sat), acts))
    return result


def _width(model, index) -> int | None:
    """Number of units entering layer ``index``: the channels of an image model's feature
    maps there, else the size of the nearest sized layer before it."""
    if getattr(model, "input_shape", None) is not None:  # shapes checked when it was built
        shapes = [tuple(model.input_shape), *infer_shapes(model.layers, model.input_shape)]
        return int(shapes[index][-1])
    for layer in reversed(model.layers[:index]):
        if layer.n_out is not None:
            return layer.n_out
    return None


@dataclass
class Window:
    """Per-unit counts over the sampled batches between two host reads.

    ``active[l]`` counts, for monitored layer ``l``, how many sampled rows had
    each unit active (pre-activation > 0); ``saturated[l]`` how many had it
    saturated. ``rows`` is the number of sampled rows (examples).
    """

    first_step: int
    last_step: int
    rows: int
    active: list
    saturated: list


@dataclass
class Trace:
    """Statistics of one training run, on the host.

    Attributes
    ----------
    layers : the monitored activation layers, in forward order.
    params : ``(layer_name, key)`` of every monitored parameter (the weight matrices:
        arrays of two or more dimensions), in forward order.
    loss_steps, loss : the training loss of every step (the batch mean).
    sample_steps : the steps at which statistics were sampled, ``(S,)``.
    lr : the learning rate at each sampled step, ``(S,)``.
    act : ``(S, L, 5)`` activation statistics, columns ``ACT_COLUMNS``
        (``saturated`` is the fraction of unit-examples near a bound; NaN where the
        layer has no saturating units).
    grad_norm, weight_norm, update_norm : ``(S, P)`` L2 norms per parameter of the
        gradient, of the weights before the update, and of the update itself.
    windows : per-unit activity counts, one :class:`Window` per host read.
    epochs : the trainer's epoch logs (host floats).
    meta : facts about the run (loss, optimizer, batch size, classes...).
    """

    layers: list = field(default_factory=list)
    params: list = field(default_factory=list)
    loss_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    act: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, len(ACT_COLUMNS))))
    grad_norm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    weight_norm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    update_norm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    windows: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    # --- filling ---------------------------------------------------------

    def start(self, layers, params) -> None:
        self.layers, self.params = list(layers), list(params)
        n_l, n_p = len(self.layers), len(self.params)
        self.act = np.zeros((0, n_l, len(ACT_COLUMNS)))
        self.grad_norm = np.zeros((0, n_p))
        self.weight_norm = np.zeros((0, n_p))
        self.update_norm = np.zeros((0, n_p))

    def add_losses(self, steps, values) -> None:
        self.loss_steps = np.concatenate([self.loss_steps, np.asarray(steps, dtype=np.int64)])
        self.loss = np.concatenate([self.loss, np.asarray(values, dtype=np.float64)])

    def add_samples(self, steps, lr, act, grad, weight, update) -> None:
        self.sample_steps = np.concatenate([self.sample_steps,
                                            np.asarray(steps, dtype=np.int64)])
        self.lr = np.concatenate([self.lr, np.asarray(lr, dtype=np.float64)])
        self.act = np.concatenate([self.act, act.astype(np.float64)])
        self.grad_norm = np.concatenate([self.grad_norm, grad.astype(np.float64)])
        self.weight_norm = np.concatenate([self.weight_norm, weight.astype(np.float64)])
        self.update_norm = np.concatenate([self.update_norm, update.astype(np.float64)])

    # --- reading ---------------------------------------------------------

    @property
    def n_steps(self) -> int:
        return int(self.loss.shape[0])

    def weight_layers(self) -> list[str]:
        """Names of the layers whose weight matrices are monitored, in forward order."""
        return list(dict.fromkeys(name for name, _ in self.params))

    def recent_windows(self, min_rows: int) -> Window | None:
        """Merge the latest windows until they hold at least ``min_rows`` rows."""
        merged = None
        for w in reversed(self.windows):
            if merged is None:
                merged = Window(w.first_step, w.last_step, w.rows,
                                [_copy(a) for a in w.active], [_copy(s) for s in w.saturated])
            else:
                merged.first_step = w.first_step
                merged.rows += w.rows
                for i in range(len(merged.active)):
                    merged.active[i] = _add(merged.active[i], w.active[i])
                    merged.saturated[i] = _add(merged.saturated[i], w.saturated[i])
            if merged.rows >= min_rows:
                break
        return merged

    def until(self, step: int) -> Trace:
        """A copy holding only what was recorded before ``step``."""
        keep_l = self.loss_steps < step
        keep_s = self.sample_steps < step
        return Trace(
            layers=self.layers, params=self.params, loss_steps=self.loss_steps[keep_l],
            loss=self.loss[keep_l], sample_steps=self.sample_steps[keep_s],
            lr=self.lr[keep_s], act=self.act[keep_s], grad_norm=self.grad_norm[keep_s],
            weight_norm=self.weight_norm[keep_s], update_norm=self.update_norm[keep_s],
            windows=[w for w in self.windows if w.last_step < step],
            epochs=list(self.epochs), meta=dict(self.meta))

    def layer_series(self) -> dict:
        """Per-layer series for the JSON report (plain lists)."""
        out = {"steps": self.sample_steps.tolist(), "lr": self.lr.tolist(), "layers": {},
               "params": {}}
        for i, la in enumerate(self.layers):
            out["layers"][la.name] = {
                "owner": la.owner, "activation": la.activation, "units": la.n,
                **{c: _clean(self.act[:, i, j]) for j, c in enumerate(ACT_COLUMNS)}}
        for j, (layer, key) in enumerate(self.params):
            out["params"][f"{layer}.{key}"] = {
                "grad_norm": _clean(self.grad_norm[:, j]),
                "weight_norm": _clean(self.weight_norm[:, j]),
                "update_norm": _clean(self.update_norm[:, j])}
        return out


def _copy(a):
    return None if a is None else a.copy()


def _add(a, b):
    return None if a is None or b is None else a + b


def _clean(a) -> list:
    """A float list for JSON: NaN/inf become None."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]
