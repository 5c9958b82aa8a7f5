"""The sweep's figure: out-of-fold accuracy (with its 95% interval) against per-image latency.

scikit-learn's Display pattern: :class:`SweepDisplay` holds the numbers of a
:class:`~tlkit.selection.result.SweepResult`; ``plot(ax=None)`` draws onto the given axes or a new
pyplot figure, keeps ``ax_`` and ``figure_`` and returns itself. Saving is
:mod:`tlkit.selection.files`' job. matplotlib is imported only when drawing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlkit._io import readable_text
from tlkit.selection.result import SweepResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class SweepDisplay:
    """Accuracy against latency, one point per backbone; the recommended one drawn in a second colour."""

    figsize = (7.5, 4.8)
    ax_: Axes
    figure_: Figure

    def __init__(self, result: SweepResult) -> None:
        self.names = [r.backbone for r in result.results]
        self.accuracy = [r.accuracy for r in result.results]
        self.ci = [r.ci for r in result.results]
        self.latency_ms = [r.latency_ms for r in result.results]
        self.recommended = result.recommendation.backbone
        self.folds = result.folds
        self.images = sum(result.counts.values())

    def plot(self, ax: Axes | None = None) -> SweepDisplay:
        """Draw onto ``ax`` (default: a new figure); keeps ``ax_`` and ``figure_``."""
        if ax is None:
            from tlkit.evaluation.display import pyplot_figure

            ax = pyplot_figure(self.figsize).add_subplot()
        self.ax_, self.figure_ = ax, ax.figure
        for i, (name, acc, (low, high), latency) in enumerate(zip(self.names, self.accuracy, self.ci, self.latency_ms)):
            chosen = name == self.recommended
            ax.errorbar([latency], [acc], yerr=[[acc - low], [high - acc]], fmt="o", capsize=4,
                        color="tab:orange" if chosen else "tab:blue", ms=7 if chosen else 5)
            label = readable_text(name).replace("$", r"\$") + (" (recommended)" if chosen else "")
            ax.annotate(label, (latency, acc), textcoords="offset points", xytext=(6, 5 - 11 * (i % 3)),
                        fontsize=8)  # staggered: points of equal accuracy and close latency keep readable labels
        if len(self.latency_ms) > 1 and max(self.latency_ms) > 4 * min(self.latency_ms):
            ax.set_xscale("log")
        ax.set_xlabel("predict latency per image, batch 1 (ms)")
        ax.set_ylabel("out-of-fold accuracy (95% Wilson interval)")
        ax.set_title(f"backbone sweep: linear probes, {self.folds} folds, {self.images} train+val images")
        ax.grid(True, alpha=0.3)
        return self
