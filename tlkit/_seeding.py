"""Seeds and random-number-generator state: what makes a resumed run identical to an uninterrupted one."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "seed_everything", "seed_worker"]


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": _python_state_to_tensor(random.getstate()),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": torch.tensor([float(np_state[3]), float(np_state[4])], dtype=torch.float64),
        "python_gauss": torch.tensor([float("nan") if random.getstate()[2] is None else random.getstate()[2]],
                                     dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    python = _python_state_from_tensor(state["python"])
    if "python_gauss" in state and not math.isnan(float(state["python_gauss"][0])):
        python = (python[0], python[1], float(state["python_gauss"][0]))
    random.setstate(python)
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    has_gauss, cached = (int(state["numpy_gauss"][0]), float(state["numpy_gauss"][1])) if "numpy_gauss" in state else (0, 0.0)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_tensor(state: tuple) -> torch.Tensor:
    version, internal, gauss = state
    return torch.tensor([version, *internal, -1 if gauss is None else 0], dtype=torch.int64)


def _python_state_from_tensor(t: torch.Tensor) -> tuple:
    values = t.tolist()
    return (values[0], tuple(values[1:-1]), None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: each worker seeds numpy and random from torch's own per-worker seed."""
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)
