"""What the inputs of :func:`tlkit.evaluation.metrics.evaluate_predictions` allow.

Two kinds of check: :func:`check_inputs` refuses arguments that cannot be scored (each error names
the argument and says how to fix the call), and :func:`sample_warnings` says, in words, when a
test set is too small for its numbers to support a conclusion (thresholds: the constants below).

>>> sample_warnings(["a", "b"], np.array([40, 2]), (0.8, 0.95), None, 0.95)
["1 class has fewer than 5 test images ('b' (2)): their recall and precision say almost nothing (see their intervals)"]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tlkit.errors import ConfigError, DataError
from tlkit.evaluation import stats

# Rows of a 1e-3 tolerance: float16/float32 softmax outputs do not sum to exactly 1.
PROB_SUM_TOLERANCE = 1e-3
# When to warn that the test set is too small to conclude much (EvalResult.warnings):
#: fewer test images than this: every number is rough (at 30 images one mistake moves accuracy 3 points)
MIN_TEST_IMAGES = 30
#: a class with fewer test images than this: its recall and precision say almost nothing
#: (4 of 4 right still only bounds its recall above 0.40 at 95%)
MIN_CLASS_SUPPORT = 5
#: an accuracy or balanced-accuracy interval wider than this: the test set cannot tell models
#: apart that differ by less (a 0.2-wide interval is what about 100 images at 50% accuracy give)
MAX_CI_WIDTH = 0.2


def check_inputs(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    paths: Sequence[str] | None,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> tuple[list[str], np.ndarray, np.ndarray, list[str] | None]:
    """Check every argument up front; returns (class names, int64 labels, float64 probs, paths as str)."""
    class_list = _check_options(classes, n_bootstrap, ci_level, seed)
    labels = _check_labels(y_true, len(class_list))
    probs_arr = _check_probs(probs, labels.shape[0], len(class_list))
    path_list = None
    if paths is not None:
        path_list = [str(p) for p in paths]
        if len(path_list) != labels.shape[0]:
            raise ConfigError(
                f"paths: got {len(path_list)} paths for {labels.shape[0]} predictions; "
                "pass one path per row or None."
            )
    return class_list, labels, probs_arr, path_list


def _check_options(classes: Sequence[str], n_bootstrap: int, ci_level: float, seed: int) -> list[str]:
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
    return class_list


def _check_labels(y_true: Any, n_classes: int) -> np.ndarray:
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
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise ConfigError(
            f"y_true: label {int(labels[bad][0])} is outside [0, {n_classes}) for "
            f"{n_classes} classes; files of classes the model never saw belong in `unknown`."
        )
    return labels


def _check_probs(probs: Any, n_rows: int, n_classes: int) -> np.ndarray:
    probs_arr = np.asarray(probs, dtype=np.float64)
    if probs_arr.ndim != 2 or probs_arr.shape != (n_rows, n_classes):
        raise ConfigError(
            f"probs: expected shape (N, C) = ({n_rows}, {n_classes}) to match y_true and "
            f"classes, got {probs_arr.shape}."
        )
    if not np.all(np.isfinite(probs_arr)):
        row = int(np.argwhere(~np.isfinite(probs_arr))[0, 0])
        raise ConfigError(f"probs: row {row} contains NaN or infinity.")
    sums = probs_arr.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_SUM_TOLERANCE
    if off.any() or (probs_arr < -PROB_SUM_TOLERANCE).any():
        row = int(np.argmax(off)) if off.any() else int(np.argwhere(probs_arr < 0)[0, 0])
        raise ConfigError(
            f"probs: row {row} is not a probability distribution (sum {sums[row]:.4f}); "
            "pass softmax(logits), not logits."
        )
    return probs_arr


def sample_warnings(
    classes: list[str],
    support: np.ndarray,
    accuracy_ci: tuple[float, float],
    balanced_ci: tuple[float, float] | None,
    level: float,
) -> list[str]:
    """Why the numbers may not support a conclusion, in words (thresholds: the module constants).

    ``support`` is the number of test images of each class. Class names appear as ``repr`` gives
    them, so an undecodable folder name is escaped and the warning can always be printed or encoded.
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
