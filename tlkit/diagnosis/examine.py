"""``tlkit.doctor``: scan, hash and embed a dataset once, then run every diagnosis on the cached numbers."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from tlkit._memory import keep_freed_memory
from tlkit.console import Reporter, SilentReporter
from tlkit.data import SPLITS, Manifest, scan
from tlkit.diagnosis.curves import FRACTIONS, learning_curves, overall_accuracy
from tlkit.diagnosis.duplicates import DEFAULT_RULE, DuplicateRule, Pair, exact_groups, find_duplicates
from tlkit.diagnosis.features import ImageTable, gather
from tlkit.diagnosis.labels import METHODS, rank_suspects
from tlkit.diagnosis.outliers import MIN_Z, find_outliers
from tlkit.diagnosis.probes import probe_probabilities
from tlkit.diagnosis.result import DoctorResult, DuplicatePair, LearningCurve, Outlier, SuspectLabel
from tlkit.errors import ConfigError, DataError
from tlkit.models.backbone import Backbone
from tlkit.transforms import Preprocessing

#: share of the kNN votes in the probabilities that rank suspect labels (the rest: the logistic probe)
KNN_WEIGHT = 0.5
#: largest set of mutual copies kept together in one fold
MAX_GROUP = 10


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> a device that exists here (ConfigError otherwise)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    if device.type == "cpu":
        keep_freed_memory()
    return device


def check_options(folds: int, image_size: int | None, test_fraction: float, val_fraction: float, label_method: str) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds must be a whole number of at least 2, got {folds!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise ConfigError(f"--image-size must be a whole number of pixels, at least 8, got {image_size!r}")
    if label_method not in METHODS:
        raise ConfigError(f"label_method must be one of {', '.join(METHODS)}, got {label_method!r}")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


def picture_groups(n: int, pairs: list[Pair], warnings: list[str]) -> np.ndarray:
    """A group id per row: rows joined by duplicate pairs share one, so folds keep copies together.

    A group larger than :data:`MAX_GROUP` rows is not a few copies but a cluster the features cannot
    tell apart (near-identical pictures, or features too weak for this data): its rows stay apart,
    with a warning, instead of one fold swallowing a class.
    """
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        a, b = find(p.first), find(p.second)
        parent[max(a, b)] = min(a, b)
    groups = np.array([find(i) for i in range(n)], dtype=np.int64)
    sizes = np.bincount(groups, minlength=n)
    large = sizes[groups] > MAX_GROUP
    if large.any():
        warnings.append(f"{int(large.sum())} images form clusters of more than {MAX_GROUP} mutual near-duplicates; "
                        "check them, or the features cannot tell these pictures apart")
        groups = np.where(large, n + np.arange(n), groups)
    return groups


def fold_groups(table: ImageTable, pairs: list[Pair], warnings: list[str]) -> np.ndarray:
    """:func:`picture_groups`, joined with the user's ``--group-by`` groups: rows of one object, patient
    or session share a fold too, so no probe is scored on a picture of what it was trained on."""
    groups = picture_groups(len(table), pairs, warnings)
    if not table.groups:
        return groups
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.arange(len(table))
    _, first_of_picture = np.unique(groups, return_index=True)
    picture_anchor = first_of_picture[np.unique(groups, return_inverse=True)[1]]
    names = [table.groups.get(rel, f"\0{row}") for row, rel in enumerate(table.rels)]  # no group: its own
    _, first_of_name, inverse = np.unique(np.array(names, dtype=object), return_index=True, return_inverse=True)
    name_anchor = first_of_name[inverse]
    edges = np.concatenate([np.stack([rows, picture_anchor]), np.stack([rows, name_anchor])], axis=1)
    graph = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(len(table), len(table)))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _pairs(table: ImageTable, pairs: list[Pair]) -> list[DuplicatePair]:
    found = [DuplicatePair((table.rels[p.first], table.rels[p.second]), p.kind, p.similarity, p.hamming,
                           (table.splits[p.first], table.splits[p.second]),
                           (table.classes[table.labels[p.first]], table.classes[table.labels[p.second]]), p.correlation)
             for p in pairs]
    # errors first (label conflicts, leakage), then the most similar, then by path
    return sorted(found, key=lambda d: (d.severity != "error", -d.similarity, d.paths))


def probe_rows(table: ImageTable, warnings: list[str]) -> np.ndarray:
    """Rows the probes can use: those of classes with at least 2 readable images (needed for folds)."""
    counts = np.bincount(table.labels, minlength=len(table.classes))
    small = [table.classes[c] for c in range(len(table.classes)) if 0 < counts[c] < 2]
    if small:
        warnings.append(f"class(es) {', '.join(map(repr, small))} have a single readable image: left out of the "
                        "suspect labels and learning curves")
    rows = np.flatnonzero(counts[table.labels] >= 2)
    if len(np.unique(table.labels[rows])) < 2:
        warnings.append("suspect labels and learning curves need at least 2 classes with 2 or more readable images "
                        "each: skipped")
        return rows[:0]
    return rows


def diagnose_labels(table: ImageTable, groups: np.ndarray, *, folds: int, seed: int, method: str,
                    warnings: list[str]) -> tuple[list[SuspectLabel], list[LearningCurve], list[float], int]:
    """Out-of-fold probes -> ranked suspects and per-class learning curves (and the folds used)."""
    rows = probe_rows(table, warnings)
    if len(rows) == 0:
        return [], [], [], 0
    labels = table.labels[rows]
    n_classes = len(table.classes)
    probes = probe_probabilities(table.features[torch.from_numpy(rows)], labels, groups[rows], n_classes, folds=folds,
                                 seed=seed, fractions=FRACTIONS)
    plan, by_fraction = probes.plan, probes.linear
    if plan.folds < folds:
        warnings.append(f"{plan.folds} folds instead of {folds}: the smallest class has "
                        f"{np.bincount(labels)[np.unique(labels)].min()} images, or copies leave few distinct pictures")
    probs = probes.blended(KNN_WEIGHT)
    suspects = []
    top = probs.argmax(1)
    for s in rank_suspects(labels, probs, method=method):
        if s.flagged or top[s.row] != s.given:  # listed: confident learning's picks and the probes' disagreements
            r = int(rows[s.row])
            suspects.append(SuspectLabel(table.rels[r], table.splits[r], table.classes[s.given],
                                         table.classes[s.suggested], s.score, s.confidence, s.flagged))
    curves = [LearningCurve(table.classes[c.label], c.images, c.train_images, c.recall, c.slope, c.would_gain)
              for c in learning_curves(labels, by_fraction, n_classes, plan.folds)]
    return suspects, curves, list(overall_accuracy(labels, by_fraction).values()), plan.folds


def diagnose_outliers(table: ImageTable, *, min_z: float) -> list[Outlier]:
    """Outliers among distinct pictures (exact copies count once, as their first file)."""
    reps = np.array([g[0] for g in exact_groups(table)], dtype=np.int64)
    if len(reps) < 3:
        return []
    found = []
    for o in find_outliers(table.features[torch.from_numpy(reps)], table.labels[reps], len(table.classes),
                           table.contrast[reps], min_z=min_z):
        r = int(reps[o.row])
        found.append(Outlier(table.rels[r], table.splits[r], table.classes[table.labels[r]], o.score, o.z,
                             table.classes[o.nearest_class], o.reason))
    return found


def load_manifest(data: str | os.PathLike, *, backbone: str, pretrained: bool, weights_file: str | None,
                  offline: bool | None, seed: int, val_fraction: float, test_fraction: float,
                  group_by: str | None) -> tuple[Manifest, Backbone]:
    """Scan (one class allowed) and build the backbone (random weights seeded: the same on every call)."""
    from tlkit.models.builder import build

    manifest = scan(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, min_classes=1,
                    group_by=group_by)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build(backbone, pretrained=pretrained, weights_file=weights_file, offline=offline)
    return manifest, net


def group_leaks(manifest: Manifest) -> list[dict[str, object]]:
    """With ``--group-by``: each group whose images sit in more than one split (given split folders can do that)."""
    where: dict[str, dict[str, list[str]]] = {}
    for split in SPLITS:
        for rel, _ in manifest.splits.get(split, []):
            if rel in manifest.groups:
                where.setdefault(manifest.groups[rel], {}).setdefault(split, []).append(rel)
    return [{"group": group, "splits": list(by_split), "paths": sorted(p for paths in by_split.values() for p in paths)}
            for group, by_split in sorted(where.items()) if len(by_split) > 1]


def diagnose(manifest: Manifest, net: Backbone, preprocessing: Preprocessing, *,
             cache_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu", folds: int = 5, seed: int = 0,
             batch_size: int = 64, workers: int = 0, reporter: Reporter | None = None,
             duplicate_rule: DuplicateRule = DEFAULT_RULE, label_method: str = "self-confidence",
             outlier_z: float = MIN_Z) -> DoctorResult:
    """Every diagnosis of the images of ``manifest`` (its split as given: a run's own, groups and label
    fixes included) on the features of ``net`` at ``preprocessing``, from the feature cache when it has them."""
    reporter = reporter or SilentReporter()
    start = time.perf_counter()
    reporter.message(f"doctor: {sum(len(v) for v in manifest.splits.values())} images, {len(manifest.classes)} classes; "
                     f"backbone {net.name} ({net.weights_source}) at {preprocessing.input_size}px")
    table = gather(manifest, net, preprocessing, cache_dir=cache_dir, device=device, batch_size=batch_size,
                   workers=workers, reporter=reporter)
    warnings = [f"unreadable, left out: {rel}: {reason}" for rel, reason in table.unreadable] + list(table.messages)
    if len(table) == 0:
        raise DataError(f"no readable image in {table.root}: every file failed to decode "
                        f"({table.unreadable[0][1] if table.unreadable else 'none found'})")
    embedded = time.perf_counter()
    pairs = find_duplicates(table, duplicate_rule)
    reporter.message(f"doctor: {len(pairs)} duplicate pair(s); probing labels ({folds} folds)")
    suspects, curves, accuracy, used_folds = diagnose_labels(table, fold_groups(table, pairs, warnings), folds=folds,
                                                             seed=seed, method=label_method, warnings=warnings)
    outliers = diagnose_outliers(table, min_z=outlier_z)
    settings = {"backbone": net.name, "image_size": preprocessing.input_size, "folds": used_folds, "seed": seed,
                "label_method": label_method, "duplicate_rule": duplicate_rule.to_dict(), "outlier_min_z": outlier_z,
                "images": len(table) + len(table.unreadable), "readable": len(table), "group_by": manifest.group_by}
    timings = {"total_seconds": round(time.perf_counter() - start, 2), "embed_seconds": round(embedded - start, 2),
               "analysis_seconds": round(time.perf_counter() - embedded, 2),
               "features_computed": int(table.timings["features_computed"])}
    return DoctorResult(root=table.root, classes=list(table.classes),
                        counts={split: manifest.counts(split) for split in SPLITS}, near_duplicates=_pairs(table, pairs),
                        suspect_labels=suspects, outliers=outliers, learning_curves=curves,
                        curve_fractions=FRACTIONS if curves else (), curve_accuracy=accuracy,
                        unreadable=[{"path": rel, "reason": reason} for rel, reason in table.unreadable],
                        group_leaks=group_leaks(manifest), warnings=warnings, settings=settings, timings=timings)


def doctor(data: str | os.PathLike, *, backbone: str = "efficientnet_lite0", image_size: int | None = None,
           cache_dir: str | os.PathLike | None = None, folds: int = 5, seed: int = 0, offline: bool | None = None,
           device: str = "cpu", reporter: Reporter | None = None, pretrained: bool = True, weights_file: str | None = None,
           val_fraction: float = 0.15, test_fraction: float = 0.15, group_by: str | None = None, batch_size: int = 64,
           workers: int = 0, duplicate_rule: DuplicateRule = DEFAULT_RULE, label_method: str = "self-confidence",
           outlier_z: float = MIN_Z) -> DoctorResult:
    """Diagnose the dataset in ``data`` (class folders or train/val/test folders) without changing it.

    Finds near-duplicates and leakage, suspect labels, outliers and per-class learning curves on the
    features of ``backbone`` (cached in ``cache_dir``, default ``~/.cache/tlkit/features``; a second
    call is fast). Class folders are split as ``tlkit finetune`` splits them (``val_fraction``,
    ``test_fraction``, ``seed``, ``group_by``: ``"subfolder"``, a CSV of path,group or a regular
    expression, as for finetune; a group whose images sit in two splits is leakage, and the
    out-of-fold probes keep each group in one fold). ``pretrained=False`` uses random weights (tests only).

    Raises DataError (missing folder, no readable image), ConfigError (a bad option), WeightsError
    (no weights and ``offline``); anything else the doctor can still work around is a warning in
    the result.
    """
    check_options(folds, image_size, test_fraction, val_fraction, label_method)
    dev = resolve_device(device)
    manifest, net = load_manifest(data, backbone=backbone, pretrained=pretrained, weights_file=weights_file,
                                  offline=offline, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                                  group_by=group_by)
    return diagnose(manifest, net, net.preprocessing.with_size(image_size), cache_dir=cache_dir, device=dev, folds=folds,
                    seed=seed, batch_size=batch_size, workers=workers, reporter=reporter, duplicate_rule=duplicate_rule,
                    label_method=label_method, outlier_z=outlier_z)
