"""Learning curves: every stage's epochs on one axis, the stage boundaries and the kept epoch (the display's numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tlkit
from tlkit.evaluation.curve_display import HistoryDisplay
from tlkit.evaluation.history import TrainingHistory

RECORDS = ([{"stage": 0, "stage_kind": "probe", "epoch": e, "train_loss": 1.0 - e / 10, "val_loss": 1.1 - e / 10,
             "val_accuracy": 0.5 + e / 10, "lr": 0.1} for e in range(3)]
           + [{"stage": 1, "stage_kind": "finetune", "epoch": e, "train_loss": 0.6, "val_loss": 0.7 + e,
               "val_accuracy": 0.8, "lr": 0.01} for e in range(2)])


def test_history_numbers_boundaries_and_kept_epoch() -> None:
    h = TrainingHistory.from_records(RECORDS, kept={"stage": 2, "stage_kind": "finetune", "epoch": 1})
    assert h.x == [1, 2, 3, 4, 5]
    assert h.boundaries == [3.5]
    assert [(s["kind"], s["first"], s["last"], s["epochs"]) for s in h.stages] == [("probe", 1, 3, 3), ("finetune", 4, 5, 2)]
    assert h.kept_x == 4
    assert h.series["val_loss"] == [r["val_loss"] for r in RECORDS]
    assert "val_calibrated_loss" not in h.series  # only what the records have
    start = TrainingHistory.from_records(RECORDS, kept={"stage": 2, "stage_kind": "finetune", "epoch": "start"})
    assert start.kept_x == 3.5  # the weights stage 2 started from: on the boundary
    assert TrainingHistory.from_records(RECORDS).kept_x is None
    assert [r["planned"] for r in h.stage_rows([3, 5])] == [3, 5]


def test_display_draws_three_panels_with_boundaries() -> None:
    import matplotlib

    matplotlib.use("Agg")
    shown = HistoryDisplay.from_history(RECORDS, kept={"stage": 1, "stage_kind": "probe", "epoch": 3}).plot()
    assert len(shown.axes_) == 3
    # a dotted line at the boundary on every panel, the star on the kept epoch
    for ax in shown.axes_:
        assert any(list(line.get_xdata()) == [3.5, 3.5] for line in ax.get_lines())
    assert any(line.get_label() == "kept weights" and list(line.get_xdata()) == [3] for line in shown.ax_.get_lines())
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert HistoryDisplay.from_history(RECORDS).plot(ax).ax_ is ax  # one axes: losses, accuracies on a twin
    plt.close("all")


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> tlkit.FinetuneResult:
    from conftest import _make_color_dataset

    root = tmp_path_factory.mktemp("history")
    data = _make_color_dataset(root / "colors", {"red": 8, "green": 8, "blue": 8}, size=24)
    recipe = {"name": "two-probes", "stages": [{"kind": "probe", "epochs": 3, "lr": 0.01},
                                               {"kind": "probe", "epochs": 2, "lr": 0.001}]}
    return tlkit.finetune(data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8,
                          recipe=recipe, out=str(root / "run"), cache_dir=str(root / "cache"), doctor=False)


def test_a_run_has_learning_curves_from_its_files(two_stage_run: tlkit.FinetuneResult) -> None:
    run = two_stage_run.run_dir
    shown = HistoryDisplay.from_run(run)
    assert shown.history.x == [1, 2, 3, 4, 5] and shown.history.boundaries == [3.5]
    kept = json.loads((run / "model.json").read_text())["extra"]["kept"]
    assert shown.history.kept == kept and shown.history.kept_x is not None
    assert (run / "learning_curves.png").stat().st_size > 1000
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Learning curves</h2>" in page
    ax = two_stage_run.plot_history()
    assert ax.figure is not None
    import matplotlib.pyplot as plt

    plt.close("all")


def test_history_of_a_folder_without_a_log_is_empty(tmp_path: Path) -> None:
    assert TrainingHistory.from_run(tmp_path).x == []
