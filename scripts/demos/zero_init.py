"""Zero initialisation: every hidden unit stays a copy of the others, and nothing learns.

    python scripts/demos/zero_init.py
"""

from _demo import Run, digits, expect, header, healthy, show

import nnx

header("Zero initialisation",
       "All weights start at 0. Every hidden unit computes the same thing and gets the same "
       "gradient (here exactly 0, since ReLU(0) = 0), so the cost stays identical epoch after "
       "epoch.")
x, y, xt, yt = digits()
broken = Run(nnx.mlp([64, 64, 10], init="zeros"), x, y, lr=0.1, epochs=20, test_data=(xt, yt))
show("broken: mlp([64, 64, 10], init='zeros')", broken, ids={"symmetric-units", "zero-gradients"})
fixed = Run(nnx.mlp([64, 64, 10], init="auto"), x, y, lr=0.1, epochs=20, test_data=(xt, yt))
show("fixed:  mlp([64, 64, 10], init='auto')", fixed)
expect(broken, "symmetric-units", "zero-gradients")
healthy(fixed)
