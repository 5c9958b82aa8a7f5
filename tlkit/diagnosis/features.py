"""What the doctor knows of every image of a manifest: split, label, hashes and backbone features.

One :class:`ImageTable` row per readable image, sorted by path. Features come from the shared
feature store (pooled output of the whole frozen backbone at the eval preprocessing), so a second
doctor call, or a ``tlkit finetune`` on the same data and backbone, reuses them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from tlkit.console import Reporter, SilentReporter
from tlkit.data import SPLITS, Manifest
from tlkit.diagnosis.hashes import file_hashes
from tlkit.errors import DataError
from tlkit.models.backbone import Backbone
from tlkit.train.feature_store import FeatureStore, content_id, default_cache_dir
from tlkit.transforms import Preprocessing


@dataclass
class ImageTable:
    """Readable images of a manifest, one row each, sorted by relative path."""

    root: str
    classes: list[str]
    rels: list[str]  # path relative to root (posix), as in the manifest
    splits: list[str]
    labels: np.ndarray  # int, index into classes
    content_ids: list[str]  # BLAKE2b of the bytes
    pixel_digests: list[str]  # BLAKE2b of the decoded RGB pixels
    phash_bits: np.ndarray  # N x 64 booleans
    thumbnails: np.ndarray  # N x 1024 grey thumbnails, mean 0 and length 1: dot products are correlations
    contrast: np.ndarray  # standard deviation of each thumbnail's grey levels (0-255)
    features: torch.Tensor  # N x D pooled backbone features (float32)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    groups: dict[str, str] = field(default_factory=dict)  # relative path -> the user's group (--group-by)
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rels)

    def unit_features(self) -> torch.Tensor:
        """Features centred on their mean and scaled to length 1: their dot products are cosine similarities."""
        return unit_rows(self.features)


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows centred on the mean row, then L2-normalised (a zero row stays zero)."""
    if len(features) == 0:
        return features.float()
    centred = features.float() - features.float().mean(0, keepdim=True)
    return torch.nn.functional.normalize(centred, dim=1)


def manifest_samples(manifest: Manifest) -> list[tuple[str, str, int]]:
    """``(relative path, split, label)`` of every image of every split, sorted by path."""
    return sorted((rel, split, label) for split in SPLITS for rel, label in manifest.splits.get(split, []))


def _content_ids(paths: list[str]) -> list[str | None]:
    ids: list[str | None] = []
    for path in paths:
        try:
            ids.append(content_id(path)[0])
        except DataError:
            ids.append(None)
    return ids


def gather(manifest: Manifest, backbone: Backbone, preprocessing: Preprocessing, *,
           cache_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu", batch_size: int = 64,
           workers: int = 0, reporter: Reporter | None = None) -> ImageTable:
    """Hash every image (unreadable ones are listed, not raised) and get the features of the readable ones."""
    reporter = reporter or SilentReporter()
    root = default_cache_dir() if cache_dir is None else cache_dir
    samples = manifest_samples(manifest)
    paths = [os.path.join(manifest.root, *rel.split("/")) for rel, _, _ in samples]
    messages: list[str] = []
    start = time.perf_counter()
    ids = _content_ids(paths)
    hashes = file_hashes(paths, ids, root, messages, progress=reporter.task("hashing images", len(paths))
                         if len(paths) > 256 else None)
    hashed = time.perf_counter()
    keep = hashes.readable
    features, stats = FeatureStore(root).get(backbone, preprocessing, [paths[i] for i in keep], batch_size=batch_size,
                                             workers=workers, device=device,
                                             progress=reporter.task("features", len(keep)) if keep else None)
    messages += stats.messages
    dim = backbone.feature_dim
    return ImageTable(
        root=manifest.root,
        classes=list(manifest.classes),
        rels=[samples[i][0] for i in keep],
        splits=[samples[i][1] for i in keep],
        labels=np.array([samples[i][2] for i in keep], dtype=np.int64),
        content_ids=[ids[i] for i in keep],  # type: ignore[misc]
        pixel_digests=hashes.pixel_digests,
        phash_bits=hashes.bits(),
        thumbnails=hashes.thumbnail_rows(),
        contrast=hashes.contrast(),
        features=features.reshape(len(keep), -1) if keep else torch.zeros(0, dim),
        unreadable=[(samples[i][0], reason) for i, reason in hashes.unreadable],
        groups=dict(manifest.groups),
        messages=messages,
        timings={"hash_seconds": hashed - start, "feature_seconds": stats.seconds, "features_computed": stats.computed,
                 "hashes_computed": hashes.computed},
    )
