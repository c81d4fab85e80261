"""Run settings: the table, a TOML file, and the one validation that normalises them.

Each setting has a type, a default and a rule for its range; :func:`resolve`
merges defaults < per-dataset defaults < a resumed run < a TOML file <
command-line flags and records where every final value came from.
:func:`validate` checks every setting's type and range, and the names it
refers to, and returns the normalised values that everything downstream uses
(whole numbers as ``int``, NumPy integer scalars included; rates as
``float``; ``batch_size`` as an ``int`` or ``"full"``). Unknown keys, wrong
types and values out of range are :class:`~nnx.errors.ConfigError` naming the
setting, where it came from and what it must be.

Paths in a config file (``data_dir``, ``out``) are relative to the file's own
directory and may not climb out of it, with ``..`` or through a symbolic link;
an absolute path is taken as written (the user chose it). Nothing in a config
file is evaluated: names are looked up in registries.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .models import SPEC_HELP
from .settings_names import NAME_CHECKS as _NAME_CHECKS

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Setting", "SETTINGS", "BY_NAME", "DATASET_DEFAULTS", "help_text", "check_value",
           "validate", "resolve", "load_toml", "hidden_sizes"]


@dataclass(frozen=True)
class Setting:
    """One setting: its name (the flag is ``--name`` with ``-``), the types a value may have,
    its default, its help, its group in ``--help``, and ``rule``: ``(test, what it must
    be)`` on the normalised value, or None when any value of the type will do."""

    name: str
    type: type | tuple
    default: Any
    help: str
    group: str = "training"
    rule: tuple[Callable[[Any], bool], str] | None = None


def hidden_sizes(value) -> list[int]:
    """``"256,128"`` or ``[256, 128]`` -> ``[256, 128]``; ``""`` -> no hidden layer.

    Every size must be a positive whole number (``"1.5"`` or ``[2.5]`` is refused, not
    truncated); NumPy integers count as integers.
    """
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p for p in str(value).replace(" ", "").split(",") if p != ""]
    sizes = []
    for p in parts:
        if isinstance(p, str) and _whole_text(p):
            sizes.append(int(p))
        elif isinstance(p, numbers.Integral) and not isinstance(p, bool):
            sizes.append(int(p))
        else:
            raise ConfigError(f"hidden sizes must be positive integers separated by commas, "
                              f"e.g. 256,128; got {value!r}")
    if any(s <= 0 for s in sizes):
        raise ConfigError(f"hidden sizes must be positive integers, got {value!r}")
    return sizes


def _whole_text(text: str) -> bool:
    """Whether ``text`` is a whole number as ``int()`` reads it: digits after one sign."""
    digits = text[1:] if text[:1] in "+-" else text
    return digits.isdecimal() and len(digits) <= 4000  # int() refuses longer text


def _seed_ok(seed) -> bool:
    from .data.checks import check_seed  # the seed rule of the Python API too

    try:
        check_seed(seed)
    except ConfigError:
        return False
    return True


_UNIT = (lambda v: 0 <= v < 1, "in [0, 1)")
_NON_NEGATIVE = (lambda v: v >= 0, "0 or more")
_POSITIVE_OR_NONE = (lambda v: v is None or v > 0, "positive")

SETTINGS = [
    Setting("device", str, "auto", "auto, cpu, cuda, cuda:N, torch, torch:cuda, strict, ...",
            "run"),
    Setting("dataset", str, "digits", "digits (bundled), mnist, fashion-mnist, spirals, moons, "
            "circles, xor, blobs, regression, or a .npz/.csv/.h5 path", "data"),
    Setting("data_dir", (str, type(None)), None, "where MNIST files are cached; "
            "None: $NNX_DATA_DIR, else ~/.cache/nnx", "data"),
    Setting("val_split", (float, int), 0.1, "fraction of training data held out for "
            "validation (stratified)", "data", _UNIT),
    Setting("standardize", bool, False, "standardise features (mean/std fitted on the "
            "training split only) and a regression target (predictions are turned back into "
            "its units); both are saved with the model", "data"),
    Setting("task", (str, type(None)), None, "classification or regression; None: guessed "
            "from the labels (text or whole numbers: classes). For your own files and IDX "
            "folders", "data", (lambda v: v in (None, "classification", "regression"),
                                "classification or regression")),
    Setting("hidden", (str, list), "512,256", "hidden layer sizes, e.g. 256,128 (an empty "
            "string: no hidden layer)", "model"),
    Setting("activation", str, "relu", "hidden activation (relu, leaky_relu:0.1, tanh, "
            "sigmoid, gelu, silu, elu, softplus, abs, sin, identity, mixed:relu,tanh)", "model"),
    Setting("init", str, "auto", "weight initialiser: auto (He for ReLU, Xavier otherwise), "
            "he_normal, xavier_uniform, lecun_normal, normal:0.01, zeros, ...", "model"),
    Setting("dropout", (float, int), 0.0, "dropout rate after each hidden layer", "model",
            _UNIT),
    Setting("batchnorm", bool, False, "batch normalisation before each hidden activation",
            "model"),
    Setting("arch", str, "mlp", "mlp: the multilayer perceptron of --hidden; cnn: the classic "
            "CNN for images (conv 32 3x3, max-pool 2, conv 64 3x3, max-pool 2, dense 128, "
            "dropout 0.25 unless --dropout, --batchnorm after each conv)", "model",
            (lambda v: v in ("mlp", "cnn"), "mlp or cnn")),
    Setting("layers", (str, type(None)), None, "any stack instead of --arch (and of --hidden, "
            "--activation, --dropout, --batchnorm): " + SPEC_HELP, "model"),
    Setting("loss", (str, type(None)), None, "cross_entropy, bce or mse; None: "
            "cross_entropy for class labels, mse for regression targets", "model"),
    Setting("optimizer", str, "adam", "sgd, momentum, nesterov, rmsprop, adam, adamw"),
    Setting("lr", (float, int, type(None)), None, "learning rate; None: 1e-3 for "
            "adam/adamw/rmsprop, 1e-2 for the sgd family"),
    Setting("momentum", (float, int, type(None)), None, "momentum for momentum/nesterov; "
            "None: 0.9 (a value given with --optimizer sgd switches momentum on)"),
    Setting("weight_decay", (float, int), 0.0, "decoupled weight decay (AdamW style)",
            rule=_NON_NEGATIVE),
    Setting("l2", (float, int), 0.0, "L2 penalty added to the gradient", rule=_NON_NEGATIVE),
    Setting("batch_size", (int, str), 64, "examples per step, or 'full' for full-batch "
            "gradient descent"),
    Setting("epochs", int, 30, "number of epochs", rule=(lambda v: v >= 1, "at least 1")),
    Setting("schedule", str, "constant", "learning-rate schedule: constant, step, "
            "exponential, cosine, warmup"),
    Setting("warmup", int, 0, "linear warm-up steps before the schedule", rule=_NON_NEGATIVE),
    Setting("clip_norm", (float, int, type(None)), None, "clip gradients to this global "
            "norm; None: no clipping", rule=_POSITIVE_OR_NONE),
    Setting("early_stopping", int, 0, "stop after this many epochs without validation "
            "improvement and restore the best weights (0: off)",
            rule=(lambda v: v >= 0, "0 (off) or more")),
    Setting("seed", int, 0, "seed for weights, shuffles, splits and dropout", "run",
            (lambda v: _seed_ok(v), "a whole number from 0 to 2**63 - 1")),
    Setting("dtype", str, "float32", "float32 or float64", "run",
            (lambda v: v in ("float32", "float64"), "float32 or float64")),
    Setting("out", (str, type(None)), None, "run directory; None: runs/<dataset>-<time>",
            "run"),
    Setting("distributed", str, "auto", "under mpiexec -n K: auto trains one model data-"
            "parallel on the K processes (NCCL between GPUs, MPI otherwise; the batch size is "
            "the global batch), mpi or nccl choose the engine, off trains each alone", "run",
            (lambda v: v in ("auto", "off", "mpi", "nccl"), "auto, off, mpi or nccl")),
    Setting("sync_batchnorm", bool, False, "with several processes, BatchNorm uses the "
            "statistics of the global batch instead of each process's share", "model"),
    Setting("doctor", bool, False, "diagnose the run: per-layer statistics, findings with "
            "fixes, doctor.md/json/png in the run directory", "diagnosis"),
    Setting("lr_find", bool, False, "run a learning-rate range test on a copy of the model "
            "first, write lr_find.png and use the suggested rate unless --lr is given",
            "diagnosis"),
]
BY_NAME = {s.name: s for s in SETTINGS}

#: defaults that differ per dataset (chosen from published MLP results; see README)
DATASET_DEFAULTS = {
    # 512-256 over 256-128: on 30 different digits splits it never fell below 0.97 test
    # accuracy (lowest 0.972, mean 0.983); 256-128 did on 4 of them. About 1 s on two cores.
    "digits": {"hidden": "512,256", "batch_size": 64, "epochs": 30},
    "mnist": {"hidden": "512,256", "batch_size": 128, "epochs": 20, "dropout": 0.2},
    "fashion-mnist": {"hidden": "512,256", "batch_size": 128, "epochs": 20, "dropout": 0.2},
    "spirals": {"hidden": "64,64", "batch_size": 32, "epochs": 100, "lr": 0.01},
    "moons": {"hidden": "32,32", "batch_size": 32, "epochs": 60, "lr": 0.01},
    "circles": {"hidden": "32,32", "batch_size": 32, "epochs": 60, "lr": 0.01},
    "xor": {"hidden": "16,16", "batch_size": 32, "epochs": 60, "lr": 0.01},
    "blobs": {"hidden": "32", "batch_size": 32, "epochs": 40, "lr": 0.01},
    "regression": {"hidden": "64,64", "batch_size": 32, "epochs": 60, "lr": 0.003},
}


def help_text(setting: Setting) -> str:
    """The flag's help: what it does, its default and the datasets that change it."""
    text = f"{setting.help} (default: {setting.default})"
    per: dict = {}
    for dataset, overrides in DATASET_DEFAULTS.items():
        if setting.name in overrides and overrides[setting.name] != setting.default:
            per.setdefault(overrides[setting.name], []).append(dataset)
    if per:
        text += " [" + "; ".join(f"{'/'.join(names)}: {value}" for value, names in per.items())
        text += "]"
    return text


def _type_names(types) -> str:
    return " or ".join("none" if t is type(None) else t.__name__ for t in types)


def check_value(name: str, value, where: str):
    """Type-check one setting and return it normalised (its range is :func:`validate`'s).

    Whole numbers become ``int`` (NumPy integer scalars too), numbers for a rate
    ``float``; a ``batch_size`` may be ``"full"`` or a number written as text.
    ``where`` names the source in the error (``"flag"``, ``"config file run.toml"``).
    """
    if name not in BY_NAME:
        import difflib

        close = difflib.get_close_matches(name, BY_NAME, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown setting {name!r}{hint}; valid settings are: "
                          f"{', '.join(BY_NAME)}")
    setting = BY_NAME[name]
    types = setting.type if isinstance(setting.type, tuple) else (setting.type,)
    out = _normalised(value, types)
    if out is _WRONG_TYPE:
        raise ConfigError(f"{where}: setting {name!r} must be {_type_names(types)}, got "
                          f"{type(value).__name__} {value!r}")
    if name == "batch_size" and isinstance(out, str):
        text = out.strip().lower()
        out = int(text) if _whole_text(text) else text
    elif name == "hidden" and isinstance(out, (list, tuple)):
        out = [int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
               for v in out]
    return out


_WRONG_TYPE = object()


def _normalised(value, types):
    """``value`` as the first of ``types`` it can be without losing anything, else
    ``_WRONG_TYPE``. Booleans are never numbers here."""
    if value is None:
        return None if type(None) in types else _WRONG_TYPE
    if isinstance(value, bool):
        return value if bool in types else _WRONG_TYPE
    if float in types and isinstance(value, numbers.Real):
        return float(value)
    if int in types and isinstance(value, numbers.Integral):
        return int(value)
    for t in (str, list):
        if t in types and isinstance(value, t):
            return value
    if list in types and isinstance(value, tuple):
        return list(value)
    return _WRONG_TYPE


def load_toml(path) -> dict:
    """Read a TOML config file (a flat table; ``[train]``-style tables are merged)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):  # sections are only for grouping
            flat.update(value)
        else:
            flat[key] = value
    base = os.path.dirname(os.path.abspath(path))
    out = {}
    for key, value in flat.items():
        key = key.replace("-", "_")
        value = check_value(key, value, f"config file {path}")
        if key in ("data_dir", "out") and value is not None:
            value = _contained(base, value, key, path)
        out[key] = value
    return out


def _contained(base: str, value: str, key: str, path) -> str:
    """Resolve a relative path from a config file against the file's directory;
    a relative path may not climb out of it (absolute paths are the user's choice)."""
    if os.path.isabs(value):
        return value
    full = os.path.normpath(os.path.join(base, value))
    real, real_base = os.path.realpath(full), os.path.realpath(base)  # through links too
    if os.path.commonpath([full, base]) != base or os.path.commonpath([real, real_base]) \
            != real_base:
        raise ConfigError(f"config file {path}: {key} = {value!r} escapes the config file's "
                          "directory; use a path inside it or an absolute path")
    return full


def resolve(flags: dict, config_path=None, previous: dict | None = None) -> dict:
    """Merge defaults < dataset defaults < previous run (resume) < TOML < flags, and validate.

    Returns ``{name: {"value": v, "source": "default" | "dataset" | "resumed run" |
    "config file" | "flag"}}`` with every value normalised by :func:`validate`.
    """
    layers = [("resumed run", "resumed run", previous or {})]
    if config_path:
        layers.append(("config file", f"config file {os.fspath(config_path)}",
                       load_toml(config_path)))
    layers.append(("flag", "flag", {k: v for k, v in flags.items() if v is not None}))
    dataset = BY_NAME["dataset"].default
    for _, _, layer in layers:
        dataset = layer.get("dataset", dataset)
    resolved = {s.name: {"value": s.default, "source": "default"} for s in SETTINGS}
    for k, v in DATASET_DEFAULTS.get(str(dataset).lower(), {}).items():
        resolved[k] = {"value": v, "source": "dataset"}
    where: dict[str, str] = {}
    for source, label, layer in layers:
        for k, v in layer.items():
            resolved[k] = {"value": check_value(k, v, label), "source": source}
            where[k] = label
    values = validate({k: v["value"] for k, v in resolved.items()}, where)
    for k, v in values.items():
        resolved[k]["value"] = v
    _architecture(resolved)
    return resolved


#: the settings an architecture replaces, so that giving one with it is a mistake
_MLP_ONLY = {"cnn": ("hidden", "activation"),
             "layers": ("hidden", "activation", "dropout", "batchnorm")}


def _architecture(resolved: dict) -> None:
    """``--arch cnn`` and ``--layers`` build their own stacks: an MLP flag given with them
    (as a flag or in a config file) is an error; the classic CNN's dropout is 0.25 unless
    one was given."""
    given = {k for k, v in resolved.items() if v["source"] in ("flag", "config file")}
    arch, layers = resolved["arch"]["value"], resolved["layers"]["value"]
    if layers is not None and arch == "cnn":
        raise ConfigError("give --arch cnn or --layers, not both: --layers builds its own stack")
    which = "layers" if layers is not None else arch
    for name in _MLP_ONLY.get(which, ()):
        if name in given:
            raise ConfigError(f"--{name} applies to --arch mlp only; " + (
                "--layers describes the whole stack" if which == "layers" else
                "--arch cnn builds the classic CNN (describe another stack with --layers)"))
    if which == "cnn" and "dropout" not in given and resolved["dropout"]["source"] != \
            "resumed run":
        resolved["dropout"] = {"value": 0.25, "source": "arch cnn"}


def validate(values: dict, where: dict | str | None = None) -> dict:
    """Check every setting's type and range, and the names it refers to; return them normalised.

    ``values`` maps setting names to values (a missing one takes its default);
    ``where`` names their source in errors: one string for all, or a dict per
    setting (a value given as a flag is named by the setting alone). Returns a
    new dict of every setting, normalised as :func:`check_value` does.
    """
    unknown = set(values) - set(BY_NAME)
    if unknown:
        check_value(sorted(unknown)[0], None, _label(where, sorted(unknown)[0]) or "settings")
    out = {}
    for s in SETTINGS:
        label = _label(where, s.name)
        value = check_value(s.name, values.get(s.name, s.default), label or "settings")
        _check_range(s, value, f"{label}: " if label and label != "flag" else "")
        out[s.name] = value
    for name, check in _NAME_CHECKS:
        label = _label(where, name) if name else ""
        try:
            check(out)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}" if label and label != "flag" else str(exc)) \
                from None
    return out


def _label(where, name: str) -> str:
    if isinstance(where, dict):
        return where.get(name, "")
    return where or ""


def _check_range(s: Setting, value, prefix: str) -> None:
    flag = s.name.replace("_", "-")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{prefix}{flag} must be a finite number, got {value!r}")
    if s.name == "batch_size":
        if value != "full" and not (isinstance(value, int) and value > 0):
            raise ConfigError(f"{prefix}batch size must be a positive integer or 'full', got "
                              f"{value!r}")
    elif s.name == "hidden":
        try:
            hidden_sizes(value)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
    elif s.rule is not None and not s.rule[0](value):
        raise ConfigError(f"{prefix}{flag} must be {s.rule[1]}, got {value!r}")
