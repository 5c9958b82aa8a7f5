"""Outliers: images far from every class in feature space (a wrong file, a blank frame, a stray scan).

For every distinct picture (exact copies count once) and every class, the *fit* is the mean cosine
similarity of its :data:`NEIGHBOURS` most similar images of that class (itself left out), on the
centred, length-1 features. The outlier score is ``1 - best fit``: an image that fits no class
well, whatever its given label, scores high. Images are listed when their score is far above the
dataset's own: ``robust z = (score - median) / (1.4826 * MAD) >= MIN_Z`` (MAD: the median absolute
deviation), so the bar follows how spread the data are, not an absolute similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: neighbours per class that make an image's fit to the class
NEIGHBOURS = 5
#: robust z-score of the outlier score from which an image is listed
MIN_Z = 6.0


@dataclass(frozen=True)
class OutlierScore:
    """One image's outlier score, its robust z-score and the class it fits best."""

    row: int
    score: float
    z: float
    nearest_class: int
    fit: float


def class_fits(unit: torch.Tensor, labels: np.ndarray, n_classes: int, *, k: int = NEIGHBOURS,
               block: int = 1024) -> np.ndarray:
    """``N x n_classes``: mean cosine of each row's ``k`` most similar rows of each class (itself excluded)."""
    n = len(unit)
    fits = np.full((n, n_classes), -1.0)
    members = {c: torch.from_numpy(np.flatnonzero(labels == c)) for c in range(n_classes)}
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = unit[start:stop] @ unit.T
        sims[torch.arange(stop - start), torch.arange(start, stop)] = -2.0  # never its own neighbour
        for c, cols in members.items():
            if len(cols) == 0:
                continue
            kk = max(1, min(k, len(cols) - 1))
            top = sims[:, cols].topk(kk, dim=1).values
            fits[start:stop, c] = top.clamp_min(-1.0).mean(1).numpy()
    return fits


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 * MAD)``; a zero MAD falls back to the mean absolute deviation."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    if spread <= 1e-12:
        spread = float(np.mean(np.abs(values - median))) or 1.0
    return (values - median) / spread


def score_outliers(unit: torch.Tensor, labels: np.ndarray, n_classes: int, *, k: int = NEIGHBOURS) -> list[OutlierScore]:
    """Every row's outlier score, highest first (ties by row)."""
    if len(unit) < 3:
        return []
    fits = class_fits(unit, labels, n_classes, k=k)
    best = fits.argmax(1)
    score = 1.0 - fits.max(1)
    z = robust_z(score)
    order = np.lexsort((np.arange(len(score)), -score))
    return [OutlierScore(int(i), round(float(score[i]), 4), round(float(z[i]), 2), int(best[i]),
                         round(float(fits[i, best[i]]), 4)) for i in order]


def find_outliers(unit: torch.Tensor, labels: np.ndarray, n_classes: int, *, min_z: float = MIN_Z,
                  k: int = NEIGHBOURS) -> list[OutlierScore]:
    """The rows whose robust z-score reaches ``min_z``, highest score first."""
    return [o for o in score_outliers(unit, labels, n_classes, k=k) if o.z >= min_z]
