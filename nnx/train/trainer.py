"""The Trainer: one forward, one backward and one update per step, metrics on the device.

The dataset is moved to the device once per ``fit``. Each epoch uploads one
shuffled index vector; each step gathers its batch with ``xp.take``. Loss and
accuracy are summed as 0-d device arrays from the step's own forward pass and
read by the host only at logging points (epoch end, progress-bar refresh).
"""

from __future__ import annotations

import math
import time
import warnings

from array_api_compat import array_namespace

import backends

from ..errors import ConfigError, DataError, NonFiniteError
from ..losses import get_loss
from ..optim import Optimizer, get_optimizer
from .callbacks import Callback, StepState, TerminateOnNonFinite
from .data import split_validation, to_device_xy
from .history import History

__all__ = ["Trainer"]


class Trainer:
    """Train ``model`` with ``loss`` and ``optimizer`` on a device.

    Parameters
    ----------
    model : a :class:`~nnx.layers.Sequential` (initialised on ``device`` here if it
        has no parameters yet, from ``seed``: identical weights on every backend).
    loss : loss name or object (``"cross_entropy"``, ``"bce"``, ``"mse"``).
    optimizer : name or :class:`~nnx.optim.Optimizer`; ``lr`` sets its learning rate.
    device : device string or Backend (see :func:`backends.get`); default: the
        model's backend, else ``"cpu"``.
    seed : seeds initial weights, shuffles, splits and dropout.
    schedule : optional learning-rate schedule ``step -> lr``.
    on_nonfinite : ``"raise"`` (stop with NonFiniteError) or ``"skip"`` the step.
    """

    def __init__(self, model, loss="cross_entropy", optimizer="adam", *, lr=None, device=None,
                 seed: int = 0, dtype: str = "float32", callbacks=(), schedule=None,
                 on_nonfinite: str = "raise") -> None:
        self.loss = get_loss(loss)
        if isinstance(optimizer, Optimizer):
            if lr is not None:
                optimizer.lr = lr
            self.optimizer = optimizer
        else:
            self.optimizer = get_optimizer(optimizer, lr=lr)
        if device is None:
            device = model.backend or "cpu"
        self.backend = backends.get(device)
        self.seed, self.dtype = int(seed), dtype
        if model.backend is None:
            model.init(self.backend, self.backend.rng(self.seed), dtype)
        elif model.backend is not self.backend:
            weights = model.get_weights()
            model.init(self.backend, self.backend.rng(self.seed), dtype)
            model.set_weights(weights)
        self.model = model
        self.dtype = model.dtype
        self.rng = self.backend.rng([self.seed, 1])  # shuffles; weights used [seed]
        self.callbacks = list(callbacks)
        self.schedule = schedule
        TerminateOnNonFinite(on_nonfinite)  # validates the name
        self.on_nonfinite = on_nonfinite
        self.history = History()
        self.step = 0
        self.stop_training = False
        self.interrupted_at: dict | None = None  # set when request_interrupt() stopped a step
        self._interrupt = False
        self._resume_point: dict | None = None
        self.validation_data = None
        self.x_train = self.y_train = None
        self.epochs = self.batch_size = self.n_train = self.steps_per_epoch = 0

    # --- training -------------------------------------------------------------

    def fit(self, x, y, epochs: int = 10, batch_size=128, *, validation_data=None,
            validation_split: float = 0.0, callbacks=(), shuffle: bool = True,
            initial_epoch: int = 0, resume=None) -> History:
        """Train for ``epochs`` epochs; returns the :class:`History`.

        ``x`` is ``(n, n_in)``; ``y`` is integer labels ``(n,)``/one-hot ``(n, C)``
        for classification or targets ``(n, k)`` for regression. ``batch_size``
        is a number or ``"full"`` (one step per epoch). ``resume`` is a checkpoint
        path: weights, optimizer, RNG, history and epoch continue from it.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
        if validation_data is not None and validation_split:
            raise ConfigError("give validation_data or validation_split, not both")
        if not 0.0 <= validation_split < 1.0:
            raise ConfigError(f"validation_split must be in [0, 1), got {validation_split}")
        if validation_split:
            x, y, validation_data = split_validation(x, y, validation_split, self.loss.task,
                                                     self.backend.rng([self.seed, 2]))
        xd, yd = to_device_xy(self, x, y, "training data")
        val = None
        if validation_data is not None:
            val = to_device_xy(self, *validation_data, "validation data")
        self.x_train, self.y_train, self.validation_data = x, y, validation_data
        n = xd.shape[0]
        self.batch_size = self._batch_size(batch_size, n)
        self.n_train, self.epochs = n, epochs
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        if resume is not None:
            from ..checkpoint import load_checkpoint, restore

            initial_epoch = restore(self, load_checkpoint(resume), resume)
        all_cbs = self.callbacks + list(callbacks)
        self.stop_training = self._interrupt = False
        self.interrupted_at = None
        for cb in all_cbs:
            cb.on_train_begin(self)
        try:
            for epoch in range(initial_epoch, epochs):
                logs = self._epoch(epoch, xd, yd, val, all_cbs, shuffle)
                if logs is None:  # interrupted inside the epoch: see interrupted_at
                    break
                self.history.append(epoch, logs)
                for cb in all_cbs:
                    cb.on_epoch_end(self, epoch, logs)
                if self.stop_training:
                    break
        finally:
            for cb in all_cbs:
                cb.on_train_end(self)
        return self.history

    def request_interrupt(self) -> None:
        """Stop after the step in progress (safe to call from a signal handler).

        ``fit`` then returns with ``interrupted_at`` describing where it stopped;
        a checkpoint saved now resumes exactly at the next step.
        """
        self._interrupt = True

    def _batch_size(self, batch_size, n) -> int:
        if batch_size in ("full", None):
            return n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise ConfigError(f"batch size must be a positive integer or 'full', "
                              f"got {batch_size!r}")
        if batch_size <= 0:
            raise ConfigError(f"batch size must be a positive integer or 'full', got "
                              f"{batch_size}")
        if batch_size > n:
            warnings.warn(f"batch size {batch_size} is larger than the {n} training examples; "
                          "using full-batch training (one step per epoch)", stacklevel=3)
            return n
        return batch_size

    def _epoch(self, epoch, xd, yd, val, cbs, shuffle) -> dict:
        xp, backend, loss, model, opt = (self.backend.xp, self.backend, self.loss, self.model,
                                         self.optimizer)
        t0 = time.perf_counter()
        for cb in cbs:
            cb.on_epoch_begin(self, epoch)
        n, bs = self.n_train, self.batch_size
        full = bs >= n
        # the shuffle state before this epoch's draw: an interrupted epoch redraws it on resume
        epoch_rng = self.rng.bit_generator.state
        if shuffle and not full:
            order = backend.asarray(self.rng.permutation(n), "int64")
        else:
            order = None
        classify = self.loss.task == "classification"
        zero = xp.zeros((), dtype=backend.dtype(self.dtype), device=backend.device)
        self._loss_sum, self._seen, metric_sum = zero, 0, zero
        start = 0
        if self._resume_point is not None:  # continue an epoch interrupted mid-way
            rp, self._resume_point = self._resume_point, None
            start, self._seen = rp["batch"], rp["seen"]
            self._loss_sum = zero + rp["loss_sum"]
            metric_sum = zero + rp["metric_sum"]
        first_bad = xp.full((), -1, dtype=xp.int64, device=backend.device)
        skip = self.on_nonfinite == "skip"
        for b in range(start, self.steps_per_epoch):
            lo, hi = b * bs, min((b + 1) * bs, n)  # strict rejects out-of-range slice ends
            if full:
                xb, yb = xd, yd
            elif order is None:
                xb, yb = xd[lo:hi, ...], yd[lo:hi, ...]
            else:
                idx = order[lo:hi]
                xb, yb = xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0)
            m = xb.shape[0]
            out, backward = model.forward(xb, train=True)
            value, dout = loss(out, yb)
            state = StepState(self.step, epoch, b, xb, yb, out, value)
            backward(dout, need_dx=False)
            ok = xp.isfinite(value)
            if skip:
                _drop_nonfinite(model, ok)
            for cb in cbs:
                cb.on_backward_end(self, state)
            if self.schedule is not None:
                opt.lr = float(self.schedule(self.step))
            opt.step(model)
            # metrics from this same forward pass, kept on the device
            self._loss_sum = self._loss_sum + (xp.where(ok, value, 0.0) if skip else value) * m
            metric_sum = metric_sum + _batch_metric(xp, out, yb, classify)
            first_bad = xp.where(ok | (first_bad >= 0), first_bad, self.step)
            self._seen += m
            for cb in cbs:
                cb.on_step_end(self, state)
            self.step += 1
            if self._interrupt and b + 1 < self.steps_per_epoch:
                self.interrupted_at = {"epoch": epoch, "batch": b + 1, "seen": self._seen,
                                       "loss_sum": float(self._loss_sum),
                                       "metric_sum": float(metric_sum), "epoch_rng": epoch_rng}
                return None
            if self.stop_training:
                break
        loss_value = float(self._loss_sum) / self._seen  # logging point: one read per epoch
        if not math.isfinite(loss_value) and not skip:
            self._raise_nonfinite(int(first_bad))
        logs = {"loss": loss_value,
                ("accuracy" if classify else "mae"): float(metric_sum) / self._seen}
        if val is not None:
            v = self._evaluate_device(*val)
            logs.update({f"val_{k}": v[k] for k in v})
        logs["lr"] = float(opt.lr)
        logs["time"] = time.perf_counter() - t0
        if self._interrupt:  # the interrupted step was the epoch's last: stop after it
            self.stop_training = True
        return logs

    def running_loss(self) -> float:
        """Mean training loss so far in this epoch (reads the device: call rarely)."""
        return float(self._loss_sum) / max(self._seen, 1)

    def _raise_nonfinite(self, step: int) -> None:
        layer = None
        for la in self.model.layers:
            for group in (la.params, la.grads):
                for k, v in group.items():
                    if not bool(self.backend.xp.all(self.backend.xp.isfinite(v))):
                        layer = layer or f"{la.name}.{k}"
        where = f" first seen in {layer}" if layer else ""
        raise NonFiniteError(
            f"the loss became NaN or infinite at step {step}{where}. Likely cause: the "
            f"learning rate ({self.optimizer.lr:g}) is too high, or inputs are unscaled; "
            "lower --lr, add --clip-norm 1.0, or resume from the last checkpoint",
            step=step, layer=layer)

    # --- inference ------------------------------------------------------------

    def _outputs(self, x, batch_size: int = 4096):
        xd = x if _on_device(self, x) else self.backend.asarray(_host_x(x), self.dtype)
        xp = self.backend.xp
        n = xd.shape[0]
        outs = [self.model.forward(xd[i:min(i + batch_size, n), ...], train=False)[0]
                for i in range(0, n, batch_size)]
        return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)

    def _evaluate_device(self, xd, yd, batch_size: int = 4096) -> dict:
        xp = self.backend.xp
        n = xd.shape[0]
        classify = self.loss.task == "classification"
        total = metric = 0.0
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            out = self.model.forward(xd[i:j, ...], train=False)[0]
            yb = yd[i:j, ...]
            value, _ = self.loss(out, yb)
            total = total + value * out.shape[0]
            metric = metric + _batch_metric(xp, out, yb, classify)
        key = "accuracy" if classify else "mae"
        return {"loss": float(total) / n, key: float(metric) / n}

    def evaluate(self, x, y, batch_size: int = 4096) -> dict:
        """Mean loss and accuracy (classification) or MAE (regression) on ``(x, y)``."""
        return self._evaluate_device(*to_device_xy(self, x, y, "evaluation data"), batch_size)

    def predict_proba(self, x):
        """Class probabilities ``(n, C)`` as a host NumPy array."""
        return self.backend.to_numpy(self.loss.predict_proba(self._outputs(x)))

    def predict(self, x):
        """Class labels ``(n,)`` for classification, outputs ``(n, k)`` for regression (host)."""
        out = self._outputs(x)
        if self.loss.task != "classification":
            return self.backend.to_numpy(out)
        xp = self.backend.xp
        if out.shape[1] == 1:
            return self.backend.to_numpy(xp.astype(out[:, 0] > 0, xp.int64))
        return self.backend.to_numpy(xp.argmax(out, axis=1))


def _batch_metric(xp, out, y, classify):
    """Correct predictions (classification) or summed mean-absolute error, on the device."""
    if classify:
        if out.shape[1] == 1:
            pred = xp.astype(out[:, 0] > 0, y.dtype)
            truth = y if y.ndim == 1 else xp.astype(y[:, 0] > 0.5, y.dtype)
        else:
            pred = xp.argmax(out, axis=1)
            truth = y if y.ndim == 1 else xp.argmax(y, axis=1)
            pred = xp.astype(pred, truth.dtype)
        return xp.sum(xp.astype(pred == truth, out.dtype))
    target = y if y.ndim == 2 else y[:, None]
    return xp.sum(xp.mean(xp.abs(out - target), axis=1))


def _drop_nonfinite(model, ok) -> None:
    """Zero every gradient when the step's loss is not finite (no host read)."""
    for _, _, grads in model.parameters():
        for k, g in grads.items():
            grads[k] = array_namespace(g).where(ok, g, 0.0)


def _on_device(trainer, x) -> bool:
    try:
        return array_namespace(x) is trainer.backend.xp and trainer.backend.name != "numpy"
    except TypeError:
        return False


def _host_x(x):
    if getattr(x, "ndim", 2) != 2:
        raise DataError(f"x must be 2-D (examples, features), got shape {getattr(x, 'shape', '?')}")
    return x


__all__ += ["Callback"]
