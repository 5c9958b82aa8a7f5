"""Tests for tlkit.models.layouts: the layer groups of every backbone family, and what they can run.

Models are built with random weights (``pretrained=False``), most on the meta device (shapes only),
so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from model_testing import meta_build, trainable
from torch import nn

from tlkit.errors import BackboneError
from tlkit.models import layouts
from tlkit.models.backbone import Backbone
from tlkit.models.builder import build, wrap
from tlkit.models.registry import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _used_parameters(bb: Backbone, device: str) -> set[str]:
    """Names of the parameters the forward pass really uses (they receive a gradient)."""
    bb.freeze("all")
    bb.zero_grad(set_to_none=True)
    size = _input_size(bb.name)
    bb.eval()(torch.randn(2, 3, size, size, device=device)).sum().backward()
    return {n for n, p in bb.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(GROUP_NAMES))
def test_group_names_per_family(name: str) -> None:
    bb = meta_build(name)
    assert bb.group_names == GROUP_NAMES[name]
    assert bb.sequential == (name not in PARAMETER_GROUPS)
    assert [g.name for g in bb.groups] == bb.group_names and bb.describe()["groups"] == bb.group_names


@pytest.mark.parametrize("name", TIMM_TINY + list(TV_META) + ["tv:vgg11", "tv:googlenet", "tv:densenet121"])
def test_groups_cover_every_used_parameter_once(name: str) -> None:
    """On the meta device (shapes only, no arithmetic): every parameter the forward pass uses is in exactly one group."""
    bb = meta_build(name)
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
    bb = meta_build(name)
    everything = {name for name, _ in bb.model.named_parameters()}
    assert bb.num_groups >= 3, f"{name} is not split into layer groups"
    bb.freeze(n)
    trains = trainable(bb)
    assert trains and trains < everything
    assert bb.first_trainable_group == bb.num_groups - n
    expected = {p for i in range(bb.num_groups - n, bb.num_groups) for p, _ in bb.group_parameters(i)}
    assert trains == expected
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
    bb = meta_build(name)
    names = {n for n, _ in bb.model.named_parameters()}
    bb.freeze(2)
    expected = {n for n in names if n.startswith(LAST_TWO_NEW[name])}
    assert expected and trainable(bb) == expected


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
        bb = wrap(resolve(f"tv:{arch}"), torchvision.models.get_model(arch, weights=None))
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

    bb = meta_build("timm:pit_ti_224")
    for n in (1, 2):
        with pytest.raises(BackboneError, match=r"timm:pit_ti_224 is one opaque layer group.*unfreeze: all.*probe"):
            bb.freeze(n)
        with pytest.raises(BackboneError, match="unfreeze: all"):
            first_trainable_group(bb, StageConfig(kind="finetune", unfreeze=n))
    assert bb.num_groups == 1 and bb.execution is layouts.Execution.OPAQUE and not bb.sequential
    bb.freeze(0)
    assert trainable(bb) == set()
    bb.freeze("all")
    assert trainable(bb) == {n for n, _ in bb.model.named_parameters()}
    assert first_trainable_group(bb, StageConfig(kind="finetune", unfreeze="all")) == 0
    assert first_trainable_group(bb, StageConfig(kind="probe")) == 1


def test_first_trainable_group_per_execution() -> None:
    from tlkit.config import StageConfig
    from tlkit.train.pipeline import first_trainable_group

    sequential, parameters = meta_build("timm:test_resnet"), meta_build("timm:test_vit")
    stage = StageConfig(kind="finetune", unfreeze=2)
    assert first_trainable_group(sequential, stage) == sequential.num_groups - 2  # cached activations
    assert first_trainable_group(parameters, stage) == 0  # images; only the last two groups train


def test_layer_groups_are_objects() -> None:
    bb = meta_build("tv:googlenet")
    stem = bb.groups[0]
    assert isinstance(stem, layouts.LayerGroup) and stem.name == "stem"
    assert stem.modules == ("conv1", "maxpool1", "conv2", "conv3", "maxpool2") and stem.run is not None
    assert bb.groups[1] == layouts.LayerGroup("inception3", ("inception3a", "inception3b"))
    assert meta_build("timm:pit_ti_224").groups == (layouts.LayerGroup("features", ("",)),)


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
