"""Optimizers: SGD (plain, momentum, Nesterov), RMSProp, Adam and AdamW.

Every optimizer follows PyTorch's update formulas, so runs can be checked
against ``torch.optim``; ``opt.step(model)`` updates the parameters from the
gradients and zeroes the gradients. Common keyword arguments: ``l2`` (penalty
added to the gradient), ``weight_decay`` (decoupled, as AdamW) and
``clip_norm`` (global-norm clipping without a host sync).

    opt = get_optimizer("adam", lr=1e-3, clip_norm=1.0)
"""

from __future__ import annotations

import inspect

from ..errors import ConfigError, names_hint
from .adaptive import Adam, AdamW, RMSProp
from .base import Optimizer, clip_grad_norm_, global_norm
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSProp", "Adam", "AdamW", "OPTIMIZERS", "DEFAULT_LR",
           "get_optimizer", "clip_grad_norm_", "global_norm"]

#: name -> (class, preset keyword arguments)
OPTIMIZERS: dict[str, tuple[type[Optimizer], dict]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (RMSProp, {}),
    "adam": (Adam, {}),
    "adamw": (AdamW, {}),
}

#: learning rate used when ``get_optimizer`` is given none
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "rmsprop": 0.001,
              "adam": 0.001, "adamw": 0.001}


def get_optimizer(name, lr: float | None = None, momentum: float | None = None,
                  weight_decay: float | None = None, l2: float = 0.0,
                  clip_norm: float | None = None, **kwargs) -> Optimizer:
    """Build an optimizer by name (see ``OPTIMIZERS``).

    ``lr=None`` uses ``DEFAULT_LR[name]``; ``momentum`` applies to the SGD
    family only (``"momentum"`` and ``"nesterov"`` default to 0.9);
    ``weight_decay=None`` keeps the class default (0.01 for AdamW, else 0).
    Other keyword arguments (``rho``, ``beta1``, ``beta2``, ``eps``,
    ``nesterov``) go to the class. An :class:`Optimizer` is returned as it is.
    """
    if isinstance(name, Optimizer):
        given = [k for k, v in (("lr", lr), ("momentum", momentum),
                                ("weight_decay", weight_decay), ("clip_norm", clip_norm))
                 if v is not None] + (["l2"] if l2 else []) + list(kwargs)
        if given:
            raise ConfigError(f"got an optimizer object and also {', '.join(given)}; set "
                              "them when you build the optimizer")
        return name
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ConfigError(names_hint("optimizer", str(name), OPTIMIZERS))
    cls, preset = OPTIMIZERS[key]
    kw = {**preset, "l2": l2, "clip_norm": clip_norm}
    if momentum is not None:
        if cls is not SGD:
            raise ConfigError(f"momentum does not apply to {key}; use sgd, momentum or "
                              "nesterov, or beta1 for adam/adamw")
        kw["momentum"] = momentum
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    valid = set(inspect.signature(cls.__init__).parameters) - {"self", "lr"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ConfigError(f"{key} takes no argument {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(valid))}")
    kw.update(kwargs)
    return cls(DEFAULT_LR[key] if lr is None else lr, **kw)
