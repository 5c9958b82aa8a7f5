"""tlkit.evaluation.display: figures drawn from numbers, each display holding its data and drawing onto any axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from eval_cases import make_result, undecodable_result
from matplotlib.figure import Figure

from tlkit.evaluation.display import (
    ConfusionMatrixDisplay,
    MisclassifiedDisplay,
    PerClassDisplay,
    ReliabilityDisplay,
    explain_items,
)


@pytest.fixture(autouse=True)
def _close_figures():  # noqa: ANN202
    yield
    plt.close("all")


def test_displays_draw_onto_a_given_axes_keep_it_and_return_themselves() -> None:
    result = make_result(4, 40)
    for display in (ConfusionMatrixDisplay.from_result(result), ConfusionMatrixDisplay.from_result(result, normalize=True),
                    ReliabilityDisplay.from_result(result), PerClassDisplay.from_result(result)):
        fig = Figure(figsize=display.figsize)
        ax = fig.add_subplot()
        assert display.plot(ax) is display
        assert display.ax_ is ax and display.figure_ is fig
        assert ax.get_title()
        display.plot()  # no axes: a new pyplot figure of the display's size
        assert display.figure_ is not fig and tuple(display.figure_.get_size_inches()) == pytest.approx(display.figsize)


def test_confusion_matrix_display_from_numbers() -> None:
    display = ConfusionMatrixDisplay(np.array([[3, 1], [0, 4]]), ["cat", "$dog$"]).plot()
    assert display.ax_.get_title() == "Confusion matrix, counts, n=8"
    assert [t.get_text() for t in display.ax_.get_yticklabels()] == ["cat", r"\$dog\$"]  # never mathtext
    assert sorted(t.get_text() for t in display.ax_.texts) == ["0", "1", "3", "4"]
    assert display.im_.get_array().tolist() == [[3, 1], [0, 4]]
    normalized = ConfusionMatrixDisplay(np.array([[0.75, 0.25], [0.0, 1.0]]), ["a", "b"], normalized=True).plot()
    assert normalized.ax_.get_title() == "Confusion matrix, row-normalised (recall per true class)"
    assert ConfusionMatrixDisplay(np.zeros((50, 50)), [str(i) for i in range(50)]).figsize[1] > display.figsize[1]


def test_result_plot_methods_return_their_axes_and_figure(tmp_path: Path) -> None:
    result = make_result(3, 30, tmp_path)
    ax = plt.figure().add_subplot()
    assert result.plot_confusion_matrix(ax, normalize=True) is ax
    assert f"n={result.n}" in ax.get_title()
    assert "ECE" in result.plot_reliability().get_title()
    assert result.plot_per_class().get_title().startswith("Per-class recall and F1")
    assert isinstance(result.plot_misclassified(max_images=2), Figure)


def test_misclassified_without_paths_says_so() -> None:
    result = make_result(3, 30)
    figure = result.plot_misclassified()
    texts = [t.get_text() for t in figure.texts]
    assert any("no file paths" in t for t in texts)
    none_wrong = MisclassifiedDisplay([], 0).plot()
    assert any("no misclassified images" in t.get_text() for t in none_wrong.figure_.texts)


def test_misclassified_uses_load_image(tmp_path: Path) -> None:
    result = make_result(3, 30, tmp_path)
    loaded: list[str] = []

    def load(path: str) -> np.ndarray:
        loaded.append(path)
        return np.zeros((4, 4, 3))

    figure = result.plot_misclassified(max_images=3, load_image=load)
    assert loaded == [m["path"] for m in result.misclassified[:3]]
    first_title = figure.axes[0].get_title()
    assert "true:" in first_title and "pred:" in first_title


def test_gallery_shows_grad_cam_beside_each_mistake(tmp_path: Path) -> None:
    """With an explainer, each mistake is drawn as image | overlay; a failing one shows its error."""
    result = make_result(4, 80, tmp_path)
    asked: list[str] = []

    def explain(path: str) -> tuple[np.ndarray, np.ndarray]:
        asked.append(path)
        if len(asked) == 2:
            raise ValueError("cannot explain this one")
        return np.zeros((6, 6, 3), np.uint8), np.full((6, 6, 3), 255, np.uint8)

    figure = result.plot_misclassified(max_images=3, explain=explain)
    first, second = figure.axes[0].get_images()[0].get_array(), figure.axes[1].get_images()[0].get_array()
    assert first.shape[1] > 2 * 6 and first[:, :6].max() == 0 and first[:, -6:].min() == 255  # seen | overlay
    assert second.shape == (8, 8, 3)  # the plain image, and the reason below it
    assert "cannot explain this one" in figure.axes[1].get_xlabel()
    assert "Grad-CAM" in figure.get_suptitle()

    asked.clear()
    pairs = explain_items(result.misclassified[:3], explain)
    assert list(pairs) == [m["index"] for m in result.misclassified[:3]]
    assert isinstance(pairs[result.misclassified[1]["index"]], str)  # the second one failed: its error's text
    with_maps = MisclassifiedDisplay(result.misclassified[:3], len(result.misclassified), heat_maps=pairs)
    plain = MisclassifiedDisplay(result.misclassified[:3], len(result.misclassified))
    assert with_maps.has_heat_maps and not plain.has_heat_maps
    assert with_maps.figsize[0] > plain.figsize[0]  # wider tiles for image | overlay
    assert explain_items(result.misclassified[:3], None) == {}


def test_gallery_of_undecodable_file_names(tmp_path: Path) -> None:
    result, _, _, _ = undecodable_result(tmp_path)
    figure = result.plot_misclassified(max_images=2)
    assert figure.axes[0].get_images()[0].get_array().shape == (8, 8, 3)  # the real file, loaded
    assert "caf\\xe9 real.png" in [t.get_text() for t in figure.axes[0].texts]
