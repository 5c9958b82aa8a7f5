"""One name space over torchvision and timm backbones.

Naming rule (documented in the README):

* ``tv:NAME`` or ``torchvision:NAME``: a torchvision classification model, its ``DEFAULT`` weights.
* ``timm:NAME`` (``NAME`` may carry a pretrained tag, ``timm:convnext_tiny.fb_in1k``): a timm model.
* a bare name is looked up in this order: tlkit's aliases (``efficientnet_lite0`` means
  ``timm:tf_efficientnet_lite0``, whose ImageNet weights ship in a Python package), then torchvision,
  then timm. So ``resnet18`` is torchvision's ResNet-18 and ``convnext_tiny`` torchvision's ConvNeXt;
  say ``timm:resnet18`` for timm's.

A built :class:`Backbone` is an ``nn.Module`` mapping images to pooled features of size
``feature_dim``. Its layers are split into ordered *groups* (stem, stages, last block; see
``tlkit.models.layouts`` for each family) so recipes can freeze and unfreeze by group, and, where the
groups run one after another (``Backbone.sequential``), so the frozen prefix can be run once and
cached (see ``tlkit.train.feature_store``). The model's own state-dict names are kept (``Backbone.model``), so saved weights
stay loadable by timm or torchvision directly.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tlkit.errors import BackboneError
from tlkit.models import layouts
from tlkit.models.layouts import Execution, LayerGroup, Layout

#: Bare names that mean something more specific to tlkit.
ALIASES: dict[str, str] = {
    "efficientnet_lite0": "timm:tf_efficientnet_lite0",
}

#: Shown by ``tlkit backbones`` when no filter is given: small, proven ImageNet backbones.
POPULAR: tuple[str, ...] = (
    "efficientnet_lite0",
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "convnext_tiny",
    "regnet_y_800mf",
    "timm:resnet18.a1_in1k",
    "timm:efficientnet_b0.ra_in1k",
    "timm:mobilenetv3_large_100.ra_in1k",
    "timm:convnext_tiny.fb_in1k",
    "timm:vit_small_patch16_224.augreg_in21k_ft_in1k",
)


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


def _check_preprocessing(pre: "Preprocessing") -> None:
    """Refuse values that would crash or silently break every prediction (std 0, NaN, a 30000 px crop)."""
    import math

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


@dataclass(frozen=True)
class BackboneSpec:
    """A resolved backbone name: which library, which architecture, which weights."""

    name: str  # canonical, e.g. "tv:resnet18" or "timm:tf_efficientnet_lite0"
    source: str  # "torchvision" or "timm"
    arch: str  # the library's model name, without tag
    tag: str | None = None  # timm pretrained tag or torchvision weights enum name

    @property
    def timm_name(self) -> str:
        return f"{self.arch}.{self.tag}" if self.tag else self.arch


# --------------------------------------------------------------------------------------------
# name resolution


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    from torchvision import models

    return tuple(sorted(models.list_models(module=models)))


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(sorted(timm.list_models()))


def _timm_known(name: str) -> bool:
    import timm

    arch = name.split(".", 1)[0]
    return timm.is_model(arch)


def resolve(name: str) -> BackboneSpec:
    """Resolve a backbone name to a :class:`BackboneSpec` (no model is built).

    >>> resolve("resnet18").name
    'tv:resnet18'
    >>> resolve("efficientnet_lite0").name
    'timm:tf_efficientnet_lite0'
    """
    raw = name.strip()
    if not raw:
        raise BackboneError("backbone name is empty; try 'efficientnet_lite0' or see 'tlkit backbones'")
    lowered = raw.lower()
    if lowered in ALIASES:
        return resolve(ALIASES[lowered])
    prefix, sep, rest = raw.partition(":")
    if sep:
        prefix = prefix.lower()
        if prefix in ("tv", "torchvision"):
            if rest in _torchvision_names():
                return BackboneSpec(f"tv:{rest}", "torchvision", rest)
            raise BackboneError(_unknown_message(raw, [f"tv:{n}" for n in _torchvision_names()]))
        if prefix == "timm":
            if _timm_known(rest):
                arch, _, tag = rest.partition(".")
                return BackboneSpec(f"timm:{rest}", "timm", arch, tag or None)
            raise BackboneError(_unknown_message(raw, [f"timm:{n}" for n in _timm_names()]))
        raise BackboneError(
            f"unknown backbone source '{prefix}:' in '{raw}'; use 'tv:NAME', 'timm:NAME' or a bare name"
        )
    if raw in _torchvision_names():
        return BackboneSpec(f"tv:{raw}", "torchvision", raw)
    if _timm_known(raw):
        arch, _, tag = raw.partition(".")
        return BackboneSpec(f"timm:{raw}", "timm", arch, tag or None)
    candidates = list(ALIASES) + list(_torchvision_names()) + list(_timm_names())
    raise BackboneError(_unknown_message(raw, candidates))


def _unknown_message(raw: str, candidates: list[str]) -> str:
    candidates = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(raw, candidates, n=5, cutoff=0.5)
    if not close:  # substring matches help for names like "vit" or "convnext"
        key = raw.split(":")[-1].lower()
        close = [c for c in candidates if key and key in c.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown backbone '{raw}'.{hint} 'tlkit backbones FILTER' lists the known names."


# --------------------------------------------------------------------------------------------
# the Backbone module


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

    def freeze(self, trainable_groups: int | str = 0) -> None:
        """Freeze everything but the last ``trainable_groups`` groups (``"all"``: nothing frozen).

        Frozen BatchNorm layers are kept in eval mode even when the module is put in train mode,
        so their running statistics never drift (see :meth:`train`).
        """
        n = self.trainable_group_count(trainable_groups)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for i in range(self.num_groups - n, self.num_groups):
            for _, p in self.group_parameters(i):
                p.requires_grad_(True)
        self.train(self.training)

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

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters(recurse=False))
                    if self.bn_eval or (params and not any(p.requires_grad for p in params)):
                        module.eval()
        return self

    def describe(self) -> dict:
        return {
            "name": self.spec.name,
            "source": self.spec.source,
            "feature_dim": self.feature_dim,
            "groups": self.group_names,
            "preprocessing": self.preprocessing.to_dict(),
            "weights_source": self.weights_source,
        }


# --------------------------------------------------------------------------------------------
# building


def _tv_weights_enum(spec: BackboneSpec):  # -> torchvision WeightsEnum member or None
    from torchvision import models as tvm

    try:
        enum = tvm.get_model_weights(spec.arch)
    except (ValueError, KeyError):
        return None
    if spec.tag:
        return enum[spec.tag]
    return enum.DEFAULT


def preprocessing_for(spec: BackboneSpec, model: nn.Module | None = None) -> Preprocessing:
    """The preprocessing recorded with the backbone's pretrained weights."""
    if spec.source == "torchvision":
        weights = _tv_weights_enum(spec)
        if weights is None:
            return Preprocessing(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
        t = weights.transforms()
        crop = int(t.crop_size[0])
        resize = int(t.resize_size[0]) if t.resize_size else crop
        return Preprocessing(crop, resize, tuple(t.mean), tuple(t.std), t.interpolation.value)  # type: ignore[arg-type]
    import timm

    if model is None:
        with torch.device("meta"):
            model = timm.create_model(spec.timm_name, pretrained=False)
    cfg = timm.data.resolve_model_data_config(model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    resize = int(round(size / crop_pct)) if cfg.get("crop_mode", "center") == "center" else size
    return Preprocessing(size, resize, tuple(cfg["mean"]), tuple(cfg["std"]), str(cfg["interpolation"]))


#: torchvision builder options its ImageNet weights were made with (what its builder sets when
#: given weights): GoogLeNet and Inception-v3 re-normalise their input, and their auxiliary heads
#: (training-only classifiers) are dropped, as torchvision drops them after loading.
_TV_BUILD_OPTIONS: dict[str, dict] = {
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": True},
    "inception_v3": {"transform_input": True, "aux_logits": False, "init_weights": True},
}

#: State-dict prefixes of those auxiliary heads, which torchvision's weight files still hold.
_AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")


def _ignore_aux_heads(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Load-state-dict pre-hook: a library weights file (loaded into the bare model, prefix "")
    may carry the auxiliary heads this model was built without; they are not needed."""
    if prefix == "":
        for key in [k for k in state_dict if k.startswith(_AUX_HEADS)]:
            del state_dict[key]


def create_model(spec: BackboneSpec) -> nn.Module:
    """The library's own model for ``spec``, randomly initialised, with its classifier."""
    try:
        if spec.source == "torchvision":
            from torchvision import models as tvm

            options = _TV_BUILD_OPTIONS.get(spec.arch, {})
            model = tvm.get_model(spec.arch, weights=None, **options)
            if options.get("aux_logits") is False:
                model.register_load_state_dict_pre_hook(_ignore_aux_heads)
            return model
        import timm

        return timm.create_model(spec.timm_name, pretrained=False)
    except Exception as exc:  # the library's own message is the useful part
        raise BackboneError(f"cannot build backbone {spec.name}: {exc}") from exc


def _tv_fallback(model: nn.Module) -> tuple[Layout, int]:
    """A torchvision family tlkit has no layout for: its classifier becomes Identity, one opaque group."""
    for attr in ("fc", "head", "heads", "classifier"):
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Linear):
            setattr(model, attr, nn.Identity())
            return layouts.opaque(layouts.Trunk(), layouts.identity_pool), -1
        if isinstance(sub, nn.Sequential) and isinstance(sub[len(sub) - 1], nn.Linear):
            sub[len(sub) - 1] = nn.Identity()
            return layouts.opaque(layouts.Trunk(), layouts.identity_pool), -1
    raise BackboneError(f"cannot find the classifier of torchvision model {type(model).__name__}; "
                        "choose another backbone ('tlkit backbones' lists them)")


def wrap(spec: BackboneSpec, model: nn.Module, weights_source: str = "none") -> Backbone:
    """Turn a library classifier (weights already loaded) into a :class:`Backbone`."""
    if spec.source == "timm":
        model.reset_classifier(0)  # type: ignore[operator]
        layout = layouts.timm_layout(model)
        feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)  # type: ignore[arg-type]
    else:
        layout, feature_dim = layouts.tv_layout(model) or _tv_fallback(model)
    preprocessing = preprocessing_for(spec, model)
    if feature_dim <= 0:
        with torch.inference_mode():
            model.eval()
            probe = torch.zeros(1, 3, preprocessing.input_size, preprocessing.input_size)
            feature_dim = int(model(probe).shape[-1])
    return Backbone(spec, model, layout, feature_dim, preprocessing, weights_source)


def build(name: str | BackboneSpec, *, pretrained: bool = True, weights_file: str | None = None,
          offline: bool | None = None) -> Backbone:
    """Build a backbone by name, with pretrained weights resolved offline first.

    ``pretrained=False`` gives random weights (tests, architecture checks). Weights are looked up
    in the order documented in :func:`tlkit.models.pretrained.load_pretrained`.

    >>> bb = build("timm:test_resnet", pretrained=False)
    >>> bb(torch.zeros(2, 3, 32, 32)).shape[-1] == bb.feature_dim
    True
    """
    from tlkit.models import pretrained as weights_mod

    spec = resolve(name) if isinstance(name, str) else name
    model = create_model(spec)
    source = "none"
    if pretrained or weights_file:
        source = weights_mod.load_pretrained(spec, model, weights_file=weights_file, offline=offline)
    return wrap(spec, model, source)


def compile_backend() -> str:
    """The ``torch.compile`` backend for ``--compile``: ``TLKIT_COMPILE_BACKEND`` or torch's default (inductor)."""
    return os.environ.get("TLKIT_COMPILE_BACKEND") or "inductor"


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe_name(name: str) -> dict:
    """Facts about a backbone without downloading anything: built on the meta device."""
    from tlkit.models import pretrained as weights_mod

    spec = resolve(name)
    device = "meta"
    try:
        with torch.device(device):
            model = create_model(spec)
    except BackboneError:  # a few constructors compute with real tensors (torchvision RegNet): use the CPU
        device = "cpu"
        model = create_model(spec)
    with torch.device(device):
        bb = wrap(spec, model) if spec.source == "timm" or layouts.tv_family(model) is not None else None
    # count what the backbone runs: torchvision's 1000-class classifier stays in bb.model only for its names
    params = _used_parameter_count(bb) if bb is not None else count_parameters(model)
    feature_dim = bb.feature_dim if bb is not None else -1
    pre = bb.preprocessing if bb is not None else preprocessing_for(spec)
    return {
        "name": spec.name,
        "source": spec.source,
        "params": params,
        "feature_dim": feature_dim,
        "input_size": pre.input_size,
        "weights": weights_mod.availability(spec),
    }


def _used_parameter_count(bb: Backbone) -> int:
    unique = {id(p): p for i in range(bb.num_groups) for _, p in bb.group_parameters(i)}
    return sum(p.numel() for p in unique.values())


def list_backbones(filter: str | None = None, *, limit: int = 40) -> list[dict]:
    """Rows for ``tlkit backbones``: the popular set, or every name containing ``filter``."""
    if not filter:
        names = list(POPULAR)
    else:
        key = filter.lower()
        names = [a for a in ALIASES if key in a]
        names += [f"tv:{n}" for n in _torchvision_names() if key in n.lower()]
        names += [f"timm:{n}" for n in _timm_names() if key in n.lower()]
    rows = []
    for n in names[:limit]:
        try:
            row = describe_name(n)
        except Exception as exc:  # one odd model must not hide the rest of the list
            row = {"name": n, "source": "?", "params": -1, "feature_dim": -1, "input_size": -1,
                   "weights": f"error: {exc}"}
        row["alias"] = n if n in ALIASES else ""
        rows.append(row)
    return rows
