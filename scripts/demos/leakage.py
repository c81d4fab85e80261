"""Duplicated train/test data: oversampling before splitting inflates the test score.

    python scripts/demos/leakage.py
"""

import numpy as np
from _demo import Run, digits, expect, header, healthy, show

import nnx

header("Duplicated train/test data",
       "300 examples are oversampled five times and only then split into training and test "
       "sets, so most test examples have an identical copy in the training set. The test "
       "accuracy measures memory, not generalisation.")
x, y, xt, yt = digits()
rng = np.random.default_rng(0)
x_small, y_small = x[:300], y[:300]
x_big, y_big = np.tile(x_small, (5, 1)), np.tile(y_small, 5)
order = rng.permutation(x_big.shape[0])
cut = int(0.8 * order.size)
tr, te = order[:cut], order[cut:]
broken = Run(nnx.mlp([64, 128, 10]), x_big[tr], y_big[tr], optimizer="adam", lr=1e-3,
             epochs=15, test_data=(x_big[te], y_big[te]))
show("broken: oversample, then split", broken, ids={"train-test-leakage"})
# split first; oversample only the training part; test on examples never seen
x_tr, y_tr = np.tile(x_small[:240], (5, 1)), np.tile(y_small[:240], 5)
fixed = Run(nnx.mlp([64, 128, 10]), x_tr, y_tr, optimizer="adam", lr=1e-3, epochs=15,
            test_data=(x_small[240:], y_small[240:]))
show("fixed:  split, then oversample the training part (honest test accuracy)", fixed)
expect(broken, "train-test-leakage")
healthy(fixed)
