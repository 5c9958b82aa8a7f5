"""Out-of-distribution answers (issue 18.2): the scores, the threshold chosen on validation, ood.safetensors
beside the model, ``Predictions.unknown``/``ood_score``, ``tlkit predict --reject-rate/--threshold``, the
coverage of ``tlkit evaluate`` and the run's report, the export's second output, legacy runs without OOD,
and damaged files.

One tiny run per module (``timm:test_resnet``, random weights, 32 px colour images, a linear probe).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tlkit
from tlkit.cli import app
from tlkit.errors import CheckpointError, ConfigError
from tlkit.models.ood import METHODS, OOD_FILE, fit_detector, threshold_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEGACY = Path(__file__).parent / "data" / "runs-0.1" / "finished"
COUNTS = {"red": 14, "green": 14, "blue": 14}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from conftest import _make_color_dataset

    root = tmp_path_factory.mktemp("ood")
    data = _make_color_dataset(root / "colors", COUNTS)
    return tlkit.finetune(data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8,
                          recipe="linear-probe", epochs=3, out=str(root / "run"), cache_dir=str(root / "cache"),
                          seed=0)


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"n{i}.png")
        paths.append(str(folder / f"n{i}.png"))
    return paths


def _cli(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _error_line(result) -> str:  # noqa: ANN001
    assert result.exit_code == 1, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# -- the scores and the threshold, on synthetic features


def _blobs(n: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    labels = [i % 3 for i in range(n)]
    centres = torch.eye(3, 16) * 4 + 1.0
    return centres[labels] + 0.3 * torch.randn(n, 16, generator=g) + shift, labels


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_feature_scores_put_far_points_above_the_threshold(method: str) -> None:
    train, labels = _blobs(300, 0)
    val, _ = _blobs(200, 1)
    far = torch.randn(50, 16, generator=torch.Generator().manual_seed(2)) * 3
    detector = fit_detector(train, labels, method=method, val_features=val, val_logits=torch.zeros(200, 3))
    assert detector.fitted_on == "val" and detector.bank.shape == (300, 16)
    inside, outside = detector.score(val, torch.zeros(200, 3)), detector.score(far, torch.zeros(50, 3))
    assert outside.median() > inside.max()
    assert (outside > detector.threshold).float().mean() > 0.9


@pytest.mark.parametrize("method", ["energy", "msp"])
def test_logit_scores_are_higher_for_flat_logits(method: str) -> None:
    train, labels = _blobs(60, 0)
    sharp = torch.eye(3)[torch.arange(30) % 3] * 8
    detector = fit_detector(train, labels, method=method, val_features=train[:30], val_logits=sharp)
    assert (detector.score(train[:5], torch.zeros(5, 3)) > detector.score(train[:5], sharp[:5])).all()


def test_threshold_rejects_about_the_requested_share_of_validation() -> None:
    train, labels = _blobs(300, 0)
    val, _ = _blobs(1000, 3)
    for rate in (0.02, 0.05, 0.2):
        detector = fit_detector(train, labels, val_features=val, val_logits=torch.zeros(1000, 3), reject_rate=rate)
        rejected = float((detector.score(val, torch.zeros(1000, 3)) > detector.threshold).float().mean())
        assert rate - 0.002 <= rejected <= rate
    assert detector.threshold_at(0.5) < detector.threshold_at(0.02) == threshold_for(detector.calibration_scores, 0.02)
    assert detector.threshold_at(threshold=1.5) == 1.5


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 2.0, float("nan")])
def test_a_reject_rate_outside_0_1_is_refused(rate: float) -> None:
    train, labels = _blobs(30, 0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        fit_detector(train, labels, reject_rate=rate)


def test_without_validation_the_threshold_comes_from_train_and_knn_skips_itself() -> None:
    train, labels = _blobs(100, 0)
    detector = fit_detector(train, labels, method="knn")
    assert detector.fitted_on == "train" and len(detector.calibration_scores) == 100
    assert detector.calibration_scores.min() > 0  # an image is never its own nearest neighbour


# -- a trained run


def test_a_run_stores_ood_beside_the_model_and_noise_is_unknown(run, noise: list[str]) -> None:  # noqa: ANN001
    meta = json.loads((run.run_dir / "model.json").read_text())
    assert meta["ood"]["method"] in METHODS and meta["ood"]["reject_rate"] == 0.02 and meta["ood"]["fitted_on"] == "val"
    assert (run.run_dir / OOD_FILE).is_file()
    model = tlkit.load(run.run_dir)
    assert model.ood.threshold == pytest.approx(meta["ood"]["threshold"])
    real = model.predict(run.manifest.paths("test") + run.manifest.paths("val"))
    odd = model.predict(noise)
    assert np.median(odd.ood_score) > real.ood_score.max()
    assert odd.unknown.mean() >= 0.75 and real.unknown.mean() <= 0.25
    assert [r["unknown"] for r in odd.to_records()] == odd.unknown.tolist()
    assert model.predict(noise, ood_threshold=float("1e30")).unknown.sum() == 0
    assert model.predict(noise, reject_rate=0.5).ood_threshold == model.ood.threshold_at(0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        model.predict(noise, reject_rate=1.5)


def test_the_run_report_has_coverage_and_neighbours(run) -> None:  # noqa: ANN001
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    ood = metrics["ood"]
    assert ood["n"] == run.evaluation.n and 0 <= ood["rejected"] <= ood["n"]
    assert ood["curve"][0]["coverage"] == 1.0 and ood["curve"][0]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert (run.run_dir / "coverage.png").is_file()
    html = (run.run_dir / "report.html").read_text()
    assert "Unknown images" in html and "coverage-accuracy curve" in html
    from tlkit.models.ood import neighbour_finder

    found = neighbour_finder(tlkit.load(run.run_dir))(run.manifest.paths("test")[0])
    assert len(found) == 3 and all(n["label"] in COUNTS and Path(n["path"]).is_file() for n in found)
    assert found[0]["similarity"] >= found[1]["similarity"] >= found[2]["similarity"]


def test_evaluate_counts_rejections_and_the_accuracy_of_the_rest(run, tmp_path: Path) -> None:  # noqa: ANN001
    result = tlkit.evaluate(run.run_dir, split="test")
    assert result.ood.rejected == int(tlkit.load(run.run_dir).predict(run.manifest.paths("test")).unknown.sum())
    cli = _cli(["evaluate", run.run_dir, "--out", tmp_path / "eval"])
    assert cli.exit_code == 0, cli.output
    assert "would be answered unknown" in cli.stdout
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["ood"]["method"] == result.ood.method


def test_predict_cli_json_csv_and_table(run, noise: list[str]) -> None:  # noqa: ANN001
    records = json.loads(_cli(["predict", run.run_dir, *noise[:2], "--format", "json"]).stdout)
    assert all(isinstance(r["unknown"], bool) and isinstance(r["ood_score"], float) for r in records)
    out = _cli(["predict", run.run_dir, *noise[:2], "--format", "csv", "--ood-threshold", "-1"]).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["unknown"] for r in rows] == ["true", "true"] and float(rows[0]["ood_score"]) >= 0
    table = _cli(["predict", run.run_dir, noise[0], "--ood-threshold", "-1"]).stdout
    assert "unknown (best: " in table
    assert "unknown (best" not in _cli(["predict", run.run_dir, noise[0], "--ood-threshold", "1e30"]).stdout
    assert "between 0 and 1" in _error_line(_cli(["predict", run.run_dir, noise[0], "--reject-rate", "1.2"]))
    assert "not both" in _error_line(_cli(["predict", run.run_dir, noise[0], "--reject-rate", "0.1",
                                           "--ood-threshold", "2"]))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_with_the_ood_score_as_a_second_output(run, tmp_path: Path, fmt: str) -> None:  # noqa: ANN001
    from tlkit.deploy.export import ExportedModel

    model = tlkit.load(run.run_dir)
    result = model.export(tmp_path / fmt, format=fmt, ood=True)
    assert result.ood_difference is not None and result.ood_difference <= 1e-4
    exported = ExportedModel(result.path)
    assert exported.meta["ood"]["threshold"] == model.ood.threshold and exported.meta["ood"]["output"] == "ood_score"
    batch = torch.stack([model.eval_transform()(Image.open(p).convert("RGB")) for p in run.manifest.paths("test")])
    outputs = exported.outputs(batch.numpy())
    np.testing.assert_allclose(outputs["ood_score"], model.predict(batch).ood_score, rtol=1e-4, atol=1e-4)
    assert "ood" not in ExportedModel(model.export(tmp_path / "plain", format=fmt).path).meta


# -- runs without OOD, damaged files


def test_a_legacy_run_loads_without_ood(tmp_path: Path, make_color_dataset, noise: list[str]) -> None:  # noqa: ANN001
    run = Path(shutil.copytree(LEGACY, tmp_path / "finished"))
    model = tlkit.load(run)
    assert model.ood is None and model.ood_threshold() is None
    preds = model.predict(noise[:3])
    assert not preds.unknown.any() and np.isnan(preds.ood_score).all()
    assert [r["ood_score"] for r in preds.to_records()] == [None] * 3
    with pytest.raises(ConfigError, match="no out-of-distribution statistics"):
        model.predict(noise[:1], reject_rate=0.05)
    line = _error_line(_cli(["predict", run, noise[0], "--reject-rate", "0.05"]))
    assert "no out-of-distribution statistics" in line
    note = _cli(["predict", run, noise[0]])
    assert note.exit_code == 0 and "no out-of-distribution statistics" in note.stderr
    with pytest.raises(ConfigError, match="no out-of-distribution"):
        model.export(tmp_path / "x", format="torchscript", ood=True)
    data = make_color_dataset(tmp_path / "colors")
    assert tlkit.evaluate(model, data, split="all", n_bootstrap=0).ood is None


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_a_damaged_ood_file_is_a_checkpoint_error_naming_it(run, tmp_path: Path, damage: str) -> None:  # noqa: ANN001
    copy = Path(shutil.copytree(run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints")))
    path = copy / OOD_FILE
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match=OOD_FILE) as caught:
        tlkit.load(copy)
    assert 'remove the "ood" entry of model.json' in str(caught.value)
    assert OOD_FILE in _error_line(_cli(["predict", copy, run.manifest.paths("test")[0]]))
