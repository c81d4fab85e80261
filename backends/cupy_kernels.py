"""CuPy's fused kernels (``backend.fast`` on ``cuda``): an optimizer's whole update and an
activation's backward pass, each in one kernel launch instead of one per operation.

Each kernel does exactly the operations of nnx's unfused path, in the same order and
precision: compiled with ``--fmad=false`` so that no multiply and add are contracted
into one rounding, and with IEEE division and square roots (NVRTC's defaults), it
gives bitwise the results of the separate CuPy operations. Python numbers are cast to
the arrays' dtype, as CuPy casts them in ``g *= lr``. The optimizer kernels leave the
gradient at zero, which the unfused path does with one more operation.

tests/test_fast_paths.py (``-m gpu``) checks every kernel against the unfused path.
"""

from __future__ import annotations

import math

#: no fused multiply-add: one rounding per operation, as in separate kernels
OPTIONS = ("--fmad=false",)

# ``g0`` is the gradient array passed once more as an input: it fixes the dtype T (Python
# numbers alone would not) and is read before ``g`` is written, element by element
_SGD = "T s = g0 * lr; p = p - s; g = 0;"
_MOMENTUM = "m = m * mu; m = m + g0; T s = m * lr; p = p - s; g = 0;"
_NESTEROV = "m = m * mu; m = m + g0; T t = mu * m; T s = g0 + t; s = s * lr; p = p - s; g = 0;"
_RMSPROP = ("T sq = g0 * g0; sq = sq * c; v = v * rho; v = v + sq; T d = sqrt(v); d = d + eps; "
            "T s = g0 / d; s = s * lr; p = p - s; g = 0;")
_ADAM = ("m = m - g0; m = m * b1; m = m + g0; T q = g0 * g0; q = q * c2; v = v * b2; "
         "v = v + q; T d = sqrt(v); d = d / bc; d = d + eps; T s = m / d; s = s * step; "
         "p = p - s; g = 0;")


def kernels(cupy) -> dict:
    """The fused functions for :class:`backends.fast.OutKernels` (keyword arguments)."""

    def kernel(ins, outs, body, name):
        return cupy.ElementwiseKernel(ins, outs, body, f"nnx_{name}", options=OPTIONS)

    sgd = kernel("T g0, T lr", "T p, T g", _SGD, "sgd")
    momentum = kernel("T g0, T lr, T mu", "T p, T g, T m", _MOMENTUM, "momentum")
    nesterov = kernel("T g0, T lr, T mu", "T p, T g, T m", _NESTEROV, "nesterov")
    rmsprop = kernel("T g0, T lr, T rho, T c, T eps", "T p, T g, T v", _RMSPROP, "rmsprop")
    adam = kernel("T g0, T step, T b1, T b2, T c2, T bc, T eps", "T p, T g, T m, T v", _ADAM,
                  "adam")

    def sgd_update(p, g, m, lr, momentum_, nesterov_):
        """SGD (``m`` None), momentum or Nesterov: see :class:`nnx.optim.SGD`."""
        if m is None:
            sgd(g, lr, p, g)
        else:
            (nesterov if nesterov_ else momentum)(g, lr, momentum_, p, g, m)

    def rmsprop_update(p, g, v, lr, rho, eps):
        rmsprop(g, lr, rho, 1.0 - rho, eps, p, g, v)

    def adam_update(p, g, m, v, lr, beta1, beta2, eps, t):
        # the scalars the unfused path computes on the host, as Python floats
        adam(g, lr / (1.0 - beta1 ** t), beta1, beta2, 1.0 - beta2,
             math.sqrt(1.0 - beta2 ** t), eps, p, g, m, v)

    relu = kernel("T dy, T z", "T dx", "dx = dy * (z > (T)0 ? (T)1 : (T)0);", "relu_backward")
    leaky = kernel("T dy, T z, T alpha, T c", "T dx",
                   "T d = c * (z > (T)0 ? (T)1 : (T)0); d = alpha + d; dx = dy * d;",
                   "leaky_relu_backward")
    sigmoid = kernel("T dy, T a", "T dx", "T d = (T)1 - a; d = a * d; dx = dy * d;",
                     "sigmoid_backward")
    tanh = kernel("T dy, T a", "T dx", "T q = a * a; T d = (T)1 - q; dx = dy * d;",
                  "tanh_backward")

    return {
        "sgd_update": sgd_update, "rmsprop_update": rmsprop_update, "adam_update": adam_update,
        "relu_backward": lambda dy, z, a: relu(dy, z),
        "leaky_relu_backward": lambda dy, z, a, alpha: leaky(dy, z, alpha, 1.0 - alpha),
        "sigmoid_backward": lambda dy, z, a: sigmoid(dy, a),
        "tanh_backward": lambda dy, z, a: tanh(dy, a),
    }
