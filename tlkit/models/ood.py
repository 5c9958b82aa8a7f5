"""Out-of-distribution scores: is an image like the ones the model was trained on?

An :class:`OodDetector` scores a batch from its pooled backbone features and logits (higher =
less like the training images) and answers *unknown* above a threshold. The threshold is chosen
on the validation split so that a stated share of real images (``reject_rate``, default 2%) is
rejected; the sorted validation scores are kept, so another share can be asked for later
(``predict(..., reject_rate=0.05)``) without the data.

Methods (measured in ``bench/ood.py``, figures in ``bench/RESULTS.md``):

* ``mahalanobis``: squared Mahalanobis distance of the L2-normalised features to the nearest class
  mean, with one covariance shared by the classes (Ledoit-Wolf shrinkage, scikit-learn), computed
  as a squared Euclidean distance after whitening (``center``, ``whiten``, ``means``: D + D*D + C*D
  floats).
* ``knn``: 1 - cosine similarity to the k-th nearest training feature (the bank).
* ``energy``: ``-logsumexp(logits)``; ``msp``: ``1 - max softmax(logits / temperature)``.

Whatever the method, a bank of at most :data:`BANK_MAX` L2-normalised training features (float16,
with their labels and paths) is stored: the kNN score and the nearest training images beside each
mistake in the report (:func:`nearest_training`) use it. Everything lives in ``ood.safetensors``
beside ``model.safetensors`` (no pickles); ``model.json`` has the method, threshold and reject rate.

This module sits in the models layer: it knows tensors, never the training loop; the run fits it
in :mod:`tlkit.train.ood_fit`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tlkit._io import atomic_write_bytes
from tlkit.errors import CheckpointError, ConfigError

__all__ = ["METHODS", "DEFAULT_METHOD", "DEFAULT_REJECT_RATE", "BANK_MAX", "KNN_K", "OOD_FILE", "OodDetector",
           "fit_detector", "check_reject_rate", "threshold_for", "load_detector", "nearest_training", "neighbour_finder"]

METHODS = ("mahalanobis", "knn", "energy", "msp")
#: chosen on bench/ood.py's measurements (bench/RESULTS.md, "Out-of-distribution score")
DEFAULT_METHOD = "mahalanobis"
DEFAULT_REJECT_RATE = 0.02
#: training features kept in ood.safetensors (float16): 2048 x 1280 features of EfficientNet-Lite0 is 5 MiB
BANK_MAX = 2048
KNN_K = 5
OOD_FILE = "ood.safetensors"
_FIX = ("copy the run's original ood.safetensors back, or remove the \"ood\" entry of model.json to load the "
        "model without an out-of-distribution score")


def check_reject_rate(reject_rate: float) -> float:
    """``reject_rate`` when it is a share strictly between 0 and 1, else a ConfigError."""
    rate = float(reject_rate)
    if not 0.0 < rate < 1.0:  # also refuses NaN
        raise ConfigError(f"reject rate must be a share between 0 and 1 (0.02 rejects 2% of real images), "
                          f"got {reject_rate!r}")
    return rate


def threshold_for(sorted_scores: torch.Tensor | np.ndarray, reject_rate: float) -> float:
    """The score above which at most ``reject_rate`` of ``sorted_scores`` lie (an observed score)."""
    rate = check_reject_rate(reject_rate)
    scores = np.asarray(sorted_scores, dtype=np.float64)
    if len(scores) == 0:
        raise ConfigError("no scores to choose an out-of-distribution threshold from")
    return float(np.quantile(scores, 1.0 - rate, method="higher"))


@dataclass(eq=False)
class OodDetector:
    """An out-of-distribution score and its threshold: ``score(features, logits) > threshold`` is unknown."""

    method: str
    threshold: float
    reject_rate: float
    fitted_on: str  # "val", or "train" when the run had no validation split
    calibration_scores: torch.Tensor  # sorted scores of the images the threshold was chosen on
    bank: torch.Tensor  # (B, D) L2-normalised training features
    bank_labels: torch.Tensor  # (B,) class index of each
    bank_paths: list[str] = field(default_factory=list)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # mahalanobis: center, whiten, means
    temperature: float = 1.0  # msp's
    k: int = KNN_K
    train_images: int = 0

    def score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of a batch: higher = less like the training images. Plain tensor ops (exportable)."""
        if self.method == "energy":
            return -torch.logsumexp(logits.float(), dim=1)
        if self.method == "msp":
            return 1.0 - torch.softmax(logits.float() / self.temperature, dim=1).max(dim=1).values
        unit = F.normalize(features.float(), dim=1)
        if self.method == "knn":
            return 1.0 - _kth_similarity(unit, self.bank.to(unit.device, torch.float32), self.k)
        center, whiten, means = (self.stats[n].to(unit.device) for n in ("center", "whiten", "means"))
        # the expanded square cancels: float64 keeps the exported graph within 1e-6 of predict
        z, means = ((unit - center) @ whiten).double(), means.double()
        distance = (z * z).sum(1, keepdim=True) - 2.0 * z @ means.T + (means * means).sum(1)[None, :]
        return distance.min(dim=1).values.clamp_min(0.0).float()

    def threshold_at(self, reject_rate: float | None = None, threshold: float | None = None) -> float:
        """The stored threshold, one re-derived for ``reject_rate``, or ``threshold`` as given (not both)."""
        if reject_rate is not None and threshold is not None:
            raise ConfigError("give a reject rate or a threshold, not both")
        if threshold is not None:
            if not math.isfinite(float(threshold)):
                raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
            return float(threshold)
        return self.threshold if reject_rate is None else threshold_for(self.calibration_scores, reject_rate)

    def meta(self) -> dict[str, Any]:
        """What model.json keeps under ``"ood"``."""
        return {"file": OOD_FILE, "method": self.method, "threshold": self.threshold, "reject_rate": self.reject_rate,
                "fitted_on": self.fitted_on, "calibration_images": int(len(self.calibration_scores)),
                "train_images": self.train_images, "bank_size": int(len(self.bank)), "k": self.k,
                "temperature": self.temperature}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``ood.safetensors`` into ``folder`` (atomically)."""
        from safetensors.torch import save

        tensors = {"calibration_scores": self.calibration_scores.float().contiguous(),
                   "bank": self.bank.to(torch.float16).contiguous(), "bank_labels": self.bank_labels.long().contiguous(),
                   **{f"stats.{k}": v.float().contiguous() for k, v in self.stats.items()}}
        meta = {"format": "tlkit-ood", "method": self.method, "bank_paths": json.dumps(self.bank_paths)}
        path = Path(folder) / OOD_FILE
        atomic_write_bytes(path, save(tensors, metadata=meta))
        return path


def _kth_similarity(unit: torch.Tensor, bank: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    sims = unit @ bank.T
    if exclude is not None:  # a training image scored against a bank that holds it: not its own neighbour
        sims = sims.masked_fill(exclude, -2.0)
    return sims.topk(min(k, bank.shape[0]), dim=1).values[:, -1]


def _bank_rows(labels: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` rows, spread over the classes as the training split is (deterministic)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    order = np.random.default_rng(0).permutation(len(labels))[:limit]
    return np.sort(order)


def _mahalanobis_stats(unit: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Whitening of the shared within-class covariance (Ledoit-Wolf), and the whitened class means."""
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    means = np.stack([unit[labels == c].mean(0) for c in classes])
    residuals = unit - means[np.searchsorted(classes, labels)]
    center = unit.mean(0)
    precision = LedoitWolf(assume_centered=True).fit(residuals).precision_
    values, vectors = np.linalg.eigh((precision + precision.T) / 2)
    whiten = vectors * np.sqrt(np.clip(values, 1e-12, None))[None, :]  # whiten @ whiten.T == precision
    return {"center": torch.from_numpy(center).float(), "whiten": torch.from_numpy(whiten).float(),
            "means": torch.from_numpy((means - center) @ whiten).float()}


def fit_detector(train_features: torch.Tensor, train_labels: Sequence[int], *, method: str = DEFAULT_METHOD,
                 val_features: torch.Tensor | None = None, val_logits: torch.Tensor | None = None,
                 train_logits: torch.Tensor | None = None, temperature: float = 1.0,
                 reject_rate: float = DEFAULT_REJECT_RATE, train_paths: Sequence[str] = ()) -> OodDetector:
    """Fit ``method`` on the training split's pooled features and choose its threshold on validation.

    Without validation images (``val_features`` None or empty) the threshold comes from the
    training images' own scores (``fitted_on="train"``; a kNN score then skips each image itself).

    >>> # detector = fit_detector(train_feats, labels, val_features=vf, val_logits=vl); detector.threshold
    """
    if method not in METHODS:
        raise ConfigError(f"out-of-distribution method must be one of {', '.join(METHODS)}, got {method!r}")
    rate = check_reject_rate(reject_rate)
    labels = np.asarray(list(train_labels), dtype=np.int64)
    unit = F.normalize(train_features.float(), dim=1)
    rows = _bank_rows(labels, BANK_MAX)
    detector = OodDetector(method, 0.0, rate, "val", torch.empty(0), unit[rows].clone(), torch.from_numpy(labels[rows]),
                           [str(train_paths[i]) for i in rows] if len(train_paths) else [], temperature=float(temperature),
                           k=min(KNN_K, len(rows)), train_images=len(labels))
    if method == "mahalanobis":
        detector.stats = _mahalanobis_stats(unit.double().numpy(), labels)
    if val_features is not None and len(val_features):
        scores = detector.score(val_features, val_logits)
    else:
        detector.fitted_on = "train"
        logits = train_logits if train_logits is not None else torch.zeros(len(labels), 1)
        scores = detector.score(train_features, logits)
        if method == "knn":
            exclude = torch.from_numpy(rows)[None, :] == torch.arange(len(labels))[:, None]
            scores = 1.0 - _kth_similarity(unit, detector.bank, detector.k + 1, exclude)
    detector.calibration_scores = torch.sort(scores.float()).values
    detector.threshold = threshold_for(detector.calibration_scores, rate)
    return detector


def load_detector(folder: str | os.PathLike, meta: dict | None, feature_dim: int) -> OodDetector | None:
    """The detector model.json's ``"ood"`` entry (``meta``) describes, read from ``folder``; None without one.

    A missing, damaged or inconsistent file is a CheckpointError naming it and the fix.
    """
    if not meta:
        return None
    from safetensors import safe_open

    path = Path(folder) / OOD_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        if header.get("format") != "tlkit-ood" or header.get("method") != meta["method"]:
            raise ValueError(f"it describes method {header.get('method')!r}, model.json {meta['method']!r}")
        stats = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("stats.")}
        detector = OodDetector(meta["method"], float(meta["threshold"]), float(meta["reject_rate"]), meta["fitted_on"],
                               tensors["calibration_scores"].float(), tensors["bank"].float(), tensors["bank_labels"].long(),
                               list(json.loads(header.get("bank_paths", "[]"))), stats,
                               float(meta.get("temperature", 1.0)), int(meta.get("k", KNN_K)),
                               int(meta.get("train_images", 0)))
        _check(detector, feature_dim)
    except FileNotFoundError as exc:
        raise CheckpointError(f"model.json names an out-of-distribution file, but {path} is missing: {_FIX}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to read is the same answer: a damaged file
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}. "
                              f"The file is damaged or edited: {_FIX}") from exc
    return detector


def _check(detector: OodDetector, feature_dim: int) -> None:
    if detector.method not in METHODS:
        raise ValueError(f"unknown method {detector.method!r}")
    if detector.bank.ndim != 2 or detector.bank.shape[1] != feature_dim or len(detector.bank_labels) != len(detector.bank):
        raise ValueError(f"its feature bank has shape {tuple(detector.bank.shape)}, the backbone gives {feature_dim} features")
    if detector.method == "mahalanobis" and {"center", "whiten", "means"} - set(detector.stats):
        raise ValueError("the Mahalanobis statistics are incomplete")
    every = [detector.calibration_scores, detector.bank, *detector.stats.values()]
    if not all(torch.isfinite(t).all() for t in every) or not math.isfinite(detector.threshold):
        raise ValueError("it holds NaN or infinite values")


def nearest_training(detector: OodDetector, features: torch.Tensor, k: int = 3) -> list[list[dict[str, Any]]]:
    """The ``k`` most similar training images (cosine on pooled features) of each row of ``features``:
    ``{"path", "label" (class index), "similarity"}``, most similar first (``path`` "" when not kept)."""
    unit = F.normalize(features.float(), dim=1)
    sims = unit @ detector.bank.T.float()
    top = sims.topk(min(k, len(detector.bank)), dim=1)
    return [[{"path": detector.bank_paths[j] if j < len(detector.bank_paths) else "",
              "label": int(detector.bank_labels[j]), "similarity": float(s)}
             for s, j in zip(values.tolist(), index.tolist())] for values, index in zip(top.values, top.indices)]


def neighbour_finder(model: Any, k: int = 3) -> Callable[[str], list[dict[str, Any]]] | None:
    """``find(path)``: the ``k`` nearest training images of one image file, with class names (for the report's
    gallery of mistakes); None for a model without OOD statistics. One forward pass per call."""
    detector = getattr(model, "ood", None)
    if detector is None or not len(detector.bank) or not detector.bank_paths:
        return None
    transform = model.eval_transform()

    def find(path: str) -> list[dict[str, Any]]:
        from tlkit.data import load_image

        model.eval()
        with torch.inference_mode():
            features = model.backbone(transform(load_image(path))[None].to(model.device)).cpu()
        return [dict(n, label=model.classes[n["label"]]) for n in nearest_training(detector, features, k)[0]]

    return find
