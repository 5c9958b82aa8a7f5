"""tlkit.evaluation.checks: arguments that cannot be scored are refused by name; small samples are warned about."""

from __future__ import annotations

import numpy as np
import pytest

from tlkit.errors import ConfigError, DataError
from tlkit.evaluation.checks import (
    MAX_CI_WIDTH,
    MIN_CLASS_SUPPORT,
    MIN_TEST_IMAGES,
    PROB_SUM_TOLERANCE,
    check_inputs,
    sample_warnings,
)
from tlkit.evaluation.metrics import evaluate_predictions


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"y_true": [0, 1, 5]}, "y_true"),
        ({"y_true": [0.5, 1, 0]}, "y_true"),
        ({"y_true": [[0, 1, 0]]}, "y_true"),
        ({"probs": np.ones((3, 3)) / 3}, "probs"),
        ({"probs": np.array([[0.5, 0.5], [np.nan, 1.0], [1.0, 0.0]])}, "probs"),
        ({"probs": np.array([[2.0, -1.0], [0.5, 0.5], [1.0, 0.0]]) * 3}, "probs"),
        ({"classes": ["only"]}, "classes"),
        ({"classes": ["a", "a"]}, "classes"),
        ({"paths": ["x.png"]}, "paths"),
        ({"n_bootstrap": -1}, "n_bootstrap"),
        ({"ci_level": 95}, "ci_level"),
        ({"seed": "zero"}, "seed"),
    ],
)
def test_validation_names_the_argument(kwargs: dict, argument: str) -> None:
    call = {
        "y_true": [0, 1, 1],
        "probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]),
        "classes": ["a", "b"],
    }
    call.update(kwargs)
    y_true, probs, classes = call.pop("y_true"), call.pop("probs"), call.pop("classes")
    with pytest.raises(ConfigError, match=argument):
        evaluate_predictions(y_true, probs, classes, **call)


def test_empty_input_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="0 rows"):
        evaluate_predictions([], np.zeros((0, 2)), ["a", "b"])


def test_check_inputs_normalises_what_it_accepts() -> None:
    # float labels that are whole numbers, float32 rows that sum to 1 within the tolerance, paths as str
    probs = np.array([[0.9, 0.1 + PROB_SUM_TOLERANCE / 2], [0.2, 0.8]], dtype=np.float32)
    classes, labels, probs_arr, paths = check_inputs(np.array([0.0, 1.0]), probs, ("a", "b"), [1, 2], 0, 0.9, 3)
    assert classes == ["a", "b"] and labels.dtype == np.int64 and labels.tolist() == [0, 1]
    assert probs_arr.dtype == np.float64 and paths == ["1", "2"]
    assert check_inputs([0, 1], probs, ["a", "b"], None, 0, 0.9, 3)[3] is None


def test_sample_warnings_at_their_thresholds() -> None:
    level = 0.95
    narrow = (0.5, 0.5 + MAX_CI_WIDTH)
    enough = np.array([MIN_CLASS_SUPPORT] * 2 + [MIN_TEST_IMAGES])
    assert sample_warnings(["a", "b", "c"], enough, narrow, narrow, level) == []
    few = sample_warnings(["a", "b"], np.array([MIN_TEST_IMAGES - 1 - (MIN_CLASS_SUPPORT - 1), MIN_CLASS_SUPPORT - 1]),
                          narrow, None, level)
    assert few[0].startswith(f"only {MIN_TEST_IMAGES - 1} test images")
    assert f"'b' ({MIN_CLASS_SUPPORT - 1})" in few[1] and len(few) == 2
    absent = sample_warnings(["a", "b", "c"], np.array([40, 0, 0]), narrow, None, level)
    assert absent == ["2 classes have no test images ('b', 'c'): recall is undefined there (shown as 0) "
                      "and left out of balanced accuracy"]
    wide = sample_warnings(["a", "b"], np.array([40, 40]), (0.1, 0.5), (0.2, 0.9), level)
    assert [w.split(" is ")[0] for w in wide] == ["the 95% interval of accuracy", "the 95% interval of balanced accuracy"]
    assert "0.40 wide" in wide[0] and "0.70 wide" in wide[1]
