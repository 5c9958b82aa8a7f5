"""tlkit.train.optim: the lone-last-sample rule, batches, layer-wise rates, schedules."""

from __future__ import annotations

import pytest
import torch

from tlkit.config import StageConfig
from tlkit.models.builder import build
from tlkit.models.heads import HeadSpec, make_head
from tlkit.train.optim import build_optimizer, build_scheduler, drops_lone_last, param_groups, shuffled_batches, steps_per_epoch


@pytest.mark.parametrize("n, batch, dropped, steps", [(33, 32, True, 1), (32, 32, False, 1), (1, 32, False, 1),
                                                      (65, 32, True, 2), (66, 32, False, 3)])
def test_an_epoch_never_ends_on_a_lone_sample(n: int, batch: int, dropped: bool, steps: int) -> None:
    assert drops_lone_last(n, batch) is dropped
    assert steps_per_epoch(n, batch) == steps
    batches = shuffled_batches(n, batch, torch.Generator().manual_seed(0))
    assert len(batches) == steps and all(len(b) > 1 or n == 1 for b in batches)
    assert sum(len(b) for b in batches) == n - int(dropped)


def test_weighted_batches_draw_with_replacement() -> None:
    weights = torch.tensor([0.0, 0.0, 1.0, 1.0])
    batches = shuffled_batches(4, 2, torch.Generator().manual_seed(1), sample_weights=weights)
    assert set(torch.cat(batches).tolist()) <= {2, 3}


def test_later_groups_keep_more_of_the_heads_rate() -> None:
    backbone = build("timm:test_resnet", pretrained=False)
    backbone.freeze(2)
    head = make_head(HeadSpec("linear", backbone.feature_dim, 3))
    stage = StageConfig(kind="finetune", unfreeze=2, lr=0.1, lr_decay=0.5)
    groups = param_groups(head, backbone, stage, backbone.first_trainable_group)
    assert [g["lr"] for g in groups] == pytest.approx([0.1 * 0.5 ** 2, 0.1 * 0.5, 0.1])
    trained = {id(p) for g in groups for p in g["params"]}
    assert trained == {id(p) for p in [*head.parameters(), *(p for p in backbone.parameters() if p.requires_grad)]}


def test_the_cosine_ends_at_zero_even_when_the_epochs_change_late() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    stage = StageConfig(kind="probe", lr=1.0, warmup_epochs=0)
    optimizer = build_optimizer([{"params": [param], "lr": 1.0, "initial_lr": 1.0}], stage)
    epochs = {"n": 10}
    scheduler = build_scheduler(stage, optimizer, 4, lambda: epochs["n"])
    epochs["n"] = 2  # a time budget settles 2 epochs during the first one
    lrs = []
    for _ in range(8):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs == sorted(lrs, reverse=True)
