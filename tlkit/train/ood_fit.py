"""The run's out-of-distribution detector (:mod:`tlkit.models.ood`), fitted on the final weights at the end of training.

Pooled features of the training split come from the cached activations when the frozen prefix
never changed (a probe costs nothing more; a partial fine-tune runs only its trained groups over
the stored activations), else from the images, once. The threshold is chosen on the validation
split; a run without one takes it from the training images' own scores and says so.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from tlkit.data import Manifest
from tlkit.models.ood import DEFAULT_METHOD, DEFAULT_REJECT_RATE, OodDetector, fit_detector
from tlkit.train.activations import ActivationCache
from tlkit.train.validation import Predictor
from tlkit.transforms import eval_transform

__all__ = ["split_features", "fit_run_ood"]


def split_features(predictor: Predictor, activations: ActivationCache, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and logits (float32, CPU) of the final weights on ``split``, computed the way
    :func:`tlkit.train.validation.split_logits` computes the logits (the same numbers). Every process calls it."""
    model = predictor.model
    model.eval()
    n_groups = model.backbone.num_groups
    if not predictor.feed.manifest.paths(split):
        return torch.empty(0, model.backbone.feature_dim), torch.empty(0, len(model.classes))
    with torch.inference_mode():
        if activations.prefix_unchanged():
            features = activations.inputs_at(n_groups, split)
            logits = torch.cat([model.head(features[s:s + 256].to(predictor.device)).float().cpu()
                                for s in range(0, len(features), 256)])
            return features.float(), logits
        feats, outs, rows = [], [], []
        for images, _, at in predictor.feed.loader(split, eval_transform(model.preprocessing), None, 64):
            pooled = model.backbone(images.to(predictor.device))
            outs.append(model.head(pooled).float().cpu())
            feats.append(pooled.float().cpu())
            rows.append(at)
    features, logits = torch.cat(feats), torch.cat(outs)
    if predictor.dist.enabled:  # each rank ran its share: every image back in place, once
        at = torch.cat(rows)
        total = len(predictor.feed.manifest.paths(split))
        features, logits = predictor.dist.gather_rows(features, at, total), predictor.dist.gather_rows(logits, at, total)
    return features, logits


def fit_run_ood(model: Any, predictor: Predictor, activations: ActivationCache, manifest: Manifest, reporter: Any, *,
                method: str = DEFAULT_METHOD, reject_rate: float = DEFAULT_REJECT_RATE,
                timings: dict | None = None) -> OodDetector:
    """Fit the detector on the training split, choose its threshold on validation, give it to ``model``
    (saved as ood.safetensors with the model) and tell ``reporter``. Every process calls it."""
    t0 = time.perf_counter()
    train_features, train_logits = split_features(predictor, activations, "train")
    has_val = bool(manifest.labels("val"))
    val_features, val_logits = split_features(predictor, activations, "val") if has_val else (None, None)
    detector = fit_detector(train_features, manifest.labels("train"), method=method, val_features=val_features,
                            val_logits=val_logits, train_logits=train_logits, temperature=model.temperature,
                            reject_rate=reject_rate, train_paths=manifest.paths("train"))
    model.ood = detector
    if timings is not None:
        timings["ood_seconds"] = time.perf_counter() - t0
    where = f"{len(detector.calibration_scores)} validation images"
    if detector.fitted_on == "train":
        reporter.message("warning: no validation split: the out-of-distribution threshold comes from the training "
                         "images' own scores, which are lower than new images' (expect more than "
                         f"{reject_rate:.0%} of new real images to be answered unknown)")
        where = f"{len(detector.calibration_scores)} training images"
    reporter.message(f"out-of-distribution score: {detector.method}, threshold {detector.threshold:.4g} "
                     f"(rejects {reject_rate:.0%} of real images, chosen on {where})")
    return detector
