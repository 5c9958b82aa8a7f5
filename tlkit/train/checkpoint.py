"""Training checkpoints: atomic saves and safe loads.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the old one: a process killed mid-write leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``, so a pickle payload in a foreign file is refused, never run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tlkit._io import atomic_write
from tlkit.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint"]


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
