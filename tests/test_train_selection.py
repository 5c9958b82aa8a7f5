"""tlkit.train.selection: the best epoch's weights, patience, and what a later stage starts from."""

from __future__ import annotations

import torch
from torch import nn

from tlkit.train.selection import BestWeights, metric_value


def _model(value: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_metric_value_is_higher_is_better() -> None:
    assert metric_value("val_loss", {"val_loss": 0.2, "train_loss": 1}) > metric_value("val_loss", {"val_loss": 0.3, "train_loss": 1})
    assert metric_value("val_accuracy", {"val_accuracy": 0.9, "train_loss": 1}) == 0.9
    assert metric_value("val_calibrated_loss", {"train_loss": 0.4}) == -0.4  # no validation set


def test_keeps_the_best_weights_and_gives_them_back() -> None:
    model = _model(1.0)
    best = BestWeights("val_accuracy", None, {"weight"})
    assert best.update(model, {"val_accuracy": 0.5, "train_loss": 1})
    model.weight.data.fill_(2.0)
    assert not best.update(model, {"val_accuracy": 0.4, "train_loss": 1})
    best.restore(model)
    assert model.weight.item() == 1.0 and best.bad_epochs == 1


def test_patience_counts_epochs_without_gain_from_the_first_epoch() -> None:
    model = _model(0.0)
    best = BestWeights("val_loss", 2, {"weight"})
    best.start_from(model, {"val_loss": 0.1, "train_loss": float("inf")})  # the weights the stage starts from
    assert best.bad_epochs == -1 and not best.should_stop
    for _ in range(3):
        best.update(model, {"val_loss": 0.5, "train_loss": 1})
    assert best.should_stop and best.bad_epochs == 2


def test_a_stage_that_never_beats_its_start_gives_the_start_back() -> None:
    model = _model(3.0)
    best = BestWeights("val_loss", None, {"weight"})
    best.start_from(model, {"val_loss": 0.1, "train_loss": float("inf")})
    model.weight.data.fill_(9.0)
    best.update(model, {"val_loss": 0.9, "train_loss": 1})
    best.restore(model)
    assert model.weight.item() == 3.0


def test_state_round_trip() -> None:
    model = _model(4.0)
    best = BestWeights("val_accuracy", 3, {"weight"})
    best.update(model, {"val_accuracy": 0.7, "train_loss": 1})
    again = BestWeights("val_accuracy", 3, {"weight"})
    again.load_state_dict(best.state_dict())
    assert again.best == 0.7 and again.bad_epochs == 0 and torch.equal(again.weights["weight"], best.weights["weight"])
    empty = BestWeights("val_accuracy", 3, {"weight"})
    empty.load_state_dict(BestWeights("val_accuracy", 3, set()).state_dict())
    assert empty.weights is None  # stored as {} in a checkpoint, read back as "nothing kept"


def test_it_says_which_weights_it_kept() -> None:
    model = _model(1.0)
    best = BestWeights("val_loss", None, {"weight"})
    best.start_from(model, {"val_loss": 0.1, "train_loss": float("inf")})
    best.update(model, {"epoch": 0, "val_loss": 0.5, "train_loss": 1})
    assert best.kept() == "kept the weights the stage started from: no epoch beat them on val_loss (val_loss 0.1000)"
    best.update(model, {"epoch": 1, "val_loss": 0.05, "train_loss": 1})
    assert best.kept() == "kept epoch 2 (val_loss 0.0500)" and best.best_record["epoch"] == 1
    again = BestWeights("val_loss", None, {"weight"})
    again.load_state_dict(best.state_dict())
    assert again.best_epoch == 1 and again.kept() == best.kept()
    old = {"best_metric": 0.1, "best_state": {}, "bad_epochs": 0}  # a checkpoint from before this was recorded
    again.load_state_dict(old)
    assert again.best_epoch is None and again.kept() == "kept the last epoch"
