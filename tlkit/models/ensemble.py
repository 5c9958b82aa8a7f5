"""Feature ensembles: several backbones whose pooled features sit side by side, as one Backbone.

``tlkit finetune DATA --backbone efficientnet_lite1+efficientnet_lite0`` (the names joined by
``+``, best first; :func:`tlkit.models.registry.ensemble_spec`) trains one head on the members'
features concatenated, and saves one model that ``tlkit.load``, ``predict``, ``evaluate`` and
``export`` treat like any other: the members' weights are in its ``model.safetensors``.

One input for every member: the ensemble's preprocessing is the first member's resize, crop and
interpolation, at the run's size, with no normalisation (mean 0, std 1: pixels in [0, 1]). Each
member then normalises with its own mean and std, stored in the weights file (``means``,
``stds``), so a loaded model answers exactly as it was trained. That is also what lets the
feature store reuse each member's own cached features (:func:`member_preprocessing`): member
``i`` on ``(x - mean_i) / std_i`` is the member run with its own normalisation at the ensemble's size.

An ensemble is one opaque layer group: it trains on cached features (probe stages); stages that
train the backbone on images are refused (:func:`check_trainable`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from tlkit.errors import ConfigError
from tlkit.models.backbone import Backbone
from tlkit.models.layouts import Trunk, identity_pool, opaque
from tlkit.models.registry import ENSEMBLE_SOURCE, BackboneSpec
from tlkit.transforms import Preprocessing

__all__ = ["Ensemble", "ensemble_backbone", "is_ensemble", "members", "member_preprocessing", "check_trainable"]

#: joins the members' weight sources in an ensemble's ``weights_source``
SOURCE_SEPARATOR = " + "
#: the ensemble's input: pixels in [0, 1]; each member normalises on its own
UNNORMALISED = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class Ensemble(nn.Module):
    """The members (Backbones) and their normalisations; ``forward`` concatenates their pooled features."""

    def __init__(self, backbones: Sequence[Backbone]) -> None:
        super().__init__()
        self.members = nn.ModuleList(backbones)
        # float64: the stored numbers are the members' own exactly (the feature store's keys compare them)
        self.register_buffer("means", torch.tensor([list(b.preprocessing.mean) for b in backbones], dtype=torch.float64))
        self.register_buffer("stds", torch.tensor([list(b.preprocessing.std) for b in backbones], dtype=torch.float64))

    def member_input(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """``x`` (pixels in [0, 1]) normalised for member ``index``: as torchvision's Normalize computes it
        (in the input's dtype), so cached member features match."""
        mean, std = (t[index].to(x.dtype).view(1, 3, 1, 1) for t in (self.means, self.stds))
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(self.member_input(i, x)) for i, member in enumerate(self.members)], dim=1)


def is_ensemble(backbone: Backbone) -> bool:
    return backbone.spec.source == ENSEMBLE_SOURCE


def members(backbone: Backbone) -> list[Backbone]:
    """The member backbones of an ensemble, in order."""
    return list(backbone.model.members)


def ensemble_backbone(spec: BackboneSpec, ensemble: Ensemble, weights_source: str | None = None) -> Backbone:
    """One Backbone over an :class:`Ensemble` of members (built, weights loaded), named by ``spec``;
    ``weights_source`` default: the members' joined by ``+``."""
    backbones = list(ensemble.members)
    first = backbones[0].preprocessing
    mean, std = UNNORMALISED
    preprocessing = Preprocessing(first.input_size, first.resize_size, mean, std, first.interpolation)
    sources = [b.weights_source for b in backbones]
    source = weights_source or ("none" if set(sources) == {"none"} else SOURCE_SEPARATOR.join(sources))
    return Backbone(spec, ensemble, opaque(Trunk(), identity_pool), sum(b.feature_dim for b in backbones),
                    preprocessing, source)


def member_preprocessing(backbone: Backbone, index: int, preprocessing: Preprocessing) -> Preprocessing:
    """What member ``index`` of an ensemble sees when the ensemble runs with ``preprocessing``: the same
    resize and crop, with the member's own normalisation (its stored mean and std)."""
    ens = backbone.model
    mean = tuple(float(v) for v in ens.means[index].tolist())
    std = tuple(float(v) for v in ens.stds[index].tolist())
    return Preprocessing(preprocessing.input_size, preprocessing.resize_size, mean, std,  # type: ignore[arg-type]
                         preprocessing.interpolation)


def check_trainable(backbone: Backbone, stage_kinds: Sequence[tuple[int, str, bool]]) -> None:
    """ConfigError when an ensemble would train on images: ``stage_kinds`` is ``(number, kind, on_images)`` per stage."""
    if not is_ensemble(backbone):
        return
    on_images = [f"stage {n} ({kind})" for n, kind, images in stage_kinds if images]
    if on_images:
        raise ConfigError(f"{backbone.name} is an ensemble: it trains a head on the members' cached features, "
                          f"but {', '.join(on_images)} trains the backbone on images; use --recipe linear-probe "
                          "(or a recipe whose stages all have unfreeze: 0), or fine-tune one backbone at a time")
