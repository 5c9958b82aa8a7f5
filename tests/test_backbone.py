"""Tests for tlkit.models.backbone: the features, running a part of it, freezing by layer group.

Every model is built with random weights (``pretrained=False``) and fed 64-pixel images, so nothing
is downloaded.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from model_testing import meta_build, trainable
from torch import nn

from tlkit.errors import BackboneError
from tlkit.models.backbone import Backbone, count_parameters
from tlkit.models.builder import build, wrap
from tlkit.models.registry import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- structure


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
    bb = wrap(resolve("timm:test_convnext"), timm.create_model("test_convnext", pretrained=False))
    bb.model.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("head.fc")})
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert torch.allclose(bb.eval()(x), expected, atol=1e-5)

    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    tv_bb = wrap(resolve("tv:resnet18"), torchvision.models.resnet18())
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


def test_group_index_takes_a_name_or_an_index() -> None:
    bb = meta_build("timm:test_resnet")
    assert [bb.group_index(g) for g in ("stem", "layer4", 0, -1, "2", "-2")] == [0, 4, 0, 4, 2, 3]
    with pytest.raises(BackboneError, match=r"'layer9' is not a layer group of timm:test_resnet; choose one of stem, layer1"):
        bb.group_index("layer9")
    with pytest.raises(BackboneError, match=r"layer 5 is out of range: timm:test_resnet has 5 layer groups.*from 0 to 4"):
        bb.group_index(5)


# --------------------------------------------------------------------------- freezing


#: name -> parameter-name prefixes that freeze(2) must leave trainable (and nothing else)
LAST_TWO = {
    "timm:test_resnet": ("layer3.", "layer4."),
    "timm:test_efficientnet": ("blocks.4.", "conv_head.", "bn2."),
    "timm:test_convnext": ("stages.2.", "stages.3.", "norm_pre.", "head."),  # head.norm pools
    "timm:mobilenetv3_small_050": ("blocks.4.", "blocks.5.", "conv_head."),  # conv_head pools
    "tv:resnet18": ("layer3.", "layer4."),
    "tv:mobilenet_v3_small": ("features.11.", "features.12."),
}


@pytest.mark.parametrize("name", list(LAST_TWO))
def test_freeze_two_leaves_the_last_two_groups(name: str) -> None:
    bb = _tiny(name)
    names = {n for n, _ in bb.model.named_parameters()}
    bb.freeze(2)
    expected = {n for n in names if n.startswith(LAST_TWO[name])}
    assert expected, "the expected prefixes must match parameters"
    assert trainable(bb) == expected
    assert bb.first_trainable_group == bb.num_groups - 2

    bb.freeze(0)
    assert trainable(bb) == set()
    assert bb.first_trainable_group == bb.num_groups
    bb.freeze("all")
    used = names - {n for n in names if n.startswith(("fc.", "classifier."))}  # tv keeps its unused classifier
    assert used <= trainable(bb)
    assert bb.first_trainable_group == 0
    bb.freeze(2)  # freezing again after "all" must re-freeze
    assert trainable(bb) == expected


def test_freeze_counts_are_capped_and_checked() -> None:
    bb = _tiny("timm:test_resnet")
    bb.freeze(99)
    assert trainable(bb) == {n for n, _ in bb.model.named_parameters()}
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


@pytest.mark.parametrize("bad", ["abc", "-1", 1.5, True, None])
def test_freeze_names_the_allowed_values(bad: object) -> None:
    bb = meta_build("timm:test_resnet")
    with pytest.raises(BackboneError, match=r"timm:test_resnet: trainable layer groups must be a whole number >= 0 "
                                            r"\(the last N of its 5 groups: stem, layer1.*\) or 'all', got"):
        bb.freeze(bad)  # type: ignore[arg-type]
    bb.freeze("2")  # a number given as text (CLI, YAML) is fine
    assert bb.first_trainable_group == 3
