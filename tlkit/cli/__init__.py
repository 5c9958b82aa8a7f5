"""The ``tlkit`` command: thin commands over the public Python API.

Every ``TlkitError`` becomes one line on stderr and exit code 1; Ctrl-C exits 130 after saying how
to resume. This module holds the typer ``app`` and registers the commands in the order its help
lists them; they live in :mod:`tlkit.cli.train_commands` (check, recipes, finetune, demo),
:mod:`tlkit.cli.model_commands` (backbones, summary), :mod:`tlkit.cli.run_commands` (evaluate,
predict, explain, compare), :mod:`tlkit.cli.deploy_commands` (export, embed) and
:mod:`tlkit.cli.doctor_commands` (doctor), :mod:`tlkit.cli.sweep_commands` (sweep) and
:mod:`tlkit.cli.lrfind_commands` (lr-find), and write through :mod:`tlkit.cli.output`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tlkit.cli.deploy_commands import embed, export
from tlkit.cli.doctor_commands import doctor_command
from tlkit.cli.lrfind_commands import lr_find_command
from tlkit.cli.model_commands import backbones, summary
from tlkit.cli.output import PIPE_WIDTH, err, friendly, out
from tlkit.cli.run_commands import compare, evaluate, explain, predict
from tlkit.cli.sweep_commands import sweep_command
from tlkit.cli.train_commands import check_cmd, demo, finetune, recipes

__all__ = ["PIPE_WIDTH", "app", "err", "main", "out"]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="tlkit: transfer learning for image classification on small domain datasets.")


def _print_version(value: bool) -> None:
    if value:
        from tlkit._version import __version__

        out.print(f"tlkit {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _consoles(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print tlkit's version and exit.")] = False,
) -> None:
    """tlkit: transfer learning for image classification on small domain datasets."""
    out.renew()  # set up again per command, for the streams of this invocation
    err.renew()


app.command()(backbones)
app.command("check")(check_cmd)
app.command()(recipes)
app.command()(finetune)
app.command()(evaluate)
app.command()(predict)
app.command()(explain)
app.command()(summary)
app.command()(compare)
app.command()(export)
app.command()(embed)
app.command()(demo)
app.command("doctor")(friendly(doctor_command))
app.command("sweep")(friendly(sweep_command))
app.command("lr-find")(friendly(lr_find_command))


#: width of the help text when stdout is not a terminal (a pipe, a file, a CI log): rich's default of 80
#: columns cut option defaults short (``efficientnet_lite…``); TERMINAL_WIDTH still wins
HELP_WIDTH = 120


def help_width() -> None:
    """Give typer's help console :data:`HELP_WIDTH` columns off a terminal, unless TERMINAL_WIDTH says otherwise."""
    import os
    import sys

    import typer.rich_utils

    if not os.environ.get("TERMINAL_WIDTH") and not sys.stdout.isatty():
        typer.rich_utils.MAX_WIDTH = HELP_WIDTH


def main() -> None:
    """The ``tlkit`` console script."""
    help_width()
    app()
