"""Scanning: the one rule that turns a folder of images into a :class:`~tlkit.data.manifest.Manifest`.

Two folder layouts are understood (detected automatically by :func:`scan`)::

    root/<class>/<image>                    "class-folders": tlkit makes a stratified split
    root/{train,val,test}/<class>/<image>   "split-folders": the given split is used as is

:func:`find_layout` says what is on disk, :func:`scan` splits it (per class, seeded, independent
of listing order), :func:`scan_lenient` does the same without refusing a data set :func:`check`
should report on instead, and :func:`list_images` finds the files ``tlkit predict`` is given.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from tlkit.data.groups import group_rule, split_by_groups
from tlkit.data.images import IMAGE_EXTENSIONS, is_hidden, is_image_name
from tlkit.data.manifest import SPLITS, Manifest
from tlkit.errors import ConfigError, DataError
from tlkit.rundir import MARKER

__all__ = ["FoundImages", "find_layout", "list_images", "scan", "scan_lenient"]

# Folder names accepted for each split in the split-folders layout (compared lower-cased).
_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}

# Per split, per class, the files: {"train": {"cat": ["train/cat/1.png", ...]}, ...}.
_BySplit = dict[str, dict[str, list[str]]]


# --------------------------------------------------------------------------- walking folders


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
                      if not is_hidden(e.name) and _is_dir(e) and not _is_tlkit_output(e.path))


def _images_under(folder: str, root: str) -> list[str]:
    """Image files anywhere below ``folder`` as sorted posix paths relative to ``root``."""
    found = []
    # Symlinked folders are not descended into (no cycles); symlinked files are included.
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d) and not _is_tlkit_output(os.path.join(current, d)))
        for name in files:
            full = os.path.join(current, name)
            if is_image_name(name) and os.path.isfile(full):
                found.append(PurePath(os.path.relpath(full, root)).as_posix())
    return sorted(found)


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


# --------------------------------------------------------------------------- the layout


@dataclass
class FoundImages:
    """What is on disk: per split folder ("all" for class-folders) the images of each class.

    ``layout`` is "class-folders" or "split-folders"; ``empty_class_dirs`` are the class folders
    with no images (posix paths relative to the root), left out of ``groups``.
    """

    layout: str
    groups: _BySplit
    empty_class_dirs: list[str]


def find_layout(root: str) -> FoundImages:
    """Detect the layout of ``root`` and list the images of every class folder (hidden entries ignored).

    Raises DataError when the layout is ambiguous (several folders for one split, or a ``train``
    split beside folders of images); OSError when a folder cannot be listed.
    """
    top = _subfolders(root)
    folders = _split_folders(root, top)
    layout = "class-folders" if folders is None else "split-folders"
    if folders is None:
        folders = {"all": root}
    groups: _BySplit = {}
    empty: list[str] = []
    for split, folder in folders.items():
        groups[split] = {}
        for class_name in _subfolders(folder):
            files = _images_under(os.path.join(folder, class_name), root)
            if files:
                groups[split][class_name] = files
            else:
                empty.append(PurePath(os.path.relpath(os.path.join(folder, class_name), root)).as_posix())
    return FoundImages(layout=layout, groups=groups, empty_class_dirs=sorted(empty))


def _split_folders(root: str, top: list[str]) -> dict[str, str] | None:
    """The split folders (split -> path) of a split-folders layout, or None for class folders."""
    train_dirs = [d for d in top if d.lower() == "train"]
    if not train_dirs or _is_class_folder(os.path.join(root, train_dirs[0])):
        return None  # no train folder, or a class that happens to be called "train" (trains, vehicles)
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
    return folders


def _is_class_folder(folder: str) -> bool:
    """True when ``folder`` holds images itself and no sub-folder with images: a class, not a split."""
    with os.scandir(folder) as entries:
        direct = any(is_image_name(e.name) and e.is_file() for e in entries)
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


# --------------------------------------------------------------------------- the split rule


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


def _make_split(files_by_class: dict[str, list[str]], *, val_fraction: float, test_fraction: float, seed: int) -> _BySplit:
    """Stratified split: per class, shuffle its sorted files and cut test, val, then train.

    Each class gets its own generator seeded from ``(seed, crc32(class name))``, so a class's
    split does not change when other classes are added or removed.
    """
    result: _BySplit = {s: {} for s in SPLITS}
    for class_name, files in sorted(files_by_class.items()):
        ordered = sorted(files)
        n_val, n_test = _split_counts(len(ordered), val_fraction, test_fraction)
        rng = np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8", "surrogatepass"))])
        order = [ordered[i] for i in rng.permutation(len(ordered))]
        result["test"][class_name] = order[:n_test]
        result["val"][class_name] = order[n_test : n_test + n_val]
        result["train"][class_name] = order[n_test + n_val :]
    return result


def _complete_given_splits(given: _BySplit, *, val_fraction: float, test_fraction: float, seed: int) -> _BySplit:
    """Split-folders: use the given splits; a missing val and/or test is cut from train, stratified."""
    train = given.get("train", {})
    missing_val = "val" not in given
    missing_test = "test" not in given
    if not (missing_val or missing_test):
        return {s: given[s] for s in SPLITS}
    cut = _make_split(
        train,
        val_fraction=val_fraction if missing_val else 0.0,
        test_fraction=test_fraction if missing_test else 0.0,
        seed=seed,
    )
    return {
        "train": cut["train"],
        "val": cut["val"] if missing_val else given["val"],
        "test": cut["test"] if missing_test else given["test"],
    }


# --------------------------------------------------------------------------- scan


def scan(
    root: str | os.PathLike[str], *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
    min_classes: int = 2, group_by: str | None = None,
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
    (:func:`~tlkit.data.check.check` reports them as "empty-class" warnings).

    Split rule, per class of n images: ``round(n * test_fraction)`` to test and
    ``round(n * val_fraction)`` to val, but at least 1 each when n >= 3 (and that fraction
    > 0); n == 2 gives 1 train + 1 test; n == 1 stays in train. The result depends only on
    the file names, the seed and the fractions, never on listing order.

    ``min_classes=1`` accepts a single class (evaluating a model on new images of one kind).

    ``group_by`` keeps images of one group (object, patient, session) in one split: ``"subfolder"``, a
    CSV of ``path,group``, or a regular expression on the file name (:mod:`tlkit.data.groups`); the
    groups are recorded in the manifest (``splits.json``).

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
                 min_classes=min_classes, group_by=group_by)[0]


def scan_lenient(
    root: str | os.PathLike[str], *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
    group_by: str | None = None,
) -> tuple[Manifest, list[str]]:
    """:func:`scan` for :func:`~tlkit.data.check.check`: zero or one class and val/test-only classes are
    allowed (so they can be reported), and the empty class folders come back too.

    Still raises what :func:`scan` raises for bad fractions, a missing root and an ambiguous layout.
    """
    return _scan(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, strict=False,
                 group_by=group_by)


def _scan(
    root: str | os.PathLike[str], *, val_fraction: float, test_fraction: float, seed: int, strict: bool,
    min_classes: int = 2, group_by: str | None = None,
) -> tuple[Manifest, list[str]]:
    """:func:`scan`; with ``strict=False`` see :func:`scan_lenient`. Also returns the empty class folders."""
    _validate_fractions(val_fraction, test_fraction)
    folder = _dataset_folder(root)
    try:
        found = find_layout(folder)
    except PermissionError as exc:
        raise DataError(f"cannot list {exc.filename or folder}: permission denied. Fix the permissions.") from exc

    fractions = dict(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    groups: dict[str, str] = {}
    if group_by is not None:
        by_split, groups = split_by_groups(found.layout, found.groups, group_rule(group_by, folder), **fractions)
    elif found.layout == "class-folders":
        by_split = _make_split(found.groups["all"], **fractions)
    else:
        by_split = _complete_given_splits(found.groups, **fractions)
    if found.layout != "class-folders":
        if strict:
            _refuse_classes_without_training_images(by_split, found.groups.get("train", {}), folder)

    classes = sorted({c for split in by_split.values() for c, files in split.items() if files})
    if strict:
        _require_classes(classes, folder, found.layout, min_classes)
    label_of = {name: i for i, name in enumerate(classes)}
    splits = {
        split: sorted((rel, label_of[class_name]) for class_name, files in by_split.get(split, {}).items() for rel in files)
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
        group_by=group_by,
        groups=groups,
    )
    return manifest, found.empty_class_dirs



def _dataset_folder(root: str | os.PathLike[str]) -> str:
    """``root`` as an absolute path; DataError when it is missing or not a folder."""
    folder = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(folder):
        raise DataError(f"dataset folder {folder} does not exist. Check the path.")
    if not os.path.isdir(folder):
        raise DataError(
            f"dataset path {folder} is not a folder. Point tlkit at a folder of class folders "
            "(root/<class>/<image>) or of split folders (root/train/<class>/<image>)."
        )
    return folder


def _refuse_classes_without_training_images(by_split: _BySplit, train: dict[str, list[str]], folder: str) -> None:
    """Split-folders: a class in val/ or test/ with no folder in train/ cannot be learnt."""
    for split in ("val", "test"):
        orphans = sorted(set(by_split[split]) - set(train))
        if orphans:
            raise DataError(
                f"class(es) {', '.join(map(repr, orphans))} appear in {folder}/{split} "
                "but have no images in train. Add training images for them or remove them."
            )


def _require_classes(classes: list[str], folder: str, layout: str, min_classes: int) -> None:
    """DataError when no class has images, or only one does and ``min_classes`` asks for more."""
    if not classes:
        where = "root/<class>/<image>" if layout == "class-folders" else "root/train/<class>/<image>"
        raise DataError(
            f"no images found in {folder}: expected {where} with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}. Check the path and the layout."
        )
    if len(classes) == 1 and min_classes > 1:
        raise DataError(
            f"tlkit needs at least 2 classes, but {folder} has only one ({classes[0]!r}). "
            "Add a folder of images for each class."
        )
