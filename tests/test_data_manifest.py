"""Tests for tlkit.data.manifest: save, load, move, corrupt files, and paths that would leave the data root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_helpers import make_class_folders

from tlkit.data import SPLITS, Manifest, safe_name, scan
from tlkit.errors import ConfigError, DataError, TlkitError


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


def test_splits_constant() -> None:
    assert SPLITS == ("train", "val", "test")


# --------------------------------------------------------------------------- issue 14: trust in the manifest


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "cat/../../x.png", "..\\x.png", "C:/x.png", ""])


def test_manifest_paths_that_leave_the_data_root_are_refused(tmp_path: Path, bad: str) -> None:
    make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3})
    m = scan(tmp_path / "data")
    d = m.to_dict()
    d["splits"]["test"].append([bad, 0])
    (tmp_path / "splits.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="leaves the data folder"):
        Manifest.load(tmp_path / "splits.json")
