"""Tests for tlkit.data.digits: the demo data export."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tlkit.data import export_digits, scan


def test_export_digits(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    assert export_digits(out, image_size=16) == str(out)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [str(d) for d in range(10)]
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 1797
    assert (out / "0" / "0_0000.png").is_file()
    with Image.open(files[0]) as first:
        assert first.mode == "L" and first.size == (16, 16)
    stamp = (out / "0" / "0_0000.png").stat().st_mtime_ns
    export_digits(out, image_size=16)  # complete already: nothing rewritten
    assert (out / "0" / "0_0000.png").stat().st_mtime_ns == stamp
    m = scan(out)
    assert m.classes == [str(d) for d in range(10)] and sum(m.counts().values()) == 1797


def test_export_digits_per_class_keeps_the_first_images_of_each_digit(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    export_digits(out, image_size=8, per_class=2)
    names = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.png"))
    # the data set cycles 0..9, so the first two of digit d are samples d and d + 10
    assert names == sorted(f"{d}/{d}_{i:04d}.png" for d in range(10) for i in (d, d + 10))
    assert scan(out).counts() == {str(d): 2 for d in range(10)}
