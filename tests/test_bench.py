"""The benchmark script runs end to end in its quick mode and writes every section of its table.

Benchmarks are not tests: nothing here looks at a time or a ratio, only that the script works.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("1. Feature extraction", "2. Frozen-backbone run", "3. Re-fitting the head", "4a. Fine-tune, full images",
            "4b. Fine-tune, cached partial", "5. GPU", "6. Memory")


def test_bench_quick_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    env = {**os.environ, "TLKIT_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "# tlkit benchmark results" in proc.stdout  # the table is printed too
    for section in SECTIONS:
        assert section in text, f"section {section!r} missing from the table"
    assert "no GPU: skipped" in text  # --device defaults to cpu: section 5 says so instead of crashing
    assert "| section | figure |" in text
    assert "| failed |" not in text, text
    assert "uv run python bench/run.py --quick --out" in text  # the exact command is recorded
    # every timing row carries a ratio and both absolute medians
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert len(rows) >= 10
    memory_rows = [r for r in rows if r.startswith("| extraction") or r.startswith("| one fine-tune epoch")]
    assert len(memory_rows) == 2, "memory: one extraction and one fine-tune configuration in quick mode"
    # runs, caches and temporary folders stay out of the working directory
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "cache").exists()
