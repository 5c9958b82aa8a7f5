"""Tests for tlkit.data.datasets: ImageDataset items, labels, transforms and batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_helpers import make_class_folders, write_image
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from tlkit.data import DecodedImages, ImageDataset, collate_readable, scan
from tlkit.errors import DataError


def test_image_dataset_with_transform(tmp_path: Path) -> None:
    m = scan(make_class_folders(tmp_path, {"a": 3, "b": 3}), val_fraction=0, test_fraction=0)
    dataset = ImageDataset(m.paths("train"), m.labels("train"), transform=pil_to_tensor)
    assert len(dataset) == 6
    x, y, i = dataset[4]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 8, 8) and x.dtype == torch.uint8
    assert (y, i) == (m.labels("train")[4], 4)
    assert torch.equal(x, pil_to_tensor(Image.open(m.paths("train")[4]).convert("RGB")))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=6)))
    assert batch[0].shape == (6, 3, 8, 8) and batch[2].tolist() == list(range(6))
    assert batch[1].tolist() == m.labels("train")


def test_image_dataset_without_labels_or_transform(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", 1)
    image, label, index = ImageDataset([str(path)])[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and (label, index) == (-1, 0)
    with pytest.raises(IndexError):
        ImageDataset([str(path)])[1]
    with pytest.raises(DataError):
        ImageDataset([str(path)], [0, 1])


def test_skip_bad_items_are_listed_by_collate_readable_and_left_out(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    dataset = ImageDataset([str(good), str(bad)], [0, 1], transform=pil_to_tensor, skip_bad=True)
    with pytest.raises(DataError):
        ImageDataset([str(bad)])[0]
    images, labels, indices, skipped = collate_readable([dataset[0], dataset[1]])
    assert images.shape == (1, 3, 8, 8) and labels.tolist() == [0] and indices.tolist() == [0]
    assert [s["index"] for s in skipped] == [1] and str(bad) in skipped[0]["reason"]
    images, labels, indices, skipped = collate_readable([dataset[1]])
    assert images.numel() == 0 and labels.tolist() == [] and indices.tolist() == [] and len(skipped) == 1


def test_decoded_images_match_image_dataset_items(tmp_path: Path) -> None:
    m = scan(make_class_folders(tmp_path, {"a": 2, "b": 2}), val_fraction=0, test_fraction=0)
    tensors = DecodedImages.decode(m.paths("train"), resize_size=8)
    decoded = DecodedImages(tensors, m.labels("train"))
    assert len(decoded) == 4 and DecodedImages.estimate_bytes(4, 8) == int(4 * 3 * 8 * 8 * 1.5)
    for i in range(4):
        x, y, index = decoded[i]
        assert torch.equal(x, pil_to_tensor(Image.open(m.paths("train")[i]).convert("RGB")))
        assert (y, index) == (m.labels("train")[i], i)
    assert decoded[-1][2] == 3 and decoded.with_transform(lambda t: t.float()).images is not decoded.images
