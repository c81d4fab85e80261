"""The settings that name things in registries, checked by looking the names up.

:func:`nnx.settings.validate` runs each check of :data:`NAME_CHECKS` on the
normalised settings; a name that is not in its registry is a ConfigError
listing the valid ones. Nothing is evaluated: names are only looked up.
"""

from __future__ import annotations

from .errors import ConfigError

__all__ = ["NAME_CHECKS"]


def _activation(cfg: dict) -> None:
    from .activations import get_activation

    act = cfg["activation"]
    for name in (act.split(":", 1)[1].split(",") if act.lower().startswith("mixed:") else [act]):
        get_activation(name)


def _init(cfg: dict) -> None:
    from .initializers import get_initializer

    get_initializer(cfg["init"])


def _loss(cfg: dict) -> None:
    from .losses import get_loss

    if cfg["loss"] is not None:
        get_loss(cfg["loss"])


def _optimizer(cfg: dict) -> None:
    from .optim import get_optimizer

    get_optimizer(cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"],
                  weight_decay=cfg["weight_decay"] or None, l2=cfg["l2"],
                  clip_norm=cfg["clip_norm"])


def _schedule(cfg: dict) -> None:
    from .errors import names_hint
    from .schedules import SCHEDULES

    if cfg["schedule"] not in SCHEDULES:
        raise ConfigError(names_hint("schedule", cfg["schedule"], SCHEDULES))


#: the names a setting refers to, looked up in their registries (each error names its source)
NAME_CHECKS = (("activation", _activation), ("init", _init), ("loss", _loss),
               # the optimizer's options come from several settings, maybe several sources
               (None, _optimizer), ("schedule", _schedule))
