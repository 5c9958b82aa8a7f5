"""Test-time augmentation: which views of a batch a model averages, and how their answers combine.

The views are the horizontal flip and four corner crops (zoom-ins, :func:`tlkit.transforms.test_view`);
a model uses the image plus the views its record lists (``views``; ``["flip"]`` when a record has
none, as records written before crops existed). A model's ``tta`` record (in ``model.json``) says
whether it is used (``used``) and why (the validation comparison of :mod:`tlkit.train.tta`); a
model saved without one answers from the image alone, as before. Combining averages the
*calibrated probabilities* of the views, and hands back logits they come from exactly:
``logits = T * log(mean probs)``, so ``softmax(logits / T)`` is the averaged probabilities and every
consumer of ``(logits, temperature)`` stays consistent.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tlkit.transforms import CROP_VIEWS, test_view

__all__ = ["TTA_VIEWS", "VIEW_SETS", "NOT_USED", "tta_views", "combine_views", "tta_text", "views_text"]

#: the test-time views tlkit knows, besides the image itself
TTA_VIEWS = ("flip", *CROP_VIEWS)
#: the sets of views a run compares (tlkit.train.tta), fewest first
VIEW_SETS = (("flip",), ("flip", *CROP_VIEWS))
#: the record of a model that does not use test-time augmentation
NOT_USED = {"used": False, "reason": "not asked for (tlkit finetune --tta)"}


def tta_views(images: torch.Tensor, tta: dict | None) -> list[torch.Tensor]:
    """The batch (N, 3, H, W) and, when ``tta`` says it is used, the views it lists (default: the flip)."""
    if not tta or not tta.get("used"):
        return [images]
    return [images, *(test_view(images, view) for view in tta.get("views") or ["flip"])]


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


def views_text(views: Sequence[str]) -> str:
    """``the flip`` or ``the flip and 4 corner crops``."""
    crops = [v for v in views if v != "flip"]
    return "the flip" + (f" and {len(crops)} corner crops" if crops else "")


def tta_text(tta: dict) -> str:
    """One line for the report: used or not (which views), and why."""
    views = views_text(tta.get("views") or ["flip"])
    return (f"used (image + {views.removeprefix('the ')}, probabilities averaged): " if tta.get("used")
            else "not used: ") + str(tta.get("reason", ""))
