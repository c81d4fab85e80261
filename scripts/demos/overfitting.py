"""A deep network overfitting a small, noisily labelled training set.

    python scripts/demos/overfitting.py
"""

import numpy as np
from _demo import Run, digits, expect, header, healthy, show

import nnx
from nnx.train import EarlyStopping

header("A deep network overfitting a small set",
       "Three hidden layers of 256 units (about 150,000 weights) on 300 examples, 30% of them "
       "mislabelled, as hand-labelled data often is. The network learns the digits for a few "
       "epochs, then memorises the wrong labels: training loss falls to zero while the "
       "validation loss climbs.")
x, y, xt, yt = digits()
rng = np.random.default_rng(0)
x_small, y_small = x[:300], y[:300].copy()
wrong = rng.random(300) < 0.3
y_small[wrong] = rng.integers(0, 10, int(wrong.sum()))
x_val, y_val, x_test, y_test = xt[:180], yt[:180], xt[180:], yt[180:]
deep = [64, 256, 256, 256, 10]
broken = Run(nnx.mlp(deep), x_small, y_small, optimizer="adam", lr=1e-3, epochs=100,
             batch_size=25, validation_data=(x_val, y_val), test_data=(x_test, y_test))
show("broken: 100 epochs", broken, ids={"overfitting"})
stop = EarlyStopping(patience=5, restore_best_weights=True)
fixed = Run(nnx.mlp(deep), x_small, y_small, optimizer="adam", lr=1e-3, epochs=100,
            batch_size=25, validation_data=(x_val, y_val), test_data=(x_test, y_test),
            callbacks=[stop])
show(f"fixed:  early stopping (best epoch {stop.best_epoch}, weights restored)", fixed)
print(f"test loss: broken {broken.test['loss']:.3f}, fixed {fixed.test['loss']:.3f}")
expect(broken, "overfitting")
healthy(fixed)
