"""A run's epoch log as numbers to plot: every stage's epochs on one axis, the stage boundaries, the kept epoch.

Numbers only (drawn by :class:`tlkit.evaluation.curve_display.HistoryDisplay`). The records are the
lines of a run's ``metrics.jsonl`` (``stage``, ``stage_kind``, ``epoch``, ``train_loss``, ``lr``,
``val_loss``, ``val_accuracy``...); ``kept`` is ``model.json``'s ``extra.kept`` (stage and epoch
counted from 1, or epoch ``"start"``: the weights the stage started from).

Example:
    >>> records = [{"stage": 0, "stage_kind": "probe", "epoch": e, "train_loss": 1.0 - e / 10, "lr": 0.1}
    ...            for e in range(3)] + [{"stage": 1, "stage_kind": "finetune", "epoch": 0, "train_loss": 0.5, "lr": 0.01}]
    >>> h = TrainingHistory.from_records(records, kept={"stage": 1, "stage_kind": "probe", "epoch": 2})
    >>> h.x, h.boundaries, h.kept_x
    ([1, 2, 3, 4], [3.5], 2)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

#: the series a history plots, in the order of its panels' legends
LOSSES = ("train_loss", "val_loss", "val_calibrated_loss")
ACCURACIES = ("train_accuracy", "val_accuracy", "val_balanced_accuracy")
RATES = ("lr",)


@dataclass
class TrainingHistory:
    """Epochs numbered 1..N over all stages (``x``), each series by name (``None`` where an epoch lacks
    it), the stages (``index`` from 0, ``kind``, ``first``/``last`` x, ``epochs``), the x between
    stages (``boundaries``), and the kept epoch's x (``kept_x``; a stage's starting weights sit on
    the boundary before it; ``None`` when not known)."""

    x: list[int]
    series: dict[str, list[float | None]]
    stages: list[dict[str, Any]]
    boundaries: list[float]
    kept_x: float | None = None
    kept: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], kept: dict[str, Any] | None = None) -> TrainingHistory:
        """The history of these epoch records (in the order they ran) and the kept weights."""
        records = [dict(r) for r in records]
        x = list(range(1, len(records) + 1))
        names = [n for n in (*LOSSES, *ACCURACIES, *RATES) if any(n in r for r in records)]
        series = {n: [_number(r.get(n)) for r in records] for n in names}
        stages: list[dict[str, Any]] = []
        for at, record in zip(x, records):
            if not stages or stages[-1]["index"] != record.get("stage"):
                stages.append({"index": record.get("stage"), "kind": record.get("stage_kind", ""), "first": at,
                               "last": at, "epochs": 0})
            stages[-1]["last"], stages[-1]["epochs"] = at, stages[-1]["epochs"] + 1
        boundaries = [s["first"] - 0.5 for s in stages[1:]]
        return cls(x, series, stages, boundaries, _kept_x(records, stages, kept or {}), dict(kept or {}))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> TrainingHistory:
        """Read a run directory's ``metrics.jsonl`` and the kept weights from its ``model.json``."""
        folder = Path(run_dir)
        log = folder / "metrics.jsonl"
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if log.is_file() else []
        meta = folder / "model.json"
        kept = (json.loads(meta.read_text(encoding="utf-8")).get("extra") or {}).get("kept") if meta.is_file() else None
        return cls.from_records(records, kept)

    def stage_rows(self, planned: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One row per stage that ran: ``stage`` (from 1), ``kind``, ``epochs`` run, ``planned`` (when given),
        and the last epoch's ``val_loss`` / ``val_accuracy`` (``None`` without validation)."""
        rows = []
        for stage in self.stages:
            last = stage["last"] - 1
            index = stage["index"] if isinstance(stage["index"], int) else len(rows)
            rows.append({"stage": index + 1, "kind": stage["kind"], "epochs": stage["epochs"],
                         "planned": None if planned is None or index >= len(planned) else planned[index],
                         "val_loss": self.series.get("val_loss", [None] * len(self.x))[last],
                         "val_accuracy": self.series.get("val_accuracy", [None] * len(self.x))[last]})
        return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _kept_x(records: list[dict[str, Any]], stages: list[dict[str, Any]], kept: dict[str, Any]) -> float | None:
    if not kept or "stage" not in kept:
        return None
    stage = next((s for s in stages if s["index"] == kept["stage"] - 1), None)
    if stage is None:
        return None
    if kept.get("epoch") == "start":
        return stage["first"] - 0.5
    for at in range(stage["first"], stage["last"] + 1):
        if records[at - 1].get("epoch") == kept.get("epoch", 0) - 1:
            return at
    return None
