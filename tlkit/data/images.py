"""One image loader for all of tlkit, and the name rules: which files are images, which are litter.

:func:`load_image` decodes any file Pillow reads into an upright RGB image, or raises a
:class:`~tlkit.errors.DataError` naming the file and the fix. :func:`is_image_name` and
:func:`is_hidden` decide what a folder walk counts; :func:`safe_name` turns a class name into a
file name; :func:`describe_error` is the one-line reason every data error message quotes.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlkit.errors import DataError

__all__ = ["IGNORED_NAMES", "IMAGE_EXTENSIONS", "describe_error", "is_hidden", "is_image_name", "load_image", "safe_name"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Litter left by operating systems and tools (compared lower-cased); never a class, never a sample.
IGNORED_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
_SKIP_HINT = "Fix or remove the file, or leave bad files out with --skip-bad (finetune, evaluate, predict)"


# --------------------------------------------------------------------------- name rules


def is_hidden(name: str) -> bool:
    """True for a dot-file or folder and for OS litter (``__MACOSX``, ``Thumbs.db``, ``desktop.ini``)."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def is_image_name(name: str) -> bool:
    """True when a file of this name is a sample: not hidden, and one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def safe_name(name: str) -> str:
    """A file-name-safe version of a class name, for writing per-class files.

    Letters (any script), digits, spaces and ``-_.()`` are kept; separators, control characters
    and characters Windows forbids become ``_``; runs of dots become one dot and leading or
    trailing dots/spaces are stripped, so the result never contains ``/``, ``\\`` or ``..``.
    When anything had to change, an 8-character hash of the original name is appended so that
    different names stay different.

    >>> safe_name("défaut rayé")
    'défaut rayé'
    >>> "/" in safe_name("../x") or ".." in safe_name("../x")
    False
    """
    text = unicodedata.normalize("NFC", name)
    chars = []
    for ch in text:
        category = unicodedata.category(ch)
        bad = ch in '/\\<>:"|?*' or category.startswith("C") or (category.startswith("Z") and ch != " ")
        chars.append("_" if bad else ch)
    slug = "".join(chars)
    while ".." in slug:
        slug = slug.replace("..", ".")
    slug = slug.strip(" .")
    # Keep names short enough for any file system (255 bytes) with room for a suffix.
    while len(slug.encode("utf-8")) > 120:
        slug = slug[:-1].rstrip(" .")
    reserved = slug.split(".")[0].upper() in {"CON", "PRN", "AUX", "NUL"} | {
        f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)
    }
    if slug != name or not slug or reserved:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        slug = f"{slug}-{digest}" if slug else f"_{digest}"
    return slug


def describe_error(exc: BaseException) -> str:
    """A one-line, human reason for a failed read (no traceback, no repeated path)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow can decode"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


# --------------------------------------------------------------------------- image loading


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Load one image as a fully decoded RGB ``PIL.Image``, upright, whatever its mode.

    - The EXIF orientation is applied first, so transforms see the upright image.
    - Transparent images (LA, RGBA, P or L with a transparency key) are composited over WHITE.
    - 16-bit images (``I;16``, ``I;16B``, ``I``) are scaled to 8 bits (``round(v / 257)``),
      never clipped; ``I`` is read as 16-bit data (clipped to 0..65535 first).
    - ``F`` (float) images are read as 0..1 data when their largest value is <= 1, else 0..255.
    - 1-bit, L, CMYK (JPEG), YCbCr ... are converted by Pillow.

    Raises:
        DataError: the file is missing, not a regular file, truncated, not an image, or larger
            than ``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression bomb).

    Example::

        >>> load_image("data/cat/001.jpg").mode  # doctest: +SKIP
        'RGB'
    """
    file = os.fspath(path)
    _require_regular_file(file)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; treat that as an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                img.load()  # decodes everything now, so truncation is detected here
                upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
            rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"image {file} is too large: {describe_error(exc)}. Resize the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from exc
    except Exception as exc:  # noqa: BLE001
        # Corrupt files make Pillow raise a zoo of types (OSError, SyntaxError, ValueError,
        # struct.error, IndexError, ...); every one of them means "this file is unusable".
        raise DataError(f"cannot read image {file}: {describe_error(exc)}. {_SKIP_HINT}.") from exc
    return rgb


def _require_regular_file(file: str) -> None:
    """DataError unless ``file`` is a non-empty regular file (a FIFO or device named *.png would block)."""
    try:
        info = os.stat(file)
    except OSError as exc:
        raise DataError(f"cannot read image {file}: {describe_error(exc)}. {_SKIP_HINT}.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"cannot read image {file}: not a regular file. {_SKIP_HINT}.")
    if info.st_size == 0:
        raise DataError(f"cannot read image {file}: the file is empty (0 bytes). {_SKIP_HINT}.")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB with correct values (see :func:`load_image`)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        if mode == "I":
            values = np.clip(values, 0, 65535)
        # /257 maps 65535 -> 255 and 32896 -> 128: scaled, never saturated like convert("L").
        gray = np.round(values / 257.0).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        gray = np.round(np.clip(values, 0, 255)).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
