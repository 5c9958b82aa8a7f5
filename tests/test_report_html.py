"""tlkit.report.html: the page is self-contained, escaped, and shows intervals, warnings and every section."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from eval_cases import SCRIPT, make_result

from tlkit.evaluation.metrics import evaluate_predictions
from tlkit.report.files import write_report
from tlkit.report.html import IMAGES, report_html


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

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    large = evaluate_predictions(y, np.eye(3)[y] * 0.9 + 0.1 / 3, ["a", "b", "c"], n_bootstrap=100)
    assert large.warnings == []
    assert 'role="alert"' not in write_report(large, tmp_path / "large")["report.html"].read_text(encoding="utf-8")


def test_page_sections_in_order_from_the_result_and_its_images() -> None:
    result = make_result(3, 30)
    images = {name: name.encode() for name in IMAGES}  # any bytes: the page only embeds them
    page = report_html(result, "T", {"backbone": "b", "split": {"test": 30}}, images, gradcam=True)
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == ["Confusion matrix", "Per class", "Most confused pairs", "Calibration", "Most confident mistakes"]
    assert page.index("<th class=\"name\">backbone</th>") < page.index('<div class="cards">')
    assert "{&quot;" not in page and "test 30" in page  # run info that is not text is shown as readable rows, never JSON
    assert '<div class="pair">' in page  # 3 classes: the two matrices side by side
    assert "Grad-CAM heat map" in page
    assert page.endswith("</body></html>")
