"""``tlkit.evaluate`` with ``report=``, and ``tlkit evaluate``: score a model on a dataset and write its
report (report.html with readable header rows, metrics.json, the confusion matrix, the mistakes)
into a new folder, under the run-folder rules of :mod:`tlkit.rundir` (checked before any work)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tlkit.evaluation.metrics import EvalResult
from tlkit.evaluation.scoring import evaluate_model, evaluation_set
from tlkit.evaluation.summary import shown_path
from tlkit.models import transfer
from tlkit.report.files import write_run_report
from tlkit.report.run_info import evaluation_header
from tlkit.rundir import prepare

__all__ = ["evaluate"]


def evaluate(model_or_run: Any, data: Any = None, *, split: str = "test",
             report: str | os.PathLike[str] | None = None, overwrite: bool = False, batch_size: int = 32,
             workers: int = 0, device: str = "cpu", n_bootstrap: int = 1000, seed: int = 0, skip_bad: bool = False,
             threshold: float | None = None, positive: str | None = None, option: str = "report") -> EvalResult:
    """Evaluate a trained model on a dataset, over the model's full class list, with the calibrated
    probabilities ``predict`` gives (the ECE before temperature scaling is ``result.ece_uncalibrated``).

    ``model_or_run``: a :class:`~tlkit.models.transfer.TransferModel`, a run directory or a saved model folder.
    ``data``: ``None`` (the run's own ``split`` from its ``splits.json``), a folder of class folders
    (every image is used unless ``split`` names a split of a train/val/test layout), or a
    :class:`~tlkit.data.Manifest`. Images in folders whose name is not one of the model's classes
    are reported in ``result.unknown``, never silently dropped.

    ``report``: a folder to write the evaluation report into, as ``tlkit evaluate --out`` does; a folder
    that is not empty is refused (before the images are scored) unless it holds an earlier evaluation
    report and ``overwrite`` is set. ``skip_bad``: unreadable images are left out (named in
    ``result.warnings``) instead of stopping. Two classes: ``threshold`` on p(``positive``) replaces
    the model's own decision threshold (default: the one in its model.json, else argmax);
    ``positive`` the positive class. ``option``: how error messages name the report folder (``--out``
    for ``tlkit evaluate``).

    >>> # result = tlkit.evaluate("runs/leaves", "data/new_leaves", split="all", report="runs/leaves/eval-new")
    """
    if report is not None:
        prepare(report, kind="evaluation", data=data, overwrite=overwrite, option=option, check_only=True)
    if isinstance(model_or_run, transfer.TransferModel):
        model, source = model_or_run, None
    else:  # loaded once: for the scores and for the Grad-CAM overlays beside the mistakes
        model, source = transfer.load(model_or_run, device=device), model_or_run
    manifest, used = evaluation_set(data, run_dir=source, split=split)
    result = evaluate_model(model, manifest, run_dir=source, split=used, batch_size=batch_size, workers=workers,
                            n_bootstrap=n_bootstrap, seed=seed, skip_bad=skip_bad, threshold=threshold,
                            positive=positive)
    if report is not None:
        prepare(report, kind="evaluation", data=data, overwrite=overwrite, option=option)
        header = evaluation_header(model, result, source=source, manifest=manifest, split=used,
                                   from_run=data is None, device=model.device, threshold=threshold)
        title = f"tlkit evaluation: {shown_path(source) if source is not None else 'a model object'}"
        write_run_report(result, model, Path(report), title=title, extra=header, data_root=manifest.root)
    return result
