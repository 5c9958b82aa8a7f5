"""Suspect labels: images whose given label out-of-fold probes contradict, most suspect first.

Rankings (``method``), all on out-of-fold class probabilities ``probs``:

* ``"self-confidence"``: the plain baseline, ``1 - p(given label)``;
* ``"confident-learning"``: cleanlab's confident learning (``cleanlab.filter.find_label_issues``,
  pruned by the estimated noise rate per pair of classes) picks the images it believes mislabelled;
  they come first, ranked by cleanlab's normalised margin, then every other image by that margin.

The score (higher: more suspect) is ``1 - quality`` with cleanlab's label quality of the method
(``get_label_quality_scores``: ``p(given)`` for self-confidence, ``(p(given) - max other + 1) / 2``
for the margin), so it lies in [0, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

METHODS = ("confident-learning", "self-confidence")


@dataclass(frozen=True)
class Suspect:
    """One image whose label the probes doubt: row, given and suggested label, score, whether flagged."""

    row: int
    given: int
    suggested: int
    score: float
    flagged: bool  # picked by confident learning (or, for self-confidence, the probe prefers another class)
    confidence: float  # probability of the suggested class


def quality(labels: np.ndarray, probs: np.ndarray, method: str) -> np.ndarray:
    """cleanlab's label quality per image (1: the label looks right, 0: it looks wrong)."""
    from cleanlab.rank import get_label_quality_scores

    kind = "self_confidence" if method == "self-confidence" else "normalized_margin"
    return get_label_quality_scores(labels, probs, method=kind)


def flagged_by_confident_learning(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Boolean mask of the images cleanlab's confident learning calls label issues."""
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes with few examples
        return np.asarray(find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1), dtype=bool)


def suggestions(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The most likely class other than the given one, per image."""
    masked = probs.copy()
    masked[np.arange(len(labels)), labels] = -1.0
    best_other = masked.argmax(1)
    top = probs.argmax(1)
    return np.where(top != labels, top, best_other)


def rank_suspects(labels: np.ndarray, probs: np.ndarray, *, method: str = "confident-learning") -> list[Suspect]:
    """Every image, most suspect first (ties broken by row, so the order is deterministic)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    labels = np.asarray(labels, dtype=np.int64)
    score = 1.0 - quality(labels, probs, method)
    if method == "confident-learning":
        flagged = flagged_by_confident_learning(labels, probs)
    else:
        flagged = probs.argmax(1) != labels
    suggested = suggestions(labels, probs)
    # flagged first; then by score, high first; then by row
    order = np.lexsort((np.arange(len(labels)), -score, ~flagged)) if method == "confident-learning" \
        else np.lexsort((np.arange(len(labels)), -score))
    return [Suspect(int(i), int(labels[i]), int(suggested[i]), round(float(score[i]), 4), bool(flagged[i]),
                    round(float(probs[i, suggested[i]]), 4)) for i in order]
