"""Grad-CAM: where in an image a trained model looks for a class.

The heat map is the ReLU of the last feature map weighted by the spatially averaged gradient of
the class score (Selvaraju et al., 2017), upsampled to the input size and scaled to [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tlkit.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

    from tlkit.model import TransferModel


@dataclass
class Explanation:
    """A Grad-CAM heat map for one image and one class."""

    source: str
    class_name: str
    class_index: int
    probability: float  # the model's probability for class_name
    predicted: str
    heatmap: np.ndarray  # (H, W) in [0, 1], at the model's input size
    image: np.ndarray  # (H, W, 3) uint8: the input after resize and crop, as the model saw it

    def overlay(self, alpha: float = 0.45) -> np.ndarray:
        """The image with the heat map blended over it, (H, W, 3) uint8."""
        from matplotlib import colormaps

        colored = colormaps["jet"](self.heatmap)[..., :3] * 255.0
        return (self.image * (1 - alpha) + colored * alpha).clip(0, 255).astype(np.uint8)

    def peak(self) -> tuple[int, int]:
        """(row, column) of the heat map's maximum."""
        return tuple(int(v) for v in np.unravel_index(int(self.heatmap.argmax()), self.heatmap.shape))  # type: ignore[return-value]


def gradcam(model: "TransferModel", image: torch.Tensor, class_index: int | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM heat map (H, W) for one preprocessed image (3, H, W), and the class probabilities."""
    backbone = model.backbone
    if not backbone.sequential:
        raise ConfigError(f"Grad-CAM needs a backbone split into layer groups; {backbone.name} is one opaque group "
                          "(ViT-like models are not supported yet)")
    model.eval()
    x = image.unsqueeze(0).to(model.device)
    with torch.enable_grad():
        with torch.no_grad():
            before = backbone.forward_groups(x, 0, backbone.num_groups - 1)
        before = before.detach().requires_grad_(False)
        # the last group must build a graph even when its parameters are frozen
        feature_map = backbone._run_group(backbone.num_groups - 1, before)
        if feature_map.ndim != 4:
            raise ConfigError(f"{backbone.name}: the last layer group gives shape {tuple(feature_map.shape)}, not a feature map")
        feature_map.retain_grad() if feature_map.requires_grad else feature_map.requires_grad_(True)
        logits = model.head(backbone.layout.pool(backbone.model, feature_map))
        probs = torch.softmax(logits.float(), dim=1)[0]
        target = int(probs.argmax()) if class_index is None else class_index
        logits[0, target].backward()
    grads = feature_map.grad[0]  # (C, h, w)
    weights = grads.mean(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * feature_map[0].detach()).sum(0))
    cam = F.interpolate(cam[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    cam = cam / cam.max() if float(cam.max()) > 0 else cam
    model.zero_grad(set_to_none=True)
    return cam.cpu().numpy(), probs.detach().cpu()


def explain(model: "TransferModel", image: "str | os.PathLike | Image.Image", class_name: str | None = None) -> Explanation:
    """Grad-CAM for one image file or PIL image, for ``class_name`` (default: the predicted class)."""
    from PIL import Image as PILImage

    from tlkit.data import load_image

    if class_name is not None and class_name not in model.classes:
        raise ConfigError(f"class '{class_name}' is not one of the model's classes: {', '.join(model.classes)}")
    source = str(image) if not isinstance(image, PILImage.Image) else "<image>"
    pil = load_image(image) if not isinstance(image, PILImage.Image) else image.convert("RGB")
    tensor = model.eval_transform()(pil)
    index = None if class_name is None else model.classes.index(class_name)
    heatmap, probs = gradcam(model, tensor, index)
    target = int(probs.argmax()) if index is None else index
    mean = torch.tensor(model.preprocessing.mean)[:, None, None]
    std = torch.tensor(model.preprocessing.std)[:, None, None]
    shown = ((tensor * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return Explanation(source, model.classes[target], target, float(probs[target]), model.classes[int(probs.argmax())],
                       heatmap, shown)


def write_overlays(model: "TransferModel", images: Sequence[str], out_dir: str | os.PathLike,
                   class_name: str | None = None) -> list[Path]:
    """Save ``<name>.gradcam.png`` overlays (image | overlay side by side) for each image; returns the paths."""
    from PIL import Image as PILImage

    from tlkit.data import safe_name

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, path in enumerate(images):
        exp = explain(model, path, class_name)
        pair = np.concatenate([exp.image, exp.overlay()], axis=1)
        name = f"{i:04d}-{safe_name(Path(path).stem)}-{safe_name(exp.class_name)}.gradcam.png"
        target = out / name
        PILImage.fromarray(pair).save(target)
        written.append(target)
    return written
