"""``freeze_stride``: the early high-resolution layer groups stay frozen in an image stage.

The groups are found by their output stride (one blank image through the groups), frozen with
``Backbone.freeze(..., frozen_first=N)``, and a run that asks for it trains every other group and never
changes theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_testing import MessageRecorder, trainable

from tlkit.config import StageConfig
from tlkit.errors import ConfigError
from tlkit.models.builder import build
from tlkit.train import steps
from tlkit.train.pipeline import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name, strides, within_4", [
    ("timm:test_resnet", [4, 4, 8, 16, 32], 2),  # stem (with its max-pool) and layer1
    ("timm:test_efficientnet", [2, 2, 4, 8, 16, 32, 32], 3),  # stem, blocks.0, blocks.1
    ("tv:resnet18", [4, 4, 8, 16, 32], 2),
])
def test_strides_come_from_the_groups_outputs(name: str, strides: list, within_4: int) -> None:
    bb = build(name, pretrained=False)
    assert bb.output_strides() == strides
    assert bb.groups_within_stride(4) == within_4
    assert bb.groups_within_stride(2) == strides.count(2)
    assert bb.groups_within_stride(1000) == bb.num_groups - 1  # never every group: something must train


def test_a_layout_that_is_not_sequential_freezes_nothing_early() -> None:
    bb = build("timm:test_vit", pretrained=False)
    assert bb.output_strides() == [None] * bb.num_groups
    assert bb.groups_within_stride(4) == 0


def test_measuring_strides_leaves_batchnorm_statistics_and_the_mode_alone() -> None:
    bb = build("timm:test_efficientnet", pretrained=False).train()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    bb.output_strides()
    assert bb.training and all(torch.equal(before[k], v) for k, v in bb.state_dict().items())


def test_freeze_keeps_the_first_groups_frozen_whatever_else_trains() -> None:
    bb = build("timm:test_resnet", pretrained=False)
    bb.freeze("all", frozen_first=2)
    names = {n for n, _ in bb.model.named_parameters()}
    early = {n for n in names if n.startswith(("conv1.", "bn1.", "layer1."))}
    assert early and trainable(bb) == names - early - {n for n in names if n.startswith("fc.")}
    assert bb.first_trainable_group == 2
    bb.train()
    assert all(not m.training for m in bb.model.layer1.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bb.freeze(1, frozen_first=2)  # the last group only: the early ones are frozen anyway
    assert bb.first_trainable_group == bb.num_groups - 1


@pytest.mark.parametrize("bad, says", [({"freeze_stride": 1}, "whole number >= 2"),
                                       ({"freeze_stride": True}, "whole number >= 2"),
                                       ({"kind": "probe", "unfreeze": 0}, "needs kind: finetune")])
def test_a_bad_freeze_stride_is_refused(bad: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        StageConfig(**{"kind": "finetune", "unfreeze": "all", "freeze_stride": 4, **bad}).validate("stage")


def test_a_run_never_changes_the_frozen_early_groups(tiny_data: Path, fast_kwargs: dict,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    start: dict[str, torch.Tensor] = {}
    changed: set[str] = set()
    step = steps.train_step

    def recording_step(ctx, plan, epoch, forward, x, y):  # noqa: ANN001, ANN202
        params = dict(ctx.model.backbone.model.named_parameters())
        if plan.index == 1 and not start:
            start.update({n: p.detach().clone() for n, p in params.items()})
        loss = step(ctx, plan, epoch, forward, x, y)
        if plan.index == 1:
            changed.update(n for n, p in params.items() if not torch.equal(p, start[n]))
        return loss

    monkeypatch.setattr(steps, "train_step", recording_step)
    recipe = {"stages": [{"kind": "probe", "epochs": 1, "lr": 0.01},
                         {"kind": "finetune", "unfreeze": "all", "epochs": 2, "lr": 0.01, "augment": "light",
                          "freeze_stride": 4}]}
    reporter = MessageRecorder()
    finetune(tiny_data, recipe=recipe, reporter=reporter, **fast_kwargs)
    early = {n for n in start if n.startswith(("conv1.", "bn1.", "layer1."))}
    assert early and changed and not changed & early
    assert {n for n in start if n.startswith("layer4.")} <= changed
    assert any("full images; stem, layer1 stay frozen (output stride <= 4)" in m for m in reporter.messages)


def test_the_default_recipe_freezes_early_groups_on_a_cpu_only() -> None:
    from tlkit.config.recipes_yaml import load_recipe

    stage = load_recipe("probe-then-finetune").stages[1]
    assert stage.for_device("cpu").freeze_stride == 4
    assert stage.for_device("cuda").freeze_stride is None  # the GPU path as before: every group trains
