"""finetune --labels relabel.csv: label fixes and exclusions in the run's split only, recorded, files untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from typer.testing import CliRunner

from tlkit.cli import app
from tlkit.data import Manifest


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_finetune_applies_a_relabel_csv_and_records_it(tmp_path: Path, make_color_dataset: Callable[..., Path]) -> None:
    data = make_color_dataset(tmp_path / "colors")
    before = _digest(data)
    csv = tmp_path / "relabel.csv"
    csv.write_text("path,given,suggested,score,action\n"
                   "red/img_00.png,red,green,0.9,relabel\n"
                   f"{data / 'blue' / 'img_01.png'},blue,red,0.8,exclude\n"
                   "green/img_02.png,green,blue,0.4,review\n"
                   "green/img_03.png,red,blue,0.7,relabel\n")  # 'given' is not its label: skipped, listed
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["finetune", str(data), "-b", "timm:test_resnet", "--no-pretrained", "--image-size", "32",
                                   "--workers", "0", "--recipe", "linear-probe", "--epochs", "1", "--out", str(run),
                                   "--cache-dir", str(tmp_path / "cache"), "--labels", str(csv)])
    assert res.exit_code == 0, res.output
    assert "1 label(s) fixed, 1 image(s) left out, 1 row(s) skipped" in res.stderr
    m = Manifest.load(run / "splits.json")
    label = {rel: m.classes[lab] for rows in m.splits.values() for rel, lab in rows}
    assert label["red/img_00.png"] == "green" and "blue/img_01.png" not in label
    assert label["green/img_02.png"] == "green" and label["green/img_03.png"] == "green"
    assert {"path": "blue/img_01.png", "reason": "excluded by relabel.csv"} in m.skipped
    applied = json.loads((run / "labels_applied.json").read_text())
    assert applied["relabeled"] == [["red/img_00.png", "red", "green"]] and applied["mismatched"] == ["green/img_03.png"]
    assert m.labels_applied == applied and _digest(data) == before  # the user's files are as they were
    bad = tmp_path / "bad.csv"
    bad.write_text("path,given,suggested,score,action\nred/img_00.png,red,purple,0.9,relabel\n")
    refused = CliRunner().invoke(app, ["finetune", str(data), "-b", "timm:test_resnet", "--no-pretrained", "--out",
                                       str(tmp_path / "run2"), "--labels", str(bad)])
    assert refused.exit_code == 1 and "purple" in refused.stderr and not (tmp_path / "run2").exists()
