"""The data doctor inside a run: the run's own split diagnosed before the first stage.

Leakage (a picture, exact or near copy, or a ``--group-by`` group in two splits) stops the run
before its directory is written, unless ``data.allow_leakage`` (``--allow-leakage``); label conflicts,
suspect labels and outliers are reported. The findings go to the run's ``doctor.json`` and its
report. The features come from the feature store, at the run's preprocessing: those of a probe
stage on the pooled features are the same entries, so on such recipes the doctor costs one decode
per image for the hashes and a few seconds of probes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tlkit._io import atomic_write_text
from tlkit.config import RunConfig
from tlkit.console import Reporter
from tlkit.data import Manifest
from tlkit.errors import DataError
from tlkit.models.backbone import Backbone

if TYPE_CHECKING:
    from tlkit.diagnosis.result import DoctorResult

__all__ = ["doctor_run_data", "save_findings", "load_findings", "leakage_text"]


def leakage_text(pairs: list, groups: list[dict], limit: int = 3) -> str:
    """Leaking pairs and groups in one line: the first few, and how many more."""
    shown = [f"{a} ({sa}) ~ {b} ({sb}), {p.kind}, similarity {p.similarity:.3f}"
             for p in pairs[:limit] for (a, b), (sa, sb) in [(p.paths, p.splits)]]
    shown += [f"group {g['group']!r} in {' and '.join(g['splits'])}" for g in groups[:max(0, limit - len(shown))]]
    more = len(pairs) + len(groups) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


class _ProgressOnly:
    """The run's reporter for the doctor's progress bars; its own messages give way to one summary line."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int):  # noqa: ANN202
        return self.reporter.task(f"doctor: {description}", total)

    def epoch(self, record: dict) -> None:
        pass


def doctor_run_data(cfg: RunConfig, manifest: Manifest, backbone: Backbone, device: torch.device, workers: int,
                    reporter: Reporter) -> DoctorResult | None:
    """The doctor on the run's split (None with ``data.doctor: false``); DataError on leakage unless allowed."""
    if not cfg.data.doctor:
        return None
    from tlkit.diagnosis.examine import diagnose

    preprocessing = backbone.preprocessing.with_size(cfg.data.image_size)
    with torch.random.fork_rng(devices=[]):  # the doctor's folds leave the run's random streams as they were
        result = diagnose(manifest, backbone, preprocessing, cache_dir=cfg.cache_dir, device=device, seed=cfg.seed,
                          workers=workers, reporter=_ProgressOnly(reporter))
    reporter.message(f"doctor: {len(result.near_duplicates)} duplicate pair(s) ({len(result.leaks)} across splits, "
                     f"{len(result.label_conflicts)} across classes), {len(result.suspect_labels)} suspect label(s), "
                     f"{len(result.outliers)} outlier(s) in {result.timings.get('total_seconds', 0):.1f}s; "
                     "details in the run's report.html and doctor.json")
    certain = [p for p in result.leaks if p.certain]
    leaks = len(certain) + len(result.group_leaks)
    if leaks and not cfg.data.allow_leakage:
        raise DataError(f"{leaks} leak(s) between splits: the same picture (or --group-by group) in two splits "
                        f"inflates the test figures: {leakage_text(certain, result.group_leaks)}. Remove the copies "
                        f"(see `tlkit doctor {cfg.data.path}`), keep related images together with --group-by, or pass "
                        "--allow-leakage to train anyway (the report then lists the leaks)")
    if leaks:
        reporter.message(f"warning: training with {leaks} leak(s) between splits (--allow-leakage): "
                         f"{leakage_text(certain, result.group_leaks)}")
    possible = [p for p in result.leaks if not p.certain]
    if possible:  # features or hashes alike, pixels not: a crop, or two pictures that look the same; not refused
        reporter.message(f"warning: {len(possible)} possible copies across splits (alike, not the same pixels; "
                         f"review them in the report): {leakage_text(possible, [])}")
    for warning in result.warnings[:5]:
        reporter.message(f"warning: doctor: {warning}")
    for pair in [p for p in result.label_conflicts if p.certain][:3]:
        reporter.message(f"warning: the same picture has two labels: {pair.paths[0]} ({pair.labels[0]}) and "
                         f"{pair.paths[1]} ({pair.labels[1]}); fix one with --labels relabel.csv")
    return result


def save_findings(result: DoctorResult | None, file: Path) -> None:
    if result is not None:
        atomic_write_text(file, json.dumps(result.to_dict(), indent=2))


def load_findings(file: Path) -> DoctorResult | None:
    """A run's doctor.json (None when the run has none or it cannot be read: the report then goes without)."""
    from tlkit.diagnosis.result import DoctorResult

    try:
        return DoctorResult.from_dict(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
