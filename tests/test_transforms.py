"""Tests for tlkit.transforms: Preprocessing (what a backbone's weights expect) and its transforms."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tlkit.errors import BackboneError
from tlkit.transforms import Preprocessing, eval_transform


def test_with_size_keeps_the_ratio() -> None:
    pre = Preprocessing(224, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    small = pre.with_size(64)
    assert (small.input_size, small.resize_size) == (64, 73)  # 64 / 0.875 = 73.1
    assert (small.mean, small.std, small.interpolation) == (pre.mean, pre.std, pre.interpolation)
    assert pre.with_size(None) is pre and pre.with_size(224) is pre
    assert Preprocessing.from_dict(small.to_dict()) == small


@pytest.mark.parametrize("fields, named", [
    ({"std": (0.5, 0.0, 0.5)}, "preprocessing.std"),
    ({"mean": (float("nan"), 0.5, 0.5)}, "preprocessing.mean"),
    ({"input_size": 30000, "resize_size": 30000}, "preprocessing.input_size"),
    ({"resize_size": 10}, "preprocessing.resize_size"),
    ({"interpolation": "magic"}, "preprocessing.interpolation"),
])
def test_values_that_would_break_every_prediction_are_refused(fields: dict, named: str) -> None:
    good = {"input_size": 32, "resize_size": 36, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear"}
    with pytest.raises(BackboneError, match=named):
        Preprocessing(**(good | fields))


def test_eval_transform_resizes_crops_and_normalises() -> None:
    pre = Preprocessing(32, 36, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = eval_transform(pre)(Image.new("RGB", (80, 40), (255, 0, 128)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[:, 16, 16], torch.tensor([2.0, -2.0, (128 / 255 - 0.5) / 0.25]), atol=1e-3)
