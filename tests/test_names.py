"""File names that are not UTF-8 (bytes such as b"caf\\xe9.png", which Python holds as lone surrogates)
work in every output: training with augmented views, the report, predict and compare (issue 14, item 9)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlkit.train.pipeline import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_file_names_that_are_not_utf8_work_end_to_end(tmp_path: Path, make_color_dataset) -> None:  # noqa: ANN001
    """A name like b"caf\\xe9.png" (Latin-1 on a UTF-8 system) in every split, with an augmenting recipe."""
    import shutil

    from typer.testing import CliRunner

    from tlkit.cli import app

    data = make_color_dataset(tmp_path / "data", {"red": 6, "blue": 6})
    for cls in ("red", "blue"):
        for i in range(6):
            src = data / cls / f"img_{i:02d}.png"
            os.rename(src, os.path.join(os.fsencode(data / cls), f"caf\xe9_{i}.png".encode("latin-1")))
    out = tmp_path / "run"
    res = finetune(data, backbone="timm:test_resnet", pretrained=False, recipe="few-shot", epochs=1, image_size=32,
                   workers=0, batch_size=8, out=str(out), cache_dir=str(tmp_path / "cache"))
    assert res.evaluation is not None and (out / "report.html").is_file()
    names = [line.split(",")[1] for line in (out / "predictions.csv").read_bytes().decode("utf-8", "surrogateescape")
             .splitlines()[1:]]
    assert all(os.path.exists(n) for n in names)  # the CSV holds the files' own bytes
    runner = CliRunner()
    for fmt in ("json", "csv", "table"):
        result = runner.invoke(app, ["predict", str(out), str(data / "red"), "--format", fmt])
        assert result.exit_code == 0, (fmt, result.output)
    shutil.copytree(out, tmp_path / "copy")
    result = runner.invoke(app, ["compare", str(out), str(tmp_path / "copy")])
    assert result.exit_code == 0, result.output
