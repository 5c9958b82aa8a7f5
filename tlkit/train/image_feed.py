"""Images for the stages that run the whole backbone: decoded once when they fit in memory, loaded
in batches (this process's share under DDP)."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from tlkit._seeding import seed_worker
from tlkit.data import DecodedImages, ImageDataset, Manifest
from tlkit.train import distributed
from tlkit.train.optim import drops_lone_last

__all__ = ["DECODED_CACHE_BYTES", "ImageFeed"]

#: train and val images stay decoded in memory up to this size (else they are decoded every epoch)
DECODED_CACHE_BYTES = int(float(os.environ.get("TLKIT_DECODED_CACHE_GB", "4")) * 2**30)


class ImageFeed:
    """DataLoaders over a run's splits, with the train and val images decoded once for every epoch."""

    def __init__(self, manifest: Manifest, preprocessing: Any, *, workers: int, device: torch.device, reporter: Any,
                 dist: distributed.Distributed = distributed.SINGLE) -> None:
        self.manifest, self.preprocessing, self.workers, self.device = manifest, preprocessing, workers, device
        self.reporter, self.dist = reporter, dist
        self._decoded: dict[str, DecodedImages | None] = {}

    def decoded(self, split: str) -> DecodedImages | None:
        """The split's images decoded once (None when they would not fit in ``DECODED_CACHE_BYTES``)."""
        if split not in self._decoded:
            paths, pre = self.manifest.paths(split), self.preprocessing
            need = DecodedImages.estimate_bytes(len(paths), pre.resize_size)
            if need > DECODED_CACHE_BYTES:
                self.reporter.message(f"{split} images are decoded every epoch: holding them decoded would take "
                                      f"~{need / 2**30:.1f} GiB (limit {DECODED_CACHE_BYTES / 2**30:.0f} GiB)")
                self._decoded[split] = None
            else:
                tick: Callable[[int, int], None] | None = self.reporter.task(f"decode {split}", len(paths))
                images = DecodedImages.decode(paths, pre.resize_size, pre.interpolation, workers=self.workers,
                                              progress=tick)
                self._decoded[split] = DecodedImages(images, self.manifest.labels(split))
        return self._decoded[split]

    def loader(self, split: str, transform: Callable, shuffle: torch.Generator | None,
               batch_size: int) -> torch.utils.data.DataLoader:
        """Batches of (image, label, row); shuffled by ``shuffle`` for training, in order for prediction."""
        decoded = self.decoded(split) if split in ("train", "val") else None
        if decoded is not None:
            dataset: torch.utils.data.Dataset = decoded.with_transform(transform)
        else:
            dataset = ImageDataset(self.manifest.paths(split), self.manifest.labels(split), transform)
        pin = self.device.type == "cuda"
        if self.dist.enabled:  # this rank's share: sampled for training, a slice for prediction
            return self.dist.image_loader(dataset, batch_size, shuffle, num_workers=self.workers,
                                          worker_init_fn=seed_worker, pin_memory=pin)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle is not None, generator=shuffle, num_workers=self.workers,
            worker_init_fn=seed_worker, pin_memory=pin,
            drop_last=shuffle is not None and drops_lone_last(len(dataset), batch_size))
