"""The top of a report: the run's rows (:mod:`tlkit.report.run_info`) as readable HTML, never raw JSON.

A value is shown by its shape: text or a number as it is, a mapping as ``key value · key value``, a
list of flat rows as a small table (in a sideways-scrolling wrapper), another list comma-separated.
"""

from __future__ import annotations

from typing import Any

from tlkit.evaluation.summary import escape, scroll

#: rows shown as their own tables under the header's list, in this order, with their headings
TABLES = {"stages": "Stages as run", "images": "Images per class and split",
          "images evaluated": "Images per class evaluated"}


def header_html(run_info: dict[str, Any]) -> str:
    """The run's rows as a two-column table, then its tables (stages, images per class and split)."""
    if not run_info:
        return ""
    rows = "".join(f'<tr><th class="name">{escape(k)}</th><td class="name">{value_html(v)}</td></tr>'
                   for k, v in run_info.items() if k not in TABLES or not _is_rows(v))
    tables = "".join(f"<h3>{escape(title)}</h3>{rows_table(run_info[key])}" for key, title in TABLES.items()
                     if key in run_info and _is_rows(run_info[key]))
    return f'<section class="run-info">{scroll(f"<table>{rows}</table>")}{tables}</section>'


def value_html(value: Any) -> str:
    """One value, readable (see the module)."""
    if isinstance(value, dict):
        return " · ".join(f"{escape(k)} {value_html(v)}" for k, v in value.items())
    if _is_rows(value):
        return rows_table(value)
    if isinstance(value, (list, tuple)):
        return escape(", ".join(str(v) for v in value))
    if isinstance(value, float):
        return escape(f"{value:.4g}")
    return escape("" if value is None else value)


def rows_table(rows: list[dict[str, Any]]) -> str:
    """Flat rows with the same keys as a table; the first column is a name column."""
    keys = list(rows[0])
    head = "".join(f'<th class="{"name" if i == 0 else ""}">{escape(k)}</th>' for i, k in enumerate(keys))
    body = "".join("<tr>" + "".join(f'<td class="{"name" if i == 0 or not _numeric(r.get(k)) else ""}">'
                                    f"{value_html(r.get(k))}</td>" for i, k in enumerate(keys)) + "</tr>" for r in rows)
    return scroll(f'<table class="sortable"><tr>{head}</tr>{body}</table>')


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _numeric(value: Any) -> bool:
    try:
        float(str(value))
    except ValueError:
        return value in ("", None)
    return True
