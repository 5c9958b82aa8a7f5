"""Feature extraction and the on-disk feature store.

A frozen backbone costs one forward pass per image (per augmented view) for a whole run: the
output of the frozen part is computed once and stored under a key made of

* a fingerprint of the frozen layers' weights (so a different checkpoint or random init never hits),
* the backbone name, the preprocessing, the group boundary, the augmentation preset, view and seed,

and, inside that key, one row per file identified by its absolute path, size and modification
time. A changed file is recomputed alone; other files are reused. The store lives in
``$TLKIT_CACHE_DIR`` (default ``~/.cache/tlkit/features``) so runs and recipes on the same data
share it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from tlkit.backbones import Backbone, Preprocessing
from tlkit.checkpoint import atomic_write_bytes, atomic_write_text, clean_stale_temp_files

if TYPE_CHECKING:
    from tlkit.distributed import Distributed

FORMAT_VERSION = 1
Progress = Callable[[int, int], None]


def default_cache_dir() -> Path:
    env = os.environ.get("TLKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tlkit" / "features"


def file_id(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def backbone_fingerprint(backbone: Backbone, stop_group: int) -> str:
    """Hash of the weights that produce the activations at ``stop_group`` (exact, not by name)."""
    digest = hashlib.sha1()
    modules = [m for i in range(stop_group) for m in backbone.group_modules(i)]
    if stop_group >= backbone.num_groups:
        modules = [backbone.model]
    seen = set()
    for module in modules:
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _ViewDataset(Dataset):
    """Images through a transform; random transforms are seeded per (file, view) so views repeat exactly."""

    def __init__(self, paths: Sequence[str], transform: Callable, seeds: Sequence[int] | None) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):  # noqa: ANN204
        from tlkit.data import load_image

        image = load_image(self.paths[index])
        if self.seeds is None:
            return self.transform(image), index
        # seeded per (file, view); forked so the caller's global RNG (workers=0) is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seeds[index])
            return self.transform(image), index


def _view_seed(fid: str, view: int, seed: int) -> int:
    return int.from_bytes(hashlib.sha1(f"{fid}|{view}|{seed}".encode()).digest()[:4], "little")


@dataclass
class ExtractStats:
    requested: int = 0
    computed: int = 0
    seconds: float = 0.0

    @property
    def hits(self) -> int:
        return self.requested - self.computed


def run_backbone(backbone: Backbone, loader: DataLoader, stop_group: int, device: torch.device, *,
                 progress: Progress | None = None, total: int | None = None) -> torch.Tensor:
    """Run the frozen part over a loader of ``(images, index)`` batches; rows in loader order."""
    backbone.eval()
    channels_last = device.type == "cuda"
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    outputs: list[torch.Tensor] = []
    done = 0
    with torch.inference_mode():
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = backbone.forward_groups(images, 0, stop_group)
            outputs.append(out.float().cpu())
            done += len(images)
            if progress is not None:
                progress(done, total or done)
    return torch.cat(outputs) if outputs else torch.empty(0)


def _compute(backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str], seeds: Sequence[int] | None,
             augment: str, stop_group: int, batch_size: int, workers: int, device: torch.device,
             progress: Progress | None) -> torch.Tensor:
    """Outputs of groups ``[0, stop_group)`` for ``paths`` (one augmented view per file when ``seeds``)."""
    from tlkit.transforms import eval_transform, train_transform

    transform = eval_transform(preprocessing) if augment == "none" else train_transform(preprocessing, augment)
    loader = DataLoader(_ViewDataset(paths, transform, seeds), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
    with torch.random.fork_rng(devices=[]):  # the loader draws its base seed from the global RNG
        return run_backbone(backbone.to(device), loader, stop_group, device, progress=progress, total=len(paths))


class FeatureStore:
    """Cached outputs of a backbone's frozen part, per file, on disk."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def key(self, backbone: Backbone, preprocessing: Preprocessing, stop_group: int, augment: str, view: int,
            seed: int) -> str:
        described = {
            "version": FORMAT_VERSION,
            "backbone": backbone.spec.name,
            "weights": backbone_fingerprint(backbone, stop_group),
            "preprocessing": preprocessing.to_dict(),
            "stop_group": stop_group,
            "augment": augment,
            "view": view if augment != "none" else 0,
            "seed": seed if augment != "none" else 0,
        }
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]

    def get(self, backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str], *, stop_group: int | None = None,
            augment: str = "none", view: int = 0, seed: int = 0, batch_size: int = 64, workers: int = 0,
            device: torch.device | str = "cpu", progress: Progress | None = None,
            dist: Distributed | None = None) -> tuple[torch.Tensor, ExtractStats]:
        """Outputs of groups ``[0, stop_group)`` for ``paths`` (pooled features when ``stop_group`` is the end).

        Only files not already stored (or changed since) go through the backbone. With ``dist``
        (several processes, see ``tlkit.distributed``) every rank must call this with the same
        arguments: they share the files to compute and all get the full tensor back.
        """
        import time

        stop_group = backbone.num_groups if stop_group is None else stop_group
        device = torch.device(device)
        if dist is not None and dist.enabled:
            return self._get_sharded(dist, backbone, preprocessing, paths, stop_group, augment, view, seed,
                                     batch_size, workers, device, progress)
        folder = self.root / self.key(backbone, preprocessing, stop_group, augment, view, seed)
        index, stored = self._read(folder)
        ids = [file_id(p) for p in paths]
        missing = [i for i, fid in enumerate(ids) if fid not in index]
        stats = ExtractStats(requested=len(paths), computed=len(missing))
        start = time.perf_counter()
        if missing:
            seeds = None if augment == "none" else [_view_seed(ids[i], view, seed) for i in missing]
            fresh = _compute(backbone, preprocessing, [paths[i] for i in missing], seeds, augment, stop_group,
                             batch_size, workers, device, progress)
            stored = self._append(folder, index, stored, [ids[i] for i in missing], fresh, backbone, stop_group)
        stats.seconds = time.perf_counter() - start
        assert stored is not None or not paths
        rows = torch.tensor([index[fid] for fid in ids], dtype=torch.long)
        return (stored[rows] if stored is not None else torch.empty(0)), stats

    def _get_sharded(self, dist: Distributed, backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str],
                     stop_group: int, augment: str, view: int, seed: int, batch_size: int, workers: int,
                     device: torch.device, progress: Progress | None) -> tuple[torch.Tensor, ExtractStats]:
        """:meth:`get` across ranks: rank 0 alone reads and writes the store (it may be on its disk
        only); the files it lacks are split over the ranks, and the rows, stored and fresh, are
        gathered in ``paths`` order on every rank."""
        import time

        start = time.perf_counter()
        plan = None
        if dist.is_main:
            folder = self.root / self.key(backbone, preprocessing, stop_group, augment, view, seed)
            index, stored = self._read(folder)
            ids = [file_id(p) for p in paths]
            missing = [i for i, fid in enumerate(ids) if fid not in index]
            # seeds come from rank 0's file ids, so a view is the same whichever rank computes it
            seeds = None if augment == "none" else [_view_seed(ids[i], view, seed) for i in missing]
            plan = (missing, seeds)
        missing, seeds = dist.same_on_all(plan)
        parts, where = [], []
        mine = dist.shard(len(missing))
        if mine:
            parts.append(_compute(backbone, preprocessing, [paths[missing[j]] for j in mine],
                                  None if seeds is None else [seeds[j] for j in mine], augment, stop_group,
                                  batch_size, workers, device, progress))
            where += [missing[j] for j in mine]
        if dist.is_main and len(missing) < len(paths):
            hits = [i for i, fid in enumerate(ids) if fid in index]
            parts.append(stored[torch.tensor([index[ids[i]] for i in hits], dtype=torch.long)])
            where += hits
        local = torch.cat(parts) if parts else torch.empty(0)
        features = dist.gather_rows(local, torch.tensor(where, dtype=torch.long), len(paths))
        if dist.is_main and missing:
            self._append(folder, index, stored, [ids[i] for i in missing],
                         features[torch.tensor(missing, dtype=torch.long)], backbone, stop_group)
        stats = ExtractStats(requested=len(paths), computed=len(missing), seconds=time.perf_counter() - start)
        return features, stats

    # -- storage
    def _append(self, folder: Path, index: dict[str, int], stored: torch.Tensor | None, new_ids: list[str],
                fresh: torch.Tensor, backbone: Backbone, stop_group: int) -> torch.Tensor:
        """Add rows for ``new_ids`` after the stored ones and write the entry; returns all rows."""
        base = len(index)
        for offset, fid in enumerate(new_ids):
            index[fid] = base + offset
        rows = fresh if stored is None else torch.cat([stored, fresh])
        self._write(folder, index, rows, backbone, stop_group)
        return rows

    def _read(self, folder: Path) -> tuple[dict[str, int], torch.Tensor | None]:
        index_path, data_path = folder / "index.json", folder / "features.safetensors"
        if not index_path.is_file() or not data_path.is_file():
            return {}, None
        try:
            from safetensors.torch import load_file

            index = json.loads(index_path.read_text(encoding="utf-8"))["rows"]
            data = load_file(str(data_path))["features"]
            if len(index) != len(data):
                raise ValueError("index and data disagree")
            return index, data
        except Exception:
            # A damaged cache is only a cache: start it again rather than fail the run.
            return {}, None

    def _write(self, folder: Path, index: dict[str, int], data: torch.Tensor, backbone: Backbone, stop_group: int) -> None:
        from safetensors.torch import save

        folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(folder)
        # data first, index second: an index never points past the rows that exist
        atomic_write_bytes(folder / "features.safetensors", save({"features": data.contiguous()}))
        atomic_write_text(folder / "index.json", json.dumps(
            {"backbone": backbone.spec.name, "stop_group": stop_group, "shape": list(data.shape), "rows": index}))

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)
