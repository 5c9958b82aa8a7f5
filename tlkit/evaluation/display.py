"""Figures drawn from an evaluation's numbers: confusion matrix, reliability diagram, per-class scores, mistakes.

Each display follows scikit-learn's Display pattern: the object holds the numbers (build it from
them, or from an :class:`~tlkit.evaluation.metrics.EvalResult` with ``from_result``);
``.plot(ax=None)`` draws onto the given axes or onto a new pyplot figure of the display's
``figsize``, keeps ``ax_`` and ``figure_``, and returns the display. Nothing here saves a figure
(that is :mod:`tlkit.report.files`).

matplotlib is imported inside the functions that draw, so importing this module stays light.
Class names and paths are drawn literally: ``$`` is never mathtext, and undecodable file names
show as ``caf\\xe9.png`` (:func:`~tlkit._io.readable_text`).

Example:
    >>> import numpy as np
    >>> display = ConfusionMatrixDisplay(np.array([[3, 1], [0, 4]]), ["cat", "dog"])
    >>> display.figsize
    (6.2, 5.0)
    >>> # display.plot().figure_.savefig("confusion.png")
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from tlkit._io import readable_text
from tlkit.evaluation.neighbours import caption, neighbour_items, with_neighbours
from tlkit.evaluation.summary import shorten

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Cells are annotated with their value only up to this many classes; beyond it text is unreadable.
ANNOTATE_MAX_CLASSES = 20
#: An ``explain(path)`` callable returns (image as the model saw it, Grad-CAM overlay), both
#: (H, W, 3) uint8; :func:`tlkit.models.explain.explainer` makes one from a model.
Explainer = Callable[[str], "tuple[np.ndarray, np.ndarray]"]

_D = TypeVar("_D", bound="AxesDisplay")


# --------------------------------------------------------------------------------------------
# matplotlib plumbing


def _select_backend() -> None:
    """Use Agg on a headless Linux box unless a backend was already chosen (e.g. by Jupyter)."""
    import matplotlib

    headless = (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )
    # MPLBACKEND is how Jupyter selects its inline backend; never override a chosen backend.
    if headless and not os.environ.get("MPLBACKEND") and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


def pyplot_figure(figsize: tuple[float, float]) -> Figure:
    """A new pyplot-managed Figure (so notebooks display it), on Agg when the machine has no display."""
    _select_backend()
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize)


def plain(text: str) -> str:
    # matplotlib treats paired "$" as mathtext; class names and paths must print literally.
    return readable_text(text).replace("$", r"\$")


class AxesDisplay:
    """``plot(ax=None)``: draw onto ``ax`` or onto a new pyplot figure of ``figsize``."""

    figsize: tuple[float, float]
    ax_: Axes
    figure_: Figure

    def plot(self: _D, ax: Axes | None = None) -> _D:
        """Draw onto ``ax`` (default: a new figure of ``self.figsize``); keeps ``ax_`` and ``figure_``."""
        if ax is None:
            ax = pyplot_figure(self.figsize).add_subplot()
        self.ax_, self.figure_ = ax, ax.figure
        self._draw(ax)
        return self

    def _draw(self, ax: Axes) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# one axes each


class ConfusionMatrixDisplay(AxesDisplay):
    """The confusion matrix over the full class list; rows are true classes.

    ``confusion``: counts, or (``normalized=True``) rows divided by their support, so the diagonal
    is per-class recall. ``n``: the number of predictions named in the title (default: the sum of
    the counts; left out of a normalised matrix's title when not given). Cells carry their value
    up to :data:`ANNOTATE_MAX_CLASSES` classes; the figure grows with the number of classes.
    """

    def __init__(self, confusion: np.ndarray, classes: Sequence[str], *, normalized: bool = False,
                 n: int | None = None) -> None:
        self.confusion = np.asarray(confusion)
        self.classes = list(classes)
        self.normalized = normalized
        self.n = n if n is not None or normalized else int(self.confusion.sum())

    @classmethod
    def from_result(cls, result: Any, *, normalize: bool = False) -> ConfusionMatrixDisplay:
        """The counts (or, ``normalize=True``, the row-normalised matrix) of an ``EvalResult``."""
        values = result.confusion_normalized if normalize else result.confusion
        return cls(values, result.classes, normalized=normalize, n=result.n)

    @property
    def figsize(self) -> tuple[float, float]:
        # Cells shrink from ~0.55 in to 0.2 in as classes grow, so 50 classes still fit a page width
        # with tick labels that stay legible once the HTML scales the image down.
        n_classes = len(self.classes)
        side = max(5.0, 3.0 + n_classes * max(0.2, 0.55 - 0.007 * n_classes))
        return (side + 1.2, side)

    def _draw(self, ax: Axes) -> None:
        n_classes, values, normalize = len(self.classes), self.confusion, self.normalized
        vmax = 1.0 if normalize else max(1, int(values.max()))
        self.im_ = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.figure.colorbar(self.im_, ax=ax, fraction=0.046, pad=0.04)

        if n_classes <= ANNOTATE_MAX_CLASSES:
            fontsize = max(6.0, 12.0 - 0.3 * n_classes)
            for (row, col), value in np.ndenumerate(values):
                if normalize:
                    text = f"{value:.2f}" if value > 0 else "0"
                else:
                    text = str(int(value))
                # White text on dark cells keeps every value legible.
                color = "white" if value > 0.6 * vmax else "black"
                ax.text(col, row, text, ha="center", va="center", fontsize=fontsize, color=color)

        labels = [plain(shorten(c)) for c in self.classes]
        tick_size = 10 if n_classes <= 12 else 8 if n_classes <= 30 else 7 if n_classes <= 60 else 5
        ax.set_xticks(range(n_classes), labels, rotation=45 if n_classes <= 12 else 90,
                      ha="right" if n_classes <= 12 else "center", rotation_mode="anchor"
                      if n_classes <= 12 else "default", fontsize=tick_size)
        ax.set_yticks(range(n_classes), labels, fontsize=tick_size)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        kind = "row-normalised (recall per true class)" if normalize else "counts"
        ax.set_title(f"Confusion matrix, {kind}" + ("" if self.n is None else f", n={self.n}"))


class ReliabilityDisplay(AxesDisplay):
    """Accuracy per confidence bin against the diagonal, with the ECE in the title; bar labels are bin counts.

    ``bins``: dicts with ``lower``, ``upper``, ``count``, ``confidence`` and ``accuracy`` (the last
    two ``None`` for an empty bin), as ``EvalResult.reliability`` holds them. ``before`` and
    ``ece_before``: the same for the probabilities before temperature scaling (``temperature``),
    drawn as a line of points (mean confidence, accuracy) per bin, so both ECEs show on one figure.
    """

    figsize = (6.0, 5.5)

    def __init__(self, bins: Sequence[dict[str, Any]], ece: float, *, before: Sequence[dict[str, Any]] | None = None,
                 ece_before: float | None = None, temperature: float | None = None) -> None:
        self.bins = [dict(b) for b in bins]
        self.ece = float(ece)
        self.before = None if before is None else [dict(b) for b in before]
        self.ece_before = None if ece_before is None else float(ece_before)
        self.temperature = temperature

    @classmethod
    def from_result(cls, result: Any) -> ReliabilityDisplay:
        """The reliability bins and ECE of an ``EvalResult``, and those before temperature scaling when it has them."""
        return cls(result.reliability, result.ece, before=getattr(result, "reliability_uncalibrated", None),
                   ece_before=getattr(result, "ece_uncalibrated", None), temperature=getattr(result, "temperature", None))

    def _draw(self, ax: Axes) -> None:
        bins = self.bins
        width = bins[0]["upper"] - bins[0]["lower"]
        filled = [b for b in bins if b["count"]]
        centers = [(b["lower"] + b["upper"]) / 2 for b in filled]
        accuracy = [b["accuracy"] for b in filled]
        confidence = [b["confidence"] for b in filled]
        ax.bar(centers, accuracy, width=width * 0.92, color="#4878b0", edgecolor="#2b4c73",
               label="accuracy in bin")
        # The hatched gap between mean confidence and accuracy is what the ECE sums up.
        ax.bar(centers, np.subtract(confidence, accuracy), bottom=accuracy, width=width * 0.92,
               fill=False, hatch="///", edgecolor="#c0392b", linewidth=0.8,
               label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        if self.before is not None and self.ece_before is not None:
            shown = [b for b in self.before if b["count"]]
            ax.plot([b["confidence"] for b in shown], [b["accuracy"] for b in shown], marker="o", markersize=4,
                    color="#e67e22", linewidth=1.2, label=f"before temperature scaling (ECE {self.ece_before:.3f})")
        # Counts sit inside the foot of each bar, where neither the gap nor the diagonal can cover them.
        for center, b in zip(centers, filled):
            ax.text(center, 0.015, str(b["count"]), rotation=90, ha="center", va="bottom",
                    fontsize=7, color="white" if b["accuracy"] > 0.12 else "black")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("Top-1 confidence")
        ax.set_ylabel("Accuracy")
        scaled = "" if self.temperature is None or self.ece_before is None else \
            f", T = {self.temperature:.2f}; before: {self.ece_before:.3f}"
        ax.set_title(f"Reliability: ECE = {self.ece:.3f}{scaled} ({len(bins)} bins; numbers = counts)")
        ax.legend(loc="upper left", fontsize=8)


class PerClassDisplay(AxesDisplay):
    """Per-class recall (with its interval) and F1 as horizontal bars, labelled with each class's support.

    ``rows``: ``EvalResult.per_class`` rows (``class``, ``recall``, ``recall_ci_low``,
    ``recall_ci_high``, ``f1``, ``support``); a dotted line marks ``balanced_accuracy``.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], *, balanced_accuracy: float, ci_level: float = 0.95) -> None:
        self.rows = [dict(r) for r in rows]
        self.balanced_accuracy = float(balanced_accuracy)
        self.ci_level = float(ci_level)

    @classmethod
    def from_result(cls, result: Any) -> PerClassDisplay:
        """The per-class rows, balanced accuracy and interval level of an ``EvalResult``."""
        return cls(result.per_class, balanced_accuracy=result.balanced_accuracy, ci_level=result.ci_level)

    @property
    def figsize(self) -> tuple[float, float]:
        return (8.0, max(3.0, 0.32 * len(self.rows) + 1.5))

    def _draw(self, ax: Axes) -> None:
        n_classes = len(self.rows)
        positions = np.arange(n_classes)
        recall = [row["recall"] for row in self.rows]
        f1 = [row["f1"] for row in self.rows]
        # a class without test images has no interval: no whisker
        recall_err = np.array([
            [0.0, 0.0] if row["recall_ci_low"] is None
            else [row["recall"] - row["recall_ci_low"], row["recall_ci_high"] - row["recall"]]
            for row in self.rows
        ]).T.clip(min=0.0)
        ax.barh(positions - 0.2, recall, height=0.4, color="#4878b0",
                label=f"recall ({self.ci_level:.0%} CI)", xerr=recall_err,
                error_kw={"ecolor": "#1f3550", "elinewidth": 0.8, "capsize": 2})
        ax.barh(positions + 0.2, f1, height=0.4, color="#e08a3c", label="F1")
        labels = [plain(f"{shorten(row['class'])} (n={row['support']})") for row in self.rows]
        ax.set_yticks(positions, labels, fontsize=9 if n_classes <= 30 else 7)
        ax.set_ylim(n_classes - 0.5, -0.5)  # first class at the top, as in the tables
        ax.set_xlim(0, 1.02)  # room for the caps of whiskers that end at 1
        ax.axvline(self.balanced_accuracy, color="gray", linestyle=":", linewidth=1,
                   label=f"balanced accuracy {self.balanced_accuracy:.3f}")
        ax.set_xlabel("Score")
        ax.set_title("Per-class recall and F1 (support in brackets)", pad=22)
        # Above the axes, so the legend never hides the bars of the last classes.
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
        ax.grid(axis="x", alpha=0.3)


# --------------------------------------------------------------------------------------------
# the gallery of mistakes: a whole figure


def explain_items(items: list[dict[str, Any]], explain: Explainer | None) -> dict[int, Any]:
    """Compute the gallery's Grad-CAM pairs: row index -> (seen, overlay), or the error's text.

    One image that cannot be explained must not hide the others, so failures become text.
    """
    if explain is None:
        return {}
    pairs: dict[int, Any] = {}
    for item in items:
        try:
            pairs[item["index"]] = explain(item["path"])
        except Exception as exc:  # noqa: BLE001 - shown on the tile instead of the heat map
            pairs[item["index"]] = f"{type(exc).__name__}: {str(exc)[:60]}"
    return pairs


def _default_load_image(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _side_by_side(seen: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    gap = np.full((seen.shape[0], max(2, seen.shape[1] // 32), 3), 255, np.uint8)
    return np.concatenate([np.asarray(seen, np.uint8), gap, np.asarray(overlay, np.uint8)], axis=1)


class MisclassifiedDisplay:
    """A gallery of the most confident mistakes, each titled "true: A / pred: B (confidence)".

    ``items``: the mistakes to show (``EvalResult.misclassified`` rows: ``index``, ``path``,
    ``true``, ``pred``, ``confidence``), most confident first; ``n_misclassified``: how many
    mistakes there are in all. ``heat_maps``: row index -> (image as the model saw it, Grad-CAM
    overlay), drawn side by side, or the text of why there is none (see :func:`explain_items`).
    ``load_image(path)`` returns anything ``imshow`` accepts (default: PIL, converted to RGB).
    Without items the figure says why (no mistakes, or no file paths). ``neighbours``: row index ->
    nearest training images (:func:`~tlkit.evaluation.neighbours.neighbour_items`), drawn to the right.
    """

    def __init__(self, items: Sequence[dict[str, Any]], n_misclassified: int, *,
                 heat_maps: dict[int, Any] | None = None, load_image: Callable[[str], Any] | None = None,
                 neighbours: dict[int, Any] | None = None) -> None:
        self.neighbours = dict(neighbours or {})  # row index -> nearest training images (tlkit.evaluation.neighbours)
        self.items = [dict(m) for m in items]
        self.n_misclassified = int(n_misclassified)
        self.heat_maps = dict(heat_maps or {})
        self.load_image = load_image or _default_load_image

    @classmethod
    def from_result(cls, result: Any, max_images: int = 16, *, load_image: Callable[[str], Any] | None = None,
                    explain: Explainer | None = None, neighbours: Callable[[str], list] | None = None
                    ) -> MisclassifiedDisplay:
        """The ``max_images`` most confident mistakes of an ``EvalResult`` (none without paths);
        ``explain(path)`` (e.g. ``tlkit.models.explain.explainer(model)``) computes a Grad-CAM
        overlay for the predicted class of each, now; ``neighbours(path)`` its nearest training images."""
        items = [] if result.paths is None else result.misclassified[: max(0, max_images)]
        return cls(items, len(result.misclassified), heat_maps=explain_items(items, explain), load_image=load_image,
                   neighbours=neighbour_items(items, neighbours))

    @property
    def has_heat_maps(self) -> bool:
        """Whether at least one mistake is shown with its Grad-CAM overlay."""
        return any(isinstance(v, tuple) for v in self.heat_maps.values())

    @property
    def columns(self) -> int:
        # tiles with their nearest training images are wide: two a row keep them legible on a page
        most = 2 if self.neighbours else 3 if self.has_heat_maps else 4
        return min(most, max(1, len(self.items)))

    @property
    def figsize(self) -> tuple[float, float]:
        if not self.items:
            return (6.0, 1.6)
        cols = self.columns
        rows = -(-len(self.items) // cols)
        return ((5.4 if self.has_heat_maps else 3.2) * cols * (1.6 if self.neighbours else 1),
                (2.6 if self.neighbours else 3.9) * rows + 0.6)  # tiles with neighbours are wide and low

    def plot(self, figure: Figure | None = None) -> MisclassifiedDisplay:
        """Draw onto ``figure`` (default: a new pyplot figure of ``self.figsize``); keeps ``figure_``."""
        fig = figure if figure is not None else pyplot_figure(self.figsize)
        self.figure_ = fig
        if not self.items:
            why = "no misclassified images" if not self.n_misclassified else \
                "no file paths were given, so there are no images to show"
            fig.text(0.5, 0.5, f"Misclassified gallery: {why}.", ha="center", va="center")
            return self
        cols = self.columns
        rows = -(-len(self.items) // cols)
        heading = f"Most confident mistakes ({len(self.items)} of {self.n_misclassified})"
        if self.has_heat_maps:
            heading += "; each: the image as the model saw it | Grad-CAM for the predicted class"
        if self.neighbours:
            heading += " | its nearest training images (cosine on the pooled features)"
        fig.suptitle(heading, fontsize=12)
        for i, item in enumerate(self.items):
            self._draw_tile(fig.add_subplot(rows, cols, i + 1), item)
        fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=3.0)
        return self

    def _draw_tile(self, ax: Axes, item: dict[str, Any]) -> None:
        ax.set_xticks([])
        ax.set_yticks([])
        pair = self.heat_maps.get(item["index"])
        try:
            shown = _side_by_side(*pair) if isinstance(pair, tuple) else self.load_image(item["path"])
            near = self.neighbours.get(item["index"])
            ax.imshow(with_neighbours(shown, near, self.load_image) if isinstance(near, list) else shown)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
            ax.text(0.5, 0.5, f"image unavailable\n{type(exc).__name__}", ha="center",
                    va="center", fontsize=9, color="#a00000", transform=ax.transAxes)
        if isinstance(pair, str):
            ax.set_xlabel(plain(f"no heat map: {pair}"), fontsize=7, color="#a00000")
        elif item["index"] in self.neighbours:
            ax.set_xlabel(plain(shorten(caption(self.neighbours[item["index"]]), 90)), fontsize=7)
        title = (
            f"true: {shorten(item['true'], 22)}\n"
            f"pred: {shorten(item['pred'], 22)} ({item['confidence']:.2f})\n"
        )
        ax.set_title(plain(title), fontsize=9)
        # the file name sits inside the title block, so it never collides with the next row
        ax.text(0.5, 1.01, plain(shorten(Path(item["path"]).name, 34)), fontsize=7, ha="center", va="bottom",
                transform=ax.transAxes, color="#555555")
