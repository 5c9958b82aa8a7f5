"""Tests for tlkit.train.feature_entries: one entry's files, the checks a reader makes, dropping it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tlkit.train.feature_entries import DATA, FORMAT_VERSION, INDEX, Entry, dropped_message, printable


def _written(folder: Path) -> tuple[Entry, dict[str, int], torch.Tensor]:
    entry = Entry(folder, lock_timeout=5.0)
    rows, data = {"aa": 0, "bb": 1}, torch.arange(6, dtype=torch.float32).reshape(2, 3)
    with entry.locked():
        entry.write(rows, data, {"backbone": "test"})
    return entry, rows, data


def test_a_written_entry_reads_back_with_its_generation(tmp_path: Path) -> None:
    entry, rows, data = _written(tmp_path / "e")
    got_rows, got_data, generation, why = entry.read()
    assert why is None and got_rows == rows and torch.equal(got_data, data)
    assert generation == entry.generation() is not None
    index = json.loads((tmp_path / "e" / INDEX).read_text())
    assert (index["format"], index["shape"], index["backbone"]) == (FORMAT_VERSION, [2, 3], "test")


def test_an_empty_folder_is_no_entry_and_half_an_entry_is_untrusted(tmp_path: Path) -> None:
    assert Entry(tmp_path / "none", 5.0).read() == ({}, None, None, None)
    entry, _, _ = _written(tmp_path / "e")
    (tmp_path / "e" / DATA).unlink()
    rows, data, generation, why = entry.read()
    assert (rows, data, generation) == ({}, None, None) and why == f"{DATA} is missing"
    entry.drop()
    assert not (tmp_path / "e" / INDEX).exists() and entry.generation() is None


def test_messages_name_the_folder_printably(tmp_path: Path) -> None:
    folder = tmp_path / "cache-\udcff"  # a byte that is not UTF-8
    assert printable(folder).endswith("cache-\\xff")
    message = dropped_message(folder, "it broke")
    assert "cache-\\xff" in message and "it broke" in message and "dropped" in message
