"""tlkit.data.groups: images of one group (object, patient, session) never straddle splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkit.data import Manifest, check, scan
from tlkit.errors import ConfigError, DataError


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _grouped_dataset(root: Path, groups_per_class: int = 8, per_group: int = 3, nested: bool = True) -> Path:
    """root/<class>/plantNN/img_K.png (nested) or root/<class>/plantNN_K.png."""
    for ci, name in enumerate(("healthy", "rust")):
        for g in range(groups_per_class):
            for k in range(per_group):
                rel = f"{name}/plant{g:02d}/img_{k}.png" if nested else f"{name}/plant{g:02d}_{k}.png"
                _image(root / rel, ci * 1000 + g * 10 + k)
    return root


def _splits_of_groups(m: Manifest) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for split, rows in m.splits.items():
        for rel, _ in rows:
            where.setdefault(m.groups[rel], set()).add(split)
    return where


def test_subfolder_groups_stay_in_one_split_and_are_recorded(tmp_path: Path) -> None:
    data = _grouped_dataset(tmp_path / "leaves")
    m = scan(data, val_fraction=0.2, test_fraction=0.2, seed=1, group_by="subfolder")
    where = _splits_of_groups(m)
    assert all(len(s) == 1 for s in where.values())
    assert {s for splits in where.values() for s in splits} == {"train", "val", "test"}
    assert all(m.counts("train")[c] > 0 for c in m.classes)
    # without groups the same data mixes a plant's images across splits (so the test above means something)
    plain = scan(data, val_fraction=0.2, test_fraction=0.2, seed=1)
    plain_groups = {rel: rel.split("/")[1] for split in plain.splits.values() for rel, _ in split}
    plain.groups = plain_groups
    assert any(len(s) > 1 for s in _splits_of_groups(plain).values())
    # recorded in splits.json and read back
    m.save(tmp_path / "splits.json")
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["group_by"] == "subfolder" and saved["groups"]["rust/plant03/img_1.png"] == "plant03"
    assert Manifest.load(tmp_path / "splits.json").groups == m.groups
    # deterministic: same seed, same split; another seed, another split
    assert scan(data, val_fraction=0.2, test_fraction=0.2, seed=1, group_by="subfolder").splits == m.splits
    assert scan(data, val_fraction=0.2, test_fraction=0.2, seed=2, group_by="subfolder").splits != m.splits


def test_a_regular_expression_and_a_csv_name_the_groups(tmp_path: Path) -> None:
    data = _grouped_dataset(tmp_path / "flat", nested=False)
    m = scan(data, seed=0, group_by=r"^(plant\d+)_")
    assert all(len(s) == 1 for s in _splits_of_groups(m).values())
    assert m.groups["healthy/plant04_2.png"] == "plant04"
    table = tmp_path / "groups.csv"
    rows = ["path,group"] + [f"{rel},session{int(rel.split('plant')[1][:2]) % 4}"
                             for split in m.splits.values() for rel, _ in split]
    table.write_text("\n".join(rows) + "\n")
    by_csv = scan(data, seed=0, group_by=str(table))
    assert set(by_csv.groups.values()) == {"session0", "session1", "session2", "session3"}
    assert all(len(s) == 1 for s in _splits_of_groups(by_csv).values())


def test_bad_rules_are_named(tmp_path: Path) -> None:
    data = _grouped_dataset(tmp_path / "leaves")
    with pytest.raises(ConfigError, match="regular expression"):
        scan(data, group_by="plant(")
    with pytest.raises(ConfigError, match="no such CSV"):
        scan(data, group_by=str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match=r"48 images into 1 group\(s\).*at least 3"):
        scan(data, group_by=r"^(img)_")  # every file name starts with img_: one group
    few = _grouped_dataset(tmp_path / "few", groups_per_class=1)
    with pytest.raises(DataError, match="at least 3"):
        scan(few, group_by="subfolder")


def test_check_reports_a_group_that_straddles_given_split_folders(tmp_path: Path) -> None:
    data = tmp_path / "presplit"
    for split, plants in (("train", range(0, 6)), ("test", range(5, 8))):  # plant05 in both
        for name in ("healthy", "rust"):
            for g in plants:
                _image(data / split / name / f"plant{g:02d}" / f"{split}.png", hash((split, name, g)) % 1000)
    report = check(scan(data, group_by="subfolder"))
    leak = [p for p in report.problems if p.kind == "group-leak"]
    assert leak and leak[0].severity == "error" and "plant05" in leak[0].message and not report.ok
    assert not [p for p in check(scan(data)).problems if p.kind == "group-leak"]


def test_finetune_and_check_take_group_by(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tlkit.cli import app
    from tlkit.train import finetune

    data = _grouped_dataset(tmp_path / "leaves")
    result = finetune(data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0,
                      recipe="linear-probe", epochs=1, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                      group_by="subfolder")
    saved = Manifest.load(result.run_dir / "splits.json")
    assert saved.group_by == "subfolder" and all(len(s) == 1 for s in _splits_of_groups(saved).values())
    assert "group_by: subfolder" in (result.run_dir / "config.yaml").read_text()
    out = CliRunner().invoke(app, ["check", str(data), "--group-by", "subfolder", "--json"])
    assert out.exit_code == 0, out.output
    bad = CliRunner().invoke(app, ["check", str(data), "--group-by", "plant("])
    assert bad.exit_code == 1 and "regular expression" in bad.output and "Traceback" not in bad.output
