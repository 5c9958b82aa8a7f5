"""Which device a run uses and how many DataLoader workers feed it: light (torch only), so that commands
which train nothing (``tlkit lr-find``) need not load the whole pipeline. :mod:`tlkit.train.pipeline`
re-exports both names."""

from __future__ import annotations

import os

import torch

from tlkit._memory import keep_freed_memory
from tlkit.errors import ConfigError

__all__ = ["resolve_device", "default_workers"]


def resolve_device(name: str) -> torch.device:
    """The device ``name`` asks for (ConfigError where it does not exist here). A CPU device also makes this
    process keep freed memory for reuse (:func:`tlkit._memory.keep_freed_memory`: 1.67x a training step)."""
    device = _device(name)
    if device.type == "cpu":
        keep_freed_memory()
    return device


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available here; use --device cpu")
    if name.startswith("cuda:") and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}' asked for but this machine has {torch.cuda.device_count()} GPU(s); "
                          "use --device cuda (the first) or cuda:N with a smaller N")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for but Apple's Metal (MPS) is not available here (it exists on "
                          "Apple-silicon Macs only); use --device cpu or auto")
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    """DataLoader workers when the user gives none.

    On a GPU decoding is the bottleneck: up to 8 workers. On a CPU the forward pass is, and it
    already uses every core (torch's threads): decoding is ~7% of extraction time, so a worker
    only takes a core away from the model (bench/RESULTS.md, 2 cores: 0.98x the tight loop with
    no worker, 0.64x with one). Workers start only where spare cores make them free.
    """
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, max(0, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)
