"""Resuming a run: where its settings and checkpoint are, and every check, before anything
in the run directory is written.

:func:`resume_source` finds the previous run's settings (``config.json``) and
its checkpoint; :func:`check_resumable` refuses, in the words of the command
line, a checkpoint of another architecture, feature or output count, or
number of processes; :func:`check_resume` then runs every check the resumed
``fit`` will run (``Trainer.check_state_dict``: metadata types, weights,
generators, optimizer and callback states, the training data's fingerprint).
:mod:`nnx.build` calls both before ``config.json`` is rewritten, so a refused
resume leaves the run directory exactly as it was.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings

from . import settings as settings_mod
from .errors import CheckpointError, ConfigError

__all__ = ["resume_source", "check_resumable", "check_resume"]


def resume_source(path) -> tuple[dict, str]:
    """The previous run's settings and checkpoint from a run directory or checkpoint file."""
    ckpt = os.path.join(path, "checkpoint.npz") if os.path.isdir(path) else os.fspath(path)
    if not os.path.exists(ckpt):
        raise ConfigError(f"nothing to resume at {path}: no checkpoint.npz there; pass a run "
                          "directory written by nnx or its checkpoint.npz")
    config_file = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "config.json")
    for own in (ckpt, config_file):  # read only the run's own files, as they are written
        if os.path.islink(own):
            raise ConfigError(f"{own} is a symbolic link (to {os.readlink(own)}); a run "
                              "directory holds its own files, so nnx will not read or write "
                              "through it: remove the link, or resume another run")
    previous = {}
    if os.path.exists(config_file):
        try:
            with open(config_file, encoding="utf-8") as f:
                saved = json.load(f)["settings"]
            previous = {k: v["value"] for k, v in saved.items()
                        if k in settings_mod.BY_NAME and k != "out"}
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            raise ConfigError(f"{config_file} is damaged ({exc}); pass the settings as flags "
                              "and the checkpoint file to --resume") from None
    return previous, ckpt


def _check_images(arch: dict, model, ds, path) -> None:
    """A model of images and its checkpoint take examples of the same shape (their first
    dense layer's n_in does not say it)."""
    saved = tuple(arch.get("input_shape") or ())
    mine = tuple(getattr(model, "input_shape", None) or ())
    if 3 in (len(saved), len(mine)) and saved != mine:
        raise CheckpointError(
            f"{path} was saved from a different model: it takes examples of shape "
            f"{saved or 'rows'} but dataset {ds.name} gives {mine or (model.n_in,)}; resume "
            "with the data and --arch it was trained with, or start a new run with another --out")


def check_resumable(path, model, ds, epochs: int, run_path, ranks: int = 1) -> None:
    """Refuse a damaged checkpoint, or one of another architecture, before the run
    directory's config.json is rewritten: a mistaken --resume must leave the run resumable.
    Data of another shape is named as such; a finished run is warned about (more --epochs)."""
    from .checkpoint import check_architecture, load_checkpoint
    from .distributed.parallel import check_world_size

    meta = load_checkpoint(path)["meta"]
    layers = meta["architecture"].get("layers", []) if isinstance(meta.get("architecture"),
                                                                  dict) else []
    dense = [la.get("config", {}) for la in layers
             if isinstance(la, dict) and la.get("type") == "Dense"]
    _check_images(meta["architecture"] if layers else {}, model, ds, path)
    if dense and model.n_in is not None and dense[0].get("n_in", model.n_in) != model.n_in:
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
    check_world_size(meta, ranks, path)
    done = meta.get("epoch")
    if isinstance(done, numbers.Integral) and done >= epochs and meta.get("resume_point") is None:
        warnings.warn(f"nothing to train: {run_path} has already trained {done} of {epochs} "
                      f"epochs; pass --epochs N with N > {done} to train further (the model is "
                      "evaluated and its files rewritten)", stacklevel=2)


def check_resume(plan, trainer, x, y, callbacks) -> None:
    """Check the checkpoint of ``plan`` as the resumed ``fit(x, y, ...)`` of ``trainer``
    with ``callbacks`` will (:meth:`~nnx.train.Trainer.check_state_dict`), changing
    nothing; training data other than the run's is refused unless ``--force-resume``."""
    from .checkpoint import load_checkpoint

    s = plan.settings
    trainer.check_state_dict(load_checkpoint(plan.checkpoint), source=plan.checkpoint, x=x,
                             y=y, batch_size=s["batch_size"], validation_split=s["val_split"],
                             callbacks=callbacks, force_resume=plan.force_resume)
