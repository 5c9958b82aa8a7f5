"""``tlkit.lr_find``: the LR range test of a recipe's probe stage, on the cached features ``tlkit finetune`` uses.

The config comes from :func:`tlkit.config.make_config` (the options and errors of
:func:`tlkit.finetune`); the data is scanned, checked and split as a run does for the same seed;
the backbone is built as a run builds it (random weights seeded alike, so they fingerprint the
same); the training split's pooled features come from the shared feature store, under the entry
the run reads (computed once, then cached). Nothing is written but the store's entry.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from tlkit.config import RunConfig, StageConfig, list_recipes, load_recipe, make_config
from tlkit.console import Reporter, default_reporter
from tlkit.data import Manifest
from tlkit.errors import ConfigError, DivergedError
from tlkit.lrfind.range_test import Curve, Sweep, range_test
from tlkit.lrfind.result import LRFindResult
from tlkit.lrfind.rules import END_LR, START_LR, STEPS, advice, is_far, option_for, short, suggest
from tlkit.models.backbone import Backbone
from tlkit.models.builder import build as build_backbone
from tlkit.models.heads import HeadSpec, make_head
from tlkit.train.activations import ActivationCache, base_group
from tlkit.train.devices import default_workers, resolve_device
from tlkit.train.feature_store import FeatureStore
from tlkit.train.prepare import scan_data

__all__ = ["lr_find", "probe_stage", "recipes_with_probe"]


def recipes_with_probe() -> list[str]:
    """The built-in recipes that have a probe stage."""
    return [name for name in list_recipes() if any(s.kind == "probe" for s in load_recipe(name).stages)]


def probe_stage(cfg: RunConfig) -> tuple[int, StageConfig]:
    """The recipe's first probe stage (the head on cached features) and its index; ConfigError when it has none."""
    for index, stage in enumerate(cfg.recipe.stages):
        if stage.kind == "probe":
            return index, stage
    kinds = ", ".join(s.kind for s in cfg.recipe.stages)
    raise ConfigError(f"recipe '{cfg.recipe.name}' has no probe stage (its stages: {kinds}): the LR finder sweeps "
                      "the rate of the head trained on cached features, which is a probe stage's. Use a recipe with "
                      f"one ({', '.join(recipes_with_probe())}), or add a 'kind: probe' stage to yours")


def _backbone(cfg: RunConfig) -> Backbone:
    """Built as a run builds it: random weights (``pretrained=False``) drawn from the run's seed, so the
    feature store's fingerprint, and the entry, are the run's. The caller's random state is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_backbone(cfg.model.backbone, pretrained=cfg.model.pretrained, weights_file=cfg.model.weights,
                              offline=cfg.model.offline)


def _train_features(cfg: RunConfig, net: Backbone, manifest: Manifest, stage: StageConfig, device: torch.device,
                    reporter: Reporter, timings: dict) -> tuple[torch.Tensor, int]:
    """Pooled features of the training split (plain, no augmented view) and how many were computed now."""
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    cache = ActivationCache(FeatureStore(cfg.cache_dir, channels_last=cfg.channels_last), net,
                            net.preprocessing.with_size(cfg.data.image_size), manifest,
                            base=base_group(net, cfg.recipe.stages), seed=cfg.seed, workers=workers, device=device,
                            reporter=reporter, timings=timings)
    cache.batch_size = stage.batch_size
    features = cache.inputs_at(net.num_groups, "train")
    return features.reshape(len(features), -1).float(), cache.computed


def _head(cfg: RunConfig, net: Backbone, classes: int) -> torch.nn.Module:
    """The recipe's head, as it starts: initial weights drawn from the seed alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return make_head(HeadSpec(cfg.model.head, net.feature_dim, classes, cfg.model.hidden_dim, cfg.model.dropout,
                                  cfg.model.norm))


def _warnings(curve: Curve, stage: StageConfig, sweep: Sweep) -> list[str]:
    notes = []
    if stage.augment != "none":
        notes.append(f"the probe trains on {stage.views} augmented view(s) ({stage.augment}) as well; the test ran on "
                     "the plain features only (each view is one more extraction), so the rate may differ a little")
    if min(range(len(curve.smoothed)), key=curve.smoothed.__getitem__) == 0:
        notes.append("the smoothed loss never fell below its first value: no rate in the range trained the head, so "
                     "the suggestion is a guess; check the data (labels, class balance) or the backbone's weights")
    if len(curve.lrs) < 10:
        notes.append(f"the loss blew up after {len(curve.lrs)} steps (rate {short(curve.lrs[-1])}): too few points "
                     "for a reliable suggestion; lower start_lr")
    if curve.stopped == "end of range":
        notes.append(f"the loss had not blown up by the end of the range ({short(sweep.end_lr)}): the suggestion "
                     "may be low; raise end_lr to see the turn")
    return notes


def lr_find(data: str | os.PathLike, backbone: str | None = None, recipe: Any = None, *, start_lr: float = START_LR,
            end_lr: float = END_LR, steps: int = STEPS, reporter: Reporter | None = None, verbose: bool = True,
            **overrides: Any) -> LRFindResult:
    """The LR range test (fastai's ``lr_find``) of the recipe's probe stage, on cached features: seconds.

    Takes the options of :func:`tlkit.finetune` (``lr=``, ``batch_size=``, ``head=``, ``image_size=``,
    ``seed=``, ``"stages.0.lr"``...). A fresh head is trained on the training split's pooled
    features, one mini-batch per rate, the rate rising exponentially from ``start_lr`` to ``end_lr``
    over ``steps`` steps, until the smoothed loss is 4x its minimum. The suggestion is fastai's
    'valley'; ``result.far`` says when the recipe's rate is more than 10x away, ``result.option`` what to pass.

    >>> result = lr_find("data/leaves", backbone="resnet18")        # doctest: +SKIP
    >>> result.suggested, result.recipe_lr, result.advice           # doctest: +SKIP
    >>> result.plot()                                                # doctest: +SKIP

    Raises ConfigError (a bad option, a recipe without a probe stage), DataError, BackboneError,
    WeightsError as ``tlkit.finetune`` does, DivergedError when the first loss is not finite.
    """
    start = time.perf_counter()
    sweep = Sweep(start_lr, end_lr, steps).check()
    cfg = make_config(data, backbone=backbone, recipe=recipe, **overrides)
    index, stage = probe_stage(cfg)
    reporter = reporter if reporter is not None else default_reporter(verbose)
    device = resolve_device(cfg.device)
    stage = stage.for_device(device.type)
    manifest = scan_data(cfg, reporter)
    net = _backbone(cfg)
    timings: dict[str, float] = {"extract_seconds": 0.0}
    features, computed = _train_features(cfg, net, manifest, stage, device, reporter, timings)
    labels = torch.tensor(manifest.labels("train"), dtype=torch.long)
    t_test = time.perf_counter()
    curve = range_test(_head(cfg, net, len(manifest.classes)), features, labels, stage, sweep,
                       num_classes=len(manifest.classes), seed=cfg.seed, stage_index=index, device=device)
    timings["test_seconds"] = round(time.perf_counter() - t_test, 3)
    if not curve.lrs:
        raise DivergedError(f"the loss was not finite at the first step (rate {short(start_lr)}): the features or "
                            "the labels are broken; check the backbone's weights and the images")
    suggestions = suggest(curve.lrs, curve.smoothed, sweep.steps)
    option = option_for(suggestions.suggested, index, len(cfg.recipe.stages))
    key = "lr" if len(cfg.recipe.stages) == 1 else f"stages.{index}.lr"
    settings = {**sweep.to_dict(), "seed": cfg.seed, "device": str(device), "image_size": cfg.data.image_size,
                "pretrained": cfg.model.pretrained, "head": cfg.model.head, "batch_size": stage.batch_size,
                "optimizer": stage.optimizer, "weight_decay": stage.weight_decay,
                "label_smoothing": stage.label_smoothing, "class_weighting": stage.class_weighting,
                "mixup": stage.mixup, "grad_clip": stage.grad_clip, "inputs": "plain training features (no augmented view)"}
    timings["extract_seconds"] = round(timings["extract_seconds"], 3)
    timings["total_seconds"] = round(time.perf_counter() - start, 3)
    return LRFindResult(
        lrs=curve.lrs, losses=curve.losses, smoothed=curve.smoothed, suggestions=suggestions, recipe_lr=stage.lr,
        far=is_far(stage.lr, suggestions.suggested), advice=advice(stage.lr, suggestions.suggested, option),
        option=option, override={key: float(short(suggestions.suggested))}, stopped=curve.stopped,
        backbone=net.name, recipe=cfg.recipe.name, stage_index=index, stage_kind=stage.kind,
        images=len(labels), features_computed=computed, settings=settings, timings=timings,
        warnings=_warnings(curve, stage, sweep))
