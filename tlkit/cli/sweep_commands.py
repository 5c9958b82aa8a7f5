"""``tlkit sweep DATA``: which backbone, and how sure (a ranked table, ``--json``, ``--out`` files).

Only typer and rich load with the CLI; the sweep itself (torch, the backbones) loads when the
command runs. It writes through :mod:`tlkit.cli.output` like every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from tlkit.cli.output import err, folding_table, out, write_stdout

if TYPE_CHECKING:
    from tlkit.selection.result import SweepResult


def _rate(value: float, source: str) -> str:
    """Images per second, marked when not measured on this call's extraction."""
    if source == "earlier measurement":
        return f"{value:,.0f} (earlier)"
    return f"{value:,.0f}" + ("" if source == "measured now" else " (sample)")


def print_sweep(result: SweepResult, console: Console) -> None:
    """The ranked table, then the recommendation as a line to paste."""
    from tlkit._io import readable_text as txt

    total = sum(result.counts.values())
    table = folding_table("#", "backbone", "accuracy", "95% CI", "balanced", "vs best (95% CI)", "params", "features",
                          "input", "images/s", "ms/image",
                          title=f"backbone sweep: {txt(result.root)}, {total} train+val images, {len(result.classes)} "
                                f"classes, {result.folds}-fold linear probes")
    for r in result.results:
        if r.diff_ci is None:
            versus = "best"
        else:
            style = "red" if r.significantly_worse else "green"
            versus = f"[{style}]{r.diff_vs_best:+.3f} [{r.diff_ci[0]:+.3f}, {r.diff_ci[1]:+.3f}][/]"
        table.add_row(str(r.rank), txt(r.backbone), f"{r.accuracy:.3f}", f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]",
                      f"{r.balanced_accuracy:.3f}", versus, f"{r.params / 1e6:.2f}M", str(r.feature_dim),
                      str(r.input_size), _rate(r.images_per_second, r.images_per_second_source), f"{r.latency_ms:.1f}")
    for e in result.ensembles:  # the top backbones' features together, against the best alone
        style = "green" if e.kept else "default"
        table.add_row("+", txt(e.backbone), f"{e.accuracy:.3f}", f"[{e.ci[0]:.3f}, {e.ci[1]:.3f}]",
                      f"{e.balanced_accuracy:.3f}",
                      f"[{style}]{e.diff_vs_best:+.3f} [{e.diff_ci[0]:+.3f}, {e.diff_ci[1]:+.3f}][/]"
                      + ("" if e.kept else " not kept"), "", str(e.feature_dim), str(e.input_size), "",
                      f"{e.latency_ms:.1f}")
    console.print(table)
    console.print(txt(result.recommendation.reason), markup=False, highlight=False)
    console.print(f"recommended: [bold]{txt(result.recommendation.command)}[/]", highlight=False)
    for warning in result.warnings:
        console.print(f"warning: {txt(warning)}", style="yellow", markup=False, highlight=False)


def sweep_command(
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or of train/val/test folders.")],
    backbones: Annotated[Optional[str], typer.Option(
        "--backbones", "-b", help="Backbones to compare, separated by commas (default: every backbone whose "
        "weights are here, packaged or cached; see 'tlkit backbones').")] = None,
    folds: Annotated[int, typer.Option(help="Folds of the stratified linear probes (train+val).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the split (as tlkit finetune's) and of the folds.")] = 0,
    image_size: Annotated[Optional[int], typer.Option(help="Input size in pixels (default: each backbone's own).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/tlkit/features).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write sweep.json, sweep.csv and sweep.png here.")] = None,
    offline: Annotated[bool, typer.Option(help="Never download weights (also TLKIT_OFFLINE=1).")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per batch of the feature extraction.")] = 64,
    pretrained: Annotated[bool, typer.Option(help="Pretrained weights (--no-pretrained: random, for tests only).")] = True,
    ensemble: Annotated[int, typer.Option(help="Also score the top 2..N backbones' features together (0: none); "
                                               "recommended only when better than the best alone, paired.")] = 2,
) -> None:
    """Which backbone, and how sure: k-fold linear probes on cached features, accuracy with intervals, speed.

    Features are extracted once per backbone (then cached): the probes take seconds. Ends with a command to paste.

    Example: [bold]tlkit sweep data/leaves --out sweep-leaves[/]
    """
    from tlkit._io import json_bytes
    from tlkit.console import RichReporter
    from tlkit.errors import ConfigError
    from tlkit.selection import sweep, write_sweep_report

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    result = sweep(data, backbones=backbones, folds=folds, seed=seed, cache_dir=cache_dir,
                   offline=True if offline else None, device=device, image_size=image_size,
                   reporter=RichReporter(err), pretrained=pretrained, batch_size=batch_size, ensemble=ensemble)
    written = write_sweep_report(result, out_dir) if out_dir is not None else []
    if as_json:
        write_stdout(json_bytes(result.to_dict()) + b"\n")
    else:
        print_sweep(result, out)
    if written:
        (err if as_json else out).print(f"sweep files written to [bold]{out_dir}[/]: "
                                        + ", ".join(p.name for p in written), highlight=False)
