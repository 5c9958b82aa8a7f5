"""Progressive resizing (a stage's ``start_size``): early epochs of an image stage train on smaller
crops, which cost about the square of their size, and the size rises to the full input size by the
middle of the stage, so the later half (and the schedule's low-learning-rate tail) sees what
prediction will see. Validation is always at the full size.

>>> [epoch_size(224, 0.5, e, 6) for e in range(6)]
[128, 160, 192, 224, 224, 224]
>>> [round(relative_cost(224, 0.5, e, 6), 2) for e in range(6)]
[0.33, 0.51, 0.73, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math

__all__ = ["MIN_SIZE", "SIZE_STEP", "epoch_size", "relative_cost"]

#: crop sizes are rounded to a multiple of this (the networks' strides): 224 -> 128, 160, 192, 224
SIZE_STEP = 32
#: no crop below this: at 32 px a stride-32 network's last map is a single cell, another regime
#: altogether (an input of 64 px or less is not resized at all)
MIN_SIZE = 64


def epoch_size(full: int, start: float | None, epoch: int, epochs: int) -> int:
    """The training crop of ``epoch`` (0-based) of ``epochs``: ``start`` x ``full`` at first, rising linearly
    to ``full`` at the middle epoch and staying there. Without ``start`` (or at 1) always ``full``."""
    if start is None or start >= 1 or full <= MIN_SIZE:
        return full
    rise = max(1, math.ceil(epochs / 2))  # epochs until the full size
    share = min(1.0, start + (1.0 - start) * epoch / rise)
    size = int(round(full * share / SIZE_STEP)) * SIZE_STEP
    return max(MIN_SIZE, min(full, size))


def relative_cost(full: int, start: float | None, epoch: int, epochs: int) -> float:
    """What an epoch at :func:`epoch_size` costs against one at the full size (the square of the sizes)."""
    return (epoch_size(full, start, epoch, epochs) / full) ** 2
