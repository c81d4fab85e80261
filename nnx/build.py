"""From settings to a training run: data, model, trainer, callbacks and the run directory.

The command line (:mod:`nnx.cli`) parses arguments and calls, in order,
:func:`plan` (settings resolved and validated, the backend chosen),
:func:`open_run_dir`, :func:`prepare` (data loaded, model and trainer built,
a resumed checkpoint checked, ``config.json`` written), :func:`train`, then
:func:`finish` or :func:`save_interrupted`. Nothing here parses arguments or
prints: notes for the user are ``warnings``, and messages of callbacks go to
the ``say`` function the caller passes. Every user mistake is an
:mod:`nnx.errors` exception, raised before anything is written.

:func:`build_model` (settings and dataset -> model and loss) is the place
where a new architecture is added.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from . import settings as settings_mod
from .errors import USER_ERRORS, ConfigError, DataError
from .resume import check_resumable, check_resume, resume_source

__all__ = ["Plan", "Run", "plan", "open_run_dir", "prepare", "build_model", "loss_and_outputs",
           "build_trainer", "check_resumable", "check_fits_in_memory", "standardize",
           "default_out", "resume_source", "train", "save_interrupted", "finish"]


@dataclass
class Plan:
    """A run's settings before anything is loaded.

    ``resolved`` is ``{name: {"value", "source"}}`` (written to ``config.json``),
    ``settings`` the normalised values, ``checkpoint`` the file a resumed run
    continues from (None for a new run), ``backend`` the chosen backend,
    ``force_resume`` whether that run may continue on other training data.
    """

    resolved: dict
    settings: dict
    checkpoint: str | None
    backend: object
    comm: object = None  # the run's processes (nnx.distributed), one or several
    force_resume: bool = False


@dataclass
class Run:
    """Everything a run needs, built by :func:`prepare`."""

    plan: Plan
    out: object  # RunDir
    dataset: object
    x_train: object
    x_test: object
    model: object
    loss: object
    trainer: object
    callbacks: list
    lr_found: object = None  # the learning-rate range test's result, when it ran
    doctor: object = None


# --- settings -------------------------------------------------------------------------------


def plan(flags: dict, config=None, resume=None, *, force_resume: bool = False) -> Plan:
    """Resolve ``flags`` (``{setting: value or None}``) over a TOML file and, with ``resume``
    (a run directory or checkpoint), the previous run's settings; choose the backend.
    ``force_resume`` lets the resumed run continue on other training data."""
    from . import backends
    from .distributed import connect, device_for_rank

    previous, checkpoint = resume_source(resume) if resume else (None, None)
    resolved = settings_mod.resolve(flags, config, previous)
    values = {k: v["value"] for k, v in resolved.items()}
    if checkpoint is not None:
        values["out"] = os.path.dirname(os.path.abspath(checkpoint))
        given = flags.get("out")
        if given is not None and os.path.abspath(given) != values["out"]:
            warnings.warn(f"--out is ignored with --resume: the run continues in "
                          f"{values['out']}", stacklevel=2)
    comm = connect(values["distributed"], values["device"])
    return Plan(resolved, values, checkpoint,
                backends.get(device_for_rank(values["device"], comm)), comm, force_resume)


def _root(p: Plan) -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return p.comm is None or p.comm.rank == 0


def default_out(dataset: str) -> str:
    """``runs/<dataset>-<time>``, with ``-2``, ``-3``... when runs start in the same second."""
    name = os.path.splitext(os.path.basename(str(dataset)))[0] or "run"
    base = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def open_run_dir(p: Plan):
    """The run directory: created (or reused, when resuming) and proven writable."""
    from .run_dir import RunDir

    out = p.settings["out"] or default_out(p.settings["dataset"])
    if p.comm is not None and p.comm.size > 1:
        out = p.comm.bcast_object(out)  # rank 0's: a default name depends on the time
        if not _root(p):  # only rank 0 touches the directory
            return RunDir(Path(out))
    return RunDir.create(out, resume=p.checkpoint is not None)


# --- data and model -------------------------------------------------------------------------


def standardize(x_train, x_test):
    """Standardise with statistics of the training split only (no test leakage)."""
    from .data import Standardizer

    scaler = Standardizer().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test)


def loss_and_outputs(settings: dict, ds) -> tuple[object, int]:
    """The loss (``--loss``, else cross-entropy for class labels and mse for targets) and the
    number of outputs it needs on dataset ``ds``; a loss of the other task is refused."""
    from .losses import get_loss

    loss = get_loss(settings["loss"] or ("cross_entropy" if ds.task == "classification"
                                         else "mse"))
    if loss.task != ds.task:
        if ds.task == "regression":
            from .data.checks import whole_number_example

            odd = whole_number_example(ds.y_train)
            odd = whole_number_example(ds.y_test) if odd is None else odd
            example = f" (e.g. {odd:g})" if odd is not None else ""
            raise DataError(f"loss {loss.name} needs integer class labels 0..C-1, but the "
                            f"targets of {ds.name} are not whole numbers{example}, so they were "
                            "read as regression; fix the labels, or use --loss mse for "
                            "regression")
        raise ConfigError(f"loss {loss.name} is for regression but dataset {ds.name} has class "
                          "labels; use --loss cross_entropy")
    if ds.task != "classification":
        return loss, int(ds.y_train.shape[1])
    if not ds.n_classes or ds.n_classes < 2:
        raise DataError(f"dataset {ds.name} has fewer than two classes; a classifier needs "
                        "at least two")
    binary = loss.name == "sigmoid_binary_cross_entropy" and ds.n_classes == 2
    return loss, 1 if binary else int(ds.n_classes)


def build_model(settings: dict, ds) -> tuple[object, object]:
    """The network the settings describe for dataset ``ds``, and its loss.

    Today a multilayer perceptron: ``ds.n_features`` inputs, the ``hidden`` sizes,
    and the outputs :func:`loss_and_outputs` asks for, with the settings'
    activation, initialiser, dropout and batch normalisation. Its size is checked
    against the memory before anything is allocated (:func:`check_fits_in_memory`).
    """
    from .models import mlp

    loss, n_out = loss_and_outputs(settings, ds)
    if settings["arch"] != "mlp" or settings["layers"] is not None:
        return build_stack(settings, ds, n_out), loss
    sizes = [ds.n_features, *settings_mod.hidden_sizes(settings["hidden"]), n_out]
    check_fits_in_memory(sizes, settings, ds.x_train.shape[0])
    model = mlp(sizes, activation=settings["activation"], init=settings["init"],
                dropout=settings["dropout"], batchnorm=settings["batchnorm"])
    return model, loss



def build_stack(settings: dict, ds, n_out: int):
    """``--layers`` (any stack) or ``--arch cnn`` (the classic CNN) for one example of ``ds``:
    images ``(height, width, channels)`` (``(h, w)`` images have one channel), else
    ``(features,)``; checked against the memory (:func:`check_batch_fits`)."""
    from .models import cnn, from_spec

    shape = tuple(ds.meta.get("image_shape") or (ds.n_features,))
    shape = (*shape, 1) if len(shape) == 2 else shape
    if settings["layers"] is not None:
        model = from_spec(settings["layers"], shape, n_out, init=settings["init"])
    elif len(shape) != 3:
        raise ConfigError(f"--arch cnn needs images, but dataset {ds.name} has {shape[0]} "
                          "features per example and no image shape; use --arch mlp, or images "
                          "(n, h, w) or (n, h, w, c) in a .npz file")
    else:
        model = cnn(shape, n_out, dropout=settings["dropout"], batchnorm=settings["batchnorm"],
                    init=settings["init"])
    check_batch_fits(model, settings, ds.x_train.shape[0])
    return model


def check_batch_fits(model, settings: dict, n_train: int, limit: int | None = None) -> None:
    """Refuse a batch size whose training step of ``model`` (with an ``input_shape``) would
    not fit in ``limit`` bytes (the machine's memory by default); the im2col buffers of the
    convolutions are the peak of a step (:func:`nnx.models.step_bytes`)."""
    from .model_file import memory_bytes
    from .models import step_bytes

    limit = memory_bytes() if limit is None else limit
    size = 8 if settings["dtype"] == "float64" else 4
    batch = n_train if settings["batch_size"] == "full" else min(settings["batch_size"], n_train)
    need, cols, where = step_bytes(model, batch, size)
    if limit is None or need <= limit:
        return
    fixed = step_bytes(model, 0, size)[0]
    fits = int((limit - fixed) // ((need - fixed) / batch)) if limit > fixed else 0
    of = f" ({cols / 2**30:,.1f} GiB of it the im2col buffers of {where})" if cols else ""
    raise ConfigError(f"--batch-size {settings['batch_size']} needs about {need / 2**30:,.1f} "
                      f"GiB per training step{of} but this machine has {limit / 2**30:,.1f} GiB; "
                      + (f"use --batch-size {fits} or smaller" if fits else "use a smaller model"))


def check_fits_in_memory(sizes, settings: dict, n_train: int, limit: int | None = None) -> None:
    """Refuse an MLP of layer ``sizes`` whose training would not fit in ``limit`` bytes (by
    default the machine's memory: initial weights are drawn on the host).

    Counted: the parameters four times (weights, gradients and two optimizer moments)
    plus one step's activations (pre-activation, activation and gradient of every
    layer for a batch), in the run's dtype.
    """
    from .model_file import memory_bytes

    limit = memory_bytes() if limit is None else limit
    itemsize = 8 if settings["dtype"] == "float64" else 4
    params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    batch = n_train if settings["batch_size"] == "full" else min(settings["batch_size"],
                                                                  n_train)
    need = (4 * params + 3 * batch * sum(sizes)) * itemsize
    if limit is not None and need > limit:
        raise ConfigError(f"the model {'-'.join(map(str, sizes))} has {params:,} parameters; "
                          f"training it needs about {need / 2**30:,.1f} GiB (parameters, "
                          f"gradients, optimizer state and one batch of activations) but this "
                          f"machine has {limit / 2**30:,.1f} GiB; use smaller --hidden sizes "
                          "or a smaller --batch-size")


def build_trainer(settings: dict, model, loss, backend, out, ds, *, resume: bool = False,
                  quiet: bool = False, say=None, comm=None) -> tuple[object, list]:
    """The Trainer and its callbacks: progress bar (unless ``quiet``), the metrics loggers and
    the checkpoint in ``out``, the learning-rate schedule, early stopping and the doctor
    (its messages go to ``say``)."""
    from .optim import get_optimizer
    from .schedules import get_schedule
    from .train import (
        CSVLogger,
        EarlyStopping,
        JSONLinesLogger,
        LearningRateScheduler,
        ModelCheckpoint,
        ProgressBar,
        Trainer,
    )

    s = settings
    opt = get_optimizer(s["optimizer"], lr=s["lr"], momentum=s["momentum"],
                        weight_decay=s["weight_decay"] or None, l2=s["l2"],
                        clip_norm=s["clip_norm"])
    trainer = Trainer(model, loss, opt, device=backend, seed=s["seed"], dtype=s["dtype"],
                      distributed="off" if comm is None else comm,
                      sync_batchnorm=s["sync_batchnorm"])
    callbacks = [] if quiet else [ProgressBar()]
    callbacks += [CSVLogger(out.metrics_csv, append=resume),
                  JSONLinesLogger(out.metrics_jsonl, append=resume),
                  ModelCheckpoint(out.checkpoint)]
    if s["schedule"] != "constant" or s["warmup"]:
        n_train = math.ceil(ds.x_train.shape[0] * (1 - s["val_split"]))
        bs = n_train if s["batch_size"] == "full" else min(s["batch_size"], n_train)
        total = s["epochs"] * math.ceil(n_train / bs)
        name = "warmup" if s["schedule"] == "constant" else s["schedule"]
        callbacks.append(LearningRateScheduler(
            get_schedule(name, opt.lr, total_steps=total, warmup_steps=s["warmup"])))
    if s["early_stopping"]:
        callbacks.append(EarlyStopping("val_loss", patience=s["early_stopping"]))
    if s["doctor"]:
        from .doctor import Doctor

        # fixes are tried on a copy of the run and reported only when they help
        callbacks.append(Doctor(out_dir=str(out.path), test_data=(ds.x_test, ds.y_test),
                                verify_fixes=True,
                                print_fn=say if say is not None else (lambda *_: None)))
    return trainer, callbacks


# --- the run --------------------------------------------------------------------------------


def prepare(p: Plan, out, *, quiet: bool = False, say=None) -> Run:
    """Load the data, build the model, trainer and callbacks, check a resumed checkpoint, run
    the learning-rate range test when asked, then write ``config.json``: nothing is written
    before every check has passed."""
    from . import data as datamod
    from .trained import with_run_preprocessing

    s = p.settings
    if not _root(p):
        p.comm.barrier()  # rank 0 downloads first; the others then read its cached files
    ds = datamod.load(s["dataset"], data_dir=s["data_dir"], seed=s["seed"], quiet=quiet,
                      task=s["task"])
    if _root(p) and p.comm is not None:
        p.comm.barrier()
    model, loss = build_model(s, ds)  # it carries its preprocessing; ds: what the model sees
    model, ds = with_run_preprocessing(model, loss, ds, standardize=s["standardize"],
                                       trained_on={"dataset": s["dataset"], "seed": s["seed"]})
    if len(model.input_shape or ()) == 3:  # a network of images: they keep their shape
        ds = replace(ds, x_train=ds.x_train.reshape(-1, *model.input_shape),
                     x_test=ds.x_test.reshape(-1, *model.input_shape))
    x_train, x_test = ds.x_train, ds.x_test
    resume = p.checkpoint is not None
    trainer, callbacks = build_trainer(s, model, loss, p.backend, out, ds, resume=resume,
                                       quiet=quiet, say=say, comm=p.comm)
    if resume:  # every check of the resume, before config.json is rewritten
        check_resumable(p.checkpoint, trainer.model, ds, s["epochs"], out.path,
                        ranks=p.comm.size)
        check_resume(p, trainer, x_train, ds.y_train, callbacks)
    run = Run(p, out, ds, x_train, x_test, model, loss, trainer, callbacks)
    if s["doctor"]:
        from .doctor import Doctor

        run.doctor = next((c for c in callbacks if isinstance(c, Doctor)), None)
    if s["lr_find"] and not resume:
        run.lr_found = _lr_find(run)
    if _root(p):
        out.write_config(p.resolved, extra={"backend": p.backend.describe(),
                                            "dataset": repr(ds)})
    return run


def _lr_find(run: Run):
    """Run the range test on a copy of the model; its rate replaces a default --lr."""
    from .train.lr_finder import lr_find

    s, resolved = run.plan.settings, run.plan.resolved
    result = lr_find(run.trainer.model, run.loss, run.x_train, run.dataset.y_train,
                     optimizer=s["optimizer"], seed=s["seed"],
                     plot=str(run.out.path / "lr_find.png") if _root(run.plan) else None)
    if resolved["lr"]["source"] in ("default", "dataset"):
        run.trainer.optimizer.lr = float(result.suggestion)
        resolved["lr"] = {"value": float(result.suggestion), "source": "lr range test"}
    return result


def train(run: Run):
    """``trainer.fit`` with the run's settings and callbacks; returns the History. The doctor
    writes its report when training stops on a user error (a diverging run)."""
    s = run.plan.settings
    try:
        with warnings.catch_warnings():
            # check_resumable says this itself, in terms of --epochs
            warnings.filterwarnings("ignore", message="nothing to train")
            return run.trainer.fit(run.x_train, run.dataset.y_train, epochs=s["epochs"],
                                   batch_size=s["batch_size"], validation_split=s["val_split"],
                                   callbacks=run.callbacks, resume=run.plan.checkpoint,
                                   force_resume=run.plan.force_resume)
    except USER_ERRORS as exc:
        if run.doctor is not None and _root(run.plan):
            run.doctor.finish(error=exc)
        raise


def save_interrupted(run: Run) -> None:
    """Checkpoint a run stopped by an interrupt, so that a resume continues at the next step."""
    from .checkpoint import save_checkpoint

    if _root(run.plan):
        save_checkpoint(run.out.checkpoint, run.trainer)


def finish(run: Run, history, elapsed: float) -> dict:
    """Evaluate on the test split, write the model (when finite), the curves and
    ``summary.json``; returns the summary."""
    from .checkpoint import model_is_finite, save

    trainer, ds, backend = run.trainer, run.dataset, run.plan.backend
    if not _root(run.plan):  # the same model as rank 0's, which writes it
        return {}
    test = trainer.model.evaluate(run.x_test, ds.y_test, prepared=True)  # target's own units
    if model_is_finite(trainer.model):
        save(trainer.model, run.out.model)
    history.plot(run.out.curves, title=f"{ds.name} on {backend.label}")
    metric = "accuracy" if "accuracy" in test else "mae"
    summary = {"best_epoch": history.best_epoch("val_loss"), "epochs_run": len(history),
               f"test_{metric}": test[metric], "test_loss": test["loss"],
               "seconds": round(elapsed, 3), "device": backend.describe()}
    run.out.write_summary(summary)
    return summary
