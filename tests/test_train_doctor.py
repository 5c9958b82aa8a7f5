"""The data doctor inside a run (issue 16): the run's split examined before training, near-copy leakage
refused unless allowed, the findings in doctor.json, the FinetuneResult and the report; a resumed run
keeps them. Tiny colour images, a random ``timm:test_resnet``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import tlkit
from tlkit.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = {"name": "probe", "stages": [{"kind": "probe", "epochs": 2, "lr": 0.01}]}


def _split_folders(tmp_path: Path) -> Path:
    """train/<class>/ (10 each) and test/<class>/ (4 each): a colour per class with a smooth random
    pattern (distinct pictures whose pixels a resized copy keeps)."""
    import numpy as np

    data = tmp_path / "data"
    for ci, (name, color) in enumerate({"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}.items()):
        for i in range(14):
            folder = data / ("train" if i < 10 else "test") / name
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(100 * ci + i)
            pattern = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize((48, 48), Image.BICUBIC)
            shade = np.asarray(pattern, dtype=np.float32)[..., None] / 255.0 - 0.5
            Image.fromarray(np.clip(np.array(color) + 120 * shade, 0, 255).astype(np.uint8)).save(folder / f"img_{i:02d}.png")
    return data


def _near_copy(source: Path, target: Path) -> None:
    """Resized to 95% and saved as JPEG quality 90: not the same bytes, not the same pixels."""
    with Image.open(source) as image:
        w, h = image.size
        image.convert("RGB").resize((round(w * 0.95), round(h * 0.95)), Image.LANCZOS).save(target, "JPEG", quality=90)


def test_a_near_copy_across_splits_stops_the_run_before_its_folder_unless_allowed(
        tmp_path: Path, fast_kwargs) -> None:  # noqa: ANN001
    data = _split_folders(tmp_path)
    _near_copy(data / "train" / "red" / "img_00.png", data / "test" / "red" / "copy.jpg")
    with pytest.raises(DataError, match=r"leak.*train/red/img_00.png.*--allow-leakage"):
        tlkit.finetune(data, recipe=RECIPE, **fast_kwargs)
    assert not Path(fast_kwargs["out"]).exists(), "the run folder was written before the refusal"

    result = tlkit.finetune(data, recipe=RECIPE, allow_leakage=True, **fast_kwargs)
    assert [p.paths for p in result.doctor.leaks] == [("test/red/copy.jpg", "train/red/img_00.png")]
    saved = json.loads((result.run_dir / "doctor.json").read_text())
    assert saved["leaks"][0]["paths"] == ["test/red/copy.jpg", "train/red/img_00.png"]
    assert "doctor_seconds" in result.timings
    html = (result.run_dir / "report.html").read_text()
    assert "Data doctor" in html and "copy.jpg" in html


def test_an_exact_copy_across_splits_is_refused_by_the_check_and_allowed_with_the_option(
        tmp_path: Path, fast_kwargs) -> None:  # noqa: ANN001
    data = _split_folders(tmp_path)
    shutil.copyfile(data / "train" / "blue" / "img_01.png", data / "test" / "blue" / "same.png")
    with pytest.raises(DataError, match="identical files in train and test"):
        tlkit.finetune(data, recipe=RECIPE, **fast_kwargs)
    result = tlkit.finetune(data, recipe=RECIPE, allow_leakage=True, **fast_kwargs)
    assert any(p.kind == "exact" and p.leak for p in result.doctor.near_duplicates)


def test_no_doctor_leaves_no_findings_and_a_clean_split_trains(tmp_path: Path, tiny_data: Path, fast_kwargs) -> None:  # noqa: ANN001
    result = tlkit.finetune(tiny_data, recipe=RECIPE, doctor=False, **fast_kwargs)
    assert result.doctor is None and not (result.run_dir / "doctor.json").exists()
    assert "Data doctor" not in (result.run_dir / "report.html").read_text()
    again = tlkit.finetune(tiny_data, recipe=RECIPE, overwrite=True, **fast_kwargs)
    assert again.doctor is not None and again.doctor.ok and again.doctor.leaks == []
    assert again.doctor.counts == {s: again.manifest.counts(s) for s in ("train", "val", "test")}


def test_the_doctor_does_not_change_what_the_run_computes(tmp_path: Path, tiny_data: Path, fast_kwargs) -> None:  # noqa: ANN001
    """The doctor's folds and probes leave the run's random streams alone: the same model with or without it."""
    import torch

    kw = {**fast_kwargs}
    with_doctor = tlkit.finetune(tiny_data, recipe=RECIPE, **{**kw, "out": str(tmp_path / "a")})
    without = tlkit.finetune(tiny_data, recipe=RECIPE, doctor=False, **{**kw, "out": str(tmp_path / "b")})
    for (name, a), (_, b) in zip(with_doctor.model.state_dict().items(), without.model.state_dict().items()):
        assert torch.equal(a, b), name
