"""K-fold cross-validation of a cached recipe, before the final model is trained as a normal run.

Each of the K models trains the recipe's stages on K-1 folds of train+val and is validated on the
fold it holds out: that fold picks its kept epoch (as the validation split does in a normal run)
and is then predicted once. Every train+val image is thus predicted by exactly one model that
never trained on it (the pooled out-of-fold predictions). The frozen prefix runs once per image:
the folds read rows of the run's :class:`~tlkit.train.activations.ActivationCache`, which the final
model then reuses, so K folds cost K trainings of the head (and of the groups after the prefix),
never another extraction. The final model starts from the same initial weights and seeds as a run
without folds, so it is the same model. Figures: :mod:`tlkit.evaluation.crossval`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tlkit._io import atomic_write_text
from tlkit.console import SilentReporter
from tlkit.evaluation.crossval import crossval_summary
from tlkit.rundir import RunDir
from tlkit.train.activations import ActivationCache
from tlkit.train.checkpoint import Checkpointer
from tlkit.train.context import RunContext
from tlkit.train.folds import POOLED_SPLITS, FoldPlan, fold_plan
from tlkit.train.stage import run_stage
from tlkit.train.validation import Predictor

__all__ = ["cross_validate", "FoldActivations", "SELECTION_NOTE"]

SELECTION_NOTE = ("each fold's held-out images are its validation set: they choose the kept epoch, as the "
                  "validation split does in a normal run, then are predicted once")


class _PooledRows:
    """Activations of train then val, concatenated once per (view, augmentation) and shared by every fold."""

    def __init__(self, parent: ActivationCache) -> None:
        self.parent = parent
        self._rows: dict[tuple[int, str], torch.Tensor] = {}

    def get(self, view: int, augment: str) -> torch.Tensor:
        if (view, augment) not in self._rows:
            parts = [self.parent.at_base(split, view, augment) for split in POOLED_SPLITS]
            self._rows[(view, augment)] = torch.cat([p for p in parts if len(p)])
        return self._rows[(view, augment)]


class FoldActivations(ActivationCache):
    """One fold's view of the run's cached activations: ``train`` and ``val`` are rows of the pooled train+val."""

    def __init__(self, parent: ActivationCache, pooled: _PooledRows, backbone, rows: dict[str, np.ndarray]) -> None:  # noqa: ANN001
        super().__init__(parent.store, backbone, parent.preprocessing, parent.manifest, base=parent.base,
                         seed=parent.seed, workers=parent.workers, device=parent.device, reporter=parent.reporter,
                         timings=parent.timings, dist=parent.dist)
        self.pooled, self.rows = pooled, rows

    def at_base(self, split: str, view: int = 0, augment: str = "none") -> torch.Tensor:
        index = self.rows.get(split)
        if index is None or len(index) == 0:
            return torch.empty(0)
        return self.pooled.get(view, augment)[torch.as_tensor(index)]

    def prefix_unchanged(self) -> bool:
        return True  # every stage is cached (tlkit.train.folds.check_folds): the prefix never trains


def _fold_context(ctx: RunContext, plan: FoldPlan, fold: int, pooled: _PooledRows, initial, folder: Path) -> RunContext:  # noqa: ANN001
    model = copy.deepcopy(initial)
    train, held = np.flatnonzero(plan.fold_of != fold), np.flatnonzero(plan.fold_of == fold)
    items = list(zip(plan.rel_paths, plan.labels.tolist()))
    manifest = dataclasses.replace(ctx.manifest, splits={"train": [items[i] for i in train],
                                                         "val": [items[i] for i in held]})
    activations = FoldActivations(ctx.activations, pooled, model.backbone, {"train": train, "val": held})
    return RunContext(ctx.cfg, model, manifest, RunDir(folder), ctx.device, SilentReporter(), ctx.dist, activations,
                      ctx.feed, Predictor(model, ctx.feed, ctx.device, ctx.dist),
                      Checkpointer(folder / "last.pt", is_main=False), clock=ctx.clock,
                      timings={"extract_seconds": 0.0, "train_seconds": 0.0}, net=model)


def _run_fold(ctx: RunContext, plan: FoldPlan, fold: int, pooled: _PooledRows, initial) -> tuple[np.ndarray, float]:  # noqa: ANN001
    """The held-out fold's predicted labels, and the fold's training seconds."""
    with tempfile.TemporaryDirectory(prefix="tlkit-fold-") as folder:
        fctx = _fold_context(ctx, plan, fold, pooled, initial, Path(folder))
        for index, stage in enumerate(ctx.cfg.recipe.stages):
            stage = stage.for_device(ctx.device.type)
            ctx.activations.batch_size = stage.batch_size
            run_stage(fctx, index, stage)
        acts = fctx.activations
        logits = fctx.predictor.logits(acts.base, acts.at_base("val"), "val")
    return logits.argmax(1).numpy(), fctx.timings["train_seconds"]


def cross_validate(ctx: RunContext) -> dict:
    """Train ``cfg.folds`` models on the folds of train+val, write ``crossval.json``, return its content.

    Call it before the final model trains (``ctx.model`` holds the initial weights; it is not changed).
    A resumed run whose folds were done reads them back.
    """
    k = ctx.cfg.folds
    if ctx.cfg.resume and ctx.run.crossval.is_file():
        ctx.reporter.message(f"cross-validation: {k} folds already done ({ctx.run.crossval})")
        return json.loads(ctx.run.crossval.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    plan = fold_plan(ctx.manifest, k, ctx.cfg.seed)
    initial, pooled = copy.deepcopy(ctx.model), _PooledRows(ctx.activations)
    predicted = np.full(len(plan.labels), -1, dtype=np.int64)
    train_seconds = 0.0
    for fold in range(plan.k):
        held = plan.fold_of == fold
        predicted[held], seconds = _run_fold(ctx, plan, fold, pooled, initial)
        train_seconds += seconds
        accuracy = float((predicted[held] == plan.labels[held]).mean())
        ctx.reporter.message(f"fold {fold + 1}/{plan.k}: accuracy {accuracy:.4f} on {int(held.sum())} held-out images")
    classes = ctx.manifest.classes
    summary = crossval_summary(plan.fold_of, plan.labels, predicted, classes)
    summary.update({
        "method": plan.method, "seed": ctx.cfg.seed, "recipe": ctx.cfg.recipe.name, "splits": list(POOLED_SPLITS),
        "selection": SELECTION_NOTE, "train_seconds": train_seconds, "seconds": time.perf_counter() - t0,
        "predictions": [{"path": rel, "label": classes[int(y)], "predicted": classes[int(p)], "fold": int(f)}
                        for rel, y, p, f in zip(plan.rel_paths, plan.labels, predicted, plan.fold_of)],
    })
    ctx.timings["crossval_seconds"] = summary["seconds"]
    if ctx.dist.is_main:
        atomic_write_text(ctx.run.crossval, json.dumps(summary, indent=2))
    lo, hi = summary["interval"]["low"], summary["interval"]["high"]
    ctx.reporter.message(f"cross-validation ({plan.k} folds of train+val): mean accuracy {summary['mean_accuracy']:.4f}, "
                         f"95% t-interval [{lo:.4f}, {hi:.4f}]; now the final model on the normal split")
    return summary
