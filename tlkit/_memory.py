"""Keep freed memory for reuse on a CPU run (Linux, glibc): a training step then stops paying page faults.

A network's activations on a CPU are large blocks (a batch of 32 at 112x112x96 float32 is 154 MB): glibc serves
every block above its mmap threshold (never more than 32 MB) with a fresh ``mmap`` and returns it to the kernel
on ``free``, so each step faults every page of its activations in again, zero-filled by the kernel. On 2 cores
that was a quarter to three quarters of the CPU time in the kernel, and an EfficientNet-Lite0 training step at
224 px took 1.67x as long as with the blocks kept (bench/RESULTS.md, "CPU memory allocator").
:func:`keep_freed_memory` asks glibc (``mallopt``) to serve every block from its heap and keep up to 2 GiB freed
at the top of it, as tcmalloc does and as PyTorch's own caching allocator does on a GPU. The price is a higher
resident size at rest (12% more at the peak measured there), as freed memory is not handed back while the
process runs.

It changes nothing where another allocator is preloaded (tcmalloc, jemalloc, mimalloc), where the user tuned
glibc's mmap and trim settings (``MALLOC_MMAP_MAX_`` and the like, ``GLIBC_TUNABLES``), off Linux or off glibc,
or with ``TLKIT_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "allocator_note"]

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP_BYTES = 2**31 - 1  # the largest a C int allows: 2 GiB
_PRELOADED = ("tcmalloc", "jemalloc", "mimalloc")
_OURS = ("mmap_max", "mmap_threshold", "trim_threshold")  # glibc's settings this module would change

_TUNED = "freed memory kept for reuse (glibc mallopt)"
_done: list[str] = []  # what keep_freed_memory did in this process, once it has been called


def _reason_not_to() -> str | None:
    """Why the allocator is left as it is, or None to tune it."""
    if os.environ.get("TLKIT_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return "TLKIT_KEEP_FREED_MEMORY=0"
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return f"{name} preloaded"
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(f"MALLOC_{name.upper()}_" in os.environ or f"glibc.malloc.{name}" in tunables for name in _OURS):
        return "glibc malloc tuned by the environment"
    return None


def keep_freed_memory() -> bool:
    """Serve large blocks from glibc's heap and keep freed memory for reuse (see the module docstring);
    True when this process's allocator now does. Safe to call any number of times."""
    if not _done:
        reason = _reason_not_to()
        if reason is None:
            try:
                libc = ctypes.CDLL("libc.so.6")
                tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
                reason = None if tuned else "mallopt refused"
            except (OSError, AttributeError):
                reason = "no glibc"
        _done.append(_TUNED if reason is None else f"allocator as it was: {reason}")
    return _done[0] == _TUNED


def allocator_note() -> str | None:
    """What :func:`keep_freed_memory` did in this process, or None when it was not called."""
    return _done[0] if _done else None
