"""Backbone names: one name space over torchvision and timm, aliases, and suggestions for typos.

Naming rule (documented in the README):

* ``tv:NAME`` or ``torchvision:NAME``: a torchvision classification model, its ``DEFAULT`` weights.
* ``timm:NAME`` (``NAME`` may carry a pretrained tag, ``timm:convnext_tiny.fb_in1k``): a timm model.
* ``A+B`` (two or more names joined by ``+``): an ensemble whose features are the members' pooled
  features side by side (``tlkit.models.ensemble``); its canonical name joins the members' canonical names.
* a bare name is looked up in this order: tlkit's aliases (``efficientnet_lite0`` means
  ``timm:tf_efficientnet_lite0``, whose ImageNet weights ship in a Python package; likewise
  ``efficientnet_lite1`` and ``efficientnet_lite2``), then torchvision,
  then timm. So ``resnet18`` is torchvision's ResNet-18 and ``convnext_tiny`` torchvision's ConvNeXt;
  say ``timm:resnet18`` for timm's.

:func:`resolve` turns a name into a :class:`BackboneSpec`; nothing is built here (see
``tlkit.models.builder``).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

from tlkit.errors import BackboneError

#: Bare names that mean something more specific to tlkit.
ALIASES: dict[str, str] = {
    "efficientnet_lite0": "timm:tf_efficientnet_lite0",
    "efficientnet_lite1": "timm:tf_efficientnet_lite1",
    "efficientnet_lite2": "timm:tf_efficientnet_lite2",
}

#: joins the members of an ensemble name; the spec's ``source`` of an ensemble
ENSEMBLE_SEPARATOR = "+"
ENSEMBLE_SOURCE = "ensemble"

#: Shown by ``tlkit backbones`` when no filter is given: small, proven ImageNet backbones.
POPULAR: tuple[str, ...] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
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
class BackboneSpec:
    """A resolved backbone name: which library, which architecture, which weights."""

    name: str  # canonical, e.g. "tv:resnet18" or "timm:tf_efficientnet_lite0"
    source: str  # "torchvision" or "timm"
    arch: str  # the library's model name, without tag
    tag: str | None = None  # timm pretrained tag or torchvision weights enum name

    @property
    def timm_name(self) -> str:
        return f"{self.arch}.{self.tag}" if self.tag else self.arch


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision classification model name, sorted."""
    from torchvision import models

    return tuple(sorted(models.list_models(module=models)))


@functools.lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every timm model name (without pretrained tags), sorted."""
    import timm

    return tuple(sorted(timm.list_models()))


def _timm_known(name: str) -> bool:
    import timm

    arch = name.split(".", 1)[0]
    return timm.is_model(arch)


def _timm_spec(name: str) -> BackboneSpec:
    arch, _, tag = name.partition(".")
    return BackboneSpec(f"timm:{name}", "timm", arch, tag or None)


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
    if ENSEMBLE_SEPARATOR in raw:
        return ensemble_spec(raw.split(ENSEMBLE_SEPARATOR))
    lowered = raw.lower()
    if lowered in ALIASES:
        return resolve(ALIASES[lowered])
    prefix, sep, rest = raw.partition(":")
    if sep:
        prefix = prefix.lower()
        if prefix in ("tv", "torchvision"):
            if rest in torchvision_names():
                return BackboneSpec(f"tv:{rest}", "torchvision", rest)
            raise BackboneError(_unknown_message(raw, [f"tv:{n}" for n in torchvision_names()]))
        if prefix == "timm":
            if _timm_known(rest):
                return _timm_spec(rest)
            raise BackboneError(_unknown_message(raw, [f"timm:{n}" for n in timm_names()]))
        raise BackboneError(
            f"unknown backbone source '{prefix}:' in '{raw}'; use 'tv:NAME', 'timm:NAME' or a bare name"
        )
    if raw in torchvision_names():
        return BackboneSpec(f"tv:{raw}", "torchvision", raw)
    if _timm_known(raw):
        return _timm_spec(raw)
    candidates = list(ALIASES) + list(torchvision_names()) + list(timm_names())
    raise BackboneError(_unknown_message(raw, candidates))


def ensemble_spec(names: list[str]) -> BackboneSpec:
    """The spec of an ensemble of ``names`` (two or more different backbones, best first).

    >>> ensemble_spec(["efficientnet_lite0", "resnet18"]).name
    'timm:tf_efficientnet_lite0+tv:resnet18'
    """
    parts = [n.strip() for n in names]
    if len(parts) < 2 or not all(parts):
        raise BackboneError(f"an ensemble is two or more backbone names joined by '+' (e.g. efficientnet_lite0+"
                            f"efficientnet_lite1), got {ENSEMBLE_SEPARATOR.join(names)!r}")
    members = [resolve(p) for p in parts]
    canonical = [m.name for m in members]
    twice = sorted({n for n in canonical if canonical.count(n) > 1})
    if twice:
        raise BackboneError(f"{', '.join(twice)} appears more than once in the ensemble "
                            f"{ENSEMBLE_SEPARATOR.join(parts)!r}: name each backbone once")
    name = ENSEMBLE_SEPARATOR.join(canonical)
    return BackboneSpec(name, ENSEMBLE_SOURCE, name)


def ensemble_members(spec: BackboneSpec) -> list[BackboneSpec]:
    """The member specs of an ensemble spec, in order (a plain backbone: itself alone)."""
    if spec.source != ENSEMBLE_SOURCE:
        return [spec]
    return [resolve(n) for n in spec.arch.split(ENSEMBLE_SEPARATOR)]


def _unknown_message(raw: str, candidates: list[str]) -> str:
    candidates = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(raw, candidates, n=5, cutoff=0.5)
    if not close:  # substring matches help for names like "vit" or "convnext"
        key = raw.split(":")[-1].lower()
        close = [c for c in candidates if key and key in c.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown backbone '{raw}'.{hint} 'tlkit backbones FILTER' lists the known names."


def matching_names(filter: str | None = None, *, include_tests: bool = False) -> list[str]:
    """The names ``tlkit backbones`` lists: :data:`POPULAR` without a filter, else every alias,
    torchvision and timm name containing ``filter`` (case-insensitive), in that order. timm's tiny
    random ``test_*`` models (for tests, not for use) only with ``include_tests`` or a filter
    that starts with ``test``."""
    if not filter:
        return list(POPULAR)
    key = filter.lower()
    tests = include_tests or key.startswith("test")
    names = [a for a in ALIASES if key in a]
    names += [f"tv:{n}" for n in torchvision_names() if key in n.lower()]
    names += [f"timm:{n}" for n in timm_names() if key in n.lower() and (tests or not n.startswith("test_"))]
    return names
