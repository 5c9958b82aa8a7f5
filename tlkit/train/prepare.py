"""Before the first stage: the run directory, the data split and its checks, and what a resume needs.

User errors (missing or bad data, a conflicting resume, a recipe that cannot run on this backbone)
stop the run here, before its directory is created or an existing one is replaced, so fixing
them needs no ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import torch

from tlkit import rundir
from tlkit._io import atomic_write_text
from tlkit.config import RunConfig, config_conflicts, load_run_config
from tlkit.console import Reporter
from tlkit.data import Manifest, check, scan
from tlkit.data.relabel import apply_relabel
from tlkit.errors import ConfigError, DataError
from tlkit.models.backbone import Backbone
from tlkit.models.ensemble import check_trainable
from tlkit.train.activations import first_trainable_group

__all__ = ["default_out", "check_run_dir", "prepare_run_dir", "resume_hint", "check_resume", "check_stages_fit", "scan_data",
           "prepare_data", "without_missing"]


def default_out(data: str | os.PathLike) -> Path:
    """``runs/<name of the data folder>``."""
    return Path("runs") / (Path(data).resolve().name or "data")


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create the run directory (``tlkit.rundir`` has the rules); an existing run is refused unless
    resume or overwrite is set, and only a folder tlkit wrote is ever overwritten."""
    if cfg.out is not None:
        out = Path(cfg.out)
    else:
        base = default_out(cfg.data.path)
        out = base if cfg.resume else rundir.next_free(base)
    run_dir = rundir.prepare(out, data=cfg.data.path, overwrite=cfg.overwrite, resume=cfg.resume)
    cfg.out = str(run_dir.path)
    return run_dir.path


def check_run_dir(cfg: RunConfig) -> None:
    """What :func:`prepare_run_dir` would refuse (an occupied --out), raised before any work; nothing is written."""
    if cfg.out is not None and not cfg.resume:
        rundir.prepare(Path(cfg.out), data=cfg.data.path, overwrite=cfg.overwrite, resume=False, check_only=True)


def resume_hint(cfg: RunConfig, run_dir: Path) -> str:
    """The complete command that continues this run: its options come from the run's config.yaml."""
    return shlex.join(["tlkit", "finetune", str(cfg.data.path), "--out", str(run_dir), "--resume"])


def check_resume(cfg: RunConfig) -> None:
    """A resumed run computes what it was started with: refuse a config that would change that."""
    if cfg.out is None:
        cfg.out = str(default_out(cfg.data.path))
    run = rundir.resumable(cfg.out)
    conflicts = config_conflicts(load_run_config(run.config), cfg)
    if conflicts:
        shown = "; ".join(conflicts[:6]) + (f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else "")
        raise ConfigError(f"cannot resume {run.path} with a different configuration: {shown}. Resume with the run's "
                          f"own options (tlkit.finetune(..., resume=True) or `{resume_hint(cfg, run.path)}` reads "
                          "them from config.yaml), or start a new run")
    if not Path(cfg.data.path).is_dir():
        raise DataError(f"dataset folder {cfg.data.path} does not exist or is not a folder. Check the path.")


def check_stages_fit(cfg: RunConfig, backbone: Backbone, device: torch.device) -> None:
    """Recipe choices that depend on the backbone, refused before any file is written."""
    stages = [stage.for_device(device.type) for stage in cfg.recipe.stages]
    check_trainable(backbone, [(i + 1, s.kind, first_trainable_group(backbone, s) < backbone.num_groups)
                               for i, s in enumerate(stages)])
    for i, stage in enumerate(stages):
        k = first_trainable_group(backbone, stage)
        if stage.class_weighting == "sampler" and k == 0:
            raise ConfigError(
                f"stages[{i}].class_weighting: sampler works on cached stages only, and this stage trains "
                f"{backbone.name} on images (unfreeze: {stage.unfreeze}); use class_weighting: balanced")
        if stage.start_size is not None and k > 0:
            raise ConfigError(f"recipe.stages[{i}].start_size (progressive resizing) needs a stage on images; this "
                              f"one trains groups {k}+ on cached activations: set unfreeze: all, or drop start_size")


def _list_files(files: list[str], limit: int = 10) -> str:
    return ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")


def scan_data(cfg: RunConfig, reporter: Reporter) -> Manifest:
    """Scan, split and check the data; nothing is written."""
    manifest = scan(cfg.data.path, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                    seed=cfg.seed, group_by=cfg.data.group_by)
    report = check(manifest)
    for problem in report.warnings:
        reporter.message(f"warning: {problem.message}")
    if report.bad_files:
        if not cfg.data.skip_bad:
            raise DataError(f"{len(report.bad_files)} unreadable image(s) in {cfg.data.path}: "
                            f"{_list_files(report.bad_files)}. Fix or remove them, or pass --skip-bad to leave them "
                            "out (they are listed in the run directory's skipped.json)")
        manifest = manifest.without(report.bad_files, "unreadable")
        reporter.message(f"skipped {len(report.bad_files)} unreadable file(s); class counts now: {manifest.counts('train')}")
    allowed = ("unreadable", "duplicate-across-splits", "group-leak") if cfg.data.allow_leakage else ("unreadable",)
    for problem in report.errors:
        if problem.kind in allowed[1:]:
            reporter.message(f"warning (--allow-leakage): {problem.message}")
    fatal = [p for p in report.errors if p.kind not in allowed]
    if fatal:
        raise DataError(fatal[0].message)
    if not manifest.splits.get("train"):
        raise DataError(f"no training images found in {cfg.data.path}")
    return manifest if cfg.data.labels is None else _relabeled(manifest, cfg.data.labels, reporter)


def _relabeled(manifest: Manifest, labels: str, reporter: Reporter) -> Manifest:
    """The split with an (edited) relabel.csv applied: labels fixed and images left out in the manifest only."""
    manifest, applied = apply_relabel(manifest, labels)
    reporter.message(f"{labels}: {len(applied.relabeled)} label(s) fixed, {len(applied.excluded)} image(s) left out"
                     + (f", {len(applied.mismatched)} row(s) skipped (their 'given' is no longer the image's label)"
                        if applied.mismatched else "")
                     + (f", {len(applied.not_found)} path(s) not in the data" if applied.not_found else ""))
    manifest.labels_applied = {"file": str(Path(labels).resolve()), **applied.to_dict()}
    return manifest


def without_missing(manifest: Manifest, cfg: RunConfig, reporter: Reporter, when: str) -> Manifest:
    """Files of the split that are gone from disk: an error naming them, or left out with --skip-bad."""
    missing = [rel for split in manifest.splits.values() for rel, _ in split
               if not os.path.isfile(os.path.join(manifest.root, *rel.split("/")))]
    if not missing:
        return manifest
    if not cfg.data.skip_bad:
        raise DataError(f"{len(missing)} image(s) of the run's split are missing from {manifest.root} ({when}): "
                        f"{_list_files(missing)}. Put them back, or pass --skip-bad to leave them out "
                        "(they are listed in the run directory's skipped.json)")
    reporter.message(f"skipped {len(missing)} missing file(s): {_list_files(missing, 5)}")
    return manifest.without(missing, "missing")


def prepare_data(cfg: RunConfig, run_dir: Path, reporter: Reporter, scanned: Manifest | None = None) -> Manifest:
    """The run's split: read back from ``splits.json`` on resume, else ``scanned``; saved in the run."""
    run = rundir.RunDir(run_dir)
    if cfg.resume and run.splits.is_file():
        manifest = Manifest.load(run.splits, root=str(Path(cfg.data.path).resolve()))
        manifest = without_missing(manifest, cfg, reporter, "resume")
    else:
        manifest = scanned if scanned is not None else scan_data(cfg, reporter)
    if manifest.skipped:
        atomic_write_text(run.skipped, json.dumps(manifest.skipped, indent=2))
    if manifest.labels_applied:  # what --labels changed, for the record
        atomic_write_text(run.labels_applied, json.dumps(manifest.labels_applied, indent=2))
    manifest.save(run.splits)
    return manifest
