"""Nearest training images beside each mistake of the report's gallery: why did the model think so?

``find(path)`` (e.g. :func:`tlkit.models.ood.neighbour_finder`) returns the most similar training
images of one image (cosine on the pooled features, from the bank stored with the model), as
``{"path", "label", "similarity"}``; :func:`neighbour_items` runs it for the gallery's mistakes and
:func:`with_neighbours` puts their thumbnails to the right of a tile's picture. Arrays only: the
figure is :class:`tlkit.evaluation.display.MisclassifiedDisplay`'s.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Neighbours", "neighbour_items", "with_neighbours", "caption"]

#: one image's nearest training images: ``[{"path", "label", "similarity"}, ...]``, most similar first
Neighbours = Callable[[str], list]


def neighbour_items(items: Sequence[dict[str, Any]], find: Neighbours | None) -> dict[int, Any]:
    """Row index -> the nearest training images of each mistake, or the error's text (one failure hides nothing else)."""
    if find is None:
        return {}
    found: dict[int, Any] = {}
    for item in items:
        try:
            found[item["index"]] = list(find(item["path"]))
        except Exception as exc:  # noqa: BLE001 - shown on the tile instead of the neighbours
            found[item["index"]] = f"{type(exc).__name__}: {str(exc)[:60]}"
    return found


def _thumbnail(image: Any, height: int) -> np.ndarray:
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    width = max(1, round(picture.width * height / max(1, picture.height)))
    return np.asarray(picture.convert("RGB").resize((width, height)), np.uint8)


def with_neighbours(picture: Any, neighbours: Sequence[dict[str, Any]], load_image: Callable[[str], Any]) -> np.ndarray:
    """``picture`` with the thumbnails of ``neighbours`` (as tall as it, a white gap before each) to its right;
    a neighbour whose file cannot be read is a grey square."""
    base = np.asarray(picture, np.uint8)
    if base.ndim == 2:
        base = np.repeat(base[:, :, None], 3, axis=2)
    height = base.shape[0]
    gap = np.full((height, max(3, height // 16), 3), 255, np.uint8)
    parts = [base[:, :, :3]]
    for item in neighbours:
        try:
            thumb = _thumbnail(load_image(item["path"]), height)
        except Exception:  # noqa: BLE001 - a moved training image must not hide the gallery
            thumb = np.full((height, height, 3), 200, np.uint8)
        parts += [gap, gap, thumb] if len(parts) == 1 else [gap, thumb]
    return np.concatenate(parts, axis=1)


def caption(neighbours: Sequence[dict[str, Any]] | str) -> str:
    """``nearest training: cat 0.93 | cat 0.91 | dog 0.88`` (or why there are none)."""
    if isinstance(neighbours, str):
        return f"no neighbours: {neighbours}"
    return "nearest training: " + " | ".join(f"{n['label']} {n['similarity']:.2f}" for n in neighbours)
