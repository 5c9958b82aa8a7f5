"""The report files of an :class:`~tlkit.evaluation.metrics.EvalResult`: JSON, CSV, PNG and one HTML page.

:func:`write_report` writes them for any result; :func:`write_run_report` for a trained model's
result, the way both training and ``tlkit evaluate`` write a run's report. Every file is written
atomically (readers never see half a file) under a fixed name; class names and paths only ever
appear *inside* files (escaped in HTML), never in file names. The figures are
:mod:`tlkit.evaluation.display`'s, drawn on figures outside pyplot; matplotlib is imported only
when they are drawn.

File names that are not valid UTF-8 (a file named ``b"caf\\xe9.png"``, which Python holds as
``"caf\\udce9.png"``) never break a report: the CSV files keep their bytes exactly
(``surrogateescape``; read them back with ``encoding="utf-8", errors="surrogateescape"``),
metrics.json writes them as ``\\udce9`` escapes (``json.load`` gives the same string back), and
the HTML, the plots and the terminal show ``caf\\xe9.png`` (:func:`~tlkit._io.readable_text`).

Example:
    >>> import numpy as np, tempfile
    >>> from tlkit.evaluation.metrics import evaluate_predictions
    >>> from tlkit.report.files import write_report
    >>> r = evaluate_predictions([0, 1, 1], np.eye(2)[[0, 1, 0]], ["cat", "dog"], n_bootstrap=50)
    >>> sorted(write_report(r, tempfile.mkdtemp()))[:3]
    ['confusion_matrix.csv', 'confusion_matrix.png', 'confusion_matrix_normalized.png']
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tlkit._io import atomic_write_bytes, csv_bytes, json_bytes
from tlkit.evaluation.curve_display import HistoryDisplay, PrecisionRecallDisplay, RocCurveDisplay
from tlkit.evaluation.display import (
    ConfusionMatrixDisplay,
    Explainer,
    MisclassifiedDisplay,
    PerClassDisplay,
    ReliabilityDisplay,
)
from tlkit.evaluation.history import TrainingHistory
from tlkit.evaluation.metrics import EvalResult
from tlkit.report.html import report_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tlkit.models.transfer import TransferModel

# The report's gallery of mistakes shows at most this many images (each may cost a Grad-CAM pass).
GALLERY_MAX_IMAGES = 16
_DPI = 110


def write_report(
    result: EvalResult,
    out_dir: str | os.PathLike[str],
    *,
    load_image: Callable[[str], Any] | None = None,
    explain: Explainer | None = None,
    title: str = "tlkit evaluation",
    extra: dict[str, Any] | None = None,
    sections: tuple[str, ...] = (),
    history: TrainingHistory | None = None,
    data_root: str | None = None,
    neighbours: Callable[[str], list] | None = None,
) -> dict[str, Path]:
    """Write metrics, CSVs, plots and one self-contained ``report.html`` into ``out_dir``.

    ``explain(path)`` (e.g. ``tlkit.models.explain.explainer(model)``) puts a Grad-CAM overlay for the
    predicted class beside each of the (at most 16) mistakes in the gallery; without it (say,
    for stored predictions with no model) the gallery shows the images alone.
    ``extra`` (run info: backbone, recipe, timings, ...) is shown at the top of the HTML and
    stored under ``"run"`` in metrics.json. ``sections``: HTML fragments shown after the evaluation
    (see :func:`~tlkit.report.html.report_html`). ``history``: a training run's epochs
    (``learning_curves.png`` and its section); a two-class result adds ``roc.png`` and
    ``precision_recall.png``. ``data_root``: the tables show files relative to it. ``neighbours(path)``
    (e.g. :func:`tlkit.models.ood.neighbour_finder`) puts each mistake's nearest training images beside
    it. Returns file name -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_info = dict(extra or {})
    written: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data)
        written[name] = out / name

    put("metrics.json", json_bytes({"title": title, "run": run_info, **result.to_dict()}))
    for name, data in table_files(result).items():
        put(name, data)
    images, gradcam = render_images(result, load_image=load_image, explain=explain, history=history,
                                    neighbours=neighbours)
    for name, data in images.items():
        put(name, data)
    # every text in the page went through summary.escape (readable_text); "replace" only guards the encoder
    page = report_html(result, title, run_info, images, gradcam=gradcam, sections=sections, data_root=data_root)
    put("report.html", page.encode("utf-8", "replace"))
    return written


def write_run_report(
    result: EvalResult,
    model: TransferModel,
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    extra: dict[str, Any] | None = None,
    sections: tuple[str, ...] = (),
    history: TrainingHistory | None = None,
    data_root: str | None = None,
) -> dict[str, Path]:
    """Write the report of a trained ``model``'s evaluation into ``out_dir`` (a run directory, or an
    evaluation folder of ``tlkit evaluate``): :func:`write_report` with the gallery's images read by
    :func:`tlkit.data.load_image` and a Grad-CAM overlay for the predicted class beside each
    mistake (:func:`tlkit.models.explain.explainer`) and its nearest training images
    (:func:`tlkit.models.ood.neighbour_finder`, when the model has OOD statistics). The other
    arguments: as for :func:`write_report`.
    Returns file name -> path.
    """
    from tlkit.data import load_image
    from tlkit.models.explain import explainer
    from tlkit.models.ood import neighbour_finder

    return write_report(result, out_dir, load_image=load_image, explain=explainer(model), title=title, extra=extra,
                        sections=sections, history=history, data_root=data_root, neighbours=neighbour_finder(model))


def table_files(result: EvalResult) -> dict[str, bytes]:
    """``per_class.csv``, ``confusion_matrix.csv`` and ``predictions.csv``, as bytes."""
    columns = list(result.per_class[0])  # every row has the same keys; an empty bound is blank
    return {
        "per_class.csv": csv_bytes(
            columns, [["" if r[c] is None else r[c] for c in columns] for r in result.per_class],
        ),
        "confusion_matrix.csv": csv_bytes(
            ["true \\ predicted", *result.classes],
            [[name, *row] for name, row in zip(result.classes, result.confusion.tolist())],
        ),
        "predictions.csv": csv_bytes(*prediction_rows(result)),
    }


def prediction_rows(result: EvalResult) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of ``predictions.csv``: one row per prediction, every class's probability."""
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


def render_images(
    result: EvalResult, *, load_image: Callable[[str], Any] | None = None, explain: Explainer | None = None,
    history: TrainingHistory | None = None,
    neighbours: Callable[[str], list] | None = None,
) -> tuple[dict[str, bytes], bool]:
    """The report's PNG images by file name, and whether the gallery shows any Grad-CAM overlay.

    Each figure is drawn outside pyplot (no backend, no global state, freed when dropped).
    ``coverage.png`` is there when the result has an OOD score (``result.ood``).
    """
    images: dict[str, bytes] = {}
    if result.ood is not None:
        from tlkit.evaluation.coverage_display import CoverageDisplay

        shown = CoverageDisplay.from_result(result)
        images["coverage.png"] = _png_bytes(shown.plot(_detached_figure(shown.figsize).add_subplot()).figure_)
    shown_figures: list[tuple[str, Any]] = [
        ("confusion_matrix.png", ConfusionMatrixDisplay.from_result(result)),
        ("confusion_matrix_normalized.png", ConfusionMatrixDisplay.from_result(result, normalize=True)),
        ("reliability.png", ReliabilityDisplay.from_result(result)),
        ("per_class.png", PerClassDisplay.from_result(result)),
    ]
    if result.binary is not None:
        shown_figures += [("roc.png", RocCurveDisplay.from_result(result)),
                          ("precision_recall.png", PrecisionRecallDisplay.from_result(result))]
    for name, shown in shown_figures:
        fig = _detached_figure(shown.figsize)
        shown.plot(fig.add_subplot())
        images[name] = _png_bytes(fig)
    if history is not None and history.x:
        curves = HistoryDisplay(history)
        fig = _detached_figure(curves.figsize)
        images["learning_curves.png"] = _png_bytes(curves.plot(list(fig.subplots(3, 1, sharex=True))).figure_)
    gallery = MisclassifiedDisplay.from_result(result, GALLERY_MAX_IMAGES, load_image=load_image, explain=explain,
                                               neighbours=neighbours)
    images["misclassified.png"] = _png_bytes(gallery.plot(_detached_figure(gallery.figsize)).figure_)
    return images, gallery.has_heat_maps


def _detached_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=_DPI)


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()
