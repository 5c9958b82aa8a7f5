"""Test-time augmentation: which views of a batch a model averages, and how their answers combine.

The one view kept today is the horizontal flip. A model's ``tta`` record (in ``model.json``) says
whether it is used (``used``) and why (the validation comparison of :mod:`tlkit.train.tta`); a
model saved without one answers from the image alone, as before. Combining averages the
*calibrated probabilities* of the views, and hands back logits they come from exactly:
``logits = T * log(mean probs)``, so ``softmax(logits / T)`` is the averaged probabilities and every
consumer of ``(logits, temperature)`` stays consistent.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["TTA_VIEWS", "NOT_USED", "tta_views", "combine_views", "tta_text"]

#: the test-time views tlkit knows, besides the image itself
TTA_VIEWS = ("flip",)
#: the record of a model that does not use test-time augmentation
NOT_USED = {"used": False, "reason": "not asked for (tlkit finetune --tta)"}


def tta_views(images: torch.Tensor, tta: dict | None) -> list[torch.Tensor]:
    """The batch (N, 3, H, W) and, when ``tta`` says it is used, its horizontal flip."""
    if not tta or not tta.get("used"):
        return [images]
    return [images, torch.flip(images, dims=[-1])]


def combine_views(view_logits: Sequence[torch.Tensor], temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, calibrated probabilities)`` of the views' averaged probabilities (one view: unchanged).

    >>> z = torch.tensor([[2.0, 0.0]]); logits, probs = combine_views([z, -z], 1.0); probs.tolist()
    [[0.5, 0.5]]
    """
    if len(view_logits) == 1:
        logits = view_logits[0].float()
        return logits, torch.softmax(logits / temperature, dim=-1)
    probs = torch.stack([torch.softmax(z.float() / temperature, dim=-1) for z in view_logits]).mean(0)
    return temperature * torch.log(probs.clamp_min(1e-30)), probs


def tta_text(tta: dict) -> str:
    """One line for the report: used or not, and why."""
    return ("used (image + horizontal flip, probabilities averaged): " if tta.get("used") else "not used: ") \
        + str(tta.get("reason", ""))
