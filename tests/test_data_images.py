"""Tests for tlkit.data.images: load_image on every mode and on bad files, and the name rules (safe_name, IMAGE_EXTENSIONS)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_bad_files, write_image
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from tlkit.data import IMAGE_EXTENSIONS, load_image, safe_name
from tlkit.data.images import describe_error, is_hidden, is_image_name
from tlkit.errors import DataError


def rgb_array(path: Path) -> np.ndarray:
    image = load_image(path)
    tensor = pil_to_tensor(image)
    assert tensor.shape[0] == 3 and tensor.dtype == torch.uint8
    return tensor.permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- load_image: modes


def test_mode_l(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 6), 100, np.uint8)).save(tmp_path / "l.png")
    pixels = rgb_array(tmp_path / "l.png")
    assert pixels.shape == (4, 6, 3)
    assert (pixels == 100).all()


def test_mode_la_composited_over_white(tmp_path: Path) -> None:
    data = np.zeros((2, 2, 2), np.uint8)  # black everywhere
    data[0, 0, 1] = 0  # fully transparent -> white
    data[0, 1, 1] = 255  # opaque -> black
    data[1, :, 1] = 128  # half -> mid grey
    Image.fromarray(data, "LA").save(tmp_path / "la.png")
    pixels = rgb_array(tmp_path / "la.png")
    assert (pixels[0, 0] == 255).all()
    assert (pixels[0, 1] == 0).all()
    assert np.all(np.abs(pixels[1].astype(int) - 127) <= 1)


def test_mode_p_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putdata([0, 1, 0])
    image.save(tmp_path / "p.png", transparency=0)  # red is the transparent colour
    assert Image.open(tmp_path / "p.png").mode == "P"
    pixels = rgb_array(tmp_path / "p.png")
    assert pixels[0].tolist() == [[255, 255, 255], [0, 0, 255], [255, 255, 255]]


def test_mode_p_without_transparency_gif(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (0, 0, 255)).convert("P").save(tmp_path / "p.gif")
    assert (rgb_array(tmp_path / "p.gif") == [0, 0, 255]).all()


def test_mode_rgba(tmp_path: Path) -> None:
    data = np.array([[[255, 0, 0, 0], [0, 255, 0, 255]]], np.uint8)
    Image.fromarray(data, "RGBA").save(tmp_path / "rgba.png")
    assert rgb_array(tmp_path / "rgba.png")[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_mode_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (200, 40, 40)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    pixels = rgb_array(tmp_path / "cmyk.jpg")
    assert np.abs(pixels.reshape(-1, 3).mean(0) - [200, 40, 40]).max() < 8


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])


def test_16_bit_is_scaled_not_saturated(tmp_path: Path, mode: str) -> None:
    values = np.array([[0, 257 * 100, 32896, 65535]], np.uint16)
    if mode == "I;16":
        Image.fromarray(values).save(tmp_path / "g16.png")  # a real 16-bit PNG
        path = tmp_path / "g16.png"
        assert Image.open(path).mode == "I;16"
    elif mode == "I;16B":
        path = tmp_path / "g16b.tif"
        Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes()).save(path)
    else:
        path = tmp_path / "g32.tif"
        Image.fromarray(values.astype(np.int32)).save(path)
        assert Image.open(path).mode == "I"
    pixels = rgb_array(path)
    assert pixels[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_mode_1_bit(tmp_path: Path) -> None:
    data = np.array([[True, False], [False, True]])
    Image.fromarray(data).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    pixels = rgb_array(tmp_path / "bits.png")
    assert pixels[..., 1].tolist() == [[255, 0], [0, 255]]


def test_mode_float(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert rgb_array(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # 32 wide x 16 tall, red block in the top-left corner, the rest blue.
    data = np.zeros((16, 32, 3), np.uint8)
    data[..., 2] = 255
    data[:8, :8] = [255, 0, 0]
    image = Image.fromarray(data)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.size == (16, 32)  # width and height swapped
    pixels = np.asarray(loaded).astype(int)
    # Turning clockwise moves the top-left corner to the top-right.
    assert pixels[2, 13, 0] > 200 and pixels[2, 13, 2] < 60
    assert pixels[2, 2, 0] < 60 and pixels[2, 2, 2] > 200


def test_load_image_returns_loaded_rgb_and_closes_file(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", 1)
    image = load_image(path)
    os.remove(path)  # the pixels are already in memory
    assert image.mode == "RGB" and image.size == (8, 8)
    assert np.asarray(image).shape == (8, 8, 3)


# --------------------------------------------------------------------------- load_image: bad files


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])


def test_bad_file_raises_data_error_naming_it(tmp_path: Path, kind: str) -> None:
    path = make_bad_files(tmp_path)[kind]
    with pytest.raises(DataError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "cannot read image" in message and "\n" not in message


def test_missing_file_and_folder_named_png(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match="not a regular file"):
        load_image(tmp_path / "dir.png")


@pytest.mark.parametrize("side", [12, 16])  # 144 px: Pillow warns; 256 px: Pillow raises


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    path = write_image(tmp_path / "bomb.png", 3, size=side)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="too large") as info:
        load_image(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- name rules


@pytest.mark.parametrize(
    "name", ["../x", "..x", "x..", "..", ".", "", "a/b", "a\\b", "..\\..\\etc", "con", "tab\there", "nul\x00l", "/abs", "x" * 300]
)


def test_safe_name_never_escapes(tmp_path: Path, name: str) -> None:
    slug = safe_name(name)
    assert slug and "/" not in slug and "\\" not in slug and ".." not in slug and "\x00" not in slug
    assert not slug.startswith(".") and len(slug.encode()) <= 200
    target = (tmp_path / slug).resolve()
    assert target.parent == tmp_path.resolve()
    target.write_text("ok")  # the slug is a valid file name here
    assert safe_name(name) == slug


def test_safe_name_keeps_distinct_names_distinct() -> None:
    names = ["../x", "..x", "x", "_x", "a/b", "a_b", "a\\b"]
    assert len({safe_name(n) for n in names}) == len(names)
    assert safe_name("cat") == "cat"


def test_image_extensions_constant() -> None:
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def test_name_rules_and_error_reasons() -> None:
    assert is_image_name("a.JPG") and is_image_name("b.webp") and not is_image_name("notes.txt")
    assert not is_image_name("._a.png") and is_hidden(".git") and is_hidden("__MACOSX") and is_hidden("Thumbs.db")
    assert not is_hidden("cat")
    assert describe_error(FileNotFoundError(2, "No such file")) == "file not found"
    assert describe_error(PermissionError(13, "denied")) == "permission denied"
    assert describe_error(ValueError("bad\n  header")) == "bad header"
    assert describe_error(ValueError()) == "ValueError"
