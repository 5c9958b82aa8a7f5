"""`tlkit backbones` and `tlkit recipes`: JSON for scripts, a clear line when nothing matches, no test models."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tlkit.cli import app


def test_backbones_json_and_no_match() -> None:
    result = CliRunner().invoke(app, ["backbones", "lite0", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert any(r["name"] == "timm:tf_efficientnet_lite0" for r in rows) and {"params", "weights"} <= set(rows[0])
    none = CliRunner().invoke(app, ["backbones", "no-such-backbone-xyz"])
    assert none.exit_code == 1 and "no backbone name contains 'no-such-backbone-xyz'" in none.stderr


def test_backbones_lists_the_three_packaged_backbones() -> None:
    result = CliRunner().invoke(app, ["backbones", "--json"])  # the popular set, no filter
    assert result.exit_code == 0, result.output
    packaged = [(r["alias"], r["name"], r["input_size"]) for r in json.loads(result.stdout) if r["weights"] == "packaged"]
    assert packaged == [("efficientnet_lite0", "timm:tf_efficientnet_lite0", 224), ("efficientnet_lite1", "timm:tf_efficientnet_lite1", 240),
                        ("efficientnet_lite2", "timm:tf_efficientnet_lite2", 260)]


def test_timm_test_models_only_when_asked() -> None:
    names = [r["name"] for r in json.loads(CliRunner().invoke(app, ["backbones", "resnet", "--json", "--limit", "2000"]).stdout)]
    assert "timm:test_resnet" not in names and "timm:resnet50" in names
    asked = CliRunner().invoke(app, ["backbones", "resnet", "--json", "--limit", "2000", "--include-tests"]).stdout
    assert "timm:test_resnet" in [r["name"] for r in json.loads(asked)]
    by_name = CliRunner().invoke(app, ["backbones", "test_res", "--json"]).stdout  # asking by name shows it
    assert [r["name"] for r in json.loads(by_name)] == ["timm:test_resnet"]


def test_recipes_json() -> None:
    result = CliRunner().invoke(app, ["recipes", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["default"] in data["recipes"] and "linear-probe" in data["recipes"]
