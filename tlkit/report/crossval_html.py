"""The cross-validation section of a run's report: per-fold accuracies, the mean with its intervals,
and the pooled out-of-fold confusion matrix (a table and ``crossval_confusion.png``), from ``crossval.json``."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np

from tlkit._io import atomic_write_bytes
from tlkit.evaluation.display import ConfusionMatrixDisplay
from tlkit.evaluation.summary import escape
from tlkit.rundir import RunDir

__all__ = ["crossval_confusion_png", "crossval_section_html", "run_crossval_sections", "CONFUSION_PNG"]

CONFUSION_PNG = "crossval_confusion.png"


def crossval_confusion_png(summary: dict[str, Any]) -> bytes:
    """The pooled out-of-fold confusion matrix (counts) as PNG bytes."""
    from matplotlib.figure import Figure

    shown = ConfusionMatrixDisplay(np.array(summary["confusion_matrix"]), summary["classes"])
    figure = Figure(figsize=shown.figsize, dpi=100)
    shown.plot(figure.add_subplot())
    figure.axes[0].set_title(f"Cross-validation: pooled out-of-fold predictions, n={summary['pooled']['images']}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _confusion_table(summary: dict[str, Any]) -> str:
    classes = summary["classes"]
    head = "".join(f"<th>{escape(c)}</th>" for c in classes)
    rows = "".join(f'<tr><th class="name">{escape(name)}</th>' + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for name, row in zip(classes, summary["confusion_matrix"]))
    return f"<table><tr><th>true \\ predicted</th>{head}</tr>{rows}</table>"


def crossval_section_html(summary: dict[str, Any], png: bytes | None = None) -> str:
    """The section: what was cross-validated, the figures, and the pooled confusion matrix."""
    interval, pooled = summary["interval"], summary["pooled"]
    folds = "".join(f"<tr><td>{i + 1}</td><td>{n}</td><td>{a:.4f}</td></tr>"
                    for i, (a, n) in enumerate(zip(summary["fold_accuracies"], summary["fold_sizes"])))
    level = f"{summary.get('level', 0.95):.0%}"
    image = "" if png is None else \
        f'<img alt="cross-validation confusion matrix" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    return (
        f"<h2>Cross-validation ({summary['folds']} folds)</h2>"
        f'<p class="muted">{summary["folds"]} models of the recipe, each trained on {summary["folds"] - 1} '
        f"{escape(summary.get('method', 'stratified'))} folds of train+val and tested on the fold it held out "
        f"({escape(summary.get('selection', ''))}). The saved model and the test figures above are the final model's, "
        "trained on the normal split; crossval.json has every number and prediction.</p>"
        f"<p>mean accuracy <b>{summary['mean_accuracy']:.4f}</b>, {level} t-interval over the fold accuracies "
        f"[{interval['low']:.4f}, {interval['high']:.4f}] (folds share training images: a rough band); pooled "
        f"out-of-fold accuracy {pooled['accuracy']:.4f} ({pooled['correct']}/{pooled['images']}), {level} Wilson "
        f"[{pooled['wilson']['low']:.4f}, {pooled['wilson']['high']:.4f}]</p>"
        f"<table><tr><th>fold</th><th>held-out images</th><th>accuracy</th></tr>{folds}</table>"
        f"<h3>Pooled out-of-fold confusion matrix</h3>{_confusion_table(summary)}{image}"
    )


def run_crossval_sections(run: RunDir) -> tuple[str, ...]:
    """The run's cross-validation section (and its PNG written beside the report); none without crossval.json."""
    if not run.crossval.is_file():
        return ()
    summary = json.loads(run.crossval.read_text(encoding="utf-8"))
    png = crossval_confusion_png(summary)
    atomic_write_bytes(run / CONFUSION_PNG, png)
    return (crossval_section_html(summary, png),)
