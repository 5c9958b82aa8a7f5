"""Paired comparison of two runs evaluated on the same images.

Two runs' accuracies each carry a confidence interval of several points on a few hundred test
images, so their intervals overlap even when one model is reliably better. Scoring both on the
*same* images allows a paired test, which is far sharper: only the images where the two models
disagree carry information. :func:`compare` reports the accuracy difference with a paired
interval and McNemar's exact test on the discordant images, and calls a difference clear only when
both agree. The interval is a paired bootstrap when there are enough disagreements for it, and
Newcombe's paired score interval otherwise (see :func:`compare`), so it is never ``[0, 0]``.
``Comparison.warnings`` says when there are too few disagreements to tell the runs apart.

>>> # c = tlkit.compare("runs/probe", "runs/default")
>>> # c.difference, c.difference_ci, c.p_value, c.verdict
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tlkit.errors import ConfigError, DataError
from tlkit.evaluation import stats

PREDICTIONS = "predictions.csv"

#: Fewer images where the two runs disagree than this: too few disagreements to tell the runs
#: apart (and the bootstrap of so few is too optimistic: Newcombe's interval is used instead).
#: With 9 disagreements only a split of 8 to 1 or more lopsided gets McNemar p below 0.05.
MIN_DISCORDANT = 10
#: Fewer paired images than this: every number is rough (same threshold as tlkit.evaluation.scoring).
MIN_PAIRED_IMAGES = 30
#: An interval of B - A wider than this: the test set cannot resolve smaller differences.
MAX_DIFFERENCE_CI_WIDTH = 0.2


@dataclass(frozen=True)
class Comparison:
    """Model B against model A on the same ``n`` images; ``difference`` is B's accuracy minus A's.

    ``difference_ci`` is a ``(low, high)`` tuple at ``ci_level``, made by the method that
    ``difference_ci_method`` names (``percentile-bootstrap`` or ``newcombe-paired-score``, see
    :mod:`tlkit.evaluation.stats`). ``warnings`` lists, in words, why the comparison may not support a
    conclusion; it is empty when none applies.
    """

    a: str
    b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    difference_ci: tuple[float, float]
    difference_ci_method: str
    only_a_right: int
    only_b_right: int
    p_value: float
    ci_level: float
    n_bootstrap: int
    warnings: tuple[str, ...] = ()

    @property
    def interval_excludes_zero(self) -> bool:
        lo, hi = self.difference_ci
        return lo > 0.0 or hi < 0.0

    @property
    def significant(self) -> bool:
        """True when both tests agree: the interval of the difference leaves out zero and McNemar's
        p-value is below 1 - ci_level."""
        return self.interval_excludes_zero and self.p_value < 1.0 - self.ci_level

    @property
    def verdict(self) -> str:
        level = f"{self.ci_level:.0%}"
        better = "B" if self.difference > 0 else "A"
        if self.significant:
            return f"{better} is better: the {level} interval of B - A leaves out 0 and McNemar p = {self.p_value:.2g}"
        if self.interval_excludes_zero or self.p_value < 1.0 - self.ci_level:
            return (f"borderline: {better} looks better, but only one test says so (the {level} interval of B - A "
                    f"{'leaves out' if self.interval_excludes_zero else 'includes'} 0, McNemar p = {self.p_value:.2g})")
        return (f"no clear difference: the {level} interval of B - A includes 0 "
                f"({self.only_b_right} images only B gets right, {self.only_a_right} only A)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["difference_ci"] = list(self.difference_ci)
        d["warnings"] = list(self.warnings)
        d["significant"] = self.significant
        d["verdict"] = self.verdict
        return d


def predictions_file(path: str | os.PathLike) -> Path:
    """``predictions.csv`` of a run directory, an evaluation folder, or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / PREDICTIONS
    if not p.is_file():
        raise DataError(f"{path}: no {PREDICTIONS} there. Give a run directory of `tlkit finetune` or a "
                        f"folder written by `tlkit evaluate` (or the {PREDICTIONS} file itself)")
    return p


def _read(path: Path) -> dict[str, tuple[str, bool]]:
    """path of each image -> (true label, whether the prediction was right).

    Read as tlkit.report.files writes it: UTF-8, with the undecodable bytes of a file name kept as
    they are (surrogateescape), so such a path is the same string in both runs' files.
    """
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "true", "pred"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: not a tlkit {PREDICTIONS} (no column {', '.join(sorted(missing))})")
        rows = {}
        for row in reader:
            rows[row["path"]] = (row["true"], row["true"] == row["pred"])
    if not rows:
        raise DataError(f"{path}: no scored predictions in it")
    return rows


def compare(a: str | os.PathLike, b: str | os.PathLike, *, n_bootstrap: int = 10_000, ci_level: float = 0.95,
            seed: int = 0) -> Comparison:
    """Compare run (or evaluation) ``b`` against ``a`` on the images both were scored on.

    Both must have been scored on the same images (matched by path) with the same labels, as two
    runs on the same split folders or the same ``--seed`` and fractions are.

    The interval of B - A: a percentile bootstrap over ``n_bootstrap`` paired resamples of the
    images when the runs disagree on at least :data:`MIN_DISCORDANT` images; otherwise (and when
    ``n_bootstrap`` is 0, or the bootstrap comes out of zero width) Newcombe's hybrid score
    interval for paired proportions (Newcombe 1998, method 10; :func:`tlkit.evaluation.stats.paired_difference_interval`),
    which stays of positive width even with no disagreement at all, where the bootstrap gives
    [0, 0]. McNemar's exact test (a two-sided binomial test on the discordant images) gives
    ``p_value``; 1 when there are none.

    >>> # c = compare("runs/probe", "runs/default"); c.difference_ci, c.difference_ci_method, c.warnings
    """
    from scipy.stats import binomtest

    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ConfigError(f"n_bootstrap: expected an integer >= 0 (0: Newcombe's interval only), got {n_bootstrap!r}.")
    ci_level = stats.check_level(ci_level, "ci_level")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed: expected an integer, got {seed!r}.")

    file_a, file_b = predictions_file(a), predictions_file(b)
    rows_a, rows_b = _read(file_a), _read(file_b)
    if rows_a.keys() != rows_b.keys():
        only_a, only_b = len(rows_a.keys() - rows_b.keys()), len(rows_b.keys() - rows_a.keys())
        raise DataError(f"{file_a} and {file_b} score different images ({only_a} only in the first, {only_b} only "
                        f"in the second). Compare runs made on the same split, or evaluate both models on the same "
                        f"data with `tlkit evaluate RUN DATA`")
    paths = sorted(rows_a)
    clash = [p for p in paths if rows_a[p][0] != rows_b[p][0]]
    if clash:
        raise DataError(f"{len(clash)} images have different true labels in the two files, e.g. {clash[0]}: "
                        f"the runs were not scored on the same data")
    right_a = np.array([rows_a[p][1] for p in paths], dtype=np.float64)
    right_b = np.array([rows_b[p][1] for p in paths], dtype=np.float64)
    n = len(paths)
    delta = right_b - right_a
    only_a = int(((right_a == 1) & (right_b == 0)).sum())
    only_b = int(((right_a == 0) & (right_b == 1)).sum())
    both = int(((right_a == 1) & (right_b == 1)).sum())
    discordant = only_a + only_b
    interval, method = None, stats.BOOTSTRAP
    if n_bootstrap > 0 and discordant >= MIN_DISCORDANT:
        boots = stats.bootstrap_means(delta, n_bootstrap, np.random.default_rng(seed))
        interval = stats.percentile_interval(boots, level=ci_level)
    if interval is None or stats.is_degenerate(interval):
        interval = stats.paired_difference_interval(both, only_b, only_a, n - both - discordant, level=ci_level)
        method = stats.NEWCOMBE_PAIRED
    p_value = float(binomtest(only_b, discordant, 0.5).pvalue) if discordant else 1.0
    return Comparison(a=str(a), b=str(b), n=n, accuracy_a=float(right_a.mean()), accuracy_b=float(right_b.mean()),
                      difference=float(delta.mean()), difference_ci=interval, difference_ci_method=method,
                      only_a_right=only_a, only_b_right=only_b, p_value=p_value, ci_level=ci_level,
                      n_bootstrap=n_bootstrap, warnings=_warnings(n, discordant, interval, ci_level))


def _warnings(n: int, discordant: int, interval: tuple[float, float], level: float) -> tuple[str, ...]:
    """Why the comparison may not support a conclusion (thresholds: the module constants)."""
    out = []
    if discordant < MIN_DISCORDANT:
        out.append(f"only {discordant} image{'' if discordant == 1 else 's'} where the runs disagree (fewer than "
                   f"{MIN_DISCORDANT}): too few disagreements to tell the runs apart")
    if n < MIN_PAIRED_IMAGES:
        out.append(f"only {n} images scored by both (fewer than {MIN_PAIRED_IMAGES}): every number here is rough")
    width = interval[1] - interval[0]
    if width > MAX_DIFFERENCE_CI_WIDTH:
        out.append(f"the {level:.0%} interval of B - A is {width:.2f} wide (more than {MAX_DIFFERENCE_CI_WIDTH}): "
                   "differences smaller than that cannot be told from noise on these images")
    return tuple(out)


