"""Build a :class:`~tlkit.models.backbone.Backbone` by name: the library's model, its pretrained weights,
its layout; plus the facts ``tlkit backbones`` lists (built on the meta device, nothing downloaded).

>>> bb = build("timm:test_resnet", pretrained=False)
>>> bb.group_names[:2]
['stem', 'layer1']
"""

from __future__ import annotations

import torch
from torch import nn

from tlkit.errors import BackboneError
from tlkit.models import layouts
from tlkit.models.backbone import Backbone, count_parameters
from tlkit.models.ensemble import Ensemble, ensemble_backbone
from tlkit.models.layouts import Layout
from tlkit.models.pretrained import availability, load_pretrained, preprocessing_for
from tlkit.models.registry import ALIASES, ENSEMBLE_SOURCE, BackboneSpec, ensemble_members, matching_names, resolve

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
    """The library's own model for ``spec``, randomly initialised, with its classifier (an ensemble:
    its members, each already a Backbone)."""
    if spec.source == ENSEMBLE_SOURCE:
        return Ensemble([wrap(m, create_model(m)) for m in ensemble_members(spec)])
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
    if spec.source == ENSEMBLE_SOURCE:
        return ensemble_backbone(spec, model, None if weights_source == "none" else weights_source)  # type: ignore[arg-type]
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
    in the order :func:`tlkit.models.pretrained.weight_sources` gives (explicit file, caches, package, download).

    >>> bb = build("timm:test_resnet", pretrained=False)
    >>> bb(torch.zeros(2, 3, 32, 32)).shape[-1] == bb.feature_dim
    True
    """
    spec = resolve(name) if isinstance(name, str) else name
    if spec.source == ENSEMBLE_SOURCE:
        if weights_file:
            raise BackboneError(f"--weights gives one backbone's weights, but {spec.name} is an ensemble: "
                                "put each member's weights where tlkit finds them (a cache) instead")
        return ensemble_backbone(spec, Ensemble([build(m, pretrained=pretrained, offline=offline)
                                                 for m in ensemble_members(spec)]))
    model = create_model(spec)
    source = "none"
    if pretrained or weights_file:
        source = load_pretrained(spec, model, weights_file=weights_file, offline=offline)
    return wrap(spec, model, source)


def describe_name(name: str) -> dict:
    """Facts about a backbone without downloading anything: built on the meta device."""
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
        "weights": availability(spec),
    }


def _used_parameter_count(bb: Backbone) -> int:
    unique = {id(p): p for i in range(bb.num_groups) for _, p in bb.group_parameters(i)}
    return sum(p.numel() for p in unique.values())


def list_backbones(filter: str | None = None, *, limit: int = 40, include_tests: bool = False) -> list[dict]:
    """Rows for ``tlkit backbones``: the popular set, or every name containing ``filter``
    (timm's ``test_*`` models only with ``include_tests``, see :func:`~tlkit.models.registry.matching_names`)."""
    rows = []
    for n in matching_names(filter, include_tests=include_tests)[:limit]:
        try:
            row = describe_name(n)
        except Exception as exc:  # noqa: BLE001 - one odd model must not hide the rest of the list: its row says why
            row = {"name": n, "source": "?", "params": -1, "feature_dim": -1, "input_size": -1,
                   "weights": f"error: {exc}"}
        row["alias"] = n if n in ALIASES else ""
        rows.append(row)
    return rows
