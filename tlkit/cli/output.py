"""Where the ``tlkit`` commands write: the two consoles, tables that fold, raw bytes, one-line errors.

Every ``TlkitError`` becomes one line on stderr and exit code 1 (:func:`friendly`); Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tlkit.errors import TlkitError

#: width of a console that is not a terminal (a pipe, a file): wide enough that tables and paths are
#: never cut or folded, so `tlkit backbones | grep lite0` finds the name
PIPE_WIDTH = 4096


class CommandConsole(Console):
    """A rich console on stdout (or stderr) as wide as the terminal, or :data:`PIPE_WIDTH` when the stream is not one."""

    def __init__(self, *, stderr: bool = False) -> None:
        stream = sys.stderr if stderr else sys.stdout
        super().__init__(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)

    def renew(self) -> None:
        """Set this console up again, as a new one would be, for the streams of this invocation.

        Called before every command, so one object serves every command run in this process (the
        commands' modules import ``out`` and ``err`` once).
        """
        self.__init__(stderr=self.stderr)


out = CommandConsole()
err = CommandConsole(stderr=True)


def friendly(func: Callable) -> Callable:
    """``func`` with a ``TlkitError`` printed as one ``error:`` line on stderr (exit code 1), Ctrl-C as exit code 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TlkitError as exc:
            if getattr(exc, "tlkit_raised_on_rank0", False):
                # several processes: rank 0 prints this error; a moment's wait keeps torchrun from
                # stopping rank 0 (because this rank exited) before it has
                import time

                time.sleep(1.0)
            else:
                message = " ".join(str(exc).split("\n"))
                # the message is text, not markup: `pip install "tlkit[export]"` keeps its brackets
                err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def write_stdout(data: bytes) -> None:
    """Bytes to standard output as they are (file names that are not UTF-8 keep their bytes)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (a test runner's capture)
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))


def folding_table(*columns: str, **options: Any) -> Table:
    """A table whose cells fold on a narrow terminal instead of being cut short with an ellipsis."""
    table = Table(**options)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table
