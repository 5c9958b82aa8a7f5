"""The backbone sweep (issue 17.2) from Python: ranking, intervals, the cache, the recommendation rule,
which backbones by default, files, and bad input. Tiny images in tmp_path, timm's tiny random backbones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit.errors import BackboneError, ConfigError, WeightsError
from tlkit.selection import BackboneScore, SweepResult, write_sweep_report
from tlkit.selection.candidates import available_here, choose, known_names, parse_names
from tlkit.selection.result import MAX_ACCURACY_DROP, rank, recommend

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_BACKBONES = "timm:test_resnet,timm:test_efficientnet,timm:test_vit"
TINY = dict(backbones=TINY_BACKBONES, pretrained=False, image_size=32, folds=3)
#: close colours under heavy noise: some random backbones separate them, some do not
HARD_COLORS = {"a": (130, 100, 100), "b": (100, 130, 100), "c": (100, 100, 130)}


def hard_dataset(root: Path, n: int = 10, size: int = 40) -> Path:
    """root/<class>/iNN.png: ``n`` noisy images of 40 px per class."""
    for ci, (name, color) in enumerate(HARD_COLORS.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng(100 * ci + i)
            noise = rng.integers(-70, 71, (size, size, 3))
            Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(root / name / f"i{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SweepResult]:
    base = tmp_path_factory.mktemp("sweep")
    data = hard_dataset(base / "data")
    return data, base / "cache", tlkit.sweep(data, cache_dir=base / "cache", **TINY)


def test_ranked_best_first_with_intervals(swept: tuple[Path, Path, SweepResult]) -> None:
    _, _, result = swept
    rows = result.results
    assert [r.canonical for r in rows] and {r.canonical for r in rows} == set(TINY_BACKBONES.split(","))
    assert [r.rank for r in rows] == [1, 2, 3]
    assert [r.accuracy for r in rows] == sorted((r.accuracy for r in rows), reverse=True)
    for r in rows:
        low, high = r.ci
        assert low <= r.accuracy <= high and high - low > 0
        assert r.accuracy == pytest.approx(np.mean(r.fold_accuracies), abs=0.05)  # equal-sized folds
        assert 0 <= r.balanced_accuracy <= 1 and r.params > 0 and r.feature_dim > 0 and r.input_size == 32
        assert r.latency_ms > 0 and r.images_per_second > 0 and r.images_per_second_source == "measured now"
        assert r.features_computed == sum(result.counts.values())
    assert rows[0].diff_vs_best == 0 and rows[0].diff_ci is None
    for r in rows[1:]:
        low, high = r.diff_ci
        assert low <= r.diff_vs_best <= high and high - low > 0 and r.diff_vs_best <= 0
        assert r.significantly_worse == (high < 0)


def test_train_and_val_only_and_recommendation(swept: tuple[Path, Path, SweepResult]) -> None:
    data, _, result = swept
    assert result.counts == {"a": 8, "b": 8, "c": 8}  # 10 per class: 6 train + 2 val; the 2 test images stay unseen
    assert result.settings["splits"] == ["train", "val"] and result.folds == 3
    command = result.recommendation.command
    assert command.startswith(f"tlkit finetune {data} --backbone ") and result.recommendation.backbone in command
    assert result.recommendation.backbone in [r.backbone for r in result.results]


def test_second_sweep_reads_the_cache(swept: tuple[Path, Path, SweepResult]) -> None:
    data, cache, first = swept
    again = tlkit.sweep(data, cache_dir=cache, **TINY)
    assert [r.features_computed for r in again.results] == [0, 0, 0]
    by_name = {r.canonical: r for r in first.results}
    for r in again.results:
        assert r.accuracy == by_name[r.canonical].accuracy and r.ci == by_name[r.canonical].ci
        assert r.images_per_second_source == "earlier measurement"
        assert r.images_per_second == pytest.approx(by_name[r.canonical].images_per_second)
    # features cached by another command leave no measurement: a small uncached sample is timed
    (cache / "sweep-throughput.json").unlink()
    sampled = tlkit.sweep(data, cache_dir=cache, **{**TINY, "backbones": "timm:test_resnet"}).best
    assert sampled.features_computed == 0 and sampled.images_per_second > 0
    assert sampled.images_per_second_source == "measured now on 24 images"


def test_default_backbones_are_those_with_weights_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = available_here()
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= {c.name for c in found}  # packaged
    assert all(c.availability in ("packaged", "cached") for c in found)
    assert [c.name for c in choose(None)] == [c.name for c in found]
    assert known_names().count("efficientnet_lite0") == 1 and "timm:tf_efficientnet_lite0" not in known_names()
    # an architecture that gains packaged weights joins the default sweep, with nothing to edit here
    from types import SimpleNamespace

    from tlkit.models import pretrained

    weights = tmp_path / "lite3.pth"
    weights.write_bytes(b"x")
    monkeypatch.setitem(pretrained.PACKAGED, "tf_efficientnet_lite3", SimpleNamespace(locate=lambda: weights))
    assert "timm:tf_efficientnet_lite3" in [c.name for c in available_here()]


def test_named_backbones_parsed_and_deduplicated() -> None:
    assert parse_names(" a, b ,,") == ["a", "b"] and parse_names(None) is None
    chosen = choose("efficientnet_lite0,timm:tf_efficientnet_lite0,timm:test_resnet", pretrained=False)
    assert [c.name for c in chosen] == ["efficientnet_lite0", "timm:test_resnet"]
    with pytest.raises(ConfigError, match="--backbones"):
        parse_names(" , ")


def test_unknown_backbone_names_close_matches(tiny_data: Path) -> None:
    with pytest.raises(BackboneError, match="efficientnet_lite0.*tlkit backbones"):
        tlkit.sweep(tiny_data, backbones="efficientnet_lite00", pretrained=False)


def test_offline_backbone_without_weights(tiny_data: Path) -> None:
    with pytest.raises(WeightsError, match="resnet18 has no weights here and offline mode is on.*--backbones"):
        tlkit.sweep(tiny_data, backbones="efficientnet_lite0,resnet18", offline=True)


@pytest.mark.parametrize("folds", [1, 0, True, 2.5])
def test_folds_below_two(tiny_data: Path, folds: object) -> None:
    with pytest.raises(ConfigError, match="--folds must be a whole number of at least 2"):
        tlkit.sweep(tiny_data, backbones="timm:test_resnet", pretrained=False, folds=folds)


def test_more_folds_than_the_smallest_class(tmp_path: Path, make_color_dataset) -> None:  # noqa: ANN001
    data = make_color_dataset(tmp_path / "data", {"red": 10, "green": 10, "blue": 5})  # blue: 4 train+val (1 test)
    with pytest.raises(ConfigError, match=r"--folds 5 .* class 'blue' has 4: use --folds 4 or fewer"):
        tlkit.sweep(data, backbones="timm:test_resnet", pretrained=False, image_size=32)


def score(name: str, accuracy: float, latency: float, diff_ci: tuple[float, float] | None = None) -> BackboneScore:
    s = BackboneScore(backbone=name, canonical=f"timm:{name}", accuracy=accuracy, ci=(accuracy - 0.05, accuracy + 0.05),
                      fold_accuracies=[accuracy], balanced_accuracy=accuracy, params=1, feature_dim=8, input_size=32,
                      images_per_second=100.0, images_per_second_source="measured now", latency_ms=latency,
                      weights_source="none", features_computed=0)
    if diff_ci is not None:
        s.diff_vs_best, s.diff_ci, s.significantly_worse = -0.01, diff_ci, diff_ci[1] < 0
    return s


def test_recommendation_rule() -> None:
    slow_best, fast_tied = score("big", 0.90, 30.0), score("small", 0.89, 5.0, (-0.05, 0.03))
    ranked = rank([fast_tied, slow_best])
    assert [s.backbone for s in ranked] == ["big", "small"]
    tied = recommend(ranked, "data")
    assert tied.backbone == "small" and tied.command == "tlkit finetune data --backbone small"
    assert "not significantly better" in tied.reason and "tlkit finetune data --backbone big" in tied.reason
    worse = score("small", 0.89, 5.0, (-0.05, -0.001))  # significantly worse: the best stays
    assert recommend(rank([slow_best, worse]), "data").backbone == "big"
    too_far = score("small", 0.90 - MAX_ACCURACY_DROP - 0.01, 5.0, (-0.2, 0.01))  # not significant, but too far behind
    assert recommend(rank([slow_best, too_far]), "data").backbone == "big"
    barely_faster = score("small", 0.89, 28.0, (-0.05, 0.03))
    assert recommend(rank([slow_best, barely_faster]), "my data", image_size=64, seed=3).command == \
        "tlkit finetune 'my data' --backbone big --image-size 64 --seed 3"


def test_report_files(swept: tuple[Path, Path, SweepResult], tmp_path: Path) -> None:
    _, _, result = swept
    written = write_sweep_report(result, tmp_path / "out")
    assert sorted(p.name for p in written) == ["sweep.csv", "sweep.json", "sweep.png"]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["results"][0]["backbone"] == result.best.backbone
    lines = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("rank,backbone,canonical,accuracy,ci_low,ci_high") and len(lines) == 4
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_public_name() -> None:
    from tlkit.selection import runner

    assert tlkit.sweep is runner.sweep and "sweep" in dir(tlkit)
