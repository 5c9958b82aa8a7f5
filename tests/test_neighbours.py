"""The nearest training images beside each mistake of the report's gallery (issue 18.5): optional, drawn to the right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tlkit.evaluation.display import MisclassifiedDisplay
from tlkit.evaluation.metrics import evaluate_predictions
from tlkit.evaluation.neighbours import caption, neighbour_items, with_neighbours


def _result(tmp_path: Path):  # noqa: ANN202
    paths = []
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    return evaluate_predictions([0, 1, 0, 1], np.eye(2)[[1, 0, 0, 1]] * 0.8 + 0.1, ["cat", "dog"], paths=paths,
                                n_bootstrap=0)


def test_without_neighbours_the_gallery_is_as_before(tmp_path: Path) -> None:
    result = _result(tmp_path)
    plain = MisclassifiedDisplay.from_result(result)
    assert plain.neighbours == {} and plain.figsize == MisclassifiedDisplay.from_result(result, neighbours=None).figsize


def test_neighbours_are_drawn_beside_each_mistake(tmp_path: Path) -> None:
    result = _result(tmp_path)
    calls = []

    def find(path: str) -> list[dict]:
        calls.append(path)
        if path.endswith("1.png"):
            raise OSError("gone")
        return [{"path": result.paths[3], "label": "dog", "similarity": 0.9},
                {"path": "/missing.png", "label": "cat", "similarity": 0.5}]

    shown = MisclassifiedDisplay.from_result(result, neighbours=find)
    assert sorted(calls) == sorted(m["path"] for m in result.misclassified)  # once per mistake shown
    assert isinstance(shown.neighbours[0], list) and shown.neighbours[1].startswith("OSError")
    assert shown.figsize[0] > MisclassifiedDisplay.from_result(result).figsize[0]
    shown.plot()
    labels = [ax.get_xlabel() for ax in shown.figure_.axes]
    assert "nearest training: dog 0.90 | cat 0.50" in labels and any("no neighbours: OSError" in t for t in labels)
    strip = with_neighbours(np.zeros((20, 20, 3), np.uint8), shown.neighbours[0], shown.load_image)
    assert strip.shape[0] == 20 and strip.shape[1] > 3 * 20  # the picture and two thumbnails as tall as it
    assert caption("x") == "no neighbours: x" and neighbour_items(result.misclassified, None) == {}
