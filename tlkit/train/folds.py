"""Which images each cross-validation fold holds out, and what ``--folds`` refuses before any work.

The folds cover train + val (the test split stays untouched for the final model): scikit-learn's
``StratifiedKFold``, or ``StratifiedGroupKFold`` with ``--group-by`` so a group never spans two
folds; shuffled with the run's seed, so the same run gets the same folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tlkit.config import RunConfig
from tlkit.data import Manifest
from tlkit.errors import ConfigError, DataError
from tlkit.models.backbone import Backbone
from tlkit.train.activations import first_trainable_group

__all__ = ["FoldPlan", "fold_plan", "check_folds", "POOLED_SPLITS"]

#: the splits the folds are cut from, in this order (row ``i`` of the pool is train first, then val)
POOLED_SPLITS = ("train", "val")


@dataclass
class FoldPlan:
    """The pooled train+val images and the fold that holds each one out."""

    rel_paths: list[str]
    labels: np.ndarray
    fold_of: np.ndarray  # fold index per pooled image
    method: str  # "stratified" or "stratified-group"

    @property
    def k(self) -> int:
        return int(self.fold_of.max()) + 1


def _pool(manifest: Manifest) -> tuple[list[str], np.ndarray]:
    items = [item for split in POOLED_SPLITS for item in manifest.splits.get(split, [])]
    return [rel for rel, _ in items], np.array([label for _, label in items], dtype=np.int64)


def _check_counts(manifest: Manifest, labels: np.ndarray, groups: list[str] | None, k: int) -> None:
    counts = np.bincount(labels, minlength=len(manifest.classes))
    smallest = int(np.argmin(counts))
    if counts[smallest] < k:
        raise DataError(f"--folds {k} needs at least {k} train+val images in every class, but class "
                        f"'{manifest.classes[smallest]}' has {int(counts[smallest])}; use --folds "
                        f"{max(2, int(counts[smallest]))} or fewer, or add images")
    if groups is not None and len(set(groups)) < k:
        raise DataError(f"--folds {k} with --group-by needs at least {k} groups in train+val, found "
                        f"{len(set(groups))}; use fewer folds")


def fold_plan(manifest: Manifest, k: int, seed: int) -> FoldPlan:
    """The folds of ``manifest``'s train+val images (DataError when a class is too small for ``k``)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    rel_paths, labels = _pool(manifest)
    groups = [manifest.groups.get(rel, rel) for rel in rel_paths] if manifest.group_by else None
    _check_counts(manifest, labels, groups, k)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
        parts = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
        parts = splitter.split(np.zeros(len(labels)), labels, groups)
    for fold, (_, held_out) in enumerate(parts):
        fold_of[held_out] = fold
    if (np.bincount(fold_of, minlength=k) == 0).any():
        raise DataError(f"--folds {k}: the groups cannot be spread over {k} folds; use fewer folds")
    return FoldPlan(rel_paths, labels, fold_of, "stratified" if groups is None else "stratified-group")


def check_folds(cfg: RunConfig, backbone: Backbone, device: torch.device, manifest: Manifest | None) -> None:
    """Refuse ``--folds`` before anything is written: a stage on images (K full fine-tunes), or a class
    with fewer train+val images than folds (``manifest`` is None on resume: checked when the run began)."""
    if not cfg.folds:
        return
    for i, stage in enumerate(cfg.recipe.stages):
        stage = stage.for_device(device.type)
        if first_trainable_group(backbone, stage) == 0:
            raise ConfigError(
                f"--folds trains {cfg.folds} models on cached features, but stage {i + 1} ({stage.kind}, unfreeze: "
                f"{stage.unfreeze}) of recipe '{cfg.recipe.name}' runs {backbone.name} on images, too slow to repeat "
                f"{cfg.folds} times; use --recipe linear-probe (or a recipe whose stages train only layer groups "
                "after a frozen prefix), or drop --folds")
    if manifest is not None:
        fold_plan(manifest, cfg.folds, cfg.seed)
