"""The terminal summary of an evaluation: headline metrics, per-class table, confusion matrix, top confusions.

Class names go in as rich ``Text``, never as markup (``[bold]`` in a folder name prints
literally), and through :func:`~tlkit._io.readable_text`, so an undecodable file name cannot break
the terminal. rich is imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlkit._io import readable_text as name
from tlkit.evaluation.metrics import EvalResult
from tlkit.evaluation.summary import headline_rows, row_interval_text, shorten

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


def print_summary(
    result: EvalResult, console: Console | None = None, *, max_matrix_classes: int = 12
) -> None:
    """Print headline metrics, per-class table, confusion matrix (small C) and top confusions."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    for warning in result.warnings:
        console.print(Text(f"warning: {warning}", style="bold yellow"))
    headline = Table(title="Evaluation", show_header=False, box=None, padding=(0, 2))
    for key, value, note in headline_rows(result):
        headline.add_row(key, Text(value, style="bold"), Text(note, style="dim"))
    console.print(headline)
    console.print(_per_class_table(result))
    if len(result.classes) <= max_matrix_classes:
        console.print(_confusion_table(result))
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
    _print_unknown(result, console)


def _with_interval(row: dict[str, Any], metric: str) -> Text:
    from rich.text import Text

    cell = Text(f"{row[metric]:.3f} ")
    cell.append(row_interval_text(row, metric), style="dim")
    return cell


def _per_class_table(result: EvalResult) -> Table:
    from rich.table import Table
    from rich.text import Text

    level = f"{result.ci_level:.0%} CI"
    table = Table(title=Text(f"Per class (in brackets: {level}, {result.per_class_ci_method})"))
    table.add_column("class")
    for column in ("precision", "recall", "F1", "support"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.per_class:
        table.add_row(
            Text(name(row["class"])), _with_interval(row, "precision"), _with_interval(row, "recall"),
            f"{row['f1']:.3f}", str(row["support"]),
        )
    return table


def _confusion_table(result: EvalResult) -> Table:
    from rich.table import Table
    from rich.text import Text

    matrix = Table(title="Confusion matrix (rows = true, columns = predicted)")
    matrix.add_column("true \\ pred")
    for class_name in result.classes:
        matrix.add_column(Text(shorten(name(class_name), 12)), justify="right")
    for i, class_name in enumerate(result.classes):
        cells = [
            Text(str(v), style="bold green" if i == j else ("red" if v else "dim"))
            for j, v in enumerate(result.confusion[i].tolist())
        ]
        matrix.add_row(Text(shorten(name(class_name), 30)), *cells)
    return matrix


def _print_unknown(result: EvalResult, console: Console) -> None:
    from rich.text import Text

    for class_name, files in result.unknown.items():
        line = Text("unknown class ", style="yellow")
        line.append(name(class_name), style="bold yellow")
        line.append(f": {len(files)} files not scored (the model has no such class)")
        console.print(line)
        for path in files[:5]:
            console.print(Text(f"  {name(path)}", style="dim"))
        if len(files) > 5:
            console.print(Text(f"  ... and {len(files) - 5} more", style="dim"))


def print_ood(result: EvalResult, console: Console) -> None:
    """One line on the out-of-distribution score: images that would be answered unknown, accuracy on the rest."""
    from rich.text import Text

    from tlkit.evaluation.coverage import describe

    console.print(Text(describe(result.ood), style="dim" if result.ood is None else ""))
