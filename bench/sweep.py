"""The backbone sweep on real data: every packaged backbone on Fashion-MNIST, cold cache then warm.

    uv run python bench/sweep.py                                    # 100/class train + 20/class val, own input sizes
    uv run python bench/sweep.py --train-per-class 20 --val-per-class 5 --test-per-class 5 --image-size 64
    uv run python bench/sweep.py --results bench/REALDATA.md        # also append the section there
    uv run python bench/sweep.py --dataset digits --image-size 96   # scikit-learn's digits, split as finetune splits
    uv run python bench/sweep.py --cache bench/_work/cache-X        # reuse a cache (the "cold" call is then warm)

Ensembles of the top 2..``--ensemble`` backbones are scored too (``tlkit sweep --ensemble``), and each
is scored on test like a backbone, with its paired test difference to the best single backbone.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
exported to ``train/val/test`` class folders by ``bench/realdata.py``'s ``export_fashion``. The sweep
scores train+val only (the test folder is never read). ``--backbones`` defaults to every backbone
whose weights ship in an installed package (``tlkit backbones`` says "packaged"), so the figures do
not depend on what a machine happens to have cached. The sweep runs twice on one new, empty feature
cache: the first call extracts every backbone's features (the throughput is measured there), the
second must compute nothing (its wall time is the probes, the hashing and the latency timing).
Writes sweep.json, sweep.csv and sweep.png into ``--out`` and prints a markdown section.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import export_fashion  # noqa: E402


def packaged_backbones() -> list[str]:
    from tlkit.selection.candidates import available_here

    return [c.name for c in available_here() if c.availability == "packaged"]


def markdown(args: argparse.Namespace, result: object, cold: float, warm: float, computed: tuple[int, int],
             load: float) -> list[str]:
    import torch

    size = f"{args.image_size} px" if args.image_size else "each backbone's own input size"
    what = ("digits (scikit-learn, 1,797 images, split as tlkit finetune splits)" if args.dataset == "digits" else
            f"Fashion-MNIST ({args.train_per_class}/class train + {args.val_per_class}/class val)")
    lines = [f"\n## Backbone sweep: {what}, "
             f"{size}, {result.folds}-fold linear probes, CPU",
             f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; command: "
             f"`uv run python bench/sweep.py {' '.join(sys.argv[1:])}`; load average at start {load:.2f}\n",
             f"Cold sweep (empty feature cache) {cold:.1f} s, {computed[0]} feature rows computed; warm sweep {warm:.1f} s, "
             f"{computed[1]} computed.\n",
             "| # | backbone | accuracy [95% Wilson] | balanced | vs best [95% paired] | params | features | input "
             "| images/s (cold) | ms/image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result.results:
        versus = "best" if r.diff_ci is None else f"{r.diff_vs_best:+.3f} [{r.diff_ci[0]:+.3f}, {r.diff_ci[1]:+.3f}]"
        rate = f"{r.images_per_second:.1f}"
        lines.append(f"| {r.rank} | {r.backbone} | {r.accuracy:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}] | "
                     f"{r.balanced_accuracy:.3f} | {versus} | {r.params / 1e6:.2f}M | {r.feature_dim} | {r.input_size} | "
                     f"{rate} | {r.latency_ms:.1f} |")
    for e in result.ensembles:
        lines.append(f"| + | {e.backbone} | {e.accuracy:.3f} [{e.ci[0]:.3f}, {e.ci[1]:.3f}] | {e.balanced_accuracy:.3f} | "
                     f"{e.diff_vs_best:+.3f} [{e.diff_ci[0]:+.3f}, {e.diff_ci[1]:+.3f}] ({'kept' if e.kept else 'not kept'}) "
                     f"| | {e.feature_dim} | {e.input_size} | ({e.features_computed} rows computed) | {e.latency_ms:.1f} |")
    lines.append(f"\nRecommendation: `{result.recommendation.command}` ({result.recommendation.reason}).")
    return lines


def test_accuracies(data: Path, result: object, image_size: int | None, cache: Path
                    ) -> dict[str, tuple[float, tuple, object]]:
    """Each backbone's test accuracy (95% Wilson): the sweep's probe (standardised features, the leading
    principal components of train+val, L2 logistic regression) fitted on all of train+val, scored on the
    test folder, which the sweep never read. Tells whether the cross-validated ranking picks the test winner."""
    import numpy as np
    import torch

    import tlkit
    from tlkit.diagnosis.probes import PROBE_DIM, fit_predict
    from tlkit.evaluation.stats import wilson_interval
    from tlkit.models.builder import build
    from tlkit.train.feature_store import FeatureStore

    manifest = tlkit.scan(data)
    fit_paths = manifest.paths("train") + manifest.paths("val")
    y_fit = np.array(manifest.labels("train") + manifest.labels("val"))
    y_test = np.array(manifest.labels("test"))
    scores = {}
    for row in [*result.results, *result.ensembles]:
        net = build(row.backbone, offline=True)
        pre = net.preprocessing.with_size(image_size)
        feats = {name: FeatureStore(cache).get(net, pre, paths)[0].float()
                 for name, paths in (("fit", fit_paths), ("test", manifest.paths("test")))}
        mean, std = feats["fit"].mean(0), feats["fit"].std(0, unbiased=False).clamp_min(1e-6)
        x_fit, x_test = (feats["fit"] - mean) / std, (feats["test"] - mean) / std
        dim = int(min(PROBE_DIM, len(x_fit) - 1, x_fit.shape[1]))
        top = torch.linalg.svd(x_fit.double(), full_matrices=False).Vh[:dim].T.float()
        z_fit, z_test = x_fit @ top, x_test @ top
        scale = z_fit.std(0, unbiased=False).pow(2).mean().sqrt().clamp_min(1e-6)
        probs = fit_predict((z_fit / scale).numpy(), y_fit, (z_test / scale).numpy(), len(manifest.classes), 0)
        hits = probs.argmax(1) == y_test
        right = int(hits.sum())
        scores[row.backbone] = (right / len(y_test), wilson_interval(right, len(y_test)), hits)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--backbones", default=None, help="names separated by commas (default: the packaged ones)")
    parser.add_argument("--work", default="bench/_work")
    parser.add_argument("--dataset", choices=("fashion", "digits"), default="fashion")
    parser.add_argument("--ensemble", type=int, default=3, help="ensembles of the top 2..N backbones (0: none)")
    parser.add_argument("--cache", default=None, help="feature cache to use (default: a new, empty one)")
    parser.add_argument("--out", default=None, help="sweep files folder (default WORK/sweep-out)")
    parser.add_argument("--results", default=None, help="append the markdown section to this file")
    args = parser.parse_args()

    from rich.console import Console

    import tlkit
    from tlkit.console import RichReporter
    from tlkit.selection import write_sweep_report

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.dataset == "digits":
        data = tlkit.export_digits(work / "digits")
    else:
        data = export_fashion(work / f"fashion-{args.train_per_class}-{args.val_per_class}-{args.test_per_class}",
                              args.train_per_class, args.val_per_class, args.test_per_class)
    backbones = args.backbones or ",".join(packaged_backbones())
    # empty unless --cache: the cold sweep extracts everything
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="sweep-cache-", dir=work))
    load = os.getloadavg()[0]
    calls = []
    for _ in range(2):
        start = time.perf_counter()
        result = tlkit.sweep(data, backbones=backbones, folds=args.folds, image_size=args.image_size, cache_dir=cache,
                             offline=True, device="cpu", reporter=RichReporter(Console(stderr=True)),
                             ensemble=args.ensemble)
        calls.append((time.perf_counter() - start, sum(r.features_computed for r in result.results), result))
    cold_result = calls[0][2]
    write_sweep_report(cold_result, args.out or work / "sweep-out")
    lines = markdown(args, cold_result, calls[0][0], calls[1][0], (calls[0][1], calls[1][1]), load)
    tests = test_accuracies(data, cold_result, args.image_size, cache)
    lines += ["\nEach backbone's test accuracy (the same probe fitted on all of train+val, scored on the "
              f"{len(tlkit.scan(data).paths('test'))} test images the sweep never read):\n",
              "| sweep rank | backbone | CV accuracy | test accuracy [95% Wilson] |", "| --- | --- | --- | --- |"]
    for r in cold_result.results:
        acc, (lo, hi), _ = tests[r.backbone]
        lines.append(f"| {r.rank} | {r.backbone} | {r.accuracy:.3f} | {acc:.3f} [{lo:.3f}, {hi:.3f}] |")
    singles = [r.backbone for r in cold_result.results]
    winner = max(singles, key=lambda name: tests[name][0])
    lines.append(f"\nTest winner: {winner}; the sweep ranked it #"
                 f"{next(r.rank for r in cold_result.results if r.backbone == winner)}.")
    if cold_result.ensembles:
        from tlkit.selection.scoring import paired_difference

        best = cold_result.results[0].backbone
        lines += ["\nEnsembles on test (the same probe on the members' features side by side), against the "
                  f"sweep's best single backbone ({best}) on the same test images:\n",
                  "| ensemble | CV vs best [95% paired] | kept | test accuracy [95% Wilson] | test vs best [95% paired] |",
                  "| --- | --- | --- | --- | --- |"]
        for e in cold_result.ensembles:
            acc, (lo, hi), hits = tests[e.backbone]
            diff, (dlo, dhi) = paired_difference(hits, tests[best][2])
            lines.append(f"| {e.backbone} | {e.diff_vs_best:+.3f} [{e.diff_ci[0]:+.3f}, {e.diff_ci[1]:+.3f}] | "
                         f"{'yes' if e.kept else 'no'} | {acc:.3f} [{lo:.3f}, {hi:.3f}] | {diff:+.3f} [{dlo:+.3f}, {dhi:+.3f}] |")
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
