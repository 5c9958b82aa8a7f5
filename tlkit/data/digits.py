"""Demo data: scikit-learn's bundled 8x8 digits written out as a class-folders image data set."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tlkit._io import atomic_write_bytes
from tlkit.errors import ConfigError

__all__ = ["export_digits"]

_DIGITS_MARKER = ".tlkit-digits.json"


def export_digits(out_dir: str | os.PathLike[str], *, image_size: int = 64, seed: int = 0,
                  per_class: int | None = None) -> str:
    """Write scikit-learn's 1797 8x8 digits as ``out_dir/<digit>/<digit>_<index:04d>.png``.

    Images are grayscale (mode L), upscaled with bicubic resampling to ``image_size``. The
    export is deterministic; ``seed`` is recorded but does not change the images. A hidden
    marker file makes a second call with the same settings return at once. ``per_class`` keeps
    only the first N images of each digit (small examples and tests). Returns ``out_dir``.

    Example::

        >>> export_digits("/tmp/digits")  # doctest: +SKIP
        '/tmp/digits'
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    out = os.fspath(out_dir)
    marker = os.path.join(out, _DIGITS_MARKER)
    digits = load_digits()
    keep = _first_per_class(digits.target, per_class)
    settings = {"count": len(keep), "image_size": image_size, "seed": seed}
    names = [f"{digits.target[i]}/{digits.target[i]}_{i:04d}.png" for i in keep]
    if _already_exported(out, marker, settings, names):
        return out
    for digit in range(10):
        os.makedirs(os.path.join(out, str(digit)), exist_ok=True)
    # Pixel values are 0..16; scale to 0..255 before resizing.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for name, image in zip(names, pixels[keep]):
        small = Image.fromarray(image)
        big = small.resize((image_size, image_size), Image.Resampling.BICUBIC)
        path = os.path.join(out, *name.split("/"))
        tmp = path + ".tmp"  # not an image extension, so a half-written file is never a sample
        big.save(tmp, format="PNG")
        os.replace(tmp, path)
    atomic_write_bytes(Path(marker), json.dumps(settings, sort_keys=True).encode("utf-8"))
    return out


def _first_per_class(targets: Sequence[int], per_class: int | None) -> list[int]:
    """Indices of the first ``per_class`` samples of each class, in order (all of them when None)."""
    if per_class is None:
        return list(range(len(targets)))
    seen: dict[int, int] = {}
    keep = []
    for i, target in enumerate(targets):
        label = int(target)
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return keep


def _already_exported(out: str, marker: str, settings: dict[str, int], names: list[str]) -> bool:
    """True when the marker records these settings and every image is there (nothing to write)."""
    try:
        with open(marker, encoding="utf-8") as handle:
            return json.load(handle) == settings and all(os.path.isfile(os.path.join(out, n)) for n in names)
    except (OSError, ValueError):
        return False
