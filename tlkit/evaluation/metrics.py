"""Metrics, confidence intervals and a confusion matrix computed from predictions: :class:`EvalResult`.

Compute only: nothing here writes files (that is :mod:`tlkit.report`); the figures and tables of a
result are drawn from its numbers by :mod:`tlkit.evaluation.display` and
:mod:`tlkit.evaluation.summary`. Every metric is the number scikit-learn gives, always computed over
the model's *full* class list, so a class that is absent from the test set still has its row and
column in the confusion matrix.

Intervals (see :func:`evaluate_predictions` for why each method): accuracy, per-class recall and
per-class precision get Clopper-Pearson intervals; balanced accuracy a percentile bootstrap, or,
when the bootstrap collapses, an interval built from the per-class exact bounds. No interval is
ever of zero width. ``EvalResult.warnings`` says when the test set is too small to conclude much
(:mod:`tlkit.evaluation.checks`).

Example:
    >>> import numpy as np
    >>> from tlkit.evaluation.metrics import evaluate_predictions
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

from tlkit.errors import ConfigError
from tlkit.evaluation import curve_display, display, stats, summary
from tlkit.evaluation.binary import BinaryCurves, binary_curves, positive_class, predict_with_threshold
from tlkit.evaluation.checks import check_inputs, sample_warnings
from tlkit.evaluation.rows import ci_list, confused_pairs, misclassified_rows, per_class_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ECE_BINS = 15
TOP_K = (1, 3, 5)
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
    #: the temperature ``probs`` were scaled with (None: not known, the probabilities were given as they are)
    temperature: float | None = None
    #: ECE and reliability bins of the probabilities before temperature scaling (None when not given)
    ece_uncalibrated: float | None = None
    reliability_uncalibrated: list[dict[str, Any]] | None = None
    #: two classes: ROC and precision-recall curves, the positive class and the threshold used (else None)
    binary: BinaryCurves | None = None
    #: rejections and the coverage-accuracy curve of the OOD score (tlkit.evaluation.coverage; None: no score)
    ood: Any = None

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
            "accuracy_ci": ci_list(self.accuracy_ci),
            "accuracy_ci_method": self.accuracy_ci_method,
            "balanced_accuracy": self.balanced_accuracy,
            "balanced_accuracy_ci": ci_list(self.balanced_accuracy_ci),
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
            "temperature": self.temperature,
            "ece_uncalibrated": self.ece_uncalibrated,
            "reliability_uncalibrated": None if self.reliability_uncalibrated is None
            else [dict(b) for b in self.reliability_uncalibrated],
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
            "binary": None if self.binary is None else self.binary.to_dict(),
            "ood": None if self.ood is None else self.ood.to_dict(),
        }

    def per_class_frame(self) -> Any:
        """:attr:`per_class` as a pandas DataFrame indexed by class (pandas is imported here, only when asked)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("per_class_frame() needs pandas: pip install pandas (or use the list result.per_class, "
                              "or per_class.csv)") from exc
        return pd.DataFrame(self.per_class).set_index("class")

    def summary_text(self) -> str:
        """A plain multi-line summary (warnings, headline metrics, per-class table, top confusions).

        Class names and paths that are not valid text (undecodable file names) are shown with
        ``\\xNN`` escapes, so the summary can always be printed.
        """
        return summary.summary_text(self)

    def _repr_html_(self) -> str:
        return summary.result_html(self)

    def __repr__(self) -> str:
        acc = summary.format_with_ci(self.accuracy, self.accuracy_ci)
        return f"EvalResult(n={self.n}, classes={len(self.classes)}, accuracy={acc})"

    # Thin conveniences over the displays of tlkit.evaluation.display.
    def plot_confusion_matrix(self, ax: Axes | None = None, *, normalize: bool = False) -> Axes:
        """Draw the confusion matrix (counts, or rows normalised to recall)."""
        return display.ConfusionMatrixDisplay.from_result(self, normalize=normalize).plot(ax).ax_

    def plot_reliability(self, ax: Axes | None = None) -> Axes:
        """Draw the reliability diagram with the ECE in the title."""
        return display.ReliabilityDisplay.from_result(self).plot(ax).ax_

    def plot_per_class(self, ax: Axes | None = None) -> Axes:
        """Draw per-class recall and F1 with the support of each class."""
        return display.PerClassDisplay.from_result(self).plot(ax).ax_

    def plot_misclassified(
        self, max_images: int = 16, *, load_image: Callable[[str], Any] | None = None,
        explain: Callable[[str], Any] | None = None,
    ) -> Figure:
        """Draw a gallery of the most confident mistakes (``explain``: Grad-CAM beside each, see
        :func:`tlkit.models.explain.explainer`)."""
        gallery = display.MisclassifiedDisplay.from_result(self, max_images, load_image=load_image, explain=explain)
        return gallery.plot().figure_

    def plot_roc(self, ax: Axes | None = None) -> Axes:
        """Draw the ROC curve of a two-class result, its AUC and the operating point(s)."""
        return curve_display.RocCurveDisplay.from_result(self).plot(ax).ax_

    def plot_precision_recall(self, ax: Axes | None = None) -> Axes:
        """Draw the precision-recall curve of a two-class result, its average precision and the operating point(s)."""
        return curve_display.PrecisionRecallDisplay.from_result(self).plot(ax).ax_


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
    uncalibrated_probs: np.ndarray | None = None, temperature: float | None = None,
    positive: str | None = None, threshold: float | None = None,
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

    ``uncalibrated_probs``: ``probs`` before scaling by ``temperature``; their ECE is ``ece_uncalibrated``.
    Two classes: ``binary`` has the ROC and PR curves of the ``positive`` class (default: the rule of
    :func:`~tlkit.evaluation.binary.positive_class`); ``threshold``: "positive" where p >= it (default: argmax).
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
    class_list, labels, probs_arr, path_list = check_inputs(y_true, probs, classes, paths, n_bootstrap, ci_level, seed)
    y_pred, binary_pos = _decide(class_list, labels, probs_arr, positive, threshold)
    correct = y_pred == labels
    scores = _scores(labels, y_pred, probs_arr, len(class_list))
    confusion = confusion_matrix(labels, y_pred, labels=np.arange(len(class_list)))
    row_sums, confidence = confusion.sum(axis=1, keepdims=True), probs_arr[np.arange(len(labels)), y_pred]
    ece, reliability = stats.calibration(confidence, correct, ECE_BINS)
    ci = _intervals(labels, correct, confusion, n_bootstrap, ci_level, seed)
    (ece_before, bins_before), binary = _before_scaling(uncalibrated_probs, probs_arr, labels), binary_pos and \
        binary_curves(labels, probs_arr, class_list, positive=binary_pos[0], positive_rule=binary_pos[1], threshold=threshold)
    return EvalResult(
        classes=class_list, y_true=labels, probs=probs_arr, paths=path_list, y_pred=y_pred,
        unknown={str(k): [str(f) for f in v] for k, v in (unknown or {}).items()},
        accuracy=scores["accuracy"], accuracy_ci=ci["accuracy"], accuracy_ci_method=stats.EXACT,
        balanced_accuracy=scores["balanced_accuracy"], balanced_accuracy_ci=ci["balanced"],
        balanced_accuracy_ci_method=ci["balanced_method"], top_k=scores["top_k"],
        precision_macro=scores["macro"][0], recall_macro=scores["macro"][1], f1_macro=scores["macro"][2],
        precision_weighted=scores["weighted"][0], recall_weighted=scores["weighted"][1], f1_weighted=scores["weighted"][2],
        per_class=per_class_rows(class_list, scores, ci, confusion), per_class_ci_method=stats.EXACT,
        confusion=confusion, confusion_normalized=np.divide(confusion, row_sums, out=np.zeros(confusion.shape, dtype=float), where=row_sums > 0),
        ece=ece, reliability=reliability, confused_pairs=confused_pairs(confusion, class_list),
        misclassified=misclassified_rows(labels, y_pred, probs_arr, confidence, class_list, path_list),
        n_bootstrap=n_bootstrap, ci_level=ci_level, seed=seed,  # warnings: integer counts (sklearn's can be floats)
        warnings=sample_warnings(class_list, confusion.sum(axis=1), ci["accuracy"], ci["balanced"], ci_level),
        temperature=None if temperature is None else float(temperature), ece_uncalibrated=ece_before, reliability_uncalibrated=bins_before,
        binary=binary or None)


def _decide(classes: list[str], labels: np.ndarray, probs: np.ndarray, given: str | None,
            threshold: float | None) -> tuple[np.ndarray, tuple[int, str] | None]:
    """The predicted classes (argmax, or the threshold on two classes) and the positive class with its rule
    (None beyond two classes, where a positive class or a threshold is an error)."""
    if len(classes) != 2:
        if threshold is not None or given is not None:
            raise ConfigError(f"a positive class and a threshold need two classes; this result has {len(classes)}")
        return probs.argmax(axis=1), None
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be a probability from 0 to 1, got {threshold!r}")
    positive = positive_class(classes, np.bincount(labels, minlength=2).tolist(), given=given)
    return (probs.argmax(axis=1) if threshold is None else predict_with_threshold(probs, positive[0], threshold)), positive



def _before_scaling(before: np.ndarray | None, probs: np.ndarray, labels: np.ndarray) -> tuple[float | None, list | None]:
    """ECE and reliability bins of the probabilities before temperature scaling (None, None when not given)."""
    if before is None:
        return None, None
    if np.shape(before) != probs.shape:
        raise ConfigError(f"uncalibrated_probs has shape {np.shape(before)}, probs {probs.shape}: give the same "
                          "predictions before temperature scaling")
    return stats.top1_calibration(before, labels, ECE_BINS)


def _scores(labels: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Point estimates, as scikit-learn computes them over the full class list."""
    label_range = np.arange(n_classes)
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
    balanced_accuracy = float(recall[support > 0].mean())
    if n_classes > 2:
        top_k = {
            k: float(top_k_accuracy_score(labels, probs, k=k, labels=label_range))
            for k in TOP_K
            if k == 1 or k < n_classes
        }
    else:
        # top_k_accuracy_score rejects 2-column scores for binary targets; top-1 is accuracy.
        top_k = {1: accuracy}
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1, **averages,
            "balanced_accuracy": balanced_accuracy, "top_k": top_k}


def _intervals(labels: np.ndarray, correct: np.ndarray, confusion: np.ndarray, n_bootstrap: int,
               ci_level: float, seed: int) -> dict[str, Any]:
    """Accuracy's and each class's exact intervals; balanced accuracy's bootstrap (or its fallback)."""
    true_positives = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    out: dict[str, Any] = {
        "accuracy": stats.exact_interval(int(correct.sum()), len(labels), level=ci_level),
        "recall": stats.exact_interval(true_positives, support, level=ci_level),
        "precision": stats.exact_interval(true_positives, predicted, level=ci_level),
        "balanced": None,
        "balanced_method": None,
    }
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples = stats.bootstrap_balanced_accuracy(labels, correct, confusion.shape[0], n_bootstrap, rng)
        out["balanced"], out["balanced_method"] = stats.percentile_interval(samples, level=ci_level), stats.BOOTSTRAP
        if stats.is_degenerate(out["balanced"]):
            present = support > 0
            out["balanced"] = stats.mean_exact_interval_bonferroni(true_positives[present], support[present],
                                                                   level=ci_level)
            out["balanced_method"] = stats.PER_CLASS_EXACT_BONFERRONI
    return out
