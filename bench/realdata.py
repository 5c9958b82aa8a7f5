"""Real-data checks: accuracy and wall time of recipes on data that works offline.

    uv run python bench/realdata.py digits  --image-size 128
    uv run python bench/realdata.py fashion --train-per-class 100 --image-size 64
    uv run python bench/realdata.py fashion --train-per-class 200 --image-size 224   # ~2,000 images at 224 px

* ``digits``: scikit-learn's 1,797 handwritten digits (ship with scikit-learn), split 70/15/15.
* ``fashion``: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
  (``apt-get install dataset-fashion-mnist``): N training and 20 validation images per class from
  its training set, 100 test images per class (1,000) from its test set, as split folders.

Each recipe runs on the packaged pretrained EfficientNet-Lite0 (CPU, offline) into a fresh run
directory with a shared feature cache; results are appended to ``bench/REALDATA.md``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def export_fashion(out: Path, train_per_class: int, val_per_class: int = 20, test_per_class: int = 100) -> Path:
    from PIL import Image

    if not FASHION_DIR.is_dir():
        sys.exit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    marker = out / f".done-{train_per_class}-{val_per_class}-{test_per_class}"
    if marker.is_file():
        return out
    train_x, train_y = _idx(FASHION_DIR / "train-images-idx3-ubyte.gz"), _idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    test_x, test_y = _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"), _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    plan = [("train", train_x, train_y, 0, train_per_class), ("val", train_x, train_y, train_per_class, val_per_class),
            ("test", test_x, test_y, 0, test_per_class)]
    for split, xs, ys, skip, count in plan:
        for label, name in enumerate(FASHION_CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            indices = np.flatnonzero(ys == label)[skip: skip + count]
            for i in indices:
                Image.fromarray(xs[i]).save(folder / f"{split}_{i:05d}.png")
    marker.write_text("ok")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["digits", "fashion"])
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--recipes", default="linear-probe,probe-then-finetune")
    parser.add_argument("--work", default="bench/_work")
    parser.add_argument("--results", default="bench/REALDATA.md")
    parser.add_argument("--cache", default=None, help="feature cache folder (default: a new empty one per invocation)")
    args = parser.parse_args()

    import torch
    from rich.console import Console

    import tlkit
    from tlkit.console import RichReporter
    from tlkit.data import export_digits

    work = Path(args.work)
    if args.dataset == "digits":
        data = Path(export_digits(work / "digits", image_size=64))
        label = "digits (1,797 images, 70/15/15 split)"
    else:
        data = export_fashion(work / f"fashion-{args.train_per_class}", args.train_per_class)
        label = f"Fashion-MNIST ({args.train_per_class}/class train, 20/class val, 1,000 test)"
    import tempfile

    # an empty feature cache per invocation, so wall times include extraction (recipes share it)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    load = os.getloadavg()
    rows, runs = [], []
    for recipe in args.recipes.split(","):
        start = time.perf_counter()
        result = tlkit.finetune(data, backbone="efficientnet_lite0", recipe=recipe, image_size=args.image_size,
                                out=str(work / "runs" / f"{args.dataset}-{args.train_per_class}-{Path(recipe).stem}-{args.image_size}"),
                                overwrite=True, offline=True, cache_dir=str(cache), device="cpu", reporter=RichReporter(Console()))
        seconds = time.perf_counter() - start
        ev = result.evaluation
        n_train = len(result.manifest.splits["train"])
        runs.append(result.run_dir)
        epochs = "/".join(str(sum(1 for r in result.history if r["stage"] == i))
                          for i in range(len(result.config.recipe.stages)))
        rows.append((recipe, n_train, ev.n, ev.accuracy, ev.accuracy_ci, ev.balanced_accuracy, seconds,
                     result.timings.get("extract_seconds", 0.0) + result.timings.get("doctor_seconds", 0.0),
                     result.timings.get("train_seconds", 0.0), epochs))
        print(f"{recipe}: test accuracy {ev.accuracy:.4f} [{ev.accuracy_ci[0]:.3f}, {ev.accuracy_ci[1]:.3f}] "
              f"in {seconds:.0f}s", flush=True)

    size = args.image_size or 224
    lines = [f"\n## {label}, EfficientNet-Lite0 (packaged ImageNet weights), {size} px, CPU",
             f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}; command: "
             f"`uv run python bench/realdata.py {' '.join(sys.argv[1:])}` "
             + ("(feature cache empty at start)" if not args.cache else f"(feature cache {args.cache}, possibly warm)")
             + f"; load average at start {load[0]:.2f}\n",
             "| recipe | train images | test images | test accuracy [95% CI] | balanced accuracy | wall time | "
             "doctor + extraction | training | epochs per stage |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for recipe, n_train, n_test, acc, ci, bal, seconds, extract, train, epochs in rows:
        lines.append(f"| {recipe} | {n_train} | {n_test} | {acc:.4f} [{ci[0]:.3f}, {ci[1]:.3f}] | {bal:.4f} | "
                     f"{seconds:.0f} s | {extract:.0f} s | {train:.0f} s | {epochs} |")
    # paired: every recipe against the first (the baseline) on the same test images
    for (recipe, *_), run_dir in zip(rows[1:], runs[1:]):
        c = tlkit.compare(runs[0], run_dir)
        lines.append(f"\n{recipe} - {rows[0][0]} (paired, same {c.n} test images): {c.difference:+.4f} "
                     f"[{c.difference_ci[0]:+.4f}, {c.difference_ci[1]:+.4f}], only {rows[0][0]} right on "
                     f"{c.only_a_right}, only {recipe} right on {c.only_b_right}, McNemar p = {c.p_value:.3g}; "
                     f"verdict (A = {rows[0][0]}, B = {recipe}): {c.verdict}.")
    results = Path(args.results)
    if not results.exists():
        results.write_text("# Real-data checks\n\nProduced by `bench/realdata.py`; newest sections last.\n")
    with results.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
