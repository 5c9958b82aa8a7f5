"""The LR range test's figure: loss against learning rate (log scale), the suggestion and the recipe's rate marked.

scikit-learn's Display pattern: :class:`LRFindDisplay` holds the numbers; ``plot(ax=None)`` draws onto
the given axes or a new pyplot figure, keeps ``ax_`` and ``figure_`` and returns itself.
:func:`write_lr_plot` saves it as a PNG (a plain Agg figure, no pyplot state). matplotlib is imported
only when drawing.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from tlkit._io import atomic_write_bytes
from tlkit.evaluation.display import AxesDisplay
from tlkit.lrfind.rules import short

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class LRFindDisplay(AxesDisplay):
    """The raw mini-batch losses (faint), the smoothed curve, a dot and a line at the suggestion and a
    dashed line at the recipe's rate."""

    figsize = (7.0, 4.5)

    def __init__(self, lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float], *, suggested: float,
                 recipe_lr: float, rule: str = "valley", title: str = "LR range test") -> None:
        self.lrs, self.losses, self.smoothed = list(lrs), list(losses), list(smoothed)
        self.suggested, self.recipe_lr, self.rule, self.title = suggested, recipe_lr, rule, title

    @classmethod
    def from_result(cls, result: Any) -> LRFindDisplay:
        """From an :class:`~tlkit.lrfind.result.LRFindResult`."""
        return cls(result.lrs, result.losses, result.smoothed, suggested=result.suggested, recipe_lr=result.recipe_lr,
                   rule=result.rule, title=f"LR range test: {result.stage_kind} stage of {result.recipe}, "
                                           f"{result.backbone}, {result.images} images")

    def _draw(self, ax: Axes) -> None:
        ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.25, lw=1, label="mini-batch loss")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", lw=2, label="smoothed loss")
        at = min(range(len(self.lrs)), key=lambda i: abs(self.lrs[i] - self.suggested)) if self.lrs else None
        ax.axvline(self.suggested, color="tab:orange", lw=1.5, label=f"suggested {short(self.suggested)} ({self.rule})")
        if at is not None:
            ax.plot([self.lrs[at]], [self.smoothed[at]], "o", color="tab:orange", ms=7)
        ax.axvline(self.recipe_lr, color="tab:red", ls="--", lw=1.5, label=f"recipe's rate {short(self.recipe_lr)}")
        ax.set_xscale("log")
        if self.smoothed:  # the fall sets the scale; the blow-up runs off the top (it would squash the fall)
            lowest = min(range(len(self.smoothed)), key=self.smoothed.__getitem__)
            low, high = self.smoothed[lowest], max(self.smoothed[:lowest + 1])
            pad = (high - low) or 0.1 * abs(high) or 0.1
            ax.set_ylim(low - 0.1 * pad, high + 0.3 * pad)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(self.title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def lr_plot_png(result: Any) -> bytes:
    """The :class:`LRFindDisplay` of ``result`` as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=LRFindDisplay.figsize, dpi=110)
    FigureCanvasAgg(figure)
    LRFindDisplay.from_result(result).plot(figure.add_subplot(1, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def write_lr_plot(result: Any, path: str | os.PathLike) -> Path:
    """Write the figure of ``result`` to ``path`` (a PNG, written atomically; its folder is created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, lr_plot_png(result))
    return target
