"""The commands about backbones, no trained run needed: ``backbones`` (what can be used) and ``summary`` (its layer groups)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from tlkit.cli.output import err, folding_table, friendly, out, write_stdout


@friendly
def backbones(
    filter: Annotated[Optional[str], typer.Argument(help="Show only names containing this text.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 40,
    include_tests: Annotated[bool, typer.Option("--include-tests", help="Also list timm's tiny random test_* models.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """List backbones: source, parameters, feature size, input size, and where weights come from.

    Example: [bold]tlkit backbones convnext[/]
    """
    from tlkit.models.builder import list_backbones

    rows = list_backbones(filter, limit=limit, include_tests=include_tests)
    if not rows:
        err.print(f"no backbone name contains {filter!r}: try a shorter part of the name, or run "
                  "'tlkit backbones' for the popular ones", markup=False, highlight=False)
        raise typer.Exit(1)
    if as_json:
        write_stdout((json.dumps(rows, indent=2) + "\n").encode("utf-8"))
        return
    table = folding_table("name", "alias", "source", "params", "features", "input", "weights here")
    for row in rows:
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] >= 0 else "?"
        table.add_row(row["name"], row["alias"], row["source"], params, str(row["feature_dim"]),
                      str(row["input_size"]), row["weights"])
    out.print(table)



@friendly
def summary(
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone name.")] = "efficientnet_lite0",
    num_classes: Annotated[int, typer.Option(help="Classes of the new head.")] = 2,
    image_size: Annotated[Optional[int], typer.Option(help="Input size in pixels (default: the weights' own).")] = None,
    trainable_groups: Annotated[str, typer.Option(help="Last N layer groups trainable, or 'all'.")] = "0",
    layers: Annotated[bool, typer.Option(help="Also list each layer inside the groups.")] = False,
) -> None:
    """Layer groups with output shapes, parameters, frozen/trainable, and forward FLOPs. No weights needed.

    Example: [bold]tlkit summary -b resnet18 --num-classes 5 --trainable-groups 2[/]
    """
    from tlkit.errors import ConfigError
    from tlkit.models.inspection import summarize_name

    if trainable_groups != "all" and not trainable_groups.isdigit():
        raise ConfigError(f"--trainable-groups must be a whole number of layer groups or 'all', got {trainable_groups!r}")
    groups: int | str = trainable_groups if trainable_groups == "all" else int(trainable_groups)
    result = summarize_name(backbone, num_classes=num_classes, image_size=image_size, trainable_groups=groups,
                            layers=layers)
    table = folding_table("layer", "output shape", "params", "status", title=f"{result.backbone} at {result.image_size}px")
    for row in result.rows:
        name = ("  " + row.name) if row.kind == "layer" else row.name
        table.add_row(name, str(tuple(row.output_shape)), f"{row.params:,}", row.status)
    out.print(table)
    out.print(f"total params: {result.total_params:,}   trainable: {result.trainable_params:,}   "
              f"frozen: {result.frozen_params:,}")
    out.print(f"forward FLOPs per image: {result.flops / 1e9:.3f} GFLOPs ({result.flops / 2e9:.3f} GMACs)")

