"""The manifest: which files are in which split and class, saved as ``splits.json`` so a run can be repeated.

A :class:`Manifest` holds the sorted class names and, per split, a sorted list of
``(path relative to root, label)``; paths are relative so the manifest moves with the data, and
:meth:`Manifest.from_dict` refuses any path that would leave the data root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from tlkit._io import atomic_write_bytes
from tlkit.data.images import describe_error
from tlkit.errors import ConfigError, DataError

__all__ = ["SPLITS", "Manifest"]

SPLITS: tuple[str, ...] = ("train", "val", "test")

_MANIFEST_VERSION = 1


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
    group_by: str | None = None  # the --group-by rule the split kept groups together by
    groups: dict[str, str] = field(default_factory=dict)  # relative path -> group, with group_by
    labels_applied: dict = field(default_factory=dict)  # what a relabel.csv changed (tlkit.data.relabel)

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
            **({"group_by": self.group_by, "groups": dict(sorted(self.groups.items()))} if self.group_by else {}),
            **({"labels_applied": self.labels_applied} if self.labels_applied else {}),
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
                group_by=None if d.get("group_by") is None else str(d["group_by"]),
                groups={str(k): str(v) for k, v in (d.get("groups") or {}).items()},
                labels_applied=dict(d.get("labels_applied") or {}),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"manifest has a malformed field: {describe_error(exc)}") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as deterministic UTF-8 JSON, atomically (temp file + rename)."""
        target = os.fspath(path)
        try:
            text = json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # Undecodable bytes in a file name survive as surrogates; \u-escapes keep them.
            data = (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")
        atomic_write_bytes(Path(target), data)

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
            raise DataError(f"cannot read manifest {file}: {describe_error(exc)}. Check the path.") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"manifest {file} is not valid JSON ({describe_error(exc)}). Delete it and rescan the data."
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
            group_by=self.group_by,
            groups={rel: g for rel, g in self.groups.items() if rel not in drop},
            labels_applied=dict(self.labels_applied),
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
