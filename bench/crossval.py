"""Cross-validation and flip TTA on digits: the cost of K folds, the CV estimate against test, TTA's gain on test.

    .venv/bin/python bench/crossval.py                           # efficientnet_lite0 at 96 px, 5 folds
    .venv/bin/python bench/crossval.py --image-size 128 --folds 10

Digits (scikit-learn's 1797 8x8 images, exported at 64 px by ``tlkit.data.export_digits``) with the
packaged EfficientNet-Lite0 and the linear-probe recipe. Two runs, each on its own empty feature
cache so both pay for extraction: a plain probe, then the same probe with ``--folds K --tta``. The
ratio of their wall times is what K-fold costs end to end; the ratio of training seconds is the K
head trainings against one. The TTA gain on test is measured on images with the saved model (flip
on and off, whatever the run decided): a paired Newcombe interval of the accuracy difference.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _run(data: str, folder: Path, name: str, args: argparse.Namespace, **extra: object):  # noqa: ANN202
    import tlkit

    t0 = time.perf_counter()
    result = tlkit.finetune(data, backbone="efficientnet_lite0", recipe="linear-probe", image_size=args.image_size,
                            out=str(folder / name), cache_dir=str(folder / f"cache-{name}"), doctor=False,
                            offline=True, device="cpu", seed=args.seed, **extra)
    return result, time.perf_counter() - t0


def _tta_on_test(result) -> dict:  # noqa: ANN001
    import numpy as np

    import tlkit
    from tlkit.evaluation.stats import paired_difference_interval

    model = tlkit.load(result.run_dir)
    paths, labels = result.manifest.paths("test"), np.array(result.manifest.labels("test"))
    model.tta = {"used": False}
    plain = model.predict(paths, batch_size=64).probs.argmax(1) == labels
    model.tta = {"used": True}
    flip = model.predict(paths, batch_size=64).probs.argmax(1) == labels
    cells = (int((flip & plain).sum()), int((flip & ~plain).sum()), int((plain & ~flip).sum()), int((~flip & ~plain).sum()))
    low, high = paired_difference_interval(*cells)
    return {"plain": float(plain.mean()), "tta": float(flip.mean()), "gain": float(flip.mean() - plain.mean()),
            "interval": [low, high], "only_tta_right": cells[1], "only_plain_right": cells[2], "images": len(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("TLKIT_OFFLINE", "1")
    import torch

    from tlkit.data import export_digits

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-cv-") as tmp:
        folder = Path(tmp)
        data = export_digits(folder / "digits", image_size=64)
        plain, plain_wall = _run(data, folder, "plain", args)
        folds, folds_wall = _run(data, folder, "folds", args, folds=args.folds, tta=True)
        cv = json.loads((folds.run_dir / "crossval.json").read_text())
        tta_test = _tta_on_test(folds)
        decided = folds.model.tta
    train_plain = plain.timings["train_seconds"]
    figures = {
        "image_size": args.image_size, "folds": args.folds, "threads": torch.get_num_threads(),
        "wall_seconds": {"probe": plain_wall, "folds_probe": folds_wall, "ratio": folds_wall / plain_wall},
        "extract_seconds": {"probe": plain.timings["extract_seconds"], "folds_probe": folds.timings["extract_seconds"]},
        "train_seconds": {"probe": train_plain, "final_model_in_folds_run": folds.timings["train_seconds"],
                          "folds": cv["train_seconds"],
                          "ratio_folds_to_one": cv["train_seconds"] / max(train_plain, 1e-9)},
        "cv": {"mean": cv["mean_accuracy"], "t_interval": [cv["interval"]["low"], cv["interval"]["high"]],
               "pooled": cv["pooled"]["accuracy"], "wilson": [cv["pooled"]["wilson"]["low"], cv["pooled"]["wilson"]["high"]],
               "fold_accuracies": cv["fold_accuracies"]},
        "test_accuracy": folds.evaluation.accuracy, "test_interval": list(folds.evaluation.accuracy_ci),
        "same_model_as_plain": bool(folds.evaluation.accuracy == plain.evaluation.accuracy),
        "tta_on_val": {k: decided.get(k) for k in ("used", "reason")},
        "tta_on_test": tta_test,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
