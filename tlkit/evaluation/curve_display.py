"""Curves drawn from numbers: ROC and precision-recall of a two-class result, and a run's learning curves.

The same Display pattern as :mod:`tlkit.evaluation.display`: build from the numbers (or
``from_result`` / ``from_history`` / ``from_run``), ``plot(ax=None)`` draws and returns the display
with ``ax_`` and ``figure_`` kept. The numbers come from :mod:`tlkit.evaluation.binary` and
:mod:`tlkit.evaluation.history`; nothing here computes a metric or saves a figure.

Example:
    >>> import numpy as np
    >>> roc = RocCurveDisplay(np.array([0, 0, 1]), np.array([0, 1, 1]), roc_auc=1.0, positive="defect")
    >>> roc.points
    []
    >>> # roc.plot().figure_.savefig("roc.png")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tlkit.evaluation.display import AxesDisplay, plain, pyplot_figure
from tlkit.evaluation.history import ACCURACIES, LOSSES, TrainingHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_LABELS = {"train_loss": "train loss", "val_loss": "validation loss", "val_calibrated_loss": "validation loss (calibrated)",
           "train_accuracy": "train accuracy", "val_accuracy": "validation accuracy",
           "val_balanced_accuracy": "validation balanced accuracy", "lr": "learning rate (last group)"}


def operating_points(binary: Any, x_key: str, y_key: str) -> list[tuple[str, float, float]]:
    """(label, x, y) of the threshold's and the argmax's operating points, where both figures exist."""
    points = []
    if binary.at_threshold is not None:
        points.append((f"threshold {binary.threshold:.3g}", binary.at_threshold[x_key], binary.at_threshold[y_key]))
    points.append(("argmax (default)", binary.at_argmax[x_key], binary.at_argmax[y_key]))
    return [(label, x, y) for label, x, y in points if x is not None and y is not None]


class RocCurveDisplay(AxesDisplay):
    """The ROC curve (true-positive rate against false-positive rate) with its AUC; ``points``: operating
    points (label, false-positive rate, recall) marked on it."""

    figsize = (5.5, 5.0)

    def __init__(self, fpr: np.ndarray, tpr: np.ndarray, *, roc_auc: float | None, positive: str,
                 points: Sequence[tuple[str, float, float]] = ()) -> None:
        self.fpr, self.tpr = np.asarray(fpr), np.asarray(tpr)
        self.roc_auc, self.positive, self.points = roc_auc, positive, list(points)

    @classmethod
    def from_result(cls, result: Any) -> RocCurveDisplay:
        """The ROC curve of a two-class ``EvalResult`` (its ``binary`` field)."""
        b = _binary(result)
        return cls(b.fpr, b.tpr, roc_auc=b.roc_auc, positive=b.positive,
                   points=operating_points(b, "false_positive_rate", "recall"))

    def _draw(self, ax: Axes) -> None:
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="chance")
        if len(self.fpr):
            ax.plot(self.fpr, self.tpr, color="#4878b0", linewidth=2, label=f"ROC (AUC {self.roc_auc:.3f})")
        _mark(ax, self.points)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.02)
        ax.set_xlabel("False-positive rate")
        ax.set_ylabel(plain(f"Recall of {self.positive}"))
        auc = "undefined: one class only" if self.roc_auc is None else f"AUC = {self.roc_auc:.3f}"
        ax.set_title(plain(f"ROC, positive = {self.positive} ({auc})"))
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)


class PrecisionRecallDisplay(AxesDisplay):
    """The precision-recall curve with its average precision, the prevalence as the chance line, and
    operating points (label, recall, precision)."""

    figsize = (5.5, 5.0)

    def __init__(self, precision: np.ndarray, recall: np.ndarray, *, average_precision: float | None, positive: str,
                 prevalence: float, points: Sequence[tuple[str, float, float]] = ()) -> None:
        self.precision, self.recall = np.asarray(precision), np.asarray(recall)
        self.average_precision, self.positive, self.prevalence = average_precision, positive, float(prevalence)
        self.points = list(points)

    @classmethod
    def from_result(cls, result: Any) -> PrecisionRecallDisplay:
        """The precision-recall curve of a two-class ``EvalResult`` (its ``binary`` field)."""
        b = _binary(result)
        return cls(b.precision, b.recall, average_precision=b.average_precision, positive=b.positive,
                   prevalence=b.prevalence, points=operating_points(b, "recall", "precision"))

    def _draw(self, ax: Axes) -> None:
        ax.axhline(self.prevalence, linestyle="--", color="gray", linewidth=1,
                   label=f"chance (prevalence {self.prevalence:.2f})")
        if len(self.recall):
            ax.step(self.recall, self.precision, where="post", color="#4878b0", linewidth=2,
                    label=f"precision-recall (AP {self.average_precision:.3f})")
        _mark(ax, self.points)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.02)
        ax.set_xlabel(plain(f"Recall of {self.positive}"))
        ax.set_ylabel("Precision")
        ap = "undefined: one class only" if self.average_precision is None else f"AP = {self.average_precision:.3f}"
        ax.set_title(plain(f"Precision-recall, positive = {self.positive} ({ap})"))
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)


def _binary(result: Any) -> Any:
    if getattr(result, "binary", None) is None:
        raise ValueError(f"ROC and precision-recall curves need a two-class result; this one has "
                         f"{len(result.classes)} classes")
    return result.binary


def _mark(ax: Axes, points: Sequence[tuple[str, float, float]]) -> None:
    for (label, x, y), style in zip(points, (("o", "#c0392b"), ("s", "#e67e22"), ("^", "#555555"))):
        ax.plot([x], [y], marker=style[0], color=style[1], markersize=8, linestyle="none",
                label=f"{label}: ({x:.2f}, {y:.2f})")


class HistoryDisplay:
    """Learning curves of a run: losses, accuracies and the learning rate per epoch over all stages,
    dotted lines between stages (named at the top), a star on the kept epoch.

    ``plot(ax=None)``: three stacked panels on a new figure; ``ax`` a sequence of three axes to draw on
    those; one axes: the losses on it, the accuracies on a twin axis (no learning rate). Keeps
    ``axes_``, ``ax_`` (the first) and ``figure_``.
    """

    figsize = (8.0, 7.5)

    def __init__(self, history: TrainingHistory) -> None:
        self.history = history

    @classmethod
    def from_history(cls, records: Sequence[dict[str, Any]], *, kept: dict[str, Any] | None = None) -> HistoryDisplay:
        """From epoch records (``metrics.jsonl`` lines, or ``FinetuneResult.history``) and the kept weights."""
        return cls(TrainingHistory.from_records(records, kept))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> HistoryDisplay:
        """From a run directory's ``metrics.jsonl`` and ``model.json``."""
        return cls(TrainingHistory.from_run(run_dir))

    def plot(self, ax: Any = None) -> HistoryDisplay:
        """Draw (see the class); returns the display."""
        if ax is None:
            fig = pyplot_figure(self.figsize)
            axes = list(fig.subplots(3, 1, sharex=True))
        elif isinstance(ax, (list, tuple, np.ndarray)):
            axes = list(ax)
        else:
            axes = [ax, ax.twinx()]
        self.axes_, self.ax_, self.figure_ = axes, axes[0], axes[0].figure
        groups = [LOSSES, ACCURACIES, ("lr",)][:len(axes)]
        titles = ["Loss", "Accuracy", "Learning rate"]
        for i, (panel, names) in enumerate(zip(axes, groups)):
            self._panel(panel, names, titles[i], stage_names=i == 0, single=len(axes) == 2)
        axes[-1].set_xlabel("Epoch (all stages, in order)")
        if len(axes) > 2:
            self.figure_.tight_layout()
        return self

    def _panel(self, ax: Axes, names: Sequence[str], title: str, *, stage_names: bool, single: bool) -> None:
        h = self.history
        styles = ["-", "--", ":"]
        for name, style in zip(names, styles):
            values = h.series.get(name)
            if values is None or all(v is None for v in values):
                continue
            ys = [np.nan if v is None else v for v in values]
            ax.plot(h.x, ys, linestyle=style, marker="." if len(h.x) < 40 else None, label=_LABELS[name])
            if h.kept_x is not None and float(h.kept_x).is_integer() and name in ("val_loss", "val_accuracy"):
                ax.plot([h.kept_x], [ys[int(h.kept_x) - 1]], marker="*", markersize=14, color="#c0392b",
                        linestyle="none", label="kept weights")
        for at in h.boundaries:
            ax.axvline(at, color="gray", linestyle=":", linewidth=1)
        if h.kept_x is not None and not float(h.kept_x).is_integer():
            ax.axvline(h.kept_x, color="#c0392b", linewidth=1.5, label="kept: the weights this stage started from")
        if stage_names:
            for stage in h.stages:
                ax.text((stage["first"] + stage["last"]) / 2, 1.02, plain(f"{stage['index'] + 1}: {stage['kind']}")
                        if isinstance(stage["index"], int) else plain(stage["kind"]), transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color="#555555")
        ax.set_ylabel(title)
        if not single or title == "Loss":
            handles, labels = ax.get_legend_handles_labels()
            if labels:
                ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
