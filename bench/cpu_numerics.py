"""fp32 vs bf16 autocast vs channels_last (and both) on the CPU, side by side in one run (issue 19.1).

    uv run python bench/cpu_numerics.py                     # EfficientNet-Lite0, 224 px, batch 32
    uv run python bench/cpu_numerics.py --rounds 5 --results bench/RESULTS.md

For each variant: extraction (inference_mode forward of the frozen backbone) and one fine-tuning step
(forward, cross-entropy, backward, AdamW step of the whole network) of the packaged
``efficientnet_lite0`` on a fixed random batch. The variants are interleaved round by round (A B C D,
A B C D, ...) so that a change in the machine's load hits each alike; the figure is the median over
rounds, and the ratio is against fp32 in the same rounds. Also the largest difference of the pooled
features against fp32 (relative to their scale), which says how far bf16 moves what the probe sees.
The CPU's flags (avx512_bf16, amx) are printed: bf16 only pays where the CPU has native bf16.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _section import emit, machine_line  # bench/_section.py (the scripts run from bench/)

VARIANTS = {"fp32": (False, False), "bf16 autocast": (True, False), "channels_last": (False, True),
            "bf16 + channels_last": (True, True)}


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile") if f in flags)


def run_variant(net: torch.nn.Module, head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool,
                channels_last: bool, train: bool) -> tuple[float, torch.Tensor | None]:
    """Seconds for one extraction (``train=False``) or one training step, and the features (extraction)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    start = time.perf_counter()
    if not train:
        net.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feats = net(x).float()
        return time.perf_counter() - start, feats
    net.train()
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(head(net(x)).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--results", default=None, help="append the markdown section to this file")
    args = parser.parse_args()
    from tlkit.models.builder import build

    torch.manual_seed(0)
    backbone = build("efficientnet_lite0", offline=True)
    head = torch.nn.Linear(backbone.feature_dim, 10)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    times: dict[tuple[str, str], list[float]] = {}
    features: dict[str, torch.Tensor] = {}
    load = os.getloadavg()[0]
    for name, (bf16, cl) in VARIANTS.items():  # warm-up: one of each, not timed
        run_variant(backbone, head, x, y, bf16, cl, train=False)
    for _ in range(args.rounds):
        for name, (bf16, cl) in VARIANTS.items():
            seconds, feats = run_variant(backbone, head, x, y, bf16, cl, train=False)
            times.setdefault((name, "extract"), []).append(seconds)
            features[name] = feats
            backbone.load_state_dict(state)
            seconds, _ = run_variant(backbone, head, x, y, bf16, cl, train=True)
            times.setdefault((name, "train step"), []).append(seconds)
            backbone.load_state_dict(state)
    base = features["fp32"]
    scale = base.abs().max().item()
    lines = [f"\n## CPU numerics: fp32 vs bf16 autocast vs channels_last (EfficientNet-Lite0, {args.size} px, batch {args.batch})",
             machine_line(load, args.rounds, f"bench/cpu_numerics.py --rounds {args.rounds}",
                          f"CPU flags: {cpu_flags()}; "),
             "| variant | extraction s/batch | vs fp32 | train step s/batch | vs fp32 | features: max abs diff / scale |",
             "| --- | --- | --- | --- | --- | --- |"]
    ref = {kind: statistics.median(times[("fp32", kind)]) for kind in ("extract", "train step")}
    for name in VARIANTS:
        ext, step = statistics.median(times[(name, "extract")]), statistics.median(times[(name, "train step")])
        diff = (features[name] - base).abs().max().item() / max(scale, 1e-12)
        lines.append(f"| {name} | {ext:.2f} | {ref['extract'] / ext:.2f}x | {step:.2f} | {ref['train step'] / step:.2f}x | "
                     f"{diff:.4f} |")
    emit(lines, args.results)


if __name__ == "__main__":
    main()
