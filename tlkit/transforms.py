"""How images are prepared for a backbone: :class:`Preprocessing` (what its weights record, stored in
``model.json``) and the torchvision v2 transforms built from it (eval, train-time augmentation, pre-decoding)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from tlkit.errors import BackboneError, ConfigError


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a backbone, taken from its weights' own metadata."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        _check_preprocessing(self)

    @property
    def crop_pct(self) -> float:
        return self.input_size / self.resize_size

    def with_size(self, input_size: int | None) -> "Preprocessing":
        """The same preprocessing at another crop size, keeping the resize/crop ratio."""
        if input_size is None or input_size == self.input_size:
            return self
        resize = max(input_size, int(round(input_size / self.crop_pct)))
        return Preprocessing(input_size, resize, self.mean, self.std, self.interpolation)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """Rebuild from :meth:`to_dict` (``model.json``); BackboneError names a field that is missing or bad."""
        if not isinstance(d, dict):
            raise BackboneError(f"preprocessing must be a mapping of fields, got {type(d).__name__}")
        missing = [k for k in ("input_size", "resize_size", "mean", "std") if k not in d]
        if missing:
            raise BackboneError(f"preprocessing is missing field(s) {', '.join(missing)}")
        for name in ("mean", "std"):
            if not isinstance(d[name], (list, tuple)) or len(d[name]) != 3:
                raise BackboneError(f"preprocessing.{name} must be 3 numbers (one per RGB channel), got {d[name]!r}")
        try:
            return cls(input_size=_whole(d["input_size"], "input_size"), resize_size=_whole(d["resize_size"], "resize_size"),
                       mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
                       std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                       interpolation=str(d.get("interpolation", "bilinear")))
        except (TypeError, ValueError) as exc:
            raise BackboneError(f"preprocessing has a value that is not a number: {exc}") from exc


#: sane bounds for stored preprocessing: a model.json outside them is damaged or edited
MAX_INPUT_SIZE = 2048
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _whole(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise BackboneError(f"preprocessing.{name} must be a whole number of pixels, got {value!r}")
    return int(value)


def _check_preprocessing(pre: Preprocessing) -> None:
    """Refuse values that would crash or silently break every prediction (std 0, NaN, a 30000 px crop)."""
    if not 1 <= pre.input_size <= MAX_INPUT_SIZE:
        raise BackboneError(f"preprocessing.input_size must be 1..{MAX_INPUT_SIZE} pixels, got {pre.input_size}")
    if not pre.input_size <= pre.resize_size <= 4 * pre.input_size:
        raise BackboneError(f"preprocessing.resize_size must be from input_size ({pre.input_size}) to 4x it, "
                            f"got {pre.resize_size}")
    for name, values, low in (("mean", pre.mean, -10.0), ("std", pre.std, 0.0)):
        if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) and low < v <= 10.0
                                       for v in values):
            rule = "positive and at most 10" if name == "std" else "finite, from -10 to 10"
            raise BackboneError(f"preprocessing.{name} must be 3 numbers, {rule}; got {list(values)}")
    if pre.interpolation not in INTERPOLATIONS:
        raise BackboneError(f"preprocessing.interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                            f"got {pre.interpolation!r}")


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


#: test-time crops (tlkit.models.tta): a corner square of this side (a fraction of the input's), resized back
CROP_ZOOM = 0.8
#: the corner crops' view names: top-left, top-right, bottom-left, bottom-right
CROP_VIEWS = ("crop-tl", "crop-tr", "crop-bl", "crop-br")


def test_view(images: torch.Tensor, view: str) -> torch.Tensor:
    """One test-time view of preprocessed images ((3, H, W) or (N, 3, H, W)): ``flip`` (mirrored) or a
    corner crop of :data:`CROP_VIEWS` (a :data:`CROP_ZOOM` square at that corner, resized back to H x W,
    bilinear): the zoom-ins the training crops (random resized crops) taught the model."""
    if view == "flip":
        return torch.flip(images, dims=[-1])
    if view not in CROP_VIEWS:
        raise ConfigError(f"unknown test-time view {view!r}; the views are flip and {', '.join(CROP_VIEWS)}")
    batch = images if images.ndim == 4 else images.unsqueeze(0)
    h, w = batch.shape[-2:]
    ch, cw = max(1, round(h * CROP_ZOOM)), max(1, round(w * CROP_ZOOM))
    top = 0 if view[-2] == "t" else h - ch
    left = 0 if view[-1] == "l" else w - cw
    crop = batch[..., top:top + ch, left:left + cw]
    out = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
    return out if images.ndim == 4 else out[0]


class ViewStep:
    """``test_view`` as a transform step (picklable, for DataLoader workers)."""

    def __init__(self, view: str) -> None:
        self.view = view

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return test_view(image, self.view)


def train_transform(pre: Preprocessing, augment: str = "light", size: int | None = None) -> T.Compose:
    """Train-time augmentation presets; ``size`` crops smaller than the input size (progressive resizing,
    :mod:`tlkit.train.resizing`; the random presets only).

    ``none``: the eval transform. ``light``: random resized crop (scale 0.35-1) and horizontal flip.
    ``strong``: light plus TrivialAugmentWide (colour, geometry) and random erasing. ``flip`` (not a
    training preset: the test-time view of :mod:`tlkit.models.tta`): the eval transform, mirrored;
    likewise ``crop-tl`` .. ``crop-br`` (:data:`CROP_VIEWS`, :func:`test_view`).
    """
    if augment == "none":
        return eval_transform(pre)
    if augment == "flip":  # the test-time view (tlkit.models.tta): the eval crop, mirrored
        return T.Compose([*eval_transform(pre).transforms, T.RandomHorizontalFlip(p=1.0)])
    if augment in CROP_VIEWS:  # test-time corner crops, from the eval crop as the model computes them
        return T.Compose([*eval_transform(pre).transforms, ViewStep(augment)])
    interp = _interp(pre.interpolation)
    crop = [T.RandomResizedCrop(size or pre.input_size, scale=(0.35, 1.0), interpolation=interp, antialias=True),
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
