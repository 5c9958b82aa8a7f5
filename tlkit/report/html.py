"""The self-contained ``report.html`` page of an evaluation: every table escaped, every image inline.

The page is built from sections, each a function of the result (the tables are those of
:mod:`tlkit.evaluation.summary`, which Jupyter shows too); the PNG images come in as bytes, drawn by
:mod:`tlkit.report.files`. No text from data reaches the page unescaped (:func:`~tlkit.evaluation.summary.escape`).
"""

from __future__ import annotations

import base64
import os
from typing import Any

from tlkit.evaluation.coverage import describe
from tlkit.evaluation.metrics import EvalResult
from tlkit.evaluation.summary import FRAGMENT_CSS, cards_html, confusion_html, escape, per_class_html, scroll, warnings_html
from tlkit.report.binary_html import binary_section
from tlkit.report.header import header_html

PAGE_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 24px auto; max-width: 1200px; padding: 0 16px; color: #1d1d1f; }
h1 { margin-bottom: 4px; overflow-wrap: break-word; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
h3 { margin: 16px 0 4px; font-size: 15px; }
@media (max-width: 600px) { body { margin: 12px auto; padding: 0 8px; } body.tlkit .pair { flex-direction: column; }
  body.tlkit .pair img { max-width: 100%; } }
"""
# Click a column header of a table.sortable to sort its rows (numbers as numbers); no library, no network.
SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (t) {
  var head = t.rows[0]; Array.prototype.forEach.call(head.cells, function (th, i) {
    th.classList.add("sort"); th.title = th.title || "sort by this column";
    th.addEventListener("click", function () {
      var rows = Array.prototype.slice.call(t.rows, 1), up = th.dataset.dir !== "up";
      var key = function (r) { var v = r.cells[i] ? r.cells[i].textContent : ""; var n = parseFloat(v);
        return isNaN(n) ? v.toLowerCase() : n; };
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
      th.dataset.dir = up ? "up" : "down"; rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
    });
  });
});
</script>"""
#: the images the page shows, by file name (all of them are needed)
IMAGES = ("confusion_matrix.png", "confusion_matrix_normalized.png", "per_class.png", "reliability.png",
          "misclassified.png")
#: the images shown when they are given: two-class curves, and a training run's learning curves
OPTIONAL_IMAGES = ("roc.png", "precision_recall.png", "learning_curves.png")


def report_html(
    result: EvalResult, title: str, run_info: dict[str, Any], images: dict[str, bytes],
    *, gradcam: bool = False, sections: tuple[str, ...] = (), data_root: str | None = None,
) -> str:
    """The whole page: run info, warnings, headline cards, then one section per view of the result.

    ``images`` maps each name of :data:`IMAGES` to its PNG bytes; ``gradcam``: the gallery of
    mistakes shows Grad-CAM overlays (the page then says how to read them). ``sections``: HTML
    fragments (already escaped, such as the data doctor's) shown after the evaluation. Images of
    :data:`OPTIONAL_IMAGES` add their sections when given. Files in the tables are shown relative to
    ``data_root`` (default: the folder all of them are in).
    """
    def img(name: str, alt: str) -> str:
        return _img(images, name, alt) if name in images else ""

    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{PAGE_CSS}{FRAGMENT_CSS}</style></head>",
        f'<body class="tlkit"><h1>{escape(title)}</h1>',
        header_html(run_info),
        warnings_html(result),
        cards_html(result),
        *_unknown(result),
        *_history_section(img),
        *binary_section(result, img),
        *_confusion_section(result, images),
        "<h2>Per class</h2>",
        _img(images, "per_class.png", "per-class recall and F1"),
        per_class_html(result),
        *_confused_pairs_section(result),
        *_calibration_section(result, images),
        *_mistakes_section(result, images, gradcam, data_root),
        *ood_section(result, images),
        *sections,
        '<p class="muted">Files beside this report: metrics.json, per_class.csv, '
        "confusion_matrix.csv, predictions.csv and the PNG images.</p>", SORT_SCRIPT, "</body></html>",
    ]
    return "\n".join(parts)


def _img(images: dict[str, bytes], name: str, alt: str) -> str:
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _history_section(img: Any) -> list[str]:
    shown = img("learning_curves.png", "learning curves: loss, accuracy and learning rate per epoch")
    if not shown:
        return []
    return ["<h2>Learning curves</h2>",
            '<p class="muted">Every epoch of every stage in order; dotted lines between stages, a star on the '
            "epoch whose weights were kept (a red line: the weights a stage started from).</p>", shown]


def _unknown(result: EvalResult) -> list[str]:
    if not result.unknown:
        return []
    items = "".join(
        f"<li><b>{escape(name)}</b>: {len(files)} files, e.g. {escape(', '.join(files[:3]))}</li>"
        for name, files in result.unknown.items()
    )
    return ['<div class="warn">Classes the model never saw (files not scored):' f"<ul>{items}</ul></div>"]


def _confusion_section(result: EvalResult, images: dict[str, bytes]) -> list[str]:
    counts_img = _img(images, "confusion_matrix.png", "confusion matrix, counts")
    norm_img = _img(images, "confusion_matrix_normalized.png", "confusion matrix, normalised")
    # Side by side while both stay legible at half width; stacked for many classes.
    shown = [f'<div class="pair">{counts_img}{norm_img}</div>'] if len(result.classes) <= 12 else [counts_img, norm_img]
    return ["<h2>Confusion matrix</h2>", confusion_html(result), *shown]


def _confused_pairs_section(result: EvalResult) -> list[str]:
    if not result.confused_pairs:
        return ["<h2>Most confused pairs</h2>", '<p class="muted">No mistakes.</p>']
    rows = "".join(
        f'<tr><td class="name">{escape(t)}</td><td class="name">{escape(p)}</td><td>{c}</td></tr>'
        for t, p, c in result.confused_pairs[:15]
    )
    return ["<h2>Most confused pairs</h2>",
            scroll('<table class="sortable"><tr><th class="name">true</th><th class="name">predicted as</th>'
                   f"<th>count</th></tr>{rows}</table>")]


def _calibration_section(result: EvalResult, images: dict[str, bytes]) -> list[str]:
    parts = [
        "<h2>Calibration</h2>",
        '<p class="muted">Expected calibration error: the count-weighted gap between top-1 '
        "confidence and accuracy over equal-width confidence bins.</p>",
    ]
    if result.ece_uncalibrated is not None:
        temperature = "" if result.temperature is None else f" T = {result.temperature:.3g}"
        parts.append(
            f"<p>Probabilities are temperature-scaled (softmax(logits / T),{temperature}, fitted on the "
            "validation split; it never changes the predicted class): ECE "
            f"<b>{result.ece:.3f}</b> after, {result.ece_uncalibrated:.3f} before. The orange line is "
            "before scaling; predict, evaluate and the exported model all answer with the scaled probabilities.</p>")
    parts.append(_img(images, "reliability.png", "reliability diagram"))
    return parts


def _relative_to(paths: list[str], root: str | None) -> Any:
    """``path -> shown text``: relative to ``root`` (default: the folder every path is in), else the name."""
    if root is None:
        try:
            root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else None
        except ValueError:  # paths on different drives
            root = None

    def shown(path: str) -> str:
        if root is not None and os.path.abspath(path).startswith(os.path.abspath(root) + os.sep):
            return os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        return os.path.basename(path)
    return shown


def _mistakes_section(result: EvalResult, images: dict[str, bytes], gradcam: bool,
                      data_root: str | None = None) -> list[str]:
    parts = ["<h2>Most confident mistakes</h2>"]
    if gradcam:
        parts.append(
            '<p class="muted">Beside each image, a Grad-CAM heat map for the predicted class: '
            "red where the evidence for that class came from (tlkit explain RUN_DIR IMAGE).</p>"
        )
    parts.append(_img(images, "misclassified.png", "most confident mistakes"))
    if result.misclassified:
        shown = _relative_to(result.paths or [], data_root)
        rows = "".join(
            f'<tr><td>{m["index"]}</td><td class="name">{escape(shown(m["path"]) if m["path"] else "")}</td>'
            f'<td class="name">{escape(m["true"])}</td><td class="name">{escape(m["pred"])}</td>'
            f'<td>{m["confidence"]:.3f}</td><td>{m["prob_true"]:.3f}</td></tr>'
            for m in result.misclassified[:30]
        )
        parts.append(scroll(
            '<table class="sortable"><tr><th>row</th><th class="name">file</th><th class="name">true</th>'
            '<th class="name">predicted</th><th>confidence</th><th>p(true)</th></tr>'
            f"{rows}</table>"
        ))
    return parts


def ood_section(result: EvalResult, images: dict[str, bytes]) -> list[str]:
    """"Unknown" answers: how many images the OOD score rejects, the accuracy on the rest, the coverage-accuracy
    curve (nothing for a result without an OOD score: stored predictions, a model saved before tlkit kept one)."""
    if result.ood is None:
        return []
    parts = ["<h2>Unknown images (out-of-distribution score)</h2>", f"<p>{escape(describe(result.ood))}.</p>"]
    if "coverage.png" not in images:
        return parts
    rows = "".join(f"<tr><td>{p['coverage']:.1%}</td><td>{p['accuracy']:.3f}</td><td>{p['threshold']:.4g}</td></tr>"
                   for p in result.ood.table())
    return parts + ['<p class="muted">An image whose score is above the threshold is answered unknown (tlkit predict '
                    "--reject-rate R or --ood-threshold T moves it). Accuracy of the accepted images as the threshold "
                    "moves:</p>", _img(images, "coverage.png", "coverage-accuracy curve"),
                    f"<table><tr><th>accepted</th><th>accuracy</th><th>threshold</th></tr>{rows}</table>"]
