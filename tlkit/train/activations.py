"""Cached activations: the frozen prefix of the backbone runs once per image for the whole run.

A stage that trains only the last layer groups (or only the head) starts from the activations
entering its first trainable group. The earliest group any cached stage trains is the *base*:
activations entering it come from the feature store (computed once, kept on disk across runs),
and the groups between the base and a later stage's first group run once more, in memory.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch

from tlkit.config import StageConfig
from tlkit.data import Manifest
from tlkit.models.backbone import Backbone
from tlkit.train import distributed
from tlkit.train.feature_store import FeatureStore, backbone_fingerprint

__all__ = ["first_trainable_group", "base_group", "ActivationCache"]


def first_trainable_group(backbone: Backbone, stage: StageConfig) -> int:
    """The first layer group a stage's inputs enter: activations before it can be cached, 0 means images.

    A probe trains none (``num_groups``: the pooled features). A backbone whose groups only
    partition parameters (not ``sequential``) runs from images (0), and the stage still trains only
    its last ``unfreeze`` groups (see :func:`tlkit.train.optim.param_groups`). A backbone that is one
    opaque group refuses any ``unfreeze`` but 0 and "all" (:class:`~tlkit.errors.BackboneError`).
    """
    n = backbone.num_groups
    if stage.kind == "probe":
        return n
    k = n - backbone.trainable_group_count(stage.unfreeze)
    if k < n and not backbone.sequential:
        return 0
    return k


def base_group(backbone: Backbone, stages: Sequence[StageConfig]) -> int:
    """The earliest layer group any cached stage trains: activations entering it are stored."""
    starts = [first_trainable_group(backbone, s) for s in stages]
    cached = [k for k in starts if k > 0 and (backbone.sequential or k == backbone.num_groups)]
    return min(cached) if cached else backbone.num_groups


class ActivationCache:
    """Activations of a run's splits (and augmented views) at any group from the base on.

    ``reporter`` gets the progress bars and the store's messages (a dropped entry, rows left
    uncached); ``timings["extract_seconds"]`` adds up the time spent in the store.
    """

    def __init__(self, store: FeatureStore, backbone: Backbone, preprocessing: Any, manifest: Manifest, *,
                 base: int, seed: int, workers: int, device: torch.device, reporter: Any, timings: dict,
                 dist: distributed.Distributed = distributed.SINGLE) -> None:
        self.store, self.backbone, self.preprocessing, self.manifest = store, backbone, preprocessing, manifest
        self.base, self.seed, self.workers, self.device = base, seed, workers, device
        self.reporter, self.timings, self.dist = reporter, timings, dist
        self.batch_size = 64  # extraction batch: the running stage's batch size
        self.computed = 0  # rows the store computed (not served from disk) in this cache's calls
        self._rows: dict[tuple[str, int], torch.Tensor] = {}
        self._fingerprint: str | None = None

    def at_base(self, split: str, view: int = 0, augment: str = "none") -> torch.Tensor:
        """Activations entering the base group (empty when the split is)."""
        key = (split if augment == "none" else f"{split}:{augment}", view)
        if key not in self._rows:
            paths = self.manifest.paths(split)
            if not paths:
                return torch.empty(0)
            label = f"extract {split}" + (f" view {view + 1} ({augment})" if augment != "none" else "")
            tick: Callable[[int, int], None] | None = self.reporter.task(label, len(paths))
            t0 = time.perf_counter()
            feats, stats = self.store.get(
                self.backbone, self.preprocessing, paths, stop_group=self.base, augment=augment, view=view,
                seed=self.seed, batch_size=self.batch_size, workers=self.workers, device=self.device,
                progress=tick, dist=self.dist)
            self.timings["extract_seconds"] += time.perf_counter() - t0
            self.computed += stats.computed
            for text in stats.messages:
                self.reporter.message(text)
            if self._fingerprint is None:
                self._fingerprint = backbone_fingerprint(self.backbone, self.base)
            if stats.hits and tick is not None:
                tick(len(paths), len(paths))
            self._rows[key] = feats
        return self._rows[key]

    def inputs_at(self, k: int, split: str, view: int = 0, augment: str = "none") -> torch.Tensor:
        """Activations entering group ``k`` (pooled features when ``k == num_groups``)."""
        base = self.at_base(split, view, augment)
        if k == self.base or len(base) == 0:
            return base
        self.backbone.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(base), 256):
                x = base[s:s + 256].to(self.device)
                out.append(self.backbone.forward_groups(x, self.base, k).float().cpu())
        return torch.cat(out)

    def prefix_unchanged(self) -> bool:
        """Whether the groups before the base still hold the weights the stored activations came from."""
        if not self._rows or self._fingerprint is None:
            return False
        return backbone_fingerprint(self.backbone, self.base) == self._fingerprint
