"""Confidence intervals, bootstraps and calibration bins for :mod:`tlkit.evaluation.metrics` and :mod:`tlkit.evaluation.comparison`.

Compute only, and the bottom of the chain: this module imports nothing of tlkit but its errors,
and scipy only inside the functions that need it. Every interval is a ``(low, high)`` pair at a
two-sided confidence ``level``; every method has a name (the constants below) that results
store beside the interval, so a report can say how each interval was made.

Example:
    >>> from tlkit.evaluation.stats import exact_interval, wilson_interval, paired_difference_interval
    >>> [round(v, 3) for v in exact_interval(18, 18, level=0.95)]
    [0.815, 1.0]
    >>> [round(v, 3) for v in wilson_interval(18, 18, level=0.95)]
    [0.824, 1.0]
    >>> [round(v, 4) for v in paired_difference_interval(59, 6, 16, 80, level=0.95)]
    [-0.1186, -0.0046]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tlkit.errors import ConfigError

#: Clopper-Pearson ("exact") interval of a binomial proportion.
EXACT = "clopper-pearson"
#: Wilson score interval of a binomial proportion.
WILSON = "wilson"
#: Percentile interval of a bootstrap over the rows.
BOOTSTRAP = "percentile-bootstrap"
#: Mean of per-class Clopper-Pearson bounds, each at level 1 - (1 - level) / classes (Bonferroni).
PER_CLASS_EXACT_BONFERRONI = "per-class-clopper-pearson-bonferroni"
#: Newcombe's hybrid score interval for a difference of paired proportions (Newcombe 1998, method 10).
NEWCOMBE_PAIRED = "newcombe-paired-score"

#: Bootstrap index matrices are built in chunks of about this many entries: small enough to stay
#: in cache and avoid fresh page faults (4M-entry chunks made a cold call 3x slower).
BOOTSTRAP_CHUNK = 250_000


def check_level(level: Any, name: str = "ci_level") -> float:
    """``level`` as a float in (0, 1), or a ConfigError naming the argument."""
    if isinstance(level, bool) or not isinstance(level, (float, int, np.floating, np.integer)) \
            or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"{name}: must be between 0 and 1 (e.g. 0.95), got {level!r}.")
    return float(level)


def _counts(k: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    k_arr, n_arr = np.asarray(k), np.asarray(n)
    if k_arr.dtype.kind not in "iu" or n_arr.dtype.kind not in "iu":
        raise ConfigError(f"k and n: expected integer counts, got {k!r} and {n!r}.")
    if np.any(n_arr < 0) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ConfigError(f"k and n: need 0 <= k <= n, got k={k!r}, n={n!r}.")
    k_arr, n_arr = np.broadcast_arrays(k_arr.astype(np.float64), n_arr.astype(np.float64))
    return k_arr, n_arr


def _pair(lo: np.ndarray, hi: np.ndarray, scalar: bool) -> Any:
    if scalar:
        return float(lo), float(hi)
    return lo, hi


def exact_interval(k: Any, n: Any, *, level: float = 0.95) -> Any:
    """Clopper-Pearson interval of ``k`` successes in ``n`` trials (scalars or arrays of counts).

    Its coverage is at least ``level`` for every true proportion and every ``n``; the bound at
    ``k == n`` is ``((1 - level) / 2) ** (1 / n)`` (18 of 18: 0.815), never the point estimate.
    Equal to ``scipy.stats.binomtest(k, n).proportion_ci(level, method="exact")``, vectorised.
    ``n == 0`` gives ``(nan, nan)``: no data, no interval.

    >>> exact_interval(0, 10, level=0.95)[1] > 0.3
    True
    """
    from scipy.stats import beta

    level = check_level(level, "level")
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k_arr, n_arr = _counts(k, n)
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k_arr > 0, beta.ppf(tail, np.maximum(k_arr, 1), n_arr - k_arr + 1), 0.0)
        hi = np.where(k_arr < n_arr, beta.ppf(1.0 - tail, k_arr + 1, np.maximum(n_arr - k_arr, 1)), 1.0)
    empty = n_arr == 0
    lo, hi = np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)
    return _pair(lo, hi, scalar)


def wilson_interval(k: Any, n: Any, *, level: float = 0.95) -> Any:
    """Wilson score interval of ``k`` successes in ``n`` trials (scalars or arrays of counts).

    Coverage close to ``level`` on average, a little narrower than :func:`exact_interval`, but it
    can dip below ``level`` for proportions near 0 or 1 at small ``n``. Equal to
    ``scipy.stats.binomtest(k, n).proportion_ci(level, method="wilson")``, vectorised; ``n == 0``
    gives ``(nan, nan)``. The building block of :func:`paired_difference_interval`.
    """
    from scipy.special import ndtri

    level = check_level(level, "level")
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k_arr, n_arr = _counts(k, n)
    z = float(ndtri(1.0 - (1.0 - level) / 2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        center = (k_arr + z * z / 2.0) / (n_arr + z * z)
        half = z / (n_arr + z * z) * np.sqrt(k_arr * (n_arr - k_arr) / n_arr + z * z / 4.0)
    # the bounds at k == 0 and k == n are 0 and 1 exactly, not 1 +- rounding
    lo = np.where(k_arr > 0, np.clip(center - half, 0.0, 1.0), 0.0)
    hi = np.where(k_arr < n_arr, np.clip(center + half, 0.0, 1.0), 1.0)
    empty = n_arr == 0
    lo, hi = np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)
    return _pair(lo, hi, scalar)


def percentile_interval(samples: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``.

    It has zero width when (nearly) every resample gives the same number, e.g. when every image
    is right: callers must check :func:`is_degenerate` and use an analytic interval instead.
    """
    level = check_level(level, "level")
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        raise ConfigError("samples: no bootstrap resamples to take an interval from (n_bootstrap is 0).")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def is_degenerate(interval: tuple[float, float]) -> bool:
    """True for an interval of (numerically) zero width, which no finite sample justifies."""
    return not interval[1] - interval[0] > 1e-12


def bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``values``, built in chunks."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    means = np.empty(n_resamples)
    chunk = max(1, BOOTSTRAP_CHUNK // max(n, 1))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        means[start:start + size] = values[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return means


def paired_difference_interval(both: int, only_first: int, only_second: int, neither: int, *,
                               level: float = 0.95) -> tuple[float, float]:
    """Interval of ``p_first - p_second`` for two proportions measured on the same items.

    The 2x2 table: ``both`` items count for both, ``only_first`` / ``only_second`` for one,
    ``neither`` for none; ``p_first = (both + only_first) / n``, ``p_second = (both + only_second) / n``.

    Newcombe's hybrid score interval for paired data (R. G. Newcombe, "Improved confidence
    intervals for the difference between binomial proportions based on paired data", Statistics
    in Medicine 17:2635-2650, 1998, method 10): the Wilson intervals of the two proportions are
    combined by "square and add", corrected for their correlation by the phi coefficient of the
    table, with phi's numerator reduced by n/2 towards 0 as in Newcombe's paper and in Fagerland,
    Lydersen & Laake, "Recommended tests and confidence intervals for paired binomial
    proportions", Statistics in Medicine 33:2850-2875, 2014 (who recommend it). Because the
    Wilson intervals never collapse and the corrected phi stays below 1, the interval has
    positive width for every table, including no discordant items at all (identical results)
    and every item counted in both. Fagerland et al.'s example (59, 6, 16, 80) gives
    (-0.1186, -0.0046).
    """
    level = check_level(level, "level")
    cells = (both, only_first, only_second, neither)
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0 for c in cells):
        raise ConfigError(f"paired counts: expected four integers >= 0, got {cells!r}.")
    both, only_first, only_second, neither = (int(c) for c in cells)
    n = both + only_first + only_second + neither
    if n == 0:
        raise ConfigError("paired counts: all four are 0; there is nothing to compare.")
    first, second = both + only_first, both + only_second
    p1, p2 = first / n, second / n
    l1, u1 = wilson_interval(first, n, level=level)
    l2, u2 = wilson_interval(second, n, level=level)
    margins = first * (n - first) * second * (n - second)
    phi = 0.0
    if margins > 0:
        cross = both * neither - only_first * only_second
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    d1, e1 = p1 - l1, u1 - p1
    d2, e2 = p2 - l2, u2 - p2
    below = math.sqrt(max(0.0, d1 * d1 - 2.0 * phi * d1 * e2 + e2 * e2))
    above = math.sqrt(max(0.0, e1 * e1 - 2.0 * phi * e1 * d2 + d2 * d2))
    difference = p1 - p2
    return max(-1.0, difference - below), min(1.0, difference + above)


def bootstrap_balanced_accuracy(labels: np.ndarray, correct: np.ndarray, n_classes: int, n_resamples: int,
                                rng: np.random.Generator) -> np.ndarray:
    """Balanced accuracy of ``n_resamples`` resamples (with replacement) of the rows, vectorised per chunk.

    ``labels`` are the rows' true label indices, ``correct`` whether each row was predicted right.
    Like scikit-learn, a class absent from a resample's labels is left out of its mean recall.
    """
    n = labels.shape[0]
    bal = np.empty(n_resamples)
    chunk = max(1, BOOTSTRAP_CHUNK // n)
    correct_f = correct.astype(np.float64)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        hit = correct_f[idx]
        # One bincount over (resample, class) keys gives per-resample support and hits at once.
        keys = (np.arange(b)[:, None] * n_classes + labels[idx]).ravel()
        support = np.bincount(keys, minlength=b * n_classes).reshape(b, n_classes)
        hits = np.bincount(keys, weights=hit.ravel(), minlength=b * n_classes)
        hits = hits.reshape(b, n_classes)
        present = support > 0
        recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
        bal[start : start + b] = recall.sum(axis=1) / present.sum(axis=1)
    return bal


def mean_exact_interval_bonferroni(hits: np.ndarray, support: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """Mean of the per-class exact (Clopper-Pearson) bounds of ``hits`` out of ``support``, each at the
    Bonferroni level ``1 - (1 - level) / classes`` (method :data:`PER_CLASS_EXACT_BONFERRONI`).

    All those bounds hold together with probability at least ``level``, so their mean bounds the mean
    of the proportions (a balanced accuracy, over the classes given) at least that often.
    """
    lo, hi = exact_interval(hits, support, level=1.0 - (1.0 - level) / len(support))
    return float(lo.mean()), float(hi.mean())


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error over ``n_bins`` equal-width bins (lo, hi] of top-1 ``confidence``,
    weighted by bin count, and the bins (``lower``, ``upper``, ``count``, mean ``confidence`` and
    ``accuracy``; the last two ``None`` for an empty bin) that a reliability diagram draws."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a confidence equal to an edge in the bin that edge closes: (lo, hi].
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins)
    ece = 0.0
    reliability = []
    for b in range(n_bins):
        count = int(counts[b])
        mean_conf = float(conf_sum[b] / count) if count else None
        acc = float(acc_sum[b] / count) if count else None
        if count:
            ece += count / confidence.shape[0] * abs(acc - mean_conf)
        reliability.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": mean_conf,
                "accuracy": acc,
            }
        )
    return float(ece), reliability


def top1_calibration(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[float, list[dict[str, Any]]]:
    """:func:`calibration` of rows of class probabilities against label indices (top-1 confidence, right or not).

    >>> top1_calibration(np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]), 10)[0]  # 0.1 under 0.9 right, 0.6 over 0.6 wrong
    0.35
    """
    probs = np.asarray(probs, dtype=float)
    y_pred = probs.argmax(axis=1)
    return calibration(probs[np.arange(len(y_pred)), y_pred], y_pred == np.asarray(labels), n_bins)
