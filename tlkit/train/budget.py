"""A stage's time budget (``max_minutes``): measured seconds in, where the stage ends (epochs, steps) out.

The first training step pays for decoding, allocation and compilation; the next few give the
time per step, which lays the schedule out early; the whole first epoch (validation included)
then settles the number of epochs. After every later epoch the plan is measured again: a busy
machine that calms down gets its epochs back, one that gets busier gives some up. When not even
one epoch fits, the stage runs the steps that do and ends there (a partial epoch). The clock is
injected, so the arithmetic is tested with a fake one.

Which epoch time a re-plan trusts: the slower of the latest epoch and the median of the last three.
A slowdown is believed at once (the budget is a promise); a speed-up once two of the last three
epochs show it, so one lucky epoch does not lengthen a schedule that the next slow one must cut.
Stable timings give exactly the first epoch's plan.

With progressive resizing an epoch's cost (``cost``: its share of a full-size epoch) varies: each
measured epoch is scaled to the full size, and the epochs that fit are counted by their own costs.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["BUDGET_TIMED_STEPS", "TimeBudget"]

#: training steps timed (after a first, warm-up step) before the budget lays the schedule out
BUDGET_TIMED_STEPS = 8
#: a budget whose first steps have already used this share of it lays the schedule out at once
HURRIED_SHARE = 0.1
_HINT = "lower --image-size, or --recipe linear-probe for a run in seconds"


def _same(value: float) -> float:
    return value


def _flat(epoch: int, epochs: int) -> float:
    return 1.0


def _floor(x: float) -> int:
    """``floor(x)``, forgiving the rounding of a sum of measured seconds (3 epochs of 30 s fit in 90 s)."""
    return int(x + 1e-9) if x > 0 else 0


class TimeBudget:
    """How many of ``epochs`` fit in ``max_minutes`` (at least one, or the steps of one that fit).

    >>> ticks = iter(range(0, 10_000, 10))  # every read of the clock is 10 s later
    >>> budget = TimeBudget(1.5, 8, steps_per_epoch=3, batch_size=8, val_images=0, clock=lambda: next(ticks))
    >>> for _ in range(3):
    ...     budget.after_step()
    >>> budget.epochs  # laid out from 10 s per step: 30 s per epoch
    3
    >>> budget.after_epoch()  # the whole epoch measured 40 s (the end-of-epoch read included)
    '  time budget 1.5 min: ~40 s per epoch measured, 2 of 8 epochs'
    >>> for _ in range(3):
    ...     budget.after_step()
    >>> budget.after_epoch() is None  # 40 s again: the plan holds, nothing to say
    True

    ``total_steps`` is where the stage's schedule ends; the stage stops there. ``agree`` makes every
    process of a distributed run use the same measurements (rank 0's).
    """

    def __init__(self, max_minutes: float, epochs: int, *, steps_per_epoch: int, batch_size: int, val_images: int,
                 clock: Callable[[], float] = time.perf_counter, agree: Callable = _same,
                 timed_steps: int = BUDGET_TIMED_STEPS, hurry: bool = True,
                 cost: Callable[[int, int], float] = _flat) -> None:
        self.max_minutes, self.planned, self.epochs = max_minutes, epochs, epochs
        self.steps_per_epoch, self.batch_size, self.val_images = steps_per_epoch, batch_size, val_images
        self.clock, self.agree, self.timed_steps, self.hurry = clock, agree, timed_steps, hurry
        self.cost = cost  # (epoch, epochs) -> that epoch's cost against a full one (progressive resizing)
        self.total_steps = epochs * steps_per_epoch
        self.start = clock()
        self.steps = 0
        self.overhead: float | None = None  # what the first step cost beyond a normal one
        self.settled = False  # the first epoch has been measured
        self.epoch_seconds: list[float] = []  # each finished epoch (the first without its overhead)
        self._full_seconds: list[float] = []  # the same, scaled to what the epoch would cost at the full size
        self._after_first = self._last_step = self.start
        self._step_seconds: list[float] = []  # each timed step of the first epoch (after the first)
        self._epoch_end = self.start

    @property
    def seconds(self) -> float:
        return self.max_minutes * 60

    def after_step(self) -> str | None:
        """Call after each training step: one clock read (no device sync). During the first epoch it lays
        the schedule out once enough steps are timed; the line to tell the user when it cuts that epoch."""
        now = self.clock()
        self.steps += 1
        if self.settled or self.overhead is not None:
            return None
        if self.steps == 1:
            self._after_first = now
        else:
            self._step_seconds.append(now - self._last_step)
        self._last_step = now
        timed = self.steps - 1
        # slow steps lay the schedule out sooner (a partial epoch then keeps more of its steps); ``hurry`` is
        # off in a distributed run, whose processes must agree at the same step: they count steps alone
        hurried = self.hurry and timed >= 2 and now - self.start >= HURRIED_SHARE * self.seconds
        if timed < min(self.timed_steps, self.steps_per_epoch - 1) and not hurried:
            return None
        # the median step: one slow step (a lazy first decode, a burst of load) must not shrink the plan
        per_step, elapsed = self.agree((statistics.median(self._step_seconds) if timed else now - self.start,
                                        now - self.start))
        self.overhead = max(0.0, elapsed - self.steps * per_step)
        # validation is a forward pass: about a third of a training step per image
        validation = per_step / self.batch_size * self.val_images / 3
        if self._fit(per_step * self.steps_per_epoch / self.cost(0, self.epochs) + validation) >= 1:
            # laid out for at least two epochs until the first one is measured: a cosine laid out for one would
            # reach its floor before that measurement could lengthen it (it can shorten one smoothly)
            self.epochs = min(self.planned, max(2, self.epochs))
            self.total_steps = self.epochs * self.steps_per_epoch
            return None
        fit = self.steps + _floor((self.seconds - elapsed - validation) / per_step)
        self.total_steps = max(self.steps, min(self.steps_per_epoch, fit))
        if self.total_steps >= self.steps_per_epoch:
            return None
        return (f"  time budget {self.max_minutes:g} min: one epoch (~{per_step * self.steps_per_epoch + validation:.0f}"
                f" s) does not fit; {self.total_steps} of its {self.steps_per_epoch} steps do, and the stage ends "
                f"after them with its schedule fitted to them ({_HINT})")

    def after_epoch(self) -> str | None:
        """Call after each epoch (validation included): re-plan from the epochs measured so far.
        The line to tell the user: after the first epoch always, later only when the plan changes."""
        now = self.clock()
        if not self.settled:
            return self._after_first_epoch(now)
        seconds = float(self.agree(now - self._epoch_end))
        self._epoch_end = now
        self.epoch_seconds.append(seconds)
        done = len(self.epoch_seconds)
        self._full_seconds.append(seconds / self.cost(done - 1, self.epochs))
        if done >= self.epochs:  # the plan ended with this epoch: its cosine is at the floor, and more epochs
            return None          # would run at a zero learning rate (a bend from the floor stays there)
        full = self._full_seconds[-1]
        trusted = max(full, statistics.median(self._full_seconds[-3:]))
        left = self.seconds - (self.overhead or 0.0) - sum(self.epoch_seconds)
        epochs = self._epochs_fitting(done, left / max(trusted, 1e-9))
        if epochs == self.epochs:
            return None
        self.epochs, self.total_steps = epochs, epochs * self.steps_per_epoch
        end = ", so the stage ends here" if epochs == done else " now fit"
        took = f"{seconds:.0f} s (first {self.epoch_seconds[0]:.0f} s)"
        if self.cost is not _flat:  # epochs of different sizes: compared at the full size
            took = f"{seconds:.0f} s, ~{full:.0f} s at the full size (first ~{self._full_seconds[0]:.0f} s)"
        return f"  budget: epoch {done} took {took}: {epochs} of {self.planned} epochs{end}"

    def after_first_epoch(self) -> str:
        """The first epoch's :meth:`after_epoch` (kept for callers of tlkit 0.2)."""
        return self.after_epoch() or ""

    def _after_first_epoch(self, now: float) -> str | None:
        if self.overhead is None:
            self.overhead = 0.0
        epoch_seconds = float(self.agree(now - self.start)) - self.overhead
        self.settled, self._epoch_end = True, now
        self.epoch_seconds.append(epoch_seconds)
        cost = self.cost(0, self.epochs)
        self._full_seconds.append(epoch_seconds / cost)
        if self.total_steps < self.steps_per_epoch:  # a partial epoch: said when it was laid out
            return None
        fits = self._fit(epoch_seconds / cost)
        scaled = f" (~{epoch_seconds / cost:.0f} s at the full size)" if cost != 1 else ""
        note = (f"  time budget {self.max_minutes:g} min: ~{epoch_seconds:.0f} s per epoch measured{scaled}, "
                f"{self.epochs} of {self.planned} epochs")
        if fits < 1:
            note += f" (one epoch is over the budget; {_HINT})"
        return note

    def _fit(self, epoch_seconds: float) -> int:
        """Lay the stage out from the first measurement of an epoch at the full size; how many epochs fit."""
        fits = self._epochs_fitting(0, (self.seconds - (self.overhead or 0.0)) / max(epoch_seconds, 1e-9))
        self.epochs = max(1, fits)
        self.total_steps = self.epochs * self.steps_per_epoch
        return fits

    def _epochs_fitting(self, done: int, room: float) -> int:
        """The most epochs (at least ``done``, at most the planned ones) whose epochs from ``done`` on fit in
        ``room`` full-size epochs; each epoch costs :attr:`cost` of one (a flat 1 without progressive resizing)."""
        if self.cost is _flat:
            return max(done, min(self.planned, done + _floor(room)))
        best = done
        for epochs in range(done + 1, self.planned + 1):
            if sum(self.cost(e, epochs) for e in range(done, epochs)) <= room + 1e-9:
                best = epochs
        return best

    def state_dict(self) -> dict:
        """The plan and what it was measured from: recorded in the checkpoint, so a resumed stage keeps it."""
        return {"max_minutes": self.max_minutes, "epochs": self.epochs, "total_steps": self.total_steps,
                "overhead": self.overhead or 0.0, "epoch_seconds": list(self.epoch_seconds)}
