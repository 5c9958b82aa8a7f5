"""The coverage-accuracy curve of an out-of-distribution score, drawn from a :class:`~tlkit.evaluation.coverage.CoverageResult`.

Holds numbers only until :meth:`CoverageDisplay.plot` draws them onto a given or new axes (as
scikit-learn's displays do); matplotlib is imported by the caller's figure, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlkit.evaluation.display import pyplot_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["CoverageDisplay"]


class CoverageDisplay:
    """Accuracy of the accepted images against the share accepted, with the model's threshold marked.

    >>> # CoverageDisplay.from_result(result).plot()  # result: an EvalResult with result.ood
    """

    figsize = (6.4, 4.0)

    def __init__(self, curve: list[dict[str, float]], *, rejected_share: float, accuracy_accepted: float | None,
                 method: str = "") -> None:
        self.curve = [dict(p) for p in curve]
        self.rejected_share = float(rejected_share)
        self.accuracy_accepted = accuracy_accepted
        self.method = method

    @classmethod
    def from_result(cls, result: Any) -> CoverageDisplay:
        """The curve of ``result.ood`` (an EvalResult's :class:`~tlkit.evaluation.coverage.CoverageResult`)."""
        c = result.ood
        return cls(c.curve, rejected_share=c.rejected_share, accuracy_accepted=c.accuracy_accepted, method=c.method)

    def plot(self, ax: Axes | None = None) -> CoverageDisplay:
        """Draw onto ``ax`` (default: a new pyplot figure); keeps ``ax_`` and ``figure_``."""
        if ax is None:
            ax = pyplot_figure(self.figsize).add_subplot()
        self.ax_, self.figure_ = ax, ax.figure
        ax.plot([p["coverage"] for p in self.curve], [p["accuracy"] for p in self.curve], color="#4878b0",
                linewidth=1.6, label="accuracy of the accepted images")
        coverage = 1.0 - self.rejected_share
        if self.accuracy_accepted is not None:
            ax.plot([coverage], [self.accuracy_accepted], "o", color="#c0392b",
                    label=f"model's threshold: {coverage:.1%} accepted, accuracy {self.accuracy_accepted:.3f}")
        ax.set_xlim(1.0, 0.0)  # from accepting all (left) to accepting few
        ax.set_xlabel("Coverage (share of images accepted; the rest are answered unknown)")
        ax.set_ylabel("Accuracy")
        ax.set_title(f"Coverage-accuracy ({self.method} OOD score)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        return self
