"""Metrics, confidence intervals and a confusion matrix computed from predictions.

Compute only: nothing here plots or writes files (that is ``tlkit.report.files``). Every metric is the
number scikit-learn gives, always computed over the model's *full* class list, so a class that is
absent from the test set still has its row and column in the confusion matrix.

Intervals (see :func:`evaluate_predictions` for why each method): accuracy, per-class recall and
per-class precision get Clopper-Pearson intervals; balanced accuracy a percentile bootstrap, or,
when the bootstrap collapses, an interval built from the per-class exact bounds. No interval is
ever of zero width. ``EvalResult.warnings`` says when the test set is too small to conclude much.

Example:
    >>> import numpy as np
    >>> from tlkit.evaluation.scoring import evaluate_predictions
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> result = evaluate_predictions([0, 1, 1, 1], probs, ["cat", "dog"], n_bootstrap=200)
    >>> result.accuracy
    0.75
    >>> result.confusion.tolist()
    [[1, 0], [1, 2]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from tlkit.errors import ConfigError, DataError
from tlkit.evaluation import stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ECE_BINS = 15
TOP_K = (1, 3, 5)
# Rows of a 1e-3 tolerance: float16/float32 softmax outputs do not sum to exactly 1.
_PROB_SUM_TOLERANCE = 1e-3
# When to warn that the test set is too small to conclude much (EvalResult.warnings):
#: fewer test images than this: every number is rough (at 30 images one mistake moves accuracy 3 points)
MIN_TEST_IMAGES = 30
#: a class with fewer test images than this: its recall and precision say almost nothing
#: (4 of 4 right still only bounds its recall above 0.40 at 95%)
MIN_CLASS_SUPPORT = 5
#: an accuracy or balanced-accuracy interval wider than this: the test set cannot tell models
#: apart that differ by less (a 0.2-wide interval is what about 100 images at 50% accuracy give)
MAX_CI_WIDTH = 0.2
# How many of the worst mistakes ``to_dict`` keeps (metrics.json stays small; predictions.csv has all).
_WORST_IN_DICT = 20


@dataclass(repr=False, eq=False)
class EvalResult:
    """Predictions on a labelled set and every metric derived from them.

    Build it with :func:`evaluate_predictions`; the derived fields are plain Python/numpy values.
    Each interval is a ``(low, high)`` tuple at ``ci_level``, and its ``*_ci_method`` field names
    the method that made it (one of the names in :mod:`tlkit.evaluation.stats`). ``per_class`` is a list of
    flat dicts with the same keys in every row (``class``, ``precision``, ``recall``, ``f1``,
    ``support``, ``precision_ci_low``, ``precision_ci_high``, ``recall_ci_low``,
    ``recall_ci_high``, ``predicted``; a bound is ``None`` where its denominator is 0), so
    ``pd.DataFrame(result.per_class)`` is a table with one row per class. ``warnings`` lists,
    in words, why the numbers may not support a conclusion (too few images, a rare class, a
    wide interval); it is empty when none applies.
    """

    classes: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    paths: list[str] | None
    unknown: dict[str, list[str]]
    y_pred: np.ndarray
    accuracy: float
    accuracy_ci: tuple[float, float]
    accuracy_ci_method: str
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float] | None
    balanced_accuracy_ci_method: str | None
    top_k: dict[int, float]
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    per_class: list[dict[str, Any]]
    per_class_ci_method: str
    confusion: np.ndarray
    confusion_normalized: np.ndarray
    ece: float
    reliability: list[dict[str, Any]]
    confused_pairs: list[tuple[str, str, int]]
    misclassified: list[dict[str, Any]]
    n_bootstrap: int
    ci_level: float
    seed: int
    warnings: list[str]

    @property
    def n(self) -> int:
        """Number of evaluated predictions (files of unknown classes are not counted)."""
        return int(self.y_true.shape[0])

    @property
    def confidence(self) -> np.ndarray:
        """Top-1 probability per row."""
        return self.probs.max(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metrics: no per-row arrays (those go to predictions.csv)."""
        return {
            "n": self.n,
            "classes": list(self.classes),
            "accuracy": self.accuracy,
            "accuracy_ci": _ci_list(self.accuracy_ci),
            "accuracy_ci_method": self.accuracy_ci_method,
            "balanced_accuracy": self.balanced_accuracy,
            "balanced_accuracy_ci": _ci_list(self.balanced_accuracy_ci),
            "balanced_accuracy_ci_method": self.balanced_accuracy_ci_method,
            "top_k": {str(k): v for k, v in self.top_k.items()},
            "precision_macro": self.precision_macro,
            "recall_macro": self.recall_macro,
            "f1_macro": self.f1_macro,
            "precision_weighted": self.precision_weighted,
            "recall_weighted": self.recall_weighted,
            "f1_weighted": self.f1_weighted,
            "per_class": [dict(row) for row in self.per_class],
            "per_class_ci_method": self.per_class_ci_method,
            "confusion": self.confusion.tolist(),
            "confusion_normalized": self.confusion_normalized.tolist(),
            "ece": self.ece,
            "ece_bins": len(self.reliability),
            "reliability": [dict(b) for b in self.reliability],
            "confused_pairs": [
                {"true": t, "pred": p, "count": c} for t, p, c in self.confused_pairs
            ],
            "n_misclassified": len(self.misclassified),
            "misclassified_worst": [dict(m) for m in self.misclassified[:_WORST_IN_DICT]],
            "unknown": {name: list(files) for name, files in self.unknown.items()},
            "n_bootstrap": self.n_bootstrap,
            "ci_level": self.ci_level,
            "seed": self.seed,
            "warnings": list(self.warnings),
        }

    def summary_text(self) -> str:
        """A plain multi-line summary (warnings, headline metrics, per-class table, top confusions).

        Class names and paths that are not valid text (undecodable file names) are shown with
        ``\\xNN`` escapes, so the summary can always be printed.
        """
        from tlkit.report.files import readable_text as readable

        level = f"{self.ci_level:.0%} CI"
        lines = [f"warning: {w}" for w in self.warnings]
        lines += [
            f"n = {self.n}, {len(self.classes)} classes",
            f"accuracy           {_fmt_ci(self.accuracy, self.accuracy_ci)}  "
            f"({level}, {self.accuracy_ci_method})",
            f"balanced accuracy  {_fmt_ci(self.balanced_accuracy, self.balanced_accuracy_ci)}"
            + (f"  ({level}, {self.balanced_accuracy_ci_method})" if self.balanced_accuracy_ci else ""),
            f"macro F1           {self.f1_macro:.3f}",
            f"weighted F1        {self.f1_weighted:.3f}",
        ]
        lines += [f"top-{k} accuracy     {v:.3f}" for k, v in self.top_k.items() if k > 1]
        lines.append(f"ECE ({len(self.reliability)} bins)      {self.ece:.3f}")
        names = [readable(c) for c in self.classes]
        width = max(len("class"), *(len(c) for c in names))
        lines += [
            "",
            f"{'class':<{width}}  {'precision':<21}  {'recall':<21}     f1  support"
            f"  ({level}, {self.per_class_ci_method})",
        ]
        for name, row in zip(names, self.per_class):
            precision = _fmt_ci(row["precision"], _row_ci(row, "precision"))
            recall = _fmt_ci(row["recall"], _row_ci(row, "recall"))
            lines.append(
                f"{name:<{width}}  {precision:<21}  {recall:<21}  {row['f1']:5.3f}  {row['support']:7d}"
            )
        if self.confused_pairs:
            lines += ["", "most confused (true -> predicted: count)"]
            lines += [f"  {readable(t)} -> {readable(p)}: {c}" for t, p, c in self.confused_pairs[:5]]
        for name, files in self.unknown.items():
            lines.append(f"unknown class {name!r}: {len(files)} files not evaluated")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from tlkit.report.files import result_html

        return result_html(self)

    def __repr__(self) -> str:
        acc = _fmt_ci(self.accuracy, self.accuracy_ci)
        return f"EvalResult(n={self.n}, classes={len(self.classes)}, accuracy={acc})"

    # Thin conveniences; the drawing code lives in tlkit.report.files.
    def plot_confusion_matrix(self, ax: Axes | None = None, *, normalize: bool = False) -> Axes:
        """Draw the confusion matrix (counts, or rows normalised to recall)."""
        from tlkit.report.files import plot_confusion_matrix

        return plot_confusion_matrix(self, ax, normalize=normalize)

    def plot_reliability(self, ax: Axes | None = None) -> Axes:
        """Draw the reliability diagram with the ECE in the title."""
        from tlkit.report.files import plot_reliability

        return plot_reliability(self, ax)

    def plot_per_class(self, ax: Axes | None = None) -> Axes:
        """Draw per-class recall and F1 with the support of each class."""
        from tlkit.report.files import plot_per_class

        return plot_per_class(self, ax)

    def plot_misclassified(
        self, max_images: int = 16, *, load_image: Callable[[str], Any] | None = None,
        explain: Callable[[str], Any] | None = None,
    ) -> Figure:
        """Draw a gallery of the most confident mistakes (``explain``: Grad-CAM beside each, see
        :func:`tlkit.models.explain.explainer`)."""
        from tlkit.report.files import plot_misclassified

        return plot_misclassified(self, max_images, load_image=load_image, explain=explain)


def evaluate_predictions(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    unknown: dict[str, list[str]] | None = None,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> EvalResult:
    """Compute every metric of an :class:`EvalResult` from labels and predicted probabilities.

    ``y_true`` holds label indices into ``classes`` (the model's full class list), ``probs`` one
    row of class probabilities per prediction. ``unknown`` maps a class name the model never saw
    to its files; they are reported, never scored.

    Intervals, all two-sided at ``ci_level``, each with its method named in a ``*_ci_method``
    field:

    - **accuracy, per-class recall and per-class precision**: Clopper-Pearson ("exact") intervals
      of k right out of n (recall: out of the class's support; precision: out of the images
      predicted as the class). Chosen over Wilson because its coverage is guaranteed to be at
      least ``ci_level`` for every true value and every n, while Wilson's dips below it near 0
      and 1 at small n (Brown, Cai & DasGupta, Statistical Science 16:101-133, 2001), which is
      exactly where a good model on a small test set sits; the cost is a slightly wider interval
      (18 of 18 right: [0.815, 1] against Wilson's [0.824, 1]; a percentile bootstrap would say
      [1, 1]). A bound whose denominator is 0 (a class with no test images, or never predicted)
      is ``None``.
    - **balanced accuracy**: a percentile bootstrap over ``n_bootstrap`` resamples of the rows
      (0 disables it: ``balanced_accuracy_ci`` is then ``None``). When the bootstrap degenerates
      to zero width (every resample equal: all right, all wrong, or each class all right or all
      wrong), it is replaced by the mean over the classes present of their recall's
      Clopper-Pearson bounds, each at level ``1 - (1 - ci_level) / classes``: by Bonferroni all
      of those hold together with probability at least ``ci_level``, so their mean bounds the
      balanced accuracy at least that often (method ``per-class-clopper-pearson-bonferroni``).

    ``warnings`` (see :data:`MIN_TEST_IMAGES`, :data:`MIN_CLASS_SUPPORT`, :data:`MAX_CI_WIDTH`)
    says when the test set is too small to conclude much.

    Example:
        >>> r = evaluate_predictions([0, 1], np.eye(2), ["a", "b"], n_bootstrap=0)
        >>> r.accuracy, [round(v, 3) for v in r.accuracy_ci], r.accuracy_ci_method
        (1.0, [0.158, 1.0], 'clopper-pearson')
        >>> r.balanced_accuracy_ci is None
        True
        >>> r.warnings[0]
        'only 2 test images (fewer than 30): every number here is rough; score more images before concluding anything'
    """
    class_list, labels, probs_arr, path_list = _validate(
        y_true, probs, classes, paths, n_bootstrap, ci_level, seed
    )
    n_classes = len(class_list)
    label_range = np.arange(n_classes)

    y_pred = probs_arr.argmax(axis=1)
    correct = y_pred == labels
    accuracy = float(accuracy_score(labels, y_pred))

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, y_pred, labels=label_range, average=None, zero_division=0
    )
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, y_pred, labels=label_range, average=average, zero_division=0
        )
        averages[average] = (float(p), float(r), float(f))
    # sklearn's balanced_accuracy_score warns and drops classes absent from y_true; this is the
    # same number (mean recall over the classes present) without the warning.
    present = support > 0
    balanced_accuracy = float(recall[present].mean())

    if n_classes > 2:
        top_k = {
            k: float(top_k_accuracy_score(labels, probs_arr, k=k, labels=label_range))
            for k in TOP_K
            if k == 1 or k < n_classes
        }
    else:
        # top_k_accuracy_score rejects 2-column scores for binary targets; top-1 is accuracy.
        top_k = {1: accuracy}

    confusion = confusion_matrix(labels, y_pred, labels=label_range)
    row_sums = confusion.sum(axis=1, keepdims=True)
    confusion_normalized = np.divide(
        confusion, row_sums, out=np.zeros(confusion.shape, dtype=float), where=row_sums > 0
    )

    confidence = probs_arr[np.arange(len(labels)), y_pred]
    ece, reliability = _calibration(confidence, correct, ECE_BINS)

    n_right = int(correct.sum())
    accuracy_ci = stats.exact_interval(n_right, len(labels), level=ci_level)
    # integer counts from the confusion matrix (sklearn's support can come back as floats)
    true_positives = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    recall_lo, recall_hi = stats.exact_interval(true_positives, support, level=ci_level)
    precision_lo, precision_hi = stats.exact_interval(true_positives, predicted, level=ci_level)

    balanced_ci, balanced_method = None, None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        bal_samples = _bootstrap_balanced(labels, correct, n_classes, n_bootstrap, rng)
        balanced_ci, balanced_method = stats.percentile_interval(bal_samples, level=ci_level), stats.BOOTSTRAP
        if stats.is_degenerate(balanced_ci):
            balanced_ci = _balanced_fallback(true_positives[present], support[present], ci_level)
            balanced_method = stats.PER_CLASS_EXACT_BONFERRONI

    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "precision_ci_low": _bound(precision_lo[i]),
            "precision_ci_high": _bound(precision_hi[i]),
            "recall_ci_low": _bound(recall_lo[i]),
            "recall_ci_high": _bound(recall_hi[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(class_list)
    ]

    return EvalResult(
        classes=class_list,
        y_true=labels,
        probs=probs_arr,
        paths=path_list,
        unknown={str(k): [str(f) for f in v] for k, v in (unknown or {}).items()},
        y_pred=y_pred,
        accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        accuracy_ci_method=stats.EXACT,
        balanced_accuracy=balanced_accuracy,
        balanced_accuracy_ci=balanced_ci,
        balanced_accuracy_ci_method=balanced_method,
        top_k=top_k,
        precision_macro=averages["macro"][0],
        recall_macro=averages["macro"][1],
        f1_macro=averages["macro"][2],
        precision_weighted=averages["weighted"][0],
        recall_weighted=averages["weighted"][1],
        f1_weighted=averages["weighted"][2],
        per_class=per_class,
        per_class_ci_method=stats.EXACT,
        confusion=confusion,
        confusion_normalized=confusion_normalized,
        ece=ece,
        reliability=reliability,
        confused_pairs=_confused_pairs(confusion, class_list),
        misclassified=_misclassified(labels, y_pred, probs_arr, confidence, class_list, path_list),
        n_bootstrap=n_bootstrap,
        ci_level=ci_level,
        seed=seed,
        warnings=_warnings(class_list, support, accuracy_ci, balanced_ci, ci_level),
    )


def _validate(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    paths: Sequence[str] | None,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> tuple[list[str], np.ndarray, np.ndarray, list[str] | None]:
    """Check every argument up front; errors name the argument and say how to fix the call."""
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError("classes: expected a list of class names in label order.")
    class_list = [str(c) for c in classes]
    if len(class_list) < 2:
        raise ConfigError(f"classes: need at least 2 classes to evaluate, got {len(class_list)}.")
    if len(set(class_list)) != len(class_list):
        dupes = sorted({c for c in class_list if class_list.count(c) > 1})
        raise ConfigError(f"classes: duplicate class names {dupes}; every class needs one name.")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)):
        raise ConfigError(f"n_bootstrap: expected an integer >= 0, got {n_bootstrap!r}.")
    if n_bootstrap < 0:
        raise ConfigError(
            f"n_bootstrap: must be >= 0 (0 disables the balanced-accuracy bootstrap), got {n_bootstrap}."
        )
    stats.check_level(ci_level, "ci_level")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed: expected an integer, got {seed!r}.")

    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ConfigError(f"y_true: expected a 1-D array of labels, got shape {labels.shape}.")
    if labels.shape[0] == 0:
        raise DataError("y_true: no predictions to evaluate (0 rows); is the test set empty?")
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels % 1 == 0):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise ConfigError(
            f"y_true: expected integer label indices, got dtype {labels.dtype}; "
            "map class names to indices with classes.index(name)."
        )
    labels = labels.astype(np.int64)
    n_classes = len(class_list)
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise ConfigError(
            f"y_true: label {int(labels[bad][0])} is outside [0, {n_classes}) for "
            f"{n_classes} classes; files of classes the model never saw belong in `unknown`."
        )

    probs_arr = np.asarray(probs, dtype=np.float64)
    if probs_arr.ndim != 2 or probs_arr.shape != (labels.shape[0], n_classes):
        raise ConfigError(
            f"probs: expected shape (N, C) = ({labels.shape[0]}, {n_classes}) to match y_true and "
            f"classes, got {probs_arr.shape}."
        )
    if not np.all(np.isfinite(probs_arr)):
        row = int(np.argwhere(~np.isfinite(probs_arr))[0, 0])
        raise ConfigError(f"probs: row {row} contains NaN or infinity.")
    sums = probs_arr.sum(axis=1)
    off = np.abs(sums - 1.0) > _PROB_SUM_TOLERANCE
    if off.any() or (probs_arr < -_PROB_SUM_TOLERANCE).any():
        row = int(np.argmax(off)) if off.any() else int(np.argwhere(probs_arr < 0)[0, 0])
        raise ConfigError(
            f"probs: row {row} is not a probability distribution (sum {sums[row]:.4f}); "
            "pass softmax(logits), not logits."
        )

    path_list = None
    if paths is not None:
        path_list = [str(p) for p in paths]
        if len(path_list) != labels.shape[0]:
            raise ConfigError(
                f"paths: got {len(path_list)} paths for {labels.shape[0]} predictions; "
                "pass one path per row or None."
            )
    return class_list, labels, probs_arr, path_list


def _bootstrap_balanced(
    labels: np.ndarray,
    correct: np.ndarray,
    n_classes: int,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Balanced accuracy of ``n_bootstrap`` row resamples, vectorised per chunk."""
    n = labels.shape[0]
    bal = np.empty(n_bootstrap)
    chunk = max(1, stats.BOOTSTRAP_CHUNK // n)
    correct_f = correct.astype(np.float64)
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        hit = correct_f[idx]
        # One bincount over (resample, class) keys gives per-resample support and hits at once.
        keys = (np.arange(b)[:, None] * n_classes + labels[idx]).ravel()
        support = np.bincount(keys, minlength=b * n_classes).reshape(b, n_classes)
        hits = np.bincount(keys, weights=hit.ravel(), minlength=b * n_classes)
        hits = hits.reshape(b, n_classes)
        present = support > 0
        recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
        # Like sklearn, classes absent from a resample's y_true are left out of the mean.
        bal[start : start + b] = recall.sum(axis=1) / present.sum(axis=1)
    return bal


def _balanced_fallback(hits: np.ndarray, support: np.ndarray, level: float) -> tuple[float, float]:
    """Mean of the per-class exact recall bounds at the Bonferroni level 1 - (1 - level) / C."""
    lo, hi = stats.exact_interval(hits, support, level=1.0 - (1.0 - level) / len(support))
    return float(lo.mean()), float(hi.mean())


def _bound(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _row_ci(row: dict[str, Any], metric: str) -> tuple[float, float] | None:
    lo, hi = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    return None if lo is None else (lo, hi)


def _warnings(
    classes: list[str],
    support: np.ndarray,
    accuracy_ci: tuple[float, float],
    balanced_ci: tuple[float, float] | None,
    level: float,
) -> list[str]:
    """Why the numbers may not support a conclusion, in words (thresholds: the module constants).

    Class names appear as ``repr`` gives them, so an undecodable folder name is escaped and the
    warning can always be printed or encoded.
    """
    out = []
    n = int(support.sum())
    if n < MIN_TEST_IMAGES:
        out.append(
            f"only {n} test images (fewer than {MIN_TEST_IMAGES}): every number here is rough; "
            "score more images before concluding anything"
        )
    absent = [classes[i] for i in np.flatnonzero(support == 0)]
    if absent:
        shown = ", ".join(repr(c) for c in absent[:5]) + (", ..." if len(absent) > 5 else "")
        out.append(
            f"{len(absent)} class{'es have' if len(absent) > 1 else ' has'} no test images ({shown}): "
            "recall is undefined there (shown as 0) and left out of balanced accuracy"
        )
    rare = [i for i in np.flatnonzero((support > 0) & (support < MIN_CLASS_SUPPORT))]
    if rare:
        shown = ", ".join(f"{classes[i]!r} ({int(support[i])})" for i in rare[:5])
        out.append(
            f"{len(rare)} class{'es have' if len(rare) > 1 else ' has'} fewer than {MIN_CLASS_SUPPORT} "
            f"test images ({shown}{', ...' if len(rare) > 5 else ''}): their recall and precision say "
            "almost nothing (see their intervals)"
        )
    for name, ci in (("accuracy", accuracy_ci), ("balanced accuracy", balanced_ci)):
        if ci is not None and ci[1] - ci[0] > MAX_CI_WIDTH:
            out.append(
                f"the {level:.0%} interval of {name} is {ci[1] - ci[0]:.2f} wide (more than "
                f"{MAX_CI_WIDTH}): differences smaller than that cannot be told from noise on this test set"
            )
    return out


def _calibration(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[float, list[dict[str, Any]]]:
    """ECE over equal-width bins (lo, hi] of top-1 confidence, weighted by bin count."""
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


def _confused_pairs(confusion: np.ndarray, classes: list[str]) -> list[tuple[str, str, int]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    pairs = [(classes[t], classes[p], int(off[t, p])) for t, p in zip(rows, cols)]
    return sorted(pairs, key=lambda x: (-x[2], x[0], x[1]))


def _misclassified(
    labels: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    confidence: np.ndarray,
    classes: list[str],
    paths: list[str] | None,
) -> list[dict[str, Any]]:
    wrong = np.flatnonzero(labels != y_pred)
    # Most confident mistakes first; ties keep row order so the list is deterministic.
    order = wrong[np.lexsort((wrong, -confidence[wrong]))]
    return [
        {
            "index": int(i),
            "path": paths[i] if paths is not None else None,
            "true": classes[labels[i]],
            "pred": classes[y_pred[i]],
            "confidence": float(confidence[i]),
            "prob_true": float(probs[i, labels[i]]),
        }
        for i in order
    ]


def _ci_list(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [ci[0], ci[1]]


def _fmt_ci(value: float, ci: tuple[float, float] | None) -> str:
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


# --------------------------------------------------------------------------------------------
# the front door: a model (or run directory) and a dataset in, an EvalResult out


def evaluate(model_or_run: Any, data: Any = None, *, split: str = "test", batch_size: int = 32, workers: int = 0,
             device: str = "cpu", n_bootstrap: int = 1000, seed: int = 0, skip_bad: bool = False) -> EvalResult:
    """Evaluate a trained model on a dataset, over the model's full class list.

    ``skip_bad``: unreadable images are left out (named in ``result.warnings``) instead of stopping.

    ``model_or_run``: a :class:`~tlkit.models.transfer.TransferModel`, a run directory or a saved model folder.
    ``data``: ``None`` (the run's own ``split`` from its ``splits.json``), a folder of class folders
    (every image is used unless ``split`` names a split of a train/val/test layout), or a
    :class:`~tlkit.data.Manifest`. Images in folders whose name is not one of the model's classes
    are reported in ``result.unknown``, never silently dropped.

    >>> # result = tlkit.evaluate("runs/leaves", "data/new_leaves", split="all"); result.accuracy
    """
    from pathlib import Path

    from tlkit.data import Manifest, scan
    from tlkit.models.transfer import TransferModel, load

    model = model_or_run if isinstance(model_or_run, TransferModel) else load(model_or_run, device=device)
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"split must be train, val, test or all, got {split!r}")
    if data is None:
        if isinstance(model_or_run, TransferModel):
            raise ConfigError("data: give a folder or a Manifest when evaluating a model object")
        splits_path = Path(model_or_run) / "splits.json"
        if not splits_path.is_file():
            raise DataError(f"{model_or_run} has no splits.json; give the DATA folder to evaluate on")
        manifest = Manifest.load(splits_path)
        _check_run_root(Path(model_or_run), manifest)
    elif isinstance(data, Manifest):
        manifest = data
    else:
        root = Path(data)
        is_split_layout = any(p.is_dir() and p.name.lower() == "train" for p in root.iterdir()) if root.is_dir() else False
        if not is_split_layout and split != "all":
            split = "all"  # a plain class-folder dataset given for evaluation is used whole
        # one class is enough to evaluate on (a folder of new images of one kind)
        manifest = (scan(root, val_fraction=0.0, test_fraction=0.0, min_classes=1) if not is_split_layout
                    else scan(root, min_classes=1))
    names = ("train", "val", "test") if split == "all" else (split,)
    rows = [(path, manifest.classes[label]) for s in names for path, label in zip(manifest.paths(s), manifest.labels(s))]
    if not rows:
        raise DataError(f"no images in split '{split}' of {manifest.root}")
    index = {name: i for i, name in enumerate(model.classes)}
    known = [(p, index[c]) for p, c in rows if c in index]
    unknown: dict[str, list[str]] = {}
    for p, c in rows:
        if c not in index:
            unknown.setdefault(c, []).append(p)
    if not known:
        raise DataError(f"none of the classes in {manifest.root} ({', '.join(sorted(unknown))}) is known to the model "
                        f"(classes: {', '.join(model.classes)})")
    preds = model.predict([p for p, _ in known], batch_size=batch_size, workers=workers, skip_bad=skip_bad)
    label_of = dict(known)
    if not preds.sources:
        raise DataError(f"none of the {len(known)} images in {manifest.root} could be read; see `tlkit check`")
    result = evaluate_predictions(np.array([label_of[p] for p in preds.sources]), preds.probs, model.classes,
                                  paths=preds.sources, unknown=unknown, n_bootstrap=n_bootstrap, seed=seed)
    if preds.skipped:
        shown = ", ".join(s["path"] for s in preds.skipped[:5]) + (" ..." if len(preds.skipped) > 5 else "")
        result.warnings.append(f"{len(preds.skipped)} unreadable image(s) left out (--skip-bad): {shown}")
    return result


def _check_run_root(run_dir: Any, manifest: Any) -> None:
    """A run's splits.json must point at the data the run was trained on (its config.yaml says where):
    an edited root would make tlkit read files from anywhere."""
    import os

    from tlkit.config import load_run_config

    config = run_dir / "config.yaml"
    if not config.is_file():
        return
    trained_on = os.path.realpath(load_run_config(config).data.path)
    if os.path.realpath(manifest.root) != trained_on:
        raise DataError(f"{run_dir / 'splits.json'} points at {manifest.root}, but the run was trained on "
                        f"{trained_on} (config.yaml): the file was edited or the data moved. Give the data folder "
                        "to evaluate on explicitly: tlkit evaluate RUN_DIR DATA")


