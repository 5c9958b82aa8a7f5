"""The row-shaped parts of an :class:`~tlkit.evaluation.metrics.EvalResult`: per-class rows, confused
pairs and mistakes, built from the confusion matrix and the predictions (numbers only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def per_class_rows(classes: list[str], scores: dict[str, Any], intervals: dict[str, Any],
                    confusion: np.ndarray) -> list[dict[str, Any]]:
    """One flat row per class, the same keys in every row (see :class:`EvalResult`)."""
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    (recall_lo, recall_hi), (precision_lo, precision_hi) = intervals["recall"], intervals["precision"]
    return [
        {
            "class": name,
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(support[i]),
            "precision_ci_low": _bound(precision_lo[i]),
            "precision_ci_high": _bound(precision_hi[i]),
            "recall_ci_low": _bound(recall_lo[i]),
            "recall_ci_high": _bound(recall_hi[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(classes)
    ]


def _bound(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def confused_pairs(confusion: np.ndarray, classes: list[str]) -> list[tuple[str, str, int]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    pairs = [(classes[t], classes[p], int(off[t, p])) for t, p in zip(rows, cols)]
    return sorted(pairs, key=lambda x: (-x[2], x[0], x[1]))


def misclassified_rows(labels: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, confidence: np.ndarray,
                   classes: list[str], paths: list[str] | None) -> list[dict[str, Any]]:
    wrong = np.flatnonzero(labels != y_pred)
    # Most confident mistakes first; ties keep row order so the list is deterministic.
    order = wrong[np.lexsort((wrong, -confidence[wrong]))]
    return [
        {
            "index": int(i),
            "path": paths[i] if paths is not None else None,
            "true": classes[labels[i]],
            "pred": classes[y_pred[i]],
            "confidence": float(confidence[i]),
            "prob_true": float(probs[i, labels[i]]),
        }
        for i in order
    ]


def ci_list(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [ci[0], ci[1]]
