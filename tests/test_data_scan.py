"""Tests for tlkit.data.scan: both folder layouts, the split rule, what is ignored, and the errors (check reports them instead)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from data_helpers import kinds, make_class_folders, make_split_folders, write_image

from tlkit.data import SPLITS, check, list_images, scan
from tlkit.data.scan import find_layout, scan_lenient
from tlkit.errors import ConfigError, DataError

# --------------------------------------------------------------------------- class folders


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


# --------------------------------------------------------------------------- split folders


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


# --------------------------------------------------------------------------- issue 14: trust in the scan


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


# --------------------------------------------------------------------------- the public steps check builds on


def test_find_layout_and_scan_lenient(tmp_path: Path) -> None:
    make_split_folders(tmp_path, {"train": {"a": 3}, "test": {"a": 1, "z": 1}})
    (tmp_path / "train" / "empty").mkdir()
    found = find_layout(str(tmp_path))
    assert found.layout == "split-folders" and found.empty_class_dirs == ["train/empty"]
    assert sorted(found.groups) == ["test", "train"] and sorted(found.groups["test"]) == ["a", "z"]
    with pytest.raises(DataError, match="'z'"):
        scan(tmp_path)
    manifest, empty = scan_lenient(tmp_path)  # a class with no training images is kept, for check to report
    assert manifest.classes == ["a", "z"] and empty == ["train/empty"]
    assert manifest.counts("test") == {"a": 1, "z": 1} and manifest.counts("train") == {"a": 2, "z": 0}
    with pytest.raises(ConfigError, match="val_fraction"):
        scan_lenient(tmp_path, val_fraction=1.0)


def test_list_images(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data", {"a": 2})
    write_image(tmp_path / "data" / ".hidden" / "x.png", 9)
    loose = write_image(tmp_path / "one.png", 3)
    assert list_images([loose, tmp_path / "data"]) == [str(loose)] + [str(tmp_path / "data" / "a" / f"img_{i:03d}.png") for i in range(2)]
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no images in folder"):
        list_images([tmp_path / "none"])
    with pytest.raises(DataError, match="no such file or folder"):
        list_images([tmp_path / "missing.png"])
