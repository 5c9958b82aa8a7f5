"""Predictions of the model being trained: validation figures after each epoch, test probabilities at
the end; from cached activations when the frozen prefix allows, else from images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tlkit.models.transfer import TransferModel
from tlkit.train import distributed
from tlkit.train.image_feed import ImageFeed
from tlkit.train.losses import calibrated_nll
from tlkit.transforms import eval_transform

__all__ = ["Predictor"]


class Predictor:
    """Class probabilities for a split of the run, and the validation record of an epoch."""

    def __init__(self, model: TransferModel, feed: ImageFeed, device: torch.device,
                 dist: distributed.Distributed = distributed.SINGLE) -> None:
        self.model, self.feed, self.device, self.dist = model, feed, device, dist

    def probs(self, k: int | None, inputs: torch.Tensor | None, split: str) -> torch.Tensor:
        """Probabilities from activations entering group ``k`` (``inputs``), or from the split's images."""
        self.model.eval()
        backbone, head = self.model.backbone, self.model.head
        out, rows = [], []
        with torch.inference_mode():
            if inputs is not None:
                for s in range(0, len(inputs), 256):
                    x = inputs[s:s + 256].to(self.device)
                    out.append(torch.softmax(head(backbone.forward_groups(x, k)).float(), 1).cpu())
            else:
                for images, _, at in self.feed.loader(split, eval_transform(self.model.preprocessing), None, 64):
                    out.append(torch.softmax(self.model(images.to(self.device)).float(), 1).cpu())
                    rows.append(at)
        probs = torch.cat(out) if out else torch.empty(0, len(self.model.classes))
        if inputs is None and self.dist.enabled:  # each rank predicted its share: every image back in place, once
            at = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)
            probs = self.dist.gather_rows(probs, at, len(self.feed.manifest.paths(split)))
        return probs

    def validate(self, k: int, inputs: torch.Tensor | None, labels: torch.Tensor) -> dict:
        """``val_loss``, ``val_calibrated_loss``, ``val_accuracy``, ``val_balanced_accuracy``."""
        from sklearn.metrics import balanced_accuracy_score

        probs = self.probs(k if inputs is not None else None, inputs, "val")
        log_probs = torch.log(probs.clamp_min(1e-12))
        pred = probs.argmax(1).numpy()
        return {"val_loss": F.nll_loss(log_probs, labels).item(), "val_calibrated_loss": calibrated_nll(log_probs, labels),
                "val_accuracy": float((pred == labels.numpy()).mean()),
                "val_balanced_accuracy": float(balanced_accuracy_score(labels.numpy(), pred))}
