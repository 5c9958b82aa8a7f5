"""Checking a data set before training: every problem found, none raised, each with its fix.

:func:`check` returns a :class:`CheckReport` of :class:`Problem` s: unreadable files, empty class
folders, too few images or classes, identical files (leakage across splits) and class imbalance.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Any

# load_image is looked up on its module at each call, so patching tlkit.data.images.load_image
# (a test counting reads) reaches every read tlkit makes.
from tlkit.data import images
from tlkit.data.manifest import SPLITS, Manifest
from tlkit.data.scan import find_layout, scan_lenient
from tlkit.errors import ConfigError, DataError

__all__ = ["CheckReport", "Problem", "check"]

# (split, posix path relative to the root) of every sample, in manifest order
_Samples = list[tuple[str, str]]


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
    :func:`~tlkit.data.images.load_image`), empty class folders, no images / a single class, classes too small to
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
    manifest, empty_dirs = _manifest_and_empty_dirs(root_or_manifest)
    counts = {s: manifest.counts(s) for s in SPLITS}
    totals = manifest.counts()
    samples = [(split, rel) for split in SPLITS for rel, _ in manifest.splits.get(split, [])]

    problems = _empty_class_problems(empty_dirs)
    problems += _class_count_problems(manifest, samples)
    problems += _small_class_problems(manifest.classes, counts["train"], totals)
    bad: set[str] = set()
    if verify_images:
        problems += _unreadable_problems(manifest.root, samples, bad)
    problems.extend(_duplicate_problems(manifest.root, samples, bad, problems))
    problems += _imbalance_problems(totals, imbalance_ratio)
    problems += _group_problems(manifest)

    return CheckReport(
        root=manifest.root,
        classes=list(manifest.classes),
        counts=counts,
        problems=problems,
        bad_files=sorted(bad),
    )


def _manifest_and_empty_dirs(root_or_manifest: str | os.PathLike[str] | Manifest) -> tuple[Manifest, list[str]]:
    """The manifest to check and the empty class folders under its root (a path is scanned leniently)."""
    if not isinstance(root_or_manifest, Manifest):
        return scan_lenient(root_or_manifest, val_fraction=0.15, test_fraction=0.15, seed=0)
    manifest = root_or_manifest
    empty_dirs: list[str] = []
    if os.path.isdir(manifest.root):
        try:
            empty_dirs = find_layout(manifest.root).empty_class_dirs
        except (DataError, OSError):
            empty_dirs = []  # the layout itself is broken; the manifest is what we check
    return manifest, empty_dirs


def _empty_class_problems(empty_dirs: list[str]) -> list[Problem]:
    return [
        Problem(
            "warning", "empty-class",
            f"empty class folder {rel_dir!r} has no images and is left out of the classes; "
            "add images or remove the folder",
            [rel_dir],
        )
        for rel_dir in empty_dirs
    ]


def _class_count_problems(manifest: Manifest, samples: _Samples) -> list[Problem]:
    """No images at all, or a single class: training needs two classes with images."""
    if not samples:
        return [Problem(
            "error", "no-images",
            f"no images found in {manifest.root}; expected root/<class>/<image> or "
            "root/train/<class>/<image>",
            [],
        )]
    if len(manifest.classes) < 2:
        return [Problem(
            "error", "single-class",
            f"tlkit needs at least 2 classes, but {manifest.root} has only "
            f"{manifest.classes[0]!r}; add a folder of images for each class",
            [],
        )]
    return []


def _small_class_problems(classes: list[str], train_counts: dict[str, int], totals: dict[str, int]) -> list[Problem]:
    """A class with no training images (error), or too few images to appear in every split (warning)."""
    problems = []
    for name in classes:
        if train_counts[name] == 0:
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
    return problems


def _unreadable_problems(root: str, samples: _Samples, bad: set[str]) -> list[Problem]:
    """Decode every sample fully; each one that fails is added to ``bad`` and reported."""
    problems = []
    for _, rel in samples:
        try:
            images.load_image(os.path.join(root, *rel.split("/")))
        except DataError as exc:
            bad.add(rel)
            problems.append(Problem("error", "unreadable", str(exc), [rel]))
    return problems


def _group_problems(manifest: Manifest) -> list[Problem]:
    """With ``--group-by``: a group whose images sit in two splits is leakage (given split folders can do that)."""
    splits_of: dict[str, set[str]] = {}
    for split in SPLITS:
        for rel, _ in manifest.splits.get(split, []):
            if rel in manifest.groups:
                splits_of.setdefault(manifest.groups[rel], set()).add(split)
    leaks = sorted(g for g, where in splits_of.items() if len(where) > 1)
    if not leaks:
        return []
    paths = sorted(rel for rel, g in manifest.groups.items() if g in set(leaks[:20]))
    shown = ", ".join(leaks[:5]) + (f" and {len(leaks) - 5} more" if len(leaks) > 5 else "")
    return [Problem("error", "group-leak", f"{len(leaks)} group(s) of --group-by {manifest.group_by!r} have images in "
                    f"more than one split ({shown}): the test images are not new to the model. Move each group's "
                    "images into one split folder, or drop the val/test folders and let tlkit split by groups", paths)]


def _duplicate_problems(root: str, samples: _Samples, bad: set[str], problems: list[Problem]) -> list[Problem]:
    """Group files by SHA-1 of their bytes; report groups spanning splits (error) or within one.

    A file that cannot be read is added to ``bad`` and its problem appended to ``problems``.
    """
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


def _imbalance_problems(totals: dict[str, int], imbalance_ratio: float) -> list[Problem]:
    """A warning when the largest class has ``imbalance_ratio`` times the images of the smallest."""
    if len(totals) < 2:
        return []
    largest = max(totals, key=lambda c: totals[c])
    smallest = min(totals, key=lambda c: totals[c])
    small, large = totals[smallest], totals[largest]
    if small == 0 or large / small >= imbalance_ratio:
        return [Problem(
            "warning", "imbalance",
            f"classes are imbalanced: {largest!r} has {large} images, {smallest!r} has {small} "
            f"(ratio >= {imbalance_ratio:g}); consider class weighting or more images of small classes",
            [],
        )]
    return []
