"""Tests for tlkit.backbones: names, structure, freezing, preprocessing, the listing.

Every model is built with random weights (``pretrained=False``) and fed 64-pixel images, so nothing
is downloaded; caches are pointed at ``tmp_path`` and ``TLKIT_OFFLINE=1`` anyway.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from tlkit import backbones, weights
from tlkit.backbones import Backbone, Preprocessing, build, count_parameters, list_backbones, resolve
from tlkit.errors import BackboneError


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny models gain nothing from threads; on a busy 2-core machine OpenMP spinning makes them 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    return tmp_path


# --------------------------------------------------------------------------- 4. names


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


def test_unknown_timm_tag_fails_clearly_at_build() -> None:
    with pytest.raises(BackboneError, match=r"timm:test_resnet\.bogus.*Invalid pretrained tag \(bogus\)"):
        build("timm:test_resnet.bogus", pretrained=False)


def test_empty_name() -> None:
    with pytest.raises(BackboneError, match="empty"):
        resolve("  ")


# --------------------------------------------------------------------------- 5. structure

#: name -> expected feature size from the library itself
TINY = ["timm:test_resnet", "timm:test_efficientnet", "timm:test_vit", "timm:test_convnext",
        "timm:mobilenetv3_small_050", "tv:resnet18", "tv:mobilenet_v3_small"]


def _library_feature_dim(name: str) -> int:
    spec = resolve(name)
    if spec.source == "timm":
        model = timm.create_model(spec.timm_name, pretrained=False)
        return int(getattr(model, "head_hidden_size", None) or model.num_features)
    model = torchvision.models.get_model(spec.arch, weights=None)
    if spec.arch == "resnet18":
        return model.fc.in_features
    return model.classifier[0].in_features  # mobilenet_v3_small: pooled features enter the classifier here


def _tiny(name: str, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return build(name, pretrained=False).eval()


@pytest.mark.parametrize("name", TINY)
def test_features_have_feature_dim(name: str) -> None:
    bb = _tiny(name)
    assert bb.weights_source == "none"
    assert bb.feature_dim == _library_feature_dim(name)
    with torch.inference_mode():
        out = bb(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, bb.feature_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in TINY if n != "timm:test_vit"])
def test_forward_groups_split_anywhere_equals_the_whole(name: str) -> None:
    bb = _tiny(name)
    assert bb.sequential
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        whole = bb(x)
        for k in range(bb.num_groups + 1):
            prefix = bb.forward_groups(x, 0, k)
            rest = bb.forward_groups(prefix, k)
            assert rest.shape == whole.shape, k
            assert torch.allclose(rest, whole, atol=1e-5, rtol=1e-4), f"split at group {k} of {bb.group_names}"


def test_forward_groups_matches_the_library_forward() -> None:
    """The pooled output is what the library's own classifier would see."""
    torch.manual_seed(0)
    reference = timm.create_model("test_convnext", pretrained=False).eval()
    bb = backbones.wrap(resolve("timm:test_convnext"), timm.create_model("test_convnext", pretrained=False))
    bb.model.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("head.fc")})
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert torch.allclose(bb.eval()(x), expected, atol=1e-5)

    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    tv_bb = backbones.wrap(resolve("tv:resnet18"), torchvision.models.resnet18())
    tv_bb.model.load_state_dict(tv.state_dict())
    tv.fc = nn.Identity()
    with torch.inference_mode():
        assert torch.allclose(tv_bb.eval()(x), tv(x), atol=1e-5)


def test_opaque_backbone_is_one_group() -> None:
    bb = _tiny("timm:test_vit")
    assert not bb.sequential and bb.num_groups == 1
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(bb.forward_groups(bb.forward_groups(x, 0, 1), 1), bb(x))


def test_efficientnet_lite0_parameter_count() -> None:
    bb = build("efficientnet_lite0", pretrained=False)
    assert count_parameters(bb.model) == 3_371_008
    assert bb.feature_dim == 1280
    bb.freeze(0)
    assert count_parameters(bb.model, trainable_only=True) == 0


# --------------------------------------------------------------------------- 6. freezing

#: name -> parameter-name prefixes that freeze(2) must leave trainable (and nothing else)
LAST_TWO = {
    "timm:test_resnet": ("layer3.", "layer4."),
    "timm:test_efficientnet": ("blocks.4.", "conv_head.", "bn2."),
    "timm:test_convnext": ("stages.2.", "stages.3.", "norm_pre.", "head."),  # head.norm pools
    "timm:mobilenetv3_small_050": ("blocks.4.", "blocks.5.", "conv_head."),  # conv_head pools
    "tv:resnet18": ("layer3.", "layer4."),
    "tv:mobilenet_v3_small": ("features.11.", "features.12."),
}


def _trainable(bb: Backbone) -> set[str]:
    return {n for n, p in bb.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", list(LAST_TWO))
def test_freeze_two_leaves_the_last_two_groups(name: str) -> None:
    bb = _tiny(name)
    names = {n for n, _ in bb.model.named_parameters()}
    bb.freeze(2)
    expected = {n for n in names if n.startswith(LAST_TWO[name])}
    assert expected, "the expected prefixes must match parameters"
    assert _trainable(bb) == expected
    assert bb.first_trainable_group == bb.num_groups - 2

    bb.freeze(0)
    assert _trainable(bb) == set()
    assert bb.first_trainable_group == bb.num_groups
    bb.freeze("all")
    used = names - {n for n in names if n.startswith(("fc.", "classifier."))}  # tv keeps its unused classifier
    assert used <= _trainable(bb)
    assert bb.first_trainable_group == 0
    bb.freeze(2)  # freezing again after "all" must re-freeze
    assert _trainable(bb) == expected


def test_freeze_counts_are_capped_and_checked() -> None:
    bb = _tiny("timm:test_resnet")
    bb.freeze(99)
    assert _trainable(bb) == {n for n, _ in bb.model.named_parameters()}
    with pytest.raises(BackboneError, match=">= 0"):
        bb.freeze(-1)


def _batchnorms(bb: Backbone, group: int) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for mod in bb.group_modules(group) for m in mod.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", ["timm:test_resnet", "timm:test_efficientnet", "tv:resnet18", "tv:mobilenet_v3_small"])
def test_frozen_batchnorm_stays_in_eval_and_keeps_its_statistics(name: str) -> None:
    bb = _tiny(name)
    bb.freeze(2)
    # the usual call is on a parent module: the backbone's own train() must still apply
    model = nn.Sequential(bb, nn.Linear(bb.feature_dim, 3)).train()
    frozen = [bn for g in range(bb.num_groups - 2) for bn in _batchnorms(bb, g)]
    trainable = [bn for g in range(bb.num_groups - 2, bb.num_groups) for bn in _batchnorms(bb, g)]
    assert frozen and trainable
    assert all(bn.training is False for bn in frozen)
    assert all(bn.training is True for bn in trainable)

    before_frozen = [bn.running_mean.clone() for bn in frozen]
    before_trainable = [bn.running_mean.clone() for bn in trainable]
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before_frozen, frozen))
    assert any(not torch.equal(b, bn.running_mean) for b, bn in zip(before_trainable, trainable))

    model.eval()
    assert all(bn.training is False for bn in trainable)
    bb.freeze("all")
    model.train()
    assert all(bn.training is True for bn in frozen)


def test_freeze_in_train_mode_applies_at_once() -> None:
    bb = _tiny("timm:test_resnet").train()
    bb.freeze(1)
    assert all(bn.training is False for bn in _batchnorms(bb, 0))
    assert all(bn.training is True for bn in _batchnorms(bb, bb.num_groups - 1))


# --------------------------------------------------------------------------- 7. preprocessing


def test_efficientnet_lite0_preprocessing_from_its_weights() -> None:
    pre = build("efficientnet_lite0", pretrained=False).preprocessing
    assert pre.mean == pytest.approx((0.5, 0.5, 0.5)) and pre.std == pytest.approx((0.5, 0.5, 0.5))
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (224, 256, "bicubic")
    assert pre.crop_pct == pytest.approx(0.875)
    # the same without building: read from metadata only
    assert backbones.preprocessing_for(resolve("efficientnet_lite0")) == pre


def test_torchvision_resnet18_preprocessing_from_its_weights() -> None:
    pre = build("tv:resnet18", pretrained=False).preprocessing
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (224, 256, "bilinear")
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.std == pytest.approx((0.229, 0.224, 0.225))


def test_with_size_keeps_the_ratio() -> None:
    pre = Preprocessing(224, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    small = pre.with_size(64)
    assert (small.input_size, small.resize_size) == (64, 73)  # 64 / 0.875 = 73.1
    assert (small.mean, small.std, small.interpolation) == (pre.mean, pre.std, pre.interpolation)
    assert pre.with_size(None) is pre and pre.with_size(224) is pre
    assert Preprocessing.from_dict(small.to_dict()) == small


# --------------------------------------------------------------------------- 8. listing


def test_list_backbones_popular_without_downloading(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("listing must not download")

    monkeypatch.setattr(weights, "_download", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    started = time.perf_counter()
    rows = list_backbones()
    print(f"list_backbones(): {len(rows)} rows in {time.perf_counter() - started:.2f} s")
    assert len(rows) == len(backbones.POPULAR)
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        assert not str(row["weights"]).startswith("error"), row
        assert row["params"] > 0 and row["feature_dim"] > 0 and row["input_size"] > 0, row
        assert row["weights"] in ("packaged", "cached", "download needed"), row

    lite0 = by_name["timm:tf_efficientnet_lite0"]
    assert (lite0["params"], lite0["feature_dim"], lite0["input_size"], lite0["weights"]) == (
        3_371_008, 1280, 224, "packaged")
    assert lite0["alias"] == "efficientnet_lite0"
    # the same meaning of "params" for both libraries: the backbone, without the 1000-class classifier
    assert by_name["tv:resnet18"]["params"] == by_name["timm:resnet18.a1_in1k"]["params"] == 11_176_512
    assert by_name["tv:resnet18"]["feature_dim"] == 512
    assert by_name["tv:resnet18"]["weights"] == "download needed"


def test_list_backbones_filter_includes_the_alias() -> None:
    rows = list_backbones("lite0")
    aliased = [r for r in rows if r["alias"] == "efficientnet_lite0"]
    assert len(aliased) == 1
    assert aliased[0]["name"] == "timm:tf_efficientnet_lite0" and aliased[0]["weights"] == "packaged"
    assert all("lite0" in r["name"] or r["alias"] for r in rows)


def test_list_backbones_shows_a_cached_torchvision_model() -> None:
    path = weights.cache_candidates(resolve("tv:resnet18"))[0]
    path.parent.mkdir(parents=True)
    torch.save({}, path)
    (row,) = [r for r in list_backbones("resnet18") if r["name"] == "tv:resnet18"]
    assert row["weights"] == "cached"
