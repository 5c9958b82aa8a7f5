"""A stage's time budget (``max_minutes``): measured seconds in, a number of epochs out.

The first training step pays for decoding, allocation and compilation; the next few give the
time per step, which lays the schedule out early; the whole first epoch (validation included)
then settles the number. The clock is injected, so the arithmetic is tested with a fake one.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["BUDGET_TIMED_STEPS", "TimeBudget"]

#: training steps timed (after a first, warm-up step) before the budget lays the schedule out
BUDGET_TIMED_STEPS = 8


def _same(value: float) -> float:
    return value


class TimeBudget:
    """How many of ``epochs`` fit in ``max_minutes``; at least one.

    >>> ticks = iter(range(0, 10_000, 10))  # every read of the clock is 10 s later
    >>> budget = TimeBudget(1.5, 8, steps_per_epoch=3, batch_size=8, val_images=0, clock=lambda: next(ticks))
    >>> for _ in range(3):
    ...     budget.after_step()
    >>> budget.epochs  # laid out from 10 s per step: 30 s per epoch
    3
    >>> budget.after_first_epoch()  # the whole epoch measured 40 s (the end-of-epoch read included)
    '  time budget 1.5 min: ~40 s per epoch measured, 2 of 8 epochs'

    ``agree`` makes every process of a distributed run use the same measurement (rank 0's).
    """

    def __init__(self, max_minutes: float, epochs: int, *, steps_per_epoch: int, batch_size: int, val_images: int,
                 clock: Callable[[], float] = time.perf_counter, agree: Callable[[float], float] = _same,
                 timed_steps: int = BUDGET_TIMED_STEPS) -> None:
        self.max_minutes, self.planned, self.epochs = max_minutes, epochs, epochs
        self.steps_per_epoch, self.batch_size, self.val_images = steps_per_epoch, batch_size, val_images
        self.clock, self.agree, self.timed_steps = clock, agree, timed_steps
        self.start = clock()
        self.steps = 0
        self.overhead: float | None = None  # what the first step cost beyond a normal one
        self.settled = False
        self._after_first = self.start

    def after_step(self) -> None:
        """Call after each training step of the first epoch; lays the schedule out once enough are timed."""
        if self.settled:
            return
        now = self.clock()
        self.steps += 1
        if self.steps == 1:
            self._after_first = now
        timed = self.steps - 1
        if self.overhead is not None or timed < min(self.timed_steps, self.steps_per_epoch - 1):
            return
        per_step = self.agree((now - self._after_first) / timed if timed else now - self.start)
        self.overhead = max(0.0, (now - self.start) - self.steps * per_step)
        # validation is a forward pass: about a third of a training step per image
        self._fit(per_step * self.steps_per_epoch + per_step / self.batch_size * self.val_images / 3)

    def after_first_epoch(self) -> str:
        """Settle the number of epochs on the first epoch's measured time; the line to tell the user."""
        if self.overhead is None:
            self.overhead = 0.0
        epoch_seconds = self.agree(self.clock() - self.start - self.overhead)
        fits = self._fit(epoch_seconds)
        self.settled = True
        note = (f"  time budget {self.max_minutes:g} min: ~{epoch_seconds:.0f} s per epoch measured, "
                f"{self.epochs} of {self.planned} epochs")
        if fits < 1:
            note += " (one epoch is over the budget; lower --image-size, or --recipe linear-probe for a run in seconds)"
        return note

    def _fit(self, epoch_seconds: float) -> int:
        fits = int((self.max_minutes * 60 - (self.overhead or 0.0)) // max(epoch_seconds, 1e-9))
        self.epochs = max(1, min(self.planned, fits))
        return fits
