"""ReLU on the output layer before a cross-entropy that takes logits.

    python scripts/demos/relu_output.py
"""

from _demo import Run, digits, expect, header, healthy, show

import nnx

header("ReLU on the output layer",
       "The output layer ends with a ReLU, then softmax cross-entropy. Every negative logit "
       "becomes 0, so the network cannot say 'unlikely', and examples whose logits are all "
       "negative get no gradient at all.")
x, y, xt, yt = digits()
broken = Run(nnx.mlp([64, 64, 10], output="relu"), x, y, optimizer="adam", lr=1e-3,
             epochs=15, test_data=(xt, yt))
show("broken: mlp([64, 64, 10], output='relu')", broken, ids={"output-loss-mismatch"})
fixed = Run(nnx.mlp([64, 64, 10]), x, y, optimizer="adam", lr=1e-3, epochs=15,
            test_data=(xt, yt))
show("fixed:  mlp([64, 64, 10]) (linear outputs: logits)", fixed)
expect(broken, "output-loss-mismatch")
healthy(fixed)
