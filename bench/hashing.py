"""What keying feature-cache rows on file content costs: hashing vs decoding vs extracting.

Usage (from the repository root)::

    uv run python bench/hashing.py                       # ~3-5 min on a 2-core CPU
    uv run python bench/hashing.py --reps 1 --extract 32 --warm-files 400   # a quick look

``tlkit.train.feature_store`` hashes every file's bytes (BLAKE2b) on every ``FeatureStore.get`` call instead
of trusting size+mtime. This script measures, side by side in one run (A B C A B C ...):

* **hash**: ``tlkit.train.feature_store.content_ids`` (what ``get`` does: BLAKE2b of each file's bytes), per file;
* **stat**: ``os.stat`` per file (what the old size+mtime key cost), for scale;
* **decode**: ``tlkit.data.load_image`` + the eval transform at 224 px, per file;
* **extract**: ``FeatureStore.get`` on an empty cache (decode, transform, efficientnet_lite0
  forward at 224 px on the CPU, write), per file, on a subset of ``--extract`` files;
* **warm get**: ``FeatureStore.get`` on ``--warm-files`` files that are all cached (wall time of
  the whole call: hashing, lock, reading and verifying the entry, gathering rows).

Files are realistic: JPEG photos 500x375 at quality 90 cut from scikit-learn's two sample
photos at random offsets and scales, and PNGs of scikit-learn's digits upscaled to 64 px. Every
file is read once before timing, so the figures are for files in the page cache; on cold or
network storage hashing costs one read of each file (which decoding pays too). Medians of
``--reps`` repetitions. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's tlkit
    sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[hashing {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct 500x375 JPEG photos (q90): random crops and scales of the sample images."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]  # 640x427 each
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = rng.uniform(1.0, 1.4)
        big = photo.resize((round(640 * scale), round(427 * scale)), Image.BICUBIC)
        x, y = int(rng.integers(0, big.width - 500 + 1)), int(rng.integers(0, big.height - 375 + 1))
        crop = big.crop((x, y, x + 500, y + 375))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{i:05d}.jpg"
        crop.save(path, quality=90)
        paths.append(str(path))
    return paths


def make_pngs(folder: Path, count: int) -> list[str]:
    """``count`` PNGs of scikit-learn digits upscaled to 64 px (distinct up to 1,797, then tinted)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images  # 8x8, 0..16
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        grey = (digits[i % len(digits)] * (255 / 16)).astype(np.uint8)
        tint = np.array([255, 255 - (i // len(digits)) * 7 % 256, 255], np.uint8)  # keeps repeats distinct
        rgb = (np.repeat(grey[..., None], 3, axis=2).astype(np.uint16) * tint // 255).astype(np.uint8)
        path = folder / f"digit_{i:05d}.png"
        Image.fromarray(rgb).resize((64, 64), Image.BILINEAR).save(path)
        paths.append(str(path))
    return paths


def clock(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_file_rows(sets: dict[str, list[str]], extract_n: int, reps: int, work: Path) -> list[tuple]:
    """Per-file medians of hash / stat / decode / extract for each set of files, timed alternately."""
    from tlkit.data import load_image
    from tlkit.models.builder import build
    from tlkit.train.feature_store import FeatureStore, content_ids
    from tlkit.transforms import eval_transform

    backbone = build("efficientnet_lite0", offline=True)
    pre = backbone.preprocessing  # 224 px
    transform = eval_transform(pre)
    FeatureStore(work / "warmup").get(backbone, pre, sets[next(iter(sets))][:8], batch_size=8)  # untimed
    rows = []
    for name, paths in sets.items():
        times: dict[str, list[float]] = {k: [] for k in ("hash", "stat", "decode", "extract")}
        subset = paths[:extract_n]
        for rep in range(reps):
            log(f"{name}: repetition {rep + 1}/{reps}")
            times["hash"].append(clock(lambda: content_ids(paths)) / len(paths))
            times["stat"].append(clock(lambda: [os.stat(p) for p in paths]) / len(paths))
            times["decode"].append(clock(lambda: [transform(load_image(p)) for p in paths]) / len(paths))
            store = FeatureStore(tempfile.mkdtemp(prefix="extract-", dir=work))
            times["extract"].append(clock(lambda: store.get(backbone, pre, subset, batch_size=32)) / len(subset))
        size_kb = statistics.mean(os.path.getsize(p) for p in paths) / 1024
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((name, len(paths), size_kb, med, len(subset)))
    return rows


def warm_get(paths: list[str], reps: int, work: Path) -> dict[str, float]:
    """Wall time of a fully cached ``FeatureStore.get`` on ``paths``, beside its hashing alone."""
    from tlkit.models.builder import build
    from tlkit.train.feature_store import FeatureStore, content_ids

    backbone = build("efficientnet_lite0", offline=True)
    pre = backbone.preprocessing.with_size(64)  # fills the cache quickly; rows are 1280 floats at any size
    store = FeatureStore(work / "warm")
    log(f"filling a cache with {len(paths)} files (64 px, untimed)")
    _, stats = store.get(backbone, pre, paths, batch_size=64)
    assert stats.computed == len(paths), "the files must be distinct contents"
    times: dict[str, list[float]] = {"get": [], "hash": [], "stat": []}
    for rep in range(reps):
        log(f"warm get: repetition {rep + 1}/{reps}")
        start = time.perf_counter()
        _, stats = store.get(backbone, pre, paths, batch_size=64)
        times["get"].append(time.perf_counter() - start)
        assert stats.computed == 0
        times["hash"].append(clock(lambda: content_ids(paths)))
        times["stat"].append(clock(lambda: [os.stat(p) for p in paths]))
    return {k: statistics.median(v) for k, v in times.items()}


def table(rows: list[tuple], warm: dict[str, float], warm_n: int, command: str, load_start: float) -> str:
    import torch

    ms = 1000.0
    out = ["# Content hashing in the feature cache", "",
           f"`{command}` on {platform.platform()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
           f"load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.", "",
           "| files | n | mean size | hash (BLAKE2b) | stat | decode + transform 224 px "
           "| extract, efficientnet_lite0 224 px | hash / extract | hash / decode |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, n, kb, m, n_extract in rows:
        out.append(f"| {name} | {n} | {kb:.1f} KiB | {m['hash'] * ms:.3f} ms | "
                   f"{m['stat'] * ms:.3f} ms | {m['decode'] * ms:.2f} ms | {m['extract'] * ms:.1f} ms ({n_extract} files) | "
                   f"{m['hash'] / m['extract']:.2%} | {m['hash'] / m['decode']:.1%} |")
    out += ["", f"Warm cache, `FeatureStore.get` on {warm_n} files, all hits: **{warm['get']:.3f} s** wall "
                f"(of which hashing alone {warm['hash']:.3f} s; `os.stat` of every file {warm['stat']:.3f} s).",
            "Per-file times are medians over repetitions, files in the page cache."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jpegs", type=int, default=300)
    parser.add_argument("--pngs", type=int, default=200)
    parser.add_argument("--extract", type=int, default=64, help="files per set through the backbone per repetition")
    parser.add_argument("--warm-files", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    command = "uv run python bench/hashing.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    os.environ.setdefault("TLKIT_OFFLINE", "1")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tlkit-hashing-") as tmp:
        work = Path(tmp)
        log("writing images")
        jpegs = make_jpegs(work / "jpeg", max(args.jpegs, args.warm_files // 2))
        pngs = make_pngs(work / "png", max(args.pngs, args.warm_files - args.warm_files // 2))
        for p in jpegs + pngs:  # page cache: every figure reads files from memory
            Path(p).read_bytes()
        sets = {"JPEG 500x375 q90": jpegs[:args.jpegs], "PNG digits 64 px": pngs[:args.pngs]}
        rows = per_file_rows(sets, args.extract, args.reps, work)
        warm_paths = jpegs[:args.warm_files // 2] + pngs[:args.warm_files - args.warm_files // 2]
        warm = warm_get(warm_paths, args.reps, work)
    print(table(rows, warm, len(warm_paths), command.strip(), load_start))


if __name__ == "__main__":
    main()
