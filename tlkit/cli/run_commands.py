"""The commands on a trained run: ``evaluate``, ``predict``, ``explain``, and ``compare`` two runs.

The bodies of evaluate, predict and compare are cli.py's as they were, so they still name the
output helpers ``_table`` and ``_write_stdout``: this module's own names for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlkit.cli.output import err, friendly, out
from tlkit.cli.output import folding_table as _table
from tlkit.cli.output import write_stdout as _write_stdout


@friendly
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
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps.")] = "auto",
    threshold: Annotated[Optional[float], typer.Option(help="Two classes: say positive where p(positive) >= this "
                                                       "(default: the model's own threshold, else argmax).")] = None,
    positive_class: Annotated[Optional[str], typer.Option(help="Two classes: the positive class (default: the model's).")] = None,
) -> None:
    """Evaluate a trained model: metrics with confidence intervals, confusion matrix, report files.

    Example: [bold]tlkit evaluate runs/leaves data/leaves_new --split all[/]
    """
    from tlkit.report.evaluation_report import evaluate as evaluate_with_report
    from tlkit.report.terminal import print_ood, print_summary
    from tlkit.rundir import next_free

    target = out_dir or next_free(Path(run_dir) / f"eval-{split}")
    result = evaluate_with_report(run_dir, data, split=split, report=target, overwrite=overwrite, batch_size=batch_size,
                                  workers=workers, device=_device(device), skip_bad=skip_bad, threshold=threshold,
                                  positive=positive_class, option="--out")
    print_summary(result, out)
    print_ood(result, out)
    out.print(f"report written to [bold]{target}[/]")


@friendly
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or a saved model folder).")],
    inputs: Annotated[List[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    top_k: Annotated[int, typer.Option(help="How many classes to show per image.")] = 3,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    skip_bad: Annotated[bool, typer.Option(help="Leave unreadable images out (listed on stderr) instead of stopping.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps.")] = "auto",
    threshold: Annotated[Optional[float], typer.Option(help="Two classes: say positive where p(positive) >= this "
                                                       "(default: the model's own threshold, else argmax).")] = None,
    positive_class: Annotated[Optional[str], typer.Option(help="Two classes: the positive class (default: the model's).")] = None,
    reject_rate: Annotated[Optional[float], typer.Option(help="Answer unknown for images less like the training "
                                                         "images than all but this share of the validation images "
                                                         "(default: the model's, 0.02).")] = None,
    ood_threshold: Annotated[Optional[float], typer.Option(help="Answer unknown above this out-of-distribution score "
                                                           "(instead of --reject-rate).")] = None,
) -> None:
    """Predict classes for images with a trained model; images unlike the training images are answered unknown.

    Example: [bold]tlkit predict runs/leaves photo.jpg more_photos/ --format csv[/]
    """
    from tlkit._io import readable_text
    from tlkit.data import list_images
    from tlkit.errors import ConfigError
    from tlkit.evaluation.binary import decision_for
    from tlkit.models.transfer import load

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json, got {fmt!r}")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    model = load(run_dir, device=_device(device))
    if threshold is not None or positive_class is not None:
        model.set_decision(decision_for(model, threshold, positive_class))
    model.ood_threshold(reject_rate, ood_threshold)  # refused before any image is read
    paths = list_images(inputs)
    if len(paths) > batch_size:
        from tlkit.console import RichReporter

        tick = RichReporter(err).task("predict", len(paths))
    else:
        tick = None
    preds = model.predict(paths, batch_size=batch_size, workers=workers, progress=tick, skip_bad=skip_bad,
                          reject_rate=reject_rate, ood_threshold=ood_threshold)
    if model.ood is None:
        err.print("note: this model has no out-of-distribution statistics (trained before tlkit kept them): no image "
                  "is answered unknown", markup=False, highlight=False)
    for bad in preds.skipped:
        err.print(f"skipped: {readable_text(bad['reason'])}", markup=False, highlight=False, soft_wrap=True)
    _print_predictions(preds, model.classes, top_k, fmt)


def prediction_rows(preds, classes: list[str], top_k: int) -> list[dict]:  # noqa: ANN001
    """One dict per image, as ``--format json`` prints it and ``--format csv`` flattens it: ``path``,
    ``label``, ``confidence``, ``unknown``, ``ood_score``, ``top_k`` and ``probs`` (every class)."""
    rows = []
    for record, probs in zip(preds.to_records(top_k), preds.probs.tolist()):
        rows.append({"path": record["source"], "label": record["label"], "confidence": record["confidence"],
                     "unknown": record["unknown"], "ood_score": record["ood_score"], "top_k": record["top_k"],
                     "probs": dict(zip(classes, probs))})
    return rows


def _print_predictions(preds, classes: list[str], top_k: int, fmt: str) -> None:  # noqa: ANN001
    from tlkit._io import csv_bytes, json_bytes, readable_text

    rows = prediction_rows(preds, classes, top_k)
    if fmt == "json":
        _write_stdout(json_bytes(rows) + b"\n")
    elif fmt == "csv":  # the same names as the JSON; one p_<class> column per class
        header = ["path", "label", "confidence", "unknown", "ood_score", *(f"p_{c}" for c in classes)]
        _write_stdout(csv_bytes(header, [[r["path"], r["label"], f"{r['confidence']:.4f}", str(r["unknown"]).lower(),
                                          "" if r["ood_score"] is None else f"{r['ood_score']:.6g}",
                                          *(f"{r['probs'][c]:.4f}" for c in classes)] for r in rows]))
    else:
        table = _table("image", "prediction", "confidence", f"top {top_k}")
        for r in rows:
            label = f"unknown (best: {r['label']} {r['confidence']:.2f})" if r["unknown"] else r["label"]
            table.add_row(readable_text(r["path"]), label, f"{r['confidence']:.3f}",
                          ", ".join(f"{t['class']} {t['prob']:.2f}" for t in r["top_k"]))
        out.print(table)


def _device(name: str) -> str:
    """``auto`` (the default, as for finetune): the GPU when there is one, else the CPU."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@friendly
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
    from tlkit._io import readable_text
    from tlkit.data import list_images
    from tlkit.models.explain import explain_many, write_explanations
    from tlkit.models.transfer import load
    from tlkit.report.gradcam import caption, explanation_png
    from tlkit.rundir import prepare

    model = load(run_dir)
    target = out_dir or Path(run_dir) / "explain"
    prepare(target, kind="explain", overwrite=True)  # a tlkit overlay folder: earlier overlays are replaced
    explanations = explain_many(model, list_images(inputs), class_name, layer=layer)
    written = write_explanations(explanations, target, explanation_png)
    for exp, path in zip(explanations, written):
        out.print(f"{readable_text(exp.source)}: {caption(exp)} -> {path.name}", markup=False, highlight=False,
                  soft_wrap=True)
    out.print(f"{len(written)} overlay(s) written to [bold]{target}[/]")



@friendly
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

