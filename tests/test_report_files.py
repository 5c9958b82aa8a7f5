"""tlkit.report.files: the files written, their contents match the result; write_run_report adds the model's Grad-CAM."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from eval_cases import SCRIPT, make_result, undecodable_result
from PIL import Image

from tlkit.report.files import GALLERY_MAX_IMAGES, prediction_rows, write_report, write_run_report
from tlkit.rundir import REPORT_FILES

EXPECTED_FILES = {
    "metrics.json",
    "per_class.csv",
    "confusion_matrix.csv",
    "predictions.csv",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "reliability.png",
    "per_class.png",
    "misclassified.png",
    "report.html",
}


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_write_report_files_and_contents(tmp_path: Path) -> None:
    assert EXPECTED_FILES == REPORT_FILES  # the run directory's rules know every file of a report
    result = make_result(4, 40, tmp_path)
    out = tmp_path / "report"
    written = write_report(result, out, extra={"backbone": "test_resnet", "run_dir": tmp_path})
    assert set(written) == EXPECTED_FILES
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES  # no temp files left behind
    for path in written.values():
        assert path.stat().st_size > 0

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["accuracy"] == pytest.approx(result.accuracy)
    assert metrics["confusion"] == result.confusion.tolist()
    assert metrics["classes"] == result.classes
    assert metrics["run"]["backbone"] == "test_resnet"
    assert metrics["unknown"] == {"new <class>": ["u/1.jpg"]}

    assert metrics["accuracy_ci_method"] == "clopper-pearson"
    assert metrics["per_class"][0]["recall_ci_low"] == pytest.approx(result.per_class[0]["recall_ci_low"])

    per_class = read_csv(out / "per_class.csv")
    # the old columns first, in their old order; the intervals and the predicted count after them
    assert per_class[0] == ["class", "precision", "recall", "f1", "support", "precision_ci_low",
                            "precision_ci_high", "recall_ci_low", "recall_ci_high", "predicted"]
    for row, expected in zip(per_class[1:], result.per_class):
        assert row[0] == expected["class"]
        assert float(row[3]) == pytest.approx(expected["f1"])
        assert int(row[4]) == expected["support"]
        assert float(row[7]) == pytest.approx(expected["recall_ci_low"])
        assert float(row[8]) == pytest.approx(expected["recall_ci_high"])
        assert int(row[9]) == expected["predicted"]

    matrix = read_csv(out / "confusion_matrix.csv")
    assert matrix[0][1:] == result.classes
    assert [r[0] for r in matrix[1:]] == result.classes
    assert [[int(v) for v in r[1:]] for r in matrix[1:]] == result.confusion.tolist()

    predictions = read_csv(out / "predictions.csv")
    header, rows = predictions[0], predictions[1:]
    assert header[:6] == ["index", "path", "true", "pred", "correct", "confidence"]
    assert header[6:] == [f"prob_{c}" for c in result.classes]
    assert len(rows) == result.n
    assert rows[3][1] == result.paths[3]
    assert rows[3][2] == result.classes[result.y_true[3]]
    np.testing.assert_allclose([float(v) for v in rows[3][6:]], result.probs[3])
    assert prediction_rows(result)[0] == header

    for name in EXPECTED_FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                assert image.format == "PNG"


@pytest.mark.parametrize("n_classes", [2, 50])
def test_write_report_small_and_large(tmp_path: Path, n_classes: int) -> None:
    result = make_result(n_classes, 10 * n_classes, seed=n_classes)
    written = write_report(result, tmp_path / "out")
    # two classes: the ROC and precision-recall curves come too
    assert set(written) == EXPECTED_FILES | ({"roc.png", "precision_recall.png"} if n_classes == 2 else set())
    matrix = read_csv(tmp_path / "out" / "confusion_matrix.csv")
    assert len(matrix) == n_classes + 1 and len(matrix[0]) == n_classes + 1
    page = written["report.html"].read_text(encoding="utf-8")
    assert "&lt;script&gt;" in page and SCRIPT not in page


def test_report_with_undecodable_file_and_class_names(tmp_path: Path) -> None:
    """A file named b"caf\xe9.png" is 'caf\udce9.png' in Python: every file is written; the CSV and
    JSON give the very same string back; the HTML shows caf\xe9.png."""
    result, paths, classes, _ = undecodable_result(tmp_path)
    out = tmp_path / "report"
    written = write_report(result, out, extra={"run_dir": Path("/runs/caf\udce9")})
    assert set(written) == EXPECTED_FILES

    with (out / "predictions.csv").open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.reader(handle))
    assert [r[1] for r in rows[1:]] == paths
    assert b"/data/test/caf\xe9 0.png" in (out / "predictions.csv").read_bytes()
    with (out / "per_class.csv").open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        assert [r[0] for r in list(csv.reader(handle))[1:]] == classes

    raw = (out / "metrics.json").read_bytes()
    raw.decode("utf-8")  # valid UTF-8, the surrogates escaped
    assert b"\\udce9" in raw
    metrics = json.loads(raw)
    assert metrics["classes"] == classes
    assert [m["path"] for m in metrics["misclassified_worst"]] == [m["path"] for m in result.misclassified[:20]]
    assert metrics["unknown"] == result.unknown
    assert metrics["run"]["run_dir"] == "/runs/caf\udce9"

    page = (out / "report.html").read_text(encoding="utf-8")  # strict: valid UTF-8
    assert "caf\\xe9 " in page and "d\\xfcsseldorf" in page and "\\xe9t\\xe9" in page


def test_report_gallery_shows_grad_cam_beside_each_mistake(tmp_path: Path) -> None:
    """With an explainer, each mistake is drawn as image | overlay; at most 16 are computed;
    without one the gallery is unchanged (the figure itself: test_display.py)."""
    result = make_result(4, 80, tmp_path)
    assert len(result.misclassified) > GALLERY_MAX_IMAGES == 16
    asked: list[str] = []

    def explain(path: str) -> tuple[np.ndarray, np.ndarray]:
        asked.append(path)
        if len(asked) == 2:
            raise ValueError("cannot explain this one")
        return np.zeros((6, 6, 3), np.uint8), np.full((6, 6, 3), 255, np.uint8)

    written = write_report(result, tmp_path / "with", explain=explain)
    assert asked == [m["path"] for m in result.misclassified[:16]]
    page = written["report.html"].read_text(encoding="utf-8")
    assert "Grad-CAM heat map for the predicted class" in page
    plain = write_report(result, tmp_path / "without")
    assert "Grad-CAM" not in plain["report.html"].read_text(encoding="utf-8")
    with Image.open(written["misclassified.png"]) as a, Image.open(plain["misclassified.png"]) as b:
        assert a.size != b.size  # 3 wide tiles per row instead of 4 square ones


def test_write_run_report_reads_the_images_and_explains_them_with_the_model(
        tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one report of a trained model, as training and `tlkit evaluate` write it: write_report
    with tlkit.data.load_image and the model's Grad-CAM explainer, the title and run info passed on."""
    import torch

    import tlkit.report.files
    from tlkit.data import load_image
    from tlkit.evaluation.metrics import evaluate_predictions
    from tlkit.models.builder import build
    from tlkit.models.heads import HeadSpec
    from tlkit.models.transfer import TransferModel

    torch.manual_seed(0)
    backbone = build("timm:test_resnet", pretrained=False)
    model = TransferModel(backbone, HeadSpec("linear", backbone.feature_dim, 3), ["blue", "green", "red"],
                          backbone.preprocessing.with_size(32)).eval()
    paths = sorted(str(p) for p in tiny_data.rglob("*.png"))[:12]
    y = np.array([model.classes.index(Path(p).parent.name) for p in paths])
    result = evaluate_predictions(y, model.predict(paths).probs, model.classes, paths=paths, n_bootstrap=0)
    assert result.misclassified  # an untrained head gets some wrong

    calls: list[dict] = []
    real = tlkit.report.files.write_report

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tlkit.report.files, "write_report", spy)  # as the training tests patch it
    written = write_run_report(result, model, tmp_path / "run", title="tlkit: colors", extra={"recipe": "x"})
    assert set(written) == EXPECTED_FILES
    assert calls[0]["load_image"] is load_image and calls[0]["title"] == "tlkit: colors"
    page = written["report.html"].read_text(encoding="utf-8")
    assert "Grad-CAM heat map for the predicted class" in page and "tlkit: colors" in page
    assert json.loads(written["metrics.json"].read_text())["run"] == {"recipe": "x"}
