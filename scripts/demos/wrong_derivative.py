"""A custom activation whose derivative is written wrong: sigmoid(z) * sigmoid(1 - z).

    python scripts/demos/wrong_derivative.py
"""

import textwrap

from _demo import WIDTH, Run, digits, expect, header, healthy, show
from array_api_compat import array_namespace

import nnx
from nnx.activations import sigmoid


def my_sigmoid(z):
    return sigmoid(z)


def wrong_derivative(*, z, a):
    return sigmoid(z) * sigmoid(1 - z)  # should be sigmoid(z) * (1 - sigmoid(z))


def right_derivative(*, z, a):
    return a * (1 - a)


header("Custom activation with a wrong derivative",
       "A hand-written sigmoid whose derivative reads sigmoid(z) * sigmoid(1 - z). Training "
       "still seems to work, so nothing looks wrong: the gradient points roughly the right "
       "way, but it is not the gradient of this network. nnx checks a derivative against "
       "central differences when it is defined; this one skipped the check (check=False).")
try:
    nnx.define_activation("my_sigmoid", my_sigmoid, wrong_derivative, family="sigmoid",
                          output_range=(0.0, 1.0), register=False)
except nnx.DerivativeMismatch as exc:
    print(textwrap.fill(f"define_activation refuses it: {exc}", WIDTH,
                        subsequent_indent="  "))
bad = nnx.define_activation("my_sigmoid", my_sigmoid, wrong_derivative, family="sigmoid",
                            output_range=(0.0, 1.0), register=False, check=False)
good = nnx.define_activation("my_sigmoid", my_sigmoid, right_derivative, family="sigmoid",
                             output_range=(0.0, 1.0), register=False)
assert array_namespace  # the forward and derivative above run on any backend
x, y, xt, yt = digits()
broken = Run(nnx.mlp([64, 32, 10], activation=bad), x, y, lr=0.5, epochs=15,
             test_data=(xt, yt))
show("broken: derivative sigmoid(z) * sigmoid(1 - z)", broken, ids={"derivative-mismatch"})
fixed = Run(nnx.mlp([64, 32, 10], activation=good), x, y, lr=0.5, epochs=15,
            test_data=(xt, yt))
show("fixed:  derivative a * (1 - a)", fixed)
expect(broken, "derivative-mismatch")
healthy(fixed)
