"""Shared fixtures: tiny colour-coded image folders and the settings that keep training runs fast.

Everything is written under pytest's tmp_path; no run ever touches ``~/.cache`` or ``runs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

#: one solid-ish colour per class, so even a randomly initialised backbone + head can learn them
TL_COLORS: dict[str, tuple[int, int, int]] = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _write_color_image(path: Path, color: tuple[int, int, int], seed: int, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-30, 31, (size, size, 3))
    arr = np.clip(np.array(color)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _make_color_dataset(root: Path, counts: dict[str, int] | None = None, size: int = 32) -> Path:
    """root/<class>/img_NN.png, 10 images per class unless ``counts`` says otherwise."""
    counts = counts or {name: 10 for name in TL_COLORS}
    for ci, (name, n) in enumerate(counts.items()):
        color = TL_COLORS.get(name, tuple(int(v) for v in np.random.default_rng(ci).integers(0, 256, 3)))
        for i in range(n):
            _write_color_image(root / name / f"img_{i:02d}.png", color, ci * 1000 + i, size)
    return root


@pytest.fixture
def make_color_dataset() -> Callable[..., Path]:
    """Factory: ``make_color_dataset(root, counts=None, size=32)`` writes a class-folder dataset."""
    return _make_color_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 10 images of 32 px, shared read-only by the tests of a session (do not modify)."""
    return _make_color_dataset(tmp_path_factory.mktemp("tiny_data") / "colors")


@pytest.fixture
def fast_kwargs(tmp_path: Path) -> dict:
    """Overrides for a quick CPU run with its run dir and feature cache inside tmp_path."""
    return dict(backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8,
                out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))



@pytest.fixture(scope="module")
def one_torch_thread():  # noqa: ANN201
    """Tiny models on a small CPU run faster on one intra-op thread; restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tmpfs(tmp_path: Path):  # noqa: ANN201
    """Factory: ``tmpfs("size=64k")`` mounts a small tmpfs (root only; skips elsewhere) and returns its path."""
    import subprocess

    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
