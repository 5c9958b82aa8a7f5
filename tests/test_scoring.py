"""tlkit.evaluate and tlkit.evaluation.scoring: which images, which classes; `tlkit evaluate` loads the model once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tlkit.cli import app
from tlkit.config import make_config
from tlkit.data import scan
from tlkit.errors import ConfigError, DataError
from tlkit.evaluation.scoring import evaluate_model, evaluation_set
from tlkit.models.builder import build
from tlkit.models.heads import HeadSpec
from tlkit.models.transfer import TransferModel
from tlkit.report.evaluation_report import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def model() -> TransferModel:
    """An untrained model on the tiny colour dataset's classes (scores are whatever it predicts)."""
    torch.manual_seed(0)
    backbone = build("timm:test_resnet", pretrained=False)
    return TransferModel(backbone, HeadSpec("linear", backbone.feature_dim, 3), CLASSES,
                         backbone.preprocessing.with_size(32)).eval()


@pytest.fixture(scope="module")
def run_dir(model: TransferModel, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model with a run's splits.json and config.yaml beside it."""
    folder = model.save(tmp_path_factory.mktemp("scoring") / "run")
    scan(tiny_data).save(folder / "splits.json")
    (folder / "config.yaml").write_text(yaml.safe_dump(make_config(str(tiny_data)).to_dict()))
    return Path(folder)


def test_a_plain_folder_is_used_whole(model: TransferModel, tiny_data: Path) -> None:
    manifest, split = evaluation_set(tiny_data, split="test")
    assert split == "all" and manifest.classes == CLASSES
    result = evaluate(model, tiny_data)
    assert result.n == 30 and result.classes == CLASSES and result.unknown == {}
    np.testing.assert_allclose(result.probs, model.predict(result.paths).probs, atol=1e-5)


def test_a_split_layout_gives_its_split(tiny_data: Path, tmp_path: Path) -> None:
    for split, names in (("train", ("red", "green", "blue")), ("test", ("red", "green"))):
        for name in names:
            shutil.copytree(tiny_data / name, tmp_path / "layout" / split / name)
    manifest, split = evaluation_set(tmp_path / "layout", split="test")
    assert split == "test" and len(manifest.paths("test")) == 20
    assert all("/test/" in p for p in manifest.paths("test"))


def test_the_runs_own_split_and_its_data_root(model: TransferModel, run_dir: Path, tiny_data: Path,
                                             tmp_path: Path) -> None:
    from_run = evaluate(run_dir, split="all")
    assert from_run.n == 30
    assert evaluate_model(model, run_dir=run_dir, split="all").accuracy == pytest.approx(from_run.accuracy)
    test_only = evaluate(run_dir)
    assert 0 < test_only.n < 30 and set(test_only.paths) <= set(from_run.paths)
    # a splits.json that points elsewhere than the data of config.yaml is refused
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    (moved / "config.yaml").write_text(yaml.safe_dump(make_config(str(tmp_path / "other")).to_dict()))
    with pytest.raises(DataError, match="points at .* but the run was trained on"):
        evaluate(moved)


def test_errors_name_what_to_give(model: TransferModel, tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split must be train, val, test or all"):
        evaluate(model, tiny_data, split="dev")
    with pytest.raises(ConfigError, match="give a folder or a Manifest"):
        evaluate(model)
    saved = model.save(tmp_path / "model")
    with pytest.raises(DataError, match="no splits.json; give the DATA folder"):
        evaluate(saved)
    shutil.copytree(tiny_data / "red", tmp_path / "others" / "purple")
    with pytest.raises(DataError, match="none of the classes .* is known to the model"):
        evaluate(model, tmp_path / "others")


def test_cli_evaluate_loads_the_model_once(run_dir: Path, tiny_data: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit
    import tlkit.models.transfer

    loads: list[str] = []
    real = tlkit.models.transfer.load

    def counting_load(path, **kwargs):  # noqa: ANN001, ANN003, ANN202
        loads.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(tlkit.models.transfer, "load", counting_load)
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), str(tiny_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert loads == [str(run_dir)]  # once, for the scores and for the Grad-CAM overlays
    assert "report written to" in result.stdout and (out / "report.html").is_file()
    assert tlkit.evaluate is evaluate


def test_evaluating_training_images_warns_and_per_class_is_a_dataframe(tiny_data, fast_kwargs) -> None:  # noqa: ANN001
    import tlkit

    result = tlkit.finetune(tiny_data, recipe="linear-probe", epochs=1, doctor=False, **fast_kwargs)
    everything = tlkit.evaluate(result.run_dir, split="all")
    n_train = len(result.manifest.paths("train"))
    assert any(w.startswith(f"{n_train} of the {everything.n} images evaluated were used to train") for w in everything.warnings)
    assert not any("used to train" in w for w in tlkit.evaluate(result.run_dir, split="test").warnings)
    frame = everything.per_class_frame()
    assert list(frame.index) == result.model.classes and "recall" in frame.columns
