"""What the side-by-side CPU benchmarks (cpu_numerics, cpu_allocator, frozen_early) write: one markdown section,
its machine line and command, printed and appended to ``--results`` when given."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone


def machine_line(load_at_start: float, rounds: int, command: str, extra: str = "") -> str:
    """When, on what, under which load, how many interleaved rounds, and the command that wrote the table."""
    import torch

    return (f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads; {extra}load average at start {load_at_start:.2f}, "
            f"at end {os.getloadavg()[0]:.2f}; {rounds} interleaved rounds, median; command: `uv run python {command}`\n")


def emit(lines: list[str], results: str | None) -> None:
    """Print the section and append it to ``results`` (a markdown file) when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if results:
        with open(results, "a", encoding="utf-8") as handle:
            handle.write(text)
