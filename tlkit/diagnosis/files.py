"""Writing the doctor's findings to a folder: doctor.json, relabel.csv, duplicates.csv, outliers.csv,
learning_curves.csv and learning_curves.png. Every file is written atomically (temp file + rename)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from tlkit._io import atomic_write_bytes, csv_bytes, json_bytes
from tlkit.data.relabel import HEADER, RELABEL_CONFIDENCE
from tlkit.diagnosis.result import DoctorResult
from tlkit.errors import ConfigError


def relabel_rows(result: DoctorResult) -> list[list[object]]:
    """One relabel.csv row per suspect label, most suspect first; "relabel" where confident learning
    flags the image and the probes give the suggested class at least RELABEL_CONFIDENCE, else "review"."""
    return [[s.path, s.given, s.suggested, f"{s.score:.4f}",
             "relabel" if s.flagged and s.confidence >= RELABEL_CONFIDENCE else "review"] for s in result.suspect_labels]


def learning_curve_png(result: DoctorResult) -> bytes:
    """Recall per class against the training images used (log scale), as PNG bytes (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for curve in result.learning_curves:
        style = "-" if curve.would_gain else ":"
        axes.plot(curve.train_images, curve.recall, style, marker="o", ms=3,
                  label=f"{curve.class_name} ({curve.slope:+.3f}/doubling)")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("training images of the class (per fold's probe)")
    axes.set_ylabel("out-of-fold recall")
    axes.set_title("learning curves (solid: would gain from more images)")
    axes.grid(True, alpha=0.3)
    if result.learning_curves:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def check_out_dir(out: str | os.PathLike, data: str | os.PathLike) -> None:
    """ConfigError when ``out`` is the data folder or inside it: the doctor never writes into the data."""
    folder, root = Path(out).expanduser().resolve(), Path(data).expanduser().resolve()
    if folder == root or root in folder.parents:
        raise ConfigError(f"--out {out} is inside the data folder {root}; the doctor never writes into the data: "
                          "choose a folder outside it")


def write_doctor_report(result: DoctorResult, out: str | os.PathLike) -> list[Path]:
    """Write the findings into ``out`` (created; never inside the data folder) and return the files written."""
    check_out_dir(out, result.root)
    folder = Path(out)
    files = {
        "doctor.json": json_bytes(result.to_dict()) + b"\n",
        "relabel.csv": csv_bytes(HEADER, relabel_rows(result)),
        "duplicates.csv": csv_bytes(["path_a", "path_b", "kind", "similarity", "hamming", "split_a", "split_b", "label_a",
                                     "label_b", "finding", "severity"],
                                    [[*p.paths, p.kind, f"{p.similarity:.4f}", p.hamming, *p.splits, *p.labels, p.finding,
                                      p.severity] for p in result.near_duplicates]),
        "outliers.csv": csv_bytes(["path", "split", "label", "score", "z", "nearest_class", "reason"],
                                  [[o.path, o.split, o.label, f"{o.score:.3f}", f"{o.z:.2f}", o.nearest_class, o.reason]
                                   for o in result.outliers]),
        "learning_curves.csv": csv_bytes(["class", "images", *(f"recall_at_{int(f * 100)}pct" for f in result.curve_fractions),
                                          "slope_per_doubling", "would_gain"],
                                         [[c.class_name, c.images, *(f"{r:.4f}" for r in c.recall), f"{c.slope:.4f}",
                                           c.would_gain] for c in result.learning_curves]),
    }
    if result.learning_curves:
        files["learning_curves.png"] = learning_curve_png(result)
    written = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        written.append(folder / name)
    return written
