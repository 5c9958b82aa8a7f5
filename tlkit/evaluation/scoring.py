"""Scoring a trained model: the images to evaluate on (:func:`evaluation_set`) and a loaded model and a
dataset in, an :class:`~tlkit.evaluation.metrics.EvalResult` out (:func:`evaluate_model`).

Numbers only: the model predicts, :func:`~tlkit.evaluation.metrics.evaluate_predictions` scores,
and nothing is written. The front door, ``tlkit.evaluate``, is
:func:`tlkit.report.evaluation_report.evaluate`: it loads the model and writes the report when asked.
torch, the data layer and the model are imported inside the functions, so importing this module
stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import ConfigError, DataError, TlkitError
from tlkit.evaluation.metrics import EvalResult, evaluate_predictions

if TYPE_CHECKING:
    from tlkit.data import Manifest
    from tlkit.models.transfer import TransferModel

SPLITS = ("train", "val", "test", "all")


def evaluate_model(model: TransferModel, data: Any = None, *, run_dir: str | os.PathLike[str] | None = None,
                   split: str = "test", batch_size: int = 32, workers: int = 0, n_bootstrap: int = 1000,
                   seed: int = 0, skip_bad: bool = False, threshold: float | None = None,
                   positive: str | None = None) -> EvalResult:
    """Score a loaded model on ``data`` (``tlkit.evaluate``, :func:`tlkit.report.evaluation_report.evaluate`,
    loads it once, for this and for its report's Grad-CAM overlays).

    ``run_dir``: the run the model was loaded from; its ``splits.json`` gives the images when
    ``data`` is ``None``. The other arguments are ``tlkit.evaluate``'s.
    """
    manifest, split = evaluation_set(data, run_dir=run_dir, split=split)
    names = ("train", "val", "test") if split == "all" else (split,)
    rows = [(path, manifest.classes[label]) for s in names for path, label in zip(manifest.paths(s), manifest.labels(s))]
    if not rows:
        raise DataError(f"no images in split '{split}' of {manifest.root}")
    index = {name: i for i, name in enumerate(model.classes)}
    known = [(p, index[c]) for p, c in rows if c in index]
    unknown: dict[str, list[str]] = {}
    for p, c in rows:
        if c not in index:
            unknown.setdefault(c, []).append(p)
    if not known:
        raise DataError(f"none of the classes in {manifest.root} ({', '.join(sorted(unknown))}) is known to the model "
                        f"(classes: {', '.join(model.classes)})")
    preds = model.predict([p for p, _ in known], batch_size=batch_size, workers=workers, skip_bad=skip_bad)
    label_of = dict(known)
    if not preds.sources:
        raise DataError(f"none of the {len(known)} images in {manifest.root} could be read; see `tlkit check`")
    scaled = model.temperature != 1.0  # the ECE before scaling is worth showing only when there was some
    decision = model.decision or {}
    result = evaluate_predictions(np.array([label_of[p] for p in preds.sources]), preds.probs, model.classes,
                                  paths=preds.sources, unknown=unknown, n_bootstrap=n_bootstrap, seed=seed,
                                  uncalibrated_probs=preds.uncalibrated_probs if scaled else None,
                                  temperature=model.temperature, positive=positive or decision.get("positive"),
                                  threshold=threshold if threshold is not None else decision.get("threshold"))
    if result.binary is not None and positive is None and decision:
        result.binary.positive_rule = decision.get("positive_rule", "given")
    seen = trained_on(run_dir, preds.sources)
    if seen:
        result.warnings.insert(0, f"{seen} of the {len(preds.sources)} images evaluated were used to train this model "
                                  "(its splits.json, train split): the figures on them are optimistic; evaluate on "
                                  "split 'test' or on images it never saw")
    if model.ood is not None:  # what answering "unknown" would cost on these labelled images
        from tlkit.evaluation.coverage import coverage_of

        result.ood = coverage_of(preds.ood_score, result.y_pred == result.y_true, preds.ood_threshold,
                                 method=model.ood.method, reject_rate=model.ood.reject_rate)
    if preds.skipped:
        shown = ", ".join(s["path"] for s in preds.skipped[:5]) + (" ..." if len(preds.skipped) > 5 else "")
        result.warnings.append(f"{len(preds.skipped)} unreadable image(s) left out (--skip-bad): {shown}")
    return result


def trained_on(run_dir: str | os.PathLike[str] | None, paths: list[str]) -> int:
    """How many of ``paths`` are training images of the run in ``run_dir`` (0 without its splits.json)."""
    from tlkit.data import Manifest

    splits = Path(run_dir) / "splits.json" if run_dir is not None else None
    if splits is None or not splits.is_file():
        return 0
    try:
        manifest = Manifest.load(splits)
    except (OSError, ValueError, TlkitError):
        return 0
    train = {os.path.realpath(p) for p in manifest.paths("train")}
    return sum(os.path.realpath(p) in train for p in paths)


def evaluation_set(data: Any = None, *, run_dir: str | os.PathLike[str] | None = None,
                   split: str = "test") -> tuple[Manifest, str]:
    """The images to evaluate on, as a manifest, and the split of it to use (one of :data:`SPLITS`).

    ``data``: ``None`` (the ``splits.json`` of ``run_dir``), a :class:`~tlkit.data.Manifest`, or a
    folder: a train/val/test layout (``split`` picks from it) or plain class folders (used whole,
    split ``all``; one class is enough).
    """
    from tlkit.data import Manifest, scan

    if split not in SPLITS:
        raise ConfigError(f"split must be train, val, test or all, got {split!r}")
    if data is None:
        if run_dir is None:
            raise ConfigError("data: give a folder or a Manifest when evaluating a model object")
        splits_path = Path(run_dir) / "splits.json"
        if not splits_path.is_file():
            raise DataError(f"{run_dir} has no splits.json; give the DATA folder to evaluate on")
        manifest = Manifest.load(splits_path)
        _check_run_root(Path(run_dir), manifest)
        return manifest, split
    if isinstance(data, Manifest):
        return data, split
    root = Path(data)
    is_split_layout = any(p.is_dir() and p.name.lower() == "train" for p in root.iterdir()) if root.is_dir() else False
    if not is_split_layout:  # a plain class-folder dataset given for evaluation is used whole
        return scan(root, val_fraction=0.0, test_fraction=0.0, min_classes=1), "all"
    return scan(root, min_classes=1), split


def _check_run_root(run_dir: Path, manifest: Manifest) -> None:
    """A run's splits.json must point at the data the run was trained on (its config.yaml says where):
    an edited root would make tlkit read files from anywhere."""
    from tlkit.config import load_run_config

    config = run_dir / "config.yaml"
    if not config.is_file():
        return
    trained_on = os.path.realpath(load_run_config(config).data.path)
    if os.path.realpath(manifest.root) != trained_on:
        raise DataError(f"{run_dir / 'splits.json'} points at {manifest.root}, but the run was trained on "
                        f"{trained_on} (config.yaml): the file was edited or the data moved. Give the data folder "
                        "to evaluate on explicitly: tlkit evaluate RUN_DIR DATA")
