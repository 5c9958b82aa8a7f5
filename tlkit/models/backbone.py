"""The Backbone module: a pretrained network without its classifier, split into ordered layer groups.

A :class:`Backbone` maps images to pooled features of size ``feature_dim``. Its layers are split
into :class:`~tlkit.models.layouts.LayerGroup` objects (stem, stages, last block; see
``tlkit.models.layouts`` for each family) so recipes can freeze and unfreeze by group, and, where the
groups run one after another (``Backbone.sequential``), so the frozen prefix can be run once and
cached (see ``tlkit.train.feature_store``). The public way to run a part of it is :meth:`Backbone.run_group`,
:meth:`Backbone.pool` and :meth:`Backbone.forward_groups`. The model's own state-dict names are
kept (``Backbone.model``), so saved weights stay loadable by timm or torchvision directly.
``tlkit.models.builder`` builds one by name.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tlkit.errors import BackboneError
from tlkit.models.layouts import Execution, LayerGroup, Layout
from tlkit.models.registry import BackboneSpec
from tlkit.transforms import Preprocessing


class Backbone(nn.Module):
    """A pretrained network without its classifier, split into ordered layer groups.

    ``backbone(images)`` returns pooled features of shape ``(N, feature_dim)``. The groups
    (:attr:`groups`, :class:`tlkit.models.layouts.LayerGroup` objects) are what ``freeze`` counts. When the
    layout is :attr:`sequential`, ``forward_groups(x, start, stop)`` runs groups ``start..stop-1``
    only (and the pooling when ``stop == num_groups``): that is what lets tlkit cache activations
    at the boundary of the frozen part. Otherwise the groups only partition the parameters (or
    there is a single group) and the network runs whole, from images.
    """

    def __init__(self, spec: BackboneSpec, model: nn.Module, layout: Layout, feature_dim: int,
                 preprocessing: Preprocessing, weights_source: str = "none") -> None:
        super().__init__()
        self.spec = spec
        self.model = model
        self.layout = layout
        self.feature_dim = feature_dim
        self.preprocessing = preprocessing
        self.weights_source = weights_source

    # -- structure
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def groups(self) -> tuple[LayerGroup, ...]:
        return self.layout.groups

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.layout.groups]

    @property
    def num_groups(self) -> int:
        return len(self.layout.groups)

    def group_index(self, group: int | str) -> int:
        """The index of a layer group given by name or by index (negative counts from the end; ``"2"`` is 2)."""
        names = self.group_names
        if isinstance(group, str) and group.lstrip("-").isdigit():
            group = int(group)
        if isinstance(group, int) and not isinstance(group, bool):
            if not -len(names) <= group < len(names):
                raise BackboneError(f"layer {group} is out of range: {self.name} has {len(names)} layer groups "
                                    f"({', '.join(names)}); give a group name or an index from 0 to {len(names) - 1}")
            return group % len(names)
        if group not in names:
            raise BackboneError(f"layer '{group}' is not a layer group of {self.name}; choose one of {', '.join(names)}")
        return names.index(group)

    @property
    def execution(self) -> Execution:
        return self.layout.execution

    @property
    def sequential(self) -> bool:
        """True when groups run one at a time, so activations at a group boundary can be cached."""
        return self.layout.execution is Execution.SEQUENTIAL

    def group_modules(self, index: int) -> list[nn.Module]:
        """Modules holding the parameters of group ``index`` (the pooling layers go with the last).

        A group that partitions parameters may also own loose parameters of a parent module (a
        ViT's class token): :meth:`group_parameters` lists those too.
        """
        mods = [self.model.get_submodule(p) for p in self.layout.groups[index].modules]
        if index == self.num_groups - 1:
            mods += [self.model.get_submodule(p) for p in self.layout.pool_modules]
        return mods

    def group_parameters(self, index: int) -> list[tuple[str, nn.Parameter]]:
        """``(name in self.model, parameter)`` for every parameter of group ``index``."""
        group = self.layout.groups[index]
        paths = list(group.modules) + (list(self.layout.pool_modules) if index == self.num_groups - 1 else [])
        named = [(f"{path}.{n}" if path else n, p) for path in paths
                 for n, p in self.model.get_submodule(path).named_parameters()]
        named += [(n, self.model.get_parameter(n)) for n in group.parameters]
        return list({id(p): (n, p) for n, p in named}.values())

    def pool_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters the pooling uses (they belong to the last group)."""
        return [(f"{path}.{n}", p) for path in self.layout.pool_modules
                for n, p in self.model.get_submodule(path).named_parameters()]

    def compile_groups(self, backend: str | None = None) -> None:
        """``torch.compile`` every layer group in place (``nn.Module.compile``: parameter names unchanged).

        Compiling group by group keeps boundary caching working: the groups run separately. A
        layout whose groups cannot run alone compiles the network's forward once.
        """
        backend = backend or compile_backend()
        if self.layout.trunk is not None:
            self.layout.trunk.compile(self.model, backend)
            return
        for group in self.layout.groups:
            for path in group.modules:
                self.model.get_submodule(path).compile(backend=backend)

    # -- forward
    def run_group(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The output of group ``index`` for its input ``x`` (sequential layouts only)."""
        if not self.sequential:
            raise BackboneError(self._not_sequential(f"run layer group {index} alone"))
        return self.layout.groups[index](self.model, x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, feature_dim)`` from the last group's output."""
        return self.layout.pool(self.model, x)

    def forward_groups(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run groups ``start..stop-1`` on ``x``, then the pooling when ``stop == num_groups``.

        ``x`` is what enters group ``start``: images for 0, pooled features for ``num_groups``
        (nothing is left to run). Layouts that are not :attr:`sequential` run from images to the
        end, or not at all (``start == stop``).
        """
        n = self.num_groups
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise BackboneError(f"{self.name}: forward_groups needs 0 <= start <= stop <= {n}, got {start}, {stop}")
        if start == stop:
            return x
        if self.layout.trunk is not None:
            if (start, stop) != (0, n):
                raise BackboneError(self._not_sequential(f"run layer groups {start} to {stop - 1}"))
            return self.pool(self.layout.trunk(self.model, x))
        for i in range(start, stop):
            x = self.layout.groups[i](self.model, x)
        return self.pool(x) if stop == n else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, feature_dim)`` for a batch of preprocessed images."""
        return self.forward_groups(x, 0, self.num_groups)

    def _not_sequential(self, what: str) -> str:
        return (f"cannot {what} of {self.name}: its layer groups ({self.execution.value}) do not run one at a time; "
                f"the network runs whole from images (forward_groups(x, 0, {self.num_groups}))")

    # -- freezing
    def trainable_group_count(self, trainable_groups: int | str) -> int:
        """How many of the last groups ``trainable_groups`` (a count, or ``"all"``) leaves trainable.

        Raises :class:`BackboneError` for anything else, and for a count between 1 and
        ``num_groups`` on a backbone that is one opaque group (it cannot train only a part).
        """
        n = self.num_groups
        if trainable_groups == "all":
            return n
        value = trainable_groups
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BackboneError(
                f"{self.name}: trainable layer groups must be a whole number >= 0 (the last N of its {n} groups: "
                f"{', '.join(self.group_names)}) or 'all', got {trainable_groups!r}")
        if value and self.execution is Execution.OPAQUE:
            raise BackboneError(
                f"{self.name} is one opaque layer group (tlkit knows no way to split it), so it cannot train only "
                f"its last {value} group(s); use unfreeze: all to fine-tune the whole network, or unfreeze: 0 "
                f"(a probe) to train the head alone")
        return min(value, n)

    def freeze(self, trainable_groups: int | str = 0, *, frozen_first: int = 0) -> None:
        """Freeze everything but the last ``trainable_groups`` groups (``"all"``: nothing frozen), and
        the first ``frozen_first`` groups whatever ``trainable_groups`` says.

        Frozen BatchNorm layers are kept in eval mode even when the module is put in train mode,
        so their running statistics never drift (see :meth:`train`).
        """
        n = self.trainable_group_count(trainable_groups)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for i in range(max(self.num_groups - n, frozen_first), self.num_groups):
            for _, p in self.group_parameters(i):
                p.requires_grad_(True)
        self.train(self.training)

    def output_strides(self) -> list[int | None]:
        """How many times smaller than the input each group's output feature map is (2 for the stem of
        most CNNs), from one blank image at the input size; None where a group's output is no square
        feature map (NCHW, or NHWC as in Swin), and for every group of a layout that is not sequential.

        >>> from tlkit.models.builder import build
        >>> build("timm:test_resnet", pretrained=False).output_strides()
        [4, 4, 8, 16, 32]
        """
        if not self.sequential:
            return [None] * self.num_groups
        size = self.preprocessing.input_size
        param = next(self.parameters())
        x = torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype)
        strides: list[int | None] = []
        was_training = self.training
        self.eval()  # BatchNorm in train mode would fold the blank image into its running statistics
        try:
            with torch.no_grad():
                for i in range(self.num_groups):
                    x = self.run_group(i, x)
                    strides.append(_stride(x, size))
        finally:
            self.train(was_training)
        return strides

    def groups_within_stride(self, stride: int) -> int:
        """How many groups at the start of the network output feature maps at most ``stride`` times
        smaller than the input (``stride`` 4: the stem and first stage of a ResNet or ConvNeXt; the stem,
        ``blocks.0`` and ``blocks.1`` of an EfficientNet), never all of them."""
        count = 0
        for s in self.output_strides()[: self.num_groups - 1]:
            if s is None or s > stride:
                break
            count += 1
        return count

    @property
    def first_trainable_group(self) -> int:
        """Index of the first group with a trainable parameter (``num_groups`` if all frozen)."""
        for i in range(self.num_groups):
            if any(p.requires_grad for _, p in self.group_parameters(i)):
                return i
        return self.num_groups

    #: When True, every BatchNorm layer normalises with its running statistics even while training
    #: (its scale and shift still learn). Small fine-tuning sets give noisy batch statistics that
    #: the running averages never catch up with, so train and eval would disagree.
    bn_eval: bool = False

    def train(self, mode: bool = True) -> Backbone:
        """``nn.Module.train``, then frozen BatchNorm layers (all of them with :attr:`bn_eval`) back to eval mode."""
        super().train(mode)
        if mode:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters(recurse=False))
                    if self.bn_eval or (params and not any(p.requires_grad for p in params)):
                        module.eval()
        return self

    def describe(self) -> dict:
        """Name, source, feature size, group names, preprocessing and where the weights came from."""
        return {
            "name": self.spec.name,
            "source": self.spec.source,
            "feature_dim": self.feature_dim,
            "groups": self.group_names,
            "preprocessing": self.preprocessing.to_dict(),
            "weights_source": self.weights_source,
        }


def _stride(out: torch.Tensor, size: int) -> int | None:
    """``size`` over the side of a square feature map ``out`` (NCHW, or NHWC), or None for anything else."""
    if out.ndim != 4:
        return None
    if out.shape[-1] == out.shape[-2]:
        side = out.shape[-1]
    elif out.shape[1] == out.shape[2]:
        side = out.shape[1]
    else:
        return None
    return round(size / side) if side else None


def compile_backend() -> str:
    """The ``torch.compile`` backend for ``--compile``: ``TLKIT_COMPILE_BACKEND`` or torch's default (inductor)."""
    return os.environ.get("TLKIT_COMPILE_BACKEND") or "inductor"


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters of ``module`` (each counted once), or only those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
