"""tlkit.report.terminal: the summary prints every class literally, warnings first, and never breaks on odd names."""

from __future__ import annotations

from pathlib import Path

from eval_cases import make_result, undecodable_result
from rich.console import Console

from tlkit.report.terminal import print_summary


def test_print_summary(tmp_path: Path) -> None:
    result = make_result(4, 40)
    console = Console(record=True, width=160)
    print_summary(result, console)
    text = console.export_text()
    assert f"{result.accuracy:.3f}" in text
    for name in result.classes:
        assert name in text  # printed literally, not eaten as rich markup
    assert "Confusion matrix" in text
    assert "new <class>" in text

    wide = make_result(20, 100)
    console = Console(record=True, width=160)
    print_summary(wide, console, max_matrix_classes=12)
    assert "confusion_matrix.csv" in console.export_text()


def test_warnings_are_printed() -> None:
    small = make_result(3, 20)  # 20 images: too few
    assert small.warnings
    console = Console(record=True, width=200)
    print_summary(small, console)
    text = console.export_text()
    assert all(f"warning: {w}" in " ".join(text.split()) for w in small.warnings)


def test_undecodable_names_print(tmp_path: Path) -> None:
    result = undecodable_result(tmp_path)[0]
    console = Console(record=True, width=200)
    print_summary(result, console)
    text = console.export_text()
    text.encode("utf-8")  # printable: no lone surrogates reach the terminal
    assert "d\\xfcsseldorf" in text and "\\xe9t\\xe9" in text
