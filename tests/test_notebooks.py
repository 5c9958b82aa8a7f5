"""The Jupyter recipes execute top to bottom (small settings: a tiny random backbone, 1 epoch); the committed
ones are what notebooks/_make_notebooks.py writes, with the outputs of a real run (``--execute``) in them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_exist() -> None:
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_NB_BACKBONE", "timm:test_resnet")
    monkeypatch.setenv("TLKIT_NB_PRETRAINED", "0")
    monkeypatch.setenv("TLKIT_NB_IMAGE_SIZE", "32")
    monkeypatch.setenv("TLKIT_NB_EPOCHS", "1")
    monkeypatch.setenv("TLKIT_NB_PER_CLASS", "12")
    monkeypatch.setenv("TLKIT_NB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert os.path.isdir(tmp_path / "work")


ABSOLUTE = re.compile(r"(?<![\w.])/(tmp|work|home|root|Users|var|private|opt|usr)/")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_carry_the_outputs_of_a_real_run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))  # all of them, top to bottom, once
    assert sum(bool(c.outputs) for c in cells) >= len(cells) - 2, "code cells without outputs"
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    plots = [c for c in cells if "plot" in c.source]
    assert all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in plots)  # the figures are kept
    texts = [o.get("text", "") for o in outputs] + [v for o in outputs for k, v in o.get("data", {}).items()
                                                    if not k.startswith("image/") and isinstance(v, str)]
    leaks = [m.group(0) for t in texts for m in [ABSOLUTE.search(t)] if m]
    assert not leaks, f"absolute paths of the machine in the outputs: {leaks[:3]}"
    assert "outputs below are from a real run" in nb.cells[1].source
    assert os.path.getsize(path) < 600_000


def test_committed_notebooks_are_what_the_script_writes(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = NOTEBOOKS[0].parent / "_make_notebooks.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True)
    written = sorted(tmp_path.glob("*.ipynb"))
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    for committed, fresh in zip(NOTEBOOKS, written):  # the sources only: the committed ones have outputs too
        cells = [(c.cell_type, c.source) for c in nbformat.read(committed, as_version=4).cells]
        assert cells == [(c.cell_type, c.source) for c in nbformat.read(fresh, as_version=4).cells], committed.name
