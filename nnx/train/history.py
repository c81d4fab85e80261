"""History: the per-epoch metrics of a run, and their plot."""

from __future__ import annotations


class History:
    """Per-epoch metrics, a dict of lists: ``history["loss"][i]`` is the training loss
    of epoch ``history["epoch"][i]`` (1-based).

    Keys: ``epoch``, ``loss``, ``accuracy`` (classification) or ``mae`` and ``mse``
    (regression), their ``val_`` twins when there is validation data, ``lr`` (the
    rate of the epoch's last step), ``time`` (seconds) and, with
    ``on_nonfinite="skip"``, ``skipped`` (steps skipped). ``plot()`` draws them.
    """

    def __init__(self, data: dict | None = None) -> None:
        self.history: dict[str, list] = {k: list(v) for k, v in (data or {}).items()}

    def append(self, epoch: int, logs: dict) -> None:
        self.history.setdefault("epoch", []).append(epoch + 1)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __getitem__(self, key: str) -> list:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def __len__(self) -> int:
        return len(self.history.get("epoch", []))

    def best_epoch(self, monitor: str = "val_loss") -> int | None:
        """1-based epoch with the best ``monitor`` (lowest loss / highest accuracy)."""
        key = monitor if monitor in self.history else monitor.removeprefix("val_")
        values = self.history.get(key)
        if not values:
            return None
        pick = max if "acc" in key else min
        i = pick(range(len(values)), key=lambda j: values[j])
        return self.history["epoch"][i]

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.history.items()}

    def plot(self, path=None, title: str | None = None):
        """Loss and accuracy (train and validation) on one figure, plus the learning
        rate when it changed; returns the matplotlib Figure (drawn with Agg, never
        shown). Saves a PNG when ``path`` is given."""
        from ..plot import plot_history

        return plot_history(self, path, title=title)

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={sorted(self.history)})"
