"""Progressive resizing (``start_size``): the crop schedule, a budget that counts each epoch by its
cost, the errors of a stage that cannot resize, and a tiny run whose epochs record their crops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_testing import FakeClock, MessageRecorder

from tlkit.config import StageConfig
from tlkit.errors import ConfigError
from tlkit.report.run_info import stage_rows
from tlkit.train import steps
from tlkit.train.budget import TimeBudget
from tlkit.train.pipeline import finetune
from tlkit.train.resizing import epoch_size, relative_cost
from tlkit.transforms import Preprocessing, train_transform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sizes_rise_to_the_full_size_by_the_middle_and_stay() -> None:
    for epochs in range(1, 13):
        sizes = [epoch_size(224, 0.5, e, epochs) for e in range(epochs)]
        assert sizes == sorted(sizes) and all(s % 32 == 0 for s in sizes)
        assert sizes[-(epochs // 2):] == [224] * (epochs // 2) if epochs > 1 else sizes == [128]
    assert [epoch_size(224, None, e, 6) for e in range(6)] == [224] * 6
    assert [epoch_size(64, 0.5, e, 6) for e in range(6)] == [64] * 6  # too small to shrink
    assert [epoch_size(96, 0.25, e, 4) for e in range(4)] == [64, 64, 96, 96]  # never below 64 px
    assert relative_cost(224, 0.5, 0, 6) == pytest.approx((128 / 224) ** 2)


def test_the_random_crop_takes_the_epochs_size() -> None:
    pre = Preprocessing(64, 73, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    image = torch.randint(0, 256, (3, 80, 80), dtype=torch.uint8)
    for augment in ("light", "strong"):
        assert train_transform(pre, augment, 32)(image).shape == (3, 32, 32)
        assert train_transform(pre, augment)(image).shape == (3, 64, 64)


def _run(budget: TimeBudget, clock: FakeClock, full_seconds: float) -> list[str]:
    """Epochs that cost ``full_seconds`` x their relative cost, as the budget plans them when each starts."""
    notes, epoch = [], 0
    while epoch < budget.epochs:
        seconds = full_seconds * budget.cost(epoch, budget.epochs)
        for _ in range(budget.steps_per_epoch):
            clock.now += seconds / budget.steps_per_epoch
            notes.append(budget.after_step())
        notes.append(budget.after_epoch())
        epoch += 1
    return [n for n in notes if n]


def test_a_budget_counts_small_epochs_by_their_cost() -> None:
    """8 minutes of 100 s full-size epochs: 4 epochs alike, or 6 when the first three are at 128-192 px."""
    flat_clock, clock = FakeClock(), FakeClock()
    flat = TimeBudget(8.0, 12, steps_per_epoch=10, batch_size=32, val_images=0, clock=flat_clock)
    _run(flat, flat_clock, 100.0)
    cost = lambda e, n: relative_cost(224, 0.5, e, n)  # noqa: E731
    sized = TimeBudget(8.0, 12, steps_per_epoch=10, batch_size=32, val_images=0, clock=clock, cost=cost)
    notes = _run(sized, clock, 100.0)
    assert flat.epochs == 4 and sized.epochs == 6 == len(sized.epoch_seconds)
    assert notes[0] == "  time budget 8 min: ~33 s per epoch measured (~100 s at the full size), 6 of 12 epochs"
    assert len(notes) == 1  # the costlier later epochs were foreseen: no re-plan
    assert 400 < clock.now <= 8 * 60
    # the same machine, then twice as slow from the third epoch on: the re-plan compares full-size figures
    clock = FakeClock()
    slower = TimeBudget(8.0, 12, steps_per_epoch=10, batch_size=32, val_images=0, clock=clock, cost=cost)
    notes, epoch = [], 0
    while epoch < slower.epochs:
        seconds = (100.0 if epoch < 2 else 200.0) * slower.cost(epoch, slower.epochs)
        for _ in range(slower.steps_per_epoch):
            clock.now += seconds / slower.steps_per_epoch
            notes.append(slower.after_step())
        notes.append(slower.after_epoch())
        epoch += 1
    said = [n for n in notes if n]
    assert said[1] == "  budget: epoch 3 took 147 s, ~200 s at the full size (first ~100 s): 4 of 12 epochs now fit"
    assert slower.epochs == len(slower.epoch_seconds) and clock.now <= 8 * 60


def test_a_stage_that_cannot_resize_says_why(tiny_data: Path, fast_kwargs: dict) -> None:
    for bad, field in (({"start_size": 0.1}, r"in \[0.25, 1\]"), ({"kind": "probe"}, "needs kind: finetune"),
                       ({"augment": "none"}, "needs kind: finetune")):
        with pytest.raises(ConfigError, match=field):
            StageConfig(**{"kind": "finetune", "augment": "light", "start_size": 0.5, **bad}).validate("stage")
    recipe = {"stages": [{"kind": "finetune", "unfreeze": 1, "epochs": 1, "augment": "light", "start_size": 0.5}]}
    with pytest.raises(ConfigError, match="needs a stage on images"):
        finetune(tiny_data, recipe=recipe, reporter=MessageRecorder(), **fast_kwargs)


def test_a_resized_run_trains_and_records_each_epochs_crop(tiny_data: Path, fast_kwargs: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    trained: dict[int, set] = {}  # epoch -> the sizes of the batches the network was trained on
    step = steps.train_step

    def recording_step(ctx, plan, epoch, forward, x, y):  # noqa: ANN001, ANN202
        if plan.index == 1:  # the fine-tuning stage (the probe trains on cached features)
            trained.setdefault(epoch, set()).add(tuple(x.shape[-2:]))
        return step(ctx, plan, epoch, forward, x, y)

    monkeypatch.setattr(steps, "train_step", recording_step)
    recipe = {"stages": [{"kind": "probe", "epochs": 1, "lr": 0.01},
                         {"kind": "finetune", "unfreeze": "all", "epochs": 4, "lr": 0.002, "augment": "light",
                          "start_size": 0.5}]}
    res = finetune(tiny_data, recipe=recipe, reporter=MessageRecorder(), **{**fast_kwargs, "image_size": 128})
    lines = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["image_size"] for r in lines if r["stage"] == 1] == [64, 96, 128, 128]
    assert trained == {0: {(64, 64)}, 1: {(96, 96)}, 2: {(128, 128)}, 3: {(128, 128)}}  # the crops as recorded
    assert "image_size" not in lines[0]
    rows = stage_rows(res.config, res.history)
    assert rows[1]["note"] == "crops 64 to 128 px" and rows[0]["note"] == ""
    assert "crops 64 to 128 px" in (res.run_dir / "report.html").read_text(encoding="utf-8")


def test_the_default_recipe_resizes_on_a_cpu_only() -> None:
    from tlkit.config.recipes_yaml import load_recipe

    stage = load_recipe("probe-then-finetune").stages[1]
    assert stage.for_device("cpu").start_size == 0.5
    assert stage.for_device("cuda").start_size is None  # the GPU path as before: every epoch at the full size
