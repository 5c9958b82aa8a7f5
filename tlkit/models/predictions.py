"""What :meth:`tlkit.models.transfer.TransferModel.predict` returns: :class:`Predictions`, plain arrays plus the class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Predictions"]


@dataclass
class Predictions:
    """What :meth:`TransferModel.predict` returns: plain arrays plus the class names.

    ``unknown[i]`` is True when image i's out-of-distribution score is above ``ood_threshold``
    (unlike the training images); a model without OOD statistics (saved before tlkit kept them)
    answers False for every image, with ``ood_score`` NaN and ``ood_threshold`` None.
    """

    classes: list[str]
    probs: np.ndarray  # (N, C)
    sources: list[str]  # a path, or "<image 3>" for in-memory inputs
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} of files left out (skip_bad)
    logits: np.ndarray | None = None  # (N, C) before the temperature: what ``probs`` was computed from
    temperature: float = 1.0  # probs = softmax(logits / temperature)
    ood_score: np.ndarray | None = None  # (N,) higher = less like the training images; NaN without OOD statistics
    ood_threshold: float | None = None  # a score above it is unknown
    unknown: np.ndarray | None = None  # (N,) bool
    #: two classes with a decision threshold: the positive class's index and the threshold (else argmax)
    positive: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        n = len(self.probs)
        if self.ood_score is None:
            self.ood_score = np.full(n, np.nan)
        if self.unknown is None:
            self.unknown = np.zeros(n, bool) if self.ood_threshold is None else self.ood_score > self.ood_threshold

    @property
    def uncalibrated_probs(self) -> np.ndarray:
        """``softmax(logits)``: the probabilities before temperature scaling (same argmax as ``probs``)."""
        if self.logits is None or self.temperature == 1.0:
            return self.probs
        return torch.softmax(torch.from_numpy(self.logits).float(), dim=1).numpy()

    @property
    def labels(self) -> list[str]:
        """The predicted class of each image: the positive class where p(positive) >= ``threshold``, else argmax."""
        if self.threshold is None or self.positive is None:
            return [self.classes[i] for i in self.probs.argmax(axis=1)]
        said = self.probs[:, self.positive] >= self.threshold
        return [self.classes[self.positive if s else 1 - self.positive] for s in said]

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1)

    def top_k(self, k: int = 3) -> list[list[tuple[str, float]]]:
        k = min(k, len(self.classes))
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(self.probs[i, j])) for j in row] for i, row in enumerate(order)]

    def to_records(self, k: int = 3) -> list[dict]:
        """One dict per image: ``source``, ``label``, ``confidence``, ``top_k``, ``unknown``, ``ood_score`` (None without OOD)."""
        return [{"source": s, "label": lab, "confidence": float(c), "top_k": [{"class": n, "prob": p} for n, p in tk],
                 "unknown": bool(u), "ood_score": None if np.isnan(o) else float(o)}
                for s, lab, c, tk, u, o in zip(self.sources, self.labels, self.confidence, self.top_k(k), self.unknown,
                                               self.ood_score)]

    def __len__(self) -> int:
        return len(self.sources)
