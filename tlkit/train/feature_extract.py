"""Running a backbone's frozen part over images: what a feature-store row holds, and how it is computed.

:func:`compute_features` decodes the files, applies the eval transform (or a seeded augmentation,
one view per file content, so views repeat exactly) and runs groups ``[0, stop_group)``;
:func:`backbone_fingerprint` hashes the weights that produce those outputs, for the store's key.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from tlkit.models.backbone import Backbone
from tlkit.transforms import Preprocessing

#: a progress callback: (done, total)
Progress = Callable[[int, int], None]


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
    """Images through a transform; random transforms are seeded per (file content, view) so views repeat exactly."""

    def __init__(self, paths: Sequence[str], transform: Callable, seeds: Sequence[int] | None) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from tlkit.data import load_image

        image = load_image(self.paths[index])
        if self.seeds is None:
            return self.transform(image), index
        # seeded per (content, view); forked so the caller's global RNG (workers=0) is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seeds[index])
            return self.transform(image), index


def view_seed(cid: str, view: int, seed: int) -> int:
    """Seed of one augmented view of one file content (``cid``, a hex digest: always encodable)."""
    return int.from_bytes(hashlib.sha1(f"{cid}|{view}|{seed}".encode()).digest()[:4], "little")


def run_backbone(backbone: Backbone, loader: DataLoader, stop_group: int, device: torch.device, *,
                 progress: Progress | None = None, total: int | None = None, cpu_channels_last: bool = True) -> torch.Tensor:
    """Run the frozen part over a loader of ``(images, index)`` batches; rows in loader order."""
    backbone.eval()
    # channels_last inputs: on a GPU, and on a CPU, where oneDNN's convolutions run 1.4-1.7x faster on
    # them with the same numbers (bench/RESULTS.md, "CPU numerics"); bf16 stays GPU-only (it moves features)
    channels_last = device.type == "cuda" or (device.type == "cpu" and cpu_channels_last)
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
            outputs.append(out.float().cpu().contiguous())  # the layout the store reads back: same numbers downstream
            done += len(images)
            if progress is not None:
                progress(done, total or done)
    return torch.cat(outputs) if outputs else torch.empty(0)


def compute_features(backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str], seeds: Sequence[int] | None,
                     augment: str, stop_group: int, batch_size: int, workers: int, device: torch.device,
                     progress: Progress | None, *, channels_last: bool = True) -> torch.Tensor:
    """Outputs of groups ``[0, stop_group)`` for ``paths`` (one augmented view per file when ``seeds``)."""
    from tlkit.transforms import eval_transform, train_transform

    transform = eval_transform(preprocessing) if augment == "none" else train_transform(preprocessing, augment)
    loader = DataLoader(_ViewDataset(paths, transform, seeds), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
    with torch.random.fork_rng(devices=[]):  # the loader draws its base seed from the global RNG
        return run_backbone(backbone.to(device), loader, stop_group, device, progress=progress, total=len(paths),
                            cpu_channels_last=channels_last)

