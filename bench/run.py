"""tlkit benchmark suite: every figure is a ratio measured side by side in one run.

Usage (from the repository root)::

    uv run python bench/run.py                 # full: efficientnet_lite0 (packaged weights), 128 px, 300 digits, 3 reps
    uv run python bench/run.py --quick         # smoke run: timm:test_resnet (random), 32 px, 40 digits, 1 rep (< 30 s)
    uv run python bench/run.py --device cuda   # adds section 5 (bf16 / channels_last / torch.compile) on a GPU
    uv run python bench/run.py --out /tmp/RESULTS.md

It writes a Markdown table (with a machine description and the exact command) to ``--out``
(default ``bench/RESULTS.md``) and prints the same table. Method (design/PERFORMANCE.md, "How to
measure"): A and B are timed alternately (A B A B ...) in the same process, the median of the
per-repetition ratios is reported with the absolute medians beside it, and every "first" measurement
uses a fresh, empty feature cache. Benchmarks are not tests: nothing here asserts on time.
See bench/README.md for what each figure means and its target.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's tlkit
    sys.path.insert(0, str(ROOT))

E_HEAD_EPOCHS = 10  # section 2: head epochs of the frozen-backbone run
EXTRACT_BATCH = 64  # tlkit's extraction batch (tlkit.train.activations.ActivationCache.batch_size) and default stage batch size
WORKER_VARIANTS = (0, 2)
SECTIONS = (
    "1. Feature extraction",
    "2. Frozen-backbone run",
    "3. Re-fitting the head",
    "4a. Fine-tune, full images",
    "4b. Fine-tune, cached partial",
    "5. GPU",
    "6. Memory",
)


# --------------------------------------------------------------------------------------------
# settings


@dataclass
class Settings:
    quick: bool
    device: str
    backbone: str
    pretrained: bool
    image_size: int
    per_class: int
    reps: int
    mem_batches: tuple[int, ...]
    workers: tuple[int, ...] = WORKER_VARIANTS  # sections 1 and 2, where decoding is a large share
    ft_workers: tuple[int, ...] = (0,)  # section 4: a CPU training step costs far more than decoding its batch

    @property
    def build_kwargs(self) -> dict:
        return {"pretrained": self.pretrained, "offline": True}

    @property
    def finetune_kwargs(self) -> dict:
        return {"backbone": self.backbone, "pretrained": self.pretrained, "offline": True,
                "image_size": self.image_size, "device": self.device}


def make_settings(quick: bool, device: str, reps: int | None) -> Settings:
    if quick:  # a smoke run of every code path: one worker setting, one memory batch size
        return Settings(True, device, "timm:test_resnet", False, 32, 4, reps or 1, (64,), (0,), (0,))
    import torch

    from tlkit.train.pipeline import default_workers

    # 0, 1, 2 and tlkit's own default for this device
    own = default_workers(torch.device("cuda" if device.startswith("cuda") else "cpu"))
    workers = tuple(sorted({0, 1, *WORKER_VARIANTS, own}))
    ft_workers = workers if device.startswith("cuda") else (0,)
    return Settings(False, device, "efficientnet_lite0", True, 128, 30, reps or 3, (16, 64, 128), workers,
                    ft_workers)


# --------------------------------------------------------------------------------------------
# small helpers


def now() -> float:
    return time.perf_counter()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "n/a"
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(r: float) -> str:
    if r != r:
        return "n/a"
    return f"{r:.0f}×" if r >= 100 else f"{r:.2f}×"


@dataclass
class Row:
    section: str
    what: str
    workers: str
    a: str
    b: str
    ratio: str
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    memory: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))


def verdict(value: float, target: float) -> str:
    if value != value:
        return "n/a"
    return "meets" if value >= target else "MISSES"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# data and model pieces shared by the measurements


def export_data(root: Path, per_class: int) -> tuple[Path, list[str], list[int]]:
    from tlkit.data import export_digits

    data = Path(export_digits(root / "digits", image_size=64, per_class=per_class))
    paths, labels = [], []
    for digit in range(10):
        for p in sorted((data / str(digit)).glob("*.png")):
            paths.append(str(p))
            labels.append(digit)
    return data, paths, labels


def build_backbone(s: Settings):  # noqa: ANN201
    from tlkit.models.builder import build

    return build(s.backbone, **s.build_kwargs)


def preprocessing(s: Settings, bb):  # noqa: ANN001, ANN201
    return bb.preprocessing.with_size(s.image_size)


def image_loader(paths: list[str], labels: list[int] | None, transform, batch: int, workers: int,  # noqa: ANN001, ANN201
                 shuffle: bool = False, device: str = "cpu", generator=None):  # noqa: ANN001
    import torch

    from tlkit.data import ImageDataset

    return torch.utils.data.DataLoader(ImageDataset(paths, labels, transform), batch_size=batch, shuffle=shuffle,
                                       generator=generator, num_workers=workers, pin_memory=device.startswith("cuda"))


def predecode(paths: list[str], transform) -> "Any":  # noqa: ANN001
    import torch

    from tlkit.data import load_image

    return torch.stack([transform(load_image(p)) for p in paths])


def fresh_dir(parent: Path, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    return d


# --------------------------------------------------------------------------------------------
# 1. feature extraction


def bench_extraction(s: Settings, work: Path, paths: list[str], report: Report, shared: dict) -> None:
    import torch

    from tlkit.train.feature_store import FeatureStore
    from tlkit.transforms import eval_transform

    section = SECTIONS[0]
    device = torch.device(s.device)
    bb = build_backbone(s).to(device).eval()
    pre = preprocessing(s, bb)
    transform = eval_transform(pre)
    images = predecode(paths, transform)
    batches = [b.to(device) for b in images.split(EXTRACT_BATCH)]

    def tlkit_get(workers: int) -> float:
        store = FeatureStore(fresh_dir(work, "cache-extract"))
        sync(s.device)
        t0 = now()
        feats, stats = store.get(bb, pre, paths, batch_size=EXTRACT_BATCH, workers=workers, device=device)
        sync(s.device)
        dt = now() - t0
        assert stats.computed == len(paths) and len(feats) == len(paths)
        shutil.rmtree(store.root, ignore_errors=True)
        return dt

    def tight() -> float:
        sync(s.device)
        t0 = now()
        with torch.inference_mode():
            for x in batches:
                bb(x)
        sync(s.device)
        return now() - t0

    def decode_only(workers: int) -> float:
        t0 = now()
        for _ in image_loader(paths, None, transform, EXTRACT_BATCH, workers, device=s.device):
            pass
        return now() - t0

    # warm-up: one forward per batch shape, one pass over the files (page cache), workers spawned once
    tight()
    decode_only(0)
    for w in s.workers:
        t_tl, t_ti, t_de = [], [], []
        for _ in range(s.reps):  # A B C A B C ...
            t_tl.append(tlkit_get(w))
            t_ti.append(tight())
            t_de.append(decode_only(w))
        ratio = median([b / a for a, b in zip(t_tl, t_ti)])
        share = median([c / a for a, c in zip(t_tl, t_de)])
        n = len(paths)
        report.add(section, "tight forward time / tlkit FeatureStore.get time", str(w),
                   f"tlkit {fmt_s(median(t_tl))} ({n / median(t_tl):.0f} img/s)",
                   f"tight {fmt_s(median(t_ti))} ({n / median(t_ti):.0f} img/s)", fmt_ratio(ratio), "≥ 0.85×",
                   verdict(ratio, 0.85))
        report.add(section, "decode+resize share (DataLoader alone / tlkit time)", str(w),
                   f"tlkit {fmt_s(median(t_tl))}", f"loader {fmt_s(median(t_de))}", f"{share:.0%}", "", "info")
        shared.setdefault("tight_seconds", median(t_ti))
        shared.setdefault("tlkit_extract_seconds", {})[w] = median(t_tl)


# --------------------------------------------------------------------------------------------
# 2. frozen-backbone run: cached vs re-running the backbone every epoch


def _head_epoch(head, opt, x_all, y_all, gen, batch: int = 64) -> None:  # noqa: ANN001
    import torch
    import torch.nn.functional as F

    order = torch.randperm(len(y_all), generator=gen)
    for idx in order.split(batch):
        loss = F.cross_entropy(head(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bench_frozen(s: Settings, work: Path, paths: list[str], labels: list[int], report: Report, shared: dict) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tlkit.train.feature_store import FeatureStore
    from tlkit.transforms import eval_transform

    section = SECTIONS[1]
    device = torch.device(s.device)
    bb = build_backbone(s).to(device).eval()
    pre = preprocessing(s, bb)
    transform = eval_transform(pre)
    y_all = torch.tensor(labels, device=device)
    E = E_HEAD_EPOCHS

    def new_head() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        head = nn.Linear(bb.feature_dim, 10).to(device)
        return head, torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)

    def run_a(workers: int) -> tuple[float, float, list[float]]:
        """(A) one extraction into a fresh cache, then E head epochs on the cached features."""
        head, opt = new_head()
        gen = torch.Generator().manual_seed(0)
        store = FeatureStore(fresh_dir(work, "cache-frozen"))
        sync(s.device)
        t0 = now()
        feats, _ = store.get(bb, pre, paths, batch_size=EXTRACT_BATCH, workers=workers, device=device)
        feats = feats.to(device)
        t_extract = now() - t0
        epochs = []
        for _ in range(E):
            te = now()
            _head_epoch(head, opt, feats, y_all, gen)
            sync(s.device)
            epochs.append(now() - te)
        total = now() - t0
        shutil.rmtree(store.root, ignore_errors=True)
        return total, t_extract, epochs

    def run_b(workers: int) -> tuple[float, list[float]]:
        """(B) E epochs that each decode, run the frozen backbone (no_grad) and train the head."""
        head, opt = new_head()
        gen = torch.Generator().manual_seed(0)
        loader = image_loader(paths, labels, transform, EXTRACT_BATCH, workers, shuffle=True, device=s.device,
                              generator=gen)
        sync(s.device)
        t0 = now()
        epochs = []
        for _ in range(E):
            te = now()
            for x, y, _ in loader:
                x, y = x.to(device), y.to(device)
                with torch.no_grad():
                    f = bb(x)
                loss = F.cross_entropy(head(f), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync(s.device)
            epochs.append(now() - te)
        return now() - t0, epochs

    for w in s.workers:
        a_tot, a_ep, b_tot, b_ep, a_ext = [], [], [], [], []
        for _ in range(s.reps):  # A B A B ...
            tot, ext, eps = run_a(w)
            a_tot.append(tot)
            a_ext.append(ext)
            a_ep.append(median(eps))
            tot, eps = run_b(w)
            b_tot.append(tot)
            b_ep.append(median(eps))
        e2e = median([b / a for a, b in zip(a_tot, b_tot)])
        per_epoch = median([b / a for a, b in zip(a_ep, b_ep)])
        report.add(section, f"end to end, E={E}: re-run backbone each epoch / cached", str(w),
                   f"cached {fmt_s(median(a_tot))} (extract {fmt_s(median(a_ext))})",
                   f"re-run {fmt_s(median(b_tot))}", fmt_ratio(e2e), f"≥ {0.8 * E:.0f}×", verdict(e2e, 0.8 * E))
        report.add(section, "per head epoch: backbone epoch / cached head epoch", str(w),
                   f"cached {fmt_s(median(a_ep))}", f"re-run {fmt_s(median(b_ep))}", fmt_ratio(per_epoch),
                   "≥ 100×", verdict(per_epoch, 100))
        shared.setdefault("backbone_epoch_seconds", {})[w] = median(b_ep)
        shared["n_frozen"] = len(paths)


# --------------------------------------------------------------------------------------------
# 3. re-fitting the head on cached features


def _epoch_seconds(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [float(json.loads(line)["seconds"]) for line in lines if line.strip()]


def bench_refit(s: Settings, work: Path, data: Path, report: Report, shared: dict) -> None:
    from tlkit.train.pipeline import finetune

    section = SECTIONS[2]
    firsts, seconds, parts, probe_epochs = [], [], [], []
    n_train = 0
    for rep in range(s.reps):  # first (empty cache) / second (same cache, new lr and seed), alternating
        cache = fresh_dir(work, "cache-refit")
        out = fresh_dir(work, "run-refit")
        t0 = now()
        finetune(data, recipe="linear-probe", cache_dir=str(cache), out=str(out / "first"), workers=0, seed=0,
                 lr=3e-3, **s.finetune_kwargs)
        firsts.append(now() - t0)
        t0 = now()
        res = finetune(data, recipe="linear-probe", cache_dir=str(cache), out=str(out / "second"), workers=0,
                       seed=rep + 1, lr=1e-3, **s.finetune_kwargs)
        wall = now() - t0
        seconds.append(wall)
        ext = float(res.timings.get("extract_seconds", float("nan")))
        train = float(res.timings.get("train_seconds", float("nan")))
        parts.append((ext, train, wall - ext - train))
        probe_epochs.extend(_epoch_seconds(res.run_dir))
        n_train = len(res.manifest.paths("train"))
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    ratio = median([a / b for a, b in zip(firsts, seconds)])
    report.add(section, "linear-probe (60 epochs): first run (empty cache) / second run (new lr, seed)", "0",
               f"first {fmt_s(median(firsts))}", f"second {fmt_s(median(seconds))}", fmt_ratio(ratio), "", "info")
    tight = shared.get("tight_seconds", float("nan"))
    ext, train, other = (median([p[i] for p in parts]) for i in range(3))
    vs_pass = median(seconds) / tight if tight == tight else float("nan")
    report.add(section, "second run, wall seconds: cache read + 60 head epochs (incl. val) + rest (setup, data "
               "check, per-epoch checkpoints, test eval, report)", "0", f"second {fmt_s(median(seconds))}",
               f"cache read {fmt_s(ext)}; epochs {fmt_s(train)}; rest {fmt_s(other)}",
               f"{vs_pass:.1f}× one backbone pass ({fmt_s(tight)})" if vs_pass == vs_pass else "n/a",
               "seconds, not a backbone pass",
               ("meets" if ext < 0.5 * tight else "MISSES") + (" (wall is seconds)" if median(seconds) < 10 else ""))
    shared["probe_epoch_seconds"] = median(probe_epochs)
    shared["probe_n_train"] = n_train


def frozen_tlkit_epoch_row(report: Report, shared: dict) -> None:
    """Section 2 extra: tlkit's own probe epoch (from section 3's metrics.jsonl) against a backbone epoch."""
    if "probe_epoch_seconds" not in shared or "backbone_epoch_seconds" not in shared:
        return
    for w, b in shared["backbone_epoch_seconds"].items():
        per_b = b / shared["n_frozen"]
        per_a = shared["probe_epoch_seconds"] / max(1, shared["probe_n_train"])
        r = per_b / per_a
        report.add(SECTIONS[1], "per image: backbone epoch / tlkit's real probe epoch (metrics.jsonl, incl. "
                   "validation)", str(w), f"tlkit epoch {fmt_s(shared['probe_epoch_seconds'])} "
                   f"({shared['probe_n_train']} img)", f"re-run {fmt_s(b)} ({shared['n_frozen']} img)", fmt_ratio(r),
                   "≥ 100×", verdict(r, 100))


# --------------------------------------------------------------------------------------------
# 4. fine-tune throughput against a plain PyTorch loop


def _plain_finetune(s: Settings, data: Path, workers: int, epochs: int, trainable_last: int | None) -> tuple[list[float], int]:
    """A plain loop: DataLoader over ImageDataset, timm model + Linear head, AdamW, CE, then a val pass.

    ``trainable_last``: None trains everything; N trains only the last N layer groups (plus the head)
    while the whole network still runs on images every epoch. Returns per-epoch seconds and train size.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tlkit.data import scan
    from tlkit.transforms import eval_transform, train_transform

    device = torch.device(s.device)
    manifest = scan(str(data), val_fraction=0.15, test_fraction=0.15, seed=0)  # tlkit's split for seed 0
    bb = build_backbone(s)
    pre = preprocessing(s, bb)
    torch.manual_seed(0)
    model = nn.Sequential(bb.model, nn.Linear(bb.feature_dim, len(manifest.classes))).to(device)
    frozen_bn: list[nn.Module] = []
    if trainable_last is not None:
        bb.freeze(trainable_last)  # same requires_grad pattern tlkit's finetune stage uses
        frozen_bn = [m for m in bb.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                     and not any(p.requires_grad for p in m.parameters(recurse=False))]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    train = image_loader(manifest.paths("train"), manifest.labels("train"), train_transform(pre, "light"),
                         64, workers, shuffle=True, device=s.device, generator=gen)
    val = image_loader(manifest.paths("val"), manifest.labels("val"), eval_transform(pre), 64, workers,
                       device=s.device)
    out = []
    for _ in range(epochs):
        t0 = now()
        model.train()
        for m in frozen_bn:
            m.eval()
        for x, y, _ in train:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            for x, y, _ in val:
                model(x.to(device))
        sync(s.device)
        out.append(now() - t0)
    return out, len(manifest.paths("train"))


def _warm_up_training(s: Settings) -> None:
    """Two training steps on a random batch, so first-call allocations are not charged to whoever runs first."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    bb = build_backbone(s)
    model = nn.Sequential(bb.model, nn.Linear(bb.feature_dim, 10)).to(s.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randn(EXTRACT_BATCH, 3, s.image_size, s.image_size, device=s.device)
    y = torch.zeros(EXTRACT_BATCH, dtype=torch.long, device=s.device)
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(s.device)


def _tlkit_finetune(s: Settings, work: Path, data: Path, workers: int, unfreeze: int | str) -> tuple[list[float], int, dict]:
    from tlkit.train.pipeline import finetune

    recipe = {"name": "ft", "stages": [{"kind": "finetune", "unfreeze": unfreeze, "epochs": 2, "augment": "light",
                                        "lr": 1e-4}]}
    cache = fresh_dir(work, "cache-ft")
    out = fresh_dir(work, "run-ft")
    res = finetune(data, recipe=recipe, cache_dir=str(cache), out=str(out / "run"), workers=workers, seed=0,
                   **s.finetune_kwargs)
    secs = _epoch_seconds(res.run_dir)
    n = len(res.manifest.paths("train"))
    timings = dict(res.timings)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return secs, n, timings


def bench_finetune(s: Settings, work: Path, data: Path, report: Report) -> None:
    _warm_up_training(s)
    # (a) full images: unfreeze all
    for w in s.ft_workers:
        tl, pl = [], []
        n = 0
        for _ in range(s.reps):  # A B A B ...
            secs, n, _ = _tlkit_finetune(s, work, data, w, "all")
            tl.append(statistics.mean(secs))
            psecs, _ = _plain_finetune(s, data, w, 2, None)
            pl.append(statistics.mean(psecs))
        ratio = median([b / a for a, b in zip(tl, pl)])  # tlkit throughput / plain throughput
        report.add(SECTIONS[3], "unfreeze all, 2 epochs: tlkit img/s / plain-loop img/s (epoch incl. val)", str(w),
                   f"tlkit {n / median(tl):.1f} img/s ({fmt_s(median(tl))}/epoch)",
                   f"plain {n / median(pl):.1f} img/s ({fmt_s(median(pl))}/epoch)", fmt_ratio(ratio), "≥ 1.0×",
                   verdict(ratio, 1.0))
    # (b) cached partial: unfreeze 2; the plain loop trains the same 2 groups but runs the whole net on images
    for w in s.ft_workers:
        tl, pl, tl_e2e, pl_e2e, ext = [], [], [], [], []
        n = 0
        for _ in range(s.reps):
            secs, n, timings = _tlkit_finetune(s, work, data, w, 2)
            tl.append(statistics.mean(secs))
            ext.append(timings.get("extract_seconds", 0.0))
            tl_e2e.append(timings.get("extract_seconds", 0.0) + sum(secs))
            psecs, _ = _plain_finetune(s, data, w, 2, 2)
            pl.append(statistics.mean(psecs))
            pl_e2e.append(sum(psecs))
        ratio = median([b / a for a, b in zip(tl, pl)])
        e2e = median([b / a for a, b in zip(tl_e2e, pl_e2e)])
        report.add(SECTIONS[4], "unfreeze 2, per epoch: tlkit cached img/s / plain full-image img/s", str(w),
                   f"tlkit {n / median(tl):.1f} img/s ({fmt_s(median(tl))}/epoch)",
                   f"plain {n / median(pl):.1f} img/s ({fmt_s(median(pl))}/epoch)", fmt_ratio(ratio), "> 1× (advantage)",
                   "meets" if ratio > 1 else "MISSES")
        report.add(SECTIONS[4], "unfreeze 2, 2 epochs incl. tlkit's one extraction (2 train views + val)", str(w),
                   f"tlkit {fmt_s(median(tl_e2e))} (extract {fmt_s(median(ext))})", f"plain {fmt_s(median(pl_e2e))}",
                   fmt_ratio(e2e), "", "info")


# --------------------------------------------------------------------------------------------
# 5. GPU


def bench_gpu(s: Settings, paths: list[str], report: Report, notes: list[str]) -> None:
    import torch

    section = SECTIONS[5]
    if not s.device.startswith("cuda"):
        report.add(section, "bf16 autocast / channels_last / torch.compile vs eager fp32", "-", "-", "-",
                   "no GPU: skipped", "", "run with --device cuda")
        return
    if not torch.cuda.is_available():
        report.add(section, "bf16 autocast / channels_last / torch.compile vs eager fp32", "-", "-", "-",
                   "no GPU: skipped", "", "CUDA not available")
        return
    import torch.nn.functional as F
    from torch import nn

    from tlkit.transforms import eval_transform

    bb = build_backbone(s).cuda().eval()
    pre = preprocessing(s, bb)
    x_cpu = predecode(paths, eval_transform(pre))
    reps = max(3, s.reps)
    batches = [b.cuda() for b in x_cpu.split(EXTRACT_BATCH)]
    batches_cl = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    bf16 = torch.cuda.is_bf16_supported()
    steps = 5 if s.quick else 20

    def timed(fn: Callable[[], None], warm: int = 2) -> Callable[[], float]:
        for _ in range(warm):
            fn()

        def run() -> float:
            torch.cuda.synchronize()
            t0 = now()
            fn()
            torch.cuda.synchronize()
            return now() - t0

        return run

    def extract(model: nn.Module, xs: list, amp: bool) -> Callable[[], None]:
        def fn() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                for x in xs:
                    model(x)

        return fn

    eager_model = bb
    cl_model = build_backbone(s).cuda().eval().to(memory_format=torch.channels_last)
    variants: dict[str, Callable[[], None]] = {"eager fp32": extract(eager_model, batches, False)}
    if bf16:
        variants["bf16 autocast"] = extract(eager_model, batches, True)
    variants["channels_last"] = extract(cl_model, batches_cl, False)
    try:
        compiled = torch.compile(build_backbone(s).cuda().eval())
        variants["torch.compile"] = extract(compiled, batches, False)
    except Exception as exc:  # noqa: BLE001 - compile support varies; report rather than crash
        notes.append(f"torch.compile unavailable for extraction: {exc}")
    runners = {}
    for name, fn in variants.items():
        try:
            runners[name] = timed(fn, warm=3 if name == "torch.compile" else 2)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"GPU extraction variant {name} failed: {exc}")
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(reps):
        for name, run in runners.items():  # eager, variant, eager, variant ... in turn
            times[name].append(run())
    base = times.get("eager fp32")
    n = len(paths)
    for name, t in times.items():
        if name == "eager fp32" or not base:
            continue
        r = median([b / a for a, b in zip(t, base)])
        report.add(section, f"extraction: {name} speed-up over eager fp32", "-",
                   f"{name} {n / median(t):.0f} img/s", f"eager {n / median(base):.0f} img/s", fmt_ratio(r), "", "info")

    # one fine-tune step (all trainable) on a batch of 64
    def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Callable[[], None]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def fn() -> None:
            for _ in range(steps):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = F.cross_entropy(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return fn

    x = batches[0]
    y = torch.zeros(len(x), dtype=torch.long, device="cuda")

    def ft_model(cl: bool = False) -> nn.Module:
        b = build_backbone(s)
        m = nn.Sequential(b.model, nn.Linear(b.feature_dim, 10)).cuda().train()
        return m.to(memory_format=torch.channels_last) if cl else m

    steps_variants: dict[str, Callable[[], None]] = {"eager fp32": step_fn(ft_model(), x, y, False)}
    if bf16:
        steps_variants["bf16 autocast"] = step_fn(ft_model(), x, y, True)
    steps_variants["channels_last"] = step_fn(ft_model(True), x.contiguous(memory_format=torch.channels_last), y, False)
    try:
        steps_variants["torch.compile"] = step_fn(torch.compile(ft_model()), x, y, False)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"torch.compile unavailable for fine-tune step: {exc}")
    runners = {}
    for name, fn in steps_variants.items():
        try:
            runners[name] = timed(fn, warm=2)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"GPU fine-tune variant {name} failed: {exc}")
    times = {k: [] for k in runners}
    for _ in range(reps):
        for name, run in runners.items():
            times[name].append(run())
    base = times.get("eager fp32")
    for name, t in times.items():
        if name == "eager fp32" or not base:
            continue
        r = median([b / a for a, b in zip(t, base)])
        report.add(section, f"fine-tune step (batch 64, all trainable): {name} over eager fp32", "-",
                   f"{name} {fmt_s(median(t) / steps)}/step", f"eager {fmt_s(median(base) / steps)}/step",
                   fmt_ratio(r), "", "info")


# --------------------------------------------------------------------------------------------
# 6. memory: one fresh subprocess per configuration


def _vm_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


MEMORY_PRELOAD = ["torch", "torchvision", "timm", "tlkit.models.builder", "tlkit.train.feature_store", "tlkit.train.pipeline"]


def memory_context():  # noqa: ANN201
    """A forkserver that has imported torch, timm and tlkit and done nothing else.

    Each configuration runs in a fresh process forked from it, so peaks never mix (and the parent's
    memory, large after the timing sections, is not inherited), while the imports are paid once.
    """
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(MEMORY_PRELOAD)
    return ctx


def start_memory_server() -> None:
    from multiprocessing import forkserver

    memory_context()
    forkserver.ensure_running()


def memory_child(spec: dict, queue) -> None:  # noqa: ANN001
    """One configuration in a fresh process; puts {'baseline_kib', 'peak_kib'} (or an error) on ``queue``."""
    try:
        baseline = _vm_kib("VmHWM")  # peak so far: interpreter + imports (inherited from the forkserver)
        from tlkit.train.feature_store import FeatureStore
        from tlkit.train.pipeline import finetune

        s = make_settings(spec["quick"], spec["device"], 1)
        work = Path(spec["work"])
        if spec["kind"] == "extract":
            bb = build_backbone(s)
            pre = preprocessing(s, bb)
            FeatureStore(work / "cache").get(bb, pre, spec["paths"], batch_size=spec["batch"], workers=0,
                                              device=s.device)
        else:
            recipe = {"name": "ft", "stages": [{"kind": "finetune", "unfreeze": "all", "epochs": 1,
                                                "augment": "light", "lr": 1e-4, "batch_size": spec["batch"]}]}
            finetune(spec["data"], recipe=recipe, cache_dir=str(work / "cache"), out=str(work / "run"), workers=0,
                     seed=0, **s.finetune_kwargs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        queue.put({"baseline_kib": baseline, "peak_kib": peak})
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def bench_memory(s: Settings, work: Path, data: Path, paths: list[str], report: Report) -> None:
    ctx = memory_context()
    for kind in ("extract", "finetune"):
        for batch in s.mem_batches:
            d = fresh_dir(work, f"mem-{kind}-{batch}")
            spec = {"kind": kind, "batch": batch, "quick": s.quick, "device": "cpu", "work": str(d),
                    "data": str(data), "paths": paths}
            queue = ctx.Queue()
            proc = ctx.Process(target=memory_child, args=(spec, queue))
            proc.start()
            try:
                result = queue.get(timeout=900)
            except Exception as exc:  # noqa: BLE001
                result = {"error": f"no result: {exc}"}
            proc.join(timeout=60)
            if "error" in result:
                report.notes.append(f"memory child {kind}/batch {batch} failed (exit {proc.exitcode}): {result['error']}")
                continue
            report.memory.append({"kind": kind, "batch": batch, "baseline_mib": result["baseline_kib"] / 1024,
                                  "peak_mib": result["peak_kib"] / 1024})
            shutil.rmtree(d, ignore_errors=True)
    for kind in ("extract", "finetune"):
        rows = sorted((m for m in report.memory if m["kind"] == kind), key=lambda m: m["batch"])
        for m in rows:
            m["delta_mib"] = m["peak_mib"] - m["baseline_mib"]
        if len(rows) >= 2:
            lo, hi = rows[0], rows[-1]
            slope = (hi["peak_mib"] - lo["peak_mib"]) / (hi["batch"] - lo["batch"])
            report.notes.append(f"memory growth, {kind}: {slope:.2f} MiB per image of batch "
                                f"(batch {lo['batch']} → {hi['batch']}: peak {lo['peak_mib']:.0f} → {hi['peak_mib']:.0f} MiB)")
    if not report.memory:
        report.add(SECTIONS[6], "peak RSS", "0", "-", "-", "failed", "", "see notes")


# --------------------------------------------------------------------------------------------
# the report


def machine_description(s: Settings, command: str, load_start: tuple, load_end: tuple) -> list[str]:
    import timm
    import torch
    import torchvision

    from tlkit.train.pipeline import default_workers

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    dw = default_workers(torch.device(s.device if torch.cuda.is_available() or not s.device.startswith("cuda") else "cpu"))
    return [
        f"- date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- command: `{command}`",
        f"- mode: {'quick' if s.quick else 'full'}; backbone `{s.backbone}` "
        f"({'pretrained, offline' if s.pretrained else 'random init'}), {s.image_size} px; "
        f"data: scikit-learn digits via `export_digits(image_size=64, per_class={s.per_class})` "
        f"= {10 * s.per_class} PNG files; {s.reps} repetition(s) per figure",
        f"- CPU: {cpu}; {os.cpu_count()} cores; torch threads {torch.get_num_threads()} (default, untouched)",
        f"- GPU: {gpu}; device used: {s.device}",
        f"- python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"timm {timm.__version__}, {platform.platform()}",
        f"- DataLoader workers: sections 1-2 at workers={' and '.join(map(str, s.workers))}, section 3 at 0, "
        f"section 4 at {' and '.join(map(str, s.ft_workers))} (on a CPU a training step costs far more than "
        f"decoding its batch, see section 1's decode share); tlkit's default here "
        f"is `tlkit.train.default_workers` = {dw} (0 on a CPU with up to 4 cores, else min(4, cores // 4); min(8, cores - 1) on CUDA)",
        f"- load average (1/5/15 min) at start: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}; "
        f"at end: {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f}",
    ]


def render(s: Settings, report: Report, machine: list[str], wall: float) -> str:
    lines = ["# tlkit benchmark results", "",
             "Every ratio is measured side by side in one run (A and B alternating, A B A B ...); the median of "
             "the per-repetition ratios is shown, with the median absolute figures beside it. Targets from "
             "`design/PERFORMANCE.md`. See `bench/README.md` for what each figure means.", "",
             "## Machine", "", *machine, f"- benchmark wall time: {wall:.0f} s", "",
             "## Figures", "",
             "| section | figure | workers | A (median) | B (median) | ratio | target | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report.rows:
        cells = [r.section, r.what, r.workers, r.a, r.b, r.ratio, r.target, r.verdict]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", f"## {SECTIONS[6]}", "",
              "Peak resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), one fresh process per "
              "configuration (forked from a multiprocessing forkserver that has only imported torch, torchvision, "
              "timm and tlkit, so peaks never mix and the benchmark's own memory is not inherited), CPU, workers=0 "
              "(worker processes would not be counted). Baseline = the peak inherited from those imports.", "",
              "| configuration | batch | peak RSS MiB | baseline MiB | peak − baseline MiB |",
              "| --- | --- | --- | --- | --- |"]
    names = {"extract": "extraction (`FeatureStore.get`, all images)",
             "finetune": "one fine-tune epoch, full-image path (`finetune`, unfreeze all, incl. val + test eval)"}
    for m in sorted(report.memory, key=lambda m: (m["kind"], m["batch"])):
        lines.append(f"| {names[m['kind']]} | {m['batch']} | {m['peak_mib']:.0f} | {m['baseline_mib']:.0f} | "
                     f"{m.get('delta_mib', m['peak_mib'] - m['baseline_mib']):.0f} |")
    if not report.memory:
        lines.append("| (no result) | | | | |")
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random backbone, 40 images, 1 rep (< 30 s)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for every figure")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"), help="Markdown file to write")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default: 3 full, 1 quick)")
    args = parser.parse_args(argv)

    raw_argv = sys.argv[1:] if argv is None else argv
    command = "uv run python bench/run.py" + ("".join(" " + shlex.quote(a) for a in raw_argv))
    load_start = os.getloadavg()
    t_start = now()
    import torch

    device = args.device
    report = Report()
    if device == "cuda" and not torch.cuda.is_available():
        report.notes.append("--device cuda asked for but CUDA is not available: every figure ran on the CPU")
        s = make_settings(args.quick, "cpu", args.reps)
        gpu_settings = make_settings(args.quick, "cuda", args.reps)
    else:
        s = make_settings(args.quick, device, args.reps)
        gpu_settings = s
    out_path = Path(args.out)
    if s.quick:  # the memory forkserver imports while the timings run (quick figures are not for reading)
        start_memory_server()
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-") as tmp:
        work = Path(tmp)
        data, paths, labels = export_data(work, s.per_class)
        shared: dict = {}
        steps: list[tuple[str, Callable[[], None]]] = [
            (SECTIONS[0], lambda: bench_extraction(s, work, paths, report, shared)),
            (SECTIONS[1], lambda: bench_frozen(s, work, paths, labels, report, shared)),
            (SECTIONS[2], lambda: bench_refit(s, work, data, report, shared)),
            ("4. Fine-tune", lambda: bench_finetune(s, work, data, report)),
            (SECTIONS[5], lambda: bench_gpu(gpu_settings, paths, report, report.notes)),
            (SECTIONS[6], lambda: bench_memory(s, work, data, paths, report)),
        ]
        for name, fn in steps:
            log(f"{name} ...")
            t0 = now()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001  (one broken figure must not hide the others)
                import traceback

                report.add(name, "failed", "-", "-", "-", "error", "", type(exc).__name__)
                report.notes.append(f"{name} failed: {type(exc).__name__}: {exc}\n\n```\n"
                                    f"{traceback.format_exc()[-2000:]}```")
            log(f"{name} done in {now() - t0:.1f} s")
            # write what is measured so far, so an interrupted run still leaves its figures behind
            partial = render(s, report, machine_description(s, command + "  (INTERRUPTED: partial results)",
                                                            load_start, os.getloadavg()), now() - t_start)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(partial, encoding="utf-8")
        frozen_tlkit_epoch_row(report, shared)
        report.rows.sort(key=lambda r: SECTIONS.index(r.section) if r.section in SECTIONS else 3.5)
    machine = machine_description(s, command, load_start, os.getloadavg())
    text = render(s, report, machine, now() - t_start)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8")
    print(text)
    failed = [r for r in report.rows if r.what == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
