"""What a backbone costs on this machine: per-image predict latency, and feature-extraction throughput.

*Latency* is the median wall time of a batch-1 forward pass of backbone + linear head on an input
that is already a tensor (no decoding or resizing), :data:`LATENCY_REPEATS` times after
:data:`LATENCY_WARMUP` untimed passes, under ``torch.inference_mode`` on the sweep's device with
torch's current thread count. It is measured on every call.

*Throughput* (images per second) is measured on the images that went through the backbone in
this call (the feature store's time for the call divided by the images it computed: decoding,
preprocessing and the forward pass at the extraction batch size, plus hashing every file). A call
served wholly from the cache measures nothing, so the last measured value for the same cache entry
and device type is kept in ``sweep-throughput.json`` in the feature cache and reported as an
"earlier measurement". Features cached by another command (``tlkit doctor``, ``tlkit finetune``
share the entry) leave no earlier value: then the first :data:`SAMPLE_IMAGES` images are run
through the backbone once more, uncached, and that rate is reported (and kept).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from tlkit._io import atomic_write_bytes, json_bytes
from tlkit.errors import ResourceError
from tlkit.models.backbone import Backbone
from tlkit.train.feature_store import compute_features
from tlkit.transforms import Preprocessing

#: timed batch-1 passes (the median is reported) and untimed passes before them
LATENCY_REPEATS = 10
LATENCY_WARMUP = 3
#: images timed when the features were all cached and no earlier measurement exists
SAMPLE_IMAGES = 32
#: file in the feature cache that keeps measured throughputs
THROUGHPUT_FILE = "sweep-throughput.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict_latency_ms(model: nn.Module, input_size: int, device: torch.device, *, repeats: int = LATENCY_REPEATS,
                       warmup: int = LATENCY_WARMUP) -> float:
    """Median milliseconds of one batch-1 forward of ``model`` (backbone + head) on ``device``."""
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, input_size, input_size, generator=generator).to(device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


class ThroughputLog:
    """Measured extraction throughputs, per feature-cache entry and device type, in the feature cache."""

    def __init__(self, cache_root: str | os.PathLike) -> None:
        self.path = Path(cache_root) / THROUGHPUT_FILE

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, key: str, rate: float, images: int) -> None:
        """Keep ``rate`` for ``key`` (a read-only or full cache keeps nothing, silently: the figure is still reported)."""
        data = self._read()
        data[key] = {"images_per_second": rate, "images": images}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json_bytes(data))
        except (OSError, ResourceError):
            pass

    def resolve(self, key: str, computed: int, seconds: float) -> tuple[float | None, str]:
        """Images per second and where the figure comes from; a fresh measurement is recorded."""
        if computed > 0 and seconds > 0:
            rate = computed / seconds
            self.record(key, rate, computed)
            return rate, "measured now"
        earlier = self._read().get(key, {})
        rate = earlier.get("images_per_second") if isinstance(earlier, dict) else None
        if isinstance(rate, (int, float)):
            return float(rate), "earlier measurement"
        return None, "not measured"


def sample_throughput(net: Backbone, preprocessing: Preprocessing, paths: list[str], device: torch.device, *,
                      batch_size: int, workers: int) -> tuple[float, int]:
    """Images per second of an uncached extraction of the first :data:`SAMPLE_IMAGES` paths, and how many."""
    sample = paths[:SAMPLE_IMAGES]
    start = time.perf_counter()
    compute_features(net, preprocessing, sample, None, "none", net.num_groups, batch_size, workers, device, None)
    _sync(device)
    return len(sample) / max(time.perf_counter() - start, 1e-9), len(sample)
