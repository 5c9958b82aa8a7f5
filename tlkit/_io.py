"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or the whole new one.

Data goes to a temporary file in the target's folder, is flushed and fsynced, then renamed over the
target. The new file gets the mode an ordinary ``open()`` would give it (``0o666`` less the umask),
not the private ``0o600`` of a temp file, so colleagues on a shared server can read reports and
models. Running out of disk space becomes a :class:`~tlkit.errors.ResourceError` that says the
previous file is intact, also where a library (``torch.save``) wraps the OS error in its own.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from tlkit.errors import ResourceError

#: part of every temporary file's name: files with it are left-overs of a killed writer
TMP_MARK = ".tmp-"


def _umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _out_of_space(exc: BaseException) -> bool:
    """ENOSPC, raised as it is or wrapped (torch.save turns it into a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, RuntimeError) and ("No space left" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(handle)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if _out_of_space(exc):
            raise ResourceError(f"disk full while writing {path}; the previous version of the file is intact. "
                                "Free some space (or write elsewhere with --out / --cache-dir) and run again") from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda h: h.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text; characters that cannot be encoded (undecodable file names) are written back as the
    bytes they came from (``surrogateescape``), so a path round-trips."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def clean_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files left by a killed writer below ``folder``; returns what was removed.

    Call it only where no other process writes at the same time (a run directory at its start).
    """
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(f"*{TMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# --------------------------------------------------------------------------------------------
# text that holds file names: undecodable bytes (PEP 383 surrogates) must never break an output

# Lone surrogates: what Python makes of bytes that are not UTF-8 in a file name (PEP 383).
_SURROGATE = re.compile("[\ud800-\udfff]")


def readable_text(text: str) -> str:
    """``text`` with undecodable bytes of a file name shown as ``\\xNN``, safe to print or encode.

    >>> readable_text("caf\\udce9.png")
    'caf\\\\xe9.png'
    """
    text = str(text)
    if not _SURROGATE.search(text):
        return text
    # U+DC80..U+DCFF are escaped bytes (surrogateescape); any other lone surrogate as \udNNN
    return _SURROGATE.sub(
        lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}" if 0xDC80 <= ord(m.group()) <= 0xDCFF
        else f"\\u{ord(m.group()):04x}",
        text,
    )


def csv_bytes(header: list[Any], rows: list[list[Any]]) -> bytes:
    """UTF-8 CSV; a file name's undecodable bytes are written back as they were (surrogateescape)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # a lone surrogate that is no escaped byte (not from a POSIX file name): keep the report,
        # write it as \udNNN text
        return text.encode("utf-8", "backslashreplace")


def json_bytes(data: Any, *, indent: int | None = 2) -> bytes:
    """Readable UTF-8 JSON; only lone surrogates (undecodable file names) become \\udNNN escapes,
    which ``json.load`` turns back into the very same string."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8")
