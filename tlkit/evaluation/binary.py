"""Two-class results: which class is "positive", ROC and precision-recall curves, a decision threshold.

Numbers only (the curves are drawn by :mod:`tlkit.evaluation.curve_display`). Every curve and area
is scikit-learn's (``roc_curve``, ``precision_recall_curve``, ``roc_auc_score``,
``average_precision_score``) on the positive class's probability.

**Which class is positive** (:func:`positive_class`), the first rule that decides:

1. the class given (``--positive-class NAME``, or the one stored in the model's ``decision``);
2. the one class whose name reads like a finding: ``defect``, ``defective``, ``bad``, ``positive``,
   ``pos``, ``ng``, ``nok``, ``fail``, ``failed``, ``faulty``, ``anomaly``, ``abnormal``, ``reject``
   (case-insensitive, a whole word of the name: ``scratch_defect`` counts, ``badge`` does not);
3. the minority class (fewer images; in training, the training split);
4. the second class in sorted order (scikit-learn's ``pos_label=1``).

**A threshold** (:func:`choose_threshold`): the model says "positive" when p(positive) >= threshold
(:func:`predict_with_threshold`); without one it takes the argmax, as every model did before.

Example:
    >>> import numpy as np
    >>> positive_class(["good", "scratch_defect"])
    (1, 'named like a finding (defect)')
    >>> y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    >>> choose_threshold(y, p, target_recall=1.0)["threshold"]
    0.35
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from tlkit.errors import ConfigError

#: whole words of a class name that make it the positive class (rule 2)
POSITIVE_WORDS = ("defect", "defective", "defects", "bad", "positive", "pos", "ng", "nok", "fail", "failed",
                  "failure", "faulty", "fault", "anomaly", "anomalous", "abnormal", "reject", "rejected")


def positive_class(classes: Sequence[str], counts: Sequence[int] | None = None, *,
                   given: str | None = None) -> tuple[int, str]:
    """The index of the positive class of a two-class task and the rule that chose it (see the module).

    ``counts``: images per class (the training split's in training); ``given``: a class name.
    """
    classes = list(classes)
    if len(classes) != 2:
        raise ConfigError(f"a positive class needs a two-class task; this one has {len(classes)} classes")
    if given is not None:
        if given not in classes:
            raise ConfigError(f"positive class {given!r} is not one of the classes ({', '.join(classes)})")
        return classes.index(given), "given"
    named = [i for i, name in enumerate(classes) if _finding_word(name)]
    if len(named) == 1:
        return named[0], f"named like a finding ({_finding_word(classes[named[0]])})"
    if counts is not None and counts[0] != counts[1]:
        index = int(np.argmin(counts))
        return index, f"the minority class ({int(counts[index])} of {int(sum(counts))} images)"
    return 1, "the second class in sorted order"


def _finding_word(name: str) -> str | None:
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    return next((w for w in words if w in POSITIVE_WORDS), None)


def rates_at(y_true: np.ndarray, positive_scores: np.ndarray, threshold: float, positive: int = 1) -> dict[str, Any]:
    """Recall, precision, false-positive rate and counts when "positive" means score >= ``threshold``
    (``None`` where a denominator is 0); the argmax decision's are :func:`argmax_rates`."""
    is_pos = np.asarray(y_true) == positive
    said_pos = np.asarray(positive_scores) >= threshold
    return _rates(is_pos, said_pos)


def argmax_rates(y_true: np.ndarray, probs: np.ndarray, positive: int) -> dict[str, Any]:
    """The same figures as :func:`rates_at` for the argmax decision (a tie goes to the first class)."""
    return _rates(np.asarray(y_true) == positive, np.asarray(probs).argmax(axis=1) == positive)


def _rates(is_pos: np.ndarray, said_pos: np.ndarray) -> dict[str, Any]:
    tp, fp = int((is_pos & said_pos).sum()), int((~is_pos & said_pos).sum())
    fn, tn = int((is_pos & ~said_pos).sum()), int((~is_pos & ~said_pos).sum())
    return {"recall": tp / (tp + fn) if tp + fn else None, "precision": tp / (tp + fp) if tp + fp else None,
            "false_positive_rate": fp / (fp + tn) if fp + tn else None,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def choose_threshold(y_true: np.ndarray, positive_scores: np.ndarray, *, target_recall: float | None = None,
                     target_precision: float | None = None, positive: int = 1) -> dict[str, Any]:
    """The threshold that reaches a target recall (the highest such: the best precision that keeps it) or a
    target precision (the lowest such: the best recall that keeps it), on these (validation) scores.

    Returns ``threshold``, ``chosen_for`` (in words), ``reached`` (False: no threshold reaches the
    target; the closest one is given), ``val_recall``, ``val_precision`` and ``val_images``.
    """
    if (target_recall is None) == (target_precision is None):
        raise ConfigError("give exactly one of target_recall and target_precision")
    target = float(target_recall if target_recall is not None else target_precision)  # type: ignore[arg-type]
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"a target recall or precision must be in (0, 1], got {target}")
    y, scores = np.asarray(y_true) == positive, np.asarray(positive_scores, dtype=float)
    if not y.any():
        raise ConfigError("the validation split has no image of the positive class: no threshold can be chosen")
    if target_recall is not None:
        # keep the ceil(target * positives) highest-scored positives above the line
        ranked = np.sort(scores[y])[::-1]
        need = max(1, math.ceil(target * len(ranked) - 1e-9))
        threshold, reached, what = float(ranked[need - 1]), True, f"recall >= {target:g} on validation"
    else:
        threshold, reached = _lowest_with_precision(y, scores, target)
        what = f"precision >= {target:g} on validation"
    rates = _rates(y, scores >= threshold)
    return {"threshold": threshold, "chosen_for": what, "reached": reached, "val_recall": rates["recall"],
            "val_precision": rates["precision"], "val_images": int(len(y)), "val_positives": int(y.sum())}


def _lowest_with_precision(y: np.ndarray, scores: np.ndarray, target: float) -> tuple[float, bool]:
    precision, _, thresholds = precision_recall_curve(y, scores)
    ok = np.flatnonzero(precision[:-1] >= target - 1e-12)
    if len(ok):
        return float(thresholds[ok[0]]), True
    return float(thresholds[int(np.argmax(precision[:-1]))]), False


def decision_for(model: Any, threshold: float | None, positive: str | None = None) -> dict:
    """A model's decision with ``threshold`` and/or the ``positive`` class replaced (``tlkit predict --threshold``):
    the positive class is the one given, else the model's own, else :func:`positive_class`'s rule by name."""
    own = dict(getattr(model, "decision", None) or {})
    if positive is None and "positive" not in own:
        index, rule = positive_class(model.classes)
        own.update(positive=model.classes[index], positive_rule=rule)
    elif positive is not None:
        positive_class(model.classes, given=positive)  # a name that is not a class is refused here
        own.update(positive=positive, positive_rule="given")
    if threshold is not None:
        own.update(threshold=float(threshold), chosen_for="given")
    return own


def predict_with_threshold(probs: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """Class indices of a two-class model: ``positive`` where p(positive) >= ``threshold``, else the other."""
    probs = np.asarray(probs)
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


@dataclass(repr=False, eq=False)
class BinaryCurves:
    """ROC and precision-recall curves of a two-class result, their areas, and the operating points.

    ``threshold`` is the decision threshold the predictions used (``None``: argmax);
    ``at_threshold`` and ``at_argmax`` hold :func:`rates_at`'s figures there (test set).
    """

    positive: str
    positive_index: int
    positive_rule: str
    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    roc_auc: float | None
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    average_precision: float | None
    prevalence: float
    threshold: float | None
    at_threshold: dict[str, Any] | None
    at_argmax: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the areas and operating points (the curves' points are left to predictions.csv)."""
        return {"positive": self.positive, "positive_rule": self.positive_rule, "roc_auc": self.roc_auc,
                "average_precision": self.average_precision, "prevalence": self.prevalence,
                "threshold": self.threshold, "at_threshold": self.at_threshold, "at_argmax": self.at_argmax}


def binary_curves(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, positive: int,
                  positive_rule: str = "", threshold: float | None = None) -> BinaryCurves:
    """The curves of a two-class result on the probability of class ``positive`` (an index into ``classes``).

    With one class only in ``y_true`` the areas are ``None`` (undefined) and the curves empty.
    """
    y = (np.asarray(y_true) == positive).astype(int)
    scores = np.asarray(probs, dtype=float)[:, positive]
    both = 0 < y.sum() < len(y)
    empty = np.empty(0)
    fpr, tpr, roc_t = roc_curve(y, scores) if both else (empty, empty, empty)
    precision, recall, pr_t = precision_recall_curve(y, scores) if both else (empty, empty, empty)
    return BinaryCurves(
        positive=str(classes[positive]), positive_index=positive, positive_rule=positive_rule,
        fpr=fpr, tpr=tpr, roc_thresholds=roc_t, roc_auc=float(roc_auc_score(y, scores)) if both else None,
        precision=precision, recall=recall, pr_thresholds=pr_t,
        average_precision=float(average_precision_score(y, scores)) if both else None,
        prevalence=float(y.mean()) if len(y) else 0.0, threshold=threshold,
        at_threshold=None if threshold is None else rates_at(y, scores, threshold, positive=1),
        at_argmax=argmax_rates(np.asarray(y_true), probs, positive))
