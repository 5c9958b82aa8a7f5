"""The on-disk format of one feature-store entry, and its lock.

An entry is one key's folder (see :class:`tlkit.train.feature_store.FeatureStore`):

* ``index.json``: the format version, a generation id, a checksum of the data, its shape and
  ``rows`` (file-content hash -> row number);
* ``features.safetensors``: one float32 ``features`` tensor, its metadata naming the same
  generation and checksum;
* ``.lock``: the per-entry :class:`filelock.FileLock` under which rows are read, written and temp
  files cleaned.

A reader trusts an entry only when index and data come from one write, the checksum and shapes
match and every value is finite (:meth:`Entry.read` says why not otherwise).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from tlkit._io import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 2
INDEX, DATA, LOCK = "index.json", "features.safetensors", ".lock"


def printable(path: str | os.PathLike) -> str:
    """``path`` as text any console can print: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class EntryLockError(Exception):
    """The entry's lock could not be taken: held too long by another process, or not creatable here."""


def _checksum(buffer: object) -> str:
    return hashlib.blake2b(buffer, digest_size=16).hexdigest()  # type: ignore[arg-type]


def _load_rows(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """The ``features`` tensor and metadata of a safetensors file written by :meth:`Entry.write`.

    Read with Python's ``open`` (the safetensors loader refuses paths that are not UTF-8) into one
    buffer that becomes the tensor (no second copy of a large entry).
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        length = int.from_bytes(handle.read(8), "little")
        if not 0 < length <= size - 8:
            raise ValueError("bad header length")
        header = json.loads(handle.read(length))
        info = header["features"]
        begin, end = info["data_offsets"]
        count = math.prod(int(n) for n in info["shape"])
        if info["dtype"] != "F32" or begin != 0 or end != 4 * count or 8 + length + end != size or not count:
            raise ValueError("unexpected layout")
        buffer = bytearray(end)
        if handle.readinto(buffer) != end:
            raise ValueError("truncated")
    return torch.frombuffer(buffer, dtype=torch.float32).reshape(info["shape"]), header.get("__metadata__", {})


def _disagreement(index: dict, data: torch.Tensor, meta: dict[str, str]) -> str | None:
    """Why the index and the data of an entry cannot be used together (``None``: they can)."""
    rows = index["rows"]
    if (meta.get("generation"), meta.get("checksum")) != (index.get("generation"), index.get("checksum")):
        return f"{INDEX} and {DATA} come from different writes (an interrupted or concurrent writer)"
    if len(rows) != len(data) or sorted(rows.values()) != list(range(len(data))):
        return f"{INDEX} lists {len(rows)} rows, {DATA} holds {len(data)}"
    if list(index.get("shape", [])) != list(data.shape):
        return f"{INDEX} expects shape {index.get('shape')}, {DATA} holds {list(data.shape)}"
    if meta.get("checksum") != _checksum(data.numpy()):
        return f"the bytes of {DATA} do not match their checksum (changed on disk)"
    bad = int((~torch.isfinite(data.reshape(len(data), -1))).any(1).sum())
    if bad:
        return f"{bad} rows of {DATA} are NaN or infinite"
    return None


class Entry:
    """One key's folder: ``index.json`` (content hash -> row), ``features.safetensors``, ``.lock``."""

    def __init__(self, folder: Path, lock_timeout: float) -> None:
        self.folder, self.lock_timeout = folder, lock_timeout

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the entry's lock (other processes wait); raises :class:`EntryLockError` when it cannot be had."""
        from filelock import FileLock, Timeout

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.folder / LOCK), timeout=self.lock_timeout)
            lock.acquire()
        except Timeout as exc:
            raise EntryLockError(f"another process held {LOCK} for over {self.lock_timeout:g} s") from exc
        except (OSError, NotImplementedError) as exc:
            raise EntryLockError(f"cannot lock {LOCK} ({getattr(exc, 'strerror', None) or exc})") from exc
        try:
            yield
        finally:
            lock.release()

    def generation(self) -> str | None:
        """The generation id the index names now (``None`` when there is no readable index)."""
        try:
            return json.loads((self.folder / INDEX).read_bytes()).get("generation")
        except Exception:  # noqa: BLE001
            return None

    def read(self) -> tuple[dict[str, int], torch.Tensor | None, str | None, str | None]:
        """``(rows, data, generation, why)``; ``why`` says why a present entry cannot be trusted."""
        has_index, has_data = (self.folder / INDEX).is_file(), (self.folder / DATA).is_file()
        if not has_index and not has_data:
            return {}, None, None, None
        if not has_index or not has_data:
            return {}, None, None, f"{INDEX if has_data else DATA} is missing"
        try:
            index = json.loads((self.folder / INDEX).read_bytes())
            rows = index["rows"]
            if index.get("format") != FORMAT_VERSION or not all(type(v) is int for v in rows.values()):
                raise ValueError("not this format")
        except Exception:  # noqa: BLE001
            return {}, None, None, f"{INDEX} is not a tlkit v{FORMAT_VERSION} index"
        try:
            data, meta = _load_rows(self.folder / DATA)
        except Exception as exc:  # noqa: BLE001
            return {}, None, None, f"{DATA} cannot be read ({exc}): truncated or not safetensors"
        why = _disagreement(index, data, meta)
        return ({}, None, None, why) if why else (rows, data, index["generation"], None)

    def write(self, rows: dict[str, int], data: torch.Tensor, described: dict) -> None:
        """Data first, then the index, both naming one new generation (the caller holds the lock)."""
        from safetensors.torch import save

        data = data.contiguous()
        generation, checksum = uuid.uuid4().hex, _checksum(data.numpy())
        atomic_write_bytes(self.folder / DATA, save({"features": data},
                                                    metadata={"generation": generation, "checksum": checksum}))
        atomic_write_text(self.folder / INDEX, json.dumps({**described, "format": FORMAT_VERSION, "generation": generation,
                                                           "checksum": checksum, "shape": list(data.shape), "rows": rows}))

    def drop(self) -> None:
        """Delete the index and the data (the folder and its lock stay)."""
        for name in (INDEX, DATA):
            (self.folder / name).unlink(missing_ok=True)



def dropped_message(folder: Path, why: str) -> str:
    """The line that tells the user an untrusted entry was dropped, and why."""
    return f"feature cache {printable(folder)}: {why}; dropped the entry, its features are computed again"
