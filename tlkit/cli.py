"""The ``tlkit`` command: thin commands over the public Python API.

Every ``TlkitError`` becomes one line on stderr and exit code 1; Ctrl-C exits 130 after saying how
to resume.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tlkit.diagnosis.command import doctor_command
from tlkit.errors import TlkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="tlkit: transfer learning for image classification on small domain datasets.")
#: width of a console that is not a terminal (a pipe, a file): wide enough that tables and paths are
#: never cut or folded, so `tlkit backbones | grep lite0` finds the name
PIPE_WIDTH = 4096


def _console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


out = _console()
err = _console(stderr=True)


@app.callback()
def _consoles() -> None:
    """tlkit: transfer learning for image classification on small domain datasets."""
    global out, err  # noqa: PLW0603 - made again per command, for the streams of this invocation
    out, err = _console(), _console(stderr=True)


def _friendly(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return func(*args, **kwargs)
        except TlkitError as exc:
            if getattr(exc, "tlkit_raised_on_rank0", False):
                # several processes: rank 0 prints this error; a moment's wait keeps torchrun from
                # stopping rank 0 (because this rank exited) before it has
                import time

                time.sleep(1.0)
            else:
                message = " ".join(str(exc).split("\n"))
                err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _write_stdout(data: bytes) -> None:
    """Bytes to standard output as they are (file names that are not UTF-8 keep their bytes)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (a test runner's capture)
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))


def _table(*columns: str, **options) -> Table:  # noqa: ANN003
    """A table whose cells fold on a narrow terminal instead of being cut short with an ellipsis."""
    table = Table(**options)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


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


# --------------------------------------------------------------------------------------------


@app.command()
@_friendly
def backbones(
    filter: Annotated[Optional[str], typer.Argument(help="Show only names containing this text.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 40,
) -> None:
    """List backbones: source, parameters, feature size, input size, and where weights come from.

    Example: [bold]tlkit backbones convnext[/]
    """
    from tlkit.models.backbones import list_backbones

    table = _table("name", "alias", "source", "params", "features", "input", "weights here")
    for row in list_backbones(filter, limit=limit):
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] >= 0 else "?"
        table.add_row(row["name"], row["alias"], row["source"], params, str(row["feature_dim"]),
                      str(row["input_size"]), row["weights"])
    out.print(table)


@app.command("check")
@_friendly
def check_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or of train/val/test folders.")],
    val_fraction: Annotated[float, typer.Option(help="Share of each class held out for validation.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of each class held out for testing.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a dataset: unreadable files, empty or tiny classes, duplicates across splits, imbalance.

    Exits 1 when an error-level problem is found. Example: [bold]tlkit check data/leaves[/]
    """
    from tlkit.data import check, scan

    report = check(scan(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed))
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        splits = list(report.counts)
        table = _table("class", *splits, title=f"{report.root}: {len(report.classes)} classes")
        for name in report.classes:
            table.add_row(name, *(str(report.counts[s].get(name, 0)) for s in splits))
        out.print(table)
        if report.problems:
            problems = _table("severity", "kind", "message", title="problems")
            for p in report.problems:
                style = "red" if p.severity == "error" else "yellow"
                problems.add_row(f"[{style}]{p.severity}[/]", p.kind, p.message)
            out.print(problems)
        else:
            out.print("[green]no problems found[/]")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_friendly
def recipes() -> None:
    """List the built-in recipes and what each is for."""
    from tlkit.config import DEFAULT_RECIPE, list_recipes, recipes_dir

    table = _table("recipe", "description", title=f"built-in recipes ({recipes_dir()})")
    for name, description in list_recipes().items():
        table.add_row(name + (" (default)" if name == DEFAULT_RECIPE else ""), description)
    out.print(table)


#: finetune's parameter names that differ from the config keys they set
_OPTION_KEYS = {"out_dir": "out", "compile_": "compile"}


@app.command()
@_friendly
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
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default ~/.cache/tlkit/features).")] = None,
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

    Example: [bold]tlkit finetune data/leaves --backbone resnet18[/]; on 4 GPUs: [bold]torchrun
    --nproc_per_node 4 -m tlkit finetune data/leaves[/] or [bold]tlkit finetune data/leaves --nproc-per-node 4[/]
    """
    from tlkit.config import parse_set_option
    from tlkit.console import RichReporter
    from tlkit.report.files import print_summary
    from tlkit.train.pipeline import config_for, run

    overrides = dict(epochs=epochs, lr=lr, batch_size=batch_size, max_minutes=max_minutes, image_size=image_size, head=head,
                     out=str(out_dir) if out_dir else None, seed=seed, device=device,
                     weights=str(weights) if weights else None, pretrained=pretrained, offline=offline or None,
                     workers=workers, skip_bad=skip_bad or None, val_fraction=val_fraction, test_fraction=test_fraction,
                     cache_dir=str(cache_dir) if cache_dir else None, resume=resume or None, overwrite=overwrite or None,
                     compile=compile_ or None)
    if resume:  # the run's config.yaml decides: only options typed on this command line are compared with it
        given = {_OPTION_KEYS.get(name, name) for name in ctx.params
                 if (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"}
        overrides = {k: v for k, v in overrides.items() if k in given or k == "resume"}
        backbone = backbone if "backbone" in given else None
    overrides.update(parse_set_option(set_ or []))
    cfg = config_for(data, backbone, recipe, overrides)
    if nproc_per_node is not None:  # options are checked above, once, before any process starts
        from tlkit.train.distributed import check_local_launch, launch_local

        check_local_launch(nproc_per_node, device)
        code = launch_local(nproc_per_node, _command_line(ctx, leave_out={"nproc_per_node"}),
                            announce=lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
        raise typer.Exit(code)
    result = run(cfg, reporter=RichReporter(err))
    if result.rank != 0:  # several processes: rank 0 prints the summary
        return
    if result.evaluation is not None:
        print_summary(result.evaluation, out)
    val = result.history[-1] if result.history else {}
    if "val_accuracy" in val:
        out.print(f"validation accuracy (last epoch): {val['val_accuracy']:.4f}")
    out.print(f"run written to [bold]{result.run_dir}[/] in {result.timings['total_seconds']:.1f}s "
              f"(report: {result.run_dir / 'report.html'})")


@app.command()
@_friendly
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or a saved model folder).")],
    data: Annotated[Optional[Path], typer.Argument(help="Images to evaluate on (default: the run's own split).")] = None,
    split: Annotated[str, typer.Option(help="Which split of the run (or of a split-folder DATA): train, val, test, all.")] = "test",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the report (default RUN_DIR/eval-SPLIT, "
                                                    "then eval-SPLIT-2, ... when taken).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the evaluation report already in --out.")] = False,
    skip_bad: Annotated[bool, typer.Option(help="Leave unreadable images out (named in the report) instead of stopping.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
) -> None:
    """Evaluate a trained model: metrics with confidence intervals, confusion matrix, report files.

    Example: [bold]tlkit evaluate runs/leaves data/leaves_new --split all[/]
    """
    from tlkit.data import load_image
    from tlkit.evaluation.scoring import evaluate as evaluate_fn
    from tlkit.models.explain import explainer
    from tlkit.models.transfer import load
    from tlkit.report.files import print_summary, write_report
    from tlkit.rundir import next_free, prepare

    target = out_dir or next_free(Path(run_dir) / f"eval-{split}")
    prepare(target, kind="evaluation", data=data, overwrite=overwrite, check_only=True)  # refused before the work
    result = evaluate_fn(run_dir, data, split=split, batch_size=batch_size, workers=workers, device=device,
                         skip_bad=skip_bad)
    model = load(run_dir, device=device)  # again, for the Grad-CAM overlays beside the mistakes (a few MB)
    prepare(target, kind="evaluation", data=data, overwrite=overwrite)
    write_report(result, target, load_image=load_image, explain=explainer(model),
                 title=f"tlkit evaluation: {run_dir}")
    print_summary(result, out)
    out.print(f"report written to [bold]{target}[/]")


@app.command()
@_friendly
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or a saved model folder).")],
    inputs: Annotated[List[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    top_k: Annotated[int, typer.Option(help="How many classes to show per image.")] = 3,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    skip_bad: Annotated[bool, typer.Option(help="Leave unreadable images out (listed on stderr) instead of stopping.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
) -> None:
    """Predict classes for images with a trained model.

    Example: [bold]tlkit predict runs/leaves photo.jpg more_photos/ --format csv[/]
    """
    from tlkit._io import csv_bytes, json_bytes, readable_text
    from tlkit.data import list_images
    from tlkit.errors import ConfigError
    from tlkit.models.transfer import load

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json, got {fmt!r}")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    model = load(run_dir, device=device)
    paths = list_images(inputs)
    if len(paths) > batch_size:
        from tlkit.console import RichReporter

        tick = RichReporter(err).task("predict", len(paths))
    else:
        tick = None
    preds = model.predict(paths, batch_size=batch_size, workers=workers, progress=tick, skip_bad=skip_bad)
    for bad in preds.skipped:
        err.print(f"skipped: {readable_text(bad['reason'])}", markup=False, highlight=False, soft_wrap=True)
    records = preds.to_records(top_k)
    if fmt == "json":
        _write_stdout(json_bytes(records) + b"\n")
    elif fmt == "csv":
        header = ["path", "label", "confidence"] + [f"top{i + 1}" for i in range(min(top_k, len(model.classes)))]
        _write_stdout(csv_bytes(header, [[r["source"], r["label"], f"{r['confidence']:.4f}"]
                                         + [f"{t['class']}:{t['prob']:.4f}" for t in r["top_k"]] for r in records]))
    else:
        table = _table("image", "prediction", "confidence", f"top {top_k}")
        for r in records:
            table.add_row(readable_text(r["source"]), r["label"], f"{r['confidence']:.3f}",
                          ", ".join(f"{t['class']} {t['prob']:.2f}" for t in r["top_k"]))
        out.print(table)


@app.command()
@_friendly
def explain(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or a saved model folder).")],
    inputs: Annotated[List[Path], typer.Argument(help="Image files or folders.")],
    class_name: Annotated[Optional[str], typer.Option("--class", help="Explain this class (default: the predicted one).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write overlays (default RUN_DIR/explain).")] = None,
    layer: Annotated[str, typer.Option(help="Layer group to explain (a name from 'tlkit summary', or an index); "
                                            "auto: the last group whose map is at least 7x7.")] = "auto",
) -> None:
    """Grad-CAM heat maps: where the model looks when it picks a class. Writes image|overlay PNGs.

    Example: [bold]tlkit explain runs/leaves leaf.jpg --class rust[/]
    """
    from tlkit.data import list_images
    from tlkit.models.explain import write_overlays
    from tlkit.models.transfer import load
    from tlkit.rundir import prepare

    model = load(run_dir)
    target = out_dir or Path(run_dir) / "explain"
    prepare(target, kind="explain", overwrite=True)  # a tlkit overlay folder: earlier overlays are replaced
    written = write_overlays(model, list_images(inputs), target, class_name, layer=layer)
    out.print(f"{len(written)} overlay(s) written to [bold]{target}[/]")


@app.command()
@_friendly
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
    table = _table("layer", "output shape", "params", "status", title=f"{result.backbone} at {result.image_size}px")
    for row in result.rows:
        name = ("  " + row.name) if row.kind == "layer" else row.name
        table.add_row(name, str(tuple(row.output_shape)), f"{row.params:,}", row.status)
    out.print(table)
    out.print(f"total params: {result.total_params:,}   trainable: {result.trainable_params:,}   "
              f"frozen: {result.frozen_params:,}")
    out.print(f"forward FLOPs per image: {result.flops / 1e9:.3f} GFLOPs ({result.flops / 2e9:.3f} GMACs)")


@app.command()
@_friendly
def compare(
    run_a: Annotated[Path, typer.Argument(help="Baseline: a run directory or an evaluation folder (or its predictions.csv).")],
    run_b: Annotated[Path, typer.Argument(help="The other run, scored on the same images.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Is B really better than A? Paired accuracy difference on the same test images.

    Gives the difference with a paired bootstrap interval and McNemar's exact test: much sharper
    than comparing the two runs' own intervals. Example: [bold]tlkit compare runs/probe runs/default[/]
    """
    from tlkit.evaluation.comparison import compare as compare_fn

    c = compare_fn(run_a, run_b)
    if as_json:
        out.print_json(data=c.to_dict())
        return
    table = _table("", "run", "accuracy", title=f"paired comparison on {c.n} images")
    table.add_row("A", str(run_a), f"{c.accuracy_a:.4f}")
    table.add_row("B", str(run_b), f"{c.accuracy_b:.4f}")
    out.print(table)
    lo, hi = c.difference_ci
    out.print(f"B - A: {c.difference:+.4f}  [{lo:+.4f}, {hi:+.4f}] ({c.ci_level:.0%} CI, {c.difference_ci_method})")
    out.print(f"only A right: {c.only_a_right}   only B right: {c.only_b_right}   McNemar exact p = {c.p_value:.3g}")
    out.print(c.verdict, highlight=False)
    for warning in c.warnings:
        out.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)


app.command("doctor")(_friendly(doctor_command))


@app.command()
@_friendly
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo dataset and run.")] = Path("demo-run"),
    epochs: Annotated[Optional[int], typer.Option(help="Epochs for every stage (default: the recipe's).")] = None,
) -> None:
    """Run tlkit end to end offline: digits dataset, packaged EfficientNet-Lite0, default recipe, report.

    Example: [bold]tlkit demo --out demo-run[/]
    """
    from tlkit._demo import demo as demo_fn
    from tlkit.console import RichReporter
    from tlkit.report.files import print_summary

    result = demo_fn(out_dir, reporter=RichReporter(err), epochs=epochs)
    if result.evaluation is not None:
        print_summary(result.evaluation, out)
    out.print(f"demo finished in {result.timings['total_seconds']:.0f}s; dataset {out_dir / 'data'}, "
              f"run {result.run_dir}; open {result.run_dir / 'report.html'} in a browser")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
