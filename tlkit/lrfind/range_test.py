"""The LR range test itself: a fresh head trained on cached features for a few mini-batches, the rate
rising exponentially every step, until the loss blows up or the range ends.

The stage decides what a step is, as in its training (:mod:`tlkit.train.steps`): its optimizer and
weight decay (:func:`tlkit.train.optim.build_optimizer`), batch size and batch order (an epoch's
order is the one the stage's epoch of that number draws), loss with label smoothing and class
weighting, mixup and gradient clipping. Every random draw is seeded from (seed, stage), and the
caller's random state is left as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from tlkit.config import StageConfig
from tlkit.errors import ConfigError
from tlkit.lrfind.rules import BETA, END_LR, START_LR, STEPS, STOP_FACTOR, Smoother, lr_at
from tlkit.train.losses import balanced_class_weights, classification_loss, mix_batch
from tlkit.train.optim import build_optimizer, shuffled_batches
from tlkit.train.stage import stage_seed

__all__ = ["Sweep", "Curve", "range_test"]


@dataclass(frozen=True)
class Sweep:
    """The range swept and when to stop (fastai's defaults)."""

    start_lr: float = START_LR
    end_lr: float = END_LR
    steps: int = STEPS
    stop_factor: float = STOP_FACTOR
    beta: float = BETA

    def check(self) -> Sweep:
        """ConfigError for a range that cannot be swept."""
        for name in ("start_lr", "end_lr", "stop_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.end_lr <= self.start_lr:
            raise ConfigError(f"end_lr ({self.end_lr:g}) must be above start_lr ({self.start_lr:g}): the rate rises")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 10:
            raise ConfigError(f"steps must be a whole number of at least 10 (the default is {STEPS}), got {self.steps!r}")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"beta (the smoothing) must be in [0, 1), got {self.beta!r}")
        return self

    def to_dict(self) -> dict:
        return {"start_lr": self.start_lr, "end_lr": self.end_lr, "steps": self.steps,
                "stop_factor": self.stop_factor, "beta": self.beta}


@dataclass
class Curve:
    """Rates, mini-batch losses and smoothed losses of the steps taken, and why the test ended."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stopped: str  # "diverged" (smoothed loss above stop_factor x its minimum), "non-finite loss", "end of range"


def _epochs(n: int, stage: StageConfig, seed: int, index: int,
            sample_weights: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Generator]]:
    """Mini-batches of the stage's epochs 0, 1, 2, ... in their orders, each with its epoch's generator."""
    epoch = 0
    while True:
        gen = torch.Generator().manual_seed(stage_seed(seed, index, epoch))
        for batch in shuffled_batches(n, stage.batch_size, gen, sample_weights=sample_weights):
            yield batch, gen
        epoch += 1


def range_test(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, stage: StageConfig, sweep: Sweep, *,
               num_classes: int, seed: int, stage_index: int, device: torch.device) -> Curve:
    """Train ``head`` (changed in place) on ``features`` for up to ``sweep.steps`` mini-batches, one rate each."""
    head = head.to(device).train()
    optimizer = build_optimizer([{"params": list(head.parameters()), "lr": sweep.start_lr}], stage)
    class_weights = balanced_class_weights(labels, num_classes).to(device) if stage.class_weighting == "balanced" else None
    sample_weights = None
    if stage.class_weighting == "sampler":
        sample_weights = 1.0 / torch.bincount(labels, minlength=num_classes).float().clamp(min=1)[labels]
    x_all, y_all = features.to(device), labels.to(device)
    smoother, best = Smoother(sweep.beta), math.inf
    curve = Curve([], [], [], "end of range")
    batches = _epochs(len(labels), stage, seed, stage_index, sample_weights)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(stage_seed(seed, stage_index, 104729))  # dropout, as the stage starts (tlkit.train.stage)
        for step in range(sweep.steps):
            lr = lr_at(step, sweep.steps, sweep.start_lr, sweep.end_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch, gen = next(batches)
            x, y = mix_batch(x_all[batch.to(device)], y_all[batch.to(device)], num_classes, mixup=stage.mixup,
                             cutmix=stage.cutmix, generator=gen)
            loss = classification_loss(head(x), y, label_smoothing=stage.label_smoothing, class_weights=class_weights)
            value = float(loss.detach())
            if not math.isfinite(value):
                curve.stopped = "non-finite loss"
                break
            smoothed = smoother.add(value)
            curve.lrs.append(lr)
            curve.losses.append(value)
            curve.smoothed.append(smoothed)
            if smoothed > sweep.stop_factor * best:
                curve.stopped = "diverged"
                break
            best = min(best, smoothed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if stage.grad_clip:
                torch.nn.utils.clip_grad_norm_(list(head.parameters()), stage.grad_clip)
            optimizer.step()
    return curve
