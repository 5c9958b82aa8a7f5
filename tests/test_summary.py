"""tlkit.evaluation.summary: the text summary and the HTML tables of a result (Jupyter's view), escaped."""

from __future__ import annotations

from pathlib import Path

from eval_cases import SCRIPT, make_result, undecodable_result

from tlkit.evaluation.summary import (
    HTML_MATRIX_MAX_CLASSES,
    confusion_html,
    escape,
    format_with_ci,
    headline_rows,
    result_html,
    row_interval_text,
    shorten,
)


def test_jupyter_view_shows_the_warnings_and_escapes_names() -> None:
    small = make_result(3, 20)  # 20 images: too few
    assert small.warnings
    assert small._repr_html_() == result_html(small)  # what Jupyter shows
    fragment = result_html(small)
    assert '<div class="warn" role="alert">' in fragment
    assert SCRIPT not in fragment and escape(SCRIPT) in fragment
    assert fragment.startswith('<div class="tlkit"><style>')


def test_headline_rows_name_each_interval_and_its_method() -> None:
    result = make_result(6, 60)
    rows = {key: (value, note) for key, value, note in headline_rows(result)}
    assert list(rows)[:3] == ["accuracy", "balanced accuracy", "macro F1"] and "top-3 accuracy" in rows
    assert rows["accuracy"] == (f"{result.accuracy:.3f}", f"[{result.accuracy_ci[0]:.3f}, {result.accuracy_ci[1]:.3f}] "
                                                          "95% CI, clopper-pearson")
    assert rows["n"] == ("60", "6 classes")


def test_text_pieces() -> None:
    assert shorten("a" * 30) == "a" * 23 + "…" and shorten("short") == "short"
    assert format_with_ci(0.5, None) == "0.500" and format_with_ci(0.5, (0.25, 0.75)) == "0.500 [0.250, 0.750]"
    assert row_interval_text({"recall_ci_low": None, "recall_ci_high": None}, "recall") == "no data"
    assert escape('"caf\udce9"') == "&quot;caf\\xe9&quot;"


def test_confusion_table_gives_way_to_a_note_for_many_classes() -> None:
    assert "<table" in confusion_html(make_result(HTML_MATRIX_MAX_CLASSES, 200))
    many = confusion_html(make_result(HTML_MATRIX_MAX_CLASSES + 1, 210))
    assert "<table" not in many and "confusion_matrix.csv" in many


def test_summary_text_of_undecodable_names_can_be_printed(tmp_path: Path) -> None:
    result = undecodable_result(tmp_path)[0]
    text = result.summary_text()
    text.encode("utf-8")
    assert "d\\xfcsseldorf" in text
