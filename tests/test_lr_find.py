"""``tlkit.lr_find`` and ``tlkit lr-find``: the curve's shape, the suggestion, the advice, the JSON contract,
the plot, the shared feature cache and one ``error:`` line for a recipe without a probe stage. Tiny images
in tmp_path, timm's tiny random backbone.

The random backbone's features are small, so its loss turns up only past the default end of the range
(10): the tests that need the blow-up sweep to 1e3.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tlkit
from tlkit.cli import app
from tlkit.errors import ConfigError
from tlkit.lrfind import LRFindResult
from tlkit.lrfind.rules import short, smooth, suggest, valley_index

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, device="cpu", workers=0, verbose=False)
CLI_TINY = ["-b", "timm:test_resnet", "--no-pretrained", "--image-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lr_find_cache")


@pytest.fixture(scope="module")
def found(tiny_data: Path, cache: Path) -> LRFindResult:
    """The linear probe's range test swept to 1e3, the first call on this cache."""
    return tlkit.lr_find(tiny_data, recipe="linear-probe", cache_dir=str(cache), end_lr=1e3, **TINY)


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


def test_curve_falls_then_blows_up(found: LRFindResult) -> None:
    assert found.stopped == "diverged" and 10 < len(found.lrs) < 100
    assert len(found.lrs) == len(found.losses) == len(found.smoothed)
    assert found.lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(found.lrs, found.lrs[1:]))
    lowest = min(found.smoothed)
    assert lowest < 0.8 * found.smoothed[0]  # it falls ...
    assert found.smoothed[-1] > 4 * min(found.smoothed[:-1])  # ... then blows up, where the test stops
    assert found.smoothed.index(lowest) < len(found.smoothed) - 1
    assert all(math.isfinite(v) for v in found.losses)


def test_suggestion_in_range_and_deterministic(found: LRFindResult, tiny_data: Path, cache: Path) -> None:
    low = found.lrs[found.smoothed.index(max(found.smoothed[:10]))]
    assert found.lrs[0] <= found.suggested <= found.lrs[-1] and found.rule == "valley"
    assert low < found.suggested < found.suggestions.min_loss  # on the falling part, below the minimum
    assert found.suggestions.min_loss_over_10 == pytest.approx(found.suggestions.min_loss / 10)
    assert found.lrs[0] <= found.suggestions.steepest <= found.lrs[-1]
    again = tlkit.lr_find(tiny_data, recipe="linear-probe", cache_dir=str(cache), end_lr=1e3, **TINY)
    assert (again.lrs, again.losses, again.suggested) == (found.lrs, found.losses, found.suggested)
    other = tlkit.lr_find(tiny_data, recipe="linear-probe", cache_dir=str(cache), end_lr=1e3, seed=1, **TINY)
    assert other.losses != found.losses  # another split, head and batch order


def test_second_call_reads_the_cache(found: LRFindResult, tiny_data: Path, cache: Path) -> None:
    assert found.features_computed == found.images == 18  # 3 classes x 6 training images
    before = entries(cache)
    again = tlkit.lr_find(tiny_data, recipe="probe-then-finetune", cache_dir=str(cache), **TINY)
    assert again.features_computed == 0 and entries(cache) == before


def test_finetune_and_lr_find_share_the_entry(tiny_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tlkit.finetune(tiny_data, recipe="linear-probe", epochs=1, doctor=False, out=str(tmp_path / "run"),
                   cache_dir=str(cache), **TINY)
    before = entries(cache)
    result = tlkit.lr_find(tiny_data, recipe="linear-probe", cache_dir=str(cache), **TINY)
    assert result.features_computed == 0 and entries(cache) == before


def test_far_when_the_recipe_rate_is_1000x_off(found: LRFindResult, tiny_data: Path, cache: Path) -> None:
    high = tlkit.lr_find(tiny_data, recipe="linear-probe", cache_dir=str(cache), end_lr=1e3,
                         lr=found.suggested * 1000, **TINY)
    assert high.far and high.recipe_lr == pytest.approx(found.suggested * 1000)
    assert "too high" in high.advice and high.option == f"--lr {short(high.suggested)}" and high.option in high.advice
    low = tlkit.lr_find(tiny_data, recipe="probe-then-finetune", cache_dir=str(cache), end_lr=1e3,
                        **{"stages.0.lr": found.suggested / 1000}, **TINY)
    assert low.far and "too low" in low.advice and low.option == f"--set stages.0.lr={short(low.suggested)}"
    assert low.override == {"stages.0.lr": float(short(low.suggested))}
    near = tlkit.lr_find(tiny_data, recipe="linear-probe", cache_dir=str(cache), end_lr=1e3,
                         lr=found.suggested * 2, **TINY)
    assert not near.far and "keep it" in near.advice


def test_plot(found: LRFindResult, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from tlkit.lrfind import write_lr_plot

    ax = Figure().add_subplot()
    display = found.plot(ax)
    assert display.ax_ is ax and ax.get_xscale() == "log"
    assert any("suggested" in t.get_text() for t in ax.get_legend().get_texts())
    path = write_lr_plot(found, tmp_path / "plots" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_and_plot(tiny_data: Path, cache: Path, tmp_path: Path) -> None:
    files = sorted((p, p.stat().st_mtime_ns) for p in tiny_data.rglob("*"))
    plot = tmp_path / "lr.png"
    result = CliRunner().invoke(app, ["lr-find", str(tiny_data), *CLI_TINY, "--recipe", "linear-probe",
                                      "--cache-dir", str(cache), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"suggested", "rule", "suggestions", "recipe_lr", "far", "advice", "option", "lrs", "losses",
            "smoothed", "features_computed"} <= set(data)
    assert data["recipe_lr"] == 0.002 and data["rule"] == "valley" and len(data["lrs"]) == data["steps"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted((p, p.stat().st_mtime_ns) for p in tiny_data.rglob("*")) == files  # nothing written into DATA
    text = CliRunner().invoke(app, ["lr-find", str(tiny_data), *CLI_TINY, "--cache-dir", str(cache)])
    assert text.exit_code == 0, text.output
    assert "suggested learning rate:" in text.stdout and "recipe's learning rate:  2e-3" in text.stdout
    assert "advice: the recipe's rate 2e-3" in text.stdout


def test_recipe_without_a_probe_stage(tiny_data: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "ft-only.yaml"
    recipe.write_text("stages:\n  - kind: finetune\n    unfreeze: all\n")
    result = CliRunner().invoke(app, ["lr-find", str(tiny_data), *CLI_TINY, "--recipe", str(recipe)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "recipe 'ft-only' has no probe stage" in lines[0] and "linear-probe" in lines[0]


def test_bad_range() -> None:
    with pytest.raises(ConfigError, match="end_lr"):
        tlkit.lr_find("nowhere", start_lr=1.0, end_lr=0.1)


def test_valley_skips_a_flat_start() -> None:
    """One batch holds the whole split: the start falls by a hair every step; the valley is the real fall."""
    lrs = [1e-7 * 10 ** (i * 8 / 99) for i in range(100)]
    losses = [1.1 - 1e-5 * i if i < 60 else 1.1 - 0.03 * (i - 60) if i < 85 else 0.35 + 0.2 * (i - 85) for i in range(100)]
    assert valley_index(losses) < 60  # fastai's rule as written lands on the plateau
    suggested = suggest(lrs, smooth(losses, beta=0.0), 100).suggested
    assert lrs[60] < suggested < lrs[85]


def test_public_names() -> None:
    from tlkit.lrfind import runner

    assert tlkit.lr_find is runner.lr_find and "lr_find" in dir(tlkit) and tlkit.LRFindResult is LRFindResult
