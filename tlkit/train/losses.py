"""Losses and target mixing: pure functions of tensors (no model, no state).

>>> import torch
>>> logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
>>> float(classification_loss(logits, y)) < float(classification_loss(logits, torch.tensor([1])))
True
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["classification_loss", "balanced_class_weights", "mix_batch", "calibrated_nll", "fit_temperature", "TEMPERATURES"]

#: the temperatures model selection tries: 0.03 .. 30, 5% apart
TEMPERATURES = torch.logspace(-1.5, 1.5, 61)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0,
                        class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on class indices, or on soft targets (rows of probabilities, from mixup/cutmix)."""
    if targets.ndim == 2:
        logp = F.log_softmax(logits.float(), dim=1)
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + label_smoothing / targets.shape[1]
        per = -(targets * logp)
        if class_weights is not None:
            per = per * class_weights
        return per.sum(1).mean()
    return F.cross_entropy(logits.float(), targets, weight=class_weights, label_smoothing=label_smoothing)


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weights inversely proportional to class counts, 1 on average over a balanced set.

    >>> balanced_class_weights(torch.tensor([0, 0, 0, 1]), 2).tolist()
    [0.6666666865348816, 2.0]
    """
    counts = torch.bincount(labels, minlength=num_classes).float()
    return counts.sum() / (len(counts) * counts.clamp(min=1))


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, mixup: float, cutmix: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (any input) or CutMix (images: 4-D inputs) with soft targets; unchanged when both are 0.

    With both set, each batch picks one at random. Every draw comes from ``generator``, so an epoch
    repeats exactly from its seed.
    """
    if not (mixup or cutmix):
        return x, y
    onehot = F.one_hot(y, num_classes).float()
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    use_cutmix = cutmix > 0 and x.ndim == 4 and (not mixup or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(alpha, alpha))
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, h, (1,), generator=generator)), int(torch.randint(0, w, (1,), generator=generator))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * onehot + (1 - lam) * onehot[perm]


def calibrated_nll(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Validation loss after temperature scaling: the lowest NLL of ``softmax(log_probs / T)`` over T.

    Label smoothing and mixup make a model underconfident, long training overconfident; both raise
    the plain validation loss without changing which class wins. With the temperature fitted
    away, the loss compares how well models rank the right class, so stages trained with
    different regularisation can be compared fairly (Guo et al., 2017, for the scaling).

    >>> lp = torch.log_softmax(torch.tensor([[4.0, 0.0], [0.0, 4.0]]), 1)
    >>> calibrated_nll(lp, torch.tensor([0, 1])) < float(F.nll_loss(lp, torch.tensor([0, 1])))
    True
    """
    if len(labels) == 0:
        return float("nan")
    losses = [F.cross_entropy(log_probs.double() / t, labels).item() for t in TEMPERATURES]
    return float(min(losses))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` on ``labels`` (Guo et al., 2017).

    :data:`TEMPERATURES` first (what :func:`calibrated_nll` scores), then a finer grid between the
    best one's neighbours (0.25% apart): deterministic, no optimiser state, and the NLL of one
    scalar is smooth, so this is within 0.25% of the optimum. Log-probabilities work as well as
    logits (a constant per row cancels). 1.0 when there are no labels.

    >>> logits = torch.tensor([[8.0, 0.0], [0.0, 8.0], [8.0, 0.0]]); y = torch.tensor([0, 1, 1])
    >>> fit_temperature(logits, y) > 1  # one confident mistake in three: soften
    True
    """
    if len(labels) == 0:
        return 1.0
    z = logits.double()

    def nll(t: float) -> float:
        return F.cross_entropy(z / t, labels).item()

    coarse = [nll(float(t)) for t in TEMPERATURES]
    best = int(np.argmin(coarse))
    lo, hi = TEMPERATURES[max(best - 1, 0)].item(), TEMPERATURES[min(best + 1, len(TEMPERATURES) - 1)].item()
    fine = torch.logspace(np.log10(lo), np.log10(hi), 41).tolist()
    return float(min(fine, key=nll))
