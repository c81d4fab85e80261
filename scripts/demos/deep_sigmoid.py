"""A deep sigmoid stack whose cost is stuck at 0.69 (ln 2): vanishing gradients.

    python scripts/demos/deep_sigmoid.py
"""

from _demo import Run, digits, expect, header, healthy, show

import nnx

header("Deep sigmoid stack stuck at 0.69",
       "Eight sigmoid hidden layers on an even/odd task. Each sigmoid passes at most a quarter "
       "of the gradient back, so the first layers receive almost none: the cost sits at "
       "ln 2 = 0.693, the loss of a coin toss.")
x, y, xt, yt = digits(binary=True)
deep = [64] + [32] * 8 + [1]
broken = Run(nnx.mlp(deep, activation="sigmoid"), x, y, loss="bce", lr=0.1, epochs=20,
             test_data=(xt, yt))
show("broken: 8 sigmoid hidden layers, SGD", broken,
     ids={"vanishing-gradients", "loss-plateau"})
fixed = Run(nnx.mlp(deep, activation="relu"), x, y, loss="bce", lr=0.1, epochs=20,
            test_data=(xt, yt))
show("fixed:  the same depth with ReLU and init='auto' (He)", fixed)
expect(broken, "vanishing-gradients", "loss-plateau")
healthy(fixed)
