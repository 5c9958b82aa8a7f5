"""The commands that make a run: ``check`` a dataset, list ``recipes``, ``finetune``, and the offline ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlkit.cli.output import err, folding_table, friendly, out


def _command_line(ctx: typer.Context, *, leave_out: set[str]) -> list[str]:
    """The arguments that give this command its current parameters (those not left at their defaults)."""
    # duck-typed: typer may bring its own copy of click, whose classes are not the click package's
    positional, options = [], []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        source = ctx.get_parameter_source(param.name)
        if param.name in leave_out or source is None or source.name == "DEFAULT":
            continue
        if param.param_type_name == "argument":
            positional += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif getattr(param, "is_flag", False) and not getattr(param, "count", False):
            if param.secondary_opts and not value:
                options.append(param.secondary_opts[0])
            elif value:
                options.append(param.opts[0])
        elif getattr(param, "multiple", False):
            for v in value or ():
                options += [param.opts[0], str(v)]
        elif value is not None:
            options += [param.opts[0], str(value)]
    return [ctx.info_name or "finetune", *positional, *options]


@friendly
def check_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or of train/val/test folders.")],
    val_fraction: Annotated[float, typer.Option(help="Share of each class held out for validation.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of each class held out for testing.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    group_by: Annotated[Optional[str], typer.Option(
        "--group-by", help="Keep groups in one split: 'subfolder' (the folder below each class), a CSV of "
        "path,group, or a regular expression on the file name (its first group names the group).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a dataset: unreadable files, empty or tiny classes, duplicates across splits, imbalance.

    Exits 1 when an error-level problem is found. Example: [bold]tlkit check data/leaves[/]
    """
    from tlkit.data import check, scan

    report = check(scan(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, group_by=group_by))
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        splits = list(report.counts)
        table = folding_table("class", *splits, title=f"{report.root}: {len(report.classes)} classes")
        for name in report.classes:
            table.add_row(name, *(str(report.counts[s].get(name, 0)) for s in splits))
        out.print(table)
        if report.problems:
            problems = folding_table("severity", "kind", "message", title="problems")
            for p in report.problems:
                style = "red" if p.severity == "error" else "yellow"
                problems.add_row(f"[{style}]{p.severity}[/]", p.kind, p.message)
            out.print(problems)
        else:
            out.print("[green]no problems found[/]")
    if not report.ok:
        raise typer.Exit(1)


@friendly
def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print name -> description as JSON.")] = False,
) -> None:
    """List the built-in recipes and what each is for."""
    from tlkit.config import DEFAULT_RECIPE, list_recipes, recipes_dir

    if as_json:
        out.print_json(json.dumps({"default": DEFAULT_RECIPE, "recipes": list_recipes()}))
        return
    table = folding_table("recipe", "description", title=f"built-in recipes ({recipes_dir()})")
    for name, description in list_recipes().items():
        table.add_row(name + (" (default)" if name == DEFAULT_RECIPE else ""), description)
    out.print(table)



#: finetune's parameter names that differ from the config keys they set
_OPTION_KEYS = {"out_dir": "out", "compile_": "compile"}


def _typed_options(ctx: typer.Context, overrides: dict, backbone: str) -> tuple[dict, str | None]:
    """The options typed on the command line (not left at their defaults), and the backbone if typed."""
    given = {_OPTION_KEYS.get(name, name) for name in ctx.params
             if (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"}
    return {k: v for k, v in overrides.items() if k in given or k == "resume"}, backbone if "backbone" in given else None


@friendly
def finetune(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or of train/val/test folders.")],
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone name: resnet18, tv:NAME, timm:NAME.")] = "efficientnet_lite0",
    recipe: Annotated[Optional[str], typer.Option(help="Built-in recipe name or YAML file.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs for every stage.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate for every stage.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size for every stage.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Time budget of every stage: it runs only as many of its "
                                                          "epochs as fit (the default recipe fine-tunes for up to 12).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Crop size in pixels (default: the weights' own).")] = None,
    head: Annotated[Optional[str], typer.Option(help="linear or mlp.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default runs/DATA_NAME).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    weights: Annotated[Optional[Path], typer.Option(help="Pretrained weights file (.safetensors/.pth) to use.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Use pretrained weights (--no-pretrained: random init).")] = True,
    offline: Annotated[bool, typer.Option(help="Never download weights (also TLKIT_OFFLINE=1).")] = False,
    workers: Annotated[Optional[int], typer.Option(help="DataLoader worker processes (default: by device).")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Leave unreadable images out instead of stopping.")] = False,
    val_fraction: Annotated[Optional[float], typer.Option(help="Validation share when splitting.")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(help="Test share when splitting.")] = None,
    group_by: Annotated[Optional[str], typer.Option(
        "--group-by", help="Keep groups in one split: 'subfolder' (the folder below each class), a CSV of "
        "path,group, or a regular expression on the file name (its first group names the group).")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="A relabel.csv from 'tlkit doctor' (edit its action column): fixes labels and leaves images out in "
        "the run's split only; your files are not touched.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/tlkit/features).")] = None,
    doctor: Annotated[bool, typer.Option(help="Data doctor on the split first (in the report); --no-doctor: skip.")] = True,
    allow_leakage: Annotated[bool, typer.Option(help="Train even when a picture or a group is in two splits.")] = False,
    target_recall: Annotated[Optional[float], typer.Option(help="Two classes: threshold chosen on validation for this recall.")] = None,
    target_precision: Annotated[Optional[float], typer.Option(help="... or for this precision.")] = None,
    positive_class: Annotated[Optional[str], typer.Option(help="Two classes: the positive class (default: see the README).")] = None,
    folds: Annotated[Optional[int], typer.Option(help="K-fold cross-validation of train+val first (cached recipes): crossval.json.")] = None,
    tta: Annotated[bool, typer.Option(help="Test-time views (flip, or flip + 4 corner crops), kept only when validation shows a gain.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model (opt-in; pays off on long GPU runs).")] = False,
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="Any config field: KEY=VALUE, e.g. stages.1.lr=1e-4.")] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(
        "--nproc-per-node", help="Train in N local processes (DistributedDataParallel), started through "
        "torch.distributed.run like 'torchrun --standalone --nproc_per_node N -m tlkit finetune ...'. "
        "--batch-size stays the global batch.")] = None,
) -> None:
    """Fine-tune a pretrained backbone on a folder of images, evaluate it on the test split, write a report.
    Example: [bold]tlkit finetune data/leaves --backbone resnet18[/]; on 4 GPUs: [bold]torchrun --nproc_per_node 4 -m tlkit
    finetune data/leaves[/] or [bold]tlkit finetune data/leaves --nproc-per-node 4[/]
    """
    from tlkit.config import parse_set_option
    from tlkit.console import RichReporter
    from tlkit.train.pipeline import config_for, run

    paths = {"out": out_dir, "weights": weights, "labels": labels, "cache_dir": cache_dir}
    overrides = dict(epochs=epochs, lr=lr, batch_size=batch_size, max_minutes=max_minutes, image_size=image_size, head=head,
                     seed=seed, device=device, pretrained=pretrained, offline=offline or None, workers=workers, folds=folds,
                     skip_bad=skip_bad or None, val_fraction=val_fraction, test_fraction=test_fraction, group_by=group_by,
                     doctor=None if doctor else False, allow_leakage=allow_leakage or None, resume=resume or None, tta=tta or None,
                     target_recall=target_recall, target_precision=target_precision, positive_class=positive_class,
                     overwrite=overwrite or None, compile=compile_ or None, **{k: str(v) if v else None for k, v in paths.items()})
    if resume:  # the run's config.yaml decides: only options typed on this command line are compared with it
        overrides, backbone = _typed_options(ctx, overrides, backbone)
    overrides.update(parse_set_option(set_ or []))
    cfg = config_for(data, backbone, recipe, overrides)
    if nproc_per_node is not None:  # options are checked above, once, before any process starts
        from tlkit.train.distributed import check_local_launch, launch_local

        check_local_launch(nproc_per_node, device)
        code = launch_local(nproc_per_node, _command_line(ctx, leave_out={"nproc_per_node"}),
                            announce=lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
        raise typer.Exit(code)
    _print_run(run(cfg, reporter=RichReporter(err)))


def _print_run(result) -> None:  # noqa: ANN001
    """The test summary, the kept weights' validation accuracy and where the run is (rank 0 only)."""
    from tlkit.report.terminal import print_summary

    if result.rank != 0:  # several processes: rank 0 prints the summary
        return
    if result.evaluation is not None:
        print_summary(result.evaluation, out)
    kept = result.kept or (result.history[-1] if result.history else {})
    if "val_accuracy" in kept:
        out.print(f"validation accuracy (kept weights): {kept['val_accuracy']:.4f}")
    out.print(f"run written to [bold]{result.run_dir}[/] in {result.timings['total_seconds']:.1f}s "
              f"(report: {result.run_dir / 'report.html'})")



@friendly
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo dataset and run.")] = Path("demo-run"),
    epochs: Annotated[Optional[int], typer.Option(help="Epochs for every stage (default: the recipe's).")] = None,
) -> None:
    """Run tlkit end to end offline: digits dataset, packaged EfficientNet-Lite0, default recipe, report.

    Example: [bold]tlkit demo --out demo-run[/]
    """
    from tlkit._demo import demo as demo_fn
    from tlkit.console import RichReporter
    from tlkit.report.terminal import print_summary

    result = demo_fn(out_dir, reporter=RichReporter(err), epochs=epochs)
    if result.evaluation is not None:
        print_summary(result.evaluation, out)
    out.print(f"demo finished in {result.timings['total_seconds']:.0f}s; dataset {out_dir / 'data'}, "
              f"run {result.run_dir}; open {result.run_dir / 'report.html'} in a browser")

