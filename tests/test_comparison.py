"""tlkit.evaluation.comparison: paired comparison of two runs (and ``tlkit compare``)."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tlkit.cli import app
from tlkit.errors import ConfigError, DataError
from tlkit.evaluation.comparison import MIN_DISCORDANT, compare
from tlkit.evaluation.metrics import evaluate_predictions
from tlkit.evaluation.stats import paired_difference_interval
from tlkit.report.files import write_report

CLASSES = ["a", "b"]


def write_predictions(folder: Path, right: np.ndarray, *, paths: list[str] | None = None,
                      labels: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(right)
    paths = paths or [f"/data/test/img_{i:04d}.png" for i in range(n)]
    labels = labels or [CLASSES[i % 2] for i in range(n)]
    # as tlkit.report.files writes it: UTF-8, undecodable bytes of file names kept (surrogateescape)
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
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
    assert c.difference_ci_method == "percentile-bootstrap"  # 25 disagreements: the bootstrap is sound
    assert c.warnings == ()
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


def test_identical_runs_show_no_difference_with_an_honest_interval(tmp_path: Path) -> None:
    """No disagreement at all: the paired bootstrap said [0, 0]; Newcombe's interval does not
    collapse, and the comparison warns that there is nothing to tell the runs apart by."""
    right = np.arange(100) % 3 > 0
    a = write_predictions(tmp_path / "a", right)
    b = write_predictions(tmp_path / "b", right)
    c = compare(a, b)
    assert c.difference == 0
    lo, hi = c.difference_ci
    assert lo < -0.01 and hi > 0.01
    assert c.difference_ci_method == "newcombe-paired-score"
    assert (lo, hi) == pytest.approx(paired_difference_interval(66, 0, 0, 34, level=0.95))
    assert c.p_value == 1.0 and not c.significant
    assert c.verdict.startswith("no clear difference")
    assert any("too few disagreements to tell the runs apart" in w for w in c.warnings)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["difference_ci_method"] == "newcombe-paired-score" and d["warnings"] == list(c.warnings)


def test_every_image_right_in_both_runs_still_has_an_interval(tmp_path: Path) -> None:
    right = np.ones(50, bool)
    c = compare(write_predictions(tmp_path / "a", right), write_predictions(tmp_path / "b", right))
    lo, hi = c.difference_ci
    assert lo < 0 < hi and hi - lo > 0.05  # 50 images cannot pin the difference to 0
    assert not c.interval_excludes_zero and not c.significant


def test_newcombe_interval_matches_the_published_example() -> None:
    # Fagerland, Lydersen & Laake (2014; Statistical Analysis of Contingency Tables, 2017, ch. 8):
    # Cavo et al. 2012, table [[59, 6], [16, 80]]: Newcombe square-and-add -0.0621 (-0.1186 to -0.0046)
    assert paired_difference_interval(59, 6, 16, 80, level=0.95) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    # the other way round, the interval turns over
    assert paired_difference_interval(59, 16, 6, 80, level=0.95) == pytest.approx((0.0046, 0.1186), abs=5e-5)
    for cells in [(0, 0, 0, 10), (10, 0, 0, 0), (5, 0, 0, 5), (3, 1, 0, 0), (0, 0, 4, 0)]:
        lo, hi = paired_difference_interval(*cells, level=0.95)
        assert -1 <= lo < hi <= 1, cells


def test_few_disagreements_use_newcombe_and_warn(tmp_path: Path) -> None:
    # 1,000 images, 5 only B gets right and none only A
    right_a = np.zeros(1000, bool)
    right_a[:800] = True
    right_b = right_a.copy()
    right_b[800:805] = True
    c = compare(write_predictions(tmp_path / "a", right_a), write_predictions(tmp_path / "b", right_b))
    assert (c.only_a_right, c.only_b_right) == (0, 5) and 5 < MIN_DISCORDANT
    assert c.difference_ci_method == "newcombe-paired-score"
    assert c.difference_ci == pytest.approx(paired_difference_interval(800, 5, 0, 195, level=0.95))
    assert any("only 5 images where the runs disagree" in w for w in c.warnings)
    # the bootstrap of 5 disagreements said [0.001, 0.010]: "leaves out 0" where McNemar p = 0.06
    assert not c.interval_excludes_zero and not c.significant
    assert c.verdict.startswith("no clear difference")


def test_compare_validates_its_options(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    for kwargs, argument in [({"n_bootstrap": -1}, "n_bootstrap"), ({"n_bootstrap": 2.5}, "n_bootstrap"),
                             ({"ci_level": 95}, "ci_level"), ({"seed": "x"}, "seed")]:
        with pytest.raises(ConfigError, match=argument):
            compare(a, b, **kwargs)
    c = compare(a, b, n_bootstrap=0)  # no bootstrap: Newcombe's interval
    assert c.difference_ci_method == "newcombe-paired-score" and c.difference_ci[0] > 0


def test_runs_with_undecodable_file_names_are_matched(tmp_path: Path) -> None:
    """A file named b"caf\xe9_N.png" (not UTF-8) is 'caf\udce9_N.png' in Python: both runs' reports
    are written and compare matches the images by those exact names."""
    paths = [f"/data/test/caf\udce9_{i}.png" for i in range(60)]
    y = np.arange(60) % 2
    right_a = np.arange(60) % 4 > 0
    right_b = np.arange(60) % 5 > 0
    for name, right in (("a", right_a), ("b", right_b)):
        probs = np.eye(2)[np.where(right, y, 1 - y)] * 0.8 + 0.1
        write_report(evaluate_predictions(y, probs, CLASSES, paths=paths, n_bootstrap=0), tmp_path / name)
    raw = (tmp_path / "a" / "predictions.csv").read_bytes()
    assert b"/data/test/caf\xe9_0.png" in raw  # the file's own bytes
    c = compare(tmp_path / "a", tmp_path / "b")
    assert c.n == 60
    assert c.accuracy_a == pytest.approx(right_a.mean()) and c.accuracy_b == pytest.approx(right_b.mean())
    # a predictions.csv with such bytes written by something else is read the same way
    write_predictions(tmp_path / "c", right_a, paths=paths)
    assert compare(tmp_path / "a", tmp_path / "c").difference == 0


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


def test_public_functions_stay_functions_after_their_modules_are_imported(tmp_path: Path) -> None:
    import tlkit
    import tlkit._demo  # noqa: F401  (no module shares its public function's name, so nothing is shadowed)
    import tlkit.evaluation.comparison  # noqa: F401
    import tlkit.evaluation.metrics  # noqa: F401
    import tlkit.evaluation.scoring  # noqa: F401

    a, b = pair(tmp_path)
    assert tlkit.compare(a, b).difference == tlkit.compare(a, b).difference == pytest.approx(15 / 400)
    assert all(inspect.isfunction(getattr(tlkit, name)) for name in ("compare", "evaluate", "demo", "finetune", "load"))
