"""tlkit.train.budget.TimeBudget: measured seconds -> epochs, with a fake clock (re-planning after every
epoch and partial epochs: tests/test_budget_replan.py)."""

from __future__ import annotations

import pytest

from tlkit.train.budget import TimeBudget


class FakeClock:
    """Reads as ``now``; a test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _first_epoch(budget: TimeBudget, clock: FakeClock, step_seconds: list[float]) -> None:
    for seconds in step_seconds:
        clock.now += seconds
        budget.after_step()


def test_the_first_step_is_overhead_and_the_next_ones_lay_the_schedule_out() -> None:
    clock = FakeClock()
    budget = TimeBudget(2.0, 50, steps_per_epoch=10, batch_size=32, val_images=0, clock=clock, timed_steps=3)
    _first_epoch(budget, clock, [30.0, 1.0, 1.0, 1.0])  # a slow first step (decoding, compiling), then 1 s each
    assert budget.overhead == pytest.approx(29.0)
    assert budget.epochs == 9  # (120 s - 29 s overhead) // 10 s per epoch
    _first_epoch(budget, clock, [1.0] * 6)
    note = budget.after_epoch()  # the epoch took 39 s: 29 overhead + 10
    assert budget.settled and budget.epochs == 9
    assert note == "  time budget 2 min: ~10 s per epoch measured, 9 of 50 epochs"


def test_validation_counts_in_the_estimate() -> None:
    clock = FakeClock()
    budget = TimeBudget(1.0, 50, steps_per_epoch=4, batch_size=10, val_images=300, clock=clock, timed_steps=2)
    _first_epoch(budget, clock, [1.0, 1.0, 1.0])
    # 4 steps + 300 val images at a third of a step per 10 images: 4 + 10 = 14 s per epoch
    assert budget.epochs == int((60 - 0) // 14)


def test_never_more_than_planned_never_fewer_than_one() -> None:
    clock = FakeClock()
    fast = TimeBudget(10.0, 3, steps_per_epoch=2, batch_size=8, val_images=0, clock=clock)
    _first_epoch(fast, clock, [0.01, 0.01])
    fast.after_first_epoch()
    assert fast.epochs == 3
    slow = TimeBudget(0.5, 3, steps_per_epoch=2, batch_size=8, val_images=0, clock=clock)
    _first_epoch(slow, clock, [100.0, 100.0])
    assert "one epoch is over the budget" in slow.after_first_epoch() and slow.epochs == 1


def test_agree_gives_every_process_rank_0s_figures() -> None:
    """Every decision is made from agreed figures (one exchange when the schedule is laid out, one per
    epoch), so every process of a distributed run ends the stage at the same step."""
    clock = FakeClock()
    agreed = []

    def agree(value):  # noqa: ANN001, ANN202
        agreed.append(value)
        return (7.0, 7.0) if isinstance(value, tuple) else 7.0

    budget = TimeBudget(1.0, 10, steps_per_epoch=1, batch_size=8, val_images=0, clock=clock, agree=agree)
    clock.now += 5.0
    budget.after_step()
    budget.after_epoch()
    assert agreed == [(5.0, 5.0), 5.0] and budget.epochs == int(60 // 7.0)
    clock.now += 5.0
    budget.after_step()
    assert budget.after_epoch() is None and len(agreed) == 3  # 7 s again: the plan holds
