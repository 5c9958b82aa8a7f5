"""Paired comparison of two runs (``tlkit.compare``, ``tlkit compare``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tlkit.cli import app
from tlkit.compare import compare
from tlkit.errors import DataError

CLASSES = ["a", "b"]


def write_predictions(folder: Path, right: np.ndarray, *, paths: list[str] | None = None,
                      labels: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(right)
    paths = paths or [f"/data/test/img_{i:04d}.png" for i in range(n)]
    labels = labels or [CLASSES[i % 2] for i in range(n)]
    with open(folder / "predictions.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["index", "path", "true", "pred", "correct", "confidence", "prob_a", "prob_b"])
        for i, (p, t, r) in enumerate(zip(paths, labels, right)):
            pred = t if r else CLASSES[1 - CLASSES.index(t)]
            w.writerow([i, p, t, pred, int(r), 0.9, 0.9, 0.1])
    return folder


def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A right on 300 of 400; B right on those minus 5, plus 20 of A's mistakes."""
    rng = np.random.default_rng(1)
    right_a = np.zeros(400, bool)
    right_a[rng.permutation(400)[:300]] = True
    right_b = right_a.copy()
    right_b[np.flatnonzero(right_a)[:5]] = False
    right_b[np.flatnonzero(~right_a)[:20]] = True
    # B's file lists the images in another order: matching is by path
    order = rng.permutation(400)
    paths = [f"/data/test/img_{i:04d}.png" for i in range(400)]
    labels = [CLASSES[i % 2] for i in range(400)]
    a = write_predictions(tmp_path / "a", right_a, paths=paths, labels=labels)
    b = write_predictions(tmp_path / "b", right_b[order], paths=[paths[i] for i in order],
                          labels=[labels[i] for i in order])
    return a, b


def test_paired_difference_is_found_and_is_sharper_than_separate_intervals(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    c = compare(a, b)
    assert c.n == 400
    assert c.accuracy_a == pytest.approx(0.75) and c.accuracy_b == pytest.approx(315 / 400)
    assert c.difference == pytest.approx(15 / 400)
    assert (c.only_a_right, c.only_b_right) == (5, 20)
    lo, hi = c.difference_ci
    assert 0 < lo < c.difference < hi
    assert c.p_value < 0.01
    assert c.significant and c.verdict.startswith("B is better")
    # the unpaired 95% intervals (normal approximation) of two accuracies this close would overlap
    half = 1.96 * np.sqrt(0.8 * 0.2 / 400)
    assert c.accuracy_a + half > c.accuracy_b - half
    assert hi - lo < 2 * half

    reverse = compare(b, a)
    assert reverse.difference == pytest.approx(-c.difference)
    assert reverse.verdict.startswith("A is better")


def test_a_difference_only_one_test_sees_is_called_borderline(tmp_path: Path) -> None:
    # 1,000 images, 27 only A gets right and 44 only B: the bootstrap interval just leaves out 0,
    # McNemar's exact test (p ~ 0.057) does not reject
    right_a = np.zeros(1000, bool)
    right_a[:850] = True
    right_b = right_a.copy()
    right_b[:27] = False
    right_b[850:894] = True
    c = compare(write_predictions(tmp_path / "a", right_a), write_predictions(tmp_path / "b", right_b))
    assert (c.only_a_right, c.only_b_right) == (27, 44)
    assert c.interval_excludes_zero and 0.05 < c.p_value < 0.06
    assert not c.significant and c.verdict.startswith("borderline: B looks better")


def test_identical_runs_show_no_difference(tmp_path: Path) -> None:
    right = np.arange(100) % 3 > 0
    a = write_predictions(tmp_path / "a", right)
    b = write_predictions(tmp_path / "b", right)
    c = compare(a, b)
    assert c.difference == 0 and c.difference_ci == (0.0, 0.0)
    assert c.p_value == 1.0 and not c.significant
    assert c.verdict.startswith("no clear difference")


def test_runs_on_different_images_are_refused(tmp_path: Path) -> None:
    a = write_predictions(tmp_path / "a", np.ones(10, bool))
    b = write_predictions(tmp_path / "b", np.ones(10, bool), paths=[f"/other/{i}.png" for i in range(10)])
    with pytest.raises(DataError, match="different images"):
        compare(a, b)
    c = write_predictions(tmp_path / "c", np.ones(10, bool), labels=["b"] * 10)
    with pytest.raises(DataError, match="different true labels"):
        compare(a, c)
    with pytest.raises(DataError, match="no predictions.csv"):
        compare(a, tmp_path / "missing")


def test_cli_compare(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "B is better" in result.output and "only B right: 20" in result.output
    result = runner.invoke(app, ["compare", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["only_a_right"] == 5
    result = runner.invoke(app, ["compare", str(a), str(tmp_path / "nope")])
    assert result.exit_code == 1 and "error:" in result.stderr and "Traceback" not in result.output


def test_tlkit_compare_stays_callable_after_its_module_is_imported(tmp_path: Path) -> None:
    import tlkit
    import tlkit.compare  # noqa: F401  (importing the module rebinds tlkit.compare to it)
    import tlkit.demo  # noqa: F401

    a, b = pair(tmp_path)
    assert tlkit.compare(a, b).difference == tlkit.compare(a, b).difference == pytest.approx(15 / 400)
    assert callable(tlkit.demo) and callable(tlkit.evaluate)
