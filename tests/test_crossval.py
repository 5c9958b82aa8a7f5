"""Cross-validation of cached recipes (``--folds K``): folds of train+val, figures, the refit model, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import tlkit
import tlkit.train.feature_store as feature_store
from tlkit.cli import app
from tlkit.data import Manifest
from tlkit.errors import ConfigError, DataError
from tlkit.evaluation.crossval import t_interval
from tlkit.train.folds import fold_plan

FOLDS = 3


def _kwargs(tmp: Path, name: str) -> dict:
    return dict(backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8, epochs=3,
                out=str(tmp / name), cache_dir=str(tmp / "cache"), doctor=False, recipe="linear-probe")


@pytest.fixture(scope="module")
def runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict:  # noqa: ANN001
    """A 3-fold run (rows the backbone computed counted) and the same run without folds."""
    tmp = tmp_path_factory.mktemp("crossval")
    computed: list[int] = []
    real = feature_store.compute_features

    def counting(backbone, preprocessing, paths, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        computed.append(len(paths))
        return real(backbone, preprocessing, paths, *args, **kwargs)

    feature_store.compute_features = counting
    try:
        with_folds = tlkit.finetune(tiny_data, folds=FOLDS, **_kwargs(tmp, "folds"))
    finally:
        feature_store.compute_features = real
    plain = tlkit.finetune(tiny_data, **_kwargs(tmp, "plain"))
    return {"folds": with_folds, "plain": plain, "computed": computed, "tmp": tmp}


def test_out_of_fold_predictions_cover_train_and_val_once(runs: dict) -> None:
    result = runs["folds"]
    cv = json.loads((result.run_dir / "crossval.json").read_text())
    pooled = sorted(rel for split in ("train", "val") for rel, _ in result.manifest.splits[split])
    assert sorted(p["path"] for p in cv["predictions"]) == pooled  # each train+val image exactly once
    assert not {p["path"] for p in cv["predictions"]} & {rel for rel, _ in result.manifest.splits["test"]}
    assert cv["folds"] == FOLDS and sum(cv["fold_sizes"]) == len(pooled)
    assert np.array(cv["confusion_matrix"]).sum() == len(pooled)
    assert cv["pooled"]["images"] == len(pooled)
    for fold, accuracy in enumerate(cv["fold_accuracies"]):  # each fold's accuracy is its held-out predictions'
        rows = [p for p in cv["predictions"] if p["fold"] == fold]
        assert accuracy == pytest.approx(np.mean([p["label"] == p["predicted"] for p in rows]))
    assert cv["mean_accuracy"] == pytest.approx(np.mean(cv["fold_accuracies"]))


def test_intervals_contain_the_mean(runs: dict) -> None:
    cv = json.loads((runs["folds"].run_dir / "crossval.json").read_text())
    assert cv["interval"]["low"] <= cv["mean_accuracy"] <= cv["interval"]["high"]
    wilson = cv["pooled"]["wilson"]
    assert wilson["low"] <= cv["pooled"]["accuracy"] <= wilson["high"] and wilson["high"] - wilson["low"] > 0
    low, high = t_interval([0.7, 0.8, 0.9])
    assert low < 0.8 < high and high - low > 0
    assert t_interval([1.0, 1.0]) == (1.0, 1.0)  # equal folds: width 0 (the Wilson interval never is)


def test_refit_model_is_the_normal_run_and_is_saved(runs: dict) -> None:
    with_folds, plain = runs["folds"], runs["plain"]
    saved = load_file(str(with_folds.run_dir / "model.safetensors"))
    assert saved.keys() == load_file(str(plain.run_dir / "model.safetensors")).keys()
    for key, value in load_file(str(plain.run_dir / "model.safetensors")).items():
        assert torch.equal(saved[key], value), key  # the folds changed nothing of the final model
    for key, value in with_folds.model.state_dict().items():
        assert torch.equal(saved[key], value.cpu()), key
    assert with_folds.evaluation.accuracy == plain.evaluation.accuracy


def test_features_extracted_once_and_report_section(runs: dict) -> None:
    manifest = runs["folds"].manifest
    assert sum(runs["computed"]) == sum(len(v) for v in manifest.splits.values())  # every image once, no fold recomputes
    html = (runs["folds"].run_dir / "report.html").read_text()
    assert "Cross-validation (3 folds)" in html and "Pooled out-of-fold confusion matrix" in html
    assert (runs["folds"].run_dir / "crossval_confusion.png").is_file()
    assert not (runs["plain"].run_dir / "crossval.json").exists()


def test_folds_refused_on_resume_of_a_run_without_folds(runs: dict, tiny_data: Path) -> None:
    with pytest.raises(ConfigError, match="folds"):
        tlkit.finetune(tiny_data, resume=True, folds=FOLDS, out=str(runs["plain"].run_dir),
                       cache_dir=str(runs["tmp"] / "cache"))


@pytest.mark.parametrize("folds", [1, 0, -2, True])
def test_bad_folds_values(tiny_data: Path, tmp_path: Path, folds: object) -> None:
    with pytest.raises(ConfigError, match="folds must be a whole number"):
        tlkit.finetune(tiny_data, folds=folds, **_kwargs(tmp_path, "run"))
    assert not (tmp_path / "run").exists()


def test_more_folds_than_the_smallest_class_names_it(make_color_dataset, tmp_path: Path) -> None:  # noqa: ANN001
    data = make_color_dataset(tmp_path / "data", counts={"red": 10, "green": 10, "blue": 4})
    with pytest.raises(DataError, match="class 'blue' has"):
        tlkit.finetune(data, folds=6, **_kwargs(tmp_path, "run"))
    assert not (tmp_path / "run").exists()


def test_image_stages_refused_with_one_error_line(tiny_data: Path, tmp_path: Path) -> None:
    kwargs = _kwargs(tmp_path, "run")
    args = ["finetune", str(tiny_data), "--recipe", "full-finetune", "--folds", "3", "--backbone", kwargs["backbone"],
            "--no-pretrained", "--out", kwargs["out"], "--cache-dir", kwargs["cache_dir"], "--workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "stage 2 (finetune, unfreeze: all)" in lines[0] and "--recipe linear-probe" in lines[0] and "drop --folds" in lines[0]
    assert not (tmp_path / "run").exists()


def test_groups_stay_in_one_fold(tmp_path: Path) -> None:
    classes = ["a", "b"]
    items = [(f"{c}/p{g}_{i}.png", ci) for ci, c in enumerate(classes) for g in range(6) for i in range(3)]
    groups = {rel: rel.split("/")[1].split("_")[0] + rel[0] for rel, _ in items}
    manifest = Manifest(str(tmp_path), classes, {"train": items[::2], "val": items[1::2], "test": []}, "flat", 0,
                        0.15, 0.15, group_by="^(p\\d+)_", groups=groups)
    plan = fold_plan(manifest, 3, seed=0)
    assert plan.method == "stratified-group" and plan.k == 3
    fold_of_group: dict[str, set[int]] = {}
    for rel, fold in zip(plan.rel_paths, plan.fold_of):
        fold_of_group.setdefault(groups[rel], set()).add(int(fold))
    assert all(len(folds) == 1 for folds in fold_of_group.values())
    with pytest.raises(DataError, match="groups"):
        fold_plan(manifest, 13, seed=0)
