"""Out-of-fold linear-probe scores of one backbone's features, and paired differences between backbones.

The probe is the doctor's (:mod:`tlkit.diagnosis.probes`): features standardised and reduced to at
most 128 principal components (fitted on every image, without labels), then an L2-regularised
multinomial logistic regression fitted by full-batch L-BFGS from zeros: deterministic, and
seconds on a CPU. Every backbone is scored on the same folds (stratified, seeded, exact copies of a
file kept in one fold), so their out-of-fold predictions are paired image by image.

Intervals: the accuracy is the pooled out-of-fold accuracy (every train+val image predicted once,
by the probe of the fold that held it out: the fold-size-weighted mean of the fold accuracies)
with a 95% Wilson interval over the images. It treats images as independent and ignores that the
probes' training sets vary, so it is a little optimistic for very small sets. The difference to
the best backbone uses Newcombe's paired score interval on the 2x2 table of right/wrong on the
same images (:func:`tlkit.evaluation.stats.paired_difference_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tlkit.diagnosis.probes import FoldPlan, fit_predict, plan_folds, probe_inputs
from tlkit.evaluation.stats import paired_difference_interval, wilson_interval

__all__ = ["FoldPlan", "ProbeScore", "paired_difference", "plan", "probe_scores"]

#: two-sided level of every interval of the sweep
LEVEL = 0.95


@dataclass
class ProbeScore:
    """Out-of-fold predictions of one backbone's probe and the numbers made of them."""

    predictions: np.ndarray  # int per image
    correct: np.ndarray  # bool per image
    accuracy: float
    ci: tuple[float, float]
    fold_accuracies: list[float]
    balanced_accuracy: float


def plan(labels: np.ndarray, content_ids: list[str], folds: int, seed: int) -> FoldPlan:
    """Stratified, seeded folds shared by every backbone; files with the same bytes stay in one fold."""
    _, groups = np.unique(np.asarray(content_ids), return_inverse=True)
    return plan_folds(labels, groups.astype(np.int64), folds, seed)


def probe_scores(features: torch.Tensor, labels: np.ndarray, n_classes: int, folds: FoldPlan, *,
                 seed: int = 0) -> ProbeScore:
    """Fit one probe per fold on the other folds and score the images it held out."""
    x = probe_inputs(features)
    predictions = np.zeros(len(labels), dtype=np.int64)
    for f in range(folds.folds):
        held = np.flatnonzero(folds.fold_of == f)
        train = np.flatnonzero(folds.fold_of != f)
        predictions[held] = fit_predict(x[train], labels[train], x[held], n_classes, seed).argmax(1)
    correct = predictions == labels
    fold_accuracies = [float(correct[folds.fold_of == f].mean()) for f in range(folds.folds)]
    present = np.unique(labels)
    balanced = float(np.mean([correct[labels == c].mean() for c in present]))
    low, high = wilson_interval(int(correct.sum()), len(correct), level=LEVEL)
    return ProbeScore(predictions, correct, float(correct.mean()), (low, high), fold_accuracies, balanced)


def paired_difference(correct: np.ndarray, best: np.ndarray) -> tuple[float, tuple[float, float]]:
    """``accuracy(correct) - accuracy(best)`` on the same images, with its Newcombe paired 95% interval."""
    both = int((correct & best).sum())
    only_this = int((correct & ~best).sum())
    only_best = int((~correct & best).sum())
    neither = int((~correct & ~best).sum())
    interval = paired_difference_interval(both, only_this, only_best, neither, level=LEVEL)
    return float(correct.mean() - best.mean()), interval
