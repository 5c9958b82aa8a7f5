"""Whether a run keeps test-time augmentation, and which views: paired comparisons on validation, from cached views.

With ``tta: true`` (``--tta``) and a final model whose frozen prefix never trained, the validation
and test images' views (the horizontal flip and four corner crops, :data:`tlkit.models.tta.VIEW_SETS`)
go through the prefix once (the feature store's ``flip`` and ``crop-*`` views, stored like any
other view), and the final weights predict every view from cached activations. Two sets are
compared with the image alone: the flip, and the flip with the corner crops.

The rule (:func:`tta_decision`): TTA is kept only when the 95% paired interval of the accuracy
difference (TTA minus plain) on validation lies above 0: Newcombe's hybrid score interval for
paired proportions (:func:`tlkit.evaluation.stats.paired_difference_interval`), which only counts
the images where the two disagree. A point gain is not enough: on a small validation set one or
two lucky images make one, and a rule that follows them would double every prediction's cost for
noise. The interval never has zero width, so identical answers are never "a gain". Two sets are
tested, so each at level 1 - 0.05/2 (Bonferroni); of those kept, the more accurate (fewer views on a
tie). What was compared and the verdict go into ``model.json`` (``tta``) and the report.
"""

from __future__ import annotations

import numpy as np
import torch

from tlkit.evaluation.stats import paired_difference_interval
from tlkit.models.transfer import TransferModel
from tlkit.models.tta import VIEW_SETS, combine_views, tta_text, views_text  # tta_text: kept importable from here
from tlkit.train.activations import ActivationCache
from tlkit.train.context import RunContext
from tlkit.train.validation import Predictor, split_logits

__all__ = ["tta_decision", "choose_views", "choose_tta", "views_text", "tta_split_logits", "tta_text", "RULE"]

RULE = "kept when the 95% paired (Newcombe) interval of the validation accuracy gain, TTA minus plain, is above 0"


def tta_decision(labels: np.ndarray, plain_probs: np.ndarray, tta_probs: np.ndarray, *, level: float = 0.95,
                 views: tuple[str, ...] = ("flip",)) -> dict:
    """The validation comparison of one set of ``views``: accuracies, the paired counts, the interval of
    the gain, and ``used``."""
    plain, tta = plain_probs.argmax(1) == labels, tta_probs.argmax(1) == labels
    both, only_tta = int((plain & tta).sum()), int((tta & ~plain).sum())
    only_plain, neither = int((plain & ~tta).sum()), int((~plain & ~tta).sum())
    low, high = paired_difference_interval(both, only_tta, only_plain, neither, level=level)
    used = low > 0
    gain = float(tta.mean() - plain.mean())
    reason = (f"validation accuracy {plain.mean():.4f} -> {tta.mean():.4f} with {views_text(views)}; the {level:.1%} "
              f"interval of the gain [{low:+.4f}, {high:+.4f}] is " + ("above 0: kept" if used else "not above 0: not kept"))
    return {"used": used, "views": list(views), "rule": RULE, "level": level, "reason": reason, "images": int(len(labels)),
            "val_accuracy_plain": float(plain.mean()), "val_accuracy_tta": float(tta.mean()), "gain": gain,
            "interval": [low, high], "only_tta_right": only_tta, "only_plain_right": only_plain}


def choose_views(labels: np.ndarray, plain_probs: np.ndarray, view_probs: dict[tuple[str, ...], np.ndarray]) -> dict:
    """The record of the best set of views kept at the Bonferroni level (the first set's record when none is):
    ``candidates`` holds every set's comparison."""
    level = 1 - 0.05 / len(view_probs)
    records = [tta_decision(labels, plain_probs, probs, level=level, views=views) for views, probs in view_probs.items()]
    kept = [r for r in records if r["used"]]
    chosen = max(kept, key=lambda r: (r["val_accuracy_tta"], -len(r["views"]))) if kept else records[0]
    summary = [{k: r[k] for k in ("views", "used", "val_accuracy_tta", "interval")} for r in records]
    return {**chosen, "candidates": summary,
            "reason": "; ".join(r["reason"] for r in records) + ("" if not kept else f"; used: {views_text(chosen['views'])}")}


def _view_logits(predictor: Predictor, activations: ActivationCache, split: str,
                 views: tuple[str, ...] | list[str] = ("flip",)) -> list[torch.Tensor]:
    """Logits of the plain view and of ``views`` of ``split``, from cached activations."""
    base = activations.base
    return [predictor.logits(base, activations.at_base(split, 0, augment), split) for augment in ("none", *views)]


def choose_tta(ctx: RunContext) -> dict:
    """Decide TTA for the final (calibrated) weights; set ``ctx.model.tta`` and say what was decided."""
    model = ctx.model
    if not ctx.cfg.tta:
        return model.tta
    labels = np.array(ctx.manifest.labels("val"))
    if not ctx.activations.prefix_unchanged():
        model.tta = {"used": False, "reason": "not evaluated: a stage on images trained the frozen prefix, and the flip "
                     "views are compared on cached activations (use a cached recipe, e.g. linear-probe)"}
    elif len(labels) == 0:
        model.tta = {"used": False, "reason": "not evaluated: no validation split to compare on"}
    else:
        plain, *views = _view_logits(ctx.predictor, ctx.activations, "val", VIEW_SETS[-1])
        by_name = dict(zip(VIEW_SETS[-1], views))
        view_probs = {names: combine_views([plain, *(by_name[n] for n in names)], model.temperature)[1].numpy()
                      for names in VIEW_SETS}
        model.tta = choose_views(labels, model.probabilities(plain).numpy(), view_probs)
    ctx.reporter.message(f"test-time augmentation: {model.tta['reason']}")
    return model.tta


def tta_split_logits(model: TransferModel, predictor: Predictor, activations: ActivationCache, split: str) -> torch.Tensor:
    """:func:`~tlkit.train.validation.split_logits`, averaged over the flip when ``model.tta`` uses it."""
    if not model.tta.get("used") or not activations.prefix_unchanged():
        return split_logits(predictor, activations, split)
    return combine_views(_view_logits(predictor, activations, split, model.tta.get("views") or ["flip"]),
                         model.temperature)[0]
