"""What keeping the early high-resolution layer groups frozen saves in a fine-tuning step (issue 19.2).

    uv run python bench/frozen_early.py                          # lite0 and resnet18, 224 and 128 px, batch 32
    uv run python bench/frozen_early.py --rounds 5 --results bench/RESULTS.md

For each backbone and crop size: one training step (forward, cross-entropy, backward, AdamW step; channels_last,
fp32, BatchNorm on running statistics, freed memory kept for reuse: as tlkit's image stages run on a CPU) with every group trainable, then with
the groups whose output stride is at most 2, 4 and 8 frozen (``freeze_stride``: ``Backbone.freeze(...,
frozen_first=N)``; autograd then records nothing before the first trainable group). The variants are interleaved
round by round; the figure is the median over rounds, the ratio is against "none frozen" in the same rounds.
Also the share of the backbone's parameters the frozen groups hold. Random weights: the time does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _section import emit, machine_line  # bench/_section.py (the scripts run from bench/)

STRIDES = (None, 2, 4, 8)


def train_step(backbone: torch.nn.Module, head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    start = time.perf_counter()
    loss = F.cross_entropy(head(backbone(x)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(name: str, size: int, batch: int, rounds: int) -> list[str]:
    from tlkit.models.builder import build
    from tlkit.train.devices import resolve_device

    resolve_device("cpu")  # as a run does: glibc keeps freed memory for reuse (tlkit._memory)
    torch.manual_seed(0)
    backbone = build(name, pretrained=False).to(memory_format=torch.channels_last)
    backbone.bn_eval = True
    head = torch.nn.Linear(backbone.feature_dim, 10)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    total = sum(p.numel() for p in backbone.parameters())
    frozen = {s: backbone.groups_within_stride(s) if s else 0 for s in STRIDES}
    times: dict[int | None, list[float]] = {s: [] for s in STRIDES}
    for r in range(rounds + 1):  # round 0 warms up
        for s in STRIDES:
            backbone.freeze("all", frozen_first=frozen[s])
            backbone.train()
            seconds = train_step(backbone, head, x, y)
            if r:
                times[s].append(seconds)
    base = statistics.median(times[None])
    rows = []
    for s in STRIDES:
        n = frozen[s]
        share = sum(p.numel() for i in range(n) for _, p in backbone.group_parameters(i)) / total
        step = statistics.median(times[s])
        groups = ", ".join(backbone.group_names[:n]) or "-"
        rows.append(f"| {name} | {size} | {s or 'none'} | {groups} | {100 * share:.2f}% | {step:.2f} | {base / step:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbones", default="efficientnet_lite0,resnet18")
    parser.add_argument("--sizes", default="224,128")
    parser.add_argument("--results", default=None, help="append the markdown section to this file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = [row for name in args.backbones.split(",") for size in map(int, args.sizes.split(","))
            for row in measure(name, size, args.batch, args.rounds)]
    lines = [f"\n## Fine-tuning step with the early groups frozen (`freeze_stride`), batch {args.batch}, CPU",
             machine_line(load, args.rounds, f"bench/frozen_early.py --rounds {args.rounds}"),
             "| backbone | px | freeze_stride | frozen groups | their share of parameters | train step s/batch | "
             "vs none frozen |", "| --- | --- | --- | --- | --- | --- | --- |", *rows]
    emit(lines, args.results)


if __name__ == "__main__":
    main()
