"""Every built-in recipe runs with every packaged backbone (real ImageNet weights that ship in a Python
package, with their own preprocessing: EfficientNet-Lite0's is bicubic), on tiny images, one epoch a stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlkit.config import list_recipes
from tlkit.models.pretrained import PACKAGED, availability
from tlkit.train.pipeline import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PACKAGED_BACKBONES = sorted(f"timm:{arch}" for arch in PACKAGED)


@pytest.mark.parametrize("backbone", PACKAGED_BACKBONES)
@pytest.mark.parametrize("recipe", sorted(list_recipes()))
def test_every_built_in_recipe_runs_with_every_packaged_backbone(recipe: str, backbone: str, tiny_data: Path,
                                                                 tmp_path: Path) -> None:
    from tlkit.models.registry import resolve

    assert availability(resolve(backbone)) == "packaged"
    result = finetune(tiny_data, backbone=backbone, recipe=recipe, epochs=1, image_size=32, workers=0, batch_size=8,
                      offline=True, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    assert result.model.backbone.weights_source.startswith("package:")
    assert len(result.history) == len(result.config.recipe.stages)  # one epoch in every stage
    assert result.evaluation is not None and 0.0 <= result.evaluation.accuracy <= 1.0
