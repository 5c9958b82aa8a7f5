"""Outliers: images far from every class in feature space (a wrong file, a stray scan), and blank frames.

* **far from every class**: the *score* of an image is its Mahalanobis distance to the nearest
  class mean, in the probes' principal-component space (:func:`tlkit.diagnosis.probes.probe_inputs`)
  with one within-class covariance shared by all classes (Ledoit-Wolf shrinkage, so a few images or
  many dimensions do not break it); an image's own class mean leaves the image out. Whatever its
  given label, an image that fits no class scores high. It is listed when the score is far above
  this dataset's own: ``robust z = (score - median) / (1.4826 * MAD) >= MIN_Z``, at most the top
  :data:`MAX_SHARE` of the images (at least :data:`MIN_LISTED`). A class mean
  hardly moves for a handful of odd images, so a few similar ones (three copies of a wrong file)
  do not hide each other, as they would from a nearest-neighbour score.
* **blank**: a grey thumbnail (32x32, blurred) whose pixels vary by less than :data:`BLANK_CONTRAST`
  grey levels (standard deviation): an empty, black, white or uniform frame. Listed whatever its features.

``bench/doctor.py calibrate-labels`` scores planted odd files (photos, noise, blank frames) among
Fashion-MNIST images of no benchmark folder; see ``bench/REALDATA.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: robust z-score of the distance to the nearest class from which an image is listed
MIN_Z = 8.0
#: at most this share of the images (and at least MIN_LISTED) is listed as far from every class: a review
#: list, the most extreme first (heavy-tailed data, such as scikit-learn's 8x8 digits, reach z 8 often)
MAX_SHARE = 0.01
MIN_LISTED = 5
#: standard deviation (grey levels, 0-255) of the thumbnail under which an image is a blank frame
BLANK_CONTRAST = 2.0
#: principal components the distances are measured in
OUTLIER_DIM = 64


@dataclass(frozen=True)
class OutlierScore:
    """One image's distance to the nearest class, its robust z-score, that class, and why it is listed."""

    row: int
    score: float
    z: float
    nearest_class: int
    reason: str  # "far from every class" | "blank"


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 * MAD)``; a zero MAD falls back to the mean absolute deviation."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    if spread <= 1e-12:
        spread = float(np.mean(np.abs(values - median))) or 1.0
    return (values - median) / spread


def class_distances(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``N x n_classes`` Mahalanobis distances to each class mean (own class: the mean of the others;
    classes of one image: infinite), with a shared, shrunk within-class covariance."""
    from sklearn.covariance import LedoitWolf

    counts = np.bincount(labels, minlength=n_classes).astype(float)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, labels, x)
    means = sums / np.maximum(counts, 1)[:, None]
    precision = LedoitWolf().fit(x - means[labels]).precision_
    out = np.full((len(x), n_classes), np.inf)
    for c in range(n_classes):
        if counts[c] == 0:
            continue
        diff = x - means[c]
        mine = labels == c
        if counts[c] > 1:  # leave each image out of its own class mean
            diff[mine] = x[mine] - (sums[c] - x[mine]) / (counts[c] - 1)
        else:
            diff[mine] = np.nan
        out[:, c] = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, precision, diff), 0.0))
    return np.nan_to_num(out, nan=np.inf)


def score_outliers(features: torch.Tensor, labels: np.ndarray, n_classes: int, contrast: np.ndarray) -> list[OutlierScore]:
    """Every row's distance to its nearest class and robust z-score, highest first (ties by row)."""
    from tlkit.diagnosis.probes import probe_inputs

    if len(features) < 3:
        return []
    distances = class_distances(probe_inputs(features, OUTLIER_DIM).astype(np.float64), labels, n_classes)
    nearest = distances.argmin(1)
    score = distances[np.arange(len(labels)), nearest]
    finite = np.isfinite(score)
    score = np.where(finite, score, np.max(score[finite], initial=0.0))
    z = robust_z(score)
    order = np.lexsort((np.arange(len(score)), -score))
    return [OutlierScore(int(i), round(float(score[i]), 3), round(float(z[i]), 2), int(nearest[i]),
                         "blank" if contrast[i] < BLANK_CONTRAST else "far from every class") for i in order]


def find_outliers(features: torch.Tensor, labels: np.ndarray, n_classes: int, contrast: np.ndarray, *,
                  min_z: float = MIN_Z) -> list[OutlierScore]:
    """Blank frames, and the rows whose robust z-score reaches ``min_z`` (at most the top MAX_SHARE of
    the rows, at least MIN_LISTED): blank ones first, then by score."""
    scores = score_outliers(features, labels, n_classes, contrast)
    cap = max(MIN_LISTED, int(np.ceil(MAX_SHARE * len(scores))))
    far = [o for o in scores if o.reason != "blank" and o.z >= min_z][:cap]
    return [o for o in scores if o.reason == "blank"] + far
