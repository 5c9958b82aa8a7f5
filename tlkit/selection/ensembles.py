"""The sweep's feature ensembles: the top backbones' features side by side, scored like one backbone.

For each ``n`` from 2 to the number asked (``tlkit sweep --ensemble N``), the top ``n`` backbones
of the ranking become the ensemble ``tlkit finetune --backbone A+B`` builds
(:mod:`tlkit.models.ensemble`): every member at the first member's input size (or the sweep's
``--image-size``), its features from the feature store (a member already extracted at that size
costs nothing). The same k-fold linear probe scores it on the same out-of-fold images, and it is
*kept* (recommended) only when the paired 95% interval of its difference to the best single
backbone lies above 0: an ensemble costs the members' latencies together, so a tie is a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkit.console import Reporter
from tlkit.models.registry import ENSEMBLE_SEPARATOR, ensemble_spec
from tlkit.selection.candidates import Candidate, build_backbone
from tlkit.selection.result import BackboneScore, Recommendation, finetune_command
from tlkit.selection.scoring import FoldPlan, paired_difference, probe_scores
from tlkit.train.feature_store import FeatureStore

#: the recipe an ensemble trains with (it trains heads on cached features only)
ENSEMBLE_RECIPE = "linear-probe"


@dataclass
class EnsembleScore:
    """The out-of-fold probe of the top backbones' features concatenated, against the best single one."""

    backbone: str  # what --backbone takes: the members' names joined by "+", best first
    members: list[str]
    accuracy: float
    ci: tuple[float, float]
    fold_accuracies: list[float]
    balanced_accuracy: float
    diff_vs_best: float  # accuracy - the best single backbone's, on the same out-of-fold images
    diff_ci: tuple[float, float]  # Newcombe paired 95% interval
    kept: bool  # diff_ci lies above 0: recommended
    feature_dim: int
    input_size: int
    latency_ms: float  # estimated: :func:`member_latency`
    features_computed: int

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "members": list(self.members), "accuracy": self.accuracy,
                "ci": list(self.ci), "fold_accuracies": list(self.fold_accuracies),
                "balanced_accuracy": self.balanced_accuracy, "diff_vs_best": self.diff_vs_best,
                "diff_ci": list(self.diff_ci), "kept": self.kept, "feature_dim": self.feature_dim,
                "input_size": self.input_size, "latency_ms": self.latency_ms,
                "latency_source": "the members' measured latencies added, scaled to the input size",
                "features_computed": self.features_computed, "recipe": ENSEMBLE_RECIPE}


def member_latency(top: list[BackboneScore], input_size: int) -> float:
    """The members' batch-1 latencies added up, each scaled to ``input_size`` by the pixel count: the members
    run one after another, and adding the figures measured beside each backbone keeps the comparison
    with them fair on a machine whose load changes during the sweep."""
    return float(sum(s.latency_ms * (input_size / s.input_size) ** 2 for s in top))


def score_ensembles(ranked: list[BackboneScore], best_hits: np.ndarray, largest: int, paths: list[str],
                    labels: np.ndarray, n_classes: int, folds: FoldPlan, *, store: FeatureStore, options: Any,
                    reporter: Reporter) -> list[EnsembleScore]:
    """One :class:`EnsembleScore` per ensemble of the top 2 .. ``largest`` backbones (none for fewer than 2)."""
    scores = []
    for n in range(2, min(largest, len(ranked)) + 1):
        top = ranked[:n]
        name = ENSEMBLE_SEPARATOR.join(s.backbone for s in top)
        spec = ensemble_spec([s.canonical for s in top])
        net = build_backbone(Candidate(name, spec, "here"), pretrained=options.pretrained, offline=options.offline,
                             seed=options.seed)
        preprocessing = net.preprocessing.with_size(options.image_size)
        features, stats = store.get(net, preprocessing, paths, batch_size=options.batch_size, workers=options.workers,
                                    device=options.device, progress=reporter.task(f"features {name}", len(paths)))
        probe = probe_scores(features.reshape(len(paths), -1), labels, n_classes, folds, seed=options.seed)
        diff, interval = paired_difference(probe.correct, best_hits)
        latency = member_latency(top, preprocessing.input_size)
        score = EnsembleScore(name, [s.backbone for s in top], probe.accuracy, probe.ci, probe.fold_accuracies,
                              probe.balanced_accuracy, diff, interval, interval[0] > 0, net.feature_dim,
                              preprocessing.input_size, latency, stats.computed)
        reporter.message(f"sweep: ensemble {name}: accuracy {probe.accuracy:.3f} [{probe.ci[0]:.3f}, {probe.ci[1]:.3f}], "
                         f"{diff:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}] against {top[0].backbone} alone"
                         + ("" if score.kept else ": not kept (the interval reaches 0)"))
        scores.append(score)
    return scores


def recommend_ensemble(single: Recommendation, ensembles: list[EnsembleScore], best: BackboneScore, data: str, *,
                       image_size: int | None, seed: int) -> Recommendation:
    """The kept ensemble with the highest accuracy instead of ``single``; ``single`` when none is kept."""
    kept = sorted((e for e in ensembles if e.kept), key=lambda e: (-e.accuracy, e.latency_ms))
    if not kept:
        return single
    chosen = kept[0]
    low, high = chosen.diff_ci
    command = finetune_command(data, chosen.backbone, image_size=image_size, seed=seed) + f" --recipe {ENSEMBLE_RECIPE}"
    reason = (f"the features of {' and '.join(chosen.members)} together ({chosen.accuracy:.3f}) beat {best.backbone} "
              f"alone ({best.accuracy:.3f}) on the same out-of-fold images: {chosen.diff_vs_best:+.3f}, 95% CI "
              f"[{low:+.3f}, {high:+.3f}], at {chosen.latency_ms:.1f} ms per image against {best.latency_ms:.1f}. "
              f"An ensemble trains a head only (its recipe is {ENSEMBLE_RECIPE}); fine-tuning one backbone may still "
              f"win: {single.command}")
    return Recommendation(chosen.backbone, command, reason)
