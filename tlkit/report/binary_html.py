"""The report's two-class section: ROC and precision-recall curves with their areas, and the operating
point: recall, precision and false-positive rate on the test set at the model's threshold, against
the argmax default (the numbers are :class:`tlkit.evaluation.binary.BinaryCurves`'s)."""

from __future__ import annotations

from typing import Any, Callable

from tlkit.evaluation.summary import escape, scroll

_FIGURES = (("recall", "recall"), ("precision", "precision"), ("false_positive_rate", "false-positive rate"))


def binary_section(result: Any, img: Callable[[str, str], str]) -> list[str]:
    """The section (empty for more than two classes); ``img(name, alt)`` gives an inline image tag."""
    b = result.binary
    if b is None:
        return []
    areas = " · ".join(f"{name} {escape(_num(v))}" for name, v in (("ROC AUC", b.roc_auc),
                                                                  ("average precision", b.average_precision)))
    parts = [
        f"<h2>Positive class: {escape(b.positive)}</h2>",
        f'<p>{areas} <span class="muted">(on p({escape(b.positive)}); positive because '
        f"{escape(b.positive_rule)}; prevalence {b.prevalence:.1%} of the test set)</span></p>",
        f'<div class="pair">{img("roc.png", "ROC curve")}{img("precision_recall.png", "precision-recall curve")}</div>',
        operating_table(b),
    ]
    if b.threshold is None:
        parts.append('<p class="muted">No decision threshold: the predictions take the argmax. Choose one on '
                     "validation with <code>tlkit finetune --target-recall 0.95</code> (or <code>--target-precision</code>), "
                     "or try one with <code>tlkit evaluate RUN --threshold 0.3</code>.</p>")
    else:
        parts.append(f"<p>{escape(trade_text(b))}</p>")
    return parts


def operating_table(b: Any) -> str:
    """Rows: the threshold (when there is one) and the argmax; columns: recall, precision, FPR, counts."""
    head = "".join(f"<th>{label}</th>" for _, label in _FIGURES)
    rows = []
    points = ([(f"threshold {b.threshold:.3g}", b.at_threshold)] if b.at_threshold is not None else []) + \
        [("argmax (default)", b.at_argmax)]
    for name, rates in points:
        cells = "".join(f"<td>{escape(_num(rates[key]))}</td>" for key, _ in _FIGURES)
        counts = "".join(f"<td>{rates[k]}</td>" for k in ("tp", "fp", "fn", "tn"))
        rows.append(f'<tr><th class="name">{escape(name)}</th>{cells}{counts}</tr>')
    return scroll(f'<table><tr><th class="name">decision (test set)</th>{head}<th>TP</th><th>FP</th><th>FN</th>'
                  f'<th>TN</th></tr>{"".join(rows)}</table>')


def trade_text(b: Any) -> str:
    """What the threshold trades against the argmax, in words."""
    t, a = b.at_threshold, b.at_argmax
    changes = []
    for key, label in _FIGURES:
        if t[key] is not None and a[key] is not None:
            changes.append(f"{label} {t[key]:.3f} instead of {a[key]:.3f}")
    caught = t["tp"] - a["tp"]
    alarms = t["fp"] - a["fp"]
    return (f"At threshold {b.threshold:.3g} (against the argmax): {'; '.join(changes) or 'no figure to compare'}: "
            f"{caught:+d} {b.positive} found, {alarms:+d} false alarms on this test set.")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
