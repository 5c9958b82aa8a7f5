"""An :class:`~tlkit.evaluation.metrics.EvalResult` in words and tables, built from its numbers.

The plain-text summary, the headline rows (metric, value, interval) that the terminal summary and
the report page share, and the HTML tables that Jupyter shows for a result (``_repr_html_``) and
that :mod:`tlkit.report.html` puts on the report page. Nothing here writes files or prints.

Every text that comes from data (class names, paths) goes through
:func:`~tlkit._io.readable_text`, so an undecodable file name shows as ``caf\\xe9.png``, and
through :func:`escape` where it goes into HTML.

Functions take the result as their first argument: any object with the fields of an ``EvalResult``.
"""

from __future__ import annotations

import html
import os
from typing import Any

from tlkit._io import readable_text

# HTML confusion tables beyond this many classes are too wide to read; the PNG and CSV remain.
HTML_MATRIX_MAX_CLASSES = 20
# Tick labels longer than this are shortened on plots (full names stay in CSV/HTML).
MAX_TICK_CHARS = 24

# Scoped under .tlkit so the Jupyter fragment does not restyle the notebook around it.
FRAGMENT_CSS = """
.tlkit table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
.tlkit th, .tlkit td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
.tlkit th { background: #f3f4f6; }
.tlkit td.name, .tlkit th.name { text-align: left; min-width: 7em; max-width: 320px; overflow-wrap: break-word; }
.tlkit .scroll { overflow-x: auto; max-width: 100%; -webkit-overflow-scrolling: touch; }
.tlkit .scroll > table { margin: 0; }
.tlkit .scroll { margin: 8px 0; }
.tlkit .cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.tlkit .card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.tlkit .card .v { font-size: 22px; font-weight: 600; }
.tlkit .card .k, .tlkit .muted { color: #666; font-size: 12px; }
.tlkit img { max-width: 100%; height: auto; border: 1px solid #eee; }
.tlkit .cm td { min-width: 28px; text-align: center; }
.tlkit .cm th.col { white-space: nowrap; font-size: 12px; vertical-align: bottom; padding: 6px 2px; }
.tlkit .cm th.col span { writing-mode: vertical-rl; transform: rotate(180deg); display: inline-block;
                         max-height: 10em; overflow: hidden; text-overflow: ellipsis; }
.tlkit th.sort { cursor: pointer; } .tlkit th.sort:hover { background: #e5e7eb; }
.tlkit .pair { display: flex; gap: 12px; align-items: flex-start; }
.tlkit .pair img { max-width: calc(50% - 6px); }
.tlkit .warn { background: #fff4e5; border: 1px solid #f0b45a; padding: 8px 12px; margin: 12px 0; }
.tlkit td.ci { color: #555; white-space: nowrap; }
"""


# --------------------------------------------------------------------------------------------
# text pieces


def shorten(name: str, limit: int = MAX_TICK_CHARS) -> str:
    """``name`` cut to ``limit`` characters, the last one an ellipsis when it was longer."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def scroll(table_html: str) -> str:
    """A table in a wrapper that scrolls sideways when the page is narrower than the table (phones)."""
    return f'<div class="scroll">{table_html}</div>'


def shown_path(path: Any, start: str | None = None) -> str:
    """A path as a page may show it: relative to ``start`` (default: the current directory) when inside
    it, else the folder's own name; never the machine's absolute path."""
    text, start = os.path.abspath(os.fspath(path)), os.path.abspath(start or os.getcwd())
    try:
        inside = os.path.commonpath([text, start]) == start
    except ValueError:  # another drive
        inside = False
    return (os.path.relpath(text, start) if inside else os.path.basename(text.rstrip(os.sep))) or "."


def escape(value: Any) -> str:
    """``str(value)`` made readable (:func:`~tlkit._io.readable_text`) and HTML-escaped, quotes included."""
    return html.escape(readable_text(str(value)), quote=True)


def format_with_ci(value: float, ci: tuple[float, float] | None) -> str:
    """``0.750 [0.194, 0.994]``, or only the value when there is no interval."""
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def interval_text(interval: tuple[float, float] | None) -> str:
    """``[0.194, 0.994]``, or an empty string when there is no interval."""
    return "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def row_ci(row: dict[str, Any], metric: str) -> tuple[float, float] | None:
    """The ``(low, high)`` interval of ``metric`` in a ``per_class`` row; ``None`` without data."""
    lo, hi = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    return None if lo is None else (lo, hi)


def row_interval_text(row: dict[str, Any], metric: str) -> str:
    """The interval of ``metric`` in a ``per_class`` row as text; ``no data`` where it has none."""
    ci = row_ci(row, metric)
    return "no data" if ci is None else interval_text(ci)


def calibration_note(result: Any) -> str:
    """``; 0.120 before temperature scaling (T = 1.62)``, or nothing when the result has no such figure."""
    before, temperature = getattr(result, "ece_uncalibrated", None), getattr(result, "temperature", None)
    if before is None:
        return ""
    return f"; {before:.3f} before temperature scaling" + ("" if temperature is None else f" (T = {temperature:.3g})")


def headline_rows(result: Any) -> list[tuple[str, str, str]]:
    """(metric, value, interval or note) rows shared by the HTML and the terminal summary."""
    level = f"{result.ci_level:.0%} CI"

    def ci(interval: tuple[float, float] | None, method: str | None) -> str:
        return "" if interval is None else f"{interval_text(interval)} {level}, {method}"

    rows = [
        ("accuracy", f"{result.accuracy:.3f}", ci(result.accuracy_ci, result.accuracy_ci_method)),
        ("balanced accuracy", f"{result.balanced_accuracy:.3f}",
         ci(result.balanced_accuracy_ci, result.balanced_accuracy_ci_method)),
        ("macro F1", f"{result.f1_macro:.3f}", f"weighted F1 {result.f1_weighted:.3f}"),
    ]
    rows += [(f"top-{k} accuracy", f"{v:.3f}", "") for k, v in result.top_k.items() if k > 1]
    rows.append(("ECE", f"{result.ece:.3f}", f"{len(result.reliability)} confidence bins" + calibration_note(result)))
    rows.append(("n", str(result.n), f"{len(result.classes)} classes"))
    return rows


def summary_text(result: Any) -> str:
    """A plain multi-line summary (warnings, headline metrics, per-class table, top confusions).

    Class names and paths that are not valid text (undecodable file names) are shown with
    ``\\xNN`` escapes, so the summary can always be printed.
    """
    level = f"{result.ci_level:.0%} CI"
    lines = [f"warning: {w}" for w in result.warnings]
    lines += [
        f"n = {result.n}, {len(result.classes)} classes",
        f"accuracy           {format_with_ci(result.accuracy, result.accuracy_ci)}  "
        f"({level}, {result.accuracy_ci_method})",
        f"balanced accuracy  {format_with_ci(result.balanced_accuracy, result.balanced_accuracy_ci)}"
        + (f"  ({level}, {result.balanced_accuracy_ci_method})" if result.balanced_accuracy_ci else ""),
        f"macro F1           {result.f1_macro:.3f}",
        f"weighted F1        {result.f1_weighted:.3f}",
    ]
    lines += [f"top-{k} accuracy     {v:.3f}" for k, v in result.top_k.items() if k > 1]
    lines.append(f"ECE ({len(result.reliability)} bins)      {result.ece:.3f}{calibration_note(result)}")
    names = [readable_text(c) for c in result.classes]
    width = max(len("class"), *(len(c) for c in names))
    lines += [
        "",
        f"{'class':<{width}}  {'precision':<21}  {'recall':<21}     f1  support"
        f"  ({level}, {result.per_class_ci_method})",
    ]
    for name, row in zip(names, result.per_class):
        precision = format_with_ci(row["precision"], row_ci(row, "precision"))
        recall = format_with_ci(row["recall"], row_ci(row, "recall"))
        lines.append(
            f"{name:<{width}}  {precision:<21}  {recall:<21}  {row['f1']:5.3f}  {row['support']:7d}"
        )
    if result.confused_pairs:
        lines += ["", "most confused (true -> predicted: count)"]
        lines += [f"  {readable_text(t)} -> {readable_text(p)}: {c}" for t, p, c in result.confused_pairs[:5]]
    for name, files in result.unknown.items():
        lines.append(f"unknown class {name!r}: {len(files)} files not evaluated")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# HTML tables


def cards_html(result: Any) -> str:
    """The headline metrics as cards (value, interval or note)."""
    cards = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="muted">{escape(note)}</div></div>'
        for k, v, note in headline_rows(result)
    )
    return f'<div class="cards">{cards}</div>'


def warnings_html(result: Any) -> str:
    """The result's warnings in an alert box; empty when there are none."""
    if not result.warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in result.warnings)
    return (
        '<div class="warn" role="alert"><b>Read these figures with care:</b>'
        f"<ul>{items}</ul></div>"
    )


def per_class_html(result: Any) -> str:
    """Per-class precision, recall (each with its interval), F1, support and predicted count."""
    level = f"{result.ci_level:.0%} CI"
    rows = "".join(
        f'<tr><td class="name">{escape(r["class"])}</td><td>{r["precision"]:.3f}</td>'
        f'<td class="ci">{row_interval_text(r, "precision")}</td><td>{r["recall"]:.3f}</td>'
        f'<td class="ci">{row_interval_text(r, "recall")}</td><td>{r["f1"]:.3f}</td>'
        f'<td>{r["support"]}</td><td>{r["predicted"]}</td></tr>'
        for r in result.per_class
    )
    return (
        scroll('<table class="sortable"><tr><th class="name">class</th><th>precision</th>'
               f"<th>{level}</th><th>recall</th><th>{level}</th><th>F1</th>"
               f"<th>support</th><th>predicted</th></tr>{rows}</table>")
        + f'<p class="muted">Intervals: {escape(result.per_class_ci_method)} (recall out of the support, '
        "precision out of the images predicted as the class).</p>"
    )


def confusion_html(result: Any) -> str:
    """The confusion matrix as a table shaded by row share; a note instead beyond
    :data:`HTML_MATRIX_MAX_CLASSES` classes."""
    if len(result.classes) > HTML_MATRIX_MAX_CLASSES:
        return (
            f'<p class="muted">{len(result.classes)} classes: the table is in '
            "confusion_matrix.csv; see the images for the full matrix.</p>"
        )
    # Column headers are shortened (full name on hover) so narrow count columns stay one line.
    head = "".join(
        f'<th class="col" title="{escape(c)}"><span>{escape(shorten(c, 14))}</span></th>' for c in result.classes
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
        body.append(f'<tr><th class="name">{escape(name)}</th>{cells}</tr>')
    return scroll('<table class="cm"><tr><th class="name">true \\ predicted</th>'
                  f'{head}</tr>{"".join(body)}</table>')


def result_html(result: Any) -> str:
    """HTML fragment for Jupyter: headline metrics with CIs, per-class and confusion tables."""
    return (
        f'<div class="tlkit"><style>{FRAGMENT_CSS}</style>{warnings_html(result)}'
        f"{cards_html(result)}<h4>Per class</h4>{per_class_html(result)}"
        f"<h4>Confusion matrix (rows = true, columns = predicted)</h4>"
        f"{confusion_html(result)}</div>"
    )
