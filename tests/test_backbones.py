"""Tests for tlkit.models.backbones: names, structure, freezing, preprocessing, the listing.

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

from tlkit.errors import BackboneError
from tlkit.models import backbones, layouts
from tlkit.models import pretrained as weights
from tlkit.models.backbones import Backbone, Preprocessing, build, count_parameters, list_backbones, resolve


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


# --------------------------------------------------------------------------- 9. layer groups per family

#: every tiny model timm ships, at its own input size
TIMM_TINY = [f"timm:{n}" for n in timm.list_models("test_*")]
#: torchvision families, cheap enough to run on the CPU at the given input size
TV_RUN = {"tv:resnet18": 64, "tv:mobilenet_v3_small": 64, "tv:densenet121": 64, "tv:googlenet": 64,
          "tv:inception_v3": 80, "tv:alexnet": 64, "tv:shufflenet_v2_x0_5": 64, "tv:mnasnet0_5": 64, "tv:swin_t": 64}
#: torchvision families checked on the meta device only (too big for a CPU test, or a fixed input size)
TV_META = {"tv:vgg11": 64, "tv:vit_b_16": 224, "tv:maxvit_t": 224, "tv:convnext_tiny": 64, "tv:efficientnet_b0": 64}

#: the group layout of each family; names of families that had groups before must never change
GROUP_NAMES = {
    "timm:test_resnet": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "timm:test_efficientnet": ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "head"],
    "timm:test_convnext": ["stem", "stages.0", "stages.1", "stages.2", "stages.3"],
    "timm:test_vit": ["stem"] + [f"blocks.{i}" for i in range(6)],
    "timm:test_byobnet": ["stem", "stages.0", "stages.1", "stages.2", "stages.3"],
    "tv:resnet18": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "tv:mobilenet_v3_small": ["stem"] + [f"features.{i}" for i in range(1, 13)],
    "tv:vgg11": ["block1", "block2", "block3", "block4", "block5", "classifier"],
    "tv:alexnet": ["block1", "block2", "block3", "classifier"],
    "tv:densenet121": ["stem", "denseblock1", "denseblock2", "denseblock3", "denseblock4"],
    "tv:googlenet": ["stem", "inception3", "inception4", "inception5"],
    "tv:inception_v3": ["stem", "Mixed_5", "Mixed_6", "Mixed_7"],
    "tv:shufflenet_v2_x0_5": ["stem", "stage2", "stage3", "stage4"],
    "tv:mnasnet0_5": ["stem"] + [f"layers.{i}" for i in range(8, 14)],
    "tv:swin_t": ["stem", "features.1", "features.3", "features.5", "features.7"],
    "tv:vit_b_16": ["stem"] + [f"encoder_layer_{i}" for i in range(12)],
    "tv:maxvit_t": ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3"],
}

#: families whose groups only partition parameters: the network runs whole, from images
PARAMETER_GROUPS = {"timm:test_vit", "timm:test_byobnet", "tv:vit_b_16"}
#: timm families with a hand-written sequential split (the rest use timm's group_matcher)
TIMM_SEQUENTIAL = [n for n in TIMM_TINY if n.startswith(("timm:test_resnet", "timm:test_efficientnet", "timm:test_convnext"))]


def _input_size(name: str) -> int:
    if name in TV_RUN or name in TV_META:
        return {**TV_RUN, **TV_META}[name]
    return int(timm.get_pretrained_cfg(resolve(name).arch).input_size[-1])


def _meta(name: str) -> Backbone:
    with torch.device("meta"):
        return build(name, pretrained=False)


def _used_parameters(bb: Backbone, device: str) -> set[str]:
    """Names of the parameters the forward pass really uses (they receive a gradient)."""
    bb.freeze("all")
    bb.zero_grad(set_to_none=True)
    size = _input_size(bb.name)
    bb.eval()(torch.randn(2, 3, size, size, device=device)).sum().backward()
    return {n for n, p in bb.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(GROUP_NAMES))
def test_group_names_per_family(name: str) -> None:
    bb = _meta(name)
    assert bb.group_names == GROUP_NAMES[name]
    assert bb.sequential == (name not in PARAMETER_GROUPS)
    assert [g.name for g in bb.groups] == bb.group_names and bb.describe()["groups"] == bb.group_names


@pytest.mark.parametrize("name", TIMM_TINY + list(TV_META) + ["tv:vgg11", "tv:googlenet", "tv:densenet121"])
def test_groups_cover_every_used_parameter_once(name: str) -> None:
    """On the meta device (shapes only, no arithmetic): every parameter the forward pass uses is in exactly one group."""
    bb = _meta(name)
    used = _used_parameters(bb, "meta")
    grouped = [n for i in range(bb.num_groups) for n, _ in bb.group_parameters(i)]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == used
    for i in range(bb.num_groups):  # group_modules holds the group's parameters (loose ones aside)
        in_modules = {id(p) for m in bb.group_modules(i) for p in m.parameters()}
        assert in_modules == {id(p) for n, p in bb.group_parameters(i) if n not in bb.groups[i].parameters}


@pytest.mark.parametrize("name", TIMM_TINY + list(TV_RUN))
def test_groups_cover_every_used_parameter_once_on_cpu(name: str) -> None:
    torch.manual_seed(0)
    bb = build(name, pretrained=False)
    grouped = [n for i in range(bb.num_groups) for n, _ in bb.group_parameters(i)]
    assert len(grouped) == len(set(grouped)) and set(grouped) == _used_parameters(bb, "cpu")


@pytest.mark.parametrize("name", TIMM_TINY + list(TV_RUN) + list(TV_META))
@pytest.mark.parametrize("n", [1, 2])
def test_freeze_trains_exactly_the_last_groups(name: str, n: int) -> None:
    bb = _meta(name)
    everything = {name for name, _ in bb.model.named_parameters()}
    assert bb.num_groups >= 3, f"{name} is not split into layer groups"
    bb.freeze(n)
    trainable = _trainable(bb)
    assert trainable and trainable < everything
    assert bb.first_trainable_group == bb.num_groups - n
    expected = {p for i in range(bb.num_groups - n, bb.num_groups) for p, _ in bb.group_parameters(i)}
    assert trainable == expected
    assert len(bb.group_parameters(bb.num_groups - n)) > 0


#: name -> parameter-name prefixes that freeze(2) must leave trainable, for the families that gained groups
LAST_TWO_NEW = {
    "timm:test_vit": ("blocks.4.", "blocks.5.", "norm."),
    "tv:vit_b_16": ("encoder.layers.encoder_layer_10.", "encoder.layers.encoder_layer_11.", "encoder.ln."),
    "tv:vgg11": ("features.16.", "features.18.", "classifier."),  # conv block 5 and fc6, fc7
    "tv:alexnet": ("features.6.", "features.8.", "features.10.", "classifier."),  # conv block 3 and fc6, fc7
    "tv:densenet121": ("features.denseblock3.", "features.transition3.", "features.denseblock4.", "features.norm5."),
    "tv:googlenet": ("inception4", "inception5"),
    "tv:inception_v3": ("Mixed_6", "Mixed_7"),
    "tv:swin_t": ("features.4.", "features.5.", "features.6.", "features.7.", "norm."),
}


@pytest.mark.parametrize("name", list(LAST_TWO_NEW))
def test_freeze_two_in_families_that_gained_groups(name: str) -> None:
    bb = _meta(name)
    names = {n for n, _ in bb.model.named_parameters()}
    bb.freeze(2)
    expected = {n for n in names if n.startswith(LAST_TWO_NEW[name])}
    assert expected and _trainable(bb) == expected


@pytest.mark.parametrize("name", TIMM_SEQUENTIAL + list(TV_RUN))
def test_sequential_families_split_anywhere(name: str) -> None:
    """For sequential layouts, forward_groups(x, 0, k) then forward_groups(.., k) is forward(x)."""
    torch.manual_seed(0)
    bb = build(name, pretrained=False).eval()
    assert bb.sequential
    size = _input_size(name)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        whole = bb(x)
        assert whole.shape == (2, bb.feature_dim)
        for k in range(bb.num_groups + 1):
            prefix = bb.forward_groups(x, 0, k)
            assert torch.allclose(bb.forward_groups(prefix, k), whole, atol=1e-5, rtol=1e-4), bb.group_names[k - 1]
        manual = x
        for i in range(bb.num_groups):
            manual = bb.run_group(i, manual)
        assert torch.allclose(bb.pool(manual), whole, atol=1e-5, rtol=1e-4)


def test_sequential_groups_pool_what_torchvision_computes() -> None:
    """The new sequential layouts give what the library's own forward gives (classifier removed)."""
    for arch, size in (("densenet121", 64), ("alexnet", 64), ("swin_t", 64), ("shufflenet_v2_x0_5", 64)):
        torch.manual_seed(0)
        reference = torchvision.models.get_model(arch, weights=None).eval()
        bb = backbones.wrap(resolve(f"tv:{arch}"), torchvision.models.get_model(arch, weights=None))
        bb.model.load_state_dict(reference.state_dict(), strict=False)  # bb lost only the final classifier
        x = torch.randn(2, 3, size, size)
        with torch.inference_mode():
            for attr in ("fc", "head", "classifier"):
                if isinstance(getattr(reference, attr, None), nn.Linear):
                    setattr(reference, attr, nn.Identity())
            if arch == "alexnet":
                reference.classifier[6] = nn.Identity()
            assert torch.allclose(bb.eval()(x), reference(x), atol=1e-5, rtol=1e-4), arch


def test_parameter_groups_run_whole_from_images() -> None:
    torch.manual_seed(0)
    bb = build("timm:test_vit", pretrained=False).eval()
    assert not bb.sequential and bb.execution is layouts.Execution.PARAMETERS
    x = torch.randn(2, 3, 64, 64)
    n = bb.num_groups
    with torch.inference_mode():
        features = bb.forward_groups(x, 0, n)
        assert torch.allclose(features, bb(x))
        assert torch.equal(bb.forward_groups(features, n), features)  # cached pooled features: nothing to run
        model = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
        model.load_state_dict(bb.model.state_dict())
        assert torch.allclose(features, model(x), atol=1e-6)
    with pytest.raises(BackboneError, match=r"timm:test_vit.*do not run one at a time"):
        bb.forward_groups(x, 0, 2)
    with pytest.raises(BackboneError, match="do not run one at a time"):
        bb.run_group(0, x)
    stem = bb.groups[0]
    assert stem.parameters == ("cls_token", "pos_embed") and stem.modules == ("patch_embed",)


def test_opaque_backbone_refuses_to_train_only_a_part() -> None:
    """A timm model without a group_matcher (PiT) is one group: unfreeze N would train all of it."""
    from tlkit.config import StageConfig
    from tlkit.train.pipeline import first_trainable_group

    bb = _meta("timm:pit_ti_224")
    for n in (1, 2):
        with pytest.raises(BackboneError, match=r"timm:pit_ti_224 is one opaque layer group.*unfreeze: all.*probe"):
            bb.freeze(n)
        with pytest.raises(BackboneError, match="unfreeze: all"):
            first_trainable_group(bb, StageConfig(kind="finetune", unfreeze=n))
    assert bb.num_groups == 1 and bb.execution is layouts.Execution.OPAQUE and not bb.sequential
    bb.freeze(0)
    assert _trainable(bb) == set()
    bb.freeze("all")
    assert _trainable(bb) == {n for n, _ in bb.model.named_parameters()}
    assert first_trainable_group(bb, StageConfig(kind="finetune", unfreeze="all")) == 0
    assert first_trainable_group(bb, StageConfig(kind="probe")) == 1


def test_first_trainable_group_per_execution() -> None:
    from tlkit.config import StageConfig
    from tlkit.train.pipeline import first_trainable_group

    sequential, parameters = _meta("timm:test_resnet"), _meta("timm:test_vit")
    stage = StageConfig(kind="finetune", unfreeze=2)
    assert first_trainable_group(sequential, stage) == sequential.num_groups - 2  # cached activations
    assert first_trainable_group(parameters, stage) == 0  # images; only the last two groups train


@pytest.mark.parametrize("bad", ["abc", "-1", 1.5, True, None])
def test_freeze_names_the_allowed_values(bad: object) -> None:
    bb = _meta("timm:test_resnet")
    with pytest.raises(BackboneError, match=r"timm:test_resnet: trainable layer groups must be a whole number >= 0 "
                                            r"\(the last N of its 5 groups: stem, layer1.*\) or 'all', got"):
        bb.freeze(bad)  # type: ignore[arg-type]
    bb.freeze("2")  # a number given as text (CLI, YAML) is fine
    assert bb.first_trainable_group == 3


def test_layer_groups_are_objects() -> None:
    bb = _meta("tv:googlenet")
    stem = bb.groups[0]
    assert isinstance(stem, layouts.LayerGroup) and stem.name == "stem"
    assert stem.modules == ("conv1", "maxpool1", "conv2", "conv3", "maxpool2") and stem.run is not None
    assert bb.groups[1] == layouts.LayerGroup("inception3", ("inception3a", "inception3b"))
    assert _meta("timm:pit_ti_224").groups == (layouts.LayerGroup("features", ("",)),)


def test_fine_tuning_a_parameter_grouped_backbone_trains_only_its_last_groups(
        tiny_data: Path, tmp_path: Path) -> None:
    """unfreeze: 1 on a ViT trains its last block (and final norm) on images, and nothing before it."""
    from tlkit.train.pipeline import finetune

    recipe = {"stages": [{"kind": "finetune", "unfreeze": 1, "epochs": 1, "lr": 0.05, "augment": "none"}]}
    res = finetune(tiny_data, recipe=recipe, backbone="timm:test_vit", pretrained=False, image_size=32, workers=0,
                   batch_size=8, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    fresh = build("timm:test_vit", pretrained=False)
    trained = res.model.backbone
    last = {n for n, _ in trained.model.named_parameters() if n.startswith(("blocks.5.", "norm."))}
    before, after = fresh.model.state_dict(), trained.model.state_dict()
    changed = {n for n, _ in trained.model.named_parameters() if not torch.equal(before[n], after[n])}
    assert changed and changed <= last, f"parameters outside the last group changed: {sorted(changed - last)[:5]}"


# --------------------------------------------------------------------------- 10. GoogLeNet and Inception-v3


def _with_aux_state(arch: str) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision's ImageNet files: transform_input, auxiliary heads included."""
    torch.manual_seed(1)
    return torchvision.models.get_model(arch, weights=None, transform_input=True, aux_logits=True,
                                        init_weights=False).state_dict()


@pytest.mark.parametrize("arch, size", [("googlenet", 64), ("inception_v3", 80)])
def test_googlenet_and_inception_are_built_as_for_their_weights(arch: str, size: int) -> None:
    spec = resolve(f"tv:{arch}")
    state = _with_aux_state(arch)
    model = backbones.create_model(spec)
    assert model.transform_input is True  # type: ignore[union-attr]
    assert not any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in model.state_dict())
    model.load_state_dict(state)  # strict, as a download loads: the auxiliary heads' keys are ignored
    bb = backbones.wrap(spec, model).eval()

    reference = torchvision.models.get_model(arch, weights=None, transform_input=True, aux_logits=True,
                                             init_weights=False)
    reference.load_state_dict(state)
    reference.fc = nn.Identity()
    reference.eval()
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        assert torch.allclose(bb(x), reference(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3"])
@pytest.mark.parametrize("aux", [True, False])
def test_googlenet_and_inception_weights_files_load_with_or_without_aux_heads(
        arch: str, aux: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = resolve(f"tv:{arch}")
    state = _with_aux_state(arch)
    if not aux:  # what torchvision's own model holds once it dropped the heads
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    model = backbones.create_model(spec)
    assert weights.load_pretrained(spec, model, weights_file=str(path)).startswith("file:")
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])

    class Download:  # torchvision's weights enum, as far as tlkit's download path uses it
        url = f"https://example.invalid/{arch}.pth"

        @staticmethod
        def get_state_dict(progress: bool = True, check_hash: bool = True) -> dict[str, torch.Tensor]:
            return state

    monkeypatch.setattr(weights, "_tv_weights", lambda spec: Download)
    fresh = backbones.create_model(spec)
    assert weights.load_pretrained(spec, fresh, offline=False) == f"download:tv:{arch}"
    assert torch.equal(fresh.state_dict()["fc.weight"], state["fc.weight"])


@pytest.mark.parametrize("arch, size", [("googlenet", 64), ("inception_v3", 80)])
@pytest.mark.parametrize("unfreeze", ["all", 1])
def test_googlenet_and_inception_fine_tune_in_train_mode(arch: str, size: int, unfreeze: int | str) -> None:
    torch.manual_seed(0)
    bb = build(f"tv:{arch}", pretrained=False)
    bb.freeze(unfreeze)
    model = nn.Sequential(bb, nn.Linear(bb.feature_dim, 3)).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 0])
    before = {n: p.detach().clone() for n, p in bb.model.named_parameters()}
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = {n for n, p in bb.model.named_parameters() if not torch.equal(before[n], p)}
    expected = {n for i in range(bb.num_groups - bb.trainable_group_count(unfreeze), bb.num_groups)
                for n, _ in bb.group_parameters(i)}
    assert changed and changed <= expected


# --------------------------------------------------------------------------- 11. the summary on the new layouts


@pytest.mark.parametrize("name, size", [("tv:googlenet", 64), ("tv:swin_t", 64), ("timm:test_vit", 64)])
def test_summary_lists_groups_and_layers_of_the_new_layouts(name: str, size: int) -> None:
    from tlkit.models.inspection import summarize

    torch.manual_seed(0)
    bb = build(name, pretrained=False)
    bb.freeze(1)
    summary = summarize(bb, image_size=size, layers=True)
    groups = [r for r in summary.rows if r.kind == "group"]
    assert [r.name for r in groups] == bb.group_names
    assert summary.trainable_params == count_parameters(bb, trainable_only=True) + summary.rows[-1].params
    grouped = sum(p.numel() for i in range(bb.num_groups) for _, p in bb.group_parameters(i))
    assert summary.total_params == grouped + summary.rows[-1].params
    assert [r.status for r in groups][-2:] == ["frozen", "trainable"]
    if bb.sequential:  # each group's output shape, and its layers' own
        assert groups[0].output_shape[:2] == (1, bb.run_group(0, torch.zeros(1, 3, size, size)).shape[1])
        layers = [r for r in summary.rows if r.kind == "layer"]
        assert layers and all(r.output_shape for r in layers)
