"""Tests for tlkit.data: every image is made here, in tmp_path, and is a few pixels wide."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from tlkit.data import (
    IMAGE_EXTENSIONS,
    SPLITS,
    CheckReport,
    ImageDataset,
    Manifest,
    check,
    export_digits,
    load_image,
    safe_name,
    scan,
)
from tlkit.errors import ConfigError, DataError, TlkitError

# --------------------------------------------------------------------------- helpers


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


def rgb_array(path: Path) -> np.ndarray:
    image = load_image(path)
    tensor = pil_to_tensor(image)
    assert tensor.shape[0] == 3 and tensor.dtype == torch.uint8
    return tensor.permute(1, 2, 0).numpy()


def kinds(report: CheckReport, severity: str | None = None) -> list[str]:
    return [p.kind for p in report.problems if severity is None or p.severity == severity]


# --------------------------------------------------------------------------- load_image: modes


def test_mode_l(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 6), 100, np.uint8)).save(tmp_path / "l.png")
    pixels = rgb_array(tmp_path / "l.png")
    assert pixels.shape == (4, 6, 3)
    assert (pixels == 100).all()


def test_mode_la_composited_over_white(tmp_path: Path) -> None:
    data = np.zeros((2, 2, 2), np.uint8)  # black everywhere
    data[0, 0, 1] = 0  # fully transparent -> white
    data[0, 1, 1] = 255  # opaque -> black
    data[1, :, 1] = 128  # half -> mid grey
    Image.fromarray(data, "LA").save(tmp_path / "la.png")
    pixels = rgb_array(tmp_path / "la.png")
    assert (pixels[0, 0] == 255).all()
    assert (pixels[0, 1] == 0).all()
    assert np.all(np.abs(pixels[1].astype(int) - 127) <= 1)


def test_mode_p_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putdata([0, 1, 0])
    image.save(tmp_path / "p.png", transparency=0)  # red is the transparent colour
    assert Image.open(tmp_path / "p.png").mode == "P"
    pixels = rgb_array(tmp_path / "p.png")
    assert pixels[0].tolist() == [[255, 255, 255], [0, 0, 255], [255, 255, 255]]


def test_mode_p_without_transparency_gif(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (0, 0, 255)).convert("P").save(tmp_path / "p.gif")
    assert (rgb_array(tmp_path / "p.gif") == [0, 0, 255]).all()


def test_mode_rgba(tmp_path: Path) -> None:
    data = np.array([[[255, 0, 0, 0], [0, 255, 0, 255]]], np.uint8)
    Image.fromarray(data, "RGBA").save(tmp_path / "rgba.png")
    assert rgb_array(tmp_path / "rgba.png")[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_mode_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (200, 40, 40)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    pixels = rgb_array(tmp_path / "cmyk.jpg")
    assert np.abs(pixels.reshape(-1, 3).mean(0) - [200, 40, 40]).max() < 8


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_is_scaled_not_saturated(tmp_path: Path, mode: str) -> None:
    values = np.array([[0, 257 * 100, 32896, 65535]], np.uint16)
    if mode == "I;16":
        Image.fromarray(values).save(tmp_path / "g16.png")  # a real 16-bit PNG
        path = tmp_path / "g16.png"
        assert Image.open(path).mode == "I;16"
    elif mode == "I;16B":
        path = tmp_path / "g16b.tif"
        Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes()).save(path)
    else:
        path = tmp_path / "g32.tif"
        Image.fromarray(values.astype(np.int32)).save(path)
        assert Image.open(path).mode == "I"
    pixels = rgb_array(path)
    assert pixels[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_mode_1_bit(tmp_path: Path) -> None:
    data = np.array([[True, False], [False, True]])
    Image.fromarray(data).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    pixels = rgb_array(tmp_path / "bits.png")
    assert pixels[..., 1].tolist() == [[255, 0], [0, 255]]


def test_mode_float(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert rgb_array(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # 32 wide x 16 tall, red block in the top-left corner, the rest blue.
    data = np.zeros((16, 32, 3), np.uint8)
    data[..., 2] = 255
    data[:8, :8] = [255, 0, 0]
    image = Image.fromarray(data)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.size == (16, 32)  # width and height swapped
    pixels = np.asarray(loaded).astype(int)
    # Turning clockwise moves the top-left corner to the top-right.
    assert pixels[2, 13, 0] > 200 and pixels[2, 13, 2] < 60
    assert pixels[2, 2, 0] < 60 and pixels[2, 2, 2] > 200


def test_load_image_returns_loaded_rgb_and_closes_file(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", 1)
    image = load_image(path)
    os.remove(path)  # the pixels are already in memory
    assert image.mode == "RGB" and image.size == (8, 8)
    assert np.asarray(image).shape == (8, 8, 3)


# --------------------------------------------------------------------------- load_image: bad files


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


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_bad_file_raises_data_error_naming_it(tmp_path: Path, kind: str) -> None:
    path = make_bad_files(tmp_path)[kind]
    with pytest.raises(DataError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "cannot read image" in message and "\n" not in message


def test_missing_file_and_folder_named_png(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match="not a regular file"):
        load_image(tmp_path / "dir.png")


@pytest.mark.parametrize("side", [12, 16])  # 144 px: Pillow warns; 256 px: Pillow raises
def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    path = write_image(tmp_path / "bomb.png", 3, size=side)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="too large") as info:
        load_image(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- scan: class folders


def test_scan_class_folders_stratified_counts(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 40, "b": 20, "c": 7, "d": 3, "e": 2, "f": 1})
    m = scan(tmp_path, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert m.layout == "class-folders" and m.root == str(tmp_path.resolve())
    assert m.classes == ["a", "b", "c", "d", "e", "f"]
    expected = {  # (train, val, test) per the documented rule
        "a": (28, 6, 6), "b": (14, 3, 3), "c": (5, 1, 1), "d": (1, 1, 1), "e": (1, 0, 1), "f": (1, 0, 0),
    }
    for name, (n_train, n_val, n_test) in expected.items():
        assert (m.counts("train")[name], m.counts("val")[name], m.counts("test")[name]) == (n_train, n_val, n_test)
    # Every file exactly once, labels match the folder, paths relative posix and sorted.
    everything = [rel for s in SPLITS for rel, _ in m.splits[s]]
    assert len(everything) == len(set(everything)) == 73
    for split in SPLITS:
        rels = [rel for rel, _ in m.splits[split]]
        assert rels == sorted(rels)
        for rel, label in m.splits[split]:
            assert rel.split("/")[0] == m.classes[label]
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in m.paths(split))
    assert m.labels("train") == [label for _, label in m.splits["train"]]


def test_scan_is_repeatable_and_seed_dependent(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 30, "b": 30})
    first = scan(tmp_path, seed=1).to_dict()
    assert scan(tmp_path, seed=1).to_dict() == first
    assert scan(tmp_path, seed=2).to_dict()["splits"] != first["splits"]


def test_scan_independent_of_creation_order(tmp_path: Path) -> None:
    sizes = {"b": 12, "a": 9}
    one = scan(make_class_folders(tmp_path / "one", sizes), seed=5)
    two = scan(make_class_folders(tmp_path / "two", sizes, reverse=True), seed=5)
    assert one.splits == two.splits and one.classes == two.classes


def test_scan_zero_fractions_and_nested_folders(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 4, "b": 4})
    write_image(tmp_path / "a" / "deeper" / "nested" / "x.JPG", 99, fmt="JPEG")
    m = scan(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert m.counts("train") == {"a": 5, "b": 4}
    assert "a/deeper/nested/x.JPG" in [rel for rel, _ in m.splits["train"]]
    assert m.counts("val") == m.counts("test") == {"a": 0, "b": 0}


def test_hidden_and_foreign_entries_ignored(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"cat": 3, "dog": 3})
    write_image(tmp_path / ".ipynb_checkpoints" / "x.png", 1)
    write_image(tmp_path / "cat" / ".ipynb_checkpoints" / "cp.png", 2)
    write_image(tmp_path / ".git" / "objects" / "y.png", 3)
    write_image(tmp_path / "__MACOSX" / "cat" / "z.png", 4)
    write_image(tmp_path / "dog" / "._img_000.png", 5)  # AppleDouble litter
    write_image(tmp_path / "loose.png", 6)  # loose files in root are not a class
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "cat" / "notes.txt").write_text("labels checked by Ann")
    (tmp_path / "dog" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not images")
    m = scan(tmp_path)
    assert m.classes == ["cat", "dog"]
    everything = [rel for s in SPLITS for rel, _ in m.splits[s]]
    assert sorted(everything) == [f"{c}/img_{i:03d}.png" for c in ("cat", "dog") for i in range(3)]
    report = check(tmp_path)
    assert report.ok and report.bad_files == []
    assert kinds(report) == ["empty-class"]
    assert report.problems[0].paths == ["notes"]


def test_empty_class_folder_dropped_and_reported(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "c").mkdir()
    m = scan(tmp_path)
    assert m.classes == ["a", "b"]
    report = check(tmp_path)
    assert report.ok
    empty = [p for p in report.problems if p.kind == "empty-class"]
    assert len(empty) == 1 and empty[0].severity == "warning" and empty[0].paths == ["c"]
    # Same finding when checking a manifest rather than a path.
    assert [p.paths for p in check(m).problems if p.kind == "empty-class"] == [["c"]]


def test_single_class(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"only": 5})
    with pytest.raises(DataError, match="at least 2 classes") as info:
        scan(tmp_path)
    assert str(tmp_path) in str(info.value) and "'only'" in str(info.value)
    report = check(tmp_path)
    assert not report.ok and kinds(report, "error") == ["single-class"]


def test_no_images_and_missing_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        scan(tmp_path)
    assert "no-images" in kinds(check(tmp_path), "error")
    with pytest.raises(DataError, match="does not exist") as info:
        scan(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        check(tmp_path / "missing")
    with pytest.raises(DataError, match="not a folder"):
        scan(tmp_path / "a" / "notes.txt")


def test_class_with_one_image(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"big": 10, "tiny": 1})
    m = scan(tmp_path)
    assert m.counts("train")["tiny"] == 1 and m.counts()["tiny"] == 1
    report = check(m)
    small = [p for p in report.problems if p.kind == "too-small"]
    assert len(small) == 1 and small[0].severity == "warning" and "'tiny'" in small[0].message
    assert report.ok


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction"),
        ({"val_fraction": "0.2"}, "val_fraction"),
    ],
)
def test_bad_fractions(tmp_path: Path, kwargs: dict, field_name: str) -> None:
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    with pytest.raises(ConfigError) as info:
        scan(tmp_path, **kwargs)
    assert field_name in str(info.value)


def test_unicode_and_spaces_round_trip(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", {"défaut rayé": 4, "класс 2": 4, "ok": 4})
    m = scan(data)
    assert m.classes == sorted(["défaut rayé", "класс 2", "ok"])
    m.save(tmp_path / "splits.json")
    assert "défaut rayé" in (tmp_path / "splits.json").read_text(encoding="utf-8")
    loaded = Manifest.load(tmp_path / "splits.json")
    assert loaded == m
    assert all(Path(p).is_file() for s in SPLITS for p in loaded.paths(s))
    assert all(safe_name(c) == c for c in m.classes)


@pytest.mark.parametrize(
    "name", ["../x", "..x", "x..", "..", ".", "", "a/b", "a\\b", "..\\..\\etc", "con", "tab\there", "nul\x00l", "/abs", "x" * 300]
)
def test_safe_name_never_escapes(tmp_path: Path, name: str) -> None:
    slug = safe_name(name)
    assert slug and "/" not in slug and "\\" not in slug and ".." not in slug and "\x00" not in slug
    assert not slug.startswith(".") and len(slug.encode()) <= 200
    target = (tmp_path / slug).resolve()
    assert target.parent == tmp_path.resolve()
    target.write_text("ok")  # the slug is a valid file name here
    assert safe_name(name) == slug


def test_safe_name_keeps_distinct_names_distinct() -> None:
    names = ["../x", "..x", "x", "_x", "a/b", "a_b", "a\\b"]
    assert len({safe_name(n) for n in names}) == len(names)
    assert safe_name("cat") == "cat"


# --------------------------------------------------------------------------- scan: split folders


def test_split_folders_used_as_given(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"train": {"a": 4, "b": 3}, "val": {"a": 2, "b": 1}, "test": {"a": 1, "b": 2}})
    m = scan(tmp_path, seed=123)
    assert m.layout == "split-folders" and m.classes == ["a", "b"]
    assert m.counts("train") == {"a": 4, "b": 3}
    assert m.counts("val") == {"a": 2, "b": 1}
    assert m.counts("test") == {"a": 1, "b": 2}
    for split in SPLITS:
        assert all(rel.startswith(f"{split}/") for rel, _ in m.splits[split])
    assert scan(tmp_path, seed=9).splits == m.splits  # the seed does not move given splits


def test_split_folders_missing_val_and_test_split_off_train(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"train": {"a": 20, "b": 20}})
    m = scan(tmp_path, val_fraction=0.2, test_fraction=0.1)
    assert m.layout == "split-folders"
    assert m.counts("val") == {"a": 4, "b": 4}
    assert m.counts("test") == {"a": 2, "b": 2}
    assert m.counts("train") == {"a": 14, "b": 14}


def test_split_folders_valid_alias_and_missing_test(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"Train": {"a": 20, "b": 10}, "valid": {"a": 2, "b": 2}})
    m = scan(tmp_path, val_fraction=0.3, test_fraction=0.1)
    assert m.counts("val") == {"a": 2, "b": 2}  # given, not cut from train
    assert all(rel.startswith("valid/") for rel, _ in m.splits["val"])
    assert m.counts("test") == {"a": 2, "b": 1}
    assert m.counts("train") == {"a": 18, "b": 9}
    assert all(rel.startswith("Train/") for rel, _ in m.splits["test"])


def test_split_folders_class_union_and_orphan_class(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"train": {"a": 3, "b": 3}, "val": {"a": 1}, "test": {"a": 1, "b": 1, "c": 1}})
    with pytest.raises(DataError, match="'c'") as info:
        scan(tmp_path)
    assert "train" in str(info.value)
    report = check(tmp_path)  # check reports it instead of raising
    assert report.classes == ["a", "b", "c"]
    assert any(p.kind == "too-small" and p.severity == "error" and "'c'" in p.message for p in report.problems)
    assert report.counts["val"] == {"a": 1, "b": 0, "c": 0}


# --------------------------------------------------------------------------- check


@pytest.mark.parametrize("layout", ["class-folders", "split-folders"])
def test_check_lists_every_bad_file_and_skip(tmp_path: Path, layout: str) -> None:
    base = tmp_path if layout == "class-folders" else tmp_path / "train"
    make_class_folders(base, {"a": 6, "b": 6})
    bad = make_bad_files(base / "a")
    report = check(tmp_path)
    expected = sorted(Path(p).relative_to(tmp_path).as_posix() for p in bad.values())
    assert report.bad_files == expected
    unreadable = [p for p in report.problems if p.kind == "unreadable"]
    assert sorted(p.paths[0] for p in unreadable) == expected
    assert all(p.severity == "error" for p in unreadable) and not report.ok
    # The explicit skip path: leave them out and record why.
    m = scan(tmp_path).without(report.bad_files, "unreadable image")
    assert [e["path"] for e in m.skipped] == expected
    assert m.counts() == {"a": 6, "b": 6}
    assert check(m).ok


def test_check_never_hangs_or_crashes_on_weird_files(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    os.mkfifo(tmp_path / "a" / "pipe.png")  # opening a FIFO would block forever
    (tmp_path / "a" / "garbage.webp").write_bytes(os.urandom(300))
    (tmp_path / "b" / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    report = check(tmp_path)
    assert report.bad_files == ["a/garbage.webp", "b/header_only.png"]  # the FIFO is not a sample


def test_check_duplicates_across_and_within_splits(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    shutil.copy(tmp_path / "train/a/train_000.png", tmp_path / "test/a/leak.png")
    shutil.copy(tmp_path / "train/b/train_000.png", tmp_path / "train/b/copy.png")
    report = check(tmp_path)
    across = [p for p in report.problems if p.kind == "duplicate-across-splits"]
    within = [p for p in report.problems if p.kind == "duplicate-within-split"]
    assert len(across) == 1 and across[0].severity == "error"
    assert across[0].paths == ["test/a/leak.png", "train/a/train_000.png"]
    assert "test/a/leak.png" in across[0].message and "train/a/train_000.png" in across[0].message
    assert len(within) == 1 and within[0].severity == "warning"
    assert within[0].paths == ["train/b/copy.png", "train/b/train_000.png"]
    assert not report.ok


def test_check_imbalance(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"many": 30, "few": 3})
    report = check(tmp_path)
    assert kinds(report) == ["imbalance"] and report.problems[0].severity == "warning"
    assert "'many'" in report.problems[0].message and "'few'" in report.problems[0].message
    assert report.ok and report.warnings and not report.errors
    assert check(tmp_path, imbalance_ratio=11).problems == []


def test_check_clean_dataset_and_to_dict(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 5, "b": 6})
    report = check(tmp_path, verify_images=False)
    assert report.ok and report.problems == [] and report.errors == []
    assert report.counts["train"]["a"] + report.counts["val"]["a"] + report.counts["test"]["a"] == 5
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["ok"] is True and payload["classes"] == ["a", "b"] and set(payload["counts"]) == set(SPLITS)


# --------------------------------------------------------------------------- manifest files


def test_manifest_save_load_and_move(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", {"a": 6, "b": 6})
    m = scan(data, seed=3).without(["a/img_000.png"], "blurry")
    target = tmp_path / "run" / "splits.json"
    m.save(target)
    text = target.read_text(encoding="utf-8")
    m.save(target)
    assert target.read_text(encoding="utf-8") == text  # deterministic bytes
    assert [p.name for p in target.parent.iterdir()] == ["splits.json"]  # no temp file left
    loaded = Manifest.load(target)
    assert loaded == m and loaded.skipped == [{"path": "a/img_000.png", "reason": "blurry"}]
    assert Manifest.from_dict(json.loads(text)) == m
    # Moving the dataset: point the manifest at the new root.
    shutil.move(str(data), str(tmp_path / "moved"))
    moved = Manifest.load(target, root=str(tmp_path / "moved"))
    assert moved.splits == m.splits
    assert all(Path(p).is_file() for s in SPLITS for p in moved.paths(s))


@pytest.mark.parametrize(
    "content", ['{"root": "/x", "classes": ["a"', "[1, 2]", '{"root": "/x"}', "\udcff"], ids=["truncated", "list", "fields", "bytes"]
)
def test_manifest_load_corrupt(tmp_path: Path, content: str) -> None:
    path = tmp_path / "splits.json"
    if content == "\udcff":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(content)
    with pytest.raises(TlkitError) as info:
        Manifest.load(path)
    assert isinstance(info.value, (ConfigError, DataError)) and str(path) in str(info.value)


def test_manifest_load_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read manifest"):
        Manifest.load(tmp_path / "nope.json")


def test_manifest_unknown_split(tmp_path: Path) -> None:
    m = scan(make_class_folders(tmp_path, {"a": 3, "b": 3}))
    with pytest.raises(ConfigError, match="unknown split"):
        m.paths("validation")


# --------------------------------------------------------------------------- ImageDataset


def test_image_dataset_with_transform(tmp_path: Path) -> None:
    m = scan(make_class_folders(tmp_path, {"a": 3, "b": 3}), val_fraction=0, test_fraction=0)
    dataset = ImageDataset(m.paths("train"), m.labels("train"), transform=pil_to_tensor)
    assert len(dataset) == 6
    x, y, i = dataset[4]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 8, 8) and x.dtype == torch.uint8
    assert (y, i) == (m.labels("train")[4], 4)
    assert torch.equal(x, pil_to_tensor(Image.open(m.paths("train")[4]).convert("RGB")))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=6)))
    assert batch[0].shape == (6, 3, 8, 8) and batch[2].tolist() == list(range(6))
    assert batch[1].tolist() == m.labels("train")


def test_image_dataset_without_labels_or_transform(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", 1)
    image, label, index = ImageDataset([str(path)])[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and (label, index) == (-1, 0)
    with pytest.raises(IndexError):
        ImageDataset([str(path)])[1]
    with pytest.raises(DataError):
        ImageDataset([str(path)], [0, 1])


# --------------------------------------------------------------------------- demo data


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


def test_image_extensions_constant() -> None:
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
    assert SPLITS == ("train", "val", "test")


# --------------------------------------------------------------------------- issue 14: trust in the scan and the manifest


def test_a_looping_link_in_the_data_is_ignored_not_a_crash(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"cat": 3, "dog": 3})
    os.symlink("loop.png", tmp_path / "cat" / "loop.png")  # a file link to itself
    os.symlink("self", tmp_path / "self")  # a folder link to itself
    os.symlink(".", tmp_path / "dog" / "here")  # a folder link back up
    m = scan(tmp_path)
    assert m.classes == ["cat", "dog"] and sum(m.counts().values()) == 6
    assert check(m).ok


def test_a_class_named_train_is_a_class(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"train": 4, "bus": 4, "car": 4})
    m = scan(tmp_path)
    assert m.layout == "class-folders" and m.classes == ["bus", "car", "train"]


def test_a_train_split_beside_class_folders_is_named_as_ambiguous(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"train": {"cat": 3, "dog": 3}})
    make_class_folders(tmp_path, {"bird": 3})
    with pytest.raises(DataError, match=r"mixes two layouts.*bird"):
        scan(tmp_path)


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "cat/../../x.png", "..\\x.png", "C:/x.png", ""])
def test_manifest_paths_that_leave_the_data_root_are_refused(tmp_path: Path, bad: str) -> None:
    make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3})
    m = scan(tmp_path / "data")
    d = m.to_dict()
    d["splits"]["test"].append([bad, 0])
    (tmp_path / "splits.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="leaves the data folder"):
        Manifest.load(tmp_path / "splits.json")
