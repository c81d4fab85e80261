"""The command line of ``nnx predict|evaluate|summary|export``: parsing and exit statuses.

:func:`nnx.cli.main` hands ``nnx <command> ...`` here, with its own ways to print
a line, report a usage error and show a warning, so that every command speaks
as training does; :mod:`nnx.commands` does the work. Results go to stdout,
messages to stderr; a user mistake is one line and exit status 2, a bug exit
status 1, Ctrl-C exit status 130.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .errors import USER_ERRORS

__all__ = ["command_parser", "command_main"]

EXIT_USER, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130


def command_parser(usage_error=None) -> argparse.ArgumentParser:
    """The parser of ``nnx predict|evaluate|summary|export``; ``usage_error(parser,
    message)`` reports a bad argument (argparse's own report by default)."""
    from .commands import COMMANDS, DATA_HELP, FORMATS, HELP, MODEL_HELP, SPLITS

    parser = argparse.ArgumentParser(prog="nnx", allow_abbrev=False,
                                     description="Use a saved model (bare nnx trains one).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = [parser]
    for name in COMMANDS:
        p = sub.add_parser(name, help=HELP[name], description=HELP[name], allow_abbrev=False)
        parsers.append(p)
        p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
        if name in ("predict", "evaluate"):
            p.add_argument("data", metavar="DATA", help=DATA_HELP)
            p.add_argument("--split", choices=SPLITS, default="auto",
                           help="auto: DATA's test set when it has one, else every row "
                           "(default: auto)")
            p.add_argument("--device", default="cpu", help="device to run on (default: cpu)")
            p.add_argument("--data-dir", default=None, help="where MNIST files are cached")
            p.add_argument("--batch-size", type=int, default=4096,
                           help="examples per forward pass (default: 4096)")
        if name == "predict":
            p.add_argument("--out", "-o", default=None, metavar="CSV",
                           help="write the predictions to this file (default: standard output)")
        if name == "export":
            p.add_argument("--format", required=True, choices=FORMATS)
            p.add_argument("--out", "-o", required=True, metavar="FILE")
            p.add_argument("--head", choices=("none", "softmax", "sigmoid"), default="none",
                           help="ONNX: end the graph with softmax or sigmoid (default: none, "
                           "logits as nnx gives them)")
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    if usage_error is not None:
        for p in parsers:
            p.error = lambda message, p=p: usage_error(p, message)  # type: ignore
    return parser


def command_main(argv, *, say, usage_error=None, warning=None) -> int:
    """Run ``argv`` (``["predict", MODEL, DATA, ...]``); ``say(line)`` prints to stderr,
    ``warning`` replaces :func:`warnings.showwarning`. Returns the exit status."""
    parser = command_parser(usage_error)
    parser.prog = f"nnx {argv[0]}"  # its errors are about that command's arguments
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            if warning is not None:
                warnings.showwarning = warning
            return _run(args, say)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        say(f"error: {_one_line(exc)}")
        return getattr(exc, "exit_code", EXIT_USER)
    except KeyboardInterrupt:
        say("aborted by Ctrl-C")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so, briefly
        if args.debug:
            raise
        say(f"internal error: {type(exc).__name__}: {_one_line(exc)} -- this is a bug in nnx; "
            "rerun with --debug for the traceback and report it")
        return EXIT_BUG


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _run(args, say) -> int:
    from . import commands

    if args.command == "summary":
        print("\n".join(commands.summary(args.model)))
    elif args.command == "export":
        say(commands.export(args.model, args.format, args.out,
                            head=None if args.head == "none" else args.head))
    else:
        where = dict(device=args.device, split=args.split, data_dir=args.data_dir,
                     batch_size=args.batch_size)
        if args.command == "evaluate":
            print("\n".join(commands.evaluate(args.model, args.data, **where)))
        else:
            table, message = commands.predict(args.model, args.data, out=args.out, **where)
            if table is not None:
                sys.stdout.write(table)
            say(message)
    sys.stdout.flush()
    return 0
