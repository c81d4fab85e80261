"""The Trainer: one forward, one backward and one update per step, metrics on the device.

The dataset is checked and cast on the host, then moved to the device once per
``fit``. Each epoch uploads one shuffled index vector (drawn from the host
generator seeded by the run's seed, so every backend sees the same shuffles);
each step gathers its batch with ``xp.take``. Loss and metrics are summed as
0-d device arrays from the step's own forward pass and read by the host only
at logging points: the end of an epoch, and a progress-bar refresh.
"""

from __future__ import annotations

import math
import time
import warnings

from array_api_compat import array_namespace

from .. import backends
from ..data.prepare import split_validation
from ..errors import ConfigError, NonFiniteError
from ..layers.images import check_data_shape
from ..losses import get_loss
from ..optim import Optimizer, get_optimizer
from .callbacks import Callback, StepState, TerminateOnNonFinite
from .device_data import to_device_xy
from .history import History
from .metrics import abs_error_sum, correct_count, labels_of, sq_error_sum
from .nonfinite import LOWER_LR, SkipGuard, Snapshot, first_nonfinite_param, replay

__all__ = ["Trainer"]

#: larger than any step number: "no non-finite step yet"
_NO_STEP = 2**62


def _hooked(callbacks, name: str) -> list:
    """Bound ``name`` methods of the callbacks that override it (the base one is a no-op)."""
    base = getattr(Callback, name)
    return [getattr(cb, name) for cb in callbacks if getattr(type(cb), name, base) is not base]


class Trainer:
    """Train ``model`` with ``loss`` and ``optimizer`` on a device.

    Parameters
    ----------
    model : a :class:`~nnx.layers.Sequential`; initialised on ``device`` here if it
        has no parameters yet (from ``seed``: the same weights on every backend),
        moved there if it lives on another backend.
    loss : loss name or object (``"cross_entropy"``, ``"bce"``, ``"mse"``).
    optimizer : name or :class:`~nnx.optim.Optimizer`; ``lr`` sets its learning rate.
    device : device string or Backend (see :func:`backends.get`); default: the
        model's backend, else ``"cpu"``.
    seed : seeds initial weights, shuffles and the validation split.
    dtype : float dtype of the parameters and data (``"float32"``).
    callbacks : callbacks used by every ``fit`` (before those given to ``fit``).
    schedule : optional learning-rate schedule ``step -> lr``, applied before each step.
    on_nonfinite : ``"raise"`` (stop with :class:`~nnx.errors.NonFiniteError` naming the
        step, the layer and the likely cause, found by replaying the epoch from a
        device snapshot taken at its start; the model is then left as it was just
        before the failing step) or ``"skip"`` (steps with a non-finite loss leave
        the parameters and optimizer state unchanged; counted in ``logs["skipped"]``).

    Attributes
    ----------
    model, backend, optimizer, loss, history, step (global step count),
    stop_training (a callback sets it to end ``fit`` after the current step),
    x_train, y_train, validation_data (host arrays of the last ``fit``),
    n_train, batch_size, steps_per_epoch, epochs.
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
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        if model.backend is None:
            model.init(self.backend, self.backend.rng(self.seed), dtype)
        elif model.backend is not self.backend:
            weights = model.get_weights()
            model.init(self.backend, self.backend.rng(self.seed), model.dtype)
            model.set_weights(weights)
        self.model = model
        self.dtype = model.dtype
        self.rng = self.backend.rng([self.seed, 1])  # shuffles; weights use [seed]
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
        self._callback_states: dict | None = None
        self.active_callbacks: list = []
        self.validation_data = None
        self.x_train = self.y_train = None
        self.epochs = self.batch_size = self.n_train = self.steps_per_epoch = 0
        self._epoch_state: dict | None = None

    # --- training -------------------------------------------------------------

    def fit(self, x, y, epochs: int = 10, batch_size=128, *, validation_data=None,
            validation_split: float = 0.0, callbacks=(), shuffle: bool = True,
            initial_epoch: int = 0, resume=None) -> History:
        """Train until epoch ``epochs`` (counting from 0 or ``initial_epoch``); returns the History.

        ``x`` is ``(n, n_in)``; ``y`` is integer labels ``(n,)`` or one-hot
        ``(n, C)`` for classification, targets ``(n, k)`` or ``(n,)`` for
        regression. ``batch_size`` is a positive number (the last, smaller batch
        of an epoch is kept and weighted by its size) or ``"full"`` (one step per
        epoch). Validation uses ``validation_data=(x_val, y_val)`` or holds out
        ``validation_split`` of ``(x, y)`` (stratified for classification).

        ``resume`` is a checkpoint path (see :func:`nnx.checkpoint.save_checkpoint`):
        weights, optimizer state, random generators, callback state, history and
        the position (epoch, and step inside it) continue from it, so on a
        deterministic device the run ends exactly as an uninterrupted one.
        Each ``fit`` starts a new :class:`History` unless it resumes.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
        if validation_data is not None and validation_split:
            raise ConfigError("give validation_data or validation_split, not both")
        if (isinstance(validation_split, bool) or not isinstance(validation_split, (int, float))
                or not 0.0 <= validation_split < 1.0):
            raise ConfigError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                            or len(validation_data) != 2):
            raise ConfigError("validation_data must be a pair (x_val, y_val)")
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
        all_cbs = self.callbacks + list(callbacks)
        self.active_callbacks = all_cbs
        self.history = History()
        if resume is not None:
            from ..checkpoint import load_checkpoint, restore

            initial_epoch = restore(self, load_checkpoint(resume), resume)
        if initial_epoch >= epochs and self._resume_point is None:
            warnings.warn(f"nothing to train: the run is already at epoch {initial_epoch} of "
                          f"{epochs}; pass a larger epochs=", stacklevel=2)
        self.stop_training = self._interrupt = False
        self.interrupted_at = None
        labels = labels_of(yd) if self.loss.task == "classification" else None
        data = (xd, yd, labels)
        val = None if val is None else (*val, labels_of(val[1]) if labels is not None else None)
        hooks = {name: _hooked(all_cbs, name) for name in
                 ("on_train_begin", "on_epoch_begin", "on_backward_end", "on_step_end",
                  "on_train_end")}
        # checkpoints are written after every other callback has seen the epoch
        hooks["on_epoch_end"] = _hooked(
            sorted(all_cbs, key=lambda cb: bool(getattr(cb, "epoch_end_last", False))),
            "on_epoch_end")
        for hook in hooks["on_train_begin"]:
            hook(self)
        try:
            for epoch in range(initial_epoch, epochs):
                logs = self._epoch(epoch, data, val, hooks, shuffle)
                if logs is None:  # interrupted inside the epoch: see interrupted_at
                    break
                self.history.append(epoch, logs)
                for hook in hooks["on_epoch_end"]:
                    hook(self, epoch, logs)
                if self.stop_training:
                    break
        finally:
            self._epoch_state = None
            for hook in hooks["on_train_end"]:
                hook(self)
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

    def _accumulators(self) -> dict:
        """Zeroed running sums for one epoch (0-d device arrays)."""
        b = self.backend
        xp, dev = b.xp, b.device
        zero = xp.zeros((), dtype=b.dtype(self.dtype), device=dev)
        acc = {"loss": zero}
        if self.loss.task == "classification":
            acc["correct"] = xp.zeros((), dtype=xp.int64, device=dev)
        else:
            acc["abs"] = zero
            if self.loss.name != "mse":
                acc["sq"] = zero
        if self.on_nonfinite == "skip":
            acc["skipped"] = xp.zeros((), dtype=xp.int64, device=dev)
            acc["skipped_n"] = xp.zeros((), dtype=xp.int64, device=dev)
        else:
            acc["first_bad"] = xp.full((), _NO_STEP, dtype=xp.int64, device=dev)
        return acc

    def _epoch(self, epoch, data, val, hooks, shuffle) -> dict | None:
        xp, backend, loss, model, opt = (self.backend.xp, self.backend, self.loss, self.model,
                                         self.optimizer)
        t0 = time.perf_counter()
        for hook in hooks["on_epoch_begin"]:
            hook(self, epoch)
        n, bs, steps = self.n_train, self.batch_size, self.steps_per_epoch
        full = bs >= n
        xd, yd, labels = data
        # the generator's state before this epoch's draw: an interrupted epoch redraws it
        epoch_rng = self.rng.bit_generator.state
        order = None
        if shuffle and not full:
            order = backend.asarray(self.rng.permutation(n), "int64")
        acc = self._accumulators()
        start, seen = 0, 0
        if self._resume_point is not None:  # continue an epoch interrupted mid-way
            rp, self._resume_point = self._resume_point, None
            start, seen = int(rp["batch"]), int(rp["seen"])
            for k, v in rp.get("sums", {}).items():
                if k in acc:
                    acc[k] = acc[k] + v
        skip = self.on_nonfinite == "skip"
        guard = SkipGuard(model, opt) if skip else None
        snapshot = None if skip else Snapshot(self, start)
        classify = labels is not None
        same_labels = labels is yd

        def batch_of(b):
            """Device batch ``b``: features, targets and labels (for accuracy)."""
            if full:
                return xd, yd, labels
            lo, hi = b * bs, min((b + 1) * bs, n)  # strict rejects out-of-range slice ends
            if order is None:
                return (xd[lo:hi, ...], yd[lo:hi, ...],
                        labels[lo:hi] if classify and not same_labels else None)
            idx = order[lo:hi]
            xb, yb = xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0)
            return xb, yb, (xp.take(labels, idx, axis=0)
                            if classify and not same_labels else None)

        self._epoch_state = {"acc": acc, "seen": seen, "epoch": epoch, "snapshot": snapshot,
                             "batch_of": lambda b: batch_of(b)[:2]}
        on_backward_end, on_step_end = hooks["on_backward_end"], hooks["on_step_end"]
        want_state = bool(on_backward_end or on_step_end)
        schedule = self.schedule
        mse_is_loss = "sq" not in acc and not classify
        for b in range(start, steps):
            xb, yb, lb = batch_of(b)
            if classify and same_labels:
                lb = yb
            m = xb.shape[0]
            if schedule is not None:
                opt.lr = float(schedule(self.step))
            if guard is not None:
                guard.begin()
            out, backward = model.forward(xb, train=True)
            value, dout = loss(out, yb)
            backward(dout, need_dx=False)
            state = StepState(self.step, epoch, b, xb, yb, out, value) if want_state else None
            for hook in on_backward_end:
                hook(self, state)
            if snapshot is not None:
                snapshot.lrs.append(opt.lr)
            opt.step(model)
            # metrics from this same forward pass, summed on the device
            ok = xp.isfinite(value)
            if classify:
                metric = correct_count(out, lb)
            else:
                metric = abs_error_sum(out, yb)
                sq = None if mse_is_loss else sq_error_sum(out, yb)
            if guard is not None:
                guard.end(ok)
                bad = xp.astype(~ok, xp.int64)
                acc["skipped"] = acc["skipped"] + bad
                acc["skipped_n"] = acc["skipped_n"] + bad * m
                value = xp.where(ok, value, 0.0)
                metric = xp.where(ok, metric, 0)
                if not classify and sq is not None:
                    sq = xp.where(ok, sq, 0.0)
            else:
                acc["first_bad"] = xp.minimum(acc["first_bad"],
                                              xp.where(ok, acc["first_bad"], self.step))
            acc["loss"] = acc["loss"] + value * m
            if classify:
                acc["correct"] = acc["correct"] + metric
            else:
                acc["abs"] = acc["abs"] + metric
                if sq is not None:
                    acc["sq"] = acc["sq"] + sq
            seen += m
            self._epoch_state["seen"] = seen
            for hook in on_step_end:
                hook(self, state)
            self.step += 1
            if self._interrupt and b + 1 < steps:
                self.interrupted_at = {
                    "epoch": epoch, "batch": b + 1, "seen": seen, "epoch_rng": epoch_rng,
                    "sums": {k: self._read(v) for k, v in acc.items() if k != "first_bad"}}
                return None
            if self.stop_training:
                break
        return self._epoch_logs(epoch, acc, seen, val, t0)

    @staticmethod
    def _read(x):
        """A 0-d device array as a Python number (a host read: logging points only)."""
        xp = array_namespace(x)
        return int(x) if xp.isdtype(x.dtype, "integral") else float(x)

    def _epoch_logs(self, epoch, acc, seen, val, t0) -> dict:
        """The epoch's logging point: read the sums once, check them, evaluate validation."""
        loss_sum = self._read(acc["loss"])
        skipped = skipped_n = 0
        if "skipped" in acc:
            skipped, skipped_n = self._read(acc["skipped"]), self._read(acc["skipped_n"])
        elif not math.isfinite(loss_sum):
            self._raise_nonfinite(self._read(acc["first_bad"]))
        count = max(seen - skipped_n, 1)
        logs = {"loss": loss_sum / count if seen > skipped_n else math.nan}
        if "correct" in acc:
            logs["accuracy"] = self._read(acc["correct"]) / count
        else:
            logs["mae"] = self._read(acc["abs"]) / count
            logs["mse"] = self._read(acc["sq"]) / count if "sq" in acc else logs["loss"]
        if val is not None:
            v = self._evaluate_device(*val)
            if not math.isfinite(v["loss"]) and "skipped" not in acc:
                # the last update broke the model after its loss was summed
                self._raise_nonfinite(self.step - 1)
            logs.update({f"val_{k}": v[k] for k in v})
        logs["lr"] = float(self.optimizer.lr)
        logs["time"] = time.perf_counter() - t0
        if "skipped" in acc:
            logs["skipped"] = skipped
        if self._interrupt:  # the interrupted step was the epoch's last: stop after it
            self.stop_training = True
        return logs

    def running_loss(self) -> float:
        """Mean training loss so far in this epoch: a logging point (one host read).

        With ``on_nonfinite="raise"`` a non-finite value stops training here with
        a :class:`~nnx.errors.NonFiniteError`. Call it every N steps at most.
        """
        st = self._epoch_state
        if st is None:
            return math.nan
        acc = st["acc"]
        total = self._read(acc["loss"])
        if "first_bad" in acc and not math.isfinite(total):
            self._raise_nonfinite(self._read(acc["first_bad"]))
        seen = st["seen"] - (self._read(acc["skipped_n"]) if "skipped_n" in acc else 0)
        return total / seen if seen > 0 else math.nan

    def _raise_nonfinite(self, step: int) -> None:
        """Find where the first NaN/inf appeared (replaying the epoch) and raise.

        ``step`` is the first step whose loss was not finite, or ``_NO_STEP`` when
        every loss was finite but their sum overflowed.
        """
        st = self._epoch_state or {}
        snapshot, epoch = st.get("snapshot"), st.get("epoch")
        last = self.step - 1 if step == _NO_STEP else step
        blame = None
        if snapshot is not None and snapshot.step <= last:
            blame = replay(self, snapshot, last, st["batch_of"], self.steps_per_epoch)
        lr = self.optimizer.lr
        if blame is not None:
            first, layer, what, cause = blame.step, blame.layer, blame.what, blame.cause
            if step not in (_NO_STEP, first):
                what += f"; the loss was non-finite from step {step}"
        else:
            first = last
            bad = first_nonfinite_param(self.model)
            layer = bad.split(".")[0] if bad else None
            if step == _NO_STEP:
                what = ("every batch loss was finite but they were so large that their sum "
                        "overflowed")
            else:
                what = "the loss became NaN or infinite"
            if bad:
                what += f"; {bad} is now NaN or infinite"
            elif snapshot is not None:
                what += (" (replaying the epoch from its start did not repeat it: the device "
                         "may not be deterministic)")
            cause = (f"the learning rate ({lr:g}) is probably too high, or the inputs are "
                     f"unscaled; {LOWER_LR}, or standardize the inputs (--standardize)")
        where = "" if epoch is None else f" (epoch {epoch + 1})"
        message = (f"training produced NaN or infinity at step {first}{where}: {what}. "
                   f"Likely cause: {cause}. {self._last_good_checkpoint()}")
        raise NonFiniteError(message, step=first, layer=layer)

    def _last_good_checkpoint(self) -> str:
        for cb in reversed(self.active_callbacks):
            last = getattr(cb, "last_saved", None)
            if last:
                path, epoch = last
                return f"The last good checkpoint is {path} (after epoch {epoch})."
        return "No checkpoint was written in this run."

    # --- inference ------------------------------------------------------------

    def _to_device_x(self, x):
        xp = self.backend.xp
        try:
            if array_namespace(x) is xp and self.backend.name != "numpy":
                check_data_shape(self.model, tuple(x.shape), "x")
                return x
        except TypeError:
            pass
        host = backends.get("numpy").xp.asarray(x)
        check_data_shape(self.model, host.shape, "x")
        return self.backend.asarray(host, self.dtype)

    def _outputs(self, x, batch_size: int = 4096):
        xd = self._to_device_x(x)
        n = xd.shape[0]
        outs = [self.model.forward(xd[i:min(i + batch_size, n), ...], train=False)[0]
                for i in range(0, n, batch_size)]
        return outs[0] if len(outs) == 1 else self.backend.xp.concat(outs, axis=0)

    def _evaluate_device(self, xd, yd, labels=None, batch_size: int = 4096) -> dict:
        """Mean loss and metrics over device arrays, in eval mode, in batches."""
        xp = self.backend.xp
        n = xd.shape[0]
        classify = self.loss.task == "classification"
        if classify and labels is None:
            labels = labels_of(yd)
        zero = xp.zeros((), dtype=self.backend.dtype(self.dtype), device=self.backend.device)
        total, metric, sq = zero, (xp.zeros((), dtype=xp.int64, device=self.backend.device)
                                   if classify else zero), zero
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            out = self.model.forward(xd[i:j, ...], train=False)[0]
            yb = yd[i:j, ...]
            value, _ = self.loss(out, yb)
            total = total + value * (j - i)
            if classify:
                metric = metric + correct_count(out, labels[i:j])
            else:
                metric = metric + abs_error_sum(out, yb)
                if self.loss.name != "mse":
                    sq = sq + sq_error_sum(out, yb)
        result = {"loss": self._read(total) / n}
        if classify:
            result["accuracy"] = self._read(metric) / n
        else:
            result["mae"] = self._read(metric) / n
            result["mse"] = self._read(sq) / n if self.loss.name != "mse" else result["loss"]
        return result

    def evaluate(self, x, y, batch_size: int = 4096) -> dict:
        """Mean loss and accuracy (classification) or MAE and MSE (regression) on ``(x, y)``.

        Runs in eval mode (no dropout, BatchNorm running statistics) in batches of
        ``batch_size``; returns host floats.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        xd, yd = to_device_xy(self, x, y, "evaluation data")
        return self._evaluate_device(xd, yd, batch_size=batch_size)

    def predict_proba(self, x, batch_size: int = 4096):
        """Class probabilities ``(n, C)`` as a host NumPy array (eval mode)."""
        return self.backend.to_numpy(self.loss.predict_proba(self._outputs(x, batch_size)))

    def predict(self, x, batch_size: int = 4096):
        """Class labels ``(n,)`` for classification, outputs ``(n, k)`` for regression (host)."""
        out = self._outputs(x, batch_size)
        if self.loss.task != "classification":
            return self.backend.to_numpy(out)
        xp = self.backend.xp
        if out.shape[1] == 1:
            return self.backend.to_numpy(xp.astype(out[:, 0] > 0, xp.int64))
        return self.backend.to_numpy(xp.argmax(out, axis=1))
