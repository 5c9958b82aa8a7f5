"""The data doctor's self-contained ``doctor.html``: a :class:`~tlkit.diagnosis.result.DoctorResult` as a page.

Headline cards, the duplicate pairs side by side, the ranked gallery of suspect labels, the outliers,
the learning curves and the doctor's warnings. Every image is inline (base64), nothing is fetched
from elsewhere, and every text from data (paths, class names) goes through
:func:`~tlkit.evaluation.summary.escape`. Thumbnails come from a ``load_thumbnail(relative_path)``
callable (:func:`thumbnail_loader` reads them from the data folder); a file it cannot read shows
as a placeholder. Wide tables scroll sideways inside their own box, so the page reads on a phone.

>>> page = doctor_page_html(result, "doctor: leaves", load_thumbnail=thumbnail_loader(result.root))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Callable, Optional

from tlkit.diagnosis.result import DoctorResult, DuplicatePair, Outlier, SuspectLabel
from tlkit.evaluation.summary import FRAGMENT_CSS, escape, shown_path
from tlkit.report.html import PAGE_CSS

#: ``relative path -> image bytes (JPEG or PNG), or None when the file cannot be shown``
ThumbnailLoader = Callable[[str], Optional[bytes]]
#: thumbnails, duplicate pairs and outliers shown per section; the CSV files hold the rest
MAX_ITEMS = 48
#: the thumbnails' side in CSS pixels (what :func:`thumbnail_loader` makes by default)
THUMB_PX = 96

DOCTOR_CSS = f"""
.tlkit .scroll {{ overflow-x: auto; max-width: 100%; }}
.tlkit .scroll table {{ margin: 0; }}
.tlkit .scroll td.name, .tlkit .scroll th.name {{ overflow-wrap: normal; min-width: 5em; }}
.tlkit .card.bad {{ border-color: #d9534f; background: #fdecea; }}
.tlkit .card.good .v {{ color: #2e7d32; }}
.tlkit .thumb {{ width: {THUMB_PX}px; height: {THUMB_PX}px; object-fit: contain; display: block;
                background: #fafafa; }}
.tlkit .none {{ display: flex; align-items: center; justify-content: center; color: #999; font-size: 11px;
               border: 1px dashed #ccc; box-sizing: border-box; }}
.tlkit td.file {{ text-align: left; vertical-align: top; min-width: {THUMB_PX + 16}px; max-width: 220px;
                 overflow-wrap: anywhere; font-size: 12px; }}
.tlkit .gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px;
                  margin: 12px 0; }}
.tlkit .tile {{ border: 1px solid #ddd; border-radius: 6px; padding: 6px; margin: 0; font-size: 12px;
               overflow-wrap: anywhere; }}
.tlkit .tile .thumb {{ margin: 0 auto 4px; }}
.tlkit .tile .path {{ color: #444; }}
.tlkit .error {{ color: #b71c1c; font-weight: 600; }}
.tlkit .warning {{ color: #8a5a00; }}
.tlkit .warn {{ overflow-wrap: anywhere; }}
.tlkit td.tag, .tlkit th.tag {{ text-align: left; vertical-align: top; white-space: nowrap; }}
@media (max-width: 600px) {{ .tlkit .card {{ min-width: 0; flex: 1 1 40%; }} }}
.tlkit .flag {{ background: #fdecea; color: #b71c1c; border-radius: 3px; padding: 0 4px; }}
"""


def thumbnail_loader(root: str | os.PathLike, size: int = THUMB_PX) -> ThumbnailLoader:
    """A ``load_thumbnail`` that reads ``root/relative_path`` with :func:`tlkit.data.load_image` and returns
    a JPEG at most ``size`` pixels on a side; ``None`` (never an exception) for a file it cannot read."""
    from tlkit.data.images import load_image
    from tlkit.errors import DataError

    folder = Path(root)

    def load(relative_path: str) -> bytes | None:
        try:
            image = load_image(folder / relative_path)
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            return buffer.getvalue()
        except (DataError, OSError, ValueError):
            return None

    return load


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


def doctor_page_html(result: DoctorResult, title: str, *, load_thumbnail: ThumbnailLoader,
                     max_items: int = MAX_ITEMS, curves_png: bytes | None = None) -> str:
    """The whole ``doctor.html`` page: a title, then :func:`doctor_section_html` (same options)."""
    return "\n".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{PAGE_CSS}</style></head>",
        f'<body class="tlkit"><h1>{escape(title)}</h1>',
        doctor_section_html(result, load_thumbnail=load_thumbnail, max_items=max_items, curves_png=curves_png),
        '<p class="muted">Files beside this page: doctor.json, relabel.csv '
        "(edit it, then tlkit finetune --labels relabel.csv), duplicates.csv, outliers.csv, learning_curves.csv "
        "and learning_curves.png.</p></body></html>",
    ])


def doctor_section_html(result: DoctorResult, *, load_thumbnail: ThumbnailLoader, max_items: int = MAX_ITEMS,
                        curves_png: bytes | None = None) -> str:
    """The findings as an HTML fragment with its own styles (no ``<html>``/``<body>``): headline cards,
    warnings, duplicate pairs (errors first), suspect labels (most suspect first), outliers and learning
    curves; at most ``max_items`` rows or tiles per section. ``curves_png``: the plot of
    :func:`learning_curve_png` when the caller has drawn it already."""
    thumbs = _Thumbnails(load_thumbnail)
    return "".join([
        f'<div class="tlkit"><style>{FRAGMENT_CSS}{DOCTOR_CSS}</style>',
        _about(result), _cards(result), _warnings(result), _group_leaks(result),
        *_duplicates_section(result.near_duplicates, thumbs, max_items),
        *_suspects_section(result.suspect_labels, thumbs, max_items),
        *_outliers_section(result.outliers, thumbs, max_items),
        *_curves_section(result, curves_png),
        "</div>",
    ])


class _Thumbnails:
    """``load_thumbnail`` called once per path, its bytes as an ``<img>`` (or a placeholder)."""

    def __init__(self, load: ThumbnailLoader) -> None:
        self.load = load
        self.seen: dict[str, str] = {}

    def tag(self, path: str) -> str:
        if path not in self.seen:
            self.seen[path] = self.render(path, self.load(path))
        return self.seen[path]

    @staticmethod
    def render(path: str, data: bytes | None) -> str:
        kind = "png" if data and data.startswith(b"\x89PNG") else "jpeg" if data and data.startswith(b"\xff\xd8") else None
        if kind is None:
            return f'<div class="thumb none" role="img" aria-label="{escape(path)} (unreadable)">no preview</div>'
        encoded = base64.b64encode(data).decode("ascii")
        return f'<img class="thumb" alt="{escape(path)}" src="data:image/{kind};base64,{encoded}">'


def run_section_html(result: DoctorResult, data_root: str | os.PathLike, max_items: int = 24) -> str:
    """The doctor's section of a run's report.html: a heading and :func:`doctor_section_html`, with
    thumbnails read from ``data_root`` (where the run's data is now)."""
    return ("<h2>Data doctor</h2>"
            '<p class="muted">The run\'s own split, examined before training (tlkit doctor DATA shows the same; '
            "doctor.json beside this report has every finding).</p>"
            + doctor_section_html(result, load_thumbnail=thumbnail_loader(data_root), max_items=max_items))


def _group_leaks(result: DoctorResult) -> str:
    """--group-by groups with images in two splits (leakage), one line each."""
    if not result.group_leaks:
        return ""
    items = "".join(f"<li>group <b>{escape(str(g['group']))}</b> in {escape(' and '.join(g['splits']))}: "
                    f"{escape(', '.join(g['paths'][:4]))}{' ...' if len(g['paths']) > 4 else ''}</li>"
                    for g in result.group_leaks[:50])
    return f'<div class="warn">Groups (--group-by) with images in two splits (leakage):<ul>{items}</ul></div>'


def _more(shown: int, total: int, file: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="muted">{total - shown} more in {file}.</p>'


def _about(result: DoctorResult) -> str:
    images = result.settings.get("images", sum(sum(c.values()) for c in result.counts.values()))
    facts = [f"{escape(shown_path(result.root))}", f"{images} images", f"{len(result.classes)} classes"]
    for key in ("backbone", "image_size", "folds"):
        if key in result.settings:
            facts.append(f"{key.replace('_', ' ')} {escape(result.settings[key])}")
    if "total_seconds" in result.timings:
        facts.append(f"{result.timings['total_seconds']:.1f} s")
    return f'<p class="muted">{" · ".join(facts)}</p>'


def _cards(result: DoctorResult) -> str:
    flagged = sum(s.flagged for s in result.suspect_labels)
    within = sum(p.finding == "duplicate" for p in result.near_duplicates)
    cards = [
        ("images", result.settings.get("readable", sum(sum(c.values()) for c in result.counts.values())),
         f"{len(result.unreadable)} unreadable" if result.unreadable else "all readable", ""),
        ("leaks across splits", len(result.leaks), "error: the same picture in two splits", "bad" if result.leaks else "good"),
        ("label conflicts", len(result.label_conflicts), "error: one picture, two classes",
         "bad" if result.label_conflicts else "good"),
        ("duplicates within a split", within, "same split, same class", ""),
        ("suspect labels", len(result.suspect_labels), f"{flagged} flagged by confident learning", ""),
        ("outliers", len(result.outliers), "far from every class, or blank", ""),
        ("warnings", len(result.warnings), "listed below" if result.warnings else "none", ""),
    ]
    body = "".join(f'<div class="card {tone}"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
                   f'<div class="muted">{escape(note)}</div></div>' for k, v, note, tone in cards)
    return f'<div class="cards">{body}</div>'


def _warnings(result: DoctorResult) -> str:
    if not result.warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in result.warnings)
    return f'<div class="warn" role="alert"><b>Warnings:</b><ul>{items}</ul></div>'


def _file_cell(thumbs: _Thumbnails, path: str, split: str, label: str) -> str:
    return (f'<td class="file">{thumbs.tag(path)}<div>{escape(path)}</div>'
            f'<div class="muted">{escape(split)} · {escape(label)}</div></td>')


def _duplicates_section(pairs: list[DuplicatePair], thumbs: _Thumbnails, max_items: int) -> list[str]:
    parts = ["<h2>Duplicates</h2>"]
    if not pairs:
        return [*parts, '<p class="muted">No exact or near duplicates found.</p>']
    pairs = sorted(pairs, key=lambda p: p.severity != "error")  # stable: the doctor's order within each
    parts.append('<p class="muted">Errors first: leakage (the same picture in two splits) and label conflicts '
                 "(the same picture in two classes); then copies within one split.</p>")
    # The finding and its numbers share the first cell, so both pictures fit beside it on a phone.
    rows = "".join(
        f'<tr><td class="tag"><span class="{p.severity}">{escape(p.finding)}</span>'
        f'<div class="muted">{escape(p.kind)} copy</div><div class="muted">similarity {p.similarity:.3f}</div>'
        f'<div class="muted" title="bits that differ between the perceptual hashes">hash bits {p.hamming}</div></td>'
        f"{_file_cell(thumbs, p.paths[0], p.splits[0], p.labels[0])}{_file_cell(thumbs, p.paths[1], p.splits[1], p.labels[1])}</tr>"
        for p in pairs[:max_items])
    parts.append('<div class="scroll"><table class="pairs"><tr><th class="tag">finding</th><th class="name">file</th>'
                 f'<th class="name">copy</th></tr>{rows}</table></div>')
    return [*parts, _more(min(len(pairs), max_items), len(pairs), "duplicates.csv")]


def _suspect_tile(rank: int, s: SuspectLabel, thumbs: _Thumbnails) -> str:
    flag = ' <span class="flag" title="picked by confident learning">flagged</span>' if s.flagged else ""
    return (f'<figure class="tile">{thumbs.tag(s.path)}<figcaption><b>#{rank}</b> score {s.score:.3f}{flag}'
            f'<div class="path">{escape(s.path)}</div>'
            f"<div>given <b>{escape(s.given)}</b> → suggested <b>{escape(s.suggested)}</b></div>"
            f'<div class="muted">p(suggested) {s.confidence:.2f} · {escape(s.split)}</div></figcaption></figure>')


def _suspects_section(suspects: list[SuspectLabel], thumbs: _Thumbnails, max_items: int) -> list[str]:
    parts = ["<h2>Suspect labels</h2>"]
    if not suspects:
        return [*parts, '<p class="muted">No label the out-of-fold probes contradict.</p>']
    parts.append('<p class="muted">Most suspect first: images whose given label the out-of-fold probes contradict. '
                 "Edit relabel.csv (relabel, review or exclude), then train with tlkit finetune --labels relabel.csv.</p>")
    tiles = "".join(_suspect_tile(i, s, thumbs) for i, s in enumerate(suspects[:max_items], start=1))
    return [*parts, f'<div class="gallery">{tiles}</div>', _more(min(len(suspects), max_items), len(suspects), "relabel.csv")]


def _outlier_tile(o: Outlier, thumbs: _Thumbnails) -> str:
    return (f'<figure class="tile">{thumbs.tag(o.path)}<figcaption><b>{escape(o.reason)}</b>'
            f'<div class="path">{escape(o.path)}</div>'
            f"<div>label <b>{escape(o.label)}</b>, nearest class {escape(o.nearest_class)}</div>"
            f'<div class="muted">score {o.score:.2f} · z {o.z:.1f} · {escape(o.split)}</div></figcaption></figure>')


def _outliers_section(outliers: list[Outlier], thumbs: _Thumbnails, max_items: int) -> list[str]:
    parts = ["<h2>Outliers</h2>"]
    if not outliers:
        return [*parts, '<p class="muted">No image far from every class.</p>']
    parts.append('<p class="muted">Score: distance to the nearest class mean, in units of the within-class spread; '
                 "z: how unusual that distance is in this dataset.</p>")
    tiles = "".join(_outlier_tile(o, thumbs) for o in outliers[:max_items])
    return [*parts, f'<div class="gallery">{tiles}</div>', _more(min(len(outliers), max_items), len(outliers), "outliers.csv")]


def _curves_section(result: DoctorResult, curves_png: bytes | None) -> list[str]:
    parts = ["<h2>What to collect next</h2>"]
    if not result.learning_curves:
        return [*parts, '<p class="muted">No learning curves (too few images per class).</p>']
    png = base64.b64encode(curves_png or learning_curve_png(result)).decode("ascii")
    shares = [f"{int(f * 100)}%" for f in result.curve_fractions]
    head = "".join(f"<th>recall @{s}</th>" for s in shares)
    rows = "".join(
        f'<tr><td class="name">{escape(c.class_name)}</td><td>{c.images}</td>'
        + "".join(f"<td>{r:.3f}</td>" for r in c.recall)
        + f'<td>{c.slope:+.3f}</td><td>{"<b>yes</b>" if c.would_gain else "no"}</td></tr>'
        for c in result.learning_curves)
    overall = "".join(f"<td>{a:.3f}</td>" for a in result.curve_accuracy)
    return [*parts,
            '<p class="muted">Out-of-fold recall of each class when the probes train on a share of its images; '
            "a class whose recall still climbs per doubling would gain from more images.</p>",
            f'<img alt="learning curves" src="data:image/png;base64,{png}">',
            f'<div class="scroll"><table><tr><th class="name">class</th><th>images</th>{head}'
            f"<th>gain / doubling</th><th>collect more?</th></tr>{rows}"
            f'<tr><td class="name">(all: accuracy)</td><td></td>{overall}<td></td><td></td></tr></table></div>']
