"""Writing a sweep to a folder: ``sweep.json`` (the ``--json`` object), ``sweep.csv`` (one row per
backbone, best first) and ``sweep.png`` (accuracy against latency). Each file is written atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

from tlkit._io import atomic_write_bytes, csv_bytes, json_bytes
from tlkit.selection.display import SweepDisplay
from tlkit.selection.result import SweepResult

#: sweep.csv columns, in order
CSV_COLUMNS = ("rank", "backbone", "canonical", "accuracy", "ci_low", "ci_high", "balanced_accuracy", "diff_vs_best",
               "diff_ci_low", "diff_ci_high", "significantly_worse", "params", "feature_dim", "input_size",
               "images_per_second", "images_per_second_source", "latency_ms", "weights_source", "features_computed")


def csv_rows(result: SweepResult) -> list[list[object]]:
    rows = []
    for r in result.results:
        d = r.to_dict()
        d["ci_low"], d["ci_high"] = r.ci
        d["diff_ci_low"], d["diff_ci_high"] = r.diff_ci if r.diff_ci is not None else ("", "")
        rows.append(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
    return rows


def sweep_png(result: SweepResult) -> bytes:
    """The :class:`SweepDisplay` figure as PNG bytes (a plain Agg figure: no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=SweepDisplay.figsize, dpi=110)
    FigureCanvasAgg(figure)
    SweepDisplay(result).plot(figure.add_subplot(1, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def write_sweep_report(result: SweepResult, out: str | os.PathLike) -> list[Path]:
    """Write sweep.json, sweep.csv and sweep.png into ``out`` (created) and return the files written."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "sweep.json": json_bytes(result.to_dict()) + b"\n",
        "sweep.csv": csv_bytes(list(CSV_COLUMNS), csv_rows(result)),
        "sweep.png": sweep_png(result),
    }
    written = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        written.append(folder / name)
    return written
