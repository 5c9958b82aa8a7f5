"""How each backbone family splits into layer groups.

A :class:`Layout` is an ordered tuple of :class:`LayerGroup` objects plus the pooling that turns the
last group's output into features. Its :class:`Execution` says what the groups can do:

* ``SEQUENTIAL``: the groups run one after another, so the activations at any boundary can be
  computed once and cached (CNNs, Swin, and every family with a hand-written split below);
* ``PARAMETERS``: the groups only partition the parameters (timm's own ``group_matcher``, ViTs); the
  network still runs whole from images, and freezing still trains only the last groups;
* ``OPAQUE``: one group, the whole network; it can be frozen or trained, nothing in between.

This module imports nothing from tlkit: ``tlkit.models.backbone`` runs these layouts and
``tlkit.models.builder`` picks one per model.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

Step = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class Execution(enum.Enum):
    """What a layout's groups can do (see the module docstring)."""

    SEQUENTIAL = "sequential"
    PARAMETERS = "parameters"
    OPAQUE = "opaque"


@dataclass(frozen=True)
class LayerGroup:
    """One unit of freezing: a name, what it owns, and how it runs.

    ``modules`` are submodule paths of the library's model (``""`` is the model itself), run in
    this order unless ``run`` says otherwise; ``parameters`` are loose parameters of a parent
    module that belong to the group (a ViT's class token and position embedding).
    """

    name: str
    modules: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    run: Step | None = None  # when the group is more than its modules in order (an input transform, a flatten)

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.run is not None:
            return self.run(model, x)
        return run_modules(model, self.modules, x)


@dataclass(frozen=True)
class Trunk:
    """How a layout whose groups cannot run one at a time runs them all: ``model.<method>(x)``, or ``model(x)``."""

    method: str = ""

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return getattr(model, self.method)(x) if self.method else model(x)

    def compile(self, model: nn.Module, backend: str) -> None:
        if self.method:
            setattr(model, self.method, torch.compile(getattr(model, self.method), backend=backend))
        else:
            model.compile(backend=backend)


@dataclass(frozen=True)
class Layout:
    """A family's layer groups, in order, and the pooling after the last one."""

    groups: tuple[LayerGroup, ...]
    pool: Step
    pool_modules: tuple[str, ...] = ()  # parameters used by the pooling; they train with the last group
    execution: Execution = Execution.SEQUENTIAL
    trunk: Trunk | None = None  # required unless SEQUENTIAL: images -> what ``pool`` takes

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"layer group names must be unique and non-empty, got {names}")
        if self.execution is not Execution.SEQUENTIAL and self.trunk is None:
            raise ValueError("a layout whose groups cannot run one at a time needs a trunk")
        if self.execution is Execution.OPAQUE and len(self.groups) != 1:
            raise ValueError("an opaque layout is one group")


def run_modules(model: nn.Module, paths: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
    for path in paths:
        x = model.get_submodule(path)(x)
    return x


def _group(name: str, *paths: str, run: Step | None = None) -> LayerGroup:
    return LayerGroup(name, tuple(paths), run=run)


def opaque(trunk: Trunk, pool: Step) -> Layout:
    """The whole network as one group named ``features``."""
    return Layout((LayerGroup("features", ("",)),), pool, execution=Execution.OPAQUE, trunk=trunk)


def identity_pool(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def flatten_avg(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


# --------------------------------------------------------------------------------------------
# groups that partition parameters


def partition(model: nn.Module, names: list[str], groups: list[list[str]], trunk: Trunk, pool: Step) -> Layout:
    """A ``PARAMETERS`` layout from parameter names per group: each group owns the largest
    submodules whose parameters are all its own, and the rest of its parameters loose."""
    group_of = {p: g for g, members in enumerate(groups) for p in members}
    owners: dict[str, set[int]] = {}  # module path -> the groups its parameters (recursively) belong to
    for param in group_of:
        parts = param.split(".")[:-1]
        for depth in range(len(parts) + 1):
            owners.setdefault(".".join(parts[:depth]), set()).add(group_of[param])
    modules: list[dict[str, None]] = [{} for _ in groups]
    loose: list[list[str]] = [[] for _ in groups]
    for param, g in group_of.items():
        parts = param.split(".")[:-1]
        top = None
        for depth in range(len(parts), 0, -1):  # the highest ancestor owned by g alone (never the model itself)
            path = ".".join(parts[:depth])
            if owners[path] != {g}:
                break
            top = path
        if top is None:
            loose[g].append(param)
        else:
            modules[g][top] = None
    layer_groups = tuple(LayerGroup(name, tuple(mods), tuple(params))
                         for name, mods, params in zip(names, modules, loose))
    return Layout(layer_groups, pool, execution=Execution.PARAMETERS, trunk=trunk)


def _matcher_name(param: str, matcher: object) -> str | None:
    """The name timm's ``group_matcher`` gives ``param``'s group: "stem", the matched path ("blocks.3")."""
    if not isinstance(matcher, dict):
        return None
    for key, spec in matcher.items():
        if spec is None:
            continue
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        for regex in (s[0] if isinstance(s, (list, tuple)) else s for s in specs):
            found = re.match(regex, param)
            if found:
                return "stem" if key == "stem" else (found.group(0).rstrip(".") or None)
    return "head"  # timm maps unmatched parameters (neck, head) after every group


def timm_matcher_layout(model: nn.Module, pool: Step) -> Layout | None:
    """Groups from timm's own ``group_matcher`` (coarse: stem, stages or blocks, head), or None."""
    from timm.models import group_parameters

    group_matcher = getattr(model, "group_matcher", None)
    if not callable(group_matcher):
        return None
    try:
        matcher = group_matcher(coarse=True)
    except (AssertionError, NotImplementedError):  # a few families only group finely
        matcher = group_matcher(coarse=False)
    grouped = group_parameters(model, matcher)
    groups = [grouped[g] for g in sorted(grouped)]
    if len(groups) < 2:
        return None
    names: list[str] = []
    for i, members in enumerate(groups):
        name = _matcher_name(members[0], matcher) or f"group{i}"
        names.append(name if name not in names else f"{name}.{i}")
    return partition(model, names, groups, Trunk("forward_features"), pool)


# --------------------------------------------------------------------------------------------
# timm families with a sequential split (their names are kept: saved models and caches use them)


def timm_pool(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(x, pre_logits=True)  # type: ignore[operator]


def timm_layout(model: nn.Module) -> Layout:
    """The layout of a timm model whose classifier was reset (``reset_classifier(0)``)."""
    kind = type(model).__name__
    if kind == "ResNet" and hasattr(model, "layer4"):
        stem = [p for p in ("conv1", "bn1", "act1", "maxpool") if hasattr(model, p)]
        return Layout((_group("stem", *stem),) + tuple(_group(f"layer{i}", f"layer{i}") for i in range(1, 5)), timm_pool)
    if kind in ("EfficientNet", "MobileNetV3"):
        blocks = tuple(_group(f"blocks.{i}", f"blocks.{i}") for i in range(len(model.blocks)))  # type: ignore[arg-type]
        if kind == "EfficientNet":
            return Layout((_group("stem", "conv_stem", "bn1"),) + blocks + (_group("head", "conv_head", "bn2"),), timm_pool)
        return Layout((_group("stem", "conv_stem", "bn1"),) + blocks, timm_pool, pool_modules=("conv_head", "norm_head"))
    if kind == "ConvNeXt":
        n = len(model.stages)  # type: ignore[arg-type]
        stages = tuple(_group(f"stages.{i}", f"stages.{i}", *(["norm_pre"] if i == n - 1 else [])) for i in range(n))
        return Layout((_group("stem", "stem"),) + stages, timm_pool, pool_modules=("head",))
    # Everything else (ViT, Swin, hybrids...): timm's forward_features runs whole; its group_matcher
    # partitions the parameters. Without one, the network is a single group.
    return timm_matcher_layout(model, timm_pool) or opaque(Trunk("forward_features"), timm_pool)


# --------------------------------------------------------------------------------------------
# torchvision families


def _tv_resnet(model: nn.Module) -> tuple[Layout, int]:
    groups = (_group("stem", "conv1", "bn1", "relu", "maxpool"),) + tuple(_group(f"layer{i}", f"layer{i}") for i in range(1, 5))
    return Layout(groups, flatten_avg), model.fc.in_features


def _tv_regnet(model: nn.Module) -> tuple[Layout, int]:
    blocks = tuple(_group(b, f"trunk_output.{b}") for b, _ in model.trunk_output.named_children())
    return Layout((_group("stem", "stem"),) + blocks, flatten_avg), model.fc.in_features


def _features_groups(model: nn.Module) -> tuple[LayerGroup, ...]:
    return tuple(_group("stem" if i == 0 else f"features.{i}", f"features.{i}") for i in range(len(model.features)))


def _tv_mobile(model: nn.Module) -> tuple[Layout, int]:  # EfficientNet, MobileNetV2, MobileNetV3
    dim = next(m.out_channels for m in reversed(list(model.features.modules())) if isinstance(m, nn.Conv2d))
    return Layout(_features_groups(model), flatten_avg), dim


def _tv_convnext(model: nn.Module) -> tuple[Layout, int]:
    def pool(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(m.classifier[0](m.avgpool(x)), 1)  # type: ignore[index,operator]

    return Layout(_features_groups(model), pool, pool_modules=("classifier.0",)), model.classifier[2].in_features


def _fully_connected(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.classifier(torch.flatten(model.avgpool(x), 1))  # type: ignore[operator]


def _tv_vgg(model: nn.Module) -> tuple[Layout, int]:  # VGG and AlexNet: conv blocks end at a max-pool
    dim = model.classifier[-1].in_features
    groups, start = [], 0
    for i, module in enumerate(model.features):
        if isinstance(module, nn.MaxPool2d):
            groups.append(_group(f"block{len(groups) + 1}", *(f"features.{j}" for j in range(start, i + 1))))
            start = i + 1
    # the hidden fully-connected layers (fc6, fc7) give the features; the last Linear is the classifier
    model.classifier[-1] = nn.Identity()
    groups.append(_group("classifier", "avgpool", "classifier", run=_fully_connected))
    return Layout(tuple(groups), identity_pool), dim


def _relu_avg(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return flatten_avg(model, nn.functional.relu(x))


def _tv_densenet(model: nn.Module) -> tuple[Layout, int]:
    dim = model.classifier.in_features
    model.classifier = nn.Identity()
    groups: list[tuple[str, list[str]]] = [("stem", [])]
    for name, _ in model.features.named_children():
        if name.startswith("denseblock"):
            groups.append((name, []))  # a dense block, then its transition (or the final norm)
        groups[-1][1].append(f"features.{name}")
    return Layout(tuple(_group(name, *paths) for name, paths in groups), _relu_avg), dim


def _transformed_then(paths: tuple[str, ...]) -> Step:
    def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # torchvision's own re-normalisation: ImageNet mean/std input -> the (x - 0.5) / 0.5 the weights expect
        return run_modules(model, paths, model._transform_input(x))  # type: ignore[operator]

    return run


def _tv_googlenet(model: nn.Module) -> tuple[Layout, int]:
    dim = model.fc.in_features
    model.fc = nn.Identity()
    stem = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")
    groups = (_group("stem", *stem, run=_transformed_then(stem)),
              _group("inception3", "inception3a", "inception3b"),
              _group("inception4", "maxpool3", *(f"inception4{c}" for c in "abcde")),
              _group("inception5", "maxpool4", "inception5a", "inception5b"))
    return Layout(groups, flatten_avg), dim


def _tv_inception3(model: nn.Module) -> tuple[Layout, int]:
    dim = model.fc.in_features
    model.fc = nn.Identity()
    stem = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2")
    groups = (_group("stem", *stem, run=_transformed_then(stem)),
              _group("Mixed_5", "Mixed_5b", "Mixed_5c", "Mixed_5d"),
              _group("Mixed_6", *(f"Mixed_6{c}" for c in "abcde")),
              _group("Mixed_7", "Mixed_7a", "Mixed_7b", "Mixed_7c"))
    return Layout(groups, flatten_avg), dim


def _tv_shufflenet(model: nn.Module) -> tuple[Layout, int]:
    dim = model.fc.in_features
    model.fc = nn.Identity()
    groups = (_group("stem", "conv1", "maxpool"), _group("stage2", "stage2"), _group("stage3", "stage3"),
              _group("stage4", "stage4", "conv5"))
    return Layout(groups, flatten_avg), dim


def _tv_mnasnet(model: nn.Module) -> tuple[Layout, int]:
    dim = model.classifier[-1].in_features
    model.classifier[-1] = nn.Identity()
    stacks = [i for i, m in enumerate(model.layers) if isinstance(m, nn.Sequential)]  # the inverted-residual stacks
    groups = [_group("stem", *(f"layers.{j}" for j in range(stacks[0])))]
    groups += [_group(f"layers.{i}", f"layers.{i}") for i in stacks[:-1]]
    groups.append(_group(f"layers.{stacks[-1]}", *(f"layers.{j}" for j in range(stacks[-1], len(model.layers)))))
    return Layout(tuple(groups), flatten_avg), dim


def _channels_last_stage(paths: tuple[str, ...]) -> Step:
    def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # Swin computes in (N, H, W, C); groups hand (N, C, H, W) maps on, like every CNN
        return run_modules(model, paths, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    return run


def _tv_swin(model: nn.Module) -> tuple[Layout, int]:
    def stem(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.features[0](x).permute(0, 3, 1, 2)  # type: ignore[index]

    dim = model.head.in_features
    model.head = nn.Identity()

    def merging(i: int) -> bool:
        return type(model.features[i]).__name__.startswith("PatchMerging")

    stages: list[list[str]] = []
    for i in range(1, len(model.features)):
        if not stages or merging(i) or not merging(i - 1):
            stages.append([])  # a stage starts with its patch merging, if any
        stages[-1].append(f"features.{i}")
    stages[-1].append("norm")
    groups = [LayerGroup("stem", ("features.0",), run=stem)]
    groups += [LayerGroup(paths[-1] if paths[-1] != "norm" else paths[-2], tuple(paths), run=_channels_last_stage(tuple(paths)))
               for paths in stages]
    return Layout(tuple(groups), flatten_avg), dim


def _tv_maxvit(model: nn.Module) -> tuple[Layout, int]:
    def pool(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.classifier(x)  # type: ignore[operator]

    dim = model.classifier[-1].in_features
    model.classifier[-1] = nn.Identity()  # pooled -> LayerNorm -> Linear -> Tanh: the pre-logits features
    groups = (_group("stem", "stem"),) + tuple(_group(f"blocks.{i}", f"blocks.{i}") for i in range(len(model.blocks)))
    return Layout(groups, pool, pool_modules=("classifier",)), dim


def _tv_vit(model: nn.Module) -> tuple[Layout, int]:
    # The patch embedding, class token and position embedding are inline code in torchvision's
    # forward, not a module: the groups partition parameters and the model runs whole.
    dim = model.heads[-1].in_features
    model.heads = nn.Identity()
    layers = [name for name, _ in model.encoder.layers.named_children()]
    groups = [LayerGroup("stem", ("conv_proj",), ("class_token", "encoder.pos_embedding"))]
    groups += [LayerGroup(name, (f"encoder.layers.{name}",) + (("encoder.ln",) if name == layers[-1] else ()))
               for name in layers]
    return Layout(tuple(groups), identity_pool, execution=Execution.PARAMETERS, trunk=Trunk()), dim


def _tv_families() -> list[tuple[type | tuple[type, ...], Callable[[nn.Module], tuple[Layout, int]]]]:
    from torchvision import models as tvm

    return [(tvm.ResNet, _tv_resnet), (tvm.RegNet, _tv_regnet), ((tvm.EfficientNet, tvm.MobileNetV2, tvm.MobileNetV3), _tv_mobile),
            (tvm.ConvNeXt, _tv_convnext), ((tvm.VGG, tvm.AlexNet), _tv_vgg), (tvm.DenseNet, _tv_densenet),
            (tvm.GoogLeNet, _tv_googlenet), (tvm.Inception3, _tv_inception3), (tvm.ShuffleNetV2, _tv_shufflenet),
            (tvm.MNASNet, _tv_mnasnet), (tvm.SwinTransformer, _tv_swin), (tvm.MaxVit, _tv_maxvit),
            (tvm.VisionTransformer, _tv_vit)]


def tv_family(model: nn.Module) -> Callable[[nn.Module], tuple[Layout, int]] | None:
    """The layout function for a torchvision model's family, or None when tlkit has none."""
    return next((fn for kinds, fn in _tv_families() if isinstance(model, kinds)), None)


def tv_layout(model: nn.Module) -> tuple[Layout, int] | None:
    """The layout of a torchvision classifier and its feature size, or None for an unknown family.

    Families that ran through the model's own forward before they had groups (VGG, AlexNet, DenseNet, GoogLeNet,
    Inception, ShuffleNet, MNASNet, Swin, MaxViT, ViT) lose their final classifier (to ``nn.Identity``) exactly as
    then, so their state-dict names do not change.
    """
    family = tv_family(model)
    return family(model) if family is not None else None
