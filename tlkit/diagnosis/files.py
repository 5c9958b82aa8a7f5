"""Writing the doctor's findings to a folder: doctor.json, relabel.csv, duplicates.csv, outliers.csv,
learning_curves.csv, learning_curves.png and doctor.html (drawn by :mod:`tlkit.report.doctor_html`, with
thumbnails read from the data folder). Every file is written atomically (temp file + rename)."""

from __future__ import annotations

import os
from pathlib import Path

from tlkit._io import atomic_write_bytes, csv_bytes, json_bytes
from tlkit.data.relabel import HEADER, RELABEL_CONFIDENCE
from tlkit.diagnosis.result import DoctorResult
from tlkit.errors import ConfigError
from tlkit.report.doctor_html import doctor_page_html, learning_curve_png, thumbnail_loader


def relabel_rows(result: DoctorResult) -> list[list[object]]:
    """One relabel.csv row per suspect label, most suspect first; "relabel" where confident learning
    flags the image and the probes give the suggested class at least RELABEL_CONFIDENCE, else "review"."""
    return [[s.path, s.given, s.suggested, f"{s.score:.4f}",
             "relabel" if s.flagged and s.confidence >= RELABEL_CONFIDENCE else "review"] for s in result.suspect_labels]


def check_out_dir(out: str | os.PathLike, data: str | os.PathLike) -> None:
    """ConfigError when ``out`` is the data folder or inside it: the doctor never writes into the data."""
    folder, root = Path(out).expanduser().resolve(), Path(data).expanduser().resolve()
    if folder == root or root in folder.parents:
        raise ConfigError(f"--out {out} is inside the data folder {root}; the doctor never writes into the data: "
                          "choose a folder outside it")


def write_doctor_report(result: DoctorResult, out: str | os.PathLike) -> list[Path]:
    """Write the findings into ``out`` (created; never inside the data folder) and return the files written,
    doctor.html last (the page to open)."""
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
    curves_png = learning_curve_png(result) if result.learning_curves else None
    if curves_png is not None:
        files["learning_curves.png"] = curves_png
    title = f"tlkit doctor: {Path(result.root).name or result.root}"
    files["doctor.html"] = doctor_page_html(result, title, load_thumbnail=thumbnail_loader(result.root),
                                            curves_png=curves_png).encode("utf-8")
    written = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        written.append(folder / name)
    return written
