"""Cross-validation figures from numbers: per-fold accuracies, their mean with intervals, the pooled confusion.

Two intervals, because they answer different questions:

* ``interval`` (the headline): a Student t-interval over the K fold accuracies,
  ``mean +- t(level, K-1) * sd / sqrt(K)``. It reflects how much the accuracy moves when the
  training set changes. The folds share most of their training images, so the K accuracies are
  not independent and no unbiased estimate of this variance exists (Bengio and Grandvalet, "No
  unbiased estimator of the variance of K-fold cross-validation", JMLR 5, 2004): read it as a
  rough, usually too narrow, band. With every fold at the same accuracy it has width 0.
* ``pooled.wilson``: the Wilson score interval of the pooled out-of-fold accuracy (every
  train+val image predicted once, by the model that did not train on it). It treats images as
  independent draws, like a test-set interval, and always has a positive width.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tlkit.evaluation.stats import check_level, wilson_interval

__all__ = ["t_interval", "crossval_summary"]


def t_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float]:
    """Student t-interval of the mean of ``values`` (at least two), clipped to [0, 1].

    >>> lo, hi = t_interval([0.8, 0.9, 0.85]); round(lo, 3), round(hi, 3)
    (0.726, 0.974)
    """
    from scipy.stats import t

    level = check_level(level, "level")
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError("a t-interval needs at least two values")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return max(0.0, mean - half), min(1.0, mean + half)


def crossval_summary(fold_of: np.ndarray, labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str], *,
                     level: float = 0.95) -> dict:
    """The figures of ``crossval.json`` from out-of-fold predictions: ``fold_of[i]`` is the fold that held
    image ``i`` out, ``predicted[i]`` what that fold's model said."""
    from sklearn.metrics import confusion_matrix

    k = int(fold_of.max()) + 1
    correct = predicted == labels
    accuracies = [float(correct[fold_of == f].mean()) for f in range(k)]
    low, high = t_interval(accuracies, level=level)
    pooled_low, pooled_high = wilson_interval(int(correct.sum()), len(labels), level=level)
    confusion = confusion_matrix(labels, predicted, labels=list(range(len(classes))))
    return {
        "folds": k,
        "level": level,
        "fold_accuracies": accuracies,
        "fold_sizes": [int((fold_of == f).sum()) for f in range(k)],
        "mean_accuracy": float(np.mean(accuracies)),
        "sd_accuracy": float(np.std(accuracies, ddof=1)),
        "interval": {"kind": "t over fold accuracies", "low": low, "high": high},
        "pooled": {"accuracy": float(correct.mean()), "correct": int(correct.sum()), "images": int(len(labels)),
                   "wilson": {"low": float(pooled_low), "high": float(pooled_high)}},
        "classes": list(classes),
        "confusion_matrix": confusion.tolist(),
    }
