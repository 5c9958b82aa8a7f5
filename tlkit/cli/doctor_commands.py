"""``tlkit doctor DATA``: the data doctor on the command line (tables, ``--json``, ``--out`` files).

Only typer and rich load with the CLI; the doctor itself (torch, the backbone) loads when the
command runs. It writes through :mod:`tlkit.cli.output` like every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from tlkit.cli.output import err, folding_table, out, write_stdout

if TYPE_CHECKING:
    from tlkit.diagnosis.result import DoctorResult

def print_result(result: DoctorResult, out: Console, top: int) -> None:
    """The findings as tables, at most ``top`` rows each (the JSON and --out files hold everything)."""
    from tlkit._io import readable_text as txt

    total = sum(sum(c.values()) for c in result.counts.values())
    out.print(f"[bold]{txt(result.root)}[/]: {total} images, {len(result.classes)} classes "
              f"({result.settings.get('backbone')}, {result.timings.get('total_seconds', 0):.1f}s)", highlight=False)
    if result.near_duplicates:
        grid = folding_table("finding", "kind", "similarity", "file", "copy", title=f"duplicates ({len(result.near_duplicates)} pairs; "
                     f"{len(result.leaks)} across splits, {len(result.label_conflicts)} across classes)")
        for p in result.near_duplicates[:top]:
            style = "red" if p.severity == "error" else "yellow"
            grid.add_row(f"[{style}]{p.finding}[/]", p.kind, f"{p.similarity:.3f}",
                         f"{txt(p.paths[0])} ({p.splits[0]}, {p.labels[0]})", f"{txt(p.paths[1])} ({p.splits[1]}, {p.labels[1]})")
        out.print(grid)
    else:
        out.print("[green]no duplicates found[/]")
    if result.suspect_labels:
        grid = folding_table("score", "file", "split", "given", "suggested", "p(suggested)",
                     title=f"suspect labels ({len(result.suspect_labels)}, most suspect first)")
        for s in result.suspect_labels[:top]:
            grid.add_row(f"{s.score:.3f}", txt(s.path), s.split, s.given, s.suggested, f"{s.confidence:.2f}")
        out.print(grid)
    if result.outliers:
        grid = folding_table("z", "file", "label", "nearest class", "why", title=f"outliers ({len(result.outliers)})")
        for o in result.outliers[:top]:
            grid.add_row(f"{o.z:.1f}", txt(o.path), o.label, o.nearest_class, o.reason)
        out.print(grid)
    for leak in result.group_leaks[:top]:
        out.print(f"error: group {txt(leak['group'])!r} has images in {' and '.join(leak['splits'])} (leakage): "
                  f"{txt(', '.join(leak['paths'][:4]))}", style="red", markup=False, highlight=False)
    print_curves(result, out)
    for warning in result.warnings:
        out.print(f"warning: {txt(warning)}", style="yellow", markup=False, highlight=False)


def print_curves(result: DoctorResult, out: Console) -> None:
    if not result.learning_curves:
        return
    shares = [f"{int(f * 100)}%" for f in result.curve_fractions]
    grid = folding_table("class", "images", *(f"recall @{s}" for s in shares), "gain / doubling", "collect more?",
                 title="what to collect next: out-of-fold recall on a share of the training images")
    for c in result.learning_curves:
        grid.add_row(c.class_name, str(c.images), *(f"{r:.3f}" for r in c.recall), f"{c.slope:+.3f}",
                     "[bold]yes[/]" if c.would_gain else "no")
    grid.add_row("(all)", "", *(f"{a:.3f}" for a in result.curve_accuracy), "", "")
    out.print(grid)


def doctor_command(
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or of train/val/test folders.")],
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone whose features the doctor compares.")] = "efficientnet_lite0",
    image_size: Annotated[Optional[int], typer.Option(help="Input size in pixels (default: the weights' own).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/tlkit/features).")] = None,
    folds: Annotated[int, typer.Option(help="Folds of the out-of-fold probes.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the split (class folders) and of the folds.")] = 0,
    group_by: Annotated[Optional[str], typer.Option(
        "--group-by", help="Keep groups in one split and one fold, as finetune does: 'subfolder', a CSV of "
        "path,group, or a regular expression on the file name; a group in two splits is leakage.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as one JSON object.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write doctor.html, doctor.json, relabel.csv, "
                                                    "duplicates.csv, outliers.csv and learning-curve files here (outside DATA).")] = None,
    top: Annotated[int, typer.Option(help="Rows per table in the terminal.")] = 20,
    offline: Annotated[bool, typer.Option(help="Never download weights (also TLKIT_OFFLINE=1).")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "cpu",
    weights: Annotated[Optional[Path], typer.Option(help="Pretrained weights file (.safetensors/.pth) for the backbone.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Pretrained weights (--no-pretrained: random, for tests only).")] = True,
) -> None:
    """Find what is wrong with a dataset: near-duplicates and leakage, suspect labels, outliers, what to collect next.

    Exits 1 when it finds leakage or a label conflict. Never changes DATA. Example: [bold]tlkit doctor data/leaves --out doctor-leaves[/], then edit
    doctor-leaves/relabel.csv.
    """
    from tlkit._io import json_bytes
    from tlkit.console import RichReporter
    from tlkit.diagnosis import doctor, write_doctor_report
    from tlkit.diagnosis.files import check_out_dir
    from tlkit.errors import ConfigError

    if top < 0:
        raise ConfigError(f"--top must be 0 or more, got {top}")
    if out_dir is not None:
        check_out_dir(out_dir, data)  # refused before the work, not after
    result = doctor(data, backbone=backbone, image_size=image_size, cache_dir=cache_dir, folds=folds, seed=seed,
                    group_by=group_by, offline=True if offline else None, device=device, reporter=RichReporter(err), pretrained=pretrained,
                    weights_file=str(weights) if weights else None)
    written = write_doctor_report(result, out_dir) if out_dir is not None else []
    if as_json:
        write_stdout(json_bytes(result.to_dict()) + b"\n")
    else:
        print_result(result, out, top)
    if written:
        (err if as_json else out).print(f"doctor files written to [bold]{out_dir}[/]: "
                                        + ", ".join(p.name for p in written), highlight=False)
    if not result.ok:  # leakage or a label conflict: exit 1, as tlkit check does for its errors
        raise typer.Exit(1)
