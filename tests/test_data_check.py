"""Tests for tlkit.data.check: unreadable files, duplicates, imbalance, and the report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from data_helpers import kinds, make_bad_files, make_class_folders, make_split_folders

from tlkit.data import SPLITS, check, scan


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
