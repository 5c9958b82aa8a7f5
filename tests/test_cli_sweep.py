"""``tlkit sweep`` on the command line: the JSON contract, the table, --out files, the cache, and one
``error:`` line for bad input. Tiny images in tmp_path, timm's tiny random backbones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlkit.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--backbones", "timm:test_resnet,timm:test_efficientnet", "--no-pretrained", "--image-size", "32", "--folds", "3"]
ROW_KEYS = {"backbone", "accuracy", "ci", "balanced_accuracy", "diff_vs_best", "params", "feature_dim",
            "images_per_second", "latency_ms"}


def sweep(*args: str) -> object:
    return CliRunner().invoke(app, ["sweep", *args])


def one_error_line(result: object) -> str:
    """The one ``error:`` line, last on stderr (progress lines may come before it), and exit code 1."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert result.exit_code == 1 and errors == lines[-1:] and lines[-1].startswith("error: "), result.output
    return lines[-1]


@pytest.fixture
def cli_data(tiny_data: Path) -> Path:
    """3 classes x 10 images of 32 px (8 per class in train+val), shared read-only: the sweep never writes into DATA."""
    return tiny_data


def test_json_contract_and_files(cli_data: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    result = sweep(str(cli_data), *TINY, "--cache-dir", str(cache), "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["results"]
    assert [r["backbone"] for r in rows] and {r["backbone"] for r in rows} == {"timm:test_resnet", "timm:test_efficientnet"}
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert [r["accuracy"] for r in rows] == sorted((r["accuracy"] for r in rows), reverse=True)
    for r in rows:
        low, high = r["ci"]
        assert low <= r["accuracy"] <= high and high > low
        assert r["params"] > 0 and r["feature_dim"] > 0 and r["latency_ms"] > 0 and r["images_per_second"] > 0
    assert rows[0]["diff_vs_best"] == 0 and all(r["diff_vs_best"] <= 0 for r in rows)
    assert data["recommendation"].startswith(f"tlkit finetune {cli_data} --backbone ")
    assert data["recommended"] in data["recommendation"]
    assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]
    assert json.loads((out / "sweep.json").read_text())["results"] == rows
    again = json.loads(sweep(str(cli_data), *TINY, "--cache-dir", str(cache), "--json").stdout)
    assert [r["features_computed"] for r in again["results"]] == [0, 0]


def test_table_and_recommendation_line(cli_data: Path, tmp_path: Path) -> None:
    result = sweep(str(cli_data), *TINY, "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    assert "backbone sweep" in result.stdout and "timm:test_efficientnet" in result.stdout and "95% CI" in result.stdout
    assert f"recommended: tlkit finetune {cli_data} --backbone timm:test_" in result.stdout


def test_unknown_backbone(cli_data: Path) -> None:
    line = one_error_line(sweep(str(cli_data), "--backbones", "timm:test_resnet,efficientnet_lite00", "--no-pretrained"))
    assert "unknown backbone 'efficientnet_lite00'" in line and "efficientnet_lite0" in line and "tlkit backbones" in line


def test_offline_without_weights(cli_data: Path) -> None:
    line = one_error_line(sweep(str(cli_data), "--backbones", "resnet18", "--offline"))
    assert "offline mode is on" in line and "once with a network" in line and "efficientnet_lite0" in line


def test_folds_one(cli_data: Path) -> None:
    line = one_error_line(sweep(str(cli_data), "--backbones", "timm:test_resnet", "--no-pretrained", "--folds", "1"))
    assert "--folds must be a whole number of at least 2" in line


def test_more_folds_than_images(cli_data: Path) -> None:
    line = one_error_line(sweep(str(cli_data), "--backbones", "timm:test_resnet", "--no-pretrained", "--folds", "9"))
    assert "--folds 9" in line and "has 8: use --folds 8 or fewer" in line


def test_missing_folder(tmp_path: Path) -> None:
    line = one_error_line(sweep(str(tmp_path / "nope"), "--backbones", "timm:test_resnet", "--no-pretrained"))
    assert "nope" in line


def test_unreadable_image(cli_data: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(cli_data, data)
    (data / "red" / "broken.png").write_bytes(b"junk")
    line = one_error_line(sweep(str(data), "--backbones", "timm:test_resnet", "--no-pretrained", "--image-size", "32",
                                "--cache-dir", str(tmp_path / "cache")))
    assert "broken.png" in line


def test_help_lists_the_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "sweep" in result.stdout
