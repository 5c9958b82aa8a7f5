"""Optimizer, learning-rate schedule and batches of a stage.

Written once here: which parameters train at which rate (layer-wise decay from the head down),
the warm-up + cosine / constant / one-cycle schedules, and the rule that an epoch never ends on a
lone sample (BatchNorm cannot train on a batch of one).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from tlkit.config import StageConfig

__all__ = ["drops_lone_last", "steps_per_epoch", "shuffled_batches", "param_groups", "build_optimizer",
           "Horizon", "build_scheduler"]


def drops_lone_last(n: int, batch_size: int) -> bool:
    """Whether an epoch over ``n`` samples leaves out its last batch: it would hold a single sample.

    >>> drops_lone_last(33, 32), drops_lone_last(32, 32), drops_lone_last(1, 32)
    (True, False, False)
    """
    return n > batch_size and n % batch_size == 1


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in an epoch over ``n`` samples (at least one).

    >>> steps_per_epoch(33, 32), steps_per_epoch(64, 32), steps_per_epoch(0, 32)
    (1, 2, 1)
    """
    steps = max(1, math.ceil(n / batch_size))
    return steps - 1 if drops_lone_last(n, batch_size) else steps


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, *,
                     sample_weights: torch.Tensor | None = None) -> list[torch.Tensor]:
    """An epoch's batches of indices: a permutation, or draws with replacement by ``sample_weights``."""
    if sample_weights is not None:
        order = torch.multinomial(sample_weights, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    return batches[:-1] if drops_lone_last(n, batch_size) else batches


def param_groups(head: nn.Module, backbone: nn.Module, stage: StageConfig, first_group: int) -> list[dict]:
    """The head at ``stage.lr``, then each trainable layer group from the last down to ``first_group``
    at ``lr * lr_decay ** (distance from the head)``; earliest first, the head's group last."""
    n = backbone.num_groups
    groups = [{"params": list(head.parameters()), "lr": stage.lr}]
    seen = {id(p) for p in groups[0]["params"]}
    for g in range(n - 1, max(first_group, 0) - 1, -1):
        params = [p for _, p in backbone.group_parameters(g) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": stage.lr * stage.lr_decay ** (n - g)})
    groups.reverse()
    for g in groups:
        g["initial_lr"] = g["lr"]
    return groups


def build_optimizer(groups: list[dict], stage: StageConfig) -> torch.optim.Optimizer:
    if stage.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay,
                               nesterov=True)
    return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)


class Horizon:
    """Where a stage's cosine ends (``end()``, in steps, read at every step) and the bends where it moved.

    A time budget moves the end while the stage runs. From the step it moved at, what is left of the
    cosine's progress is spread evenly over the steps left: the learning rate never jumps, it goes on
    falling from where it was and reaches the floor at the new end. With no bend this is the plain
    cosine over ``end()`` steps.

    >>> end = {"steps": 10}
    >>> horizon = Horizon(lambda: end["steps"])
    >>> [round(horizon.progress(s, 0), 2) for s in range(3)]
    [0.0, 0.1, 0.2]
    >>> end["steps"] = 4  # the budget cuts the schedule after step 2
    >>> [round(horizon.progress(s, 0), 2) for s in range(3, 5)], horizon.bends
    ([0.6, 1.0], [(2, 0.2)])
    """

    def __init__(self, end: Callable[[], int]) -> None:
        self.end = end
        self.total: int | None = None
        self.bends: list[tuple[int, float]] = []  # (step, progress there) where the end moved

    def progress(self, step: int, warmup: int) -> float:
        """How far along the cosine ``step`` is (0 to 1), for a schedule whose cosine starts at ``warmup``."""
        total = max(1, self.end())
        if self.total is not None and total != self.total and step - 1 > warmup:
            self.bends.append((step - 1, self._along(step - 1, warmup)))  # the last step laid out the old way
        self.total = total
        return self._along(step, warmup)

    def _along(self, step: int, warmup: int) -> float:
        start, done = self.bends[-1] if self.bends else (warmup, 0.0)
        return min(1.0, done + (1.0 - done) * (step - start) / max(1, (self.total or 1) - start))

    def state_dict(self) -> dict:
        return {"total": self.total, "bends": [[step, progress] for step, progress in self.bends]}

    def load_state_dict(self, state: dict) -> None:
        self.total = None if state.get("total") is None else int(state["total"])
        self.bends = [(int(step), float(progress)) for step, progress in state.get("bends", [])]


def build_scheduler(stage: StageConfig, optimizer: torch.optim.Optimizer, steps: int,
                    epochs: Callable[[], int], *, horizon: Horizon | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The stage's schedule over ``epochs() * steps`` steps, or to ``horizon``'s end. The end is read at
    every step, so a time budget that moves it while the stage runs still ends the cosine at zero,
    without a jump (:class:`Horizon`)."""
    if stage.schedule == "onecycle":  # laid out once: a time budget is refused with it (config)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=max(1, epochs() * steps) + 1)
    warmup = int(stage.warmup_epochs * steps)
    horizon = horizon or Horizon(lambda: epochs() * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if stage.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * horizon.progress(step, warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
