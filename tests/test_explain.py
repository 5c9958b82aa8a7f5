"""Grad-CAM and the look-inside tools, on a task where the right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 128
SQUARE = 36
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (40, 40, 230)}


def _make(folder: Path, n: int, seed: int) -> dict[str, tuple[int, int]]:
    """Grey noisy images with one coloured square at a random place; the colour is the class."""
    rng = np.random.default_rng(seed)
    where = {}
    for name, color in COLORS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.normal(128, 12, (SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8)
            y, x = rng.integers(0, SIZE - SQUARE, 2)
            img[y:y + SQUARE, x:x + SQUARE] = color
            path = folder / name / f"{i}.png"
            Image.fromarray(img).save(path)
            where[str(path)] = (int(y), int(x))
    return where


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # noqa: ANN001, ANN201
    import tlkit

    root = tmp_path_factory.mktemp("squares")
    _make(root / "data" / "train", 16, seed=1)
    _make(root / "data" / "val", 4, seed=2)
    test_where = _make(root / "data" / "test", 6, seed=3)
    result = tlkit.finetune(root / "data", backbone="efficientnet_lite0", recipe="linear-probe", image_size=SIZE,
                            out=str(root / "run"), cache_dir=str(root / "cache"), workers=0, offline=True)
    return result, test_where


@pytest.mark.slow
def test_gradcam_is_a_normalised_map_at_input_size(trained) -> None:  # noqa: ANN001
    from tlkit.explain import explain

    result, where = trained
    pre = result.model.preprocessing
    for path in list(where)[:3]:
        exp = explain(result.model, path)
        assert exp.heatmap.shape == (pre.input_size, pre.input_size)
        assert exp.heatmap.min() == 0.0 and exp.heatmap.max() == 1.0
        assert exp.class_name == exp.predicted


@pytest.mark.slow
def test_explain_a_chosen_class_and_overlays(trained, tmp_path: Path) -> None:  # noqa: ANN001
    from tlkit.errors import ConfigError
    from tlkit.explain import explain, write_overlays

    result, where = trained
    path = next(iter(where))
    exp = explain(result.model, path, class_name="blue")
    assert exp.class_name == "blue" and exp.overlay().shape == (SIZE, SIZE, 3)
    with pytest.raises(ConfigError, match="not one of the model's classes"):
        explain(result.model, path, class_name="purple")
    files = write_overlays(result.model, list(where)[:2], tmp_path / "cams")
    assert len(files) == 2 and all(f.stat().st_size > 0 for f in files)
    assert Image.open(files[0]).size == (2 * SIZE, SIZE)


def test_summary_counts_match_the_libraries() -> None:
    import timm

    from tlkit.inspection import summarize_name

    s = summarize_name("efficientnet_lite0", num_classes=2)
    assert s.frozen_params == 3_371_008 and s.total_params == 3_373_570
    assert s.rows[-2].output_shape == (1, 1280) and s.rows[-1].output_shape == (1, 2)
    tiny = summarize_name("timm:test_resnet", num_classes=3, image_size=64, trainable_groups=2)
    model = timm.create_model("test_resnet", num_classes=0)
    assert tiny.total_params == sum(p.numel() for p in model.parameters()) + 96 * 3 + 3
    assert tiny.trainable_params == sum(r.params for r in tiny.rows[-4:])
    assert tiny.flops > 0


def test_feature_maps_and_filters() -> None:
    import torch

    from tlkit.backbones import build
    from tlkit.inspection import feature_maps, first_conv_filters

    bb = build("timm:test_resnet", pretrained=False)
    maps = feature_maps(bb, torch.randn(3, 64, 64), "layer1", top=8)
    assert maps.shape[0] == 8 and maps.ndim == 3
    filters = first_conv_filters(bb)
    assert filters.ndim == 4 and filters.shape[-1] == 3 and filters.min() >= 0 and filters.max() <= 1
