"""Learning-rate range test: an exponential sweep on a copy of the model.

The learning rate grows geometrically from ``start_lr`` to ``end_lr`` over
``steps`` minibatch steps (Smith, "Cyclical Learning Rates", 2017; the fastai
``lr_find``). While it runs, the loss is smoothed with a bias-corrected
exponential moving average and the sweep stops once that exceeds ``diverge``
times its minimum. Afterwards the curve is smoothed again without lag (a
centred moving average).

Rule: the suggested learning rate is the one at the minimum of the smoothed
curve divided by 10 - an order of magnitude below where the loss stops
improving, as Smith and the fastai ``lr_find`` recommend. The steepest-descent
point (largest drop per decade) is reported too; depending on the shape of the
curve it lies anywhere from 50x below the minimum to just under it, which is
why it is not the rule.

The model passed in is never modified: the sweep runs on a rebuilt copy with
the same weights.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..losses import get_loss
from ..plot import save_figure

__all__ = ["lr_find", "LRFinderResult", "clone_model"]

#: smoothing factor of the exponential moving average of the loss
SMOOTHING = 0.9
#: stop when the smoothed loss exceeds this multiple of its minimum
DIVERGE = 4.0
#: read the losses on the host every this many steps (to check for divergence)
READ_EVERY = 20
#: half-width of the centred moving average, as a fraction of the steps run
CENTRED_HALF_WIDTH = 0.025


@dataclass
class LRFinderResult:
    """Outcome of :func:`lr_find`.

    Attributes
    ----------
    lrs, losses, smoothed : the learning rate, raw loss and smoothed loss per step.
    suggestion : the suggested learning rate.
    rule : how ``suggestion`` was chosen (one sentence).
    min_loss_lr : learning rate at the minimum of the smoothed loss.
    steepest_lr : learning rate where the smoothed loss falls fastest (or None).
    stopped_early : True when the sweep stopped because the loss diverged.
    plot : path of the PNG, when one was written.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    rule: str
    min_loss_lr: float
    steepest_lr: float | None
    stopped_early: bool
    optimizer: str = "sgd"
    plot: str | None = None
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        stop = (f", stopped at lr {self.lrs[-1]:.3g} when the loss diverged"
                if self.stopped_early else "")
        return (f"lr range test ({self.optimizer}, {self.lrs.size} steps{stop}): suggested "
                f"lr {self.suggestion:.3g} - {self.rule}")

    def to_dict(self) -> dict:
        return {"suggestion": self.suggestion, "rule": self.rule,
                "min_loss_lr": self.min_loss_lr, "steepest_lr": self.steepest_lr,
                "stopped_early": self.stopped_early, "optimizer": self.optimizer,
                "lrs": self.lrs.tolist(),
                "losses": [float(v) if math.isfinite(v) else None for v in self.losses],
                "smoothed": [float(v) if math.isfinite(v) else None for v in self.smoothed],
                "plot": self.plot}


def clone_model(model):
    """A copy of ``model`` on the same backend with equal parameters and buffers."""
    from ..layers import build

    try:
        clone = build(model.config())
    except ConfigError:  # a custom layer that is not registered: copy the objects
        memo = {id(model.backend): model.backend}
        clone = copy.deepcopy(model, memo)
    clone.init(model.backend, 0, model.dtype)
    for src, dst in zip(model.layers, clone.layers):
        dst._checked = getattr(src, "_checked", False)
    clone.set_weights(model.get_weights())
    return clone


def _device_data(model, loss, x, y):
    backend = model.backend
    if not type(x).__module__.startswith("numpy"):
        x, y = backend.to_numpy(x), backend.to_numpy(y)
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    integer = y.dtype.kind in "iu" and loss.task == "classification"
    return (backend.asarray(x, model.dtype),
            backend.asarray(y, "int64" if integer else model.dtype))


def lr_find(model, loss, x, y, *, optimizer="sgd", start_lr: float = 1e-6,
            end_lr: float = 10.0, steps: int = 200, batch_size: int = 64,
            smoothing: float = SMOOTHING, diverge: float = DIVERGE, seed: int = 0,
            plot: str | None = None, **optimizer_kwargs) -> LRFinderResult:
    """Run the learning-rate range test and suggest a learning rate.

    Parameters
    ----------
    model : an initialised Sequential; left unchanged (the sweep uses a copy).
    loss : loss name or object.
    x : inputs ``(n, n_in)``; y : labels ``(n,)`` or targets ``(n, k)`` (host or device).
    optimizer : optimizer name (``"sgd"``, ``"momentum"``, ``"adam"``...) or a function
        ``lr -> Optimizer``. Extra keyword arguments go to :func:`nnx.get_optimizer`.
    start_lr, end_lr : the sweep's range (exponential).
    steps : number of minibatch steps (a few hundred).
    batch_size : rows per step (drawn at random with ``seed``).
    smoothing : EMA factor of the loss; diverge: stop at this multiple of the minimum.
    plot : path of a PNG of loss vs learning rate (log scale), or None.
    """
    if not (0 < start_lr < end_lr) or steps < 10:
        raise ConfigError("lr_find needs 0 < start_lr < end_lr and steps >= 10, got "
                          f"start_lr={start_lr}, end_lr={end_lr}, steps={steps}")
    if model.backend is None:
        raise ConfigError("lr_find needs an initialised model: call model.init(device, seed)")
    loss = get_loss(loss)
    net = clone_model(model)
    opt, name = _optimizer(optimizer, start_lr, optimizer_kwargs)
    xd, yd = _device_data(net, loss, x, y)
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    ema = _SmoothedLoss(smoothing, diverge)
    stopped = _sweep(net, loss, opt, xd, yd, lrs, min(batch_size, xd.shape[0]),
                     np.random.default_rng(seed), ema)
    k = len(ema.losses)
    losses = np.array(ema.losses)
    result = _suggest(lrs[:k], losses, _centred(losses), stopped, name)
    result.extra["ema"] = ema.smoothed
    if plot:
        result.plot = plot_lr_find(result, plot)
    return result


def _optimizer(optimizer, start_lr: float, kwargs: dict):
    """``(optimizer, name)`` from a name (:func:`nnx.get_optimizer`) or ``lr -> Optimizer``."""
    from ..optim import get_optimizer

    if callable(optimizer) and not isinstance(optimizer, str):
        opt = optimizer(start_lr)
        return opt, type(opt).__name__.lower()
    return get_optimizer(optimizer, lr=start_lr, **kwargs), str(optimizer)


class _SmoothedLoss:
    """The raw losses and their bias-corrected exponential moving average, step by step."""

    def __init__(self, smoothing: float, diverge: float) -> None:
        self.smoothing, self.diverge = smoothing, diverge
        self.losses: list[float] = []
        self.smoothed: list = []
        self.avg, self.best = 0.0, math.inf

    def add(self, v) -> bool:
        """Record loss ``v``; True once the smoothed loss is not finite or exceeds
        ``diverge`` times its minimum (never on the first step)."""
        self.losses.append(float(v))
        k = len(self.losses)
        self.avg = (self.smoothing * self.avg
                    + (1 - self.smoothing) * (v if math.isfinite(v) else math.inf))
        s = self.avg / (1 - self.smoothing ** k)
        self.smoothed.append(s)
        if math.isfinite(s):
            self.best = min(self.best, s)
        return k > 1 and (not math.isfinite(s) or s > self.diverge * self.best)


def _step(net, loss, opt, xb, yb, lr: float):
    """One minibatch step at learning rate ``lr``; returns the loss (a device scalar)."""
    net.zero_grads()
    out, backward = net.forward(xb, train=True)
    value, dout = loss(out, yb)
    backward(dout, need_dx=False)
    opt.lr = float(lr)
    opt.step(net)
    return value


def _sweep(net, loss, opt, xd, yd, lrs, batch: int, rng, ema: _SmoothedLoss) -> bool:
    """One step per learning rate of ``lrs`` on ``batch`` rows drawn with ``rng``, the
    losses fed to ``ema``; returns True when the sweep stopped because the loss diverged.

    The losses are read on the host every READ_EVERY steps, not every step, so that the
    device is not synchronised each step."""
    xp, backend = net.backend.xp, net.backend
    n = xd.shape[0]
    pending = []
    for i, lr in enumerate(lrs):
        idx = backend.asarray(rng.choice(n, batch, replace=False), "int64")
        pending.append(_step(net, loss, opt, xp.take(xd, idx, axis=0),
                             xp.take(yd, idx, axis=0), lr))
        if len(pending) == READ_EVERY or i == lrs.size - 1:
            values = np.asarray(backend.to_numpy(xp.stack(pending)), dtype=np.float64)
            pending = []
            if any(ema.add(v) for v in values):
                return True
    return False


def _centred(losses: np.ndarray) -> np.ndarray:
    """Centred moving average (no lag); NaN/inf losses stay non-finite."""
    h = max(1, int(round(CENTRED_HALF_WIDTH * losses.size)))
    finite = np.isfinite(losses)
    values = np.where(finite, losses, 0.0)
    kernel = np.ones(2 * h + 1)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    return np.where(finite, out, np.inf)


def _suggest(lrs, losses, smoothed, stopped, name) -> LRFinderResult:
    finite = np.isfinite(smoothed)
    if not finite.any():
        raise ConfigError("the loss was not finite at any learning rate of the sweep; lower "
                          "start_lr or check the data")
    i_min = int(np.nanargmin(np.where(finite, smoothed, np.nan)))
    min_lr = float(lrs[i_min])
    steepest = None
    h = max(1, int(round(CENTRED_HALF_WIDTH * lrs.size)))
    if i_min >= 4 * h:
        log_lr = np.log10(lrs[:i_min + 1])
        slope = np.gradient(smoothed[:i_min + 1], log_lr)
        # skip the edges, where the centred average sees a truncated window
        j = h + int(np.argmin(slope[h:i_min + 1 - h]))
        if slope[j] < 0:
            steepest = float(lrs[j])
    suggestion = min_lr / 10
    rule = f"the lr at the minimum of the smoothed loss ({min_lr:.3g}) divided by 10"
    if steepest is not None:
        rule += f"; the loss falls fastest at lr {steepest:.3g}"
    return LRFinderResult(lrs=np.asarray(lrs), losses=losses, smoothed=smoothed,
                          suggestion=suggestion, rule=rule, min_loss_lr=min_lr,
                          steepest_lr=steepest, stopped_early=stopped, optimizer=name)


def plot_lr_find(result: LRFinderResult, path: str) -> str:
    """Loss against learning rate (log x), raw and smoothed, with the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = np.isfinite(result.losses)
    ax.plot(result.lrs[ok], result.losses[ok], color="tab:blue", alpha=0.3, lw=0.8,
            label="loss")
    ok = np.isfinite(result.smoothed)
    ax.plot(result.lrs[ok], result.smoothed[ok], color="tab:blue", lw=1.5, label="smoothed")
    i = int(np.argmin(np.abs(np.log(result.lrs / result.suggestion))))
    ax.scatter([result.suggestion], [result.smoothed[i]], color="red", zorder=3,
               label=f"suggested lr {result.suggestion:.3g}")
    ax.axvline(result.min_loss_lr, color="grey", ls=":", lw=1,
               label=f"minimum at {result.min_loss_lr:.3g}")
    ax.set_xscale("log")
    top = np.nanmax(result.smoothed[ok][: max(1, int(ok.sum()))]) if ok.any() else 1
    lo = np.nanmin(result.smoothed[ok]) if ok.any() else 0
    ax.set_ylim(lo - 0.05 * (top - lo + 1e-12), top + 0.05 * (top - lo + 1e-12))
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss",
           title=f"learning-rate range test ({result.optimizer})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        save_figure(fig, path, dpi=90)  # whole or not at all, never through a link
    finally:
        plt.close(fig)
    return path
