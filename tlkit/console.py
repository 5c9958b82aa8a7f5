"""Progress reporting: the interface training talks to, a silent one, and rich progress bars and epoch
lines for the terminal (no computation here)."""

from __future__ import annotations

from typing import Callable, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter(Protocol):
    """What a run tells: messages, progress of a task (``task`` returns ``tick(done, total)`` or None), epochs."""

    def message(self, text: str) -> None: ...
    def task(self, description: str, total: int) -> Callable[[int, int], None] | None: ...
    def epoch(self, record: dict) -> None: ...


class SilentReporter:
    """Tells nothing (the default in Python, and every process but rank 0)."""

    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int) -> None:
        return None

    def epoch(self, record: dict) -> None:
        pass


class RichReporter:
    """Shows extraction progress bars and one line per epoch."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def task(self, description: str, total: int):  # noqa: ANN201
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

    def epoch(self, record: dict) -> None:
        parts = [f"stage {record['stage'] + 1} epoch {record['epoch'] + 1}", f"loss {record['train_loss']:.4f}"]
        if "val_accuracy" in record:
            parts += [f"val acc {record['val_accuracy']:.4f}", f"val loss {record['val_loss']:.4f}"]
        parts.append(f"{record['seconds']:.1f}s")
        self.console.print("  ".join(parts), markup=False, highlight=False)
