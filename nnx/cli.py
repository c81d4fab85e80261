"""The ``nnx`` command (``scripts/train.py``, ``python -m nnx``): train, write a run directory.

The only module that parses arguments. User mistakes end with one line on
stderr and exit status 2; an unexpected failure says it is a bug, exit 1;
Ctrl-C saves a checkpoint and exits 130. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import time
import warnings

from . import config as cfgmod
from .errors import USER_ERRORS, CheckpointError, ConfigError, DataError

EXIT_USER, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, in groups. Defaults shown are the values used when
    neither a flag nor the config file sets a setting (some depend on --dataset)."""
    parser = argparse.ArgumentParser(
        prog="nnx", allow_abbrev=False,  # a mistyped flag is named, never guessed
        description="Train a multilayer perceptron with nnx and write a run directory "
        "(config.json, metrics.csv/jsonl, curves.png, model.npz, checkpoint.npz).",
        epilog="Per-dataset defaults (recorded with source 'dataset' in config.json; MNIST's "
        "follow published MLP results): " + "; ".join(
            f"{d}: " + ", ".join(f"{k}={v}" for k, v in ov.items())
            for d, ov in cfgmod.DATASET_DEFAULTS.items()))
    groups = {}
    for s in cfgmod.SETTINGS:  # a new setting in config.SETTINGS is a new flag here
        group = groups.setdefault(s.group, parser.add_argument_group(s.group))
        flag = "--" + s.name.replace("_", "-")
        if s.type is bool:  # --batchnorm / --no-batchnorm, so a flag can undo the config file
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=cfgmod.help_text(s))
        else:
            group.add_argument(flag, type=_parse_for(s), default=None, metavar=s.name.upper(),
                               help=cfgmod.help_text(s))
    run = groups["run"]
    run.add_argument("--resume", default=None, metavar="PATH",
                     help="continue a run exactly, appending to its metrics: its directory or "
                     "its checkpoint.npz; its config.json supplies the settings, flags change "
                     "them (e.g. more --epochs) (default: none)")
    run.add_argument("--config", default=None, metavar="TOML",
                     help="read settings from a TOML file (keys as the flags, with _ or -; "
                     "[tables] only group them); flags override it. Relative data_dir and out "
                     "paths in it are relative to the file's directory and may not leave it "
                     "(default: none)")
    run.add_argument("--quiet", action="store_true",
                     help="no progress bar, no summary; errors and warnings only (default: off)")
    run.add_argument("--debug", action="store_true",
                     help="show the traceback of an error (default: off)")
    return parser


def _parse_for(setting):
    types = setting.type if isinstance(setting.type, tuple) else (setting.type,)

    def parse(text: str):
        if setting.name in ("batch_size",):
            return text if text == "full" else _number(text, int, setting.name)
        if float in types:
            return _number(text, float, setting.name)
        if int in types and str not in types:
            return _number(text, int, setting.name)
        return text

    parse.__name__ = setting.name
    return parse


def _number(text, kind, name):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} expects "
                                         f"{'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} must be finite")
    return value


def main(argv=None) -> int:
    """Entry point: parse, run, and turn every failure into one line and an exit status."""
    parser = build_parser()
    parser.error = lambda message: _usage_error(parser, message)  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once per place, one line each
            # a diverging run is reported by the non-finite check, with the step and layer
            warnings.filterwarnings("ignore", category=RuntimeWarning,
                                    message="(overflow|invalid value|divide by zero) encountered")
            warnings.showwarning = _one_line_warning
            return run(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        _say(f"error: {_one_line(exc)}")
        return getattr(exc, "exit_code", EXIT_USER)
    except KeyboardInterrupt:
        _say(_aborted_message())
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so, briefly
        if args.debug:
            raise
        _say(f"internal error: {type(exc).__name__}: {_one_line(exc)} -- this is a bug in nnx; "
             "rerun with --debug for the traceback and report it")
        return EXIT_BUG


def _usage_error(parser, message):
    if message.startswith("unrecognized arguments:"):
        import difflib

        known = [f for action in parser._actions for f in action.option_strings]
        for word in message.split(":", 1)[1].split():
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1,
                                              cutoff=0.75)
            if word.startswith("--") and close:
                message += f" (did you mean {close[0]}?)"
                break
    _say(f"error: {message} (see {parser.prog} --help)")
    raise SystemExit(EXIT_USER)


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    _say(f"warning: {_one_line(message)}")


# --- the run -------------------------------------------------------------------

def run(args) -> int:
    """Resolve settings, load data, build, train, evaluate and write the run directory."""
    from . import backends
    from .run_dir import RunDir

    flags = {s.name: getattr(args, s.name) for s in cfgmod.SETTINGS}
    previous, checkpoint = None, None
    if args.resume:
        previous, checkpoint = _resume_source(args.resume)
    resolved = cfgmod.resolve(flags, args.config, previous)
    cfg = {k: v["value"] for k, v in resolved.items()}
    if args.resume:
        cfg["out"] = os.path.dirname(os.path.abspath(checkpoint))
        if flags["out"] is not None and os.path.abspath(flags["out"]) != cfg["out"]:
            _say(f"warning: --out is ignored with --resume: the run continues in {cfg['out']}")
    backend = backends.get(cfg["device"])
    out = RunDir.create(cfg["out"] or _default_out(cfg["dataset"]), resume=bool(args.resume))
    _STATE["out"] = out
    try:
        return _train(args, cfg, resolved, checkpoint, backend, out)
    except BaseException:
        out.discard_if_unused()  # a run that failed before writing leaves no empty directory
        raise


def _train(args, cfg, resolved, checkpoint, backend, out) -> int:
    from . import data as datamod

    ds = datamod.load(cfg["dataset"], data_dir=cfg["data_dir"], seed=cfg["seed"],
                      quiet=args.quiet)
    x_train, x_test = ds.x_train, ds.x_test
    if cfg["standardize"]:
        x_train, x_test = _standardize(x_train, x_test)
    model, loss = _build_model(cfg, ds)
    trainer, callbacks = _build_trainer(cfg, model, loss, backend, out, ds, args)
    if checkpoint is not None:
        _check_resumable(checkpoint, trainer.model, ds, cfg["epochs"], out.path)
    if cfg["lr_find"] and checkpoint is None:
        _lr_find(cfg, resolved, trainer, loss, x_train, ds, out, args)
    out.write_config(resolved, extra={"backend": backend.describe(), "dataset": repr(ds)})
    if not args.quiet:
        _say(f"nnx: {ds!r} on {backend.describe()}; run directory {out.path}")
    stop = _install_interrupt(trainer)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the command line says this itself, in terms of --epochs (_check_resumable)
            warnings.filterwarnings("ignore", message="nothing to train")
            history = trainer.fit(x_train, ds.y_train, epochs=cfg["epochs"],
                                  batch_size=cfg["batch_size"],
                                  validation_split=cfg["val_split"], callbacks=callbacks,
                                  resume=checkpoint)
    except Exception as exc:
        doctor = next((c for c in callbacks if type(c).__name__ == "Doctor"), None)
        if doctor is not None and isinstance(exc, USER_ERRORS):
            doctor.finish(error=exc)
        raise
    finally:
        stop()
    elapsed = time.perf_counter() - t0
    if trainer.interrupted_at is not None:
        from .checkpoint import save_checkpoint

        save_checkpoint(out.checkpoint, trainer)
        _say(f"interrupted at epoch {trainer.interrupted_at['epoch'] + 1}, step {trainer.step}; "
             f"checkpoint saved. Resume with:\n  {_resume_command(out.path)}")
        return EXIT_INTERRUPTED
    return _finish(cfg, trainer, history, ds, x_test, out, elapsed, backend, args)


#: what a Ctrl-C outside the training loop (or a second one inside it) reports
_STATE: dict = {"out": None}


def _aborted_message() -> str:
    out = _STATE["out"]
    if out is not None and out.checkpoint.exists():
        return (f"aborted by Ctrl-C without saving; {out.checkpoint} holds the last completed "
                f"epoch. Resume with:\n  {_resume_command(out.path)}")
    return "aborted by Ctrl-C before any checkpoint was written"


def _resume_source(path):
    """The previous run's settings and checkpoint from a run directory or checkpoint file."""
    ckpt = os.path.join(path, "checkpoint.npz") if os.path.isdir(path) else path
    if not os.path.exists(ckpt):
        raise ConfigError(f"nothing to resume at {path}: no checkpoint.npz there; pass a run "
                          "directory written by nnx or its checkpoint.npz")
    config_file = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "config.json")
    previous = {}
    if os.path.exists(config_file):
        try:
            with open(config_file, encoding="utf-8") as f:
                settings = json.load(f)["settings"]
            previous = {k: v["value"] for k, v in settings.items()
                        if k in cfgmod.BY_NAME and k != "out"}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{config_file} is damaged ({exc}); pass the settings as flags "
                              "and the checkpoint file to --resume") from None
    return previous, ckpt


def _check_resumable(path, model, ds, epochs: int, run_path) -> None:
    """Refuse a damaged checkpoint, or one of another architecture, before the run
    directory's config.json is rewritten: a mistaken --resume must leave the run resumable.
    Data of another shape is named as such; a finished run asks for more --epochs."""
    from .checkpoint import check_architecture, load_checkpoint

    meta = load_checkpoint(path)["meta"]
    dense = [la["config"] for la in meta["architecture"].get("layers", [])
             if la.get("type") == "Dense"]
    if dense and "n_in" in dense[0] and dense[0]["n_in"] != model.n_in:
        n = dense[0]["n_in"]
        raise CheckpointError(
            f"{path} was saved from a different model: it takes {n} input features "
            f"(n_in={n}) but dataset {ds.name} has {model.n_in} (n_in={model.n_in}); resume "
            "with the data it was trained on, or start a new run with another --out")
    if dense and "n_out" in dense[-1] and dense[-1]["n_out"] != model.n_out:
        n = dense[-1]["n_out"]
        raise CheckpointError(
            f"{path} was saved from a different model: it has {n} outputs but dataset "
            f"{ds.name} needs {model.n_out}; resume with the data and --loss it was trained "
            "with, or start a new run with another --out")
    check_architecture(model, meta["architecture"], path)
    if int(meta["epoch"]) >= epochs and meta.get("resume_point") is None:
        _say(f"warning: nothing to train: {run_path} has already trained {meta['epoch']} of "
             f"{epochs} epochs; pass --epochs N with N > {meta['epoch']} to train further (the "
             "model is evaluated and its files rewritten)")


def _default_out(dataset: str) -> str:
    """``runs/<dataset>-<time>``, with ``-2``, ``-3``... when runs start in the same second."""
    name = os.path.splitext(os.path.basename(str(dataset)))[0] or "run"
    base = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def _standardize(x_train, x_test):
    """Standardise with statistics of the training split only (no test leakage)."""
    from .data import Standardizer

    scaler = Standardizer().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test)


def _build_model(cfg, ds):
    from .losses import get_loss
    from .models import mlp

    loss_name = cfg["loss"] or ("cross_entropy" if ds.task == "classification" else "mse")
    loss = get_loss(loss_name)
    if loss.task != ds.task:
        if ds.task == "regression":
            import numpy as np

            y = np.concatenate([ds.y_train.reshape(-1), ds.y_test.reshape(-1)])
            odd = y[(y != np.round(y)) | ~np.isfinite(y)]
            example = f" (e.g. {odd[0]:g})" if odd.size else ""
            raise DataError(f"loss {loss.name} needs integer class labels 0..C-1, but the "
                            f"targets of {ds.name} are not whole numbers{example}, so they were "
                            "read as regression; fix the labels, or use --loss mse for "
                            "regression")
        raise ConfigError(f"loss {loss.name} is for regression but dataset {ds.name} has class "
                          "labels; use --loss cross_entropy")
    if ds.task == "classification":
        if not ds.n_classes or ds.n_classes < 2:
            raise DataError(f"dataset {ds.name} has fewer than two classes; a classifier needs "
                            "at least two")
        n_out = 1 if (loss.name == "sigmoid_binary_cross_entropy" and ds.n_classes == 2) \
            else ds.n_classes
    else:
        n_out = ds.y_train.shape[1]
    sizes = [ds.n_features, *cfgmod.hidden_sizes(cfg["hidden"]), n_out]
    model = mlp(sizes, activation=cfg["activation"], init=cfg["init"], dropout=cfg["dropout"],
                batchnorm=cfg["batchnorm"])
    return model, loss


def _build_trainer(cfg, model, loss, backend, out, ds, args):
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

    opt = get_optimizer(cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"],
                        weight_decay=cfg["weight_decay"] or None, l2=cfg["l2"],
                        clip_norm=cfg["clip_norm"])
    trainer = Trainer(model, loss, opt, device=backend, seed=cfg["seed"], dtype=cfg["dtype"])
    callbacks = []
    if not args.quiet:
        callbacks.append(ProgressBar())
    resume = bool(args.resume)
    callbacks += [CSVLogger(out.metrics_csv, append=resume),
                  JSONLinesLogger(out.metrics_jsonl, append=resume),
                  ModelCheckpoint(out.checkpoint)]
    n_train = math.ceil(ds.x_train.shape[0] * (1 - cfg["val_split"]))
    bs = n_train if cfg["batch_size"] == "full" else min(cfg["batch_size"], n_train)
    total = cfg["epochs"] * math.ceil(n_train / bs)
    if cfg["schedule"] != "constant" or cfg["warmup"]:
        name = cfg["schedule"]
        if name == "constant" and cfg["warmup"]:
            name = "warmup"
        callbacks.append(LearningRateScheduler(
            get_schedule(name, opt.lr, total_steps=total, warmup_steps=cfg["warmup"])))
    if cfg["early_stopping"]:
        callbacks.append(EarlyStopping("val_loss", patience=cfg["early_stopping"]))
    if cfg["doctor"]:
        from .doctor import Doctor

        callbacks.append(Doctor(out_dir=str(out.path), test_data=(ds.x_test, ds.y_test),
                                print_fn=_say if not args.quiet else (lambda *_: None)))
    return trainer, callbacks


def _lr_find(cfg, resolved, trainer, loss, x_train, ds, out, args):
    from .doctor import lr_find

    result = lr_find(trainer.model, loss, x_train, ds.y_train, optimizer=cfg["optimizer"],
                     seed=cfg["seed"], plot=str(out.path / "lr_find.png"))
    _say(str(result))
    if resolved["lr"]["source"] in ("default", "dataset"):
        trainer.optimizer.lr = float(result.suggestion)
        resolved["lr"] = {"value": float(result.suggestion), "source": "lr range test"}


def _install_interrupt(trainer):
    """First Ctrl-C: finish the step, checkpoint, exit 130. A second one aborts."""
    if not hasattr(signal, "SIGINT"):
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _say("\ninterrupt: finishing the current step, then saving a checkpoint "
             "(Ctrl-C again to abort without saving)")
        trainer.request_interrupt()

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _resume_command(path) -> str:
    """The command line that continues this run, started the way this one was."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    argv0 = sys.argv[0] if sys.argv else ""
    if spec is not None and spec.name == f"{__package__}.__main__":  # python -m nnx
        head = f"{shlex.quote(sys.executable)} -m {__package__}"
    elif argv0.endswith(".py"):  # scripts/train.py
        head = f"{shlex.quote(sys.executable)} {shlex.quote(argv0)}"
    else:  # the installed console script
        head = shlex.quote(os.path.basename(argv0)) if argv0 else "nnx"
    return f"{head} --resume {shlex.quote(str(path))}"


def _finish(cfg, trainer, history, ds, x_test, out, elapsed, backend, args) -> int:
    from .checkpoint import model_is_finite, save

    test = trainer.evaluate(x_test, ds.y_test)
    if model_is_finite(trainer.model):
        save(trainer.model, out.model)
    history.plot(out.curves, title=f"{ds.name} on {backend.label}")
    metric = "accuracy" if "accuracy" in test else "mae"
    best = history.best_epoch("val_loss")
    summary = {"best_epoch": best, "epochs_run": len(history), f"test_{metric}": test[metric],
               "test_loss": test["loss"], "seconds": round(elapsed, 3),
               "device": backend.describe()}
    out.write_summary(summary)
    if not args.quiet:
        _say(f"done in {elapsed:.1f} s on {backend.describe()}: best epoch {best} of "
             f"{len(history)}, test {metric} {test[metric]:.4f}, test loss {test['loss']:.4f}")
        _say(f"run directory: {out.path}")
    return 0
