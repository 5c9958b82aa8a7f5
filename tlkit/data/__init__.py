"""Datasets on disk: find the images, split them, load them safely, and check them.

Two folder layouts are understood (detected automatically by :func:`scan`)::

    root/<class>/<image>                    "class-folders": tlkit makes a stratified split
    root/{train,val,test}/<class>/<image>   "split-folders": the given split is used as is

The result is a :class:`Manifest`: sorted class names, and per split a sorted list of
``(path relative to root, label)``. It is saved as JSON (``splits.json``) so a run can be
repeated on exactly the same files. :func:`load_image` is the one image loader used by every
part of tlkit; :func:`check` finds the bad files and data problems before any training starts.

Example::

    >>> manifest = scan("data/", val_fraction=0.15, test_fraction=0.15, seed=0)  # doctest: +SKIP
    >>> report = check(manifest)                                                # doctest: +SKIP
    >>> if not report.ok: print(*(p.message for p in report.errors), sep="\\n")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image, ImageOps, UnidentifiedImageError

from tlkit.errors import ConfigError, DataError
from tlkit.rundir import MARKER

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "CheckReport",
    "ImageDataset",
    "Manifest",
    "Problem",
    "check",
    "export_digits",
    "load_image",
    "safe_name",
    "scan",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Folder names accepted for each split in the split-folders layout (compared lower-cased).
_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}
# Litter left by operating systems and tools; never a class, never a sample.
_IGNORED_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
_MANIFEST_VERSION = 1
_SKIP_HINT = "Fix or remove the file, or leave bad files out with --skip-bad (finetune, evaluate, predict)"


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
    try:
        info = os.stat(file)
    except OSError as exc:
        raise DataError(f"cannot read image {file}: {_reason(exc)}. {_SKIP_HINT}.") from exc
    # A FIFO or device named *.png would block or never end; only regular files are opened.
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"cannot read image {file}: not a regular file. {_SKIP_HINT}.")
    if info.st_size == 0:
        raise DataError(f"cannot read image {file}: the file is empty (0 bytes). {_SKIP_HINT}.")
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
            f"image {file} is too large: {_reason(exc)}. Resize the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from exc
    except Exception as exc:  # noqa: BLE001
        # Corrupt files make Pillow raise a zoo of types (OSError, SyntaxError, ValueError,
        # struct.error, IndexError, ...); every one of them means "this file is unusable".
        raise DataError(f"cannot read image {file}: {_reason(exc)}. {_SKIP_HINT}.") from exc
    return rgb


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


def _reason(exc: BaseException) -> str:
    """A one-line, human reason for a failed read (no traceback, no repeated path)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow can decode"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


# --------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """Which files belong to which split and class, relative to ``root`` so it moves with the data.

    ``splits[split]`` is a list of ``(relative posix path, label)`` sorted by path, and
    ``classes[label]`` is the class name. ``skipped`` records files left out on purpose.
    """

    root: str
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]
    layout: str
    seed: int
    val_fraction: float
    test_fraction: float
    skipped: list[dict[str, str]] = field(default_factory=list)

    def _split(self, split: str) -> list[tuple[str, int]]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.splits.get(split, [])

    def paths(self, split: str) -> list[str]:
        """Absolute paths of the images in ``split``, in manifest order."""
        return [os.path.join(self.root, *rel.split("/")) for rel, _ in self._split(split)]

    def labels(self, split: str) -> list[int]:
        """Labels (indices into ``classes``) of the images in ``split``, in manifest order."""
        return [label for _, label in self._split(split)]

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class in ``split`` (all splits if None); every class appears, 0 allowed."""
        totals = dict.fromkeys(self.classes, 0)
        for name in SPLITS if split is None else (split,):
            for _, label in self._split(name):
                totals[self.classes[label]] += 1
        return totals

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists instead of tuples); inverse of :meth:`from_dict`."""
        return {
            "version": _MANIFEST_VERSION,
            "root": self.root,
            "layout": self.layout,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "classes": list(self.classes),
            "splits": {s: [[rel, label] for rel, label in self.splits.get(s, [])] for s in SPLITS},
            "skipped": [dict(entry) for entry in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Build a manifest from :meth:`to_dict` output; ConfigError names a bad field."""
        if not isinstance(d, dict):
            raise ConfigError(f"a manifest must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("root", "classes", "splits", "layout") if k not in d]
        if missing:
            raise ConfigError(f"manifest is missing field(s): {', '.join(missing)}")
        classes = d["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ConfigError("manifest field 'classes' must be a list of class names")
        if not isinstance(d["splits"], dict):
            raise ConfigError("manifest field 'splits' must map split names to file lists")
        splits: dict[str, list[tuple[str, int]]] = {}
        for name in SPLITS:
            entries = d["splits"].get(name, [])
            try:
                pairs = [(str(rel), int(label)) for rel, label in entries]
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"manifest field 'splits.{name}' must hold [path, label] pairs") from exc
            for rel, label in pairs:
                _check_relative(rel, f"splits.{name}")
                if not 0 <= label < len(classes):
                    raise ConfigError(f"manifest field 'splits.{name}': label {label} of {rel} is out of range")
            splits[name] = pairs
        unknown = set(d["splits"]) - set(SPLITS)
        if unknown:
            raise ConfigError(f"manifest field 'splits' has unknown split(s): {', '.join(sorted(unknown))}")
        try:
            return cls(
                root=str(d["root"]),
                classes=list(classes),
                splits=splits,
                layout=str(d["layout"]),
                seed=int(d.get("seed", 0)),
                val_fraction=float(d.get("val_fraction", 0.0)),
                test_fraction=float(d.get("test_fraction", 0.0)),
                skipped=[{"path": str(e["path"]), "reason": str(e["reason"])} for e in d.get("skipped", [])],
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"manifest has a malformed field: {_reason(exc)}") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as deterministic UTF-8 JSON, atomically (temp file + rename)."""
        target = os.fspath(path)
        try:
            text = json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # Undecodable bytes in a file name survive as surrogates; \u-escapes keep them.
            data = (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")
        _atomic_write(target, data)

    @classmethod
    def load(cls, path: str | os.PathLike[str], root: str | None = None) -> Manifest:
        """Read a manifest saved by :meth:`save`; ``root`` points it at a moved dataset.

        Raises DataError when the file cannot be read, ConfigError when it is not a manifest;
        both name the file.
        """
        file = os.fspath(path)
        try:
            with open(file, encoding="utf-8") as handle:
                raw = json.load(handle)
        except OSError as exc:
            raise DataError(f"cannot read manifest {file}: {_reason(exc)}. Check the path.") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"manifest {file} is not valid JSON ({_reason(exc)}). Delete it and rescan the data."
            ) from exc
        try:
            manifest = cls.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"manifest {file}: {exc}. Delete it and rescan the data.") from exc
        if root is not None:
            manifest.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        return manifest

    def without(self, rel_paths: Iterable[str], reason: str) -> Manifest:
        """A copy with these files (relative or absolute paths) removed and listed in ``skipped``.

        The class list and labels stay as they are, even if a class loses all its images.
        """
        drop = {self._relative(p) for p in rel_paths}
        splits: dict[str, list[tuple[str, int]]] = {}
        removed: list[str] = []
        for name in SPLITS:
            kept = []
            for rel, label in self.splits.get(name, []):
                if rel in drop:
                    removed.append(rel)
                else:
                    kept.append((rel, label))
            splits[name] = kept
        skipped = list(self.skipped) + [{"path": rel, "reason": reason} for rel in removed]
        skipped.sort(key=lambda e: (e["path"], e["reason"]))
        return Manifest(
            root=self.root,
            classes=list(self.classes),
            splits=splits,
            layout=self.layout,
            seed=self.seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            skipped=skipped,
        )

    def _relative(self, path: str) -> str:
        if os.path.isabs(path):
            return PurePath(os.path.relpath(path, self.root)).as_posix()
        return PurePath(path).as_posix()


def _check_relative(rel: str, where: str) -> None:
    """A manifest path must stay inside the data root: relative, no ``..``, no drive or backslash tricks."""
    parts = PurePath(rel).parts
    if (not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) or "\\" in rel or ".." in rel.split("/")
            or ".." in parts or (len(rel) > 1 and rel[1] == ":")):
        raise ConfigError(f"manifest field '{where}': path {rel!r} leaves the data folder; every path must be "
                          "relative to the data root, without '..'. The file was edited or is not tlkit's; rescan the data")


def _atomic_write(target: str, data: bytes) -> None:
    """Write bytes so that ``target`` is either the old file or the complete new one."""
    from tlkit._io import atomic_write_bytes

    atomic_write_bytes(Path(target), data)


# --------------------------------------------------------------------------- scanning


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


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def _is_image_name(name: str) -> bool:
    return not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link that loops or points nowhere is no folder
        return False


def _is_tlkit_output(folder: str) -> bool:
    """A folder tlkit wrote (a run, an evaluation, overlays): never a class, never samples."""
    return os.path.isfile(os.path.join(folder, MARKER)) or (
        os.path.isfile(os.path.join(folder, "splits.json")) and os.path.isfile(os.path.join(folder, "config.yaml")))


def _subfolders(folder: str) -> list[str]:
    """Visible sub-folder names of ``folder``, sorted; tlkit's own output folders are left out."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if not _is_hidden(e.name) and _is_dir(e) and not _is_tlkit_output(e.path))


def _images_under(folder: str, root: str) -> list[str]:
    """Image files anywhere below ``folder`` as sorted posix paths relative to ``root``."""
    found = []
    # Symlinked folders are not descended into (no cycles); symlinked files are included.
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d) and not _is_tlkit_output(os.path.join(current, d)))
        for name in files:
            full = os.path.join(current, name)
            if _is_image_name(name) and os.path.isfile(full):
                found.append(PurePath(os.path.relpath(full, root)).as_posix())
    return sorted(found)


@dataclass
class _Found:
    """What is on disk: per split folder ("all" for class-folders) the images of each class."""

    layout: str
    groups: dict[str, dict[str, list[str]]]
    empty_class_dirs: list[str]


def _find(root: str) -> _Found:
    """Detect the layout and list the images of every class folder (hidden entries ignored)."""
    top = _subfolders(root)
    train_dirs = [d for d in top if d.lower() == "train"]
    if train_dirs and _is_class_folder(os.path.join(root, train_dirs[0])):
        train_dirs = []  # a class that happens to be called "train" (trains, vehicles): class folders
    if not train_dirs:
        folders = {"all": root}
        layout = "class-folders"
    else:
        layout = "split-folders"
        folders = {}
        for split, aliases in _SPLIT_ALIASES.items():
            matches = [d for d in top if d.lower() in aliases]
            if len(matches) > 1:
                raise DataError(
                    f"{root} has several folders for the {split} split ({', '.join(matches)}). "
                    "Keep one and merge or remove the others."
                )
            if matches:
                folders[split] = os.path.join(root, matches[0])
        _refuse_mixed_layout(root, top)
    groups: dict[str, dict[str, list[str]]] = {}
    empty: list[str] = []
    for split, folder in folders.items():
        groups[split] = {}
        for class_name in _subfolders(folder):
            files = _images_under(os.path.join(folder, class_name), root)
            if files:
                groups[split][class_name] = files
            else:
                empty.append(PurePath(os.path.relpath(os.path.join(folder, class_name), root)).as_posix())
    return _Found(layout=layout, groups=groups, empty_class_dirs=sorted(empty))


def _is_class_folder(folder: str) -> bool:
    """True when ``folder`` holds images itself and no sub-folder with images: a class, not a split."""
    with os.scandir(folder) as entries:
        direct = any(_is_image_name(e.name) and e.is_file() for e in entries)
    return direct and not any(_images_under(os.path.join(folder, d), folder) for d in _subfolders(folder))


def _refuse_mixed_layout(root: str, top: list[str]) -> None:
    """A ``train`` split folder beside class folders full of images is ambiguous: say how to fix it."""
    split_names = {a for aliases in _SPLIT_ALIASES.values() for a in aliases}
    others = [d for d in top if d.lower() not in split_names and _images_under(os.path.join(root, d), root)]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise DataError(
            f"{root} mixes two layouts: a 'train' folder of class folders (root/train/<class>/<image>) and "
            f"folders of images beside it ({shown}). Move those into train/ (or val/, test/), or, if 'train' is "
            "itself a class, put its images directly in it rather than in sub-folders."
        )


def _validate_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"{name} must be a number with 0 <= {name} < 1, got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be < 1 to leave training images, "
            f"got {val_fraction} + {test_fraction}"
        )


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class's ``n`` images go to (val, test); at least one always stays in train."""
    if n <= 1:
        return 0, 0
    if n == 2:
        # One image can be held out; test comes first because it is the honest estimate.
        return (0, 1) if test_fraction > 0 else ((1, 0) if val_fraction > 0 else (0, 0))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    min_val, min_test = int(val_fraction > 0), int(test_fraction > 0)
    n_val, n_test = max(n_val, min_val), max(n_test, min_test)
    while n_val + n_test > n - 1:
        if n_val >= n_test and n_val > min_val:
            n_val -= 1
        elif n_test > min_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def _make_split(
    files_by_class: dict[str, list[str]], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, dict[str, list[str]]]:
    """Stratified split: per class, shuffle its sorted files and cut test, val, then train.

    Each class gets its own generator seeded from ``(seed, crc32(class name))``, so a class's
    split does not change when other classes are added or removed.
    """
    result: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for class_name, files in sorted(files_by_class.items()):
        ordered = sorted(files)
        n_val, n_test = _split_counts(len(ordered), val_fraction, test_fraction)
        rng = np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8", "surrogatepass"))])
        order = [ordered[i] for i in rng.permutation(len(ordered))]
        result["test"][class_name] = order[:n_test]
        result["val"][class_name] = order[n_test : n_test + n_val]
        result["train"][class_name] = order[n_test + n_val :]
    return result


def scan(
    root: str | os.PathLike[str], *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
    min_classes: int = 2,
) -> Manifest:
    """Find the images under ``root`` and split them into train/val/test.

    Layout: if ``root`` holds a ``train`` folder (any case) of class folders it is "split-folders"
    (``root/train|val|test/<class>/...``, ``valid``/``validation`` accepted for val; other
    top-level folders holding images make the layout ambiguous: DataError); a ``train`` folder
    holding images directly is a class named "train"; a missing val and/or test split is cut from train, stratified,
    with the same fractions. Otherwise it is "class-folders" (``root/<class>/...``) and the whole
    set is split. Images in nested folders belong to their class folder; hidden entries
    (``.*``, ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``), non-image files and loose files
    in ``root`` are ignored, and so are folders tlkit wrote (runs, reports: ``tlkit-run.json``). Class folders with no images are left out of ``classes``
    (:func:`check` reports them as "empty-class" warnings).

    Split rule, per class of n images: ``round(n * test_fraction)`` to test and
    ``round(n * val_fraction)`` to val, but at least 1 each when n >= 3 (and that fraction
    > 0); n == 2 gives 1 train + 1 test; n == 1 stays in train. The result depends only on
    the file names, the seed and the fractions, never on listing order.

    ``min_classes=1`` accepts a single class (evaluating a model on new images of one kind).

    Raises:
        ConfigError: a fraction is outside [0, 1) or they add up to 1 or more.
        DataError: ``root`` is missing or not a folder, holds no images, only one class,
            or a class appears in val/test but not in train.

    Example::

        >>> m = scan("data/", seed=0)  # doctest: +SKIP
        >>> m.counts("train")          # doctest: +SKIP
        {'cat': 70, 'dog': 68}
    """
    return _scan(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, strict=True,
                 min_classes=min_classes)[0]


def _scan(
    root: str | os.PathLike[str], *, val_fraction: float, test_fraction: float, seed: int, strict: bool,
    min_classes: int = 2,
) -> tuple[Manifest, list[str]]:
    """:func:`scan`; with ``strict=False`` zero or one class and val/test-only classes are allowed
    (so :func:`check` can report them). Also returns the empty class folders."""
    _validate_fractions(val_fraction, test_fraction)
    folder = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(folder):
        raise DataError(f"dataset folder {folder} does not exist. Check the path.")
    if not os.path.isdir(folder):
        raise DataError(
            f"dataset path {folder} is not a folder. Point tlkit at a folder of class folders "
            "(root/<class>/<image>) or of split folders (root/train/<class>/<image>)."
        )
    try:
        found = _find(folder)
    except PermissionError as exc:
        raise DataError(f"cannot list {exc.filename or folder}: permission denied. Fix the permissions.") from exc

    if found.layout == "class-folders":
        by_split = _make_split(found.groups["all"], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    else:
        given = found.groups
        train = given.get("train", {})
        missing_val = "val" not in given
        missing_test = "test" not in given
        if missing_val or missing_test:
            cut = _make_split(
                train,
                val_fraction=val_fraction if missing_val else 0.0,
                test_fraction=test_fraction if missing_test else 0.0,
                seed=seed,
            )
            by_split = {
                "train": cut["train"],
                "val": cut["val"] if missing_val else given["val"],
                "test": cut["test"] if missing_test else given["test"],
            }
        else:
            by_split = {s: given[s] for s in SPLITS}
        if strict:
            for split in ("val", "test"):
                orphans = sorted(set(by_split[split]) - set(train))
                if orphans:
                    raise DataError(
                        f"class(es) {', '.join(map(repr, orphans))} appear in {folder}/{split} "
                        "but have no images in train. Add training images for them or remove them."
                    )

    classes = sorted({c for split in by_split.values() for c, files in split.items() if files})
    if strict and not classes:
        where = "root/<class>/<image>" if found.layout == "class-folders" else "root/train/<class>/<image>"
        raise DataError(
            f"no images found in {folder}: expected {where} with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}. Check the path and the layout."
        )
    if strict and len(classes) == 1 and min_classes > 1:
        raise DataError(
            f"tlkit needs at least 2 classes, but {folder} has only one ({classes[0]!r}). "
            "Add a folder of images for each class."
        )
    label_of = {name: i for i, name in enumerate(classes)}
    splits = {
        split: sorted(
            (rel, label_of[class_name])
            for class_name, files in by_split.get(split, {}).items()
            for rel in files
        )
        for split in SPLITS
    }
    manifest = Manifest(
        root=folder,
        classes=classes,
        splits=splits,
        layout=found.layout,
        seed=int(seed),
        val_fraction=float(val_fraction),
        test_fraction=float(test_fraction),
    )
    return manifest, found.empty_class_dirs


# --------------------------------------------------------------------------- checking


@dataclass
class Problem:
    """One thing wrong with a dataset: how bad, which kind, a one-line message, the files."""

    severity: str  # "error" | "warning"
    kind: str
    message: str
    paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "kind": self.kind, "message": self.message, "paths": list(self.paths)}


@dataclass
class CheckReport:
    """What :func:`check` found; ``ok`` is True when there is no error-level problem."""

    root: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    problems: list[Problem]
    bad_files: list[str]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "classes": list(self.classes),
            "counts": {s: dict(c) for s, c in self.counts.items()},
            "problems": [p.to_dict() for p in self.problems],
            "bad_files": list(self.bad_files),
        }


def check(
    root_or_manifest: str | os.PathLike[str] | Manifest,
    *,
    verify_images: bool = True,
    imbalance_ratio: float = 10.0,
) -> CheckReport:
    """Look for everything that would spoil training, without raising on bad data.

    Finds unreadable files (0-byte, truncated, not an image: each decoded fully with
    :func:`load_image`), empty class folders, no images / a single class, classes too small to
    split (< 3 images: warning; 0 training images: error), identical files in different splits
    (error: leakage) or in the same split (warning), and class imbalance (warning when the
    largest class has ``imbalance_ratio`` times the images of the smallest).

    Given a path, the folder is scanned with default fractions; a missing folder still raises
    DataError, but "no images" and "single class" come back as error problems in the report.

    Example::

        >>> report = check("data/")                  # doctest: +SKIP
        >>> report.ok, [p.kind for p in report.problems]  # doctest: +SKIP
        (True, [])
    """
    if not imbalance_ratio > 1:
        raise ConfigError(f"imbalance_ratio must be > 1, got {imbalance_ratio!r}")
    if isinstance(root_or_manifest, Manifest):
        manifest = root_or_manifest
        empty_dirs: list[str] = []
        if os.path.isdir(manifest.root):
            try:
                empty_dirs = _find(manifest.root).empty_class_dirs
            except (DataError, OSError):
                empty_dirs = []  # the layout itself is broken; the manifest is what we check
    else:
        manifest, empty_dirs = _scan(
            root_or_manifest, val_fraction=0.15, test_fraction=0.15, seed=0, strict=False
        )

    problems: list[Problem] = []
    counts = {s: manifest.counts(s) for s in SPLITS}
    totals = manifest.counts()
    samples = [(split, rel) for split in SPLITS for rel, _ in manifest.splits.get(split, [])]

    for rel_dir in empty_dirs:
        problems.append(Problem(
            "warning", "empty-class",
            f"empty class folder {rel_dir!r} has no images and is left out of the classes; "
            "add images or remove the folder",
            [rel_dir],
        ))
    if not samples:
        problems.append(Problem(
            "error", "no-images",
            f"no images found in {manifest.root}; expected root/<class>/<image> or "
            "root/train/<class>/<image>",
            [],
        ))
    elif len(manifest.classes) < 2:
        problems.append(Problem(
            "error", "single-class",
            f"tlkit needs at least 2 classes, but {manifest.root} has only "
            f"{manifest.classes[0]!r}; add a folder of images for each class",
            [],
        ))

    for name in manifest.classes:
        if counts["train"][name] == 0:
            problems.append(Problem(
                "error", "too-small",
                f"class {name!r} has no training images ({totals[name]} in total); "
                "add training images or remove the class",
                [],
            ))
        elif totals[name] < 3:
            problems.append(Problem(
                "warning", "too-small",
                f"class {name!r} has only {totals[name]} image(s); it needs at least 3 to appear in "
                "train, val and test, so its metrics will be unreliable; add images",
                [],
            ))

    bad: set[str] = set()
    if verify_images:
        for _, rel in samples:
            try:
                load_image(os.path.join(manifest.root, *rel.split("/")))
            except DataError as exc:
                bad.add(rel)
                problems.append(Problem("error", "unreadable", str(exc), [rel]))

    problems.extend(_duplicate_problems(manifest.root, samples, bad, problems))

    if len(totals) >= 2:
        largest = max(totals, key=lambda c: totals[c])
        smallest = min(totals, key=lambda c: totals[c])
        small, large = totals[smallest], totals[largest]
        if small == 0 or large / small >= imbalance_ratio:
            problems.append(Problem(
                "warning", "imbalance",
                f"classes are imbalanced: {largest!r} has {large} images, {smallest!r} has {small} "
                f"(ratio >= {imbalance_ratio:g}); consider class weighting or more images of small classes",
                [],
            ))

    return CheckReport(
        root=manifest.root,
        classes=list(manifest.classes),
        counts=counts,
        problems=problems,
        bad_files=sorted(bad),
    )


def _duplicate_problems(
    root: str, samples: list[tuple[str, str]], bad: set[str], problems: list[Problem]
) -> list[Problem]:
    """Group files by SHA-1 of their bytes; report groups spanning splits (error) or within one."""
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for split, rel in samples:
        if rel in bad:
            continue
        digest = _file_sha1(os.path.join(root, *rel.split("/")))
        if digest is None:
            if rel not in bad:  # only reachable when verify_images=False
                bad.add(rel)
                problems.append(Problem("error", "unreadable", f"cannot read {rel}; fix or remove it", [rel]))
            continue
        by_hash.setdefault(digest, []).append((split, rel))
    found = []
    for group in sorted(by_hash.values()):
        if len(group) < 2:
            continue
        paths = sorted(rel for _, rel in group)
        splits = sorted({split for split, _ in group}, key=SPLITS.index)
        if len(splits) > 1:
            found.append(Problem(
                "error", "duplicate-across-splits",
                f"identical files in {' and '.join(splits)} (leakage): {', '.join(paths)}; "
                "remove the copies so each image is in one split only",
                paths,
            ))
        else:
            found.append(Problem(
                "warning", "duplicate-within-split",
                f"identical files in {splits[0]}: {', '.join(paths)}; remove the copies",
                paths,
            ))
    return found


def _file_sha1(path: str) -> str | None:
    """SHA-1 of a file's bytes, or None if it cannot be read or is empty (not a real duplicate)."""
    digest = hashlib.sha1()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            size = 0
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return digest.hexdigest() if size else None


# --------------------------------------------------------------------------- torch dataset


class ImageDataset(torch.utils.data.Dataset):
    """Images from a list of paths; items are ``(transform(image), label, index)``.

    ``label`` is -1 when no labels are given; with no transform the PIL image is returned.
    The index lets callers (feature cache, distributed gather) map outputs back to files.

    Example::

        >>> ds = ImageDataset(m.paths("train"), m.labels("train"), transform)  # doctest: +SKIP
        >>> x, y, i = ds[0]                                                     # doctest: +SKIP
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        skip_bad: bool = False,
    ) -> None:
        self.skip_bad = skip_bad
        self.paths = [os.fspath(p) for p in paths]
        if labels is not None and len(labels) != len(self.paths):
            raise DataError(f"ImageDataset got {len(self.paths)} paths but {len(labels)} labels")
        self.labels = None if labels is None else [int(label) for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        if not -len(self.paths) <= index < len(self.paths):
            raise IndexError(f"index {index} out of range for {len(self.paths)} images")
        index = index % len(self.paths)
        try:
            image = load_image(self.paths[index])
        except DataError as exc:
            if not self.skip_bad:
                raise
            return None, -1, index, str(exc)  # collate_readable lists it and leaves it out
        item = image if self.transform is None else self.transform(image)
        label = -1 if self.labels is None else self.labels[index]
        return item, label, index


def collate_readable(batch: list) -> tuple:  # noqa: ANN001
    """Collate for ``ImageDataset(..., skip_bad=True)``: (images, labels, indices, skipped) where
    ``skipped`` lists ``{"path", "reason"}`` of the files that could not be read."""
    good = [b for b in batch if len(b) == 3]
    bad = [{"index": b[2], "reason": b[3]} for b in batch if len(b) == 4]
    if good:
        images, labels, indices = torch.utils.data.default_collate(good)
    else:
        images, labels, indices = torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return images, labels, indices, bad


def _as_lists(batch: list) -> tuple[list, list]:  # noqa: ANN001
    """Collate images of different sizes: (images, indices) as lists, nothing stacked."""
    return [b[0] for b in batch], [b[2] for b in batch]


class DecodedImages(torch.utils.data.Dataset):
    """Images decoded once and held in memory as uint8 tensors, short side already resized.

    Fine-tuning on images runs the same files through a random transform every epoch; decoding a
    JPEG and shrinking a large photo costs more than the transform itself, so it is done once.
    Resizing to the preprocessing's ``resize_size`` first changes nothing for the eval transform
    (its resize then leaves the image as it is) and gives random crops the resolution they need.
    Items are ``(transform(image), label, index)`` like :class:`ImageDataset`.
    """

    def __init__(self, images: Sequence[torch.Tensor], labels: Sequence[int] | None,
                 transform: Callable[[Any], Any] | None = None) -> None:
        self.images = list(images)
        self.labels = None if labels is None else [int(label) for label in labels]
        self.transform = transform

    @staticmethod
    def decode(paths: Sequence[str], resize_size: int, interpolation: str = "bilinear", *, workers: int = 0,
               progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
        """Decode and resize every file once (in DataLoader workers); tensors in ``paths`` order."""
        from tlkit.transforms import predecode_transform

        dataset = ImageDataset(paths, None, predecode_transform(resize_size, interpolation))
        loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=_as_lists)
        images: list[torch.Tensor] = []
        with torch.random.fork_rng(devices=[]):  # a loader draws its base seed from the global RNG
            for batch, _ in loader:
                images.extend(batch)
                if progress is not None:
                    progress(len(images), len(dataset))
        return images

    @staticmethod
    def estimate_bytes(n_images: int, resize_size: int) -> int:
        """Rough memory need: 3 bytes per pixel, short side ``resize_size``, long side up to 1.5 times it."""
        return int(n_images * 3 * resize_size * resize_size * 1.5)

    def with_transform(self, transform: Callable[[Any], Any] | None) -> "DecodedImages":
        return DecodedImages(self.images, self.labels, transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        index = range(len(self.images))[index]
        image = self.images[index]
        item = image if self.transform is None else self.transform(image)
        label = -1 if self.labels is None else self.labels[index]
        return item, label, index


# --------------------------------------------------------------------------- demo data

_DIGITS_MARKER = ".tlkit-digits.json"


def export_digits(out_dir: str | os.PathLike[str], *, image_size: int = 64, seed: int = 0,
                  per_class: int | None = None) -> str:
    """Write scikit-learn's 1797 8x8 digits as ``out_dir/<digit>/<digit>_<index:04d>.png``.

    Images are grayscale (mode L), upscaled with bicubic resampling to ``image_size``. The
    export is deterministic; ``seed`` is recorded but does not change the images. A hidden
    marker file makes a second call with the same settings return at once. ``per_class`` keeps
    only the first N images of each digit (small examples and tests). Returns ``out_dir``.

    Example::

        >>> export_digits("/tmp/digits")  # doctest: +SKIP
        '/tmp/digits'
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    out = os.fspath(out_dir)
    marker = os.path.join(out, _DIGITS_MARKER)
    digits = load_digits()
    keep = list(range(len(digits.target)))
    if per_class is not None:
        seen: dict[int, int] = {}
        keep = [i for i in keep if seen.setdefault(int(digits.target[i]), 0) < per_class
                and not seen.__setitem__(int(digits.target[i]), seen[int(digits.target[i])] + 1)]
    settings = {"count": len(keep), "image_size": image_size, "seed": seed}
    names = [f"{digits.target[i]}/{digits.target[i]}_{i:04d}.png" for i in keep]
    try:
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) == settings and all(os.path.isfile(os.path.join(out, n)) for n in names):
                return out
    except (OSError, ValueError):
        pass
    for digit in range(10):
        os.makedirs(os.path.join(out, str(digit)), exist_ok=True)
    # Pixel values are 0..16; scale to 0..255 before resizing.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for name, image in zip(names, pixels[keep]):
        small = Image.fromarray(image)
        big = small.resize((image_size, image_size), Image.Resampling.BICUBIC)
        path = os.path.join(out, *name.split("/"))
        tmp = path + ".tmp"  # not an image extension, so a half-written file is never a sample
        big.save(tmp, format="PNG")
        os.replace(tmp, path)
    _atomic_write(marker, json.dumps(settings, sort_keys=True).encode("utf-8"))
    return out


def list_images(inputs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Image files named directly, or found below folders (recursively, hidden entries skipped), in order.

    Used by ``tlkit predict``: a missing path or a folder with no images is a DataError naming it.
    """
    found: list[str] = []
    for item in inputs:
        path = os.fspath(item)
        if os.path.isdir(path):
            images = [os.path.join(path, rel) for rel in _images_under(path, path)]
            if not images:
                raise DataError(f"no images in folder {path} (accepted: {', '.join(IMAGE_EXTENSIONS)})")
            found.extend(images)
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return found
