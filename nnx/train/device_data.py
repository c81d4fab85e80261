"""Moving a dataset to the trainer's device: checked on the host, cast, copied once.

The checks are :func:`nnx.data.check_xy`'s, with the trainer's loss, model
shapes and dtype, so the Trainer judges data by the same rules as the loaders.
"""

from __future__ import annotations

from ..data import checks

__all__ = ["to_device_xy", "model_input_shape"]


def model_input_shape(model) -> tuple | None:
    """The per-example input shape ``model`` takes: its ``input_shape`` (images), else
    ``(n_in,)``, else None (features of any count)."""
    shape = getattr(model, "input_shape", None)
    if shape:
        return tuple(shape)
    return (model.n_in,) if model.n_in is not None else None


def to_device_xy(trainer, x, y, where: str):
    """Check ``x`` ``(n, ...)`` and ``y`` for the trainer's model and loss, then copy them to
    its device: ``x`` in the trainer's dtype, ``y`` as int64 labels ``(n,)`` or float rows
    ``(n, k)`` (probabilities or regression targets). ``where`` names the data in errors."""
    host_x = checks.to_host(x, trainer.backend, f"{where} x")
    host_y = checks.to_host(y, trainer.backend, f"{where} y")
    model = trainer.model
    x, y, _ = checks.check_xy(host_x, host_y, where=where, loss=trainer.loss,
                              input_shape=model_input_shape(model), n_out=model.n_out,
                              dtype=trainer.dtype)
    b = trainer.backend
    return b.asarray(x, trainer.dtype), b.asarray(y, "int64" if y.dtype.kind == "i" else
                                                  trainer.dtype)
