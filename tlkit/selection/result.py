"""What a backbone sweep found: one typed row per backbone, ranked best first, and the recommendation.

Plain dataclasses with ``to_dict()`` (the JSON contract of ``tlkit sweep --json``); nothing here
computes or draws. The ranking and the recommendation rule live in :func:`rank` and :func:`recommend`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

#: a backbone the best does not beat significantly is recommended instead of the best only if it
#: also loses at most this much accuracy (a point estimate, 0.02 = 2 points) ...
MAX_ACCURACY_DROP = 0.02
#: ... and predicts at least this many times faster (per-image latency of backbone + head)
MIN_SPEEDUP = 1.2


@dataclass
class BackboneScore:
    """One backbone's out-of-fold linear-probe scores and its costs on this machine."""

    backbone: str  # the name as listed or given (an alias where there is one): what --backbone takes
    canonical: str  # the registry's name (tv:..., timm:...)
    accuracy: float  # pooled out-of-fold accuracy over every train+val image
    ci: tuple[float, float]  # 95% Wilson interval of ``accuracy``
    fold_accuracies: list[float]
    balanced_accuracy: float  # mean per-class recall of the out-of-fold predictions
    params: int  # parameters of the backbone (as ``tlkit backbones`` counts them)
    feature_dim: int
    input_size: int
    images_per_second: float  # feature extraction throughput (see ``images_per_second_source``)
    images_per_second_source: str  # "measured now", "earlier measurement" or "measured now on N images" (a sample)
    latency_ms: float  # median batch-1 forward of backbone + linear head
    weights_source: str
    features_computed: int  # images that went through the backbone in this call (0: all from the cache)
    diff_vs_best: float = 0.0  # accuracy - the best's, on the same out-of-fold images
    diff_ci: tuple[float, float] | None = None  # Newcombe paired 95% interval of ``diff_vs_best`` (None: the best)
    significantly_worse: bool = False  # ``diff_ci`` lies below 0
    rank: int = 0  # 1 = best

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "backbone": self.backbone, "canonical": self.canonical,
            "accuracy": self.accuracy, "ci": list(self.ci), "fold_accuracies": list(self.fold_accuracies),
            "balanced_accuracy": self.balanced_accuracy, "diff_vs_best": self.diff_vs_best,
            "diff_ci": list(self.diff_ci) if self.diff_ci is not None else None,
            "significantly_worse": self.significantly_worse, "params": self.params, "feature_dim": self.feature_dim,
            "input_size": self.input_size, "images_per_second": self.images_per_second,
            "images_per_second_source": self.images_per_second_source, "latency_ms": self.latency_ms,
            "weights_source": self.weights_source, "features_computed": self.features_computed,
        }


@dataclass
class Recommendation:
    """Which backbone to fine-tune, the command to paste, and why."""

    backbone: str
    command: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"backbone": self.backbone, "command": self.command, "reason": self.reason}


@dataclass
class SweepResult:
    """Every backbone's scores, ranked best first, and the recommendation."""

    root: str
    classes: list[str]
    counts: dict[str, int]  # train+val images per class (what the probes see)
    folds: int
    results: list[BackboneScore]
    recommendation: Recommendation
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: :class:`tlkit.selection.ensembles.EnsembleScore` per ensemble of the top backbones scored
    ensembles: list[Any] = field(default_factory=list)

    @property
    def best(self) -> BackboneScore:
        return self.results[0]

    def to_dict(self) -> dict[str, Any]:
        """The ``tlkit sweep --json`` object: ``results`` ranked best first, ``recommendation`` the command line."""
        return {
            "results": [r.to_dict() for r in self.results],
            "recommendation": self.recommendation.command,
            "recommended": self.recommendation.backbone,
            "recommendation_reason": self.recommendation.reason,
            "root": self.root, "classes": list(self.classes), "counts": dict(self.counts), "folds": self.folds,
            "settings": dict(self.settings), "timings": dict(self.timings), "warnings": list(self.warnings),
            "ensembles": [e.to_dict() for e in self.ensembles],
        }


def rank(scores: list[BackboneScore]) -> list[BackboneScore]:
    """Best first: accuracy, then balanced accuracy, then the faster, then the name; ``rank`` set from 1."""
    ordered = sorted(scores, key=lambda s: (-s.accuracy, -s.balanced_accuracy, s.latency_ms, s.backbone))
    for position, score in enumerate(ordered, start=1):
        score.rank = position
    return ordered


def finetune_command(data: str, backbone: str, *, image_size: int | None = None, seed: int = 0) -> str:
    """``tlkit finetune DATA --backbone X`` (with the sweep's image size and split seed when not the default)."""
    parts = ["tlkit", "finetune", data, "--backbone", backbone]
    if image_size is not None:
        parts += ["--image-size", str(image_size)]
    if seed:
        parts += ["--seed", str(seed)]
    return shlex.join(parts)


def recommend(ranked: list[BackboneScore], data: str, *, image_size: int | None = None, seed: int = 0) -> Recommendation:
    """The rule: the most accurate backbone, unless a faster one is as good.

    A backbone is *as good* when the paired interval of its difference to the best reaches 0 (not
    significantly worse on the same out-of-fold images) and it loses at most :data:`MAX_ACCURACY_DROP`.
    Among those, the fastest (lowest ``latency_ms``) is recommended when it is at least
    :data:`MIN_SPEEDUP` times faster than the best; otherwise the best is.
    """
    best = ranked[0]
    tied = [s for s in ranked[1:] if not s.significantly_worse and best.accuracy - s.accuracy <= MAX_ACCURACY_DROP]
    fastest = min(tied, key=lambda s: (s.latency_ms, s.rank), default=None)
    if fastest is not None and fastest.latency_ms * MIN_SPEEDUP <= best.latency_ms:
        low, high = fastest.diff_ci or (0.0, 0.0)
        reason = (f"{best.backbone} is the most accurate ({best.accuracy:.3f}), but not significantly better than "
                  f"{fastest.backbone} ({fastest.accuracy:.3f}; difference {fastest.diff_vs_best:+.3f}, 95% CI "
                  f"[{low:+.3f}, {high:+.3f}]), which is {best.latency_ms / fastest.latency_ms:.1f}x faster "
                  f"({fastest.latency_ms:.1f} ms against {best.latency_ms:.1f} ms per image): {fastest.backbone} "
                  "for the speed, or " + finetune_command(data, best.backbone, image_size=image_size, seed=seed)
                  + " for the last bit of accuracy")
        chosen = fastest
    else:
        chosen = best
        if len(ranked) == 1:
            reason = f"{best.backbone} is the only backbone swept ({best.accuracy:.3f})"
        elif tied:
            reason = (f"{best.backbone} is the most accurate ({best.accuracy:.3f}); "
                      f"{', '.join(s.backbone for s in tied)} not significantly worse, but none is at least "
                      f"{MIN_SPEEDUP}x faster")
        else:
            reason = (f"{best.backbone} is the most accurate ({best.accuracy:.3f}); every other backbone swept is "
                      f"significantly worse on the same images or more than {MAX_ACCURACY_DROP:.2f} behind")
    return Recommendation(chosen.backbone, finetune_command(data, chosen.backbone, image_size=image_size, seed=seed),
                          reason)
