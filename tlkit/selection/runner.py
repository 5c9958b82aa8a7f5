"""``tlkit.sweep``: which backbone, and how sure: one feature extraction per backbone, then k-fold probes.

The data is split as ``tlkit finetune`` splits it for the same seed and fractions; the sweep uses
train+val only (the test split stays unseen, for the run that follows). Each backbone's pooled
features come from the shared feature store (computed once per file content, then cached), the
folds are the same for every backbone, and the scores are :mod:`tlkit.selection.scoring`'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlkit.console import Reporter, SilentReporter
from tlkit.data import Manifest, scan
from tlkit.diagnosis.examine import resolve_device
from tlkit.errors import ConfigError
from tlkit.models.backbone import Backbone
from tlkit.models.heads import HeadSpec, make_head
from tlkit.selection.candidates import Candidate, build_backbone, choose
from tlkit.selection.ensembles import EnsembleScore, recommend_ensemble, score_ensembles
from tlkit.selection.result import BackboneScore, SweepResult, rank, recommend
from tlkit.selection.scoring import LEVEL, FoldPlan, paired_difference, plan, probe_scores
from tlkit.selection.timing import LATENCY_REPEATS, ThroughputLog, predict_latency_ms, sample_throughput
from tlkit.train.feature_store import FeatureStore, content_ids, default_cache_dir

#: splits the probes train and score on (test stays unseen)
SWEEP_SPLITS = ("train", "val")


@dataclass(frozen=True)
class ExtractOptions:
    """How every backbone of one sweep is built and run."""

    device: torch.device
    pretrained: bool
    offline: bool | None
    seed: int
    image_size: int | None
    batch_size: int
    workers: int


def check_options(folds: object, image_size: object, val_fraction: float, test_fraction: float) -> None:
    """ConfigError for a bad option, before anything is scanned or built."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds must be a whole number of at least 2 (each image is scored by a probe trained on "
                          f"the other folds), got {folds!r}; the default is 5")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise ConfigError(f"--image-size must be a whole number of pixels, at least 8, got {image_size!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


def probe_set(manifest: Manifest, folds: int) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Paths and labels of train+val (sorted by path), and images per class; ConfigError when a class
    has fewer images than ``folds``."""
    samples = sorted((rel, label) for split in SWEEP_SPLITS for rel, label in manifest.splits.get(split, []))
    counts = dict.fromkeys(manifest.classes, 0)
    for _, label in samples:
        counts[manifest.classes[label]] += 1
    name, smallest = min(counts.items(), key=lambda item: (item[1], item[0]))
    if smallest < 2:
        raise ConfigError(f"class {name!r} has {smallest} image(s) in train+val; a sweep needs at least 2 per class "
                          "(better 5 or more): add images of it, or remove the class folder")
    if folds > smallest:
        raise ConfigError(f"--folds {folds} needs at least {folds} images per class in train+val, but class {name!r} "
                          f"has {smallest}: use --folds {smallest} or fewer, or add images of {name!r}")
    paths = [os.path.join(manifest.root, *rel.split("/")) for rel, _ in samples]
    return paths, np.array([label for _, label in samples], dtype=np.int64), counts


def backbone_params(net: Backbone) -> int:
    """Parameters the backbone runs (its layer groups, each counted once), as ``tlkit backbones`` counts them."""
    unique = {id(p): p for i in range(net.num_groups) for _, p in net.group_parameters(i)}
    return sum(p.numel() for p in unique.values())


def score_backbone(candidate: Candidate, paths: list[str], labels: np.ndarray, n_classes: int, folds: FoldPlan, *,
                   store: FeatureStore, throughput: ThroughputLog, options: ExtractOptions,
                   reporter: Reporter) -> tuple[BackboneScore, np.ndarray, list[str]]:
    """Features (cached), out-of-fold probe scores and costs of one backbone; also its per-image hits
    and the messages the feature store left."""
    device = options.device
    net = build_backbone(candidate, pretrained=options.pretrained, offline=options.offline, seed=options.seed)
    preprocessing = net.preprocessing.with_size(options.image_size)
    features, stats = store.get(net, preprocessing, paths, batch_size=options.batch_size, workers=options.workers,
                                device=device,
                                progress=reporter.task(f"features {candidate.name}", len(paths)))
    features = features.reshape(len(paths), -1)
    key = f"{store.key(net, preprocessing, net.num_groups, 'none', 0, 0)}:{device.type}"
    rate, rate_source = throughput.resolve(key, stats.computed, stats.seconds)
    if rate is None:  # cached by another command: time a small uncached sample
        rate, sampled = sample_throughput(net, preprocessing, paths, device, batch_size=options.batch_size,
                                          workers=options.workers)
        throughput.record(key, rate, sampled)
        rate_source = f"measured now on {sampled} images"
    scores = probe_scores(features, labels, n_classes, folds, seed=options.seed)
    head = make_head(HeadSpec("linear", net.feature_dim, n_classes))
    latency = predict_latency_ms(nn.Sequential(net, head), preprocessing.input_size, device)
    reporter.message(f"sweep: {candidate.name}: accuracy {scores.accuracy:.3f} "
                     f"[{scores.ci[0]:.3f}, {scores.ci[1]:.3f}], {latency:.1f} ms/image; "
                     f"{stats.computed} of {len(paths)} images computed")
    score = BackboneScore(
        backbone=candidate.name, canonical=candidate.spec.name, accuracy=scores.accuracy, ci=scores.ci,
        fold_accuracies=scores.fold_accuracies, balanced_accuracy=scores.balanced_accuracy,
        params=backbone_params(net), feature_dim=net.feature_dim, input_size=preprocessing.input_size,
        images_per_second=rate, images_per_second_source=rate_source, latency_ms=latency,
        weights_source=net.weights_source, features_computed=stats.computed)
    return score, scores.correct, list(stats.messages)


def compare_to_best(scores: list[BackboneScore], hits: dict[str, np.ndarray]) -> list[BackboneScore]:
    """Ranked best first, each with its paired difference to the best on the same images."""
    ranked = rank(scores)
    best = hits[ranked[0].canonical]
    for s in ranked[1:]:
        s.diff_vs_best, s.diff_ci = paired_difference(hits[s.canonical], best)
        s.significantly_worse = s.diff_ci[1] < 0
    return ranked


def sweep(data: str | os.PathLike, *, backbones: str | list[str] | None = None, folds: int = 5, seed: int = 0,
          cache_dir: str | os.PathLike | None = None, offline: bool | None = None, device: str = "cpu",
          image_size: int | None = None, reporter: Reporter | None = None, pretrained: bool = True,
          val_fraction: float = 0.15, test_fraction: float = 0.15, batch_size: int = 64,
          workers: int = 0, ensemble: int = 2) -> SweepResult:
    """Compare backbones on the data in ``data``: linear probes on cached features, k-fold, with intervals.

    ``backbones``: names (a list, or one string separated by commas); default every backbone whose
    weights are here (packaged or cached). Each backbone's features are extracted once (cached in
    ``cache_dir``, default ``~/.cache/tlkit/features``); a ``folds``-fold stratified linear probe is
    scored on train+val of the split ``tlkit finetune`` makes for ``seed``. ``pretrained=False``
    uses random weights (tests only). ``ensemble``: also score the top 2 .. ``ensemble`` backbones'
    features together (:mod:`tlkit.selection.ensembles`; 0 or 1: none), recommended only when paired-better
    than the best single backbone.

    >>> result = sweep("data/leaves", backbones="efficientnet_lite0,resnet18")   # doctest: +SKIP
    >>> [(r.backbone, round(r.accuracy, 3), r.ci) for r in result.results]       # doctest: +SKIP
    >>> result.recommendation.command                                             # doctest: +SKIP
    'tlkit finetune data/leaves --backbone efficientnet_lite0'

    Raises ConfigError (a bad option, more folds than a class has images), BackboneError (an
    unknown name, with close matches), WeightsError (no weights here in offline mode), DataError
    (a missing folder, an unreadable image).
    """
    check_options(folds, image_size, val_fraction, test_fraction)
    if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 0:
        raise ConfigError(f"--ensemble must be a whole number (the top 2..N backbones together; 0: none), got {ensemble!r}")
    reporter = reporter or SilentReporter()
    dev = resolve_device(device)
    start = time.perf_counter()
    candidates = choose(backbones, pretrained=pretrained, offline=offline)
    manifest = scan(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    paths, labels, counts = probe_set(manifest, folds)
    folds_used = plan(labels, content_ids(paths)[0], folds, seed)
    warnings = []
    if folds_used.folds < folds:
        warnings.append(f"{folds_used.folds} folds instead of {folds}: copies of the same file leave few distinct pictures")
    reporter.message(f"sweep: {len(paths)} train+val images, {len(manifest.classes)} classes, {folds_used.folds} folds; "
                     f"backbones: {', '.join(c.name for c in candidates)}")
    root = default_cache_dir() if cache_dir is None else cache_dir
    store, throughput = FeatureStore(root), ThroughputLog(root)
    options = ExtractOptions(dev, pretrained, offline, seed, image_size, batch_size, workers)
    scores, hits = [], {}
    for candidate in candidates:
        score, correct, messages = score_backbone(candidate, paths, labels, len(manifest.classes), folds_used,
                                                  store=store, throughput=throughput, options=options,
                                                  reporter=reporter)
        scores.append(score)
        hits[candidate.spec.name] = correct
        warnings += messages
    ranked = compare_to_best(scores, hits)
    ensembles: list[EnsembleScore] = score_ensembles(ranked, hits[ranked[0].canonical], ensemble, paths, labels,
                                                     len(manifest.classes), folds_used, store=store, options=options,
                                                     reporter=reporter)
    recommendation = recommend_ensemble(recommend(ranked, str(data), image_size=image_size, seed=seed), ensembles,
                                        ranked[0], str(data), image_size=image_size, seed=seed)
    described = {"seed": seed, "image_size": image_size, "device": str(dev), "pretrained": pretrained,
                 "val_fraction": val_fraction, "test_fraction": test_fraction, "splits": list(SWEEP_SPLITS),
                 "images": len(paths), "probe": "logistic regression on <=128 principal components (tlkit doctor's)",
                 "accuracy_interval": f"wilson {LEVEL:.0%} over pooled out-of-fold predictions",
                 "difference_interval": f"newcombe paired {LEVEL:.0%} on the same out-of-fold images",
                 "latency": f"median of {LATENCY_REPEATS} batch-1 forwards of backbone + linear head"}
    return SweepResult(root=manifest.root, classes=list(manifest.classes), counts=counts, folds=folds_used.folds,
                       results=ranked, recommendation=recommendation, settings=described, ensembles=ensembles,
                       timings={"total_seconds": round(time.perf_counter() - start, 2)}, warnings=warnings)
