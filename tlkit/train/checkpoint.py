"""Training checkpoints: the state a run resumes from, when it is written, atomic saves and safe loads.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the old one: a process killed mid-write leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``, so a pickle payload in a foreign file is refused, never run.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tlkit._io import atomic_write
from tlkit.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_SECONDS", "TrainState", "Checkpointer", "finished_checkpoint"]


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically."""
    atomic_write(path, lambda h: torch.save(state, h))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot load checkpoint {path}: {first[:300]}. It is truncated, foreign or unsafe "
            "(tlkit loads with weights_only=True and refuses pickled objects); use another checkpoint or start with --overwrite"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != "tlkit-checkpoint":
        raise CheckpointError(f"{path} is not a tlkit checkpoint (no 'format: tlkit-checkpoint' entry)")
    return state


#: a stage's epochs are checkpointed at most this often (always its first and last epoch)
CHECKPOINT_SECONDS = 30.0


@dataclass
class TrainState:
    """Everything a resumed run needs after an epoch: the on-disk format of ``checkpoints/last.pt``.

    ``selection`` is :meth:`tlkit.train.selection.BestWeights.state_dict`; ``epochs`` is the number
    of epochs the running stage has (its time budget may have settled fewer than its recipe's);
    ``history`` holds the epoch records as JSON lines; ``schedule`` is where the schedule ends and where
    a budget bent it, ``budget`` what the budget measured (a resumed stage keeps that plan).
    """

    stage: int
    epoch: int
    step: int
    stage_done: bool
    model: dict
    optimizer: dict
    scheduler: dict
    selection: dict
    epochs: int
    rng: dict
    history: list[str] = field(default_factory=list)
    schedule: dict = field(default_factory=dict)  # the schedule's end and bends (tlkit.train.optim.Horizon)
    budget: dict = field(default_factory=dict)  # the time budget's plan and measurements, when the stage has one

    @classmethod
    def capture(cls, model: torch.nn.Module, changing: set[str], *, optimizer: Any, scheduler: Any,
                **fields: Any) -> TrainState:
        """The state now. What the stage goes on changing (``changing``: its trainable keys, the optimizer,
        the scheduler) is copied; frozen tensors are shared, as they stay as they are until this state is
        written or replaced at the stage's end."""
        weights = {k: v.detach().cpu().clone() if k in changing else v.detach().cpu()
                   for k, v in model.state_dict().items()}
        return cls(model=weights, optimizer=copy.deepcopy(optimizer.state_dict()),
                   scheduler=copy.deepcopy(scheduler.state_dict()), **fields)

    def to_dict(self) -> dict:
        return {"format": "tlkit-checkpoint", "stage": self.stage, "epoch": self.epoch, "step": self.step,
                "stage_done": self.stage_done, "model": self.model, "optimizer": self.optimizer,
                "scheduler": self.scheduler, **self.selection, "epochs": self.epochs, "rng": self.rng,
                "history": self.history, "schedule": self.schedule, "budget": self.budget}

    @classmethod
    def from_dict(cls, state: dict) -> TrainState:
        selection = {k: state[k] for k in ("best_metric", "best_state", "bad_epochs", "best_epoch", "best_record")
                     if k in state}
        return cls(stage=int(state["stage"]), epoch=int(state["epoch"]), step=int(state["step"]),
                   stage_done=bool(state["stage_done"]), model=state["model"], optimizer=state["optimizer"],
                   scheduler=state["scheduler"], selection=selection, epochs=int(state.get("epochs", -1)),
                   rng=state["rng"], history=list(state["history"]), schedule=dict(state.get("schedule", {})),
                   budget=dict(state.get("budget", {})))


class Checkpointer:
    """When a run's state is written, and what a Ctrl-C still saves.

    Every finished epoch is *kept* (the last one waits in memory); it is *written* when the caller
    says it is due (a stage's first and last epoch) or when ``every`` seconds have passed since the
    last write: epochs on cached features take milliseconds, and resuming from an earlier epoch
    replays the same epochs exactly. Only the main process writes (``is_main``).
    """

    def __init__(self, path: str | os.PathLike, *, is_main: bool = True, every: float = CHECKPOINT_SECONDS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.path, self.is_main, self.every, self.clock = Path(path), is_main, every, clock
        self.pending: TrainState | None = None
        self.saved_epochs = 0  # epoch records the file on disk holds
        self._last_write = clock()

    def keep(self, state: TrainState, *, due: bool) -> None:
        self.pending = state
        if due or self.clock() - self._last_write >= self.every:
            self.write(state)

    def write(self, state: TrainState) -> None:
        if self.is_main:  # one writer; every rank holds the same state
            save_checkpoint(state.to_dict(), self.path)
        self.saved_epochs = len(state.history)
        self.pending = None
        self._last_write = self.clock()

    def flush(self) -> None:
        """Write the last kept epoch if it is newer than the file (a Ctrl-C)."""
        if self.pending is not None:
            self.write(self.pending)


def finished_checkpoint(path: Path, *, keep: bool) -> str:
    """What a finished run does with its checkpoint, in one line: kept (and what it is for) or deleted
    (``keep_checkpoint: false``; only the run's own ``checkpoints/last.pt``, never another file)."""
    if not path.is_file():
        return "no checkpoint to keep (no epoch was trained)"
    size = path.stat().st_size / 2**20
    if keep:
        return (f"{path.parent.name}/{path.name} ({size:.0f} MB) is kept to resume or extend this run (the model is "
                "model.safetensors); delete the checkpoints folder when done, or train with --set keep_checkpoint=false")
    path.unlink()
    return f"{path.parent.name}/{path.name} ({size:.0f} MB) deleted (keep_checkpoint: false): this run cannot be resumed"
