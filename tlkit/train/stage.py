"""One stage of a recipe: its plan (inputs, optimizer, schedule, budget, selection), then its epochs.

Reading order: :func:`run_stage` is the loop: train an epoch, validate, log, keep the best
weights, checkpoint, stop early or at the end. :func:`plan_stage` builds what the loop needs,
including the state of a resumed stage. Every piece is defined elsewhere: losses and mixing in
:mod:`tlkit.train.losses`, optimizer and schedules in :mod:`tlkit.train.optim`, the budget in
:mod:`tlkit.train.budget`, selection in :mod:`tlkit.train.selection`, the state and when it is
written in :mod:`tlkit.train.checkpoint`.
"""

from __future__ import annotations

import json
import math
import time

import torch
from torch import nn

from tlkit._seeding import rng_state, seed_everything, set_rng_state
from tlkit.config import StageConfig
from tlkit.errors import DivergedError
from tlkit.train.activations import first_trainable_group
from tlkit.train.budget import TimeBudget
from tlkit.train.checkpoint import TrainState
from tlkit.train.context import RunContext, StagePlan
from tlkit.train.losses import balanced_class_weights
from tlkit.train.optim import Horizon, build_optimizer, build_scheduler, param_groups, steps_per_epoch
from tlkit.train.resizing import relative_cost
from tlkit.train.selection import BestWeights
from tlkit.train.steps import diverged_message, epoch_on_activations, epoch_on_images, plan_size

__all__ = ["plan_stage", "run_stage", "trainable_keys", "stage_seed"]


def stage_seed(seed: int, index: int, epoch: int) -> int:
    """The seed of one epoch's order, augmentations and mixing: (seed, stage, epoch) alone."""
    return seed * 1000003 + index * 1009 + epoch


def trainable_keys(model: nn.Module) -> set[str]:
    """State-dict keys that a stage can change: trainable parameters and their modules' buffers."""
    keys = set()
    for module_name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if own and any(p.requires_grad for _, p in own):
            prefix = f"{module_name}." if module_name else ""
            keys.update(prefix + n for n, _ in own)
            keys.update(prefix + n for n, _ in module.named_buffers(recurse=False))
    return keys


def _announce(ctx: RunContext, index: int, stage: StageConfig, cached: bool, frozen_first: int) -> None:
    backbone = ctx.model.backbone
    trained = backbone.num_groups - backbone.first_trainable_group
    name = stage.name or f"{stage.kind}" + (f" (last {trained} groups)" if 0 < trained < backbone.num_groups else "")
    upto = "up to " if stage.max_minutes is not None else ""
    early = ""
    if frozen_first and not cached:
        early = (f"; {', '.join(backbone.group_names[:frozen_first])} stay frozen (output stride <= "
                 f"{stage.freeze_stride})")
    ctx.reporter.message(f"stage {index + 1}/{len(ctx.cfg.recipe.stages)}: {name}, {upto}{stage.epochs} epochs, "
                         f"{'cached activations' if cached else 'full images'}{early}")


def _inputs(ctx: RunContext, stage: StageConfig, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The cached training views (the plain one, then ``views`` augmented ones) and validation inputs."""
    if k == 0:
        return torch.empty(0), None
    views = [ctx.activations.inputs_at(k, "train", 0, "none")]
    if stage.augment != "none":
        views += [ctx.activations.inputs_at(k, "train", v, stage.augment) for v in range(stage.views)]
    return torch.stack(views), ctx.activations.inputs_at(k, "val")  # one indexing op gathers a batch


def _sized(ctx: RunContext, stage: StageConfig) -> dict:
    """The budget's cost of each epoch of a progressively resized stage (none: every epoch alike)."""
    if stage.start_size is None:
        return {}
    full = ctx.model.preprocessing.input_size
    return {"cost": lambda epoch, epochs: relative_cost(full, stage.start_size, epoch, epochs)}


def plan_stage(ctx: RunContext, index: int, stage: StageConfig, resume: TrainState | None) -> StagePlan:
    """Freeze, gather inputs, build the optimizer, schedule, budget and selection; restore a resumed stage."""
    backbone = ctx.model.backbone
    k = first_trainable_group(backbone, stage)
    # the early high-resolution groups (edges, colours): a fraction of a percent of the parameters, but
    # most of a CPU training step's backward pass (bench/RESULTS.md)
    frozen_first = backbone.groups_within_stride(stage.freeze_stride) if stage.freeze_stride else 0
    backbone.freeze(0 if stage.kind == "probe" else stage.unfreeze, frozen_first=frozen_first)
    backbone.bn_eval = not stage.train_bn
    _announce(ctx, index, stage, k > 0, frozen_first)
    train_labels = torch.tensor(ctx.manifest.labels("train"), dtype=torch.long)
    val_labels = torch.tensor(ctx.manifest.labels("val"), dtype=torch.long)
    views, val_inputs = _inputs(ctx, stage, k)
    first = max(k, backbone.first_trainable_group)  # parameter-only groups: images in, the last groups train
    optimizer = build_optimizer(param_groups(ctx.model.head, backbone, stage, first), stage)
    steps = steps_per_epoch(len(train_labels), stage.batch_size)
    if k == 0 and ctx.dist.enabled:  # each rank steps through its share of the images
        steps = ctx.dist.steps_per_epoch(len(train_labels), stage.batch_size)
    resumed = resume is not None and resume.stage == index
    epochs = resume.epochs if resumed and resume.epochs >= 0 else stage.epochs
    # a resumed stage keeps the plan its budget had at the checkpoint (epochs, the schedule's bends), so it
    # goes on exactly as it would have, whatever this machine's speed is now
    budget = None
    if stage.max_minutes is not None and stage.epochs > 0 and not resumed:
        budget = TimeBudget(stage.max_minutes, stage.epochs, steps_per_epoch=steps, batch_size=stage.batch_size,
                            val_images=len(val_labels), clock=ctx.clock, agree=ctx.dist.same_on_all,
                            hurry=not ctx.dist.enabled, **_sized(ctx, stage))
    ctx.net = ctx.model if k > 0 else ctx.dist.wrap(ctx.model)
    weights = balanced_class_weights(train_labels, len(ctx.manifest.classes)).to(ctx.device) \
        if stage.class_weighting == "balanced" else None
    keys = trainable_keys(ctx.model)
    plan = StagePlan(index, stage, k, train_labels, val_labels, views, val_inputs, optimizer, None, weights, keys,
                     BestWeights(stage.metric, stage.early_stopping, keys), budget, epochs, steps_per_epoch=steps)
    plan.horizon = Horizon(plan.total_steps)
    plan.scheduler = build_scheduler(stage, optimizer, steps, plan.current_epochs, horizon=plan.horizon)
    if resumed:
        _restore(plan, resume)
    else:
        _start(ctx, plan)
    return plan


def _restore(plan: StagePlan, state: TrainState) -> None:
    plan.optimizer.load_state_dict(state.optimizer)
    plan.scheduler.load_state_dict(state.scheduler)
    if state.schedule:  # checkpoints of tlkit 0.2 and earlier: a plain cosine, no bends
        plan.horizon.load_state_dict(state.schedule)
    plan.start_epoch, plan.step = state.epoch + 1, state.step
    plan.selection.load_state_dict(state.selection)
    set_rng_state(state.rng)


def _start(ctx: RunContext, plan: StagePlan) -> None:
    if plan.index > 0 and len(plan.val_labels):
        # Model selection on validation includes the weights the stage starts from: a fine-tuning
        # stage that never beats the probe before it gives the probe's weights back.
        before = {"train_loss": float("inf"), **ctx.predictor.validate(plan.k, plan.val_inputs, plan.val_labels)}
        plan.selection.start_from(ctx.model, before)
        ctx.reporter.message(f"  before this stage: val accuracy {before['val_accuracy']:.4f}")
    # A stage starts from RNG states fixed by (seed, stage) alone, so what ran before it (feature
    # extraction or a cache hit, earlier stages, a resume at the stage boundary) cannot change its
    # dropout masks or augmentations.
    seed_everything(stage_seed(ctx.cfg.seed, plan.index, 104729))


def _check_finite(ctx: RunContext, plan: StagePlan, epoch: int, val: dict) -> None:
    """The last step of an epoch can leave NaN/inf weights behind a finite loss: stop before saving them."""
    bad = [name for name, p in ctx.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad or not math.isfinite(val.get("val_loss", 0.0)):
        what = f"weights {', '.join(bad[:3])}" if bad else "validation loss"
        raise DivergedError(diverged_message(f"{what} became NaN/inf", plan, epoch, plan.step))


def _state(ctx: RunContext, plan: StagePlan, epoch: int, *, done: bool) -> TrainState:
    return TrainState.capture(ctx.model, plan.keys, optimizer=plan.optimizer, scheduler=plan.scheduler,
                              stage=plan.index, epoch=epoch, step=plan.step, stage_done=done,
                              selection=plan.selection.state_dict(), epochs=plan.current_epochs(), rng=rng_state(),
                              history=[json.dumps(r) for r in ctx.history], schedule=plan.horizon.state_dict(),
                              budget=plan.budget.state_dict() if plan.budget is not None else {})


def _record_what_was_kept(ctx: RunContext, plan: StagePlan, last: dict) -> str | None:
    """The stage's end: which weights it keeps (an epoch, or the ones it started from), recorded in
    ``ctx.kept``; returns the line that says so (to show after the last epoch's), or None when it is no news."""
    best = plan.selection
    record = best.best_record or last
    epoch = best.best_epoch if best.best_epoch is not None else last["epoch"]
    said = f"  {best.kept()}" if epoch != last["epoch"] or best.best_epoch == -1 else None  # news unless the last epoch
    if epoch == -1 and ctx.kept:  # the weights an earlier stage ended with stay, with their figures
        ctx.kept = {**ctx.kept, "not_beaten_by": f"stage {plan.index + 1} ({plan.stage.kind})"}
        return said
    ctx.kept = {"stage": plan.index + 1, "stage_kind": plan.stage.kind,
                "epoch": "start" if epoch == -1 else epoch + 1,
                **{k: v for k, v in record.items() if k.startswith("val_")}}
    return said


def run_stage(ctx: RunContext, index: int, stage: StageConfig, resume: TrainState | None = None) -> None:
    """Train one stage to its end (or early stop); the model ends with the stage's best weights."""
    plan = plan_stage(ctx, index, stage, resume)
    epoch = plan.start_epoch - 1
    while epoch + 1 < plan.current_epochs():  # a time budget may change the number after any epoch
        epoch += 1
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(stage_seed(ctx.cfg.seed, index, epoch))
        ctx.model.train()
        size = plan_size(plan, ctx.model.preprocessing.input_size, epoch)  # before the epoch: a budget may re-plan
        loss = (epoch_on_activations if plan.cached else epoch_on_images)(ctx, plan, epoch, gen)
        val = ctx.predictor.validate(plan.k, plan.val_inputs, plan.val_labels) if len(plan.val_labels) else {}
        loss, val = ctx.dist.same_on_all((loss, val))  # every rank decides (early stop, best epoch) alike
        note = plan.budget.after_epoch() if plan.budget is not None else None
        if note:
            ctx.reporter.message(note)
        _check_finite(ctx, plan, epoch, val)
        seconds = time.perf_counter() - t0
        ctx.timings["train_seconds"] += seconds
        record = {"stage": index, "stage_kind": stage.kind, "epoch": epoch, "step": plan.step, "train_loss": loss,
                  "lr": plan.optimizer.param_groups[-1]["lr"], "seconds": round(seconds, 4), **val}
        if stage.start_size is not None:
            record["image_size"] = size
        ctx.history.append(record)
        plan.selection.update(ctx.model, record)
        stop = plan.selection.should_stop
        done = stop or epoch == plan.current_epochs() - 1
        kept = None
        if done:
            plan.selection.restore(ctx.model)
            kept = _record_what_was_kept(ctx, plan, record)
        # From here on this epoch is kept: a Ctrl-C writes it if nothing else does.
        ctx.checkpointer.keep(_state(ctx, plan, epoch, done=done), due=done or epoch == plan.start_epoch)
        if ctx.dist.is_main:
            with open(ctx.run.metrics_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        ctx.reporter.epoch(record)
        if stop:
            ctx.reporter.message(f"early stop after epoch {epoch + 1}: no {stage.metric} gain for "
                                 f"{plan.selection.bad_epochs} epochs")
        if kept:  # after the last epoch's line (and the early stop's), not before them
            ctx.reporter.message(kept)
        if stop:
            break
    if plan.current_epochs() == 0:
        ctx.checkpointer.write(_state(ctx, plan, -1, done=True))
    ctx.net = ctx.model
    ctx.dist.sync_module(ctx.model)  # cached stages ran on every rank: rank 0's result is the one kept
