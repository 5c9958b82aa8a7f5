"""Builders shared by the tests of tlkit.data: every image is made in tmp_path, and is a few pixels wide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tlkit.data import CheckReport


def write_image(path: Path, seed: int, size: int = 8, fmt: str | None = None) -> Path:
    """A small RGB image whose pixels depend on ``seed`` (so no two images are identical)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def make_class_folders(root: Path, sizes: dict[str, int], *, reverse: bool = False) -> Path:
    """root/<class>/img_<i>.png with ``sizes[class]`` images each; ``reverse`` flips creation order."""
    items = [(name, i) for name, n in sizes.items() for i in range(n)]
    for name, i in reversed(items) if reverse else items:
        write_image(root / name / f"img_{i:03d}.png", hash_seed(name, i))
    return root


def hash_seed(name: str, i: int) -> int:
    return sum(map(ord, name)) * 1000 + i


def make_split_folders(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """root/<split folder>/<class>/<split>_<i>.png."""
    for split, sizes in layout.items():
        for name, n in sizes.items():
            for i in range(n):
                write_image(root / split / name / f"{split}_{i:03d}.png", hash_seed(split + name, i))
    return root


def make_bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    good = folder / "good.jpg"
    write_image(good, 7, size=32, fmt="JPEG")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = folder / "text.png"
    text.write_text("this is not a picture\n")
    good.unlink()
    return {"empty": empty, "truncated": truncated, "text": text}


def kinds(report: CheckReport, severity: str | None = None) -> list[str]:
    return [p.kind for p in report.problems if severity is None or p.severity == severity]
