"""Torch datasets over a manifest's files: read from disk each time, or decoded once and kept in memory.

:class:`ImageDataset` reads files through :func:`~tlkit.data.images.load_image` (``skip_bad`` turns
an unreadable file into an item :func:`collate_readable` lists and leaves out);
:class:`DecodedImages` holds resized uint8 tensors so fine-tuning epochs do not decode again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch.utils.data
from PIL import Image

# load_image is looked up on its module at each call, so patching tlkit.data.images.load_image
# (a test counting reads) reaches every read tlkit makes.
from tlkit.data import images
from tlkit.errors import DataError

__all__ = ["DecodedImages", "ImageDataset", "collate_readable"]


class ImageDataset(torch.utils.data.Dataset):
    """Images from a list of paths; items are ``(transform(image), label, index)``.

    ``label`` is -1 when no labels are given; with no transform the PIL image is returned.
    The index lets callers (feature cache, distributed gather) map outputs back to files.

    Example::

        >>> ds = ImageDataset(m.paths("train"), m.labels("train"), transform)  # doctest: +SKIP
        >>> x, y, i = ds[0]                                                     # doctest: +SKIP
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        skip_bad: bool = False,
    ) -> None:
        self.skip_bad = skip_bad
        self.paths = [os.fspath(p) for p in paths]
        if labels is not None and len(labels) != len(self.paths):
            raise DataError(f"ImageDataset got {len(self.paths)} paths but {len(labels)} labels")
        self.labels = None if labels is None else [int(label) for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        if not -len(self.paths) <= index < len(self.paths):
            raise IndexError(f"index {index} out of range for {len(self.paths)} images")
        index = index % len(self.paths)
        try:
            image = images.load_image(self.paths[index])
        except DataError as exc:
            if not self.skip_bad:
                raise
            return None, -1, index, str(exc)  # collate_readable lists it and leaves it out
        item = image if self.transform is None else self.transform(image)
        label = -1 if self.labels is None else self.labels[index]
        return item, label, index


def collate_readable(batch: list) -> tuple:  # noqa: ANN001
    """Collate for ``ImageDataset(..., skip_bad=True)``: (images, labels, indices, skipped) where
    ``skipped`` lists ``{"path", "reason"}`` of the files that could not be read."""
    good = [b for b in batch if len(b) == 3]
    bad = [{"index": b[2], "reason": b[3]} for b in batch if len(b) == 4]
    if good:
        images, labels, indices = torch.utils.data.default_collate(good)
    else:
        images, labels, indices = torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return images, labels, indices, bad


def _as_lists(batch: list) -> tuple[list, list]:  # noqa: ANN001
    """Collate images of different sizes: (images, indices) as lists, nothing stacked."""
    return [b[0] for b in batch], [b[2] for b in batch]


class DecodedImages(torch.utils.data.Dataset):
    """Images decoded once and held in memory as uint8 tensors, short side already resized.

    Fine-tuning on images runs the same files through a random transform every epoch; decoding a
    JPEG and shrinking a large photo costs more than the transform itself, so it is done once.
    Resizing to the preprocessing's ``resize_size`` first changes nothing for the eval transform
    (its resize then leaves the image as it is) and gives random crops the resolution they need.
    Items are ``(transform(image), label, index)`` like :class:`ImageDataset`.
    """

    def __init__(self, images: Sequence[torch.Tensor], labels: Sequence[int] | None,
                 transform: Callable[[Any], Any] | None = None) -> None:
        self.images = list(images)
        self.labels = None if labels is None else [int(label) for label in labels]
        self.transform = transform

    @staticmethod
    def decode(paths: Sequence[str], resize_size: int, interpolation: str = "bilinear", *, workers: int = 0,
               progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
        """Decode and resize every file once (in DataLoader workers); tensors in ``paths`` order."""
        from tlkit.transforms import predecode_transform

        dataset = ImageDataset(paths, None, predecode_transform(resize_size, interpolation))
        loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=_as_lists)
        images: list[torch.Tensor] = []
        with torch.random.fork_rng(devices=[]):  # a loader draws its base seed from the global RNG
            for batch, _ in loader:
                images.extend(batch)
                if progress is not None:
                    progress(len(images), len(dataset))
        return images

    @staticmethod
    def estimate_bytes(n_images: int, resize_size: int) -> int:
        """Rough memory need: 3 bytes per pixel, short side ``resize_size``, long side up to 1.5 times it."""
        return int(n_images * 3 * resize_size * resize_size * 1.5)

    def with_transform(self, transform: Callable[[Any], Any] | None) -> "DecodedImages":
        return DecodedImages(self.images, self.labels, transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        index = range(len(self.images))[index]
        image = self.images[index]
        item = image if self.transform is None else self.transform(image)
        label = -1 if self.labels is None else self.labels[index]
        return item, label, index
