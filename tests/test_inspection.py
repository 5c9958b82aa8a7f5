"""Tests for tlkit.models.inspection: the summary, feature maps and first-layer filters."""

from __future__ import annotations

import pytest
import timm
import torch

from tlkit.errors import BackboneError
from tlkit.models.backbone import count_parameters
from tlkit.models.builder import build
from tlkit.models.inspection import feature_maps, first_conv_filters, summarize, summarize_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_summary_counts_match_the_libraries() -> None:
    s = summarize_name("efficientnet_lite0", num_classes=2)
    assert s.frozen_params == 3_371_008 and s.total_params == 3_373_570
    assert s.rows[-2].output_shape == (1, 1280) and s.rows[-1].output_shape == (1, 2)
    tiny = summarize_name("timm:test_resnet", num_classes=3, image_size=64, trainable_groups=2)
    model = timm.create_model("test_resnet", num_classes=0)
    assert tiny.total_params == sum(p.numel() for p in model.parameters()) + 96 * 3 + 3
    assert tiny.trainable_params == sum(r.params for r in tiny.rows[-4:])
    assert tiny.flops > 0


def test_feature_maps_and_filters() -> None:
    bb = build("timm:test_resnet", pretrained=False)
    maps = feature_maps(bb, torch.randn(3, 64, 64), "layer1", top=8)
    assert maps.shape[0] == 8 and maps.ndim == 3
    filters = first_conv_filters(bb)
    assert filters.ndim == 4 and filters.shape[-1] == 3 and filters.min() >= 0 and filters.max() <= 1


@pytest.mark.parametrize("name, size", [("tv:googlenet", 64), ("tv:swin_t", 64), ("timm:test_vit", 64)])
def test_summary_lists_groups_and_layers_of_the_new_layouts(name: str, size: int) -> None:
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


def test_feature_maps_take_a_group_name_or_index() -> None:
    torch.manual_seed(0)
    bb = build("timm:test_resnet", pretrained=False)
    image = torch.randn(3, 64, 64)
    by_name = feature_maps(bb, image, "layer1", top=4)
    assert (feature_maps(bb, image, 1, top=4) == by_name).all()
    assert feature_maps(bb, image, -2, top=4).shape[-1] == feature_maps(bb, image, "layer3", top=4).shape[-1] == 4
    # the last group's map, not its pooled features (a 64 px input gives layer4 2x2)
    assert feature_maps(bb, image, -1, top=4).shape == feature_maps(bb, image, "layer4", top=4).shape == (4, 2, 2)
    with pytest.raises(BackboneError, match=r"'layer9' is not a layer group of timm:test_resnet"):
        feature_maps(bb, image, "layer9")
