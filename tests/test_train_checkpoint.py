"""tlkit.train.checkpoint: TrainState's on-disk format and when a Checkpointer writes."""

from __future__ import annotations

from pathlib import Path

import torch

from tlkit._seeding import rng_state
from tlkit.train.checkpoint import Checkpointer, TrainState, load_checkpoint


def _state(epoch: int, history: int) -> TrainState:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return TrainState.capture(model, {"weight"}, optimizer=optimizer, scheduler=scheduler, stage=0, epoch=epoch,
                              step=3, stage_done=False, selection={"best_metric": 0.5, "best_state": {}, "bad_epochs": 1},
                              epochs=4, rng=rng_state(), history=["{}"] * history)


def test_the_state_round_trips_in_the_checkpoint_format(tmp_path: Path) -> None:
    state = _state(2, 3)
    writer = Checkpointer(tmp_path / "last.pt")
    writer.write(state)
    raw = load_checkpoint(tmp_path / "last.pt")
    assert raw["format"] == "tlkit-checkpoint" and raw["epoch"] == 2 and raw["best_metric"] == 0.5
    again = TrainState.from_dict(raw)
    assert again.selection == {"best_metric": 0.5, "best_state": {}, "bad_epochs": 1} and again.epochs == 4
    assert torch.equal(again.model["weight"], state.model["weight"]) and writer.saved_epochs == 3


def test_a_checkpoint_without_epochs_reads_as_unknown() -> None:
    raw = _state(0, 1).to_dict()
    del raw["epochs"]
    assert TrainState.from_dict(raw).epochs == -1


def test_writes_when_due_or_when_enough_time_passed_and_a_flush_saves_the_rest(tmp_path: Path) -> None:
    now = {"t": 0.0}
    writer = Checkpointer(tmp_path / "last.pt", every=30.0, clock=lambda: now["t"])
    writer.keep(_state(0, 1), due=True)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 0
    now["t"] = 10.0
    writer.keep(_state(1, 2), due=False)  # 10 s after the last write: kept in memory only
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 0 and writer.pending is not None
    now["t"] = 45.0
    writer.keep(_state(2, 3), due=False)  # 45 s: written
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2 and writer.pending is None
    writer.keep(_state(3, 4), due=False)
    writer.flush()  # Ctrl-C
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3 and writer.saved_epochs == 4


def test_only_the_main_process_writes(tmp_path: Path) -> None:
    writer = Checkpointer(tmp_path / "last.pt", is_main=False)
    writer.write(_state(0, 1))
    assert not (tmp_path / "last.pt").exists() and writer.saved_epochs == 1


def test_a_finished_run_says_what_its_checkpoint_is_for_or_deletes_it(tiny_data, fast_kwargs) -> None:  # noqa: ANN001
    from model_testing import MessageRecorder as Recorder

    import tlkit

    kept = Recorder()
    result = tlkit.finetune(tiny_data, recipe="linear-probe", epochs=1, doctor=False, reporter=kept, **fast_kwargs)
    assert (result.run_dir / "checkpoints" / "last.pt").is_file()
    assert any("last.pt" in m and "is kept to resume" in m and "keep_checkpoint=false" in m for m in kept.messages)
    dropped = Recorder()
    again = tlkit.finetune(tiny_data, recipe="linear-probe", epochs=1, doctor=False, reporter=dropped, overwrite=True,
                           keep_checkpoint=False, **fast_kwargs)
    assert not (again.run_dir / "checkpoints" / "last.pt").exists() and (again.run_dir / "model.safetensors").is_file()
    assert any("deleted (keep_checkpoint: false)" in m for m in dropped.messages)
