"""Grad-CAM and the look-inside tools, on a task where the right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 128
SQUARE = 40
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (40, 40, 230)}


def _make(folder: Path, n: int, seed: int) -> dict[str, tuple[int, int]]:
    """Grey noisy images with one coloured square at a random place; the colour is the class.

    The square carries the same noise as the background: a flat patch gives deep features
    nothing to respond to but its outline.
    """
    rng = np.random.default_rng(seed)
    where = {}
    for name, color in COLORS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.normal(128, 12, (SIZE, SIZE, 3))
            y, x = rng.integers(0, SIZE - SQUARE, 2)
            img[y:y + SQUARE, x:x + SQUARE] = np.array(color) + rng.normal(0, 12, (SQUARE, SQUARE, 3))
            path = folder / name / f"{i}.png"
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
            where[str(path)] = (int(y), int(x))
    return where


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # noqa: ANN001, ANN201
    import tlkit

    root = tmp_path_factory.mktemp("squares")
    _make(root / "data" / "train", 16, seed=1)
    _make(root / "data" / "val", 4, seed=2)
    test_where = _make(root / "data" / "test", 8, seed=3)
    result = tlkit.finetune(root / "data", backbone="efficientnet_lite0", recipe="linear-probe", image_size=SIZE,
                            out=str(root / "run"), cache_dir=str(root / "cache"), workers=0, offline=True)
    return result, test_where


def _inside(point: tuple[float, float], corner: tuple[int, int], margin: float) -> bool:
    """Is (y, x) inside the square at ``corner`` (its pixels' outer edges), grown by ``margin``?"""
    (py, px), (y, x) = point, corner
    return (y - 0.5 - margin <= py <= y + SQUARE - 0.5 + margin) and (x - 0.5 - margin <= px <= x + SQUARE - 0.5 + margin)


@pytest.mark.slow
def test_gradcam_peak_falls_on_the_square(trained) -> None:  # noqa: ANN001
    """After training, the heat map's peak (mapped back to original pixels) lands on the square.

    The peak is allowed half a feature-map cell around the square: the map has 8x8 cells at
    128 px, one cell is ~14 original pixels, and a uniform patch excites features most at its
    outline, so a peak on the border is on the square at the map's own resolution. The same peaks
    scored against another image's square (a shuffled control) must do far worse, so a
    coordinate mix-up (crop offset, x/y swapped, wrong scale) or a map that ignores the image fails.
    """
    from tlkit.models.explain import explain_many

    result, where = trained
    paths = sorted(where)
    explanations = explain_many(result.model, paths)
    assert {e.layer for e in explanations} == {"blocks.4"} and explanations[0].map_size == (8, 8)
    assert all(e.predicted == Path(p).parent.name for e, p in zip(explanations, paths))
    peaks = [e.peak_in_source() for e in explanations]
    cell = SIZE / explanations[0].map_size[0] * SIZE / result.model.preprocessing.resize_size
    hits = sum(_inside(peak, where[p], cell / 2) for peak, p in zip(peaks, paths))
    others = [where[p] for p in paths[len(paths) // 2:] + paths[:len(paths) // 2]]  # another colour's square
    chance = sum(_inside(peak, corner, cell / 2) for peak, corner in zip(peaks, others))
    assert hits >= 0.75 * len(paths), f"peak on the square for only {hits}/{len(paths)} test images"
    assert chance <= 0.45 * len(paths) and hits - chance >= 0.35 * len(paths), (hits, chance)


def test_input_to_source_undoes_resize_and_centre_crop() -> None:
    """A marked pixel, pushed through the real eval transform, maps back to where it was."""
    import torch

    from tlkit.models.explain import input_to_source
    from tlkit.transforms import Preprocessing, eval_transform

    pre = Preprocessing(64, 73, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear")
    for width, height, (y, x) in ((100, 60, (30, 70)), (50, 90, (45, 10)), (128, 128, (100, 17))):
        img = np.zeros((height, width, 3), np.uint8)
        img[y - 2:y + 3, x - 2:x + 3] = 255
        out = eval_transform(pre)(Image.fromarray(img))[0]
        assert out.shape == (64, 64)
        row, col = np.unravel_index(int(torch.argmax(out)), out.shape)
        back = input_to_source(row, col, (width, height), pre.resize_size, (64, 64))
        assert abs(back[0] - y) <= 2 and abs(back[1] - x) <= 2, (width, height, (y, x), back)


@pytest.mark.slow
def test_gradcam_is_a_normalised_map_at_input_size(trained) -> None:  # noqa: ANN001
    from tlkit.models.explain import explain

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
    from tlkit.models.explain import explain, write_overlays

    result, where = trained
    path = next(iter(where))
    exp = explain(result.model, path, class_name="blue")
    assert exp.class_name == "blue" and exp.overlay().shape == (SIZE, SIZE, 3)
    with pytest.raises(ConfigError, match="not one of the model's classes"):
        explain(result.model, path, class_name="purple")
    files = write_overlays(result.model, list(where)[:2], tmp_path / "cams")
    assert len(files) == 2 and all(f.stat().st_size > 0 for f in files)
    assert Image.open(files[0]).size == (2 * SIZE, SIZE)


def test_layer_choice_and_no_side_effects() -> None:
    """Default layer: the last group with a map of at least 7x7; names and indexes; clear errors."""
    import torch

    from tlkit.errors import ConfigError
    from tlkit.models.builder import build
    from tlkit.models.explain import gradcam
    from tlkit.models.heads import HeadSpec
    from tlkit.models.transfer import TransferModel

    bb = build("timm:test_resnet", pretrained=False)
    bb.freeze(0)
    model = TransferModel(bb, HeadSpec("linear", bb.feature_dim, 2), ["a", "b"]).train()
    image = torch.randn(3, 64, 64)
    heat, probs, index, size = gradcam(model, image)  # layer4 is 2x2 at 64 px, layer3 4x4, layer2 8x8
    assert bb.group_names[index] == "layer2" and size == (8, 8) and heat.shape == (64, 64)
    assert gradcam(model, torch.randn(3, 224, 224))[2] == bb.group_names.index("layer4")  # 7x7
    assert gradcam(model, image, 1, layer="layer4")[3] == (2, 2)
    assert gradcam(model, image, layer=-1)[2] == bb.num_groups - 1
    assert float(probs.sum()) == pytest.approx(1.0)
    assert model.training and all(p.grad is None for p in model.parameters())  # mode restored, no grads left
    with pytest.raises(ConfigError, match="'layer9' is not a layer group.*stem, layer1"):
        gradcam(model, image, layer="layer9")
    with pytest.raises(ConfigError, match="out of range"):
        gradcam(model, image, layer=12)


def test_cli_explain_prints_each_prediction_and_writes_captioned_figures(trained, tmp_path: Path) -> None:  # noqa: ANN001
    """tlkit explain says, per image, which class the map is for, its probability, the prediction and the
    layer; the PNG is a figure (image, overlay, colour bar) wider than the bare image pair."""
    from typer.testing import CliRunner

    from tlkit.cli import app
    from tlkit.report.gradcam import caption

    result, where = trained
    paths = sorted(where)[:2]
    res = CliRunner().invoke(app, ["explain", str(result.run_dir), *map(str, paths), "--out", str(tmp_path / "cams")])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "heat map for" in line]
    assert len(lines) == 2 and all("p = " in line and "layer " in line for line in lines)
    from tlkit.models.explain import explain

    exp = explain(result.model, paths[0])
    assert caption(exp) in lines[0] and exp.predicted in caption(exp)
    pngs = sorted((tmp_path / "cams").glob("*.gradcam.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size[0] > 2 * SIZE
