"""Losses on raw outputs (logits), each fused with its output activation.

Every loss is called as ``loss(output, target)`` and returns ``(value, d_output)``:
``value`` is a 0-d array on the output's device (no host sync), the **mean**
over the batch (and over output units where stated), and ``d_output`` is its
gradient with respect to ``output``, already divided by that count.

No epsilon inside a log: log-probabilities come from a shifted log-sum-exp,
so logits of +-1000 give finite values and gradients.
"""

from __future__ import annotations

import math

from .activations import sigmoid
from .backends import array_namespace
from .errors import ConfigError, names_hint

__all__ = ["Loss", "SoftmaxCrossEntropy", "SigmoidBinaryCrossEntropy", "MeanSquaredError",
           "LOSSES", "get_loss", "softmax", "log_softmax"]


def log_softmax(z):
    """Row-wise log-softmax of ``z`` ``(batch, classes)``, stable for any magnitude."""
    xp = array_namespace(z)
    shifted = z - xp.max(z, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(z):
    """Row-wise softmax of ``z`` ``(batch, classes)``."""
    xp = array_namespace(z)
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


class Loss:
    """Base class. ``task`` is ``"classification"`` or ``"regression"``."""

    name = "loss"
    task = "classification"
    #: activation implied on the output by this loss (for doctor checks)
    output_activation = "identity"

    def __call__(self, output, target):
        raise NotImplementedError

    def predict_proba(self, output):
        """Turn raw outputs into probabilities (classification losses)."""
        raise ConfigError(f"{self.name} is a regression loss; use predict() instead")

    def expected_initial(self, n_classes: int) -> float | None:
        """Loss of a model that predicts uniformly (for the doctor); None if not defined."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax + cross-entropy on logits ``(batch, C)``, mean over the batch.

    ``target`` is integer labels ``(batch,)`` or one-hot / soft labels ``(batch, C)``.
    Gradient: ``(softmax(z) - onehot(y)) / batch``.
    """

    name = "softmax_cross_entropy"
    output_activation = "softmax"

    def __call__(self, output, target):
        xp = array_namespace(output)
        n, c = output.shape
        if target.ndim == 1:
            return self._labels(xp, output, target, n, c)
        logp = log_softmax(output)
        value = -xp.sum(target * logp) / n
        return value, (xp.exp(logp) - target) * (1.0 / n)

    def _labels(self, xp, z, labels, n, c):
        """Integer labels: the loss and its gradient from one shifted exponential.

        With ``s = z - max(z)`` and ``S = sum(exp(s))`` per row, the row's loss is
        ``log(S) - s[label]`` and its gradient ``exp(s) / S - onehot``; both over ``n``.
        """
        shifted = z - xp.max(z, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=-1, keepdims=True)
        picked = xp.take_along_axis(shifted, labels[:, None], axis=-1)
        value = xp.sum(xp.log(total) - picked) * (1.0 / n)
        grad = e * ((1.0 / n) / total)
        hot = labels[:, None] == self._classes(xp, c, labels)
        return value, xp.where(hot, grad - 1.0 / n, grad)

    def _classes(self, xp, c, labels):
        """``arange(c)`` in the labels' dtype and device, made once and kept."""
        kept = getattr(self, "_arange", None)
        # the library first: dtypes of two libraries do not compare
        if (kept is None or type(kept) is not type(labels) or kept.shape[0] != c
                or kept.dtype != labels.dtype or kept.device != labels.device):
            kept = self._arange = xp.arange(c, dtype=labels.dtype, device=labels.device)
        return kept

    def predict_proba(self, output):
        return softmax(output)

    def expected_initial(self, n_classes):
        return math.log(n_classes)


class SigmoidBinaryCrossEntropy(Loss):
    """Sigmoid + binary cross-entropy on logits, mean over every element.

    ``output`` is ``(batch, k)`` (``k = 1`` for binary problems); ``target`` has
    the same shape, or is ``(batch,)`` of 0/1 when ``k = 1``. Per element:
    ``max(z, 0) - z*y + log1p(exp(-|z|))``; gradient ``(sigmoid(z) - y) / count``.
    """

    name = "sigmoid_binary_cross_entropy"
    output_activation = "sigmoid"

    def __call__(self, output, target):
        xp = array_namespace(output)
        if target.ndim == 1:
            target = target[:, None]
        target = xp.astype(target, output.dtype)
        if target.shape != output.shape:
            raise ConfigError(f"binary cross-entropy target shape {tuple(target.shape)} does "
                              f"not match output shape {tuple(output.shape)}")
        count = output.shape[0] * output.shape[1]
        per = xp.maximum(output, 0.0) - output * target + xp.log1p(xp.exp(-xp.abs(output)))
        return xp.sum(per) / count, (sigmoid(output) - target) * (1.0 / count)

    def predict_proba(self, output):
        xp = array_namespace(output)
        p = sigmoid(output)
        if output.shape[1] == 1:  # binary: report both classes, like softmax
            return xp.concat([1.0 - p, p], axis=1)
        return p

    def expected_initial(self, n_classes):
        return math.log(2.0)


class MeanSquaredError(Loss):
    """Mean squared error, mean over every element of ``(batch, k)``.

    Gradient: ``2 * (output - target) / count``.
    """

    name = "mse"
    task = "regression"

    def __call__(self, output, target):
        xp = array_namespace(output)
        if target.ndim == 1:
            target = target[:, None]
        if target.shape != output.shape:
            raise ConfigError(f"mse target shape {tuple(target.shape)} does not match output "
                              f"shape {tuple(output.shape)}")
        count = output.shape[0] * output.shape[1]
        diff = output - xp.astype(target, output.dtype)
        return xp.sum(diff * diff) / count, diff * (2.0 / count)


LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "sigmoid_binary_cross_entropy": SigmoidBinaryCrossEntropy,
    "mse": MeanSquaredError,
}
ALIASES = {"cross_entropy": "softmax_cross_entropy", "ce": "softmax_cross_entropy",
           "categorical_crossentropy": "softmax_cross_entropy",
           "bce": "sigmoid_binary_cross_entropy", "binary_cross_entropy":
           "sigmoid_binary_cross_entropy", "mean_squared_error": "mse"}


def get_loss(spec: str | Loss) -> Loss:
    """Return a loss object from a name (see ``LOSSES``) or pass one through."""
    if isinstance(spec, Loss):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"loss must be a name such as 'cross_entropy', got {spec!r}")
    key = ALIASES.get(spec.strip().lower(), spec.strip().lower())
    if key not in LOSSES:
        raise ConfigError(names_hint("loss", key, [*LOSSES, *ALIASES]))
    return LOSSES[key]()
