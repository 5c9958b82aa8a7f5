"""How well each out-of-distribution score separates real test images from images of another kind.

Usage (from the repository root; about 3 minutes on a 2-core CPU)::

    uv run python bench/ood.py                      # Fashion-MNIST, 50 images/class, 96 px
    uv run python bench/ood.py --per-class 50 --size 96 --json bench/_work/ood.json

A linear probe (recipe linear-probe) of the packaged EfficientNet-Lite0 is trained on Fashion-MNIST
class folders (train: 50/class, val: 20/class, test: 50/class, from the Debian package
dataset-fashion-mnist). Every candidate score (:data:`tlkit.models.ood.METHODS`) is then fitted
the way a run fits it (training split's pooled features; threshold on validation at 2%) and
scored on the test images and on four sets they should be told apart from: scikit-learn's digits
(grey objects on black, like Fashion-MNIST: the hard one), tiles of scikit-learn's and matplotlib's
sample photos, uniform and Gaussian noise, and blank frames. Printed per score: AUROC (test vs each
set; 1 = always scored higher than every test image) and the share of each set answered unknown at
the threshold, with the share of real test images rejected.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doctor import photo_tiles  # noqa: E402
from realdata import export_fashion  # noqa: E402

WORK = Path("bench/_work")


def _save(images: list[Image.Image], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:04d}.png"
        if not path.is_file():
            image.save(path)
        paths.append(str(path))
    return paths


def ood_sets(size: int) -> dict[str, list[str]]:
    """The files of each out-of-distribution set (written once under bench/_work/ood-sets)."""
    import tlkit

    root = WORK / "ood-sets"
    digits = Path(tlkit.export_digits(root / "digits", image_size=64, per_class=30))
    rng = np.random.default_rng(0)
    uniform = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(100)]
    gauss = [Image.fromarray(np.clip(rng.normal(128, 50, (size, size, 3)), 0, 255).astype(np.uint8)) for _ in range(100)]
    blank = [Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(27)]
    blank += [Image.new("RGB", (size, size), (v, v, v)) for v in (0, 128, 255)]
    return {"digits": sorted(str(p) for p in digits.rglob("*.png")), "photos": _save(photo_tiles(size), root / "photos"),
            "noise": _save(uniform + gauss, root / "noise"), "blank": _save(blank, root / "blank")}


def features(model, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """Pooled features and logits of image files, as predict computes them."""
    from tlkit.data import load_image

    transform = model.eval_transform()
    feats, logits = [], []
    with torch.inference_mode():
        for s in range(0, len(paths), 64):
            x = torch.stack([transform(load_image(p)) for p in paths[s:s + 64]])
            f = model.backbone(x)
            feats.append(f.float())
            logits.append(model.head(f).float())
    return torch.cat(feats), torch.cat(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--json", type=Path, default=WORK / "ood.json")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    import tlkit
    from tlkit.models.ood import DEFAULT_REJECT_RATE, METHODS, fit_detector

    t0 = time.perf_counter()
    data = export_fashion(WORK / f"ood-fashion-{args.per_class}", args.per_class, val_per_class=20, test_per_class=50)
    run = tlkit.finetune(data, backbone="efficientnet_lite0", recipe="linear-probe", image_size=args.size,
                         out=str(WORK / "ood-run"), overwrite=True, workers=0, doctor=False,
                         cache_dir=str(WORK / "cache"))
    train_seconds = time.perf_counter() - t0
    model, manifest = run.model.eval(), run.manifest
    split = {s: features(model, manifest.paths(s)) for s in ("train", "val", "test")}
    sets = {name: features(model, paths) for name, paths in ood_sets(args.size).items()}
    test_correct = (split["test"][1].argmax(1).numpy() == np.array(manifest.labels("test")))
    rows = []
    for method in METHODS:
        detector = fit_detector(split["train"][0], manifest.labels("train"), method=method,
                                val_features=split["val"][0], val_logits=split["val"][1], train_logits=split["train"][1],
                                temperature=model.temperature, reject_rate=DEFAULT_REJECT_RATE)
        test = detector.score(*split["test"]).numpy()
        row = {"method": method, "threshold": detector.threshold,
               "test_rejected": float((test > detector.threshold).mean()),
               "test_accuracy_accepted": float(test_correct[test <= detector.threshold].mean())}
        for name, (f, z) in sets.items():
            other = detector.score(f, z).numpy()
            truth = np.r_[np.zeros(len(test)), np.ones(len(other))]
            row[f"auroc_{name}"] = float(roc_auc_score(truth, np.r_[test, other]))
            row[f"unknown_{name}"] = float((other > detector.threshold).mean())
        rows.append(row)
    result = {"dataset": f"Fashion-MNIST {args.per_class}/class train, 20/class val, 50/class test, {args.size} px",
              "test_accuracy": float(test_correct.mean()), "sets": {k: len(v[0]) for k, v in sets.items()},
              "train_seconds": train_seconds, "total_seconds": time.perf_counter() - t0, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"{result['dataset']}; test accuracy {result['test_accuracy']:.3f}; sets {result['sets']}")
    names = list(sets)
    print("| score | " + " | ".join(f"AUROC {n}" for n in names) + " | test rejected at 2% | "
          + " | ".join(f"{n} unknown" for n in names) + " |")
    print("|" + " --- |" * (2 * len(names) + 2))
    for r in rows:
        print(f"| {r['method']} | " + " | ".join(f"{r[f'auroc_{n}']:.3f}" for n in names)
              + f" | {r['test_rejected']:.1%} | " + " | ".join(f"{r[f'unknown_{n}']:.0%}" for n in names) + " |")
    print(f"train {train_seconds:.0f} s, total {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
