"""A trained model on new data, in eval mode: outputs, predictions and evaluation.

Eval mode means no dropout and BatchNorm's running statistics. Inputs are
cut into batches so that a large set never needs one huge activation; the
evaluation sums go through the same accumulator as training
(:class:`~nnx.train.metrics.MetricSums`) and are read once at the end.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from ..data.checks import check_x_shape, to_host
from ..errors import DataError
from .batches import Batches
from .device_data import model_input_shape
from .metrics import MetricSums, labels_of

__all__ = ["device_inputs", "outputs", "evaluate_device", "predicted_labels"]


def device_inputs(model, x):
    """``x`` on the model's device in its dtype (device arrays of that backend stay as they
    are); ``(n, features)``, or images ``(n, height, width, channels)``."""
    backend = model.backend
    try:
        if array_namespace(x) is backend.xp and backend.name != "numpy":
            check_x_shape(tuple(x.shape), "x", model_input_shape(model))
            return x
    except TypeError:
        pass
    host = to_host(x, backend, "x")  # a DataError for what is not an array of numbers
    if host.dtype.kind not in "biuf":
        raise DataError(f"x must be numeric, got dtype {host.dtype}; convert it with "
                        "x.astype('float32')")
    check_x_shape(host.shape, "x", model_input_shape(model))
    if host.shape[0] == 0:
        raise DataError("x is empty: it has 0 rows, so there is nothing to predict")
    return backend.asarray(host, model.dtype)


def outputs(model, x, batch_size: int = 4096):
    """The model's outputs ``(n, n_out)`` on the device, in eval mode, in batches."""
    xd = device_inputs(model, x)
    n = xd.shape[0]
    outs = [model.forward(xd[i:min(i + batch_size, n), ...], train=False)[0]
            for i in range(0, n, batch_size)]
    return outs[0] if len(outs) == 1 else model.backend.xp.concat(outs, axis=0)


def evaluate_device(model, loss, xd, yd, labels=None, batch_size: int = 4096) -> dict:
    """Mean loss and accuracy, or loss, MAE and MSE, over device arrays ``xd`` and ``yd``
    (``labels``: their integer labels, derived when None); one host read per metric."""
    if labels is None and loss.task == "classification":
        labels = labels_of(yd)
    batches = Batches(xd, yd, labels, batch_size)
    sums = MetricSums(loss, model.backend, model.dtype)
    for b in range(len(batches)):
        xb, yb, lb = batches.batch(b)
        out = model.forward(xb, train=False)[0]
        value, _ = loss(out, yb)
        sums.add(value, out, yb, lb, xb.shape[0])
    return sums.means()


def predicted_labels(output):
    """Class labels ``(n,)`` int64 from logits ``(n, C)``; ``C = 1`` is a binary logit."""
    xp = array_namespace(output)
    if output.shape[1] == 1:
        return xp.astype(output[:, 0] > 0, xp.int64)
    return xp.argmax(output, axis=1)
