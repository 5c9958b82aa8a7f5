"""Plots, files and terminal output for an :class:`~tlkit.evaluation.scoring.EvalResult`.

matplotlib is imported inside the functions that draw, so ``import tlkit`` stays fast. Files are
written under fixed names; class names and paths only ever appear *inside* files (escaped in
HTML), never in file names.

File names that are not valid UTF-8 (a file named ``b"caf\\xe9.png"``, which Python holds as
``"caf\\udce9.png"``) never break a report: the CSV files keep their bytes exactly
(``surrogateescape``; read them back with ``encoding="utf-8", errors="surrogateescape"``),
metrics.json writes them as ``\\udce9`` escapes (``json.load`` gives the same string back), and
the HTML, the plots and the terminal show ``caf\\xe9.png`` (:func:`readable_text`).

Example:
    >>> import numpy as np, tempfile
    >>> from tlkit.evaluation.scoring import evaluate_predictions
    >>> from tlkit.report.files import write_report
    >>> r = evaluate_predictions([0, 1, 1], np.eye(2)[[0, 1, 0]], ["cat", "dog"], n_bootstrap=50)
    >>> sorted(write_report(r, tempfile.mkdtemp()))[:3]
    ['confusion_matrix.csv', 'confusion_matrix.png', 'confusion_matrix_normalized.png']
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from tlkit._io import csv_bytes, json_bytes, readable_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from rich.console import Console

    from tlkit.evaluation.scoring import EvalResult

# Cells are annotated with their value only up to this many classes; beyond it text is unreadable.
ANNOTATE_MAX_CLASSES = 20
# HTML confusion tables beyond this many classes are too wide to read; the PNG and CSV remain.
HTML_MATRIX_MAX_CLASSES = 20
# Tick labels longer than this are shortened on plots (full names stay in CSV/HTML).
_MAX_TICK_CHARS = 24
# The report's gallery of mistakes shows at most this many images (each may cost a Grad-CAM pass).
GALLERY_MAX_IMAGES = 16
_DPI = 110


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


def _pyplot_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-managed Figure, so notebooks display it."""
    _select_backend()
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize)


def _new_axes(figsize: tuple[float, float]) -> Axes:
    return _pyplot_figure(figsize).add_subplot()


def _detached_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure outside pyplot: no backend, no global state, freed when dropped."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=_DPI)


def _short(name: str, limit: int = _MAX_TICK_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _plain(text: str) -> str:
    # matplotlib treats paired "$" as mathtext; class names and paths must print literally.
    return readable_text(text).replace("$", r"\$")


def _confusion_figsize(n_classes: int) -> tuple[float, float]:
    # Cells shrink from ~0.55 in to 0.2 in as classes grow, so 50 classes still fit a page width
    # with tick labels that stay legible once the HTML scales the image down.
    side = max(5.0, 3.0 + n_classes * max(0.2, 0.55 - 0.007 * n_classes))
    return (side + 1.2, side)


def _per_class_figsize(n_classes: int) -> tuple[float, float]:
    return (8.0, max(3.0, 0.32 * n_classes + 1.5))


# --------------------------------------------------------------------------------------------
# plots


def plot_confusion_matrix(
    result: EvalResult, ax: Axes | None = None, *, normalize: bool = False
) -> Axes:
    """Draw the confusion matrix over the full class list; rows are true classes.

    ``normalize=True`` divides each row by its support (the diagonal is then per-class recall).
    Cells carry their value up to 20 classes; the figure grows with the number of classes.
    """
    n_classes = len(result.classes)
    if ax is None:
        ax = _new_axes(_confusion_figsize(n_classes))
    values = result.confusion_normalized if normalize else result.confusion
    vmax = 1.0 if normalize else max(1, int(values.max()))
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)

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

    labels = [_plain(_short(c)) for c in result.classes]
    tick_size = 10 if n_classes <= 12 else 8 if n_classes <= 30 else 7 if n_classes <= 60 else 5
    ax.set_xticks(range(n_classes), labels, rotation=45 if n_classes <= 12 else 90,
                  ha="right" if n_classes <= 12 else "center", rotation_mode="anchor"
                  if n_classes <= 12 else "default", fontsize=tick_size)
    ax.set_yticks(range(n_classes), labels, fontsize=tick_size)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    kind = "row-normalised (recall per true class)" if normalize else "counts"
    ax.set_title(f"Confusion matrix, {kind}, n={result.n}")
    return ax


def plot_reliability(result: EvalResult, ax: Axes | None = None) -> Axes:
    """Draw accuracy per confidence bin against the diagonal; bar labels are bin counts."""
    if ax is None:
        ax = _new_axes((6.0, 5.5))
    bins = result.reliability
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
    # Counts sit inside the foot of each bar, where neither the gap nor the diagonal can cover them.
    for center, b in zip(centers, filled):
        ax.text(center, 0.015, str(b["count"]), rotation=90, ha="center", va="bottom",
                fontsize=7, color="white" if b["accuracy"] > 0.12 else "black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("Top-1 confidence")
    ax.set_ylabel("Accuracy")
    ax.set_title(f"Reliability: ECE = {result.ece:.3f} ({len(bins)} bins; numbers = counts)")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_per_class(result: EvalResult, ax: Axes | None = None) -> Axes:
    """Draw per-class recall (with its interval) and F1 as horizontal bars, labelled with each
    class's support."""
    n_classes = len(result.classes)
    if ax is None:
        ax = _new_axes(_per_class_figsize(n_classes))
    positions = np.arange(n_classes)
    recall = [row["recall"] for row in result.per_class]
    f1 = [row["f1"] for row in result.per_class]
    # a class without test images has no interval: no whisker
    recall_err = np.array([
        [0.0, 0.0] if row["recall_ci_low"] is None
        else [row["recall"] - row["recall_ci_low"], row["recall_ci_high"] - row["recall"]]
        for row in result.per_class
    ]).T.clip(min=0.0)
    ax.barh(positions - 0.2, recall, height=0.4, color="#4878b0",
            label=f"recall ({result.ci_level:.0%} CI)", xerr=recall_err,
            error_kw={"ecolor": "#1f3550", "elinewidth": 0.8, "capsize": 2})
    ax.barh(positions + 0.2, f1, height=0.4, color="#e08a3c", label="F1")
    labels = [
        _plain(f"{_short(row['class'])} (n={row['support']})") for row in result.per_class
    ]
    ax.set_yticks(positions, labels, fontsize=9 if n_classes <= 30 else 7)
    ax.set_ylim(n_classes - 0.5, -0.5)  # first class at the top, as in the tables
    ax.set_xlim(0, 1.02)  # room for the caps of whiskers that end at 1
    ax.axvline(result.balanced_accuracy, color="gray", linestyle=":", linewidth=1,
               label=f"balanced accuracy {result.balanced_accuracy:.3f}")
    ax.set_xlabel("Score")
    ax.set_title("Per-class recall and F1 (support in brackets)", pad=22)
    # Above the axes, so the legend never hides the bars of the last classes.
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return ax


def _default_load_image(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


#: An ``explain(path)`` callable returns (image as the model saw it, Grad-CAM overlay), both
#: (H, W, 3) uint8; :func:`tlkit.models.explain.explainer` makes one from a model.
Explainer = Callable[[str], "tuple[np.ndarray, np.ndarray]"]


def _gallery_cols(n_tiles: int, paired: bool) -> int:
    return min(3 if paired else 4, max(1, n_tiles))


def _gallery_figsize(n_tiles: int, paired: bool = False) -> tuple[float, float]:
    if n_tiles == 0:
        return (6.0, 1.6)
    cols = _gallery_cols(n_tiles, paired)
    rows = -(-n_tiles // cols)
    return ((5.4 if paired else 3.2) * cols, 3.9 * rows + 0.6)


def _gallery_items(result: EvalResult, max_images: int) -> list[dict[str, Any]]:
    if result.paths is None:
        return []
    return result.misclassified[: max(0, max_images)]


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


def plot_misclassified(
    result: EvalResult, max_images: int = 16, *, load_image: Callable[[str], Any] | None = None,
    explain: Explainer | None = None,
) -> Figure:
    """A gallery of the most confident mistakes, each titled "true: A / pred: B (confidence)".

    ``load_image(path)`` returns anything ``imshow`` accepts (default: PIL, converted to RGB).
    ``explain(path)`` (e.g. ``tlkit.models.explain.explainer(model)``) adds a Grad-CAM overlay for the
    predicted class beside each image. Without paths or without mistakes the figure says so.
    """
    return _gallery(_pyplot_figure, result, max_images, load_image, explain)[0]


def _gallery(make_figure: Callable[[tuple[float, float]], Figure], result: EvalResult, max_images: int,
             load_image: Callable[[str], Any] | None, explain: Explainer | None) -> tuple[Figure, bool]:
    """The mistakes gallery: Grad-CAM computed first, then drawn; also whether any heat map is shown."""
    items = _gallery_items(result, max_images)
    pairs = explain_items(items, explain)
    fig = make_figure(_gallery_figsize(len(items), _has_pairs(pairs)))
    _draw_misclassified(fig, result, items, load_image or _default_load_image, pairs)
    return fig, _has_pairs(pairs)


def _has_pairs(pairs: dict[int, Any]) -> bool:
    return any(isinstance(v, tuple) for v in pairs.values())


def _side_by_side(seen: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    gap = np.full((seen.shape[0], max(2, seen.shape[1] // 32), 3), 255, np.uint8)
    return np.concatenate([np.asarray(seen, np.uint8), gap, np.asarray(overlay, np.uint8)], axis=1)


def _draw_misclassified(
    fig: Figure, result: EvalResult, items: list[dict[str, Any]], load: Callable[[str], Any],
    pairs: dict[int, Any] | None = None,
) -> None:
    if not items:
        if not result.misclassified:
            why = "no misclassified images"
        else:
            why = "no file paths were given, so there are no images to show"
        fig.text(0.5, 0.5, f"Misclassified gallery: {why}.", ha="center", va="center")
        return
    pairs = pairs or {}
    cols = _gallery_cols(len(items), _has_pairs(pairs))
    rows = -(-len(items) // cols)
    heading = f"Most confident mistakes ({len(items)} of {len(result.misclassified)})"
    if _has_pairs(pairs):
        heading += "; each: the image as the model saw it | Grad-CAM for the predicted class"
    fig.suptitle(heading, fontsize=12)
    for i, item in enumerate(items):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        pair = pairs.get(item["index"])
        try:
            ax.imshow(_side_by_side(*pair) if isinstance(pair, tuple) else load(item["path"]))
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
            ax.text(0.5, 0.5, f"image unavailable\n{type(exc).__name__}", ha="center",
                    va="center", fontsize=9, color="#a00000", transform=ax.transAxes)
        if isinstance(pair, str):
            ax.set_xlabel(_plain(f"no heat map: {pair}"), fontsize=7, color="#a00000")
        title = (
            f"true: {_short(item['true'], 22)}\n"
            f"pred: {_short(item['pred'], 22)} ({item['confidence']:.2f})\n"
        )
        ax.set_title(_plain(title), fontsize=9)
        # the file name sits inside the title block, so it never collides with the next row
        ax.text(0.5, 1.01, _plain(_short(Path(item["path"]).name, 34)), fontsize=7, ha="center", va="bottom",
                transform=ax.transAxes, color="#555555")
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=3.0)


# --------------------------------------------------------------------------------------------
# files


def write_report(
    result: EvalResult,
    out_dir: str | os.PathLike[str],
    *,
    load_image: Callable[[str], Any] | None = None,
    explain: Explainer | None = None,
    title: str = "tlkit evaluation",
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write metrics, CSVs, plots and one self-contained ``report.html`` into ``out_dir``.

    ``explain(path)`` (e.g. ``tlkit.models.explain.explainer(model)``) puts a Grad-CAM overlay for the
    predicted class beside each of the (at most 16) mistakes in the gallery; without it (say,
    for stored predictions with no model) the gallery shows the images alone.
    ``extra`` (run info: backbone, recipe, timings, ...) is shown at the top of the HTML and
    stored under ``"run"`` in metrics.json. Returns file name -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_info = dict(extra or {})
    written: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        written[name] = _atomic_write(out / name, data)

    metrics = {"title": title, "run": run_info, **result.to_dict()}
    put("metrics.json", json_bytes(metrics))
    columns = list(result.per_class[0])  # every row has the same keys; an empty bound is blank
    put("per_class.csv", csv_bytes(
        columns, [["" if r[c] is None else r[c] for c in columns] for r in result.per_class],
    ))
    put("confusion_matrix.csv", csv_bytes(
        ["true \\ predicted", *result.classes],
        [[name, *row] for name, row in zip(result.classes, result.confusion.tolist())],
    ))
    put("predictions.csv", csv_bytes(*_prediction_rows(result)))

    images: dict[str, bytes] = {}
    n_classes = len(result.classes)
    for name, figsize, draw in (
        ("confusion_matrix.png", _confusion_figsize(n_classes),
         lambda ax: plot_confusion_matrix(result, ax)),
        ("confusion_matrix_normalized.png", _confusion_figsize(n_classes),
         lambda ax: plot_confusion_matrix(result, ax, normalize=True)),
        ("reliability.png", (6.0, 5.5), lambda ax: plot_reliability(result, ax)),
        ("per_class.png", _per_class_figsize(n_classes), lambda ax: plot_per_class(result, ax)),
    ):
        fig = _detached_figure(figsize)
        draw(fig.add_subplot())
        images[name] = _png_bytes(fig)
    fig, gradcam = _gallery(_detached_figure, result, GALLERY_MAX_IMAGES, load_image, explain)
    images["misclassified.png"] = _png_bytes(fig)
    for name, data in images.items():
        put(name, data)

    # every text in the page went through _e (readable_text); "replace" only guards the encoder
    put("report.html", _report_html(result, title, run_info, images, gradcam=gradcam).encode("utf-8", "replace"))
    return written


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    from tlkit._io import atomic_write_bytes

    atomic_write_bytes(path, data)
    return path


def _prediction_rows(result: EvalResult) -> tuple[list[str], list[list[Any]]]:
    header = ["index", "path", "true", "pred", "correct", "confidence"]
    header += [f"prob_{name}" for name in result.classes]
    classes = result.classes
    rows = []
    for i, (t, p, prob_row) in enumerate(
        zip(result.y_true.tolist(), result.y_pred.tolist(), result.probs.tolist())
    ):
        path = result.paths[i] if result.paths is not None else ""
        rows.append([i, path, classes[t], classes[p], int(t == p), prob_row[p], *prob_row])
    return header, rows


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# HTML

_PAGE_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 24px auto; max-width: 1200px; padding: 0 16px; color: #1d1d1f; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
"""
# Scoped under .tlkit so the Jupyter fragment does not restyle the notebook around it.
_CSS = """
.tlkit table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
.tlkit th, .tlkit td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
.tlkit th { background: #f3f4f6; }
.tlkit td.name, .tlkit th.name { text-align: left; max-width: 320px; overflow-wrap: anywhere; }
.tlkit .cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.tlkit .card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.tlkit .card .v { font-size: 22px; font-weight: 600; }
.tlkit .card .k, .tlkit .muted { color: #666; font-size: 12px; }
.tlkit img { max-width: 100%; height: auto; border: 1px solid #eee; }
.tlkit .cm td { min-width: 28px; text-align: center; }
.tlkit .cm th.col { white-space: nowrap; font-size: 12px; }
.tlkit .pair { display: flex; gap: 12px; align-items: flex-start; }
.tlkit .pair img { max-width: calc(50% - 6px); }
.tlkit .warn { background: #fff4e5; border: 1px solid #f0b45a; padding: 8px 12px; margin: 12px 0; }
.tlkit td.ci { color: #555; white-space: nowrap; }
"""


def _e(value: Any) -> str:
    return html.escape(readable_text(str(value)), quote=True)


def _interval(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _row_interval(row: dict[str, Any], metric: str) -> str:
    lo, hi = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    return "no data" if lo is None else _interval((lo, hi))


def _headline(result: EvalResult) -> list[tuple[str, str, str]]:
    """(metric, value, interval or note) rows shared by the HTML and the terminal summary."""
    level = f"{result.ci_level:.0%} CI"

    def ci(interval: tuple[float, float] | None, method: str | None) -> str:
        return "" if interval is None else f"{_interval(interval)} {level}, {method}"

    rows = [
        ("accuracy", f"{result.accuracy:.3f}", ci(result.accuracy_ci, result.accuracy_ci_method)),
        ("balanced accuracy", f"{result.balanced_accuracy:.3f}",
         ci(result.balanced_accuracy_ci, result.balanced_accuracy_ci_method)),
        ("macro F1", f"{result.f1_macro:.3f}", f"weighted F1 {result.f1_weighted:.3f}"),
    ]
    rows += [(f"top-{k} accuracy", f"{v:.3f}", "") for k, v in result.top_k.items() if k > 1]
    rows.append(("ECE", f"{result.ece:.3f}", f"{len(result.reliability)} confidence bins"))
    rows.append(("n", str(result.n), f"{len(result.classes)} classes"))
    return rows


def _cards_html(result: EvalResult) -> str:
    cards = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
        f'<div class="muted">{_e(note)}</div></div>'
        for k, v, note in _headline(result)
    )
    return f'<div class="cards">{cards}</div>'


def _warnings_html(result: EvalResult) -> str:
    if not result.warnings:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
    return (
        '<div class="warn" role="alert"><b>Too little data to conclude much:</b>'
        f"<ul>{items}</ul></div>"
    )


def _per_class_html(result: EvalResult) -> str:
    level = f"{result.ci_level:.0%} CI"
    rows = "".join(
        f'<tr><td class="name">{_e(r["class"])}</td><td>{r["precision"]:.3f}</td>'
        f'<td class="ci">{_row_interval(r, "precision")}</td><td>{r["recall"]:.3f}</td>'
        f'<td class="ci">{_row_interval(r, "recall")}</td><td>{r["f1"]:.3f}</td>'
        f'<td>{r["support"]}</td><td>{r["predicted"]}</td></tr>'
        for r in result.per_class
    )
    return (
        '<table><tr><th class="name">class</th><th>precision</th>'
        f"<th>{level}</th><th>recall</th><th>{level}</th><th>F1</th>"
        f"<th>support</th><th>predicted</th></tr>{rows}</table>"
        f'<p class="muted">Intervals: {_e(result.per_class_ci_method)} (recall out of the support, '
        "precision out of the images predicted as the class).</p>"
    )


def _confusion_html(result: EvalResult) -> str:
    if len(result.classes) > HTML_MATRIX_MAX_CLASSES:
        return (
            f'<p class="muted">{len(result.classes)} classes: the table is in '
            "confusion_matrix.csv; see the images for the full matrix.</p>"
        )
    # Column headers are shortened (full name on hover) so narrow count columns stay one line.
    head = "".join(
        f'<th class="col" title="{_e(c)}">{_e(_short(c, 14))}</th>' for c in result.classes
    )
    body = []
    for name, counts, shares in zip(
        result.classes, result.confusion.tolist(), result.confusion_normalized.tolist()
    ):
        # Shade by the row share so the diagonal (recall) reads at a glance.
        cells = "".join(
            f'<td style="background: rgba(49,130,189,{0.85 * s:.2f});'
            f'{" color: white;" if s > 0.55 else ""}" title="{s:.1%} of row">{c}</td>'
            for c, s in zip(counts, shares)
        )
        body.append(f'<tr><th class="name">{_e(name)}</th>{cells}</tr>')
    return (
        '<table class="cm"><tr><th class="name">true \\ predicted</th>'
        f'{head}</tr>{"".join(body)}</table>'
    )


def result_html(result: EvalResult) -> str:
    """HTML fragment for Jupyter: headline metrics with CIs, per-class and confusion tables."""
    return (
        f'<div class="tlkit"><style>{_CSS}</style>{_warnings_html(result)}'
        f"{_cards_html(result)}<h4>Per class</h4>{_per_class_html(result)}"
        f"<h4>Confusion matrix (rows = true, columns = predicted)</h4>"
        f"{_confusion_html(result)}</div>"
    )


def _img(images: dict[str, bytes], name: str, alt: str) -> str:
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _report_html(
    result: EvalResult, title: str, run_info: dict[str, Any], images: dict[str, bytes],
    *, gradcam: bool = False,
) -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_PAGE_CSS}{_CSS}</style></head>",
        f'<body class="tlkit"><h1>{_e(title)}</h1>',
    ]
    if run_info:
        rows = "".join(
            f'<tr><th class="name">{_e(k)}</th><td class="name">'
            f"{_e(v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False))}"
            "</td></tr>"
            for k, v in run_info.items()
        )
        parts.append(f"<table>{rows}</table>")
    parts.append(_warnings_html(result))
    parts.append(_cards_html(result))
    if result.unknown:
        items = "".join(
            f"<li><b>{_e(name)}</b>: {len(files)} files, e.g. {_e(', '.join(files[:3]))}</li>"
            for name, files in result.unknown.items()
        )
        parts.append(
            '<div class="warn">Classes the model never saw (files not scored):'
            f"<ul>{items}</ul></div>"
        )

    parts.append("<h2>Confusion matrix</h2>")
    parts.append(_confusion_html(result))
    counts_img = _img(images, "confusion_matrix.png", "confusion matrix, counts")
    norm_img = _img(images, "confusion_matrix_normalized.png", "confusion matrix, normalised")
    # Side by side while both stay legible at half width; stacked for many classes.
    if len(result.classes) <= 12:
        parts.append(f'<div class="pair">{counts_img}{norm_img}</div>')
    else:
        parts += [counts_img, norm_img]

    parts.append("<h2>Per class</h2>")
    parts.append(_img(images, "per_class.png", "per-class recall and F1"))
    parts.append(_per_class_html(result))

    parts.append("<h2>Most confused pairs</h2>")
    if result.confused_pairs:
        rows = "".join(
            f'<tr><td class="name">{_e(t)}</td><td class="name">{_e(p)}</td><td>{c}</td></tr>'
            for t, p, c in result.confused_pairs[:15]
        )
        parts.append(
            '<table><tr><th class="name">true</th><th class="name">predicted as</th>'
            f"<th>count</th></tr>{rows}</table>"
        )
    else:
        parts.append('<p class="muted">No mistakes.</p>')

    parts.append("<h2>Calibration</h2>")
    parts.append(
        '<p class="muted">Expected calibration error: the count-weighted gap between top-1 '
        "confidence and accuracy over equal-width confidence bins.</p>"
    )
    parts.append(_img(images, "reliability.png", "reliability diagram"))

    parts.append("<h2>Most confident mistakes</h2>")
    if gradcam:
        parts.append(
            '<p class="muted">Beside each image, a Grad-CAM heat map for the predicted class: '
            "red where the evidence for that class came from (tlkit explain RUN_DIR IMAGE).</p>"
        )
    parts.append(_img(images, "misclassified.png", "most confident mistakes"))
    if result.misclassified:
        rows = "".join(
            f'<tr><td>{m["index"]}</td><td class="name">{_e(m["path"] or "")}</td>'
            f'<td class="name">{_e(m["true"])}</td><td class="name">{_e(m["pred"])}</td>'
            f'<td>{m["confidence"]:.3f}</td><td>{m["prob_true"]:.3f}</td></tr>'
            for m in result.misclassified[:30]
        )
        parts.append(
            '<table><tr><th>row</th><th class="name">file</th><th class="name">true</th>'
            '<th class="name">predicted</th><th>confidence</th><th>p(true)</th></tr>'
            f"{rows}</table>"
        )
    parts.append(
        '<p class="muted">Files beside this report: metrics.json, per_class.csv, '
        "confusion_matrix.csv, predictions.csv and the PNG images.</p></body></html>"
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# terminal


def print_summary(
    result: EvalResult, console: Console | None = None, *, max_matrix_classes: int = 12
) -> None:
    """Print headline metrics, per-class table, confusion matrix (small C) and top confusions."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    # Class names go in as Text, never as markup: "[bold]" in a folder name must print literally;
    # and through readable_text, so an undecodable file name cannot break the terminal.
    name = readable_text
    for warning in result.warnings:
        console.print(Text(f"warning: {warning}", style="bold yellow"))
    headline = Table(title="Evaluation", show_header=False, box=None, padding=(0, 2))
    for key, value, note in _headline(result):
        headline.add_row(key, Text(value, style="bold"), Text(note, style="dim"))
    console.print(headline)

    level = f"{result.ci_level:.0%} CI"
    per_class = Table(title=Text(f"Per class (in brackets: {level}, {result.per_class_ci_method})"))
    per_class.add_column("class")
    for column in ("precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="right", no_wrap=True)

    def with_interval(row: dict[str, Any], metric: str) -> Text:
        cell = Text(f"{row[metric]:.3f} ")
        cell.append(_row_interval(row, metric), style="dim")
        return cell

    for row in result.per_class:
        per_class.add_row(
            Text(name(row["class"])), with_interval(row, "precision"), with_interval(row, "recall"),
            f"{row['f1']:.3f}", str(row["support"]),
        )
    console.print(per_class)

    if len(result.classes) <= max_matrix_classes:
        matrix = Table(title="Confusion matrix (rows = true, columns = predicted)")
        matrix.add_column("true \\ pred")
        for class_name in result.classes:
            matrix.add_column(Text(_short(name(class_name), 12)), justify="right")
        for i, class_name in enumerate(result.classes):
            cells = [
                Text(str(v), style="bold green" if i == j else ("red" if v else "dim"))
                for j, v in enumerate(result.confusion[i].tolist())
            ]
            matrix.add_row(Text(_short(name(class_name), 30)), *cells)
        console.print(matrix)
    else:
        console.print(
            Text(
                f"Confusion matrix: {len(result.classes)} classes, too wide for the terminal; "
                "see confusion_matrix.csv / confusion_matrix.png (write_report).",
                style="dim",
            )
        )

    if result.confused_pairs:
        pairs = Table(title="Most confused pairs")
        pairs.add_column("true")
        pairs.add_column("predicted as")
        pairs.add_column("count", justify="right")
        for true_name, pred_name, count in result.confused_pairs[:5]:
            pairs.add_row(Text(name(true_name)), Text(name(pred_name)), str(count))
        console.print(pairs)

    for class_name, files in result.unknown.items():
        line = Text("unknown class ", style="yellow")
        line.append(name(class_name), style="bold yellow")
        line.append(f": {len(files)} files not scored (the model has no such class)")
        console.print(line)
        for path in files[:5]:
            console.print(Text(f"  {name(path)}", style="dim"))
        if len(files) > 5:
            console.print(Text(f"  ... and {len(files) - 5} more", style="dim"))
