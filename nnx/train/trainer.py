"""The Trainer: one forward, one backward and one update per step, metrics on the device.

The dataset is checked and cast on the host, then moved to the device once per
``fit``. An epoch reads top to bottom (:meth:`Trainer._epoch`): its batches
(:mod:`nnx.train.batches`: one shuffled index vector drawn from the host
generator seeded by the run's seed, so every backend sees the same shuffles,
and each step gathers its rows with ``xp.take``), its accumulator
(:class:`~nnx.train.metrics.MetricSums`, shared with evaluation) and its
non-finite mode (:mod:`nnx.train.nonfinite`), then its steps, then its
logging point. Loss and metrics are summed as 0-d device arrays from each
step's own forward pass and read by the host only at logging points: the end
of an epoch, and a progress-bar refresh.

Data-parallel training plugs into three places: the epoch's order and
batches (:mod:`nnx.train.batches`), the point in :meth:`Trainer._step`
between the backward pass and the hooks and update that see the gradients,
and the metric sums, which are sums (never means) until the host reads them.
"""

from __future__ import annotations

import math
import time
import warnings

from .. import backends
from ..arguments import check_fit_args, check_seed, float_dtype, whole_number
from ..checkpoint import load_checkpoint
from ..data.prepare import split_validation
from ..distributed import DataParallel, connect, device_for_rank
from ..losses import get_loss
from ..optim import Optimizer, get_optimizer
from .batches import Batches, epoch_order, resolve_batch_size
from .device_data import to_device_xy
from .epoch_run import EpochRun
from .history import History
from .hooks import Hooks, StepState
from .inference import evaluate_device, outputs, predicted_labels
from .loggers import verbose_callbacks
from .metrics import MetricSums, labels_of
from .nonfinite import check_mode, nonfinite_mode
from .state import check_resume_state, load_trainer_state, trainer_state
from .threads import one_thread_for_small_products

__all__ = ["Trainer"]


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
    distributed : ``"off"``, ``"auto"`` (every rank of an ``mpiexec`` job), ``"mpi"``,
        ``"nccl"`` or a Communicator: data-parallel, the batch size is the global batch
        (:mod:`nnx.distributed.parallel`). ``sync_batchnorm``: BatchNorm statistics
        of the global batch rather than of each rank's rows.

    Attributes
    ----------
    model, backend, optimizer, loss, history, step (global step count),
    completed_epochs (epochs finished, counting those of a resumed run),
    stop_training (a callback sets it to end ``fit`` after the current step),
    interrupted_at (where :meth:`request_interrupt` stopped ``fit``, or None),
    x_train, y_train, validation_data (host arrays of the last ``fit``),
    n_train, batch_size, steps_per_epoch, epochs, active_callbacks (those of
    the last ``fit``). :meth:`state_dict` and :meth:`load_state_dict` save and
    restore everything a resumed run needs. ``parallel``: the data-parallel side.
    """

    def __init__(self, model, loss="cross_entropy", optimizer="adam", *, lr=None, device=None,
                 seed: int = 0, dtype: str = "float32", callbacks=(), schedule=None,
                 on_nonfinite: str = "raise", distributed="off",
                 sync_batchnorm: bool = False) -> None:
        self.loss = get_loss(loss)
        if isinstance(optimizer, Optimizer):
            if lr is not None:
                optimizer.lr = lr
            self.optimizer = optimizer
        else:
            self.optimizer = get_optimizer(optimizer, lr=lr)
        if device is None:
            device = model.backend or "cpu"
        self.parallel = DataParallel(connect(distributed, device), sync_batchnorm=sync_batchnorm)
        self.backend = backends.get(device_for_rank(device, self.parallel.comm))
        self.seed, dtype = check_seed(seed), float_dtype(dtype)
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
        self.on_nonfinite = check_mode(on_nonfinite)
        self.history = History()
        self.step = self.completed_epochs = 0
        self.stop_training = False
        self.interrupted_at: dict | None = None  # set when request_interrupt() stopped a step
        self._interrupt = False
        self._resume_point: dict | None = None  # where the next epoch continues (a resume)
        self._fit_data = self._fingerprint = None  # (x, y) of the last fit, its fingerprint
        self._run: EpochRun | None = None  # the epoch in progress
        self.active_callbacks: list = []
        self.validation_data = None
        self.x_train = self.y_train = None
        self.epochs = self.batch_size = self.n_train = self.steps_per_epoch = 0
        self.parallel.prepare(self)  # rank 0's state on every rank

    # --- training -------------------------------------------------------------

    def fit(self, x, y, epochs: int = 10, batch_size=128, *, validation_data=None,
            validation_split: float = 0.0, callbacks=(), shuffle: bool = True,
            initial_epoch: int = 0, resume=None, verbose: int = 0,
            force_resume: bool = False) -> History:
        """Train until epoch ``epochs`` (counting from 0 or ``initial_epoch``); returns the History.

        ``x`` is ``(n, n_in)``; ``y`` is integer labels ``(n,)`` or one-hot
        ``(n, C)`` for classification, targets ``(n, k)`` or ``(n,)`` for
        regression. ``batch_size`` is a positive number (the last, smaller batch
        of an epoch is kept and weighted by its size) or ``"full"`` (one step per
        epoch). Validation uses ``validation_data=(x_val, y_val)`` or holds out
        ``validation_split`` of ``(x, y)`` (stratified for classification).

        ``resume`` is a checkpoint path (see :func:`nnx.checkpoint.save_checkpoint`)
        or a state from :meth:`state_dict`: weights, optimizer state, random
        generators, callback state, history and the position (epoch, and step
        inside it) continue from it, so on a deterministic device the run ends
        exactly as an uninterrupted one. Each ``fit`` starts a new
        :class:`History` unless it resumes. ``verbose``: 1 a progress bar, 2 a line per epoch.
        A state saved on other data (by its fingerprint) is refused unless ``force_resume``.
        """
        epochs = check_fit_args(epochs, validation_data, validation_split)
        self._fit_data, self._fingerprint = (x, y), None
        data, val = self._upload(x, y, epochs, batch_size, validation_data, validation_split)
        self.parallel.check_data(self, self.x_train, self.y_train)
        self.active_callbacks = self.callbacks + list(callbacks) + verbose_callbacks(verbose)
        if resume is not None:  # a refused resume leaves the trainer as it was
            from_file = not isinstance(resume, dict)
            self.load_state_dict(load_checkpoint(resume) if from_file else resume,
                                 source=resume if from_file else "the state to resume",
                                 force_resume=force_resume)
        else:
            self.history, self.completed_epochs = History(), initial_epoch
        if self.completed_epochs >= epochs and self._resume_point is None:
            warnings.warn(f"nothing to train: the run is already at epoch "
                          f"{self.completed_epochs} of {epochs}; pass a larger epochs=",
                          stacklevel=2)
        self.stop_training = self._interrupt = False
        self.interrupted_at = None
        hooks = Hooks(self.parallel.local_callbacks(self.active_callbacks))
        for hook in hooks.on_train_begin:
            hook(self)
        restore_threads = one_thread_for_small_products(self.model, self.backend,
                                                        self.batch_size)
        try:
            for epoch in range(self.completed_epochs, epochs):
                logs = self._epoch(epoch, data, val, hooks, shuffle)
                if logs is None:  # interrupted inside the epoch: see interrupted_at
                    break
                self.history.append(epoch, logs)
                self.completed_epochs = epoch + 1
                for hook in hooks.on_epoch_end:
                    hook(self, epoch, logs)
                if self.parallel.stopping(self._interrupt) and not self.stop_training:  # last step
                    self.interrupted_at = {"epoch": epoch + 1, "batch": 0, "seen": 0, "sums": {},
                                           "epoch_rng": self.rng.bit_generator.state}
                if self.stop_training or self.interrupted_at is not None:
                    break
        finally:
            restore_threads()
            self._run = None
            for hook in hooks.on_train_end:
                hook(self)
        return self.history

    def request_interrupt(self) -> None:
        """Stop after the step in progress (safe to call from a signal handler).

        ``fit`` then returns with ``interrupted_at`` describing where it stopped;
        a checkpoint saved now resumes exactly at the next step.
        """
        self._interrupt = True

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly, as host values.

        ``{"meta": {...}, "params": {...}, "optimizer": {...}, "callbacks": {...}}``
        (described in :mod:`nnx.train.state`): weights, optimizer state, the
        shuffle and Dropout generators, epoch, step, the position inside an
        interrupted epoch, history and the state of the last ``fit``'s callbacks.
        :func:`nnx.save_checkpoint` writes it to a file.
        """
        return trainer_state(self, self._resume_point)

    def load_state_dict(self, state: dict, *, source="the state",
                        force_resume: bool = False) -> None:
        """Restore :meth:`state_dict` output (or :func:`nnx.load_checkpoint`'s).

        Everything is checked before anything changes; a state that does not
        fit (another architecture or optimizer, a damaged file) raises
        :class:`~nnx.errors.CheckpointError` naming ``source``. The state of the
        callbacks goes to ``active_callbacks``, so resume with
        ``fit(resume=state)``, which loads it once the run's callbacks and data
        are known; the next epoch then continues where the state stopped.
        """
        self.parallel.check_resume(state, source)
        meta = load_trainer_state(self, state, source, force_resume=force_resume)
        self.parallel.restore(self, meta)
        self.step, self.completed_epochs = int(meta["step"]), int(meta["epoch"])
        self.history = History(meta.get("history"))
        point = meta.get("resume_point")
        self._resume_point = None if point is None else {
            "sums": {}, **point, "n_train": meta.get("n_train"),
            "batch_size": meta.get("batch_size")}
        self.interrupted_at = None

    def check_state_dict(self, state: dict, *, source="the state", x=None, y=None,
                         batch_size=128, validation_split: float = 0.0, callbacks=(),
                         force_resume: bool = False) -> None:
        """Raise the CheckpointError ``fit(x, y, ..., resume=state)`` would raise, changing
        nothing (without ``x`` the data is not checked): :func:`~.state.check_resume_state`."""
        check_resume_state(self, state, source, x=x, y=y, batch_size=batch_size,
                           validation_split=validation_split, callbacks=callbacks,
                           force_resume=force_resume)

    def _upload(self, x, y, epochs, batch_size, validation_data, validation_split):
        """Check the data, move it to the device once and size the epochs.

        Returns the training ``(x, y, labels)`` and the validation ones (or None);
        ``labels`` are the integer labels for accuracy, None for regression.
        """
        if validation_split:
            x, y, validation_data = split_validation(x, y, validation_split, self.loss.task,
                                                     self.backend.rng([self.seed, 2]))
        xd, yd = to_device_xy(self, x, y, "training data")
        val = None
        if validation_data is not None:
            val = to_device_xy(self, *validation_data, "validation data")
        self.x_train, self.y_train, self.validation_data = x, y, validation_data
        n = xd.shape[0]
        self.batch_size = resolve_batch_size(batch_size, n)
        self.n_train, self.epochs = n, epochs
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        classify = self.loss.task == "classification"
        data = (xd, yd, labels_of(yd) if classify else None)
        if val is not None:
            val = (*val, labels_of(val[1]) if classify else None)
        return data, val

    def _epoch(self, epoch, data, val, hooks, shuffle) -> dict | None:
        """One pass over the training data; None when an interrupt stopped it inside."""
        t0 = time.perf_counter()
        for hook in hooks.on_epoch_begin:
            hook(self, epoch)
        run = self._run = self._start_epoch(epoch, data, shuffle)
        steps = len(run.batches)
        for b in range(run.start, steps):
            self._step(run, b, hooks)
            if self.parallel.stopping(self._interrupt) and b + 1 < steps:
                self.parallel.interrupted(self, run.metrics)
                self.interrupted_at = run.position(b + 1)
                return None
            if self.stop_training:
                break
        return self._epoch_logs(run, val, t0)

    def _start_epoch(self, epoch, data, shuffle) -> EpochRun:
        """The epoch's batches, accumulator and non-finite mode, continuing a resume point."""
        rng_state = self.rng.bit_generator.state  # an interrupted epoch redraws from here
        full = self.batch_size >= self.n_train
        order = epoch_order(self.rng, self.n_train, self.backend, shuffle, full)
        batches = Batches(*data, self.batch_size, order, share=self.parallel.share_of_batches)
        point, self._resume_point = self._resume_point or {}, None
        start = int(point.get("batch", 0))
        mode = nonfinite_mode(self.on_nonfinite, self, epoch, start, batches.xy)
        metrics = MetricSums(self.loss, self.backend, self.dtype, skipping=mode.skipping)
        sums = point.get("sums", {})
        self.parallel.load_sums(metrics, sums, point.get("seen", 0))  # each rank its own
        mode.load(sums)
        return EpochRun(epoch, start, batches, metrics, mode, rng_state)

    def _step(self, run: EpochRun, b: int, hooks: Hooks) -> None:
        """Step ``b`` of the epoch: forward, backward, update; metrics summed on the device."""
        model, opt = self.model, self.optimizer
        xb, yb, labels = run.batches.batch(b)
        if self.schedule is not None:
            opt.lr = float(self.schedule(self.step))
        run.nonfinite.before_step()
        out, value, check = self._forward_backward(xb, yb, run, b)
        state = StepState(self.step, run.epoch, b, xb, yb, out, value) if hooks.want_state else None
        for hook in hooks.on_backward_end:
            hook(self, state)
        run.nonfinite.before_update(opt.lr)
        opt.step(model)
        keep = run.nonfinite.after_update(check, self.step)
        if out is not None:  # None: this rank had no example in the batch
            run.metrics.add(value, out, yb, labels, xb.shape[0], keep)
        for hook in hooks.on_step_end:
            hook(self, state)
        self.step += 1

    def _forward_backward(self, xb, yb, run, b):
        """Outputs ``(batch, n_out)``, mean loss (0-d) and the loss the non-finite check
        sees, of batch ``b``; its gradients are added into the model's ``grads``."""
        if self.parallel.active:  # this rank's share; the gradients summed over every rank
            return self.parallel.forward_backward(self, xb, yb, run, b)
        out, backward = self.model.forward(xb, train=True)
        value, dout = self.loss(out, yb)
        backward(dout, need_dx=False)
        return out, value, value

    def _epoch_logs(self, run: EpochRun, val, t0) -> dict:
        """The epoch's logging point: read the sums once, check them, evaluate validation."""
        self.parallel.logging_point(self, run.metrics)
        logs = run.metrics.means()
        run.nonfinite.check(self, logs["loss"])
        if val is not None:
            v = self._evaluate_device(*val)
            run.nonfinite.check_validation(self, v["loss"])
            logs.update({f"val_{k}": v[k] for k in v})
        logs["lr"] = float(self.optimizer.lr)
        logs["time"] = time.perf_counter() - t0
        logs.update(run.nonfinite.logs())
        return logs

    def running_loss(self) -> float:
        """Mean training loss so far in this epoch: a logging point (one host read).

        With ``on_nonfinite="raise"`` a non-finite value stops training here with
        a :class:`~nnx.errors.NonFiniteError`. Call it every N steps at most.
        """
        run = self._run
        if run is None:
            return math.nan
        total, count = run.metrics.loss_and_count()
        run.nonfinite.check(self, total)
        return total / count if count > 0 else math.nan

    # --- inference (eval mode: no dropout, BatchNorm running statistics) -----

    def _evaluate_device(self, xd, yd, labels=None, batch_size: int = 4096) -> dict:
        return evaluate_device(self.model, self.loss, xd, yd, labels, batch_size)

    def evaluate(self, x, y, batch_size: int = 4096) -> dict:
        """Mean loss and accuracy (classification) or MAE and MSE (regression) on ``(x, y)``.

        Runs in eval mode in batches of ``batch_size``; returns host floats.
        """
        batch_size = whole_number(batch_size, "batch_size")
        xd, yd = to_device_xy(self, x, y, "evaluation data")
        return self._evaluate_device(xd, yd, batch_size=batch_size)

    def predict_proba(self, x, batch_size: int = 4096):
        """Class probabilities ``(n, C)`` as a host NumPy array (eval mode)."""
        return self.backend.to_numpy(self.loss.predict_proba(outputs(self.model, x, batch_size)))

    def predict(self, x, batch_size: int = 4096):
        """Class labels ``(n,)`` for classification, outputs ``(n, k)`` for regression (host)."""
        out = outputs(self.model, x, batch_size)
        if self.loss.task != "classification":
            return self.backend.to_numpy(out)
        return self.backend.to_numpy(predicted_labels(out))
