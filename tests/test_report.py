"""report: files written, their contents match the result, HTML is self-contained and escaped."""

from __future__ import annotations

import csv
import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from tlkit.evaluation.scoring import EvalResult, evaluate_predictions
from tlkit.report.files import plot_misclassified, print_summary, write_report

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
SCRIPT = "<script>alert(1)</script>"


def make_result(
    n_classes: int, n: int, tmp_path: Path | None = None, *, seed: int = 0
) -> EvalResult:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    classes = [f"class {i}" for i in range(n_classes)]
    classes[0] = SCRIPT
    classes[1] = "../x"
    if n_classes > 2:
        classes[2] = "élan ✓"
    paths = None
    if tmp_path is not None:
        paths = []
        for i in range(n):
            path = tmp_path / "images" / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (i * 37 % 255, 90, 160)).save(path)
            paths.append(str(path))
    return evaluate_predictions(
        y, probs, classes, paths=paths, unknown={"new <class>": ["u/1.jpg"]}, n_bootstrap=100
    )


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_write_report_files_and_contents(tmp_path: Path) -> None:
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

    for name in EXPECTED_FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                assert image.format == "PNG"


def test_report_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    result = make_result(3, 30, tmp_path)
    write_report(result, tmp_path / "r", title="Run <b>1</b>", extra={"note": "<img src=x>"})
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert 'src="http' not in page and "src='http" not in page
    assert not re.search(r"""(href|src)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert page.count("data:image/png;base64,") == 5
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x>" not in page and "Run &lt;b&gt;1&lt;/b&gt;" in page
    assert "élan ✓" in page
    assert "new &lt;class&gt;" in page
    # per-class intervals in the table, the method named
    first = result.per_class[0]
    assert f"[{first['recall_ci_low']:.3f}, {first['recall_ci_high']:.3f}]" in page
    assert "clopper-pearson" in page


def test_warnings_are_shown_in_a_box(tmp_path: Path) -> None:
    small = make_result(3, 20)  # 20 images: too few
    assert small.warnings
    page = write_report(small, tmp_path / "small")["report.html"].read_text(encoding="utf-8")
    box = page[page.index('<div class="warn" role="alert">'):]
    box = box[: box.index("</div>")]
    for warning in small.warnings:
        assert html.escape(warning, quote=True) in box
    assert '<div class="warn" role="alert">' in small._repr_html_()
    console = Console(record=True, width=200)
    print_summary(small, console)
    text = console.export_text()
    assert all(f"warning: {w}" in " ".join(text.split()) for w in small.warnings)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    large = evaluate_predictions(y, np.eye(3)[y] * 0.9 + 0.1 / 3, ["a", "b", "c"], n_bootstrap=100)
    assert large.warnings == []
    assert 'role="alert"' not in write_report(large, tmp_path / "large")["report.html"].read_text(encoding="utf-8")


def test_report_with_undecodable_file_and_class_names(tmp_path: Path) -> None:
    """A file named b"caf\xe9.png" is 'caf\udce9.png' in Python: every output works; the CSV and
    JSON give the very same string back; the HTML and the terminal show caf\xe9.png."""
    n = 40
    rng = np.random.default_rng(3)
    y = np.arange(n) % 3
    probs = rng.dirichlet(np.ones(3), n)
    paths = [f"/data/test/caf\udce9 {i}.png" for i in range(n)]  # no such files: the gallery copes
    real = tmp_path / "caf\udce9 real.png"  # and one that exists, on disk as b"caf\xe9 real.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(real)
    assert os.fsencode(real).endswith(b"caf\xe9 real.png")
    classes = ["ok", "d\udcfcsseldorf", "\udc80bad"]
    worst = int(np.argmax(np.where(probs.argmax(axis=1) != y, probs.max(axis=1), 0)))
    paths[worst] = str(real)
    result = evaluate_predictions(y, probs, classes, paths=paths, n_bootstrap=50,
                                  unknown={"\udce9t\udce9": ["/data/test/\udce9t\udce9/x\udcff.png"]})
    assert result.misclassified[0]["path"] == str(real)
    figure = plot_misclassified(result, max_images=2)
    assert figure.axes[0].get_images()[0].get_array().shape == (8, 8, 3)  # the real file, loaded
    assert "caf\\xe9 real.png" in [t.get_text() for t in figure.axes[0].texts]
    import matplotlib.pyplot as plt

    plt.close(figure)
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

    console = Console(record=True, width=200)
    print_summary(result, console)
    text = console.export_text()
    text.encode("utf-8")  # printable: no lone surrogates reach the terminal
    assert "d\\xfcsseldorf" in text and "\\xe9t\\xe9" in text
    result.summary_text().encode("utf-8")


@pytest.mark.parametrize("n_classes", [2, 50])
def test_write_report_small_and_large(tmp_path: Path, n_classes: int) -> None:
    result = make_result(n_classes, 10 * n_classes, seed=n_classes)
    written = write_report(result, tmp_path / "out")
    assert set(written) == EXPECTED_FILES
    matrix = read_csv(tmp_path / "out" / "confusion_matrix.csv")
    assert len(matrix) == n_classes + 1 and len(matrix[0]) == n_classes + 1
    page = written["report.html"].read_text(encoding="utf-8")
    assert "&lt;script&gt;" in page and SCRIPT not in page


def test_misclassified_without_paths_says_so() -> None:
    result = make_result(3, 30)
    figure = plot_misclassified(result)
    texts = [t.get_text() for t in figure.texts]
    assert any("no file paths" in t for t in texts)
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_misclassified_uses_load_image(tmp_path: Path) -> None:
    result = make_result(3, 30, tmp_path)
    loaded: list[str] = []

    def load(path: str) -> np.ndarray:
        loaded.append(path)
        return np.zeros((4, 4, 3))

    figure = plot_misclassified(result, max_images=3, load_image=load)
    assert loaded == [m["path"] for m in result.misclassified[:3]]
    first_title = figure.axes[0].get_title()
    assert "true:" in first_title and "pred:" in first_title
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_gallery_shows_grad_cam_beside_each_mistake(tmp_path: Path) -> None:
    """With an explainer, each mistake is drawn as image | overlay; at most 16 are computed; a
    failing one shows its error; without one the gallery is unchanged."""
    result = make_result(4, 80, tmp_path)
    assert len(result.misclassified) > 16
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

    asked.clear()
    figure = plot_misclassified(result, max_images=3, explain=explain)
    first, second = figure.axes[0].get_images()[0].get_array(), figure.axes[1].get_images()[0].get_array()
    assert first.shape[1] > 2 * 6 and first[:, :6].max() == 0 and first[:, -6:].min() == 255  # seen | overlay
    assert second.shape == (8, 8, 3)  # the plain image, and the reason below it
    assert "cannot explain this one" in figure.axes[1].get_xlabel()
    assert "Grad-CAM" in figure._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_print_summary(tmp_path: Path) -> None:
    result = make_result(4, 40)
    console = Console(record=True, width=160)
    print_summary(result, console)
    text = console.export_text()
    assert f"{result.accuracy:.3f}" in text
    for name in result.classes:
        assert name in text  # printed literally, not eaten as rich markup
    assert "Confusion matrix" in text
    assert "new <class>" in text

    wide = make_result(20, 100)
    console = Console(record=True, width=160)
    print_summary(wide, console, max_matrix_classes=12)
    assert "confusion_matrix.csv" in console.export_text()
