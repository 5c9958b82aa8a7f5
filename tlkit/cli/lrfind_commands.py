"""``tlkit lr-find DATA``: the LR range test of the recipe's probe stage (the suggestion, the recipe's rate,
the advice; ``--json``, ``--plot FILE.png``).

Only typer and rich load with the CLI; the test itself (torch, the backbone) loads when the command
runs. It writes through :mod:`tlkit.cli.output` like every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer
from rich.console import Console

from tlkit.cli.output import err, out, write_stdout

if TYPE_CHECKING:
    from tlkit.lrfind.result import LRFindResult


def print_lr_find(result: LRFindResult, console: Console) -> None:
    """The suggestion, the recipe's rate and the advice, one line each; then any warning."""
    from tlkit.lrfind.rules import short

    s = result.suggestions
    steep = "" if s.steepest is None else f"steepest fall {short(s.steepest)}, "
    console.print(f"LR range test: stage {result.stage_index + 1} ({result.stage_kind}) of {result.recipe}, "
                  f"{result.backbone}, {result.images} training images, {len(result.lrs)} steps ({result.stopped})",
                  markup=False, highlight=False)
    console.print(f"suggested learning rate: [bold]{short(result.suggested)}[/] ({result.rule}; {steep}"
                  f"minimum/10 {short(s.min_loss_over_10)})", highlight=False)
    console.print(f"recipe's learning rate:  {short(result.recipe_lr)}", highlight=False)
    style = "yellow" if result.far else "green"
    console.print(f"advice: {result.advice}", style=style, markup=False, highlight=False)
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)


def lr_find_command(
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or of train/val/test folders.")],
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone name: resnet18, tv:NAME, timm:NAME.")] = "efficientnet_lite0",
    recipe: Annotated[Optional[str], typer.Option(help="Built-in recipe name or YAML file (its first probe stage is tested).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Crop size in pixels (default: the weights' own).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate for every stage (the rate compared with the suggestion).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size for every stage.")] = None,
    head: Annotated[Optional[str], typer.Option(help="linear or mlp.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the head's initial weights and the batch order.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    weights: Annotated[Optional[Path], typer.Option(help="Pretrained weights file (.safetensors/.pth) to use.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Use pretrained weights (--no-pretrained: random init).")] = True,
    offline: Annotated[bool, typer.Option(help="Never download weights (also TLKIT_OFFLINE=1).")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/tlkit/features).")] = None,
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="Any config field: KEY=VALUE, e.g. stages.0.lr=1e-2.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the loss curve to this PNG file.")] = None,
) -> None:
    """Which learning rate: fastai's LR range test of the recipe's probe stage, on cached features (seconds).

    A fresh head trains for up to 100 mini-batches, the rate rising from 1e-7 to 10, until the loss blows up;
    the suggestion is fastai's 'valley'. Says whether the recipe's rate is more than 10x away and what to pass.

    Example: [bold]tlkit lr-find data/leaves --plot lr.png[/]
    """
    from tlkit._io import json_bytes
    from tlkit.config import parse_set_option
    from tlkit.console import RichReporter
    from tlkit.lrfind import lr_find, write_lr_plot

    overrides = dict(image_size=image_size, lr=lr, batch_size=batch_size, head=head, seed=seed, device=device,
                     weights=str(weights) if weights else None, pretrained=pretrained, offline=offline or None,
                     cache_dir=str(cache_dir) if cache_dir else None)
    overrides.update(parse_set_option(set_ or []))
    result = lr_find(data, backbone, recipe, reporter=RichReporter(err), **overrides)
    written = write_lr_plot(result, plot) if plot is not None else None
    if as_json:
        write_stdout(json_bytes(result.to_dict()) + b"\n")
    else:
        print_lr_find(result, out)
    if written is not None:
        (err if as_json else out).print(f"plot written to [bold]{written}[/]", highlight=False)
