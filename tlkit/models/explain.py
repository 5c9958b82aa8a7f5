"""Grad-CAM: where in an image a trained model looks for a class.

The heat map is the ReLU of a layer group's feature map weighted by the spatially averaged
gradient of the class score (Selvaraju et al., 2017), upsampled to the input size and scaled to
[0, 1]. By default the layer is the last group whose map is at least ``MIN_MAP_SIZE`` cells on a
side: at 224 px that is the last group of most CNNs (7x7), while at smaller inputs, where the last
map shrinks to 4x4, an earlier and finer group is used instead.

Compute only: :func:`explain` returns an :class:`Explanation` (arrays); :func:`write_overlays`
saves PNGs; the evaluation report draws them beside its mistakes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlkit.errors import BackboneError, ConfigError
from tlkit.models.backbone import Backbone
from tlkit.models.ensemble import is_ensemble, members
from tlkit.transforms import Preprocessing

if TYPE_CHECKING:
    from PIL import Image

#: The default Grad-CAM layer is the last group whose feature map has at least this many cells on
#: its shorter side; coarser maps (4x4 at 128 px) cannot say which part of an object mattered.
MIN_MAP_SIZE = 7


class Explainable(Protocol):
    """What Grad-CAM needs of a model (:class:`tlkit.models.transfer.TransferModel` is one): a backbone
    whose groups run one at a time, a head on its pooled features, class names and preprocessing."""

    backbone: Backbone
    head: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    training: bool

    @property
    def device(self) -> torch.device: ...

    def eval_transform(self) -> Callable[..., torch.Tensor]: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...


@dataclass
class Explanation:
    """A Grad-CAM heat map for one image and one class.

    ``heatmap`` and ``image`` are at the model's input size, after the resize and centre crop of
    its preprocessing; :meth:`to_source` maps a (row, column) there back to the original pixels.
    """

    source: str
    class_name: str
    class_index: int
    probability: float  # the model's probability for class_name
    predicted: str
    heatmap: np.ndarray  # (H, W) in [0, 1], at the model's input size
    image: np.ndarray  # (H, W, 3) uint8: the input after resize and crop, as the model saw it
    layer: str = ""  # the layer group whose feature map was weighted
    map_size: tuple[int, int] = (0, 0)  # that feature map's (rows, columns) before upsampling
    source_size: tuple[int, int] = (0, 0)  # the original image's (width, height)
    resize_size: int = 0  # the preprocessing's shorter-side resize

    def overlay(self, alpha: float = 0.45) -> np.ndarray:
        """The image with the heat map blended over it, (H, W, 3) uint8."""
        return blend(self.image, self.heatmap, alpha)

    def peak(self) -> tuple[int, int]:
        """(row, column) of the heat map's maximum, in input (after crop) pixels."""
        return tuple(int(v) for v in np.unravel_index(int(self.heatmap.argmax()), self.heatmap.shape))  # type: ignore[return-value]

    def to_source(self, row: float, col: float) -> tuple[float, float]:
        """(row, column) in input pixels -> (y, x) in the original image's pixels."""
        return input_to_source(row, col, self.source_size, self.resize_size, self.heatmap.shape)  # type: ignore[arg-type]

    def peak_in_source(self) -> tuple[float, float]:
        """(y, x) of the heat map's maximum in the original image's pixels."""
        return self.to_source(*self.peak())


def blend(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: a [0, 1] heat map in matplotlib's ``jet`` colours over the image in grey.

    The image goes grey under the heat map because the image's own colours would mix with the
    map's (red heat vanishes on a red object, and on a blue one reads as purple); show the colour
    image beside it. Cold areas are tinted less than hot ones so the picture stays readable.
    """
    from matplotlib import colormaps

    colored = colormaps["jet"](heatmap)[..., :3] * 255.0
    grey = (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    weight = min(1.0, 1.5 * alpha) * (0.3 + 0.7 * heatmap[..., None])
    return (grey * (1 - weight) + colored * weight).clip(0, 255).astype(np.uint8)


def input_to_source(row: float, col: float, source_size: tuple[int, int], resize_size: int,
                    input_shape: tuple[int, int]) -> tuple[float, float]:
    """Undo the eval transform's geometry: shorter side resized to ``resize_size``, then centre-cropped.

    ``source_size`` is (width, height) of the original image; the result is (y, x) there, with
    pixel centres at integer coordinates (as in the input).
    """
    width, height = source_size
    # torchvision's Resize(int): the shorter side becomes resize_size, the longer one is truncated
    if width <= height:
        new_w, new_h = resize_size, int(resize_size * height / width)
    else:
        new_w, new_h = int(resize_size * width / height), resize_size
    crop_h, crop_w = input_shape
    top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
    return ((row + top + 0.5) * height / new_h - 0.5, (col + left + 0.5) * width / new_w - 0.5)


def default_layer(backbone: Backbone, input_size: int) -> int:
    """Index of the last layer group whose feature map is at least ``MIN_MAP_SIZE`` on a side
    (when none is, as for tiny inputs, the first spatial group: the finest map there is)."""
    x = torch.zeros(1, 3, input_size, input_size, device=next(backbone.parameters()).device)
    chosen = None
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        for i in range(backbone.num_groups):
            x = backbone.run_group(i, x)
            if x.ndim == 4 and (chosen is None or min(x.shape[-2:]) >= MIN_MAP_SIZE):
                chosen = i
    backbone.train(was_training)
    if chosen is None:
        raise ConfigError(f"Grad-CAM: no layer group of {backbone.name} gives a spatial feature map")
    return chosen


def _layer_index(backbone: Backbone, layer: int | str | None, input_size: int) -> int:
    if layer is None or layer == "auto":
        return default_layer(backbone, input_size)
    try:
        return backbone.group_index(layer)
    except BackboneError as exc:  # a bad --layer is an option error
        raise ConfigError(f"{exc} (or 'auto'); 'tlkit summary --backbone NAME' lists them") from exc


def cam_backbone(model: Explainable) -> Backbone:
    """The backbone whose layer groups Grad-CAM looks at: the model's, or an ensemble's first member."""
    return members(model.backbone)[0] if is_ensemble(model.backbone) else model.backbone


def _cam_parts(model: Explainable, x: torch.Tensor) -> tuple[Backbone, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The backbone to explain, its input, and ``pooled features -> logits`` of the whole model; an ensemble's
    other members add their features as they are (no gradient flows through them)."""
    if not is_ensemble(model.backbone):
        return model.backbone, x, model.head
    ensemble, (first, *others) = model.backbone.model, members(model.backbone)
    with torch.no_grad():
        rest = [m(ensemble.member_input(i, x)) for i, m in enumerate(others, start=1)]
    return first, ensemble.member_input(0, x), lambda pooled: model.head(torch.cat([pooled, *rest], dim=1))


def gradcam(model: Explainable, image: torch.Tensor, class_index: int | None = None, *,
            layer: int | str | None = None) -> tuple[np.ndarray, torch.Tensor, int, tuple[int, int]]:
    """Grad-CAM for one preprocessed image (3, H, W) at layer group ``layer`` (default: :func:`default_layer`).

    Returns the heat map (H, W) in [0, 1], the class probabilities, the layer group's index and
    its map's (rows, columns). Frozen parameters are fine: the gradient is taken with respect to
    the feature map, not the weights, and no parameter gradient is left behind.
    """
    backbone, x, finish = _cam_parts(model, image.unsqueeze(0).to(model.device))
    if not backbone.sequential:
        raise ConfigError(f"Grad-CAM needs layer groups that run one at a time; those of {backbone.name} do not "
                          "(ViT-like models are not supported yet)")
    index = _layer_index(backbone, layer, image.shape[-1])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # stop at the group itself: forward_groups would pool after the last one
            feature_map = backbone.run_group(index, backbone.forward_groups(x, 0, index))
        if feature_map.ndim != 4:
            raise ConfigError(f"{backbone.name}: layer group {backbone.group_names[index]} gives shape "
                              f"{tuple(feature_map.shape)}, not a feature map; choose an earlier group")
        feature_map = feature_map.detach().float().requires_grad_(True)
        with torch.enable_grad():
            rest = feature_map
            for i in range(index + 1, backbone.num_groups):
                rest = backbone.run_group(i, rest)
            logits = finish(backbone.pool(rest))
            probs = torch.softmax(logits.float(), dim=1)[0]
            target = int(probs.argmax()) if class_index is None else class_index
            (grads,) = torch.autograd.grad(logits[0, target], feature_map)
    finally:
        model.train(was_training)
    weights = grads[0].mean(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * feature_map[0].detach()).sum(0))
    map_size = (int(cam.shape[0]), int(cam.shape[1]))
    cam = F.interpolate(cam[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    cam = cam / cam.max() if float(cam.max()) > 0 else cam
    return cam.cpu().numpy(), probs.detach().cpu(), index, map_size


def explain(model: Explainable, image: "str | os.PathLike | Image.Image", class_name: str | None = None, *,
            layer: int | str | None = None) -> Explanation:
    """Grad-CAM for one image file or PIL image, for ``class_name`` (default: the predicted class).

    ``layer``: a layer group name or index (``model.backbone.group_names``), or ``None``/``"auto"``
    for the last group whose map is at least ``MIN_MAP_SIZE`` cells on a side.

    >>> # exp = tlkit.load("runs/leaves").explain("leaf.jpg"); exp.class_name, exp.peak_in_source()
    """
    from PIL import Image as PILImage

    from tlkit.data import load_image

    if class_name is not None and class_name not in model.classes:
        raise ConfigError(f"class '{class_name}' is not one of the model's classes: {', '.join(model.classes)}")
    source = str(image) if not isinstance(image, PILImage.Image) else "<image>"
    pil = load_image(image) if not isinstance(image, PILImage.Image) else image.convert("RGB")
    tensor = model.eval_transform()(pil)
    wanted = None if class_name is None else model.classes.index(class_name)
    heatmap, probs, index, map_size = gradcam(model, tensor, wanted, layer=layer)
    target = int(probs.argmax()) if wanted is None else wanted
    return Explanation(source, model.classes[target], target, float(probs[target]), model.classes[int(probs.argmax())],
                       heatmap, _as_shown(model.preprocessing, tensor), cam_backbone(model).group_names[index], map_size,
                       pil.size, model.preprocessing.resize_size)


def _as_shown(pre: Preprocessing, tensor: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: the (H, W, 3) uint8 picture the model was given."""
    mean = torch.tensor(pre.mean)[:, None, None]
    std = torch.tensor(pre.std)[:, None, None]
    return ((tensor * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _fixed_layer(model: Explainable, layer: int | str | None) -> int | str:
    """``layer``, with the default worked out once for many images (it costs a forward pass)."""
    if layer is None or layer == "auto":
        return default_layer(cam_backbone(model), model.preprocessing.input_size)
    return layer


def explain_many(model: Explainable, images: Sequence[str | os.PathLike], class_name: str | None = None, *,
                 layer: int | str | None = None) -> list[Explanation]:
    """:func:`explain` for each image, with the default layer worked out once."""
    layer = _fixed_layer(model, layer)
    return [explain(model, path, class_name, layer=layer) for path in images]


def explainer(model: Explainable, class_name: str | None = None, *,
              layer: int | str | None = None) -> "Callable[[str], tuple[np.ndarray, np.ndarray]] | None":
    """``path -> (image as the model saw it, overlay)`` for report galleries, or ``None`` when the
    backbone cannot be explained (its layer groups do not run one at a time, e.g. ViT): the gallery then shows images only.

    >>> # write_report(result, "out", explain=explainer(model))
    """
    if not cam_backbone(model).sequential:
        return None
    layer = _fixed_layer(model, layer)

    def explain_path(path: str) -> tuple[np.ndarray, np.ndarray]:
        exp = explain(model, path, class_name, layer=layer)
        return exp.image, exp.overlay()

    return explain_path


def write_overlays(model: Explainable, images: Sequence[str], out_dir: str | os.PathLike,
                   class_name: str | None = None, *, layer: int | str | None = None) -> list[Path]:
    """Save ``<n>-<name>-<class>.gradcam.png`` (image | overlay side by side) for each image; returns the paths."""
    return write_explanations(explain_many(model, images, class_name, layer=layer), out_dir)


def write_explanations(explanations: Sequence[Explanation], out_dir: str | os.PathLike,
                       render: Callable[[Explanation], bytes] | None = None) -> list[Path]:
    """One ``<n>-<name>-<class>.gradcam.png`` per explanation, drawn by ``render`` (default: image |
    overlay side by side, no text; ``tlkit explain`` passes :func:`tlkit.report.gradcam.explanation_png`)."""
    from tlkit._io import atomic_write_bytes
    from tlkit.data import safe_name

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, exp in enumerate(explanations):
        data = render(exp) if render is not None else _png(np.concatenate([exp.image, exp.overlay()], axis=1))
        target = out / f"{i:04d}-{safe_name(Path(exp.source).stem)}-{safe_name(exp.class_name)}.gradcam.png"
        atomic_write_bytes(target, data)
        written.append(target)
    return written


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
