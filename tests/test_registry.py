"""Tests for tlkit.models.registry: backbone names, aliases, suggestions; nothing is built."""

from __future__ import annotations

import pytest

from tlkit.errors import BackboneError
from tlkit.models.registry import ALIASES, POPULAR, matching_names, resolve


@pytest.mark.parametrize(
    "name, canonical, source, arch, tag",
    [
        ("resnet18", "tv:resnet18", "torchvision", "resnet18", None),
        ("tv:resnet18", "tv:resnet18", "torchvision", "resnet18", None),
        ("torchvision:resnet18", "tv:resnet18", "torchvision", "resnet18", None),
        ("TV:resnet18", "tv:resnet18", "torchvision", "resnet18", None),
        ("convnext_tiny", "tv:convnext_tiny", "torchvision", "convnext_tiny", None),
        ("efficientnet_lite0", "timm:tf_efficientnet_lite0", "timm", "tf_efficientnet_lite0", None),
        (" EfficientNet_Lite0 ", "timm:tf_efficientnet_lite0", "timm", "tf_efficientnet_lite0", None),
        ("efficientnet_lite1", "timm:tf_efficientnet_lite1", "timm", "tf_efficientnet_lite1", None),
        ("EfficientNet_Lite2", "timm:tf_efficientnet_lite2", "timm", "tf_efficientnet_lite2", None),
        ("timm:efficientnet_lite1", "timm:efficientnet_lite1", "timm", "efficientnet_lite1", None),  # timm's own, not the alias
        ("timm:resnet18", "timm:resnet18", "timm", "resnet18", None),
        ("timm:convnext_tiny.fb_in1k", "timm:convnext_tiny.fb_in1k", "timm", "convnext_tiny", "fb_in1k"),
        ("test_vit", "timm:test_vit", "timm", "test_vit", None),
    ],
)
def test_resolve(name: str, canonical: str, source: str, arch: str, tag: str | None) -> None:
    spec = resolve(name)
    assert (spec.name, spec.source, spec.arch, spec.tag) == (canonical, source, arch, tag)


def test_timm_name_keeps_the_tag() -> None:
    assert resolve("timm:convnext_tiny.fb_in1k").timm_name == "convnext_tiny.fb_in1k"
    assert resolve("timm:convnext_tiny").timm_name == "convnext_tiny"


@pytest.mark.parametrize(
    "name, suggestion",
    [("resnt18", "resnet18"), ("timm:convnxt_tiny", "timm:convnext_tiny"), ("tv:resnet181", "tv:resnet18"),
     ("efficientnet_lite", "efficientnet_lite0")],
)
def test_unknown_name_suggests_close_names(name: str, suggestion: str) -> None:
    with pytest.raises(BackboneError) as info:
        resolve(name)
    message = str(info.value)
    assert f"unknown backbone '{name}'" in message
    hint = message.split("Did you mean:", 1)[1].split("?", 1)[0]
    assert suggestion in [s.strip() for s in hint.split(",")]
    assert "tlkit backbones" in message


def test_unknown_source_prefix_is_named() -> None:
    with pytest.raises(BackboneError, match=r"unknown backbone source 'foo:'.*'tv:NAME', 'timm:NAME'"):
        resolve("foo:bar")


def test_empty_name() -> None:
    with pytest.raises(BackboneError, match="empty"):
        resolve("  ")


def test_matching_names_lists_the_popular_set_or_aliases_then_torchvision_then_timm() -> None:
    assert matching_names() == list(POPULAR) == matching_names("")
    names = matching_names("LITE0")
    assert names[0] == "efficientnet_lite0" and "efficientnet_lite0" in ALIASES
    sources = [n.split(":")[0] if ":" in n else "alias" for n in names]
    assert sources == sorted(sources, key=["alias", "tv", "timm"].index)
    assert "timm:tf_efficientnet_lite0" in names and all("lite0" in n for n in names)


def test_the_packaged_aliases_are_popular_and_listed_first() -> None:
    lites = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert list(POPULAR[:3]) == lites
    assert matching_names("efficientnet_lite")[:3] == lites
