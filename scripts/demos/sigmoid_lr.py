"""Learning rate 1.0 on a sigmoid network: saturated units and a jumpy, poor fit.

    python scripts/demos/sigmoid_lr.py
"""

from _demo import Run, digits, expect, header, healthy, show

import nnx

header("Learning rate 1.0 on a sigmoid network",
       "Plain SGD with lr = 1.0 on pixel values 0-16. Each update is a large fraction of the "
       "weights, so the sigmoid units are thrown to 0 or 1 where their derivative vanishes.")
x, y, xt, yt = digits(scale="pixels")
broken = Run(nnx.mlp([64, 64, 10], activation="sigmoid"), x, y, lr=1.0, epochs=20,
             test_data=(xt, yt))
show("broken: sigmoid MLP, SGD lr 1.0", broken, ids={"lr-too-high", "saturated-units"})
fixed = Run(nnx.mlp([64, 64, 10], activation="sigmoid"), x, y, lr=0.1, epochs=20,
            test_data=(xt, yt))
show("fixed:  the same network, SGD lr 0.1", fixed)
expect(broken, "lr-too-high", "saturated-units")
healthy(fixed)
