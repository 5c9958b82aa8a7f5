"""tlkit embed / tlkit.embed (issue 18.4): pooled features of a folder, through the feature store, as an .npz
that ``np.load(..., allow_pickle=False)`` reads. Random ``timm:test_resnet`` on 32 px images in tmp_path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tlkit
from tlkit.cli import app
from tlkit.errors import CheckpointError, ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBE = {"name": "probe", "stages": [{"kind": "probe", "epochs": 2, "lr": 0.05}]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    root = tmp_path_factory.mktemp("embed-run")
    return tlkit.finetune(tiny_data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0,
                          batch_size=8, recipe=PROBE, out=str(root / "run"), cache_dir=str(root / "cache")).run_dir


def test_a_run_embeds_its_images_from_the_feature_store_it_trained_with(run_dir: Path, tiny_data: Path,
                                                                        tmp_path: Path) -> None:
    emb = tlkit.embed(run_dir, tiny_data, out=tmp_path / "e.npz")
    assert len(emb) == 30 and emb.features.shape == (30, tlkit.load(run_dir).backbone.feature_dim)
    assert emb.cached == 30  # the probe stored every image's pooled features: nothing recomputed
    assert emb.paths[0] == "blue/img_00.png" and emb.paths == sorted(emb.paths)
    assert emb.labels == [p.split("/")[0] for p in emb.paths] and emb.classes == ["blue", "green", "red"]
    assert emb.backbone == "timm:test_resnet" and emb.preprocessing["input_size"] == 32
    # the same numbers the model's backbone gives for an image
    model = tlkit.load(run_dir)
    image = model.eval_transform()(tlkit.load_image(tiny_data / "blue" / "img_00.png"))
    with torch.no_grad():
        np.testing.assert_allclose(emb.features[0], model.backbone(image[None])[0].numpy(), rtol=0, atol=1e-5)


def test_the_npz_reads_without_pickles(run_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    emb = tlkit.embed(run_dir, tiny_data, out=tmp_path / "e.npz")
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert data["features"].dtype == np.float32 and data["features"].shape == emb.features.shape
        assert list(data["paths"]) == emb.paths and list(data["labels"]) == emb.labels and bool(data["has_labels"])
        assert str(data["backbone"]) == "timm:test_resnet"
        assert json.loads(str(data["preprocessing"])) == emb.preprocessing
    back = tlkit.load_embeddings(tmp_path / "e.npz")
    np.testing.assert_array_equal(back.features, emb.features)
    assert back.paths == emb.paths and back.labels == emb.labels and back.source == str(Path(run_dir).resolve())


def test_a_backbone_name_and_a_folder_without_class_folders(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (40, 36), (40 * i, 90, 200)).save(tmp_path / f"photo {i}.png")
    emb = tlkit.embed("timm:test_resnet", tmp_path, pretrained=False, image_size=32, cache_dir=tmp_path / "cache",
                      out=tmp_path / "flat.npz")
    assert emb.labels is None and emb.paths == ["photo 0.png", "photo 1.png", "photo 2.png"] and emb.cached == 0
    with np.load(tmp_path / "flat.npz", allow_pickle=False) as data:
        assert not bool(data["has_labels"]) and data["labels"].shape == (0,)


def test_cli_embed_writes_the_file_and_says_what_it_did(run_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["embed", str(run_dir), str(tiny_data), "--out", str(tmp_path / "e.npz")])
    assert done.exit_code == 0, done.output
    assert "30 images x" in done.output and "30 from the feature cache" in done.output and "3 classes" in done.output
    assert (tmp_path / "e.npz").is_file()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed here")
def test_parquet_without_pyarrow_says_npz_only_before_any_work(run_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pyarrow.*\.npz"):
        tlkit.embed(run_dir, tiny_data, out=tmp_path / "e.parquet")


def test_bad_input_is_a_clear_error(run_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.npz"):
        tlkit.embed(run_dir, tiny_data, out=tmp_path / "e.csv")
    with pytest.raises(CheckpointError, match="no run directory"):
        tlkit.embed(str(tmp_path / "runs" / "missing"), tiny_data)
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(CheckpointError, match="no saved tlkit model"):
        tlkit.embed(tmp_path / "not-a-run", tiny_data)
    with pytest.raises(DataError, match="no such folder"):
        tlkit.embed(run_dir, tmp_path / "nothing-here")
    done = CliRunner().invoke(app, ["embed", "no_such_backbone_xyz", str(tiny_data), "--out", str(tmp_path / "e.npz")])
    assert done.exit_code == 1 and done.output.startswith("error:") and not (tmp_path / "e.npz").exists()
