"""What answering "unknown" costs and buys on a labelled set: :class:`CoverageResult` (numbers only).

An image whose out-of-distribution score is above the threshold is rejected (answered unknown).
On real test images every rejection is a lost answer, so the figures are how many would be
rejected, the accuracy on the accepted ones, and the coverage-accuracy curve: accuracy of the
accepted images as the threshold moves from accepting all to accepting few. Drawn by
:class:`tlkit.evaluation.coverage_display.CoverageDisplay`.

Example:
    >>> import numpy as np
    >>> c = coverage_of(np.array([0.1, 0.2, 0.9, 0.3]), np.array([True, True, False, True]), 0.5)
    >>> c.rejected, c.accuracy_accepted
    (1, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkit.errors import ConfigError

__all__ = ["CoverageResult", "coverage_of", "describe", "TABLE_COVERAGES", "NO_SCORE"]

#: the coverages the short table shows
TABLE_COVERAGES = (1.0, 0.98, 0.95, 0.9, 0.8, 0.5)
#: points kept of the curve (metrics.json stays small)
CURVE_POINTS = 101


@dataclass
class CoverageResult:
    """Rejections at ``threshold`` and the coverage-accuracy curve of one evaluation."""

    method: str
    threshold: float
    reject_rate: float | None  # the share of validation images the threshold was chosen to reject
    n: int
    rejected: int
    accuracy_all: float
    accuracy_accepted: float | None  # None when every image is rejected
    curve: list[dict[str, float]] = field(default_factory=list)  # {"coverage", "accuracy", "threshold"}, coverage falling

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.n if self.n else 0.0

    def table(self) -> list[dict[str, float]]:
        """Accuracy of the accepted images at the coverages of :data:`TABLE_COVERAGES` (nearest curve point)."""
        if not self.curve:
            return []
        cover = np.array([p["coverage"] for p in self.curve])
        picked = dict.fromkeys(int(np.abs(cover - c).argmin()) for c in TABLE_COVERAGES)  # once each, in order
        return [dict(self.curve[i]) for i in picked]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold, "reject_rate": self.reject_rate, "n": self.n,
                "rejected": self.rejected, "rejected_share": self.rejected_share, "accuracy_all": self.accuracy_all,
                "accuracy_accepted": self.accuracy_accepted, "table": self.table(), "curve": list(self.curve)}


def coverage_of(scores: np.ndarray, correct: np.ndarray, threshold: float, *, method: str = "",
                reject_rate: float | None = None) -> CoverageResult:
    """Rejections above ``threshold`` and the coverage-accuracy curve of ``scores`` (higher = more unusual)
    for predictions that were ``correct`` or not."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.shape != correct.shape or scores.ndim != 1:
        raise ConfigError(f"scores {scores.shape} and correct {correct.shape} must be 1-d arrays of one length")
    if not np.isfinite(scores).all():
        raise ConfigError("out-of-distribution scores must be finite (a model without OOD statistics has none)")
    n = len(scores)
    accepted = scores <= threshold
    order = np.argsort(scores, kind="stable")  # the lowest scores are accepted first
    hits = np.cumsum(correct[order])
    kept = np.unique(np.linspace(1, n, min(n, CURVE_POINTS)).round().astype(int)) if n else np.array([], int)
    curve = [{"coverage": float(m / n), "accuracy": float(hits[m - 1] / m), "threshold": float(scores[order[m - 1]])}
             for m in kept[::-1]]
    return CoverageResult(method, float(threshold), reject_rate, n, int((~accepted).sum()),
                          float(correct.mean()) if n else 0.0,
                          float(correct[accepted].mean()) if accepted.any() else None, curve)


#: what is said where an evaluation has no OOD score
NO_SCORE = ("no out-of-distribution score: the model has no OOD statistics (saved before tlkit kept them), so no "
            "image is answered unknown")


def describe(coverage: CoverageResult | None, what: str = "images") -> str:
    """One sentence: how many ``what`` would be answered unknown, and the accuracy on the rest."""
    if coverage is None:
        return NO_SCORE
    rate = "" if coverage.reject_rate is None else f", chosen to reject {coverage.reject_rate:.0%} of validation images"
    accepted = "none accepted" if coverage.accuracy_accepted is None else \
        f"{coverage.accuracy_accepted:.3f} on the {coverage.n - coverage.rejected} accepted"
    return (f"out-of-distribution score ({coverage.method}, unknown above {coverage.threshold:.4g}{rate}): "
            f"{coverage.rejected} of {coverage.n} {what} ({coverage.rejected_share:.1%}) would be answered unknown; "
            f"accuracy {coverage.accuracy_all:.3f} on all, {accepted}")
