"""scikit-learn estimators that train an nnx multilayer perceptron.

:class:`NNXClassifier` and :class:`NNXRegressor` follow scikit-learn's
estimator contract, so they work in ``Pipeline``, ``GridSearchCV`` and
``cross_val_score`` and pass ``sklearn.utils.estimator_checks``:

- ``__init__`` only stores its arguments; everything is checked in ``fit``;
- ``random_state`` is never changed: an int seeds the weights and shuffles, so
  two fits give the same model; None or a ``RandomState`` draws the seed from it;
- ``classes_``, ``n_features_in_``, ``loss_curve_`` and ``n_iter_`` exist only
  after ``fit``; predicting before it raises ``NotFittedError``;
- a pickle holds the weights as host NumPy arrays and the architecture, never
  the device arrays or the trainer, so it loads on a machine without the device
  it was trained on (the model is rebuilt on ``device`` at the first prediction).

float64 is the default dtype (scikit-learn's own): predictions on a subset of
rows then equal those on the whole set to its 1e-7 tolerance, which float32
matrix products in other batch shapes do not meet. Use ``dtype="float32"``
for speed or on a device without float64.

    from nnx.sklearn import NNXClassifier
    clf = NNXClassifier(hidden=(64,), epochs=50, random_state=0).fit(x, y)
    clf.predict_proba(x_new)
"""

from __future__ import annotations

import copy

import numpy as np

from .errors import DataError
from .extras import require

_sk = require("sklearn", "nnx.sklearn")
_base = require("sklearn.base", "nnx.sklearn")
_validation = require("sklearn.utils.validation", "nnx.sklearn")
_multiclass = require("sklearn.utils.multiclass", "nnx.sklearn")
_utils = require("sklearn.utils", "nnx.sklearn")

__all__ = ["NNXClassifier", "NNXRegressor"]

#: rows per forward pass when predicting
_PREDICT_BATCH = 4096


class _NNXEstimator(_base.BaseEstimator):
    """What both estimators share: the network, its training and its pickling."""

    _loss = "mse"

    def __init__(self, hidden=(100,), activation="relu", optimizer="adam", lr=None,
                 epochs=200, batch_size=64, device="cpu", random_state=None, dtype="float64",
                 batchnorm=False, dropout=0.0, init="auto", weight_decay=None):
        self.hidden = hidden
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.dtype = dtype
        self.batchnorm = batchnorm
        self.dropout = dropout
        self.init = init
        self.weight_decay = weight_decay

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(
                self.random_state, bool):
            return int(self.random_state)
        return int(_utils.check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _train(self, x, y, n_out: int) -> None:
        import nnx

        hidden = [self.hidden] if isinstance(self.hidden, (int, np.integer)) else self.hidden
        model = nnx.mlp([x.shape[1], *hidden, n_out], activation=self.activation,
                        init=self.init, dropout=self.dropout, batchnorm=self.batchnorm)
        optimizer = nnx.get_optimizer(
            copy.deepcopy(self.optimizer), lr=self.lr, weight_decay=self.weight_decay
        ) if isinstance(self.optimizer, str) else copy.deepcopy(self.optimizer)
        trainer = nnx.Trainer(model, loss=self._loss, optimizer=optimizer,
                              device=self.device, seed=self._seed(), dtype=self.dtype)
        batch = self.batch_size
        if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool):
            # a batch larger than the data is the whole data (as scikit-learn's MLP)
            batch = min(int(batch), x.shape[0]) if batch > 0 else int(batch)
        history = trainer.fit(x.astype(self.dtype, copy=False), y, epochs=self.epochs,
                              batch_size=batch)
        self.loss_curve_ = [float(v) for v in history["loss"]]
        self.n_iter_ = len(self.loss_curve_)
        self._model = model

    def _outputs(self, x) -> np.ndarray:
        """Raw network outputs (logits or scaled targets) ``(n, n_out)`` on the host."""
        _validation.check_is_fitted(self)
        x = _validation.validate_data(self, x, reset=False, dtype=[np.float64, np.float32])
        model = self._device_model()
        backend = model.backend
        parts = [backend.to_numpy(model(backend.asarray(x[i:i + _PREDICT_BATCH], model.dtype)))
                 for i in range(0, x.shape[0], _PREDICT_BATCH)]
        return np.concatenate(parts, axis=0).astype(np.float64)

    def _device_model(self):
        model = self.__dict__.get("_model")
        if model is None:  # unpickled: rebuild on the device from the host weights
            from .layers import build

            model = build(self._architecture).init(self.device, 0, self.dtype)
            model.set_weights(self._weights)
            self._model = model
        return model

    def __getstate__(self):
        state = super().__getstate__()
        model = state.pop("_model", None)
        if model is not None:  # host arrays and the architecture, never device arrays
            state["_weights"] = model.get_weights()
            state["_architecture"] = model.config()
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class NNXClassifier(_base.ClassifierMixin, _NNXEstimator):
    """A multilayer perceptron classifier trained by nnx with softmax cross-entropy.

    Parameters
    ----------
    hidden : sizes of the hidden layers, e.g. ``(64, 32)``; ``()`` is a linear model.
    activation : hidden activation name (``"relu"``, ``"tanh"``, ``"gelu"``, ...).
    optimizer : optimizer name (``"adam"``, ``"sgd"``, ``"momentum"``, ``"adamw"``, ...).
    lr : learning rate; None takes the optimizer's default.
    epochs : passes over the training data.
    batch_size : examples per step (capped at the number of rows) or ``"full"``.
    device : nnx device string (``"cpu"``, ``"torch"``, ``"cuda"``, ...).
    random_state : int, RandomState or None; seeds the weights and the shuffles.
    dtype : ``"float64"`` (default) or ``"float32"``.
    batchnorm, dropout, init, weight_decay : as in :func:`nnx.mlp` and
        :func:`nnx.get_optimizer`.

    Attributes
    ----------
    classes_ : array of shape (n_classes,), the labels in sorted order.
    n_features_in_ : number of features seen in ``fit``.
    loss_curve_ : mean training loss of each epoch.
    n_iter_ : number of epochs run.
    """

    _loss = "cross_entropy"

    def fit(self, X, y):
        """Train on ``X`` ``(n, features)`` and labels ``y`` ``(n,)`` of any type."""
        X, y = _validation.validate_data(self, X, y, dtype=[np.float64, np.float32])
        _multiclass.check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"NNXClassifier needs at least two classes in y; got only one "
                            f"class ({classes[0]}) in {len(y)} rows")
        self.classes_ = classes
        self._train(X, encoded.astype(np.int64), len(classes))
        return self

    def predict_proba(self, X):
        """Class probabilities ``(n, n_classes)``, columns in the order of ``classes_``."""
        z = self._outputs(X)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably from the logits."""
        z = self._outputs(X)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The most probable label of each row, ``(n,)``, of the dtype of ``classes_``."""
        best = np.argmax(self._outputs(X), axis=1)  # checks fitted before classes_ is read
        return self.classes_[best]


class NNXRegressor(_base.RegressorMixin, _NNXEstimator):
    """A multilayer perceptron regressor trained by nnx with mean squared error.

    Takes the parameters of :class:`NNXClassifier`, and ``scale_target``: train
    on the target standardised per column (mean 0, standard deviation 1) and
    undo it in :meth:`predict`, so the learning rate suits targets of any scale.

    Attributes
    ----------
    n_features_in_, loss_curve_ (on the standardised target when ``scale_target``),
    n_iter_ : as for the classifier.
    """

    _loss = "mse"

    def __init__(self, hidden=(100,), activation="relu", optimizer="adam", lr=None,
                 epochs=200, batch_size=64, device="cpu", random_state=None, dtype="float64",
                 batchnorm=False, dropout=0.0, init="auto", weight_decay=None,
                 scale_target=True):
        super().__init__(hidden=hidden, activation=activation, optimizer=optimizer, lr=lr,
                         epochs=epochs, batch_size=batch_size, device=device,
                         random_state=random_state, dtype=dtype, batchnorm=batchnorm,
                         dropout=dropout, init=init, weight_decay=weight_decay)
        self.scale_target = scale_target

    def fit(self, X, y):
        """Train on ``X`` ``(n, features)`` and targets ``y`` ``(n,)`` or ``(n, k)``."""
        X, y = _validation.validate_data(self, X, y, dtype=[np.float64, np.float32],
                                         multi_output=True, y_numeric=True)
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        self._one_column = np.ndim(y) == 1
        mean, scale = np.zeros(y2.shape[1]), np.ones(y2.shape[1])
        if self.scale_target:
            mean, std = y2.mean(axis=0), y2.std(axis=0)
            scale = np.where(std > 0, std, 1.0)
        self._target_mean, self._target_scale = mean, scale
        self._train(X, (y2 - mean) / scale, y2.shape[1])
        return self

    def predict(self, X):
        """Predicted targets: ``(n,)`` when fitted on a 1-D ``y``, else ``(n, k)``."""
        out = self._outputs(X) * self._target_scale + self._target_mean
        return out[:, 0] if self._one_column else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
