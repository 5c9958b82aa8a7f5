"""Flip test-time augmentation: the validation rule, what model.json and the report record, predict and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tlkit
import tlkit.train.tta as train_tta
from tlkit.models.tta import combine_views, tta_views
from tlkit.train.tta import tta_decision


def _onehot(pred: np.ndarray, classes: int = 3) -> np.ndarray:
    return np.eye(classes)[pred]


def test_decision_keeps_only_a_clear_gain() -> None:
    labels = np.arange(100) % 3
    plain = labels.copy()
    plain[:20] = (labels[:20] + 1) % 3  # 20 wrong without the flip
    clear = tta_decision(labels, _onehot(plain), _onehot(labels))  # the flip fixes all 20, breaks none
    assert clear["used"] and clear["interval"][0] > 0 and clear["only_tta_right"] == 20
    one = labels.copy()
    one[1:20] = plain[1:20]  # fixes 1: a point gain, not a clear one
    assert not tta_decision(labels, _onehot(plain), _onehot(one))["used"]
    same = tta_decision(labels, _onehot(plain), _onehot(plain))
    assert not same["used"] and same["gain"] == 0 and same["interval"][0] < 0 < same["interval"][1]
    assert "not kept" in same["reason"] and same["rule"].startswith("kept when")


def test_combined_views_average_calibrated_probabilities() -> None:
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    logits, probs = combine_views([a, b], 2.0)
    expected = (torch.softmax(a / 2, 1) + torch.softmax(b / 2, 1)) / 2
    assert torch.allclose(probs, expected) and torch.allclose(torch.softmax(logits / 2.0, 1), expected, atol=1e-6)
    images = torch.randn(2, 3, 4, 4)
    assert len(tta_views(images, {"used": False})) == 1
    assert torch.equal(tta_views(images, {"used": True})[1], images.flip(-1))


def _kwargs(tmp: Path, name: str) -> dict:
    return dict(backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8, epochs=3,
                out=str(tmp / name), cache_dir=str(tmp / "cache"), doctor=False, recipe="linear-probe")


@pytest.fixture(scope="module")
def kept_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> tlkit.FinetuneResult:  # noqa: ANN001
    """A --tta run whose validation comparison is made to say "kept" (tiny data: both views are alike)."""
    real = train_tta.tta_decision
    train_tta.tta_decision = lambda *a, **k: {**real(*a, **k), "used": True, "reason": "forced by the test"}
    try:
        return tlkit.finetune(tiny_data, tta=True, **_kwargs(tmp_path_factory.mktemp("tta"), "kept"))
    finally:
        train_tta.tta_decision = real


def test_kept_tta_is_recorded_and_applied_to_the_test_evaluation(kept_run: tlkit.FinetuneResult) -> None:
    meta = json.loads((kept_run.run_dir / "model.json").read_text())
    assert meta["tta"]["used"] and meta["tta"]["views"] == ["flip"] and "val_accuracy_tta" in meta["tta"]
    assert "used (image + flip, probabilities averaged)" in (kept_run.run_dir / "report.html").read_text()
    model = tlkit.load(kept_run.run_dir)
    assert model.tta["used"]
    # the run's test figures (cached flip views) are what predict gives on the images (image + its flip)
    predicted = model.predict(kept_run.manifest.paths("test"))
    assert np.abs(predicted.probs - kept_run.evaluation.probs).max() < 1e-4
    evaluated = tlkit.evaluate(kept_run.run_dir)
    assert np.abs(evaluated.probs - kept_run.evaluation.probs).max() < 1e-4


def test_predict_averages_the_image_and_its_flip(kept_run: tlkit.FinetuneResult) -> None:
    model = tlkit.load(kept_run.run_dir)
    batch = torch.stack([model.eval_transform()(tlkit.data.load_image(p)) for p in kept_run.manifest.paths("test")])
    with torch.inference_mode():
        expected = (model.probabilities(model(batch)) + model.probabilities(model(batch.flip(-1)))) / 2
    assert torch.allclose(torch.from_numpy(model.predict(batch).probs), expected, atol=1e-6)
    model.tta = {"used": False, "reason": "off"}
    with torch.inference_mode():
        assert torch.allclose(torch.from_numpy(model.predict(batch).probs), model.probabilities(model(batch)), atol=1e-6)


def test_not_kept_and_not_asked_are_recorded(tiny_data: Path, tmp_path: Path) -> None:
    result = tlkit.finetune(tiny_data, tta=True, **_kwargs(tmp_path, "tta"))
    tta = json.loads((result.run_dir / "model.json").read_text())["tta"]
    assert tta["used"] is False and "not kept" in tta["reason"] and tta["images"] == len(result.manifest.labels("val"))
    assert "not used: validation accuracy" in (result.run_dir / "report.html").read_text()
    plain = tlkit.finetune(tiny_data, **_kwargs(tmp_path, "plain"))
    assert json.loads((plain.run_dir / "model.json").read_text())["tta"] == {
        "used": False, "reason": "not asked for (tlkit finetune --tta)"}
    assert np.array_equal(plain.evaluation.probs, result.evaluation.probs)  # not kept: the plain answers


def test_a_corner_crop_zooms_into_its_corner() -> None:
    from tlkit.transforms import CROP_VIEWS, test_view

    image = torch.zeros(3, 10, 10)
    image[:, :2, :2] = 1.0  # a bright top-left corner
    tl, br = test_view(image, "crop-tl"), test_view(image, "crop-br")
    assert tl.shape == image.shape and tl[:, :2, :2].mean() > 0.9 and br.sum() == 0
    assert torch.equal(test_view(image.unsqueeze(0), "crop-tl")[0], tl)  # a batch gives each image's view
    assert len(tta_views(image.unsqueeze(0), {"used": True, "views": ["flip", *CROP_VIEWS]})) == 6
    with pytest.raises(tlkit.ConfigError, match="unknown test-time view"):
        test_view(image, "rotate")


def test_kept_corner_crops_are_what_predict_computes(tiny_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the set with the crops is kept: model.json lists them, and predict (views computed on the
    preprocessed batch) gives the run's test figures (views cached from the files)."""
    real = train_tta.tta_decision

    def crops_only(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        record = real(*args, **kwargs)
        return {**record, "used": len(record["views"]) > 1}

    monkeypatch.setattr(train_tta, "tta_decision", crops_only)
    run = tlkit.finetune(tiny_data, tta=True, **_kwargs(tmp_path, "crops"))
    meta = json.loads((run.run_dir / "model.json").read_text())["tta"]
    assert meta["used"] and meta["views"] == ["flip", "crop-tl", "crop-tr", "crop-bl", "crop-br"]
    assert [c["views"] for c in meta["candidates"]] == [["flip"], meta["views"]] and meta["level"] == 0.975
    predicted = tlkit.load(run.run_dir).predict(run.manifest.paths("test"))
    assert np.abs(predicted.probs - run.evaluation.probs).max() < 1e-4
