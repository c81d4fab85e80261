"""The ``nnx`` command (``scripts/train.py``, ``python -m nnx``): train, write a run directory.

Bare ``nnx [flags]`` trains; ``nnx predict|evaluate|summary|export ...`` run the
commands beside training on a saved model (:mod:`nnx.commands`).

The only module that parses arguments; :mod:`nnx.build` turns the settings into
a run. Here: the flags (one per setting of :mod:`nnx.settings`), signals, exit
statuses and what is printed. User mistakes end with one line on stderr and
exit status 2; an unexpected failure says it is a bug, exit 1; Ctrl-C saves a
checkpoint and exits 130, SIGTERM (``timeout``, job schedulers, ``docker stop``)
the same with 143. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import threading
import time
import warnings

from . import _startup
from . import settings as settings_mod
from .errors import USER_ERRORS

EXIT_USER, EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 1, 130, 143
_startup.keep()  # the command's uncaught Ctrl-C is one line and exit status 130, anywhere


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, in groups. Defaults shown are the values used when
    neither a flag nor the config file sets a setting (some depend on --dataset)."""
    parser = argparse.ArgumentParser(
        prog="nnx", allow_abbrev=False,  # a mistyped flag is named, never guessed
        description="Train a network (an MLP, the classic CNN or any --layers stack) with nnx "
        "and write a run directory (config.json, metrics.csv/jsonl, curves.png, model.npz, "
        "checkpoint.npz). With a saved model: nnx predict MODEL DATA, nnx evaluate MODEL "
        "DATA, nnx summary MODEL, nnx export MODEL --format onnx|safetensors -o FILE "
        "(nnx predict --help).",
        epilog="Per-dataset defaults (recorded with source 'dataset' in config.json; MNIST's "
        "follow published MLP results): " + "; ".join(
            f"{d}: " + ", ".join(f"{k}={v}" for k, v in ov.items())
            for d, ov in settings_mod.DATASET_DEFAULTS.items()))
    groups = {}
    for s in settings_mod.SETTINGS:  # a new setting in settings.SETTINGS is a new flag here
        group = groups.setdefault(s.group, parser.add_argument_group(s.group))
        flag = "--" + s.name.replace("_", "-")
        if s.type is bool:  # --batchnorm / --no-batchnorm, so a flag can undo the config file
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=settings_mod.help_text(s))
        else:
            group.add_argument(flag, type=_parse_for(s), default=None, metavar=s.name.upper(),
                               help=settings_mod.help_text(s))
    run = groups["run"]
    run.add_argument("--resume", default=None, metavar="PATH",
                     help="continue a run exactly, appending to its metrics: its directory or "
                     "its checkpoint.npz; its config.json supplies the settings, flags change "
                     "them (e.g. more --epochs) (default: none)")
    run.add_argument("--force-resume", action="store_true",
                     help="with --resume: continue even though the training data is not the "
                     "run's (checkpoint.npz holds a fingerprint of it); the result will not "
                     "match an uninterrupted run (default: off)")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    from .commands import COMMANDS

    if argv and argv[0] in COMMANDS:  # nnx predict|evaluate|summary|export: nnx.cli_commands
        from .cli_commands import command_main

        _STATE.update(out=None, comm=None, silent=False)
        return command_main(argv, say=_say, usage_error=_usage_error,
                            warning=_one_line_warning)
    parser = build_parser()
    parser.error = lambda message: _usage_error(parser, message)  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    _STATE.update(out=None, comm=None, silent=False)
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
        return _failed(exc, f"error: {_one_line(exc)}", getattr(exc, "exit_code", EXIT_USER))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated), outside training
        _say(_aborted_message(exc))
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except MemoryError:  # sizes beyond what build.check_fits_in_memory could foresee
        if args.debug:
            raise
        _say("error: out of memory: the data, the model or a batch does not fit; use smaller "
             "--hidden sizes or a smaller --batch-size")
        return EXIT_USER
    except Exception as exc:  # a bug: say so, briefly
        if args.debug:
            raise
        return _failed(exc, f"internal error: {type(exc).__name__}: {_one_line(exc)} -- this "
                       "is a bug in nnx; rerun with --debug for the traceback and report it",
                       EXIT_BUG)


def _failed(exc, line: str, code: int) -> int:
    """Report a failure once. With several processes every other one hears of it and stops
    (:meth:`~nnx.distributed.Communicator.notify_failure`); rank 0 prints the one line,
    another rank only when rank 0 never answers (and then ends the job)."""
    from .distributed import launched_rank

    comm = _STATE.get("comm")
    if comm is None and launched_rank() != 0:
        return code  # under mpiexec, before the ranks connected: rank 0 says it for all
    if comm is None or comm.size == 1:
        _say(line)
        return code
    comm.notify_failure(exc)
    if comm.rank == 0:
        _say(line)
    elif not comm.wait_for_root():
        _STATE["silent"] = False
        _say(f"{line} (rank {comm.rank} of {comm.size})")
        comm.abort(code)
    return code


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
    if _STATE.get("silent"):  # ranks other than 0 of a run on several processes
        return
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    _say(f"warning: {_one_line(message)}")


# --- the run -------------------------------------------------------------------

def run(args) -> int:
    """Resolve settings, build the run, train it and print what happened (see :mod:`nnx.build`)."""
    with _sigterm_unwinds():
        return _run(args)


def _run(args) -> int:
    from . import build

    _STATE["signal"] = None  # the first SIGINT or SIGTERM of the training loop
    flags = {s.name: getattr(args, s.name) for s in settings_mod.SETTINGS}
    plan = build.plan(flags, args.config, args.resume, force_resume=args.force_resume)
    _STATE["comm"] = plan.comm
    if plan.comm.rank != 0:  # rank 0 alone prints; the others report through it
        _STATE["silent"] = True
        warnings.simplefilter("ignore")
    out = build.open_run_dir(plan)
    _STATE["out"] = out
    try:
        code = _train(args, plan, out)
        plan.comm.close()
        return code
    except BaseException:
        out.discard_if_unused()  # a run that failed before writing leaves no empty directory
        raise
    finally:
        out.close()  # the directory's lock: another run may use it now


def _train(args, plan, out) -> int:
    from . import build

    run_ = build.prepare(plan, out, quiet=args.quiet, say=_say)
    if run_.lr_found is not None:
        _say(str(run_.lr_found))
    where = plan.backend.describe()
    if plan.comm.size > 1:  # every rank, its device and process
        members = plan.comm.members(plan.backend.label)
        where = (f"{plan.comm.size} ranks over {plan.comm.describe()}: "
                 + ", ".join(m.describe() for m in members))
    if not args.quiet:
        _say(f"nnx: {run_.dataset!r} on {where}; run directory {out.path}")
    trainer = run_.trainer
    stop = _install_interrupt(trainer, terminate=plan.comm.size > 1)
    t0 = time.perf_counter()
    try:
        history = build.train(run_)
    finally:
        stop()
    elapsed = time.perf_counter() - t0
    if trainer.interrupted_at is not None:
        build.save_interrupted(run_)  # by rank 0
        point = trainer.interrupted_at  # batch 0: on an epoch's last step, that epoch's number
        _say(f"interrupted at epoch {point['epoch'] + (1 if point['batch'] else 0)}, step "
             f"{trainer.step}; checkpoint saved. Resume with:\n  {_resume_command(out.path)}")
        return EXIT_TERMINATED if _STATE.get("signal") == "SIGTERM" else EXIT_INTERRUPTED
    return _finish(run_, history, elapsed, args)


#: what a Ctrl-C outside the training loop (or a second one inside it) reports
_STATE: dict = {"out": None}


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop, or a second one inside it: it unwinds the run like
    Ctrl-C does (every ``except KeyboardInterrupt`` cleans up the same way); exit 143."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises :class:`Terminated` while the run is set up and finished (training
    itself installs :func:`_install_interrupt`); the previous handler comes back after."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _aborted_message(exc=None) -> str:
    by = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
    out = _STATE["out"]
    if out is not None and out.checkpoint.exists():
        return (f"aborted by {by} without saving; {out.checkpoint} holds the last completed "
                f"epoch. Resume with:\n  {_resume_command(out.path)}")
    return f"aborted by {by} before any checkpoint was written"


def _install_interrupt(trainer, terminate: bool = False):
    """The first Ctrl-C or SIGTERM (what ``timeout``, job schedulers, ``docker stop`` and
    ``mpiexec`` send) asks the trainer to stop after its step; the run then saves a
    checkpoint, prints the resume command and exits 130 (143 for SIGTERM). A second one
    of either aborts without saving. Returns the function that puts the previous handlers
    back. (``terminate`` is accepted for older callers: SIGTERM is always handled.)"""
    signals = [getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n)]
    if not signals or threading.current_thread() is not threading.main_thread():
        return lambda: None

    def again(signum, frame):
        raise Terminated if signum == getattr(signal, "SIGTERM", None) else KeyboardInterrupt

    def first(signum, frame):
        name = signal.Signals(signum).name
        _STATE["signal"] = name
        for s in signals:
            signal.signal(s, again)
        how = "Ctrl-C" if name == "SIGINT" else "SIGTERM"
        _say(f"\n{'interrupt' if name == 'SIGINT' else 'terminated'}: finishing the current "
             f"step, then saving a checkpoint ({how} again to abort without saving)")
        trainer.request_interrupt()

    previous = {s: signal.signal(s, first) for s in signals}
    return lambda: [signal.signal(s, h) for s, h in previous.items()]


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
    comm = _STATE.get("comm")
    if comm is not None and comm.size > 1:  # the same number of ranks
        head = f"mpiexec -n {comm.size} {head}"
    return f"{head} --resume {shlex.quote(str(path))}"


def _finish(run_, history, elapsed, args) -> int:
    """Evaluate and write the model, curves and summary; print the summary."""
    from . import build

    summary = build.finish(run_, history, elapsed)
    if summary and not args.quiet:  # empty on ranks other than 0, which write nothing
        metric = next(k for k in summary if k.startswith("test_") and k != "test_loss")
        _say(f"done in {elapsed:.1f} s on {summary['device']}: best epoch "
             f"{summary['best_epoch']} of {summary['epochs_run']}, {metric.replace('_', ' ')} "
             f"{summary[metric]:.4f}, test loss {summary['test_loss']:.4f}")
        _say(f"run directory: {run_.out.path}")
    return 0
