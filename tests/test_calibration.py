"""Calibrated probabilities (issue 18.1): the final weights' temperature, fitted on validation, kept in
model.json, applied by predict, evaluate and the run's report; accuracy never changes.

Runs use a random ``timm:test_resnet`` on 32 px colour images in tmp_path, probe only (seconds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import tlkit
from tlkit.errors import CheckpointError, ConfigError
from tlkit.evaluation.display import ReliabilityDisplay
from tlkit.evaluation.metrics import evaluate_predictions
from tlkit.models.builder import build
from tlkit.models.heads import HeadSpec
from tlkit.models.transfer import TransferModel
from tlkit.train.losses import fit_temperature
from tlkit.train.validation import calibration_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEGACY = Path(__file__).parent / "data" / "runs-0.1" / "finished"
PROBE = {"name": "probe", "stages": [{"kind": "probe", "epochs": 4, "lr": 0.05}]}


class Messages:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def task(self, description: str, total: int) -> None:
        return None

    def epoch(self, record: dict) -> None:
        pass


def _options(root: Path, **extra: object) -> dict:
    return dict(backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8, seed=0,
                recipe=PROBE, out=str(root / "run"), cache_dir=str(root / "cache"), **extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> tuple[tlkit.FinetuneResult, Messages]:
    messages = Messages()
    root = tmp_path_factory.mktemp("calibrated")
    return tlkit.finetune(tiny_data, reporter=messages, **_options(root)), messages


def _tiny_model(temperature: float = 1.0) -> TransferModel:
    backbone = build("timm:test_resnet", pretrained=False)
    head = HeadSpec("linear", backbone.feature_dim, 3)
    return TransferModel(backbone, head, ["a", "b", "c"], backbone.preprocessing.with_size(32),
                         temperature=temperature).eval()


# -- fitting the temperature

def test_fit_temperature_finds_the_temperature_the_labels_were_drawn_with() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 4, generator=gen) * 3
    labels = torch.multinomial(torch.softmax(logits / 2.0, 1), 1, generator=gen).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)
    # the same answer from log-probabilities (a constant per row cancels)
    assert fit_temperature(torch.log_softmax(logits, 1), labels) == pytest.approx(fit_temperature(logits, labels))


def test_no_validation_images_means_temperature_one_and_says_why() -> None:
    assert fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long)) == 1.0
    calibration = calibration_of(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    assert calibration["temperature"] == 1.0 and calibration["fitted_on"] is None
    assert "no validation split" in calibration["reason"]


# -- the model applies it, in one place

def test_probabilities_are_softmax_of_logits_over_temperature_and_never_change_the_argmax() -> None:
    model = _tiny_model(temperature=2.5)
    batch = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(batch)
    probs = model.predict_proba_tensor(batch)
    torch.testing.assert_close(probs, torch.softmax(logits / 2.5, 1), rtol=0, atol=1e-6)
    preds = model.predict(batch)
    assert preds.temperature == 2.5
    np.testing.assert_allclose(preds.uncalibrated_probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert (preds.probs.argmax(1) == preds.uncalibrated_probs.argmax(1)).all()


def test_temperature_round_trips_through_model_json(tmp_path: Path) -> None:
    model = _tiny_model()
    model.set_temperature(1.75, {"temperature": 1.75, "fitted_on": "val", "images": 9})
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["temperature"] == 1.75 and meta["calibration"]["fitted_on"] == "val"
    loaded = tlkit.load(tmp_path / "m")
    assert loaded.temperature == 1.75 and loaded.calibration["images"] == 9
    assert "temperature" not in loaded.state_dict()  # never in the weights: older files load strictly


def test_a_model_saved_before_calibration_loads_with_temperature_one(tmp_path: Path) -> None:
    model = tlkit.load(LEGACY)
    assert "temperature" not in json.loads((LEGACY / "model.json").read_text())
    assert model.temperature == 1.0 and model.calibration["fitted_on"] is None


@pytest.mark.parametrize("value", [-1.0, 0.0, "hot", None])
def test_a_damaged_temperature_in_model_json_is_refused(tmp_path: Path, value: object) -> None:
    folder = Path(shutil.copytree(LEGACY, tmp_path / "run"))
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "temperature": value}))
    with pytest.raises(CheckpointError, match="model.json"):
        tlkit.load(folder)


def test_set_temperature_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        _tiny_model().set_temperature(float("nan"))


# -- training keeps it, and everything answers with it

def test_training_fits_the_temperature_on_validation_and_keeps_it(trained: tuple) -> None:
    result, messages = trained
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["temperature"] == result.model.temperature != 1.0
    assert meta["calibration"]["fitted_on"] == "val"
    assert meta["calibration"]["images"] == len(result.manifest.labels("val"))
    assert meta["calibration"]["val_nll_after"] <= meta["calibration"]["val_nll_before"]
    assert any(line.startswith("temperature ") and "validation images" in line for line in messages.lines)


def test_accuracy_is_the_same_before_and_after_temperature_scaling(trained: tuple) -> None:
    result, _ = trained
    model = tlkit.load(result.run_dir)
    preds = model.predict(result.manifest.paths("test"))
    labels = np.array(result.manifest.labels("test"))
    before = float((preds.uncalibrated_probs.argmax(1) == labels).mean())
    assert result.evaluation.accuracy == before == float((preds.probs.argmax(1) == labels).mean())
    # the run's test evaluation used the calibrated probabilities predict gives
    np.testing.assert_allclose(result.evaluation.probs, preds.probs, atol=1e-5)


def test_the_report_and_evaluate_show_the_ece_before_and_after(trained: tuple) -> None:
    result, _ = trained
    ev, metrics = result.evaluation, json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["temperature"] == result.model.temperature
    assert metrics["ece_uncalibrated"] == pytest.approx(ev.ece_uncalibrated) and metrics["ece"] == pytest.approx(ev.ece)
    assert len(metrics["reliability_uncalibrated"]) == len(metrics["reliability"])
    html = (result.run_dir / "report.html").read_text(encoding="utf-8")
    assert "before" in html and f"{ev.ece_uncalibrated:.3f}" in html
    assert "before temperature scaling" in ev.summary_text()
    again = tlkit.evaluate(result.run_dir, n_bootstrap=0)  # tlkit evaluate's library call
    assert again.temperature == result.model.temperature and again.accuracy == ev.accuracy
    assert again.ece == pytest.approx(ev.ece, abs=1e-5) and again.ece_uncalibrated == pytest.approx(ev.ece_uncalibrated, abs=1e-5)


def test_without_a_validation_split_the_temperature_is_one_and_the_run_says_so(tmp_path: Path, tiny_data: Path) -> None:
    messages = Messages()
    result = tlkit.finetune(tiny_data, reporter=messages, **_options(tmp_path, val_fraction=0.0))
    calibration = json.loads((result.run_dir / "model.json").read_text())["calibration"]
    assert result.model.temperature == 1.0 and calibration["fitted_on"] is None
    assert any("no validation split" in line for line in messages.lines)
    assert result.evaluation.ece_uncalibrated is None  # nothing was scaled: one ECE


# -- the numbers and the figure

def test_reliability_display_draws_both_eces() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.3, size=60)
    softened = np.exp(np.log(probs) / 3) / np.exp(np.log(probs) / 3).sum(1, keepdims=True)
    labels = rng.integers(0, 3, 60)
    result = evaluate_predictions(labels, softened, ["a", "b", "c"], n_bootstrap=0, uncalibrated_probs=probs,
                                  temperature=3.0)
    assert result.accuracy == float((probs.argmax(1) == labels).mean())
    assert result.ece_uncalibrated != result.ece
    display = ReliabilityDisplay.from_result(result).plot()
    title = display.ax_.get_title()
    assert "T = 3.00" in title and f"{result.ece_uncalibrated:.3f}" in title
    assert any("before temperature scaling" in line.get_label() for line in display.ax_.lines)
    with pytest.raises(ConfigError, match="uncalibrated_probs"):
        evaluate_predictions(labels, softened, ["a", "b", "c"], n_bootstrap=0, uncalibrated_probs=probs[:5])
