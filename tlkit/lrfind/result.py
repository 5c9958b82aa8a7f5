"""What an LR range test found: the curve, the suggestion, the recipe's own rate and the advice.

A plain dataclass with ``to_dict()`` (the JSON contract of ``tlkit lr-find --json``); nothing here
computes the curve. ``plot(ax=None)`` hands the numbers to :class:`tlkit.lrfind.display.LRFindDisplay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tlkit.lrfind.rules import RULE, Suggestions, short


@dataclass
class LRFindResult:
    """One LR range test of a recipe's probe stage on the cached features of the training split.

    ``lrs[i]`` is the rate of step ``i``, ``losses[i]`` its mini-batch loss and ``smoothed[i]`` the
    bias-corrected moving average up to it. ``suggested`` is read off ``smoothed`` by :data:`RULE`
    (fastai's 'valley'); ``suggestions`` also has the steepest fall and the minimum / 10. ``far``:
    the recipe's rate is more than 10x above or below the suggestion; ``option`` is what sets the
    suggested rate for ``tlkit finetune``, ``override`` the same as a ``tlkit.finetune`` keyword.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: Suggestions
    recipe_lr: float  # the rate the recipe (with the options given) trains this stage at
    far: bool
    advice: str
    option: str  # e.g. "--lr 3.2e-3" or "--set stages.0.lr=3.2e-3"
    override: dict[str, float]  # e.g. {"stages.0.lr": 0.0032}
    stopped: str  # why the sweep ended: "diverged", "non-finite loss" or "end of range"
    backbone: str
    recipe: str
    stage_index: int
    stage_kind: str
    images: int  # training images the features are of
    features_computed: int  # of them, how many went through the backbone in this call (0: all cached)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def suggested(self) -> float:
        """The suggested learning rate (:data:`RULE`)."""
        return self.suggestions.suggested

    @property
    def rule(self) -> str:
        return RULE

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggested": self.suggested, "rule": self.rule, "suggestions": self.suggestions.to_dict(),
            "recipe_lr": self.recipe_lr, "far": self.far, "advice": self.advice, "option": self.option,
            "override": dict(self.override), "stopped": self.stopped, "backbone": self.backbone,
            "recipe": self.recipe, "stage_index": self.stage_index, "stage_kind": self.stage_kind,
            "images": self.images, "features_computed": self.features_computed, "steps": len(self.lrs),
            "lrs": list(self.lrs), "losses": list(self.losses), "smoothed": list(self.smoothed),
            "settings": dict(self.settings), "timings": dict(self.timings), "warnings": list(self.warnings),
        }

    def plot(self, ax: Any = None) -> Any:
        """Draw the curve (log-x; the suggestion and the recipe's rate marked) onto ``ax`` (default: a new
        figure); returns the :class:`~tlkit.lrfind.display.LRFindDisplay` (its ``ax_``, ``figure_``)."""
        from tlkit.lrfind.display import LRFindDisplay

        return LRFindDisplay.from_result(self).plot(ax)

    def __repr__(self) -> str:
        return (f"LRFindResult(suggested={short(self.suggested)} ({self.rule}), recipe_lr={short(self.recipe_lr)}, "
                f"far={self.far}, steps={len(self.lrs)}, stopped={self.stopped!r})")
