"""What ``tlkit.doctor`` returns: typed findings, each with ``to_dict()`` for the JSON output.

Paths are relative to the data folder (``DoctorResult.root``, absolute), with ``/`` separators,
as the user would type them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: thumbnail correlation above which a near pair is a copy for certain (resized, re-encoded, brightened:
#: no pixel moved). Measured with 20 planted copies each (resized to 95%, JPEG 90): Fashion-MNIST
#: copies 0.9987-0.9999, its closest distinct pictures 0.995; digits copies 1.0000, distinct <= 0.9964
#: (bench/REALDATA.md). The same bar as the duplicate rule's pixel test.
CERTAIN_CORRELATION = 0.997


@dataclass(frozen=True)
class DuplicatePair:
    """Two files showing the same picture. Across splits it is leakage, across classes a label conflict:
    errors when the pair is a copy for certain (:attr:`certain`), warnings ("possible-...") when only
    the features or the hash say so (a crop, or two pictures that look all but the same)."""

    paths: tuple[str, str]
    kind: str  # "exact" (same bytes or same pixels) | "near" (resized, re-encoded, cropped, brightened ...)
    similarity: float  # cosine similarity of the centred backbone features; 1.0 for exact copies
    hamming: int  # bits that differ between the 64-bit perceptual hashes
    splits: tuple[str, str]
    labels: tuple[str, str]
    correlation: float = 1.0  # of the blurred 32x32 grey thumbnails: near 1 when no pixel moved; 1.0 for exact copies

    @property
    def leak(self) -> bool:
        return self.splits[0] != self.splits[1]

    @property
    def conflict(self) -> bool:
        return self.labels[0] != self.labels[1]

    @property
    def certain(self) -> bool:
        """An exact copy, or a near copy whose pixels did not move (thumbnail correlation >= CERTAIN_CORRELATION)."""
        return self.kind == "exact" or self.correlation >= CERTAIN_CORRELATION

    @property
    def severity(self) -> str:
        return "error" if (self.leak or self.conflict) and self.certain else "warning"

    @property
    def finding(self) -> str:
        kind = "label-conflict" if self.conflict else "leakage" if self.leak else "duplicate"
        return kind if self.certain or kind == "duplicate" else f"possible-{kind}"

    def to_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "kind": self.kind, "similarity": self.similarity, "hamming": self.hamming,
                "pixel_correlation": self.correlation, "certain": self.certain,
                "splits": list(self.splits), "labels": list(self.labels), "severity": self.severity,
                "leak": self.leak, "conflict": self.conflict, "finding": self.finding}


@dataclass(frozen=True)
class SuspectLabel:
    """An image whose given label the out-of-fold probes contradict."""

    path: str
    split: str
    given: str
    suggested: str
    score: float  # 0..1, higher is more suspect
    confidence: float  # out-of-fold probability of the suggested class
    flagged: bool  # picked by confident learning as a label issue

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "split": self.split, "given": self.given, "suggested": self.suggested,
                "score": self.score, "confidence": self.confidence, "flagged": self.flagged}


@dataclass(frozen=True)
class Outlier:
    """An image far from every class in feature space."""

    path: str
    split: str
    label: str
    score: float  # Mahalanobis distance to the nearest class mean (within-class spread as the unit)
    z: float  # robust z-score of the score within this dataset
    nearest_class: str
    reason: str  # "far from every class" | "blank"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "split": self.split, "label": self.label, "score": self.score, "z": self.z,
                "nearest_class": self.nearest_class, "reason": self.reason}


@dataclass(frozen=True)
class LearningCurve:
    """Recall of one class at each share of the training images, and its gain per doubling."""

    class_name: str
    images: int
    train_images: tuple[int, ...]
    recall: tuple[float, ...]
    slope: float
    would_gain: bool

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_name, "images": self.images, "train_images": list(self.train_images),
                "recall": list(self.recall), "slope_per_doubling": self.slope, "would_gain": self.would_gain}


@dataclass
class DoctorResult:
    """Everything ``tlkit.doctor`` found in one dataset. ``ok`` is False when there is an error-level
    finding (leakage or a label conflict between certain copies, a ``--group-by`` group in two splits)."""

    root: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    near_duplicates: list[DuplicatePair] = field(default_factory=list)
    suspect_labels: list[SuspectLabel] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    learning_curves: list[LearningCurve] = field(default_factory=list)
    curve_fractions: tuple[float, ...] = ()
    curve_accuracy: list[float] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    group_leaks: list[dict[str, Any]] = field(default_factory=list)  # --group-by groups with images in two splits
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def leaks(self) -> list[DuplicatePair]:
        return [p for p in self.near_duplicates if p.leak]

    @property
    def label_conflicts(self) -> list[DuplicatePair]:
        return [p for p in self.near_duplicates if p.conflict]

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.near_duplicates) and not self.group_leaks

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DoctorResult:
        """The result :meth:`to_dict` wrote (a run's ``doctor.json``), read back."""
        curves = d.get("learning_curves") or {}
        return cls(
            root=d["root"], classes=list(d["classes"]), counts={s: dict(c) for s, c in d.get("counts", {}).items()},
            near_duplicates=[DuplicatePair(tuple(p["paths"]), p["kind"], p["similarity"], p["hamming"], tuple(p["splits"]),
                                           tuple(p["labels"]), p.get("pixel_correlation", 1.0)) for p in d.get("near_duplicates", [])],
            suspect_labels=[SuspectLabel(s["path"], s["split"], s["given"], s["suggested"], s["score"], s["confidence"],
                                         s["flagged"]) for s in d.get("suspect_labels", [])],
            outliers=[Outlier(o["path"], o["split"], o["label"], o["score"], o["z"], o["nearest_class"], o["reason"])
                      for o in d.get("outliers", [])],
            learning_curves=[LearningCurve(c["class"], c["images"], tuple(c["train_images"]), tuple(c["recall"]),
                                           c["slope_per_doubling"], c["would_gain"]) for c in curves.get("classes", [])],
            curve_fractions=tuple(curves.get("fractions", ())), curve_accuracy=list(curves.get("accuracy", [])),
            unreadable=[dict(u) for u in d.get("unreadable", [])], group_leaks=[dict(g) for g in d.get("group_leaks", [])],
            warnings=list(d.get("warnings", [])), settings=dict(d.get("settings", {})), timings=dict(d.get("timings", {})))

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "ok": self.ok, "classes": list(self.classes),
            "counts": {s: dict(c) for s, c in self.counts.items()},
            "near_duplicates": [p.to_dict() for p in self.near_duplicates],
            "leaks": [p.to_dict() for p in self.leaks],
            "label_conflicts": [p.to_dict() for p in self.label_conflicts],
            "suspect_labels": [s.to_dict() for s in self.suspect_labels],
            "outliers": [o.to_dict() for o in self.outliers],
            "learning_curves": {"fractions": list(self.curve_fractions), "accuracy": list(self.curve_accuracy),
                                "classes": [c.to_dict() for c in self.learning_curves]},
            "unreadable": [dict(u) for u in self.unreadable],
            "group_leaks": [dict(g) for g in self.group_leaks],
            "warnings": list(self.warnings),
            "settings": dict(self.settings),
            "timings": dict(self.timings),
        }
