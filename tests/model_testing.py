"""Helpers shared by the tests: caches kept inside ``tmp_path``, meta-device builds, a fake clock and a
reporter that records messages.

Not a test module (pytest collects ``test_*.py`` only); the test files import it by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlkit.models.backbone import Backbone
from tlkit.models.builder import build
from tlkit.models.pretrained import OFFLINE_ENV


def isolate_caches(mp: pytest.MonkeyPatch, root: Path) -> Path:
    """Point torch hub and the Hugging Face hub cache at ``root``; forbid downloads (``TLKIT_OFFLINE=1``).

    So a test that would reach a download fails instead of hanging, and the user's caches are
    never read or written.
    """
    import huggingface_hub.constants as hf_constants

    torch_home = root / "torch"
    hf_home = root / "hf"
    mp.setenv("TORCH_HOME", str(torch_home))
    mp.setattr(torch.hub, "_hub_dir", str(torch_home / "hub"))  # what torch.hub.set_dir sets
    mp.setenv("HF_HOME", str(hf_home))
    mp.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads its cache folder once at import; patch the value it looks up at call time
    mp.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    mp.setenv(OFFLINE_ENV, "1")
    return root


def trainable(bb: Backbone) -> set[str]:
    """Names (in ``bb.model``) of the parameters that train."""
    return {n for n, p in bb.model.named_parameters() if p.requires_grad}


def meta_build(name: str) -> Backbone:
    """``build(name, pretrained=False)`` on the meta device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        return build(name, pretrained=False)


class FakeClock:
    """A clock the test moves by hand (``clock.now += 10``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class MessageRecorder:
    """A reporter that keeps every message, shows no progress and ignores epochs (subclass to react to them)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def task(self, description: str, total: int) -> None:
        return None

    def epoch(self, record: dict) -> None:
        pass
