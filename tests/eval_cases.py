"""Predictions and results shared by the tests of tlkit.evaluation and tlkit.report (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tlkit.evaluation.metrics import EvalResult, evaluate_predictions

SCRIPT = "<script>alert(1)</script>"


def random_predictions(
    n: int, n_classes: int, seed: int, *, skill: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities that are right more often than chance."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y_true] += skill
    probs = np.exp(logits)
    return y_true, probs / probs.sum(axis=1, keepdims=True)


def names(n_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(n_classes)]


def make_result(
    n_classes: int, n: int, tmp_path: Path | None = None, *, seed: int = 0
) -> EvalResult:
    """A result whose class names need escaping (a script tag, "../x", "élan ✓"), with one unknown
    class; with ``tmp_path``, every row has a small image file there."""
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


def undecodable_result(tmp_path: Path) -> tuple[EvalResult, list[str], list[str], Path]:
    """A file named b"caf\\xe9.png" is 'caf\\udce9.png' in Python: a result with such paths and class
    names (no such files but one, ``real``, which exists and is the worst mistake).
    Returns (result, paths, classes, real)."""
    import os

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
    return result, paths, classes, real
