"""Model selection within a stage: the best weights so far, patience, and giving them back.

A stage's validation metric decides which epoch's weights it ends with. A later stage starts its
comparison from the weights it was given, so fine-tuning that never beats the probe before it
returns the probe's weights.
"""

from __future__ import annotations

from torch import nn

__all__ = ["metric_value", "BestWeights"]


def metric_value(metric: str, record: dict) -> float:
    """``record[metric]`` as "higher is better" (losses negated); the training loss when there is no
    validation set.

    >>> metric_value("val_loss", {"val_loss": 0.3, "train_loss": 0.5}), metric_value("val_accuracy", {"train_loss": 0.5})
    (-0.3, -0.5)
    """
    if metric in ("val_loss", "val_calibrated_loss"):
        return -record[metric] if metric in record else -record["train_loss"]
    return record.get(metric, -record["train_loss"])


class BestWeights:
    """The best epoch so far of one stage, by ``metric``; stop after ``patience`` epochs without gain.

    Only the tensors the stage can change (``keys``) are copied, so keeping the best of a
    fine-tuned head costs the head's size, not the backbone's.
    """

    def __init__(self, metric: str, patience: int | None, keys: set[str]) -> None:
        self.metric, self.patience, self.keys = metric, patience, keys
        self.best: float | None = None
        self.weights: dict | None = None
        self.bad_epochs = 0
        self.best_epoch: int | None = None  # -1: the weights the stage started from
        self.best_record: dict = {}  # the epoch record (or the starting point's validation) of the best

    def _snapshot(self, model: nn.Module) -> dict:
        return {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.keys}

    def start_from(self, model: nn.Module, record: dict) -> None:
        """The weights the stage starts from compete too; patience counts from the first epoch."""
        self.best, self.weights, self.bad_epochs = metric_value(self.metric, record), self._snapshot(model), -1
        self.best_epoch, self.best_record = -1, dict(record)

    def update(self, model: nn.Module, record: dict) -> bool:
        """After an epoch: keep its weights if they are the best so far. True when they are."""
        value = metric_value(self.metric, record)
        if self.best is None or value > self.best:
            self.best, self.weights, self.bad_epochs = value, self._snapshot(model), 0
            self.best_epoch, self.best_record = int(record.get("epoch", 0)), dict(record)
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Give the model the best weights seen (nothing to do when none were kept)."""
        if self.weights is not None:
            model.load_state_dict(self.weights, strict=False)

    def kept(self) -> str:
        """What the stage ends with, in words: the epoch whose weights were kept, or its starting point."""
        figure = self.best_record.get(self.metric)
        by = f" ({self.metric} {figure:.4f})" if isinstance(figure, float) else ""
        if self.best_epoch == -1:
            return f"kept the weights the stage started from: no epoch beat them on {self.metric}{by}"
        return f"kept epoch {self.best_epoch + 1}{by}" if self.best_epoch is not None else "kept the last epoch"

    def state_dict(self) -> dict:
        return {"best_metric": self.best, "best_state": self.weights or {}, "bad_epochs": self.bad_epochs,
                "best_epoch": self.best_epoch, "best_record": dict(self.best_record)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.weights = state["best_metric"], state["best_state"] or None
        self.bad_epochs = int(state["bad_epochs"])
        # checkpoints written before tlkit recorded which epoch was best do not say
        self.best_epoch = state.get("best_epoch")
        self.best_record = dict(state.get("best_record") or {})
