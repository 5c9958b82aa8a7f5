"""A two-class run's decision: its positive class and, when a target is set, the threshold chosen on validation.

The threshold is chosen on the *calibrated* validation probabilities (what ``predict`` answers with),
after the temperature is fitted; the rule is :func:`tlkit.evaluation.binary.choose_threshold`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tlkit.config import RunConfig
from tlkit.errors import ConfigError
from tlkit.evaluation.binary import choose_threshold, positive_class

__all__ = ["check_decision", "decide"]


def check_decision(cfg: RunConfig, classes: Sequence[str]) -> None:
    """Refuse, before training, a positive class or a target on a task that is not two-class (or a name not a class)."""
    m = cfg.model
    asked = [f"--{n.replace('_', '-')}" for n in ("positive_class", "target_recall", "target_precision")
             if getattr(m, n) is not None]
    if asked and len(classes) != 2:
        raise ConfigError(f"{', '.join(asked)} need a two-class task; {cfg.data.path} has {len(classes)} classes")
    if m.positive_class is not None:
        positive_class(classes, given=m.positive_class)


def decide(ctx: Any) -> dict | None:
    """Give a two-class run's model its decision (None for more classes): the positive class by the rule
    (the training split's counts), and the threshold for the config's target on validation (else None: argmax)."""
    m, classes = ctx.cfg.model, ctx.manifest.classes
    if len(classes) != 2:
        return None
    counts = ctx.manifest.counts("train")
    index, rule = positive_class(classes, [counts.get(c, 0) for c in classes], given=m.positive_class)
    decision: dict[str, Any] = {"positive": classes[index], "positive_rule": rule, "threshold": None,
                                "chosen_for": "argmax (no target set)"}
    if m.target_recall is not None or m.target_precision is not None:
        decision.update(_chosen(ctx, index))
    ctx.model.set_decision(decision)
    return decision


def _chosen(ctx: Any, index: int) -> dict:
    from tlkit.train.validation import split_logits

    m, labels = ctx.cfg.model, np.array(ctx.manifest.labels("val"))
    if not len(labels) or not (labels == index).any():
        why = "no validation split" if not len(labels) else "no positive image in the validation split"
        ctx.reporter.message(f"decision threshold not chosen ({why}): predictions take the argmax")
        return {"chosen_for": f"argmax ({why} to choose a threshold on)"}
    probs = ctx.model.probabilities(split_logits(ctx.predictor, ctx.activations, "val")).numpy()
    chosen = choose_threshold(labels, probs[:, index], target_recall=m.target_recall,
                              target_precision=m.target_precision, positive=index)
    note = "" if chosen["reached"] else " (not reached on validation: the closest threshold)"
    ctx.reporter.message(f"threshold {chosen['threshold']:.3g} for {chosen['chosen_for']}{note}: validation recall "
                         f"{_pct(chosen['val_recall'])}, precision {_pct(chosen['val_precision'])}")
    return chosen


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
