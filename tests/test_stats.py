"""tlkit.evaluation.stats: the bootstrap of balanced accuracy, its Bonferroni fallback and the calibration bins.

(The binomial and paired intervals are checked against scipy in test_metrics.py and test_comparison.py.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from tlkit.evaluation.stats import (
    bootstrap_balanced_accuracy,
    calibration,
    exact_interval,
    mean_exact_interval_bonferroni,
)


def test_bootstrap_balanced_accuracy_is_sklearns_on_each_resample() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 20)
    pred = np.where(rng.random(20) < 0.7, labels, (labels + 1) % 3)
    samples = bootstrap_balanced_accuracy(labels, pred == labels, 3, 200, np.random.default_rng(5))
    idx = np.random.default_rng(5).integers(0, 20, size=(200, 20))  # one chunk: the same draws
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a resample lacks a class
        expected = [balanced_accuracy_score(labels[i], pred[i]) for i in idx]
    np.testing.assert_allclose(samples, expected)


def test_mean_exact_interval_bonferroni() -> None:
    hits, support = np.array([9, 4, 0]), np.array([10, 4, 3])
    lo, hi = exact_interval(hits, support, level=1 - 0.05 / 3)
    assert mean_exact_interval_bonferroni(hits, support, level=0.95) == pytest.approx((lo.mean(), hi.mean()))


def test_calibration_bins_are_closed_on_the_right() -> None:
    confidence = np.array([0.5, 0.5000001, 1.0, 0.0])
    correct = np.array([True, False, True, False])
    ece, bins = calibration(confidence, correct, 2)
    assert [(b["lower"], b["upper"], b["count"]) for b in bins] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]
    assert bins[0]["confidence"] == pytest.approx(0.25) and bins[0]["accuracy"] == 0.5
    assert ece == pytest.approx(0.5 * 0.25 + 0.5 * abs(0.5 - 0.75000005))
    empty = calibration(np.array([0.9]), np.array([True]), 4)[1]
    assert [b["count"] for b in empty] == [0, 0, 0, 1] and empty[0]["confidence"] is None and empty[0]["accuracy"] is None
