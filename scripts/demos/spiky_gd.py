"""Full-batch gradient descent with a learning rate too high: a spiky cost curve.

    python scripts/demos/spiky_gd.py
"""

from _demo import Run, digits, expect, header, healthy, show

import nnx
from nnx.doctor import lr_find

header("Full-batch gradient descent with a spiky cost",
       "Gradient descent on the whole training set (no minibatches) with lr = 2 on a tanh "
       "network. The step is larger than the sharpest direction of the loss surface allows: "
       "the cost jumps up, falls back, jumps again, and the tanh units saturate.")
x, y, xt, yt = digits(scale="unit")
broken = Run(nnx.mlp([64, 64, 10], activation="tanh"), x, y, lr=2.0, epochs=300, batch_size="full",
             test_data=(xt, yt))
show("broken: full-batch GD, lr 2.0", broken, ids={"loss-spikes", "lr-too-high",
                                                   "saturated-units"})
model = nnx.mlp([64, 64, 10], activation="tanh").init("cpu", 0)
print(f"range test on a copy of the model: {lr_find(model, 'cross_entropy', x, y)}")
fixed = Run(nnx.mlp([64, 64, 10], activation="tanh"), x, y, lr=0.5, epochs=300, batch_size="full",
            test_data=(xt, yt))
show("fixed:  full-batch GD, lr 0.5", fixed)
expect(broken, "loss-spikes", "lr-too-high", "saturated-units")
healthy(fixed)
