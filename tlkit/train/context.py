"""What the parts of a training run share: the run's context (model, data, services) and one stage's plan.

Plain dataclasses at the bottom of the chain: :mod:`tlkit.train.steps` and :mod:`tlkit.train.stage`
use them, :mod:`tlkit.train.pipeline` builds them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from tlkit.config import RunConfig, StageConfig
from tlkit.data import Manifest
from tlkit.models.transfer import TransferModel
from tlkit.rundir import RunDir
from tlkit.train import distributed
from tlkit.train.activations import ActivationCache
from tlkit.train.budget import TimeBudget
from tlkit.train.checkpoint import Checkpointer
from tlkit.train.image_feed import ImageFeed
from tlkit.train.optim import Horizon
from tlkit.train.selection import BestWeights
from tlkit.train.validation import Predictor

__all__ = ["RunContext", "StagePlan"]


@dataclass
class RunContext:
    """What every stage of a run shares: the model, its data and the run's services."""

    cfg: RunConfig
    model: TransferModel
    manifest: Manifest
    run: RunDir
    device: torch.device
    reporter: Any
    dist: distributed.Distributed
    activations: ActivationCache
    feed: ImageFeed
    predictor: Predictor
    checkpointer: Checkpointer
    clock: Callable[[], float] = time.perf_counter  # the time budget's clock
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)  # which stage and epoch the final weights come from, with their validation
    net: nn.Module | None = None  # what image stages train: the model, or the model in DDP


@dataclass
class StagePlan:
    index: int
    stage: StageConfig
    k: int  # the first group the inputs enter: 0 = images
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    views: torch.Tensor  # (views, N, ...) cached activations; empty for an image stage
    val_inputs: torch.Tensor | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    class_weights: torch.Tensor | None
    keys: set[str]  # state-dict keys the stage can change
    selection: BestWeights
    budget: TimeBudget | None
    epochs: int
    start_epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 1
    horizon: Horizon | None = None  # where the schedule ends, and where a budget moved that end

    @property
    def cached(self) -> bool:
        return self.k > 0

    def current_epochs(self) -> int:
        return self.budget.epochs if self.budget is not None else self.epochs

    def total_steps(self) -> int:
        """Where the stage and its schedule end; a budget may end it inside its only epoch."""
        return self.budget.total_steps if self.budget is not None else self.epochs * self.steps_per_epoch
