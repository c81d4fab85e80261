"""Small trainers and a scripted callback, shared by the Trainer and callback tests."""

from __future__ import annotations

import nnx
from nnx.train import Callback, Trainer


def adam_trainer(device="numpy", sizes=(2, 16, 3), **kw):
    """A Trainer of an MLP of ``sizes`` (2 features, 3 classes by default): Adam at 0.01."""
    kw.setdefault("optimizer", "adam")
    kw.setdefault("lr", 0.01)
    return Trainer(nnx.mlp(list(sizes)), device=device, **kw)


def mlp_trainer(**kw):
    """A Trainer of a 2-8-3 MLP; the learning rate is 0.01 unless an optimizer is given."""
    if "optimizer" not in kw:
        kw["lr"] = 0.01
    return Trainer(nnx.mlp([2, 8, 3]), **kw)


class Script(Callback):
    """Overwrite ``logs[key]`` with scripted values, as if the model had produced them."""

    def __init__(self, key, values):
        self.key, self.values = key, list(values)

    def on_epoch_end(self, trainer, epoch, logs):
        logs[self.key] = self.values[epoch]
