"""Per-file hashes the doctor needs: a digest of the decoded pixels, a 64-bit perceptual hash and a thumbnail.

All three come from one decode of the file with :func:`tlkit.data.load_image` (so a file the doctor
hashes is one training can read) and are cached by the BLAKE2b of the file's bytes (the feature
store's key) in ``<cache_dir>/doctor-hashes.npz``: a second call decodes nothing.

* the **pixel digest** (BLAKE2b of the RGB bytes and the size) finds exact copies that were
  written again (a PNG saved anew, metadata stripped): same picture, other bytes;
* the **perceptual hash** is ``imagehash.phash`` (8x8 low frequencies of the DCT of a 32x32 grey
  image, each bit "above the median"); the Hamming distance between two hashes is how many of the
  64 bits differ;
* the **thumbnail** is the grey image resized to 32x32 (bicubic, antialiased), then blurred
  (Gaussian, radius 1 px): 1,024 bytes. The correlation of two thumbnails (each less its mean,
  scaled to length 1) is close to 1 for a resized, re-encoded or brightened copy, which moves no
  pixel; the blur absorbs resampling and JPEG noise. ``bench/doctor.py calibrate`` compares sizes
  and blurs (32 px with the blur kept copies and distinct pictures furthest apart).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from tlkit._io import atomic_write_bytes
from tlkit.errors import DataError

CACHE_NAME = "doctor-hashes.npz"
CACHE_VERSION = 3
HASH_BITS = 64
THUMB_SIZE = 32
THUMB_BLUR = 1.0
#: bytes per cached row: content id, pixel digest, perceptual hash, thumbnail
_ID, _PIX, _PH, _TH = 16, 16, HASH_BITS // 8, THUMB_SIZE * THUMB_SIZE


@dataclass
class FileHashes:
    """Hashes of readable files (in the order asked, without the unreadable ones) and why others failed."""

    readable: list[int] = field(default_factory=list)  # positions (in the paths asked for) of the files that decoded
    rows: list[bytes] = field(default_factory=list)  # one packed row per readable file (see pack)
    unreadable: list[tuple[int, str]] = field(default_factory=list)  # (position, one-line reason)
    computed: int = 0

    def _matrix(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.rows), dtype=np.uint8).reshape(len(self.rows), -1)

    @property
    def pixel_digests(self) -> list[str]:
        return [row[:_PIX].hex() for row in self.rows]

    def bits(self) -> np.ndarray:
        """The perceptual hashes as an ``N x 64`` boolean matrix (most significant bit first)."""
        if not self.rows:
            return np.zeros((0, HASH_BITS), dtype=bool)
        return np.unpackbits(self._matrix()[:, _PIX:_PIX + _PH], axis=1).astype(bool)

    def contrast(self) -> np.ndarray:
        """Standard deviation of each thumbnail's grey levels (0-255): near 0 for a blank frame."""
        if not self.rows:
            return np.zeros(0, dtype=np.float32)
        return self._matrix()[:, _PIX + _PH:].astype(np.float32).std(1)

    def thumbnail_rows(self) -> np.ndarray:
        """The thumbnails as ``N x 1024`` float32 rows, each less its mean and scaled to length 1 (a flat one is all zero)."""
        if not self.rows:
            return np.zeros((0, _TH), dtype=np.float32)
        return unit_thumbnails(self._matrix()[:, _PIX + _PH:])


def unit_thumbnails(raw: np.ndarray) -> np.ndarray:
    """uint8 thumbnails -> float32 rows with mean 0 and length 1 (0 where the thumbnail is flat)."""
    rows = raw.astype(np.float32)
    rows -= rows.mean(1, keepdims=True)
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 1e-3)


def thumbnail(image: Image.Image) -> bytes:
    """The 32x32 blurred grey thumbnail of an image (see the module docstring)."""
    small = image.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.BICUBIC)
    return small.filter(ImageFilter.GaussianBlur(THUMB_BLUR)).tobytes()


def image_hashes(path: str) -> bytes:
    """One packed row: pixel digest (16 bytes), perceptual hash (8), thumbnail (1,024); DataError if unreadable."""
    import imagehash

    from tlkit.data import load_image

    image = load_image(path)
    digest = hashlib.blake2b(digest_size=_PIX)
    digest.update(f"{image.size[0]}x{image.size[1]}".encode())
    digest.update(image.tobytes())
    return digest.digest() + bytes.fromhex(str(imagehash.phash(image))) + thumbnail(image)


def read_cache(file: Path) -> dict[bytes, bytes]:
    """content id -> packed row, from the cache file ({} when it is missing, foreign or damaged)."""
    try:
        with np.load(file, allow_pickle=False) as data:
            if int(data["version"]) != CACHE_VERSION:
                return {}
            ids, rows = data["ids"], data["rows"]
    except (OSError, ValueError, KeyError, EOFError):
        return {}
    if ids.ndim != 2 or rows.ndim != 2 or ids.shape[1] != _ID or rows.shape[1] != _PIX + _PH + _TH or len(ids) != len(rows):
        return {}
    return {bytes(i): bytes(r) for i, r in zip(ids, rows)}


def write_cache(file: Path, rows: dict[bytes, bytes], messages: list[str]) -> None:
    """Merge ``rows`` into the cache file under its lock; a cache that cannot be written is only a message."""
    from filelock import FileLock, Timeout

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(file) + ".lock", timeout=60):
            merged = {**read_cache(file), **rows}
            keys = sorted(merged)
            buffer = io.BytesIO()
            np.savez(buffer, version=np.array(CACHE_VERSION),
                     ids=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _ID),
                     rows=np.frombuffer(b"".join(merged[k] for k in keys), dtype=np.uint8).reshape(len(keys), -1))
            atomic_write_bytes(file, buffer.getvalue())
    except (OSError, Timeout) as exc:
        messages.append(f"image hashes not cached in {file.parent} ({getattr(exc, 'strerror', None) or exc})")


def file_hashes(paths: Sequence[str], content_ids: Sequence[str | None], cache_dir: str | os.PathLike | None,
                messages: list[str], progress: Callable[[int, int], None] | None = None) -> FileHashes:
    """Hashes of every path (``content_ids[i]`` None: the file's bytes could not be read).

    Unreadable files are listed with their reason, never raised.
    """
    file = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    cached = read_cache(file) if file is not None else {}
    result = FileHashes()
    fresh: dict[bytes, bytes] = {}
    for i, (path, cid) in enumerate(zip(paths, content_ids)):
        if cid is None:
            result.unreadable.append((i, "cannot read the file"))
            continue
        key = bytes.fromhex(cid)
        row = cached.get(key) or fresh.get(key)
        if row is None:
            try:
                row = image_hashes(path)
            except DataError as exc:
                result.unreadable.append((i, str(exc)))
                continue
            fresh[key] = row
        result.readable.append(i)
        result.rows.append(row)
        if progress is not None and (i + 1) % 64 == 0:
            progress(i + 1, len(paths))
    if progress is not None:
        progress(len(paths), len(paths))
    result.computed = len(fresh)
    if fresh and file is not None:
        write_cache(file, fresh, messages)
    return result
