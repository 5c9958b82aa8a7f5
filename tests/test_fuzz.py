"""A small fuzz of the image loader and `check`: corrupted PNG/JPEG files never crash or hang tlkit."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tlkit.data import check, load_image, scan
from tlkit.errors import DataError

N_VARIANTS = 300


def _valid_bytes(fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _variants(seed: int = 0) -> list[tuple[str, bytes]]:
    """(file name, bytes): truncated, bytes flipped, or the wrong extension."""
    rng = np.random.default_rng(seed)
    sources = {"png": _valid_bytes("PNG", 1), "jpg": _valid_bytes("JPEG", 2)}
    out = []
    for i in range(N_VARIANTS):
        ext = ("png", "jpg")[i % 2]
        data = bytearray(sources[ext])
        kind = ("truncate", "flip", "wrong-ext")[i % 3]
        if kind == "truncate":
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == "flip":
            for pos in rng.integers(0, len(data), int(rng.integers(1, 12))):
                data[pos] ^= int(rng.integers(1, 256))
        else:
            ext = "jpg" if ext == "png" else "png"  # the bytes say one format, the name another
            if rng.random() < 0.5:
                data = bytearray(b"not an image at all " * int(rng.integers(0, 5)))
        out.append((f"v{i:03d}-{kind}.{ext}", bytes(data)))
    return out


def test_loader_survives_corrupted_files(tmp_path: Path) -> None:
    outcomes = {"loaded": 0, "refused": 0}
    for name, data in _variants():
        path = tmp_path / name
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            img = load_image(path)
        except DataError as exc:
            assert str(path) in str(exc)  # every refusal names the file
            outcomes["refused"] += 1
        else:
            assert img.mode == "RGB" and img.size[0] > 0
            outcomes["loaded"] += 1
        assert time.perf_counter() - start < 5, f"{name} took too long"
    assert outcomes["refused"] >= N_VARIANTS // 3, outcomes  # truncations and text at least are refused
    print(outcomes)


def test_check_names_every_bad_file_among_corrupted_ones(tmp_path: Path) -> None:
    root = tmp_path / "data"
    bad_expected = set()
    for c, cls in enumerate(("a", "b")):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in range(6):  # enough good images for every split
            (folder / f"good{i}.png").write_bytes(_valid_bytes("PNG", 100 + 10 * c + i))
        for name, data in _variants(seed=c + 7)[:60]:
            path = folder / name
            path.write_bytes(data)
            try:
                load_image(path)
            except DataError:
                bad_expected.add(f"{cls}/{name}")
    report = check(scan(root))
    assert set(report.bad_files) == bad_expected
    assert not report.ok
    listed = " ".join(" ".join(p.paths) for p in report.problems if p.kind == "unreadable")
    assert all(name in listed for name in bad_expected)
