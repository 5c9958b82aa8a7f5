"""Predictions of the model being trained: validation figures after each epoch, test probabilities at
the end, and the temperature fitted on validation for the final weights; from cached activations
when the frozen prefix allows, else from images."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from tlkit.models.transfer import TransferModel
from tlkit.train import distributed
from tlkit.train.activations import ActivationCache
from tlkit.train.image_feed import ImageFeed
from tlkit.train.losses import TEMPERATURES, calibrated_nll, fit_temperature
from tlkit.transforms import eval_transform

__all__ = ["Predictor", "split_logits", "calibration_of", "calibrate", "FEW_IMAGES"]

#: a temperature fitted on fewer validation images than this is called a rough fit
FEW_IMAGES = 50


class Predictor:
    """Logits and class probabilities for a split of the run, and the validation record of an epoch."""

    def __init__(self, model: TransferModel, feed: ImageFeed, device: torch.device,
                 dist: distributed.Distributed = distributed.SINGLE) -> None:
        self.model, self.feed, self.device, self.dist = model, feed, device, dist

    def logits(self, k: int | None, inputs: torch.Tensor | None, split: str) -> torch.Tensor:
        """Raw logits (float32, on the CPU) from activations entering group ``k`` (``inputs``), or from the split's images."""
        self.model.eval()
        backbone, head = self.model.backbone, self.model.head
        out, rows = [], []
        with torch.inference_mode():
            if inputs is not None:
                for s in range(0, len(inputs), 256):
                    x = inputs[s:s + 256].to(self.device)
                    out.append(head(backbone.forward_groups(x, k)).float().cpu())
            else:
                for images, _, at in self.feed.loader(split, eval_transform(self.model.preprocessing), None, 64):
                    out.append(self.model(images.to(self.device)).float().cpu())
                    rows.append(at)
        logits = torch.cat(out) if out else torch.empty(0, len(self.model.classes))
        if inputs is None and self.dist.enabled:  # each rank predicted its share: every image back in place, once
            at = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)
            logits = self.dist.gather_rows(logits, at, len(self.feed.manifest.paths(split)))
        return logits

    def probs(self, k: int | None, inputs: torch.Tensor | None, split: str) -> torch.Tensor:
        """Uncalibrated probabilities (``softmax(logits)``): what model selection compares."""
        return torch.softmax(self.logits(k, inputs, split), 1)

    def validate(self, k: int, inputs: torch.Tensor | None, labels: torch.Tensor) -> dict:
        """``val_loss``, ``val_calibrated_loss``, ``val_accuracy``, ``val_balanced_accuracy``."""
        from sklearn.metrics import balanced_accuracy_score

        probs = self.probs(k if inputs is not None else None, inputs, "val")
        log_probs = torch.log(probs.clamp_min(1e-12))
        pred = probs.argmax(1).numpy()
        return {"val_loss": F.nll_loss(log_probs, labels).item(), "val_calibrated_loss": calibrated_nll(log_probs, labels),
                "val_accuracy": float((pred == labels.numpy()).mean()),
                "val_balanced_accuracy": float(balanced_accuracy_score(labels.numpy(), pred))}


def split_logits(predictor: Predictor, activations: ActivationCache, split: str) -> torch.Tensor:
    """Logits of the final weights on ``split``. Same weights either way: cached activations only skip
    recomputing a prefix that never changed. Every process must call it (on images they share the work)."""
    cached = activations.prefix_unchanged()
    inputs = activations.at_base(split) if cached else None
    return predictor.logits(activations.base if cached else None, inputs, split)


def calibration_of(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The temperature for these validation ``logits`` and how it was found (what model.json stores).

    ``fitted_on`` is ``"val"`` with the number of images and the NLL before and after, or ``None``
    with the ``reason`` (no validation images: temperature 1, the probabilities are left as they are).
    """
    if len(labels) == 0:
        return {"temperature": 1.0, "fitted_on": None,
                "reason": "no validation split: temperature 1.0, probabilities not calibrated"}
    temperature = fit_temperature(logits, labels)
    z = logits.double()
    edge = min(TEMPERATURES[0].item(), TEMPERATURES[-1].item(), key=lambda t: abs(t - temperature))
    return {"temperature": temperature, "fitted_on": "val", "images": int(len(labels)),
            "val_nll_before": F.cross_entropy(z, labels).item(),
            "val_nll_after": F.cross_entropy(z / temperature, labels).item(),
            # the NLL still falls past the searched range: usually every validation image is right
            "at_search_bound": abs(edge - temperature) / edge < 0.03}


def calibrate(model: TransferModel, predictor: Predictor, activations: ActivationCache, val_labels: Sequence[int],
              reporter: Any) -> dict:
    """Fit the final weights' temperature on the validation split (1.0 without one), give it to ``model``
    (saved in its model.json), and tell ``reporter`` which. Every process calls it, with the same result."""
    labels = torch.tensor(list(val_labels), dtype=torch.long)
    logits = split_logits(predictor, activations, "val") if len(labels) else torch.empty(0)
    calibration = calibration_of(logits, labels)
    model.set_temperature(calibration["temperature"], calibration)
    if calibration["fitted_on"] is None:
        reporter.message(calibration["reason"])
    else:
        bound = " (at the edge of the searched range: few validation mistakes to fit it on)" \
            if calibration["at_search_bound"] else ""
        if calibration["images"] < FEW_IMAGES:
            bound += f"; only {calibration['images']} validation images, a rough fit"
        reporter.message(f"temperature {calibration['temperature']:.3f} fitted on {calibration['images']} validation "
                         f"images: NLL {calibration['val_nll_before']:.4f} -> {calibration['val_nll_after']:.4f}{bound}")
    return calibration
