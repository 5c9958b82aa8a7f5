"""The data doctor (issue 16): leakage and near-duplicates, suspect labels, outliers, learning curves,
the JSON contract, relabel.csv, and bad input. Tiny images in tmp_path, a tiny random backbone."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tlkit
from tlkit.cli import app
from tlkit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(backbone="timm:test_resnet", pretrained=False, image_size=32)
CLI_TINY = ["--backbone", "timm:test_resnet", "--no-pretrained", "--image-size", "32"]
COLORS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def smooth_image(color: tuple[int, int, int], seed: int, size: int = 64) -> Image.Image:
    """A colour with a smooth random pattern: distinct pictures, but pixels a resized copy keeps."""
    rng = np.random.default_rng(seed)
    pattern = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    shade = np.asarray(pattern, dtype=np.float32)[..., None] / 255.0 - 0.5
    arr = np.clip(np.array(color, dtype=np.float32) + 120 * shade, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def smooth_dataset(root: Path, n: int = 12, *, split_folders: bool = False) -> Path:
    """root/<class>/s_NN.png (or root/{train,test}/<class>/...: 9 train, 3 test per class)."""
    for ci, (name, color) in enumerate(COLORS.items()):
        for i in range(n):
            split = ("train" if i < n - 3 else "test") if split_folders else ""
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            smooth_image(color, 100 * ci + i).save(folder / f"s_{i:02d}.png")
    return root


def near_copy(source: Path, target: Path) -> None:
    """``source`` resized to 95% and saved as JPEG quality 90 (the bench's planted copy)."""
    with Image.open(source) as image:
        w, h = image.size
        image.convert("RGB").resize((round(w * 0.95), round(h * 0.95)), Image.LANCZOS).save(target, "JPEG", quality=90)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under root with a hash of its bytes (and mode), to prove nothing changed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = f"{os.stat(path).st_mode}:{hashlib.sha1(handle.read()).hexdigest()}"
    return found


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tlkit.DoctorResult]:
    """Split folders with a near-copy of a train image in test, an exact copy in another class of train and
    a blank outlier; the doctor run once on it."""
    base = tmp_path_factory.mktemp("doctor")
    data = smooth_dataset(base / "data", split_folders=True)
    near_copy(data / "train" / "red" / "s_00.png", data / "test" / "red" / "copy_of_s_00.jpg")
    shutil.copyfile(data / "train" / "blue" / "s_01.png", data / "train" / "green" / "same_as_blue_s_01.png")
    Image.new("RGB", (64, 64), (255, 255, 255)).save(data / "train" / "blue" / "blank.png")
    before = tree_digest(data)
    result = tlkit.doctor(data, cache_dir=base / "cache", **TINY)
    assert tree_digest(data) == before, "the doctor changed the data folder"
    return data, base / "cache", result


def test_planted_resized_jpeg_copy_across_splits_is_leakage(planted) -> None:  # noqa: ANN001
    _, _, result = planted
    pair = [p for p in result.near_duplicates if set(p.paths) == {"train/red/s_00.png", "test/red/copy_of_s_00.jpg"}]
    assert len(pair) == 1, [p.paths for p in result.near_duplicates]
    assert pair[0].kind == "near" and pair[0].leak and pair[0].severity == "error" and pair[0].finding == "leakage"
    assert pair[0] in result.leaks and not result.ok


def test_exact_copy_in_two_classes_is_a_label_conflict(planted) -> None:  # noqa: ANN001
    _, _, result = planted
    conflicts = [set(p.paths) for p in result.label_conflicts]
    assert {"train/blue/s_01.png", "train/green/same_as_blue_s_01.png"} in conflicts
    exact = [p for p in result.near_duplicates if p.kind == "exact"]
    assert len(exact) == 1 and exact[0].similarity == 1.0 and exact[0].hamming == 0
    assert exact[0].finding == "label-conflict" and exact[0].severity == "error"


def test_no_false_pairs_among_distinct_pictures(planted) -> None:  # noqa: ANN001
    _, _, result = planted
    assert len(result.near_duplicates) == 2, [(p.paths, p.similarity, p.hamming) for p in result.near_duplicates]


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tlkit.DoctorResult]:
    """Coloured images (clearly separable), one red image filed under green."""
    from conftest import _make_color_dataset

    base = tmp_path_factory.mktemp("flipped")
    data = _make_color_dataset(base / "data", {"red": 12, "green": 12, "blue": 12})
    os.replace(data / "red" / "img_05.png", data / "green" / "img_05_was_red.png")
    return data, base / "cache", tlkit.doctor(data, cache_dir=base / "cache", **TINY)


def test_flipped_label_ranks_first(flipped) -> None:  # noqa: ANN001
    _, _, result = flipped
    first = result.suspect_labels[0]
    assert (first.path, first.given, first.suggested) == ("green/img_05_was_red.png", "green", "red")
    assert first.flagged and 0.5 < first.score <= 1.0 and first.confidence > 0.5
    assert all(s.score < first.score for s in result.suspect_labels[1:])


def test_exact_copy_in_two_classes_is_also_a_suspect_label(planted) -> None:  # noqa: ANN001
    _, _, result = planted
    suspects = {s.path: s for s in result.suspect_labels}
    assert suspects["train/green/same_as_blue_s_01.png"].suggested == "blue"


def test_blank_image_is_an_outlier(planted) -> None:  # noqa: ANN001
    _, _, result = planted
    assert result.outliers and result.outliers[0].path == "train/blue/blank.png", result.outliers
    assert result.outliers[0].z >= 6 and len(result.outliers) <= 2


def test_learning_curves_cover_every_class(planted) -> None:  # noqa: ANN001
    _, _, result = planted
    assert sorted(c.class_name for c in result.learning_curves) == sorted(COLORS)
    assert result.curve_fractions == (0.25, 0.5, 0.75, 1.0)
    for curve in result.learning_curves:
        assert len(curve.recall) == 4 and all(0 <= r <= 1 for r in curve.recall)
        assert curve.train_images == tuple(sorted(curve.train_images))
    slopes = [c.slope for c in result.learning_curves]
    assert slopes == sorted(slopes, reverse=True)


def test_second_call_reuses_the_caches_and_gives_the_same_findings(planted) -> None:  # noqa: ANN001
    data, cache, result = planted
    again = tlkit.doctor(data, cache_dir=cache, **TINY)
    assert again.timings["features_computed"] == 0
    strip = lambda d: {k: v for k, v in d.items() if k != "timings"}  # noqa: E731
    assert strip(again.to_dict()) == strip(result.to_dict())


def test_cli_json_contract(planted, tmp_path: Path) -> None:  # noqa: ANN001
    data, cache, _ = planted
    before = tree_digest(data)
    res = CliRunner().invoke(app, ["doctor", str(data), *CLI_TINY, "--cache-dir", str(cache), "--json",
                                   "--out", str(tmp_path / "out")])
    d = json.loads(res.stdout)
    assert res.exit_code == 1 and d["ok"] is False, res.output  # the planted leak: exit 1, as tlkit check does
    for key in ("near_duplicates", "suspect_labels", "outliers", "learning_curves", "label_conflicts", "leaks", "warnings"):
        assert key in d
    for p in d["near_duplicates"]:
        assert isinstance(p["paths"], list) and len(p["paths"]) == 2 and all(isinstance(x, str) for x in p["paths"])
        assert p["kind"] in ("exact", "near") and isinstance(p["similarity"], float) and len(p["splits"]) == 2
        assert all((data / x).is_file() for x in p["paths"])  # relative to DATA
    for s in d["suspect_labels"]:
        assert set(s) >= {"path", "given", "suggested", "score"} and isinstance(s["score"], float)
        assert s["given"] in d["classes"] and s["suggested"] in d["classes"] and (data / s["path"]).is_file()
    scores = [s["score"] for s in d["suspect_labels"]]
    assert scores == sorted(scores, reverse=True) and "train/green/same_as_blue_s_01.png" in [s["path"] for s in d["suspect_labels"]]
    assert tree_digest(data) == before
    for name in ("doctor.json", "relabel.csv", "duplicates.csv", "outliers.csv", "learning_curves.csv", "learning_curves.png"):
        assert (tmp_path / "out" / name).is_file(), name
    assert json.loads((tmp_path / "out" / "doctor.json").read_text())["near_duplicates"] == d["near_duplicates"]


def test_cli_tables(planted) -> None:  # noqa: ANN001
    data, cache, _ = planted
    res = CliRunner().invoke(app, ["doctor", str(data), *CLI_TINY, "--cache-dir", str(cache), "--top", "3"])
    assert res.exit_code == 1, res.output  # leakage and a label conflict are planted
    for text in ("leakage", "label-conflict", "suspect labels", "same_as_blue_s_01.png", "outliers", "blank.png",
                 "what to collect next"):
        assert text in res.stdout, text


def test_relabel_csv_applies_fixes_and_exclusions_without_touching_files(flipped, tmp_path: Path) -> None:  # noqa: ANN001
    from tlkit.diagnosis import apply_relabel, write_doctor_report

    data, _, result = flipped
    write_doctor_report(result, tmp_path)
    lines = (tmp_path / "relabel.csv").read_text().splitlines()
    assert lines[0] == "path,given,suggested,score,action"
    assert lines[1].startswith("green/img_05_was_red.png,green,red,") and lines[1].endswith(",relabel")
    edited = tmp_path / "edited.csv"
    edited.write_text(lines[0] + "\n" + lines[1] + "\n"
                      + f"{data / 'blue' / 'img_03.png'},blue,,0.9,exclude\n"  # absolute path
                      + "red/img_01.png,blue,green,0.5,relabel\n"  # stale: the image is red
                      + "red/nowhere.png,red,blue,0.5,relabel\n"
                      + "red/img_02.png,red,blue,0.5,review\n")
    before = tree_digest(data)
    manifest = tlkit.scan(data)
    fixed, applied = apply_relabel(manifest, edited)
    assert applied.relabeled == [("green/img_05_was_red.png", "green", "red")]
    assert applied.excluded == ["blue/img_03.png"]
    assert applied.mismatched == ["red/img_01.png"] and applied.not_found == ["red/nowhere.png"]
    assert applied.unchanged == 1
    labels = {rel: label for split in fixed.splits.values() for rel, label in split}
    assert fixed.classes[labels["green/img_05_was_red.png"]] == "red" and "blue/img_03.png" not in labels
    assert {"path": "blue/img_03.png", "reason": "excluded by relabel.csv"} in fixed.skipped
    assert sum(len(v) for v in fixed.splits.values()) == sum(len(v) for v in manifest.splits.values()) - 1
    before_labels = {rel: label for split in manifest.splits.values() for rel, label in split}
    assert before_labels["green/img_05_was_red.png"] == manifest.classes.index("green")  # the input is left as it was
    assert tree_digest(data) == before


def test_relabel_csv_errors(flipped, tmp_path: Path) -> None:  # noqa: ANN001
    from tlkit.diagnosis import apply_relabel

    data, _, _ = flipped
    manifest = tlkit.scan(data)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,given,suggested,score,action\nred/img_01.png,red,purple,0.5,relabel\n")
    with pytest.raises(ConfigError, match="purple"):
        apply_relabel(manifest, bad)
    bad.write_text("path,given,suggested,score,action\nred/img_01.png,red,blue,0.5,delete\n")
    with pytest.raises(ConfigError, match="unknown action"):
        apply_relabel(manifest, bad)
    bad.write_text("file,label\nx,y\n")
    with pytest.raises(ConfigError, match="no path or action column"):
        apply_relabel(manifest, bad)
    with pytest.raises(DataError):
        apply_relabel(manifest, tmp_path / "missing.csv")


# --------------------------------------------------------------------------- bad input


def assert_error_line(res, *needles: str) -> None:  # noqa: ANN001
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    last = [line for line in res.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error:"), res.stderr
    for needle in needles:
        assert needle in last, (needle, last)


def test_missing_folder_and_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    assert_error_line(runner.invoke(app, ["doctor", str(tmp_path / "nope"), *CLI_TINY]), "does not exist")
    data = smooth_dataset(tmp_path / "data", n=4)
    assert_error_line(runner.invoke(app, ["doctor", str(data), *CLI_TINY, "--folds", "1"]), "--folds")
    assert_error_line(runner.invoke(app, ["doctor", str(data), *CLI_TINY, "--out", str(data / "report")]), "inside")
    assert not (data / "report").exists()


def test_no_weights_offline_is_a_one_line_error(tmp_path: Path) -> None:
    data = smooth_dataset(tmp_path / "data", n=4)
    res = CliRunner().invoke(app, ["doctor", str(data), "--backbone", "resnet18", "--offline",
                                   "--cache-dir", str(tmp_path / "cache")], env={"TORCH_HOME": str(tmp_path / "torch")})
    assert_error_line(res, "no pretrained weights")


def test_one_class_still_finds_duplicates_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "red").mkdir(parents=True)
    for i in range(6):
        smooth_image(COLORS["red"], i).save(data / "red" / f"s_{i}.png")
    shutil.copyfile(data / "red" / "s_0.png", data / "red" / "again.png")
    result = tlkit.doctor(data, cache_dir=tmp_path / "cache", **TINY)
    assert [set(p.paths) for p in result.near_duplicates] == [{"red/again.png", "red/s_0.png"}]
    assert not result.suspect_labels and any("at least 2 classes" in w for w in result.warnings)


def test_three_images_and_unreadable_files_give_warnings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name, i in (("red", 0), ("red", 1), ("blue", 2)):
        (data / name).mkdir(parents=True, exist_ok=True)
        smooth_image(COLORS[name], i).save(data / name / f"s_{i}.png")
    (data / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "blue" / "empty.jpg").write_bytes(b"")
    before = tree_digest(data)
    res = CliRunner().invoke(app, ["doctor", str(data), *CLI_TINY, "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert sorted(u["path"] for u in d["unreadable"]) == ["blue/broken.png", "blue/empty.jpg"]
    assert any("broken.png" in w for w in d["warnings"]) and any("single readable image" in w for w in d["warnings"])
    assert d["suspect_labels"] == [] and tree_digest(data) == before


def test_only_unreadable_files_is_a_data_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable image"):
        tlkit.doctor(tmp_path / "data", cache_dir=tmp_path / "cache", **TINY)


def test_jpeg_bytes_round_trip_helper_is_a_real_jpeg(tmp_path: Path) -> None:
    """The planted copy in these tests is what the bench plants: a JPEG at 95% of the size."""
    source = tmp_path / "s.png"
    smooth_image(COLORS["red"], 0).save(source)
    near_copy(source, tmp_path / "c.jpg")
    with Image.open(io.BytesIO((tmp_path / "c.jpg").read_bytes())) as image:
        assert image.format == "JPEG" and image.size == (61, 61)


def test_public_names_and_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    assert tlkit.doctor is tlkit.diagnosis.doctor and tlkit.DoctorResult.__name__ == "DoctorResult"
    data = smooth_dataset(tmp_path / "data", n=5)
    odd = os.path.join(os.fsencode(data / "red"), "caf\xe9.png".encode("latin-1"))
    shutil.copyfile(data / "red" / "s_00.png", odd)  # an exact copy under a Latin-1 name
    res = CliRunner().invoke(app, ["doctor", str(data), *CLI_TINY, "--cache-dir", str(tmp_path / "cache"), "--json"])
    found = json.loads(res.stdout_bytes.decode("utf-8"))
    assert res.exit_code == (0 if found["ok"] else 1), res.output
    pairs = found["near_duplicates"]
    names = {os.fsencode(p) for pair in pairs for p in pair["paths"]}
    assert os.path.relpath(odd, os.fsencode(data)) in names
    table = CliRunner().invoke(app, ["doctor", str(data), *CLI_TINY, "--cache-dir", str(tmp_path / "cache")])
    assert table.exit_code == res.exit_code and "caf\\xe9.png" in table.stdout


def test_group_by_keeps_groups_in_one_fold_and_reports_a_group_in_two_splits(tmp_path: Path) -> None:
    """--group-by on the doctor: given split folders that put one group in train and test are leakage
    (exit 1, listed in the JSON); class folders split by the same groups have none."""
    data = smooth_dataset(tmp_path / "data", split_folders=True)  # train s_00..s_08, test s_09..s_11
    rows = ["path,group"] + [f"{split}/{c}/s_{i:02d}.png,{c}-{i // 2}" for c in COLORS for i in range(12)
                             for split in ["train" if i < 9 else "test"]]
    groups = tmp_path / "groups.csv"
    groups.write_text("\n".join(rows) + "\n")
    result = tlkit.doctor(data, cache_dir=tmp_path / "cache", group_by=str(groups), **TINY)
    assert not result.ok and sorted(g["group"] for g in result.group_leaks) == ["blue-4", "green-4", "red-4"]
    assert result.group_leaks[0]["splits"] == ["train", "test"]
    assert result.group_leaks[0]["paths"] == ["test/blue/s_09.png", "train/blue/s_08.png"]
    assert result.settings["group_by"] == str(groups)
    code = CliRunner().invoke(app, ["doctor", str(data), "--group-by", str(groups), "--json", "--cache-dir",
                                    str(tmp_path / "cache"), *CLI_TINY])
    assert code.exit_code == 1, code.output
    assert [g["group"] for g in json.loads(code.stdout)["group_leaks"]] == [g["group"] for g in result.group_leaks]
    flat = smooth_dataset(tmp_path / "flat")
    flat_groups = tmp_path / "flat.csv"
    flat_groups.write_text("\n".join(["path,group"] + [f"{c}/s_{i:02d}.png,{c}-{i // 2}" for c in COLORS
                                                          for i in range(12)]) + "\n")
    assert tlkit.doctor(flat, cache_dir=tmp_path / "cache", group_by=str(flat_groups), **TINY).group_leaks == []


def test_result_round_trips_through_its_json(planted) -> None:  # noqa: ANN001
    from tlkit.diagnosis.result import DoctorResult

    _, _, result = planted
    assert DoctorResult.from_dict(json.loads(json.dumps(result.to_dict()))).to_dict() == result.to_dict()
