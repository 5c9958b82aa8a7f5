"""tlkit.evaluation.metrics: every number of evaluate_predictions equals scikit-learn's, over the full class list."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from eval_cases import names, random_predictions
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from tlkit.evaluation.checks import MAX_CI_WIDTH, MIN_CLASS_SUPPORT, MIN_TEST_IMAGES
from tlkit.evaluation.metrics import EvalResult, evaluate_predictions
from tlkit.evaluation.stats import exact_interval, wilson_interval


def cases() -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    out = []
    for seed, (n, c) in enumerate([(50, 2), (120, 3), (300, 7), (500, 12)]):
        y, p = random_predictions(n, c, seed)
        out.append((f"seed{seed}-C{c}", y, p, c))
    # Class 3 never appears in y_true (but is predicted sometimes).
    y, p = random_predictions(200, 5, 11)
    y[y == 3] = 0
    out.append(("absent-in-true", y, p, 5))
    # Class 2 is never predicted (its probability is squashed), though it is in y_true.
    y, p = random_predictions(200, 4, 12)
    p[:, 2] *= 1e-3
    p /= p.sum(axis=1, keepdims=True)
    out.append(("never-predicted", y, p, 4))
    return out


@pytest.mark.parametrize(("name", "y", "p", "c"), cases(), ids=[x[0] for x in cases()])
def test_metrics_equal_sklearn(name: str, y: np.ndarray, p: np.ndarray, c: int) -> None:
    labels = list(range(c))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluate_predictions itself must not warn
        r = evaluate_predictions(y, p, names(c), n_bootstrap=100)
    y_pred = p.argmax(axis=1)

    assert r.accuracy == pytest.approx(accuracy_score(y, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes absent from y_true
        assert r.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, y_pred))
    for k, value in r.top_k.items():
        if c > 2:
            assert value == pytest.approx(top_k_accuracy_score(y, p, k=k, labels=labels))
        assert k == 1 or k < c
    assert set(r.top_k) == {k for k in (1, 3, 5) if k == 1 or k < c}
    for average in ("macro", "weighted"):
        prec, rec, f1, _ = precision_recall_fscore_support(
            y, y_pred, labels=labels, average=average, zero_division=0
        )
        assert getattr(r, f"precision_{average}") == pytest.approx(prec)
        assert getattr(r, f"recall_{average}") == pytest.approx(rec)
        assert getattr(r, f"f1_{average}") == pytest.approx(f1)
    prec, rec, f1, sup = precision_recall_fscore_support(
        y, y_pred, labels=labels, average=None, zero_division=0
    )
    assert [row["class"] for row in r.per_class] == names(c)
    np.testing.assert_allclose([row["precision"] for row in r.per_class], prec)
    np.testing.assert_allclose([row["recall"] for row in r.per_class], rec)
    np.testing.assert_allclose([row["f1"] for row in r.per_class], f1)
    assert [row["support"] for row in r.per_class] == sup.tolist()

    # Always C x C, absent classes included.
    assert r.confusion.shape == (c, c)
    np.testing.assert_array_equal(r.confusion, confusion_matrix(y, y_pred, labels=labels))
    row_sums = r.confusion_normalized.sum(axis=1)
    expected = np.where(r.confusion.sum(axis=1) > 0, 1.0, 0.0)
    np.testing.assert_allclose(row_sums, expected)
    assert not np.isnan(r.confusion_normalized).any()
    lo, hi = r.accuracy_ci
    assert lo <= r.accuracy <= hi


def test_absent_class_keeps_its_row_and_column() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]])
    r = evaluate_predictions(y, p, ["a", "b", "c"], n_bootstrap=0)
    assert r.confusion.tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert r.confusion_normalized[2].tolist() == [0.0, 0.0, 0.0]
    assert r.per_class[2]["support"] == 0
    assert r.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)  # class c is not averaged in
    # n_bootstrap=0 turns off the bootstrap only; the exact intervals cost nothing
    assert r.balanced_accuracy_ci is None and r.balanced_accuracy_ci_method is None
    assert r.accuracy_ci == pytest.approx(exact_interval(3, 4, level=0.95))
    # class c: no test images, so no recall interval; predicted once (wrongly): precision 0 of 1
    c = r.per_class[2]
    assert c["recall_ci_low"] is None and c["recall_ci_high"] is None
    assert c["predicted"] == 1 and c["precision_ci_low"] == 0.0
    assert c["precision_ci_high"] == pytest.approx(0.975)
    assert any("no test images ('c')" in w for w in r.warnings)


def test_accuracy_ci_coverage() -> None:
    """95% intervals of accuracy cover the true accuracy at least about 95% of the time."""
    true_accuracy, n, trials = 0.8, 200, 200
    rng = np.random.default_rng(123)
    covered = 0
    for trial in range(trials):
        y = rng.integers(0, 4, n)
        right = rng.random(n) < true_accuracy
        pred = np.where(right, y, (y + rng.integers(1, 4, n)) % 4)
        probs = np.full((n, 4), 0.1)
        probs[np.arange(n), pred] = 0.7
        r = evaluate_predictions(y, probs, names(4), n_bootstrap=300, seed=trial)
        covered += r.accuracy_ci[0] <= true_accuracy <= r.accuracy_ci[1]
    print(f"coverage {covered / trials:.3f}")
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_is_seeded() -> None:
    y, p = random_predictions(300, 5, 3)
    a = evaluate_predictions(y, p, names(5), n_bootstrap=200, seed=7)
    b = evaluate_predictions(y, p, names(5), n_bootstrap=200, seed=7)
    c = evaluate_predictions(y, p, names(5), n_bootstrap=200, seed=8)
    assert a.balanced_accuracy_ci == b.balanced_accuracy_ci
    assert a.balanced_accuracy_ci != c.balanced_accuracy_ci
    assert a.balanced_accuracy_ci_method == "percentile-bootstrap"
    assert a.accuracy_ci == c.accuracy_ci  # exact: no resampling, no seed


def predictions_with(right: np.ndarray, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels cycling over the classes, and one-hot probabilities right exactly where ``right``."""
    y = np.arange(len(right)) % n_classes
    pred = np.where(right, y, (y + 1) % n_classes)
    return y, np.eye(n_classes)[pred]


def test_accuracy_interval_is_honest_when_every_image_is_right() -> None:
    """18 of 18 right: the old percentile bootstrap said [1.000, 1.000]; the exact 95% lower
    bound is 0.025 ** (1 / 18) = 0.815."""
    y, p = predictions_with(np.ones(18, bool))
    r = evaluate_predictions(y, p, ["a", "b"], n_bootstrap=1000)
    assert r.accuracy == 1.0
    lo, hi = r.accuracy_ci
    assert lo == pytest.approx(0.025 ** (1 / 18)) and hi == 1.0
    assert r.accuracy_ci_method == "clopper-pearson"
    assert "accuracy           1.000 [0.815, 1.000]" in r.summary_text()
    d = r.to_dict()
    assert d["accuracy_ci_method"] == "clopper-pearson" and d["accuracy_ci"] == [lo, hi]


@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 7), (18, 18), (40, 50), (250, 500), (999, 1000)])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_accuracy_interval_is_scipys_exact_interval(k: int, n: int, level: float) -> None:
    y, p = predictions_with(np.arange(n) < k)
    r = evaluate_predictions(y, p, ["a", "b"], n_bootstrap=0, ci_level=level)
    expected = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    assert r.accuracy_ci == pytest.approx((expected.low, expected.high), abs=1e-12)
    wilson = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert wilson_interval(k, n, level=level) == pytest.approx((wilson.low, wilson.high), abs=1e-12)


@pytest.mark.parametrize("n", [6, 18, 400])
@pytest.mark.parametrize("case", ["all right", "all wrong", "class a right, class b wrong"])
def test_no_interval_is_ever_zero_width(case: str, n: int) -> None:
    """Where every bootstrap resample is equal, the balanced accuracy falls back to the mean of the
    per-class exact bounds (Bonferroni), and accuracy and per-class intervals are exact."""
    y = np.arange(n) % 2
    right = {"all right": np.ones(n, bool), "all wrong": np.zeros(n, bool),
             "class a right, class b wrong": y == 0}[case]
    _, p = predictions_with(right)
    r = evaluate_predictions(y, p, ["a", "b"], n_bootstrap=500)
    for value, (lo, hi) in [(r.accuracy, r.accuracy_ci), (r.balanced_accuracy, r.balanced_accuracy_ci)]:
        assert lo <= value <= hi
        assert hi - lo > 1e-3, (value, lo, hi)
    assert r.balanced_accuracy_ci_method == "per-class-clopper-pearson-bonferroni"
    # each class's recall bound at 97.5% (two classes), averaged
    bounds = [exact_interval(int(right[y == c].sum()), int((y == c).sum()), level=0.975) for c in (0, 1)]
    assert r.balanced_accuracy_ci == pytest.approx(tuple(np.mean(bounds, axis=0)))
    for row in r.per_class:
        assert row["recall_ci_low"] < row["recall_ci_high"]
        if row["predicted"]:
            assert row["precision_ci_low"] < row["precision_ci_high"]
    assert "[1.000, 1.000]" not in r.summary_text() and "[0.000, 0.000]" not in r.summary_text()


def test_per_class_recall_and_precision_have_exact_intervals() -> None:
    y, p = random_predictions(150, 3, 4)
    r = evaluate_predictions(y, p, names(3), n_bootstrap=0, ci_level=0.9)
    pred = p.argmax(axis=1)
    assert r.per_class_ci_method == "clopper-pearson"
    for i, row in enumerate(r.per_class):
        hits = int(((y == i) & (pred == i)).sum())
        recall = binomtest(hits, int((y == i).sum())).proportion_ci(confidence_level=0.9, method="exact")
        precision = binomtest(hits, int((pred == i).sum())).proportion_ci(confidence_level=0.9, method="exact")
        assert (row["recall_ci_low"], row["recall_ci_high"]) == pytest.approx((recall.low, recall.high))
        assert (row["precision_ci_low"], row["precision_ci_high"]) == pytest.approx((precision.low, precision.high))
        assert row["predicted"] == int((pred == i).sum())
        assert row["recall_ci_low"] <= row["recall"] <= row["recall_ci_high"]
    # flat rows with the same keys: pd.DataFrame(r.per_class) is a table
    keys = list(r.per_class[0])
    assert all(list(row) == keys for row in r.per_class)
    assert all(v is None or isinstance(v, (str, int, float)) for row in r.per_class for v in row.values())
    d = r.to_dict()
    assert d["per_class"] == r.per_class and d["per_class_ci_method"] == "clopper-pearson"
    assert "90% CI, clopper-pearson" in r.summary_text()
    recall_row = next(line for line in r.summary_text().splitlines() if line.startswith("class_0"))
    assert f"[{r.per_class[0]['recall_ci_low']:.3f}, {r.per_class[0]['recall_ci_high']:.3f}]" in recall_row


def test_a_small_test_set_warns() -> None:
    y, p = predictions_with(np.ones(18, bool))
    r = evaluate_predictions(y, p, ["a", "b"], n_bootstrap=200)
    assert any("only 18 test images" in w and str(MIN_TEST_IMAGES) in w for w in r.warnings)
    assert any("balanced accuracy" in w and "wide" in w for w in r.warnings)  # the Bonferroni fallback
    assert r.to_dict()["warnings"] == r.warnings
    assert all(f"warning: {w}" in r.summary_text() for w in r.warnings)


def test_a_rare_class_and_a_wide_interval_warn() -> None:
    # 40 images at about 60% accuracy: the exact interval is about 0.3 wide; class c has 3 images
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 18 + [2, 2, 2] + [0])
    right = rng.random(len(y)) < 0.6
    r = evaluate_predictions(y, np.eye(3)[np.where(right, y, (y + 1) % 3)], ["a", "b", "c"])
    assert r.n >= MIN_TEST_IMAGES and not any("test images (fewer than" in w for w in r.warnings)
    assert any(f"fewer than {MIN_CLASS_SUPPORT}" in w and "'c' (3)" in w for w in r.warnings)
    width = r.accuracy_ci[1] - r.accuracy_ci[0]
    assert width > MAX_CI_WIDTH
    assert any(f"interval of accuracy is {width:.2f} wide" in w for w in r.warnings)


def test_a_large_clean_test_set_does_not_warn() -> None:
    y, p = random_predictions(2000, 4, 9, skill=3.0)
    r = evaluate_predictions(y, p, names(4), n_bootstrap=200)
    assert r.warnings == [] and r.to_dict()["warnings"] == []
    assert "warning" not in r.summary_text()


def test_ece_hand_computed() -> None:
    # Five predictions, top-1 confidence and whether they are right:
    #   0.95 right, 0.95 wrong  -> bin (14/15, 1]:   count 2, conf 0.95, acc 0.5, gap 0.45
    #   0.60 right, 0.60 right  -> bin (8/15, 9/15]: count 2, conf 0.60, acc 1.0, gap 0.40
    #   0.45 wrong              -> bin (6/15, 7/15]: count 1, conf 0.45, acc 0.0, gap 0.45
    # ECE = 2/5 * 0.45 + 2/5 * 0.40 + 1/5 * 0.45 = 0.18 + 0.16 + 0.09 = 0.43
    probs = np.array(
        [[0.95, 0.05, 0.0], [0.95, 0.05, 0.0], [0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.45, 0.3, 0.25]]
    )
    y = np.array([0, 1, 0, 1, 2])
    r = evaluate_predictions(y, probs, ["a", "b", "c"], n_bootstrap=0)
    assert r.ece == pytest.approx(0.43)
    filled = {round(b["upper"] * 15): b for b in r.reliability if b["count"]}
    assert sorted(filled) == [7, 9, 15]
    assert filled[15]["count"] == 2 and filled[15]["accuracy"] == pytest.approx(0.5)
    assert filled[9]["confidence"] == pytest.approx(0.6)
    assert len(r.reliability) == 15
    assert sum(b["count"] for b in r.reliability) == 5


def test_confused_pairs_and_misclassified_order() -> None:
    classes = ["ant", "bee", "cat"]
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = [1, 1, 0, 0, 1, 1, 1, 2]
    conf = [0.6, 0.9, 0.8, 0.7, 0.8, 0.95, 0.6, 0.9]
    probs = np.zeros((8, 3))
    for i, (k, c) in enumerate(zip(pred, conf)):
        probs[i] = (1 - c) / 2
        probs[i, k] = c
    r = evaluate_predictions(y, probs, classes, paths=[f"f{i}.png" for i in range(8)])
    # ant->bee 2 and cat->bee 2 tie on count: sorted by name; bee->ant 1 last.
    assert r.confused_pairs == [("ant", "bee", 2), ("cat", "bee", 2), ("bee", "ant", 1)]
    # Worst first: highest confidence in the wrong class; equal confidence keeps row order.
    assert [m["index"] for m in r.misclassified] == [5, 1, 3, 0, 6]
    worst = r.misclassified[0]
    assert worst == {
        "index": 5, "path": "f5.png", "true": "cat", "pred": "bee",
        "confidence": pytest.approx(0.95), "prob_true": pytest.approx(0.025),
    }


def test_unknown_is_kept_and_reported() -> None:
    y, p = random_predictions(40, 3, 0)
    unknown = {"zebra": ["test/zebra/1.jpg", "test/zebra/2.jpg"]}
    r = evaluate_predictions(y, p, names(3), unknown=unknown, n_bootstrap=0)
    assert r.unknown == unknown
    assert r.n == 40
    assert r.to_dict()["unknown"] == unknown
    assert "zebra" in r.summary_text()


def test_to_dict_is_json_ready_and_small() -> None:
    import json

    y, p = random_predictions(500, 4, 5)
    r = evaluate_predictions(y, p, names(4), paths=[f"{i}.png" for i in range(500)])
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["accuracy"] == r.accuracy
    assert d["accuracy_ci"] == list(r.accuracy_ci)
    assert d["confusion"] == r.confusion.tolist()
    assert d["n_misclassified"] == len(r.misclassified)
    assert len(d["misclassified_worst"]) <= 20
    assert "probs" not in d and "y_true" not in d
    assert repr(r).startswith("EvalResult(n=500, classes=4, accuracy=")
    assert "class_0" in r._repr_html_()


def test_10k_predictions_time() -> None:
    y, p = random_predictions(10_000, 10, 0)
    evaluate_predictions(y[:100], p[:100], names(10), n_bootstrap=0)  # imports, caches
    start = time.perf_counter()
    r = evaluate_predictions(y, p, names(10), n_bootstrap=0)
    elapsed = time.perf_counter() - start
    print(f"evaluate_predictions: 10k rows, 10 classes, no bootstrap: {elapsed:.3f} s")
    assert elapsed < 1.0  # accuracy, exact intervals, confusion matrix: no per-class loops
    assert r.confusion.sum() == 10_000
    start = time.perf_counter()
    r = evaluate_predictions(y, p, names(10), n_bootstrap=1000)
    elapsed = time.perf_counter() - start
    print(f"evaluate_predictions: 10k rows, 10 classes, 1000 bootstrap resamples: {elapsed:.3f} s")
    assert isinstance(r, EvalResult)


def test_compute_modules_import_no_plotting_and_no_cycle() -> None:
    code = (
        "import sys, tlkit.evaluation.stats, tlkit.evaluation.checks, tlkit.evaluation.summary, "
        "tlkit.evaluation.display, tlkit.evaluation.metrics, tlkit.evaluation.comparison, tlkit.evaluation.scoring; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'tlkit.report' not in sys.modules, 'tlkit.report imported: evaluation must not write files'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
