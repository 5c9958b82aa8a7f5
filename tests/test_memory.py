"""tlkit._memory: a CPU run keeps freed memory for reuse, so large blocks stop faulting their pages in again.

Each case runs in a fresh Python (the setting is per process and cannot be undone) and counts the page faults
of allocating, filling and freeing a 64 MB tensor twenty times (after ten that let the heap grow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

PROBE = """
import json, resource, torch
from tlkit.train.devices import resolve_device
from tlkit._memory import allocator_note
resolve_device("cpu")
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # the first blocks fault in either way, while glibc's heap grows to hold them
    torch.ones(16_000_000).sum()
before = faults()
for _ in range(20):
    torch.ones(16_000_000).sum()  # 64 MB: over glibc's largest mmap threshold (32 MB)
print(json.dumps({"faults": faults() - before, "note": allocator_note()}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("TLKIT_KEEP_FREED_MEMORY", "LD_PRELOAD", "GLIBC_TUNABLES")
             and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cpu_run_reuses_freed_blocks_instead_of_faulting_them_in_again() -> None:
    tuned, plain = _probe(), _probe(TLKIT_KEEP_FREED_MEMORY="0")
    assert tuned["note"] == "freed memory kept for reuse (glibc mallopt)"
    assert plain["note"] == "allocator as it was: TLKIT_KEEP_FREED_MEMORY=0"
    pages = 20 * 64_000_000 // 4096
    assert plain["faults"] > 0.9 * pages  # every block faulted in again: what the tuning is for
    assert tuned["faults"] < 0.3 * pages  # mostly none (glibc's heap may still grow once or twice)


@pytest.mark.parametrize("env, says", [({"MALLOC_MMAP_MAX_": "65536"}, "tuned by the environment"),
                                       ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "tuned by the environment")])
def test_a_users_own_malloc_settings_are_left_alone(env: dict, says: str) -> None:
    assert says in _probe(**env)["note"]
