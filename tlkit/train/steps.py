"""One training step and one epoch, on cached activations or on images.

A step: forward under autocast (bf16 on a GPU that has it), loss, a finite check, backward,
clip, optimizer and schedule step, and the time budget's tick. An epoch: the stage's batches in
an order fixed by the epoch's generator, each mixed (mixup/cutmix) and stepped, the reporter's bar
fed with the running loss (a float each step has already), ending early where a budget ends the stage.
"""

from __future__ import annotations

from typing import Callable

import torch

from tlkit.console import batch_progress, close_progress
from tlkit.errors import DivergedError
from tlkit.train.context import RunContext, StagePlan
from tlkit.train.losses import classification_loss, mix_batch
from tlkit.train.optim import shuffled_batches
from tlkit.train.resizing import epoch_size
from tlkit.transforms import train_transform

__all__ = ["diverged_message", "train_step", "epoch_on_activations", "epoch_on_images", "plan_size"]


def diverged_message(what: str, plan: StagePlan, epoch: int, step: int) -> str:
    return (f"{what} in stage {plan.index + 1} ({plan.stage.kind}), epoch {epoch + 1}, step {step}, learning rate "
            f"{plan.optimizer.param_groups[-1]['lr']:.3g}; lower the learning rate (--lr) or set grad_clip. "
            "No checkpoint was written from the diverged state")


def train_step(ctx: RunContext, plan: StagePlan, epoch: int, forward: Callable[[torch.Tensor], torch.Tensor],
               x: torch.Tensor, y: torch.Tensor) -> float:
    stage, optimizer = plan.stage, plan.optimizer
    use_amp = ctx.device.type == "cuda" and torch.cuda.is_bf16_supported()
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = forward(x)
    loss = classification_loss(logits, y, label_smoothing=stage.label_smoothing, class_weights=plan.class_weights)
    if not torch.isfinite(loss):
        raise DivergedError(diverged_message(f"loss became {loss.item()}", plan, epoch, plan.step + 1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if stage.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], stage.grad_clip)
    optimizer.step()
    plan.scheduler.step()
    plan.step += 1
    if plan.budget is not None:
        note = plan.budget.after_step()
        if note:
            ctx.reporter.message(note)
    return float(loss.detach())  # the one sync a step has: the running loss and the bar read this float


def plan_size(plan: StagePlan, full: int, epoch: int) -> int:
    """The training crop of ``epoch`` of this stage as planned now (progressive resizing)."""
    return epoch_size(full, plan.stage.start_size, epoch, plan.current_epochs())


def _ends_here(plan: StagePlan) -> bool:
    """A time budget that cannot fit one epoch ends the stage inside it, where its schedule ends."""
    return plan.budget is not None and plan.step >= plan.budget.total_steps


def _bar(ctx: RunContext, plan: StagePlan, epoch: int) -> Callable[[int, int, float], None] | None:
    return batch_progress(ctx.reporter, f"stage {plan.index + 1} epoch {epoch + 1}", plan.steps_per_epoch)


def _tick(bar: Callable[[int, int, float], None] | None, plan: StagePlan, first_step: int, loss: float) -> None:
    if bar is not None:
        bar(plan.step - first_step, min(plan.steps_per_epoch, plan.total_steps() - first_step), loss)


def _mixed(ctx: RunContext, plan: StagePlan, x: torch.Tensor, y: torch.Tensor,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return mix_batch(x, y, len(ctx.manifest.classes), mixup=plan.stage.mixup, cutmix=plan.stage.cutmix, generator=gen)


def epoch_on_activations(ctx: RunContext, plan: StagePlan, epoch: int, gen: torch.Generator) -> float:
    """An epoch of the groups from ``plan.k`` on (and the head), on cached activations; the mean loss."""
    backbone, head, labels, stage = ctx.model.backbone, ctx.model.head, plan.train_labels, plan.stage
    total, count = 0.0, 0
    view_choice = torch.randint(0, len(plan.views), (len(labels),), generator=gen)
    weights = None
    if stage.class_weighting == "sampler":
        counts = torch.bincount(labels, minlength=len(ctx.manifest.classes)).float()
        weights = 1.0 / counts.clamp(min=1)[labels]
    bar, first_step = _bar(ctx, plan, epoch), plan.step
    try:
        for batch in shuffled_batches(len(labels), stage.batch_size, gen, sample_weights=weights):
            x = plan.views[view_choice[batch], batch].to(ctx.device)
            x, y = _mixed(ctx, plan, x, labels[batch].to(ctx.device), gen)
            loss = train_step(ctx, plan, epoch, lambda t: head(backbone.forward_groups(t, plan.k)), x, y)
            total += loss * len(batch)
            count += len(batch)
            _tick(bar, plan, first_step, total / count)
            if _ends_here(plan):
                break
    finally:
        close_progress(bar)
    return total / max(1, count)


def epoch_on_images(ctx: RunContext, plan: StagePlan, epoch: int, gen: torch.Generator) -> float:
    """An epoch of the whole network on augmented images (this process's share under DDP); the mean loss.
    Its crops are smaller than the input size in the first epochs of a stage with ``start_size``."""
    pre = ctx.model.preprocessing
    transform = train_transform(pre, plan.stage.augment, plan_size(plan, pre.input_size, epoch))
    loader = ctx.feed.loader("train", transform, gen, plan.stage.batch_size)
    ctx.dist.seed_image_epoch(gen.initial_seed())
    total, count = 0.0, 0
    bar, first_step = _bar(ctx, plan, epoch), plan.step
    try:
        for images, y, _ in loader:
            x = images.to(ctx.device)
            if ctx.device.type == "cuda" or ctx.cfg.channels_last:  # a CPU step: 1.6-1.8x (bench/RESULTS.md)
                x = x.contiguous(memory_format=torch.channels_last)
            x, y = _mixed(ctx, plan, x, y.to(ctx.device), gen)
            loss = train_step(ctx, plan, epoch, ctx.net, x, y)
            total += loss * len(images)
            count += len(images)
            _tick(bar, plan, first_step, total / count)
            if _ends_here(plan):  # every rank ends at the same step: the budget's figures are agreed
                break
    finally:
        close_progress(bar)
    return ctx.dist.mean(total, count)
