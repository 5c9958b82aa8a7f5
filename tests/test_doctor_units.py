"""The data doctor's parts on numbers alone (no images, no backbone): blockwise pair search, the
duplicate rule, fold plans, rankings, learning-curve slopes, outlier scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlkit.diagnosis.curves import learning_curves, slope_per_doubling
from tlkit.diagnosis.duplicates import DEFAULT_RULE, hamming_matrix, near_candidates, signed_bits
from tlkit.diagnosis.labels import rank_suspects
from tlkit.diagnosis.outliers import BLANK_CONTRAST, find_outliers, robust_z
from tlkit.diagnosis.probes import nested_subsample, plan_folds


def test_blockwise_search_finds_the_same_pairs_whatever_the_block() -> None:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    unit[7] = unit[3] + 0.01  # near copies: features, hashes and thumbnails agree
    unit[41] = unit[3] - 0.01
    unit = torch.nn.functional.normalize(unit, dim=1)
    bits = rng.random((50, 64)) > 0.5
    bits[7], bits[41] = bits[3], bits[3]
    thumbs = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    thumbs[7] = thumbs[41] = thumbs[3]
    signed = signed_bits(bits)
    whole = near_candidates(unit, signed, thumbs, DEFAULT_RULE, block=1024)
    for block in (1, 3, 7, 16):
        found = near_candidates(unit, signed, thumbs, DEFAULT_RULE, block=block)
        assert [(i, j, h) for i, j, _, h, _ in found] == [(i, j, h) for i, j, _, h, _ in whole]
        assert [c for _, _, c, _, _ in found] == pytest.approx([c for _, _, c, _, _ in whole])
        assert [r for *_, r in found] == pytest.approx([r for *_, r in whole])
    assert [(i, j) for i, j, *_ in whole] == [(3, 7), (3, 41), (7, 41)]
    assert [r for *_, r in whole] == pytest.approx([1.0, 1.0, 1.0])  # the thumbnails' correlation comes back too


def test_hamming_matrix_counts_differing_bits() -> None:
    bits = np.zeros((3, 64), dtype=bool)
    bits[1, :5] = True
    bits[2] = True
    ham = hamming_matrix(signed_bits(bits), signed_bits(bits))
    assert ham.tolist() == [[0, 5, 64], [5, 0, 59], [64, 59, 0]]


def test_rule_routes() -> None:
    rule = DEFAULT_RULE
    t = lambda *v: torch.tensor(v)  # noqa: E731
    # (cosine, hamming, thumbnail correlation)
    assert rule.accepts(t(0.4), t(30), t(0.999)).item()  # pixels agree (a resized copy), features loosely
    assert not rule.accepts(t(0.2), t(0), t(0.999)).item()  # the features disagree
    assert rule.accepts(t(0.9), t(4), t(0.96)).item()  # hash route
    assert rule.accepts(t(0.96), t(30), t(0.6)).item()  # a crop: features route
    assert not rule.accepts(t(0.99), t(30), t(0.1)).item()  # weak features alone never pair unrelated pixels


def test_folds_keep_groups_together_and_are_seeded() -> None:
    labels = np.repeat([0, 1], 20)
    groups = np.arange(40)
    groups[[1, 2, 3]] = 1
    plan = plan_folds(labels, groups, 5, seed=3)
    assert plan.folds == 5 and len(set(plan.fold_of[[1, 2, 3]])) == 1
    assert np.array_equal(plan.fold_of, plan_folds(labels, groups, 5, seed=3).fold_of)
    assert plan_folds(np.repeat([0, 1], [3, 20]), np.arange(23), 5, seed=0).folds == 3  # smallest class


def test_nested_subsamples_are_nested_and_stratified() -> None:
    y = np.repeat([0, 1, 2], [40, 20, 8])
    shares = nested_subsample(y, (0.25, 0.5, 1.0), seed=0)
    assert set(shares[0.25]) <= set(shares[0.5]) <= set(shares[1.0]) and len(shares[1.0]) == len(y)
    assert np.bincount(y[shares[0.25]]).tolist() == [10, 5, 2]


def test_rankings_put_the_contradicted_label_first() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.95, 0.05], [0.1, 0.9], [0.3, 0.7], [0.2, 0.8], [0.05, 0.95]])
    for method in ("self-confidence", "confident-learning"):
        ranked = rank_suspects(labels, probs, method=method)
        assert ranked[0].row == 6 and ranked[0].suggested == 1 and ranked[0].flagged
        assert sorted(s.row for s in ranked) == list(range(7))
    with pytest.raises(ValueError):
        rank_suspects(labels, probs, method="vibes")


def test_slope_is_recall_gained_per_doubling() -> None:
    assert slope_per_doubling((0.25, 0.5, 1.0), np.array([0.5, 0.6, 0.7])) == pytest.approx(0.1)
    labels = np.array([0, 0, 1, 1])
    good = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    bad = np.array([[0.0, 1], [0, 1], [0, 1], [0, 1]])
    curves = learning_curves(labels, {0.5: bad, 1.0: good}, 2, folds=2)
    assert [c.label for c in curves] == [0, 1] and curves[0].slope == pytest.approx(1.0) and curves[0].would_gain
    assert curves[1].slope == 0 and not curves[1].would_gain


def test_robust_z_and_a_far_image() -> None:
    assert robust_z(np.array([1.0, 1.0, 1.0, 1.0])).tolist() == [0, 0, 0, 0]
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(60, 16, generator=gen) * 0.1
    labels = np.repeat([0, 1, 2], 20)
    features[labels == 1] += 1.0
    features[labels == 2] -= 1.0
    features[13] = 8.0  # far from every class
    contrast = np.full(60, 40.0)
    contrast[30] = BLANK_CONTRAST / 2  # a flat frame
    found = find_outliers(features, labels, 3, contrast)
    assert [(o.row, o.reason) for o in found[:2]] == [(30, "blank"), (13, "far from every class")]
    assert len(found) <= 1 + 5


def test_a_pair_is_an_error_only_when_it_is_a_copy_for_certain() -> None:
    """Leakage and label conflicts are errors for exact copies and copies whose pixels did not move;
    pairs only the features or the hash call alike are 'possible-...' warnings (and do not stop a run)."""
    from tlkit.diagnosis.result import CERTAIN_CORRELATION, DoctorResult, DuplicatePair

    split, same = ("train", "test"), ("a", "a")
    exact = DuplicatePair(("x", "y"), "exact", 1.0, 0, split, same)
    resized = DuplicatePair(("x", "y"), "near", 0.8, 2, split, same, CERTAIN_CORRELATION + 0.002)
    alike = DuplicatePair(("x", "y"), "near", 0.97, 12, split, same, 0.99)
    conflict = DuplicatePair(("x", "y"), "near", 0.97, 12, ("train", "train"), ("a", "b"), 0.99)
    assert [p.severity for p in (exact, resized, alike, conflict)] == ["error", "error", "warning", "warning"]
    assert [p.finding for p in (exact, resized, alike, conflict)] == ["leakage", "leakage", "possible-leakage",
                                                                      "possible-label-conflict"]
    assert DoctorResult("r", ["a"], {}, near_duplicates=[alike, conflict]).ok
    assert not DoctorResult("r", ["a"], {}, near_duplicates=[alike, resized]).ok
    assert alike.to_dict()["certain"] is False and resized.to_dict()["pixel_correlation"] == resized.correlation
