"""Progress reporting: the interface training talks to, a silent one, and rich progress bars and epoch
lines for the terminal and Jupyter (no computation here).

Where nothing can be redrawn (a CI log, ``2>file``, Jupyter without ipywidgets) there are no live bars:
extraction bars print once when done, training epochs print their one line each, and no control
characters are written.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["Reporter", "SilentReporter", "RichReporter", "default_reporter", "batch_progress", "close_progress",
           "BAR_SECONDS", "BAR_DELAY"]

#: a training bar is redrawn at most this often (the step loop only calls a function that reads a clock)
BAR_SECONDS = 0.2
#: and shown only for epochs that last longer than this: epochs on cached features take milliseconds
BAR_DELAY = 0.5


class Reporter(Protocol):
    """What a run tells: messages, progress of a task (``task`` returns ``tick(done, total)`` or None), epochs.

    A reporter may also have ``batches(description, total)``, returning ``tick(done, total, loss)`` (with a
    ``close()``) for the steps of a training epoch, or None; one without it shows no per-batch progress.
    """

    def message(self, text: str) -> None: ...
    def task(self, description: str, total: int) -> Callable[[int, int], None] | None: ...
    def epoch(self, record: dict) -> None: ...


class SilentReporter:
    """Tells nothing (``verbose=False`` in Python, and every process but rank 0)."""

    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int) -> None:
        return None

    def epoch(self, record: dict) -> None:
        pass

    def batches(self, description: str, total: int) -> None:
        return None


def batch_progress(reporter: object, description: str, total: int) -> Callable[[int, int, float], None] | None:
    """``reporter``'s per-batch tick for a training epoch, or None when it shows none."""
    make = getattr(reporter, "batches", None)
    return make(description, total) if make is not None else None


def close_progress(tick: object) -> None:
    close = getattr(tick, "close", None)
    if close is not None:
        close()


def _can_redraw(console: Console) -> bool:
    """Whether a live bar can be drawn: a real terminal, or Jupyter with ipywidgets (rich needs it there)."""
    if console.is_jupyter:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return False
        return True
    return console.is_terminal and not console.is_dumb_terminal


class _BatchBar:
    """One training epoch's bar: steps, running loss, elapsed and ETA. Started only once the epoch has
    lasted ``delay`` seconds, updated at most every ``every`` seconds, gone when the epoch ends (its
    one line follows)."""

    def __init__(self, console: Console, description: str, total: int, clock: Callable[[], float],
                 every: float, delay: float) -> None:
        self.console, self.description, self.total, self.clock, self.every = console, description, total, clock, every
        self.next = clock() + delay
        self.progress: Progress | None = None
        self.task_id = None
        self.updates = 0

    def __call__(self, done: int, total: int, loss: float) -> None:
        now = self.clock()
        if now < self.next:
            return
        self.next = now + self.every
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.task_id = self.progress.add_task(self.description, total=total, completed=done, loss=loss)
            self.progress.start()
        self.progress.update(self.task_id, completed=done, total=total, loss=loss)
        self.updates += 1

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class RichReporter:
    """Shows extraction progress bars, a bar per training epoch (steps, running loss, ETA) and one line
    per epoch. Works in a terminal, in Jupyter (rich detects it) and in a log file (lines only)."""

    def __init__(self, console: Console | None = None, *, clock: Callable[[], float] = time.monotonic,
                 bar_seconds: float = BAR_SECONDS, bar_delay: float = BAR_DELAY) -> None:
        self.console = console or Console(stderr=True)
        self.clock, self.bar_seconds, self.bar_delay = clock, bar_seconds, bar_delay
        self.live = _can_redraw(self.console)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def task(self, description: str, total: int):  # noqa: ANN201
        if self.console.is_jupyter and not self.live:
            return None  # rich would warn at every refresh
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console, transient=False)
        task_id = progress.add_task(description, total=total)
        state = {"started": False}

        def tick(done: int, total_: int) -> None:
            if not state["started"]:
                progress.start()
                state["started"] = True
            progress.update(task_id, completed=done, total=total_)
            if done >= total_:
                progress.stop()

        return tick

    def batches(self, description: str, total: int) -> _BatchBar | None:
        """The tick of a training epoch's bar; None where nothing can be redrawn (the epoch line says it all)."""
        if not self.live:
            return None
        return _BatchBar(self.console, description, total, self.clock, self.bar_seconds, self.bar_delay)

    def epoch(self, record: dict) -> None:
        parts = [f"stage {record['stage'] + 1} epoch {record['epoch'] + 1}", f"loss {record['train_loss']:.4f}"]
        if "val_accuracy" in record:
            parts += [f"val acc {record['val_accuracy']:.4f}", f"val loss {record['val_loss']:.4f}"]
        parts.append(f"{record['seconds']:.1f}s")
        self.console.print("  ".join(parts), markup=False, highlight=False)


def default_reporter(verbose: bool) -> RichReporter | SilentReporter:
    """What ``tlkit.finetune`` reports with when given no reporter: rich progress on stderr (a terminal or a
    notebook) when ``verbose``, nothing otherwise."""
    return RichReporter() if verbose else SilentReporter()
