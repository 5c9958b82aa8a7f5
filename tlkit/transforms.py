"""Image transforms built from a backbone's own preprocessing (torchvision v2 transforms)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from tlkit.errors import ConfigError
from tlkit.models.backbones import Preprocessing


def _interp(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        return InterpolationMode.BILINEAR


def _to_normalized(pre: Preprocessing) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


def eval_transform(pre: Preprocessing) -> T.Compose:
    """Resize the short side, centre-crop, scale to [0, 1], normalise: what the weights expect."""
    return T.Compose([T.Resize(pre.resize_size, interpolation=_interp(pre.interpolation), antialias=True),
                      T.CenterCrop(pre.input_size), *_to_normalized(pre)])


def predecode_transform(resize_size: int, interpolation: str = "bilinear") -> T.Compose:
    """PIL image -> uint8 tensor with its shorter side at ``resize_size``: the first step of
    :func:`eval_transform`, done once when decoded images are kept (``tlkit.data.DecodedImages``)."""
    return T.Compose([T.Resize(resize_size, interpolation=_interp(interpolation), antialias=True), T.PILToTensor()])


def train_transform(pre: Preprocessing, augment: str = "light") -> T.Compose:
    """Train-time augmentation presets.

    ``none``: the eval transform. ``light``: random resized crop (scale 0.35-1) and horizontal flip.
    ``strong``: light plus TrivialAugmentWide (colour, geometry) and random erasing.
    """
    if augment == "none":
        return eval_transform(pre)
    interp = _interp(pre.interpolation)
    crop = [T.RandomResizedCrop(pre.input_size, scale=(0.35, 1.0), interpolation=interp, antialias=True),
            T.RandomHorizontalFlip()]
    if augment == "light":
        return T.Compose([*crop, *_to_normalized(pre)])
    if augment == "strong":
        # TrivialAugment rotates and shears; on tensors (decoded images) torchvision does that with
        # nearest or bilinear sampling only, so a bicubic preprocessing augments bilinearly
        geometric = interp if interp in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR) else InterpolationMode.BILINEAR
        return T.Compose([*crop, T.TrivialAugmentWide(interpolation=geometric), *_to_normalized(pre),
                          T.RandomErasing(p=0.25)])
    raise ConfigError(f"augment must be none, light or strong, got {augment!r}")
