"""History: the per-epoch metrics of a run, and its plot (loss, the metric, and the
learning rate when it changed).
"""

from __future__ import annotations

import pytest
from small_trainers import mlp_trainer

import nnx
from nnx.train import History, LearningRateScheduler, Trainer


@pytest.fixture(scope="module")
def data():
    return nnx.data.blobs(n=120, classes=3, seed=0)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(fig):
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
             sorted(t.get_text() for t in (ax.get_legend().get_texts()
                                           if ax.get_legend() else [])))
            for ax in fig.axes]


def test_history_plot_writes_a_png_with_loss_and_accuracy(data, tmp_path):
    tr = mlp_trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=3, batch_size=32, validation_split=0.2)
    path = tmp_path / "curves.png"
    fig = h.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _labels(fig) == [("loss", "epoch", "loss", ["train", "validation"]),
                            ("accuracy", "epoch", "accuracy", ["train", "validation"])]
    assert list(fig.axes[0].lines[0].get_ydata()) == h["loss"]
    assert list(fig.axes[1].lines[1].get_xdata()) == [1, 2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name != "curves.png"]


def test_history_plot_writes_a_png_with_loss_and_accuracy_axes(tmp_path, blobs_300):
    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    h = tr.fit(blobs_300.x_train, blobs_300.y_train, epochs=3, batch_size=64, validation_split=0.2,
               callbacks=[LearningRateScheduler(lambda s: 0.01 * 0.9 ** s)])
    path = tmp_path / "curves.png"
    fig = h.plot(path)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:2] == ["loss", "accuracy"] and "learning rate" in labels
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train", "validation"]
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[2] in (3, 4)


def test_history_plot_shows_the_learning_rate_when_it_changed(data):
    tr = mlp_trainer(optimizer=nnx.SGD(0.1), schedule=nnx.schedules.Exponential(0.1, 0.9))
    h = tr.fit(data.x_train, data.y_train, epochs=3, batch_size=32)
    fig = h.plot()
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert fig.axes[2].get_yscale() == "log"


def test_history_plot_for_regression():
    ds = nnx.data.regression(n=100, features=2, seed=0)
    h = Trainer(nnx.mlp([2, 8, 1]), "mse").fit(ds.x_train, ds.y_train, epochs=2, batch_size=16)
    assert [ax.get_ylabel() for ax in h.plot().axes] == ["loss", "mae"]


def test_history_access():
    h = History()
    h.append(0, {"loss": 2.0, "val_loss": 3.0, "lr": 0.1})
    h.append(1, {"loss": 1.0, "val_loss": 2.5, "lr": 0.1})
    assert len(h) == 2 and h["loss"] == [2.0, 1.0] and "val_loss" in h
    assert h.best_epoch() == 2 and h.to_dict()["epoch"] == [1, 2]
    assert History(h.to_dict()).history == h.history
