"""The CPU memory allocator: glibc as it comes vs freed memory kept (tlkit's default) vs preloaded allocators.

    uv run python bench/cpu_allocator.py                       # EfficientNet-Lite0, 224 px, batch 32
    uv run python bench/cpu_allocator.py --rounds 3 --results bench/RESULTS.md

Each variant runs in its own process (an allocator is chosen when a process starts): a few training steps
(forward, cross-entropy, backward, AdamW; channels_last fp32, the whole network trainable, as tlkit's image stages
run on a CPU) and a few inference passes of random-weight EfficientNet-Lite0, then the median step, the share of
the last step's CPU time spent in the kernel, the page faults and the peak resident size. Variants: glibc as it
comes (``TLKIT_KEEP_FREED_MEMORY=0``), tlkit's default (glibc told by ``mallopt`` to keep freed memory), and
tcmalloc or jemalloc preloaded where Debian's ``libtcmalloc-minimal4`` / ``libjemalloc2`` are installed. The
processes are interleaved round by round; each figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _section import emit, machine_line  # bench/_section.py (the scripts run from bench/)

STEP = r"""
import json, resource, statistics, sys, time
import torch, torch.nn.functional as F
from tlkit.models.builder import build
from tlkit.train.devices import resolve_device
from tlkit._memory import allocator_note
resolve_device("cpu")
size, batch = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
net = build("efficientnet_lite0", pretrained=False).to(memory_format=torch.channels_last)
net.bn_eval = True
net.freeze("all")
net.train()
head = torch.nn.Linear(net.feature_dim, 10)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
optimizer = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=1e-6)
usage = lambda: resource.getrusage(resource.RUSAGE_SELF)
steps = []
for _ in range(5):
    before, start = usage(), time.perf_counter()
    loss = F.cross_entropy(head(net(x)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    steps.append(time.perf_counter() - start)
    after = usage()
kernel = (after.ru_stime - before.ru_stime) / max(1e-9, after.ru_stime - before.ru_stime + after.ru_utime - before.ru_utime)
net.eval()
passes = []
with torch.inference_mode():
    for _ in range(4):
        start = time.perf_counter()
        net(x)
        passes.append(time.perf_counter() - start)
end = usage()
print(json.dumps({"step": statistics.median(steps[1:]), "extract": statistics.median(passes[1:]), "kernel": kernel,
                  "faults": end.ru_minflt, "rss_mb": end.ru_maxrss / 1024, "note": allocator_note()}))
"""

LIBS = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}


def variants() -> dict[str, dict[str, str]]:
    found = {"glibc as it comes": {"TLKIT_KEEP_FREED_MEMORY": "0"}, "glibc, freed memory kept (tlkit)": {}}
    for name, lib in LIBS.items():
        for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
            if (Path(folder) / lib).is_file():
                found[f"{name} preloaded"] = {"LD_PRELOAD": str(Path(folder) / lib)}
                break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--results", default=None, help="append the markdown section to this file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {}
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TLKIT_KEEP_FREED_MEMORY")}
    for _ in range(args.rounds):
        for name, env in variants().items():
            out = subprocess.run([sys.executable, "-c", STEP, str(args.size), str(args.batch)], env={**base, **env},
                                 capture_output=True, text=True, check=True)
            runs.setdefault(name, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = statistics.median(r["step"] for r in runs["glibc as it comes"])
    ref_extract = statistics.median(r["extract"] for r in runs["glibc as it comes"])
    lines = [f"\n## CPU memory allocator (EfficientNet-Lite0 training step, {args.size} px, batch {args.batch})",
             machine_line(load, args.rounds, f"bench/cpu_allocator.py --rounds {args.rounds}"),
             "| allocator | train step s | vs glibc as it comes | inference pass s | vs glibc | kernel share of a step | "
             "page faults | peak resident MB |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("step", "extract", "kernel", "faults", "rss_mb")}
        lines.append(f"| {name} | {med['step']:.2f} | {ref / med['step']:.2f}x | {med['extract']:.2f} | "
                     f"{ref_extract / med['extract']:.2f}x | {100 * med['kernel']:.0f}% | {med['faults']:,.0f} | "
                     f"{med['rss_mb']:,.0f} |")
    emit(lines, args.results)


if __name__ == "__main__":
    main()
