"""The LR range test's arithmetic: the rates it sweeps, the smoothed loss, when it stops, what it suggests.

Plain numbers (no torch, nothing drawn), so each rule is tested on its own. The rules are fastai's
(``lr_find``): an exponential sweep, a bias-corrected exponential moving average of the loss
(``beta`` 0.98), a stop once the smoothed loss is above 4x its minimum, and a suggestion read off
the smoothed curve with its first tenth and last five points left out (the start is noise, the end
is the blow-up).

>>> round(lr_at(0, 100, 1e-7, 10.0), 12), round(lr_at(99, 100, 1e-7, 10.0), 6)
(1e-07, 10.0)
>>> valley_index([3.0, 2.9, 2.5, 1.8, 1.2, 0.9, 0.8, 2.0, 9.0])
2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

#: the sweep: from START_LR to END_LR over STEPS mini-batches, exponentially (fastai's defaults)
START_LR = 1e-7
END_LR = 10.0
STEPS = 100
#: the test stops once the smoothed loss is above STOP_FACTOR x its minimum
STOP_FACTOR = 4.0
#: weight of the past in the smoothed loss
BETA = 0.98
#: the recipe's rate is "far" from the suggestion when more than FAR_FACTOR times above or below it
FAR_FACTOR = 10.0
#: the rule :attr:`Suggestions.suggested` follows
RULE = "valley"
#: a fall smaller than this share of the curve's range does not extend a valley (:func:`valley_index`)
VALLEY_TOLERANCE = 0.01


def lr_at(step: int, steps: int, start: float, end: float) -> float:
    """The learning rate of ``step`` (0-based) of a sweep from ``start`` to ``end`` over ``steps`` steps."""
    return start * (end / start) ** (step / max(1, steps - 1))


class Smoother:
    """The bias-corrected exponential moving average of the loss (the first values are not pulled to 0)."""

    def __init__(self, beta: float = BETA) -> None:
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, loss: float) -> float:
        """Take one more loss; returns the smoothed loss so far."""
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta ** self.count)


def smooth(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """:class:`Smoother` over a whole curve.

    >>> [round(v, 3) for v in smooth([1.0, 1.0, 4.0], beta=0.5)]
    [1.0, 1.0, 2.714]
    """
    smoother = Smoother(beta)
    return [smoother.add(v) for v in losses]


def window(points: int, steps: int) -> slice:
    """The points the rules read: without the first tenth of the planned steps and the last five,
    when at least ten points are left; else every point (a test that stopped very early)."""
    start, stop = steps // 10, points - 5
    return slice(start, stop) if stop - start >= 10 else slice(0, points)


def valley_index(losses: Sequence[float], tolerance: float = 0.0) -> int:
    """fastai's 'valley' (``fastai.callback.schedule.valley``): the longest decreasing subsequence of the
    loss, and the point half-way along it (a third and a half of a third, rounded down each), where
    the loss still falls and is far from where it turns up.

    One change: a point counts as lower only when it is lower by more than ``tolerance``. With no noise
    (one batch holds the whole training split, so every step sees the same batch) the flat start of
    the curve falls by a hair every step and fastai's rule takes it as part of the valley, which puts
    the suggestion on the plateau; :func:`suggest` passes 1% of the curve's range, which leaves noisy
    curves (where the start is not monotone anyway) as fastai reads them.
    """
    n = len(losses)
    runs = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] - tolerance and runs[i] < runs[j] + 1:
                runs[i] = runs[j] + 1
            if runs[end] < runs[i]:
                end = i
                start = end - runs[end]
    third = (end - start) / 3
    return max(0, start + int(third) + int(third / 2))


def steepest_index(lrs: Sequence[float], losses: Sequence[float]) -> int | None:
    """Where the loss falls fastest per factor of learning rate (None with fewer than two points)."""
    if len(losses) < 2:
        return None
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(losses) - 1)]
    return min(range(len(slopes)), key=slopes.__getitem__)


@dataclass(frozen=True)
class Suggestions:
    """Learning rates read off a smoothed curve by three rules users know; :attr:`suggested` is the valley."""

    valley: float
    steepest: float | None  # the steepest fall
    min_loss: float  # the rate of the lowest smoothed loss (too high to train at: the loss blows up just after)
    min_loss_over_10: float  # min_loss / 10, fastai's older rule

    @property
    def suggested(self) -> float:
        return self.valley

    def to_dict(self) -> dict[str, float | None]:
        return {"valley": self.valley, "steepest": self.steepest, "min_loss": self.min_loss,
                "min_loss_over_10": self.min_loss_over_10}


def suggest(lrs: Sequence[float], smoothed: Sequence[float], steps: int) -> Suggestions:
    """The three rules on the :func:`window` of a smoothed curve (at least one point)."""
    part = window(len(smoothed), steps)
    xs, ys = list(lrs[part]), list(smoothed[part])
    lowest = min(range(len(ys)), key=ys.__getitem__)
    steep = steepest_index(xs, ys)
    tolerance = VALLEY_TOLERANCE * (max(ys) - min(ys))
    return Suggestions(valley=xs[valley_index(ys, tolerance)], steepest=None if steep is None else xs[steep],
                       min_loss=xs[lowest], min_loss_over_10=xs[lowest] / 10)


def short(value: float) -> str:
    """A rate with two significant digits, as one types it.

    >>> short(0.0031623), short(0.002), short(0.095), short(2.0), short(4e-05)
    ('3.2e-3', '2e-3', '0.095', '2', '4e-5')
    """
    if 0.01 <= value < 1000:
        return f"{value:.2g}"
    mantissa, _, exponent = f"{value:.1e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def is_far(recipe_lr: float, suggested: float, factor: float = FAR_FACTOR) -> bool:
    """Whether the recipe's rate is more than ``factor`` times above or below the suggestion."""
    return recipe_lr > suggested * factor or recipe_lr * factor < suggested


def option_for(value: float, stage_index: int, stages: int) -> str:
    """The ``tlkit finetune`` option that sets this stage's rate: ``--lr`` for a one-stage recipe (it sets
    every stage), else ``--set stages.INDEX.lr=``.

    >>> option_for(0.005, 0, 1), option_for(0.005, 0, 2)
    ('--lr 5e-3', '--set stages.0.lr=5e-3')
    """
    return f"--lr {short(value)}" if stages == 1 else f"--set stages.{stage_index}.lr={short(value)}"


def advice(recipe_lr: float, suggested: float, option: str) -> str:
    """One sentence: how the recipe's rate compares with the suggestion, and ``option`` (what sets the
    suggested rate, :func:`option_for`) when it is far.

    >>> advice(2.0, 0.005, "--lr 5e-3")
    "the recipe's rate 2 is 400x the suggested 5e-3: too high; try --lr 5e-3"
    >>> advice(0.002, 0.005, "--lr 5e-3")
    "the recipe's rate 2e-3 is within 10x of the suggested 5e-3 (0.4x): keep it"
    """
    ratio = recipe_lr / suggested
    if ratio > FAR_FACTOR:
        return (f"the recipe's rate {short(recipe_lr)} is {ratio:.0f}x the suggested {short(suggested)}: "
                f"too high; try {option}")
    if ratio * FAR_FACTOR < 1:
        return (f"the recipe's rate {short(recipe_lr)} is 1/{1 / ratio:.0f} of the suggested {short(suggested)}: "
                f"too low; try {option}")
    return (f"the recipe's rate {short(recipe_lr)} is within {FAR_FACTOR:.0f}x of the suggested {short(suggested)} "
            f"({ratio:.2g}x): keep it")
