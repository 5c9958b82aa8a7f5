"""Two-class results: ROC / PR curves (scikit-learn's numbers), the positive-class rule, a threshold chosen on
validation and kept in model.json, used by predict, evaluate, the report and the export sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import tlkit
from tlkit.errors import ConfigError
from tlkit.evaluation.binary import choose_threshold, positive_class, rates_at
from tlkit.evaluation.curve_display import PrecisionRecallDisplay, RocCurveDisplay
from tlkit.evaluation.metrics import evaluate_predictions
from tlkit.report.files import write_report


def _scores(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, np.c_[1 - p, p]


def test_roc_auc_and_average_precision_are_sklearns() -> None:
    y, probs = _scores()
    result = evaluate_predictions(y, probs, ["good", "defect"], n_bootstrap=0)
    assert result.binary.positive == "defect" and result.binary.positive_index == 1
    assert result.binary.roc_auc == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert result.binary.average_precision == pytest.approx(average_precision_score(y, probs[:, 1]))
    # positive first in the class list: the curves are on its own column
    flipped = evaluate_predictions(1 - y, probs[:, ::-1], ["bad", "ok"], n_bootstrap=0)
    assert flipped.binary.positive == "bad"
    assert flipped.binary.roc_auc == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert evaluate_predictions([0, 1, 2], np.eye(3), ["a", "b", "c"], n_bootstrap=0).binary is None


def test_positive_class_rule() -> None:
    assert positive_class(["good", "scratch_defect"])[0] == 1
    assert positive_class(["NG", "OK"])[0] == 0
    assert positive_class(["badge", "cat"], [10, 3])[0] == 1  # "badge" is not "bad": minority wins
    assert positive_class(["cat", "dog"], [5, 5])[0] == 1  # a tie: the second class
    assert positive_class(["defect", "good"], given="good") == (1, "given")
    with pytest.raises(ConfigError, match="not one of the classes"):
        positive_class(["a", "b"], given="c")


def test_threshold_reaches_target_recall_and_precision() -> None:
    y, probs = _scores(200, seed=3)
    for target in (0.5, 0.8, 0.95, 1.0):
        chosen = choose_threshold(y, probs[:, 1], target_recall=target)
        assert rates_at(y, probs[:, 1], chosen["threshold"])["recall"] >= target
        # the highest such threshold: a hair above it the recall drops below the target
        assert rates_at(y, probs[:, 1], np.nextafter(chosen["threshold"], 2))["recall"] < target
    chosen = choose_threshold(y, probs[:, 1], target_precision=0.8)
    assert chosen["reached"] and rates_at(y, probs[:, 1], chosen["threshold"])["precision"] >= 0.8


def test_threshold_changes_the_predictions_and_the_report(tmp_path: Path) -> None:
    y, probs = _scores()
    plain = evaluate_predictions(y, probs, ["good", "defect"], n_bootstrap=0)
    low = evaluate_predictions(y, probs, ["good", "defect"], n_bootstrap=0, threshold=0.2)
    assert np.array_equal(plain.y_pred, probs.argmax(1))
    assert np.array_equal(low.y_pred, (probs[:, 1] >= 0.2).astype(int))
    assert low.binary.at_threshold["recall"] >= low.binary.at_argmax["recall"]
    roc = RocCurveDisplay.from_result(low)
    assert [p[0] for p in roc.points] == ["threshold 0.2", "argmax (default)"]
    assert roc.points[0][1:] == (low.binary.at_threshold["false_positive_rate"], low.binary.at_threshold["recall"])
    assert PrecisionRecallDisplay.from_result(low).average_precision == low.binary.average_precision
    written = write_report(low, tmp_path / "r")
    page = written["report.html"].read_text(encoding="utf-8")
    assert "roc.png" in written and "precision_recall.png" in written
    assert "Positive class: defect" in page and "threshold 0.2" in page and "instead of" in page
    assert json.loads(written["metrics.json"].read_text())["binary"]["threshold"] == 0.2


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> tlkit.FinetuneResult:
    from conftest import _make_color_dataset

    root = tmp_path_factory.mktemp("binary")
    data = _make_color_dataset(root / "parts", {"good": 24, "defect": 12}, size=24)
    return tlkit.finetune(data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0,
                          batch_size=8, recipe="linear-probe", epochs=3, out=str(root / "run"),
                          cache_dir=str(root / "cache"), target_recall=0.9, doctor=False)


def test_run_chooses_the_threshold_on_validation_and_predict_uses_it(binary_run: tlkit.FinetuneResult) -> None:
    decision = json.loads((binary_run.run_dir / "model.json").read_text())["decision"]
    assert decision["positive"] == "defect" and decision["chosen_for"] == "recall >= 0.9 on validation"
    assert decision["val_recall"] >= 0.9
    # recomputed from the validation split's calibrated probabilities: the recall reached is what was stored
    model = tlkit.load(binary_run.run_dir)
    m = binary_run.manifest
    val = model.predict(m.paths("val"))
    positive = model.classes.index("defect")
    y = np.array(m.labels("val"))
    assert rates_at(y, val.probs[:, positive], decision["threshold"], positive=positive)["recall"] >= 0.9
    test = model.predict(m.paths("test"))
    expected = ["defect" if p >= decision["threshold"] else "good" for p in test.probs[:, positive]]
    assert test.labels == expected and test.threshold == decision["threshold"]
    assert binary_run.evaluation.binary.threshold == decision["threshold"]
    assert "named like a finding" in binary_run.evaluation.binary.positive_rule
    evaluated = tlkit.evaluate(binary_run.run_dir, n_bootstrap=0)
    assert evaluated.binary.threshold == decision["threshold"]
    assert np.array_equal(evaluated.y_pred, [model.classes.index(label) for label in expected])
    assert tlkit.evaluate(binary_run.run_dir, n_bootstrap=0, threshold=0.0).binary.at_threshold["recall"] == 1.0


def test_a_model_without_threshold_takes_the_argmax(binary_run: tlkit.FinetuneResult, tmp_path: Path) -> None:
    model = tlkit.load(binary_run.run_dir)
    model.set_decision(None)
    model.save(tmp_path / "plain")
    assert "decision" not in json.loads((tmp_path / "plain" / "model.json").read_text())
    plain = tlkit.load(tmp_path / "plain")
    preds = plain.predict(binary_run.manifest.paths("test"))
    assert plain.threshold is None and preds.threshold is None
    assert preds.labels == [plain.classes[i] for i in preds.probs.argmax(1)]


def test_predict_cli_threshold_and_sidecar(binary_run: tlkit.FinetuneResult, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tlkit.cli import app
    from tlkit.deploy.export import sidecar

    image = binary_run.manifest.paths("test")[0]
    res = CliRunner().invoke(app, ["predict", str(binary_run.run_dir), image, "--threshold", "0", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["label"] == "defect"  # p(defect) >= 0 always
    meta = sidecar(tlkit.load(binary_run.run_dir), "onnx", "model.onnx")
    assert meta["threshold"] == binary_run.model.threshold and meta["positive_class"] == "defect"


def test_a_target_on_more_classes_is_refused_before_training(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two-class"):
        tlkit.finetune(tiny_data, backbone="timm:test_resnet", pretrained=False, image_size=32, recipe="linear-probe",
                       epochs=1, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), target_recall=0.9)
    assert not (tmp_path / "run").exists()
