"""Look inside a model: a Keras-style summary, feature maps and first-layer filters.

Compute only: functions return plain data (rows, arrays); drawing lives in ``tlkit.report.files``-style
helpers at the bottom, which import matplotlib lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
from torch import nn

from tlkit.models.backbone import Backbone
from tlkit.models.builder import build
from tlkit.models.heads import HeadSpec, make_head

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class SummaryRow:
    name: str
    kind: str  # "group", "layer", "pool" or "head"
    output_shape: tuple[int, ...]
    params: int
    trainable: int

    @property
    def status(self) -> str:
        if self.params == 0:
            return "-"
        if self.trainable == self.params:
            return "trainable"
        return "frozen" if self.trainable == 0 else "partly trainable"


@dataclass
class ModelSummary:
    """What :func:`summarize` returns; ``str(summary)`` is a plain-text table."""

    backbone: str
    image_size: int
    rows: list[SummaryRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    flops: int = 0  # forward FLOPs per image (PyTorch's FlopCounterMode; a multiply-add counts 2)

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "image_size": self.image_size, "total_params": self.total_params,
                "trainable_params": self.trainable_params, "frozen_params": self.frozen_params, "flops": self.flops,
                "rows": [{"name": r.name, "kind": r.kind, "output_shape": list(r.output_shape), "params": r.params,
                          "trainable": r.trainable, "status": r.status} for r in self.rows]}

    def __str__(self) -> str:
        lines = [f"{'layer':<34} {'output shape':<22} {'params':>12}  status", "-" * 80]
        for r in self.rows:
            indent = "  " if r.kind == "layer" else ""
            shape = "(" + ", ".join(str(s) for s in r.output_shape) + ")"
            lines.append(f"{indent + r.name:<34} {shape:<22} {r.params:>12,}  {r.status}")
        lines += ["-" * 80,
                  f"total params: {self.total_params:,}   trainable: {self.trainable_params:,}   "
                  f"frozen: {self.frozen_params:,}",
                  f"forward FLOPs per image at {self.image_size}px: {self.flops / 1e9:.3f} G"]
        return "\n".join(lines)


def _count(params: Iterable[nn.Parameter], seen: set[int]) -> tuple[int, int]:
    total = trainable = 0
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def summarize(backbone: Backbone, *, num_classes: int = 2, image_size: int | None = None,
              head: HeadSpec | None = None, layers: bool = False) -> ModelSummary:
    """Shapes, parameters (total / trainable / frozen) and forward FLOPs of backbone + head.

    Runs one real forward pass on a zero image of ``image_size`` (default: the weights' own), so
    every output shape is what the model really produces.

    >>> s = summarize(build("timm:test_resnet", pretrained=False), num_classes=3, image_size=32)
    >>> s.rows[-1].output_shape
    (1, 3)
    """
    from torch.utils.flop_counter import FlopCounterMode

    size = image_size or backbone.preprocessing.input_size
    head_spec = head or HeadSpec("linear", backbone.feature_dim, num_classes)
    head_module = make_head(head_spec)
    summary = ModelSummary(backbone.name, size)
    seen: set[int] = set()
    was_training = backbone.training
    backbone.eval()
    head_module.eval()
    x = torch.zeros(1, 3, size, size)
    pool_ids = {id(p) for _, p in backbone.pool_parameters()}
    with torch.no_grad():
        for index, name in enumerate(backbone.group_names):
            x_before = x
            # groups that only partition parameters cannot run alone: their rows have no output shape
            x = backbone.run_group(index, x) if backbone.sequential else x
            own = [p for _, p in backbone.group_parameters(index) if id(p) not in pool_ids]
            params, trainable = _count(own, seen)
            summary.rows.append(SummaryRow(name, "group", tuple(x.shape) if backbone.sequential else (), params, trainable))
            if layers and backbone.sequential:
                summary.rows.extend(_layer_rows(backbone, index, x_before))
        pooled = backbone.pool(x) if backbone.sequential else backbone(x)
        params, trainable = _count([p for _, p in backbone.pool_parameters()], seen)
        summary.rows.append(SummaryRow("pool", "pool", tuple(pooled.shape), params, trainable))
        logits = head_module(pooled)
        p, t = _count(head_module.parameters(), seen)
        summary.rows.append(SummaryRow(f"head ({head_spec.kind})", "head", tuple(logits.shape), p, t))
        with FlopCounterMode(display=False) as counter:
            head_module(backbone(torch.zeros(1, 3, size, size)))
        summary.flops = int(counter.get_total_flops())
    # parameters the groups never touched (e.g. an unused classifier kept for state-dict names) are left out
    summary.total_params = sum(r.params for r in summary.rows if r.kind != "layer")
    summary.trainable_params = sum(r.trainable for r in summary.rows if r.kind != "layer")
    backbone.train(was_training)
    return summary


def _layer_rows(backbone: Backbone, index: int, x: torch.Tensor) -> list[SummaryRow]:
    """Rows for each direct child of a group's modules (counted without disturbing group totals).

    The group runs as it always does (:meth:`Backbone.run_group`); hooks record each child's output.
    """
    children: list[tuple[str, nn.Module]] = []
    for path in backbone.groups[index].modules:
        module = backbone.model.get_submodule(path)
        kids = list(module.named_children()) if isinstance(module, nn.Sequential) else [("", module)]
        children += [(f"{path}.{name}" if name else path, child) for name, child in kids]
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(label: str):  # noqa: ANN202
        def record(module: nn.Module, inputs: Any, output: Any) -> None:  # returns None: the output is left alone
            shapes.setdefault(label, tuple(getattr(output, "shape", ())))

        return record

    handles = [child.register_forward_hook(recorder(label)) for label, child in children]
    try:
        backbone.run_group(index, x)
    finally:
        for handle in handles:
            handle.remove()
    local_seen: set[int] = set()
    rows = []
    for label, child in children:
        p, t = _count(child.parameters(), local_seen)
        rows.append(SummaryRow(label, "layer", shapes.get(label, ()), p, t))
    return rows


def summarize_name(name: str, *, num_classes: int = 2, image_size: int | None = None,
                   trainable_groups: int | str = 0, layers: bool = False) -> ModelSummary:
    """Summary of a backbone by name, with random weights (no download needed)."""
    backbone = build(name, pretrained=False)
    backbone.freeze(trainable_groups)
    return summarize(backbone, num_classes=num_classes, image_size=image_size, layers=layers)


# --------------------------------------------------------------------------------------------
# feature maps and filters (data), then their plots


def feature_maps(backbone: Backbone, image: torch.Tensor, group: int | str, *, top: int = 16) -> np.ndarray:
    """The ``top`` most active channels of a group's output for one preprocessed image: (top, H, W)."""
    index = backbone.group_index(group)
    backbone.eval()
    with torch.no_grad():
        # stop at the group itself: forward_groups(x, 0, num_groups) would pool after the last one
        x = image.unsqueeze(0) if image.ndim == 3 else image[:1]
        out = backbone.run_group(index, backbone.forward_groups(x, 0, index))
    if out.ndim != 4:
        raise ValueError(f"group {backbone.group_names[index]} outputs shape {tuple(out.shape)}, not a feature map")
    maps = out[0]
    strongest = maps.mean(dim=(1, 2)).argsort(descending=True)[:top]
    return maps[strongest].float().numpy()


def first_conv_filters(backbone: Backbone) -> np.ndarray:
    """Weights of the first convolution, (out_channels, H, W, 3) scaled to [0, 1] per filter."""
    for module in backbone.model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            w = module.weight.detach().float().permute(0, 2, 3, 1).numpy()
            lo = w.min(axis=(1, 2, 3), keepdims=True)
            hi = w.max(axis=(1, 2, 3), keepdims=True)
            return (w - lo) / np.maximum(hi - lo, 1e-8)
    raise ValueError(f"{backbone.name} has no 3-channel convolution")


def plot_grid(images: np.ndarray, *, title: str = "", cmap: str = "viridis", cols: int = 8,
              tile: float = 1.6) -> Figure:
    """Draw a (N, H, W) or (N, H, W, 3) array as a grid of ``tile``-inch squares; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, tile * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img, cmap=None if img.ndim == 3 else cmap)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
