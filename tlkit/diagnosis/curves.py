"""What to collect next: per-class learning curves from the out-of-fold probes.

Each fold's probe is also trained on 25, 50 and 75% of its training part (nested, stratified
shares, see :mod:`tlkit.diagnosis.probes`); a class's *recall* at a share is the fraction of its
held-out images the probe gets right. The *slope* is the least-squares slope of recall against
``log2(share)``: recall points gained per doubling of the training images. A class whose slope
reaches :data:`MIN_GAIN` is still learning from more images; one that is flat already gets what the
features can give (more images of it help less than better images or another backbone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
#: recall gained per doubling of the training images from which a class "would gain from more images"
MIN_GAIN = 0.02


@dataclass(frozen=True)
class ClassCurve:
    """One class's learning curve: recall at each share of its training images, and the slope."""

    label: int
    images: int  # images of the class the probes could train and be scored on
    train_images: tuple[int, ...]  # images a fold's probe trained on, per share (average over folds)
    recall: tuple[float, ...]  # per share in FRACTIONS order
    slope: float  # recall per doubling of the training images
    would_gain: bool


def slope_per_doubling(fractions: tuple[float, ...], values: np.ndarray) -> float:
    """Least-squares slope of ``values`` against ``log2(fractions)``."""
    x = np.log2(np.asarray(fractions, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0
    x = x - x.mean()
    return float((x * (values - values.mean())).sum() / (x * x).sum())


def learning_curves(labels: np.ndarray, probs_by_fraction: dict[float, np.ndarray], n_classes: int, folds: int, *,
                    min_gain: float = MIN_GAIN) -> list[ClassCurve]:
    """A curve per class present in ``labels``, largest slope first (ties by class index)."""
    fractions = tuple(sorted(probs_by_fraction))
    correct = {f: probs_by_fraction[f].argmax(1) == labels for f in fractions}
    curves = []
    for c in range(n_classes):
        mine = labels == c
        n = int(mine.sum())
        if n == 0:
            continue
        recall = np.array([correct[f][mine].mean() for f in fractions])
        slope = slope_per_doubling(fractions, recall)
        trained = tuple(max(1, int(round(f * n * (folds - 1) / folds))) for f in fractions)
        curves.append(ClassCurve(c, n, trained, tuple(round(float(r), 4) for r in recall), round(slope, 4),
                                 bool(slope >= min_gain)))
    return sorted(curves, key=lambda cc: (-cc.slope, cc.label))


def overall_accuracy(labels: np.ndarray, probs_by_fraction: dict[float, np.ndarray]) -> dict[float, float]:
    """Accuracy of the out-of-fold probes at each share of the training images."""
    return {f: round(float((p.argmax(1) == labels).mean()), 4) for f, p in sorted(probs_by_fraction.items())}
