"""The data doctor's doctor.html (issue 16.3): escaping, the ranked gallery, thumbnails and their
placeholder, a page with nothing external, and write_doctor_report writing it (once end to end)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import tlkit
from tlkit.diagnosis.files import write_doctor_report
from tlkit.diagnosis.result import DoctorResult, DuplicatePair, LearningCurve, Outlier, SuspectLabel
from tlkit.evaluation.summary import escape
from tlkit.report.doctor_html import doctor_page_html, doctor_section_html, learning_curve_png, thumbnail_loader

EVIL = "<script>"  # a class folder name the page must escape
PNG_PIXEL = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8  # only the signature matters to the page


def hand_result(root: Path, suspects: int = 3) -> DoctorResult:
    """A result with every kind of finding, one class named like a script tag."""
    classes = ["cat", EVIL]
    return DoctorResult(
        root=str(root), classes=classes, counts={"train": {"cat": 4, EVIL: 4}, "val": {}, "test": {"cat": 1}},
        near_duplicates=[
            DuplicatePair(("cat/a.png", "cat/a_copy.png"), "exact", 1.0, 0, ("train", "train"), ("cat", "cat")),
            DuplicatePair(("cat/b.png", f"{EVIL}/b.png"), "near", 0.97, 3, ("train", "train"), ("cat", EVIL)),
        ],
        suspect_labels=[SuspectLabel(f"cat/s_{i:02d}.png", "train", "cat", EVIL, 0.9 - i / 100, 0.8, i % 2 == 0)
                        for i in range(suspects)],
        outliers=[Outlier("cat/blank.png", "train", "cat", 12.5, 6.1, EVIL, "blank")],
        learning_curves=[LearningCurve("cat", 5, (1, 2, 4), (0.2, 0.5, 0.7), 0.25, True),
                         LearningCurve(EVIL, 4, (1, 2, 3), (0.9, 0.9, 0.9), 0.0, False)],
        curve_fractions=(0.25, 0.5, 1.0), curve_accuracy=[0.5, 0.7, 0.8],
        warnings=[f"class {EVIL} has few images"], settings={"backbone": "timm:test_resnet", "images": 9, "readable": 9},
    )


def fake_loader(path: str) -> bytes | None:
    return None if "blank" in path else PNG_PIXEL


def test_class_named_script_is_escaped_everywhere(tmp_path: Path) -> None:
    page = doctor_page_html(hand_result(tmp_path), f"doctor {EVIL}", load_thumbnail=fake_loader)
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 6  # title, pair, gallery, outlier, table, warning


def test_page_is_self_contained_and_fits_a_phone(tmp_path: Path) -> None:
    page = doctor_page_html(hand_result(tmp_path), "doctor", load_thumbnail=fake_loader)
    assert "http" not in page
    assert re.findall(r'src="([a-z]+):', page) and set(re.findall(r'src="([a-z]+):', page)) == {"data"}
    assert '<meta name="viewport"' in page and page.startswith("<!DOCTYPE html>")
    assert page.count("<table") == page.count('<div class="scroll"><table')  # every table scrolls inside a box
    assert "overflow-x: auto" in page and "max-width: 100%" in page


def test_fragment_has_no_page_around_it_and_counts_the_findings(tmp_path: Path) -> None:
    fragment = doctor_section_html(hand_result(tmp_path), load_thumbnail=fake_loader)
    assert "<html" not in fragment and "<body" not in fragment and fragment.startswith('<div class="tlkit">')
    cards = dict(re.findall(r'<div class="k">([^<]+)</div><div class="v">([^<]+)</div>', fragment))
    assert cards == {"images": "9", "leaks across splits": "0", "label conflicts": "1",
                     "duplicates within a split": "1", "suspect labels": "3", "outliers": "1", "warnings": "1"}


def test_gallery_follows_the_ranking_and_says_how_many_more(tmp_path: Path) -> None:
    result = hand_result(tmp_path, suspects=60)
    result.suspect_labels.reverse()  # the page keeps the result's order: here s_59 is "most suspect"
    fragment = doctor_section_html(result, load_thumbnail=fake_loader, max_items=48)
    gallery = fragment.split("<h2>Suspect labels</h2>")[1].split("<h2>")[0]
    shown = re.findall(r'<div class="path">cat/s_(\d\d)\.png</div>', gallery)
    assert shown == [f"{i:02d}" for i in range(59, 11, -1)]
    assert re.findall(r"<b>#(\d+)</b>", gallery)[:3] == ["1", "2", "3"]
    assert "12 more in relabel.csv" in gallery
    assert gallery.count('class="flag"') == sum(s.flagged for s in result.suspect_labels[:48])


def test_duplicates_show_errors_first_with_both_thumbnails(tmp_path: Path) -> None:
    result = hand_result(tmp_path)
    calls: list[str] = []

    def loader(path: str) -> bytes:
        calls.append(path)
        return PNG_PIXEL

    fragment = doctor_section_html(result, load_thumbnail=loader)
    table = fragment.split("<h2>Duplicates</h2>")[1].split("<h2>")[0]
    assert table.index("label-conflict") < table.index(">duplicate<")  # errors first, whatever the result's order
    assert table.count('<img class="thumb"') == 4
    assert len(calls) == len(set(calls))  # each file loaded once


def test_unreadable_thumbnail_is_a_placeholder(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "cat" / "s_00.png")
    (tmp_path / "cat" / "blank.png").write_bytes(b"not an image at all")
    load = thumbnail_loader(tmp_path, size=48)
    assert load("cat/blank.png") is None and load("cat/missing.png") is None  # never raises
    thumb = load("cat/s_00.png")
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format in ("JPEG", "PNG") and max(image.size) == 48
    fragment = doctor_section_html(hand_result(tmp_path, suspects=1), load_thumbnail=load)
    outliers = fragment.split("<h2>Outliers</h2>")[1].split("<h2>")[0]
    assert 'class="thumb none"' in outliers and "no preview" in outliers and "<img" not in outliers
    gallery = fragment.split("<h2>Suspect labels</h2>")[1].split("<h2>")[0]
    assert gallery.count('src="data:image/jpeg;base64,') == 1


def test_no_findings_still_make_a_page(tmp_path: Path) -> None:
    empty = DoctorResult(root=str(tmp_path), classes=["a"], counts={"train": {"a": 1}})
    page = doctor_page_html(empty, "doctor", load_thumbnail=fake_loader)
    assert "No exact or near duplicates found" in page and "No learning curves" in page and "Warnings" not in page


def test_learning_curve_plot_stays_importable_from_the_writer(tmp_path: Path) -> None:
    from tlkit.diagnosis import files

    assert files.learning_curve_png is learning_curve_png
    assert learning_curve_png(hand_result(tmp_path)).startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def doctored(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> tuple[Path, Path, DoctorResult]:  # noqa: ANN001
    """A class named ``<script>``, a copy across classes, an unreadable file; the doctor run once on it."""
    from conftest import _make_color_dataset

    base = tmp_path_factory.mktemp("doctor_html")
    data = _make_color_dataset(base / "data", {"red": 8, "green": 8, EVIL: 8})
    shutil.copyfile(data / "red" / "img_01.png", data / "green" / "copy_of_red_01.png")  # a label conflict
    (data / "red" / "broken.png").write_bytes(b"\x89PNG truncated")  # unreadable: a warning
    result = tlkit.doctor(data, cache_dir=base / "cache", backbone="timm:test_resnet", pretrained=False, image_size=32)
    return data, base / "cache", result


def test_doctor_end_to_end_writes_doctor_html(doctored, tmp_path: Path) -> None:  # noqa: ANN001
    _, _, result = doctored
    written = write_doctor_report(result, tmp_path / "out")
    assert written[-1] == tmp_path / "out" / "doctor.html" and (tmp_path / "out" / "learning_curves.png").is_file()
    page = (tmp_path / "out" / "doctor.html").read_text(encoding="utf-8")
    assert "http" not in page and "<script" not in page.lower() and "&lt;script&gt;" in page
    assert "copy_of_red_01.png" in page and "label-conflict" in page and "broken.png" in page
    assert page.count('src="data:image/jpeg;base64,') >= 2 and 'src="data:image/png;base64,' in page
    if result.suspect_labels:
        gallery = page.split("<h2>Suspect labels</h2>")[1]
        assert re.search(r'<div class="path">([^<]+)</div>', gallery).group(1) == escape(result.suspect_labels[0].path)


def test_cli_lists_doctor_html(doctored, tmp_path: Path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from tlkit.cli import app

    data, cache, _ = doctored
    res = CliRunner().invoke(app, ["doctor", str(data), "--backbone", "timm:test_resnet", "--no-pretrained",
                                   "--image-size", "32", "--cache-dir", str(cache), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output  # the planted label conflict
    assert "doctor.html" in res.stdout and (tmp_path / "out" / "doctor.html").is_file()
