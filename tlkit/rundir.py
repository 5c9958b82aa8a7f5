"""The run directory: every file name of a run, and the rules for creating, overwriting and resuming.

A folder tlkit writes (a training run, an evaluation report, Grad-CAM overlays) carries a marker,
``tlkit-run.json``, that only tlkit writes. ``--overwrite`` acts only on a folder with that marker
(or a run made before markers existed: ``config.yaml`` and ``splits.json`` beside nothing but run
files) that holds nothing a run does not write, and then deletes only the entries a run writes;
nothing outside them is ever deleted. A folder that is, contains or lies inside the data folder,
or that is or contains ``$HOME`` or the current directory, is refused as an output folder: an
output there would mix with the user's own files. The scanner never takes a marked folder for a
class (``tlkit.data``).

>>> RunDir("runs/leaves").checkpoint.as_posix()
'runs/leaves/checkpoints/last.pt'
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import shutil
from pathlib import Path

from tlkit._io import TMP_MARK, atomic_write_text
from tlkit._version import __version__
from tlkit.errors import CheckpointError, ConfigError

MARKER = "tlkit-run.json"
MARKER_FORMAT = "tlkit-run"
MARKER_VERSION = 1
KINDS = ("run", "evaluation", "explain")

#: the files of an evaluation report (``tlkit.report.files.write_report``); a run holds them too
REPORT_FILES = frozenset({
    "metrics.json", "per_class.csv", "confusion_matrix.csv", "predictions.csv", "confusion_matrix.png",
    "confusion_matrix_normalized.png", "reliability.png", "per_class.png", "misclassified.png", "report.html",
})
#: report files written only when they apply: the coverage-accuracy curve of a model with an OOD score,
#: ROC and precision-recall curves of a two-class result, the learning curves of a training run
OPTIONAL_REPORT_FILES = frozenset({"coverage.png", "roc.png", "precision_recall.png", "learning_curves.png"})
#: the files of a training run besides its report
RUN_FILES = frozenset({
    MARKER, "config.yaml", "splits.json", "skipped.json", "labels_applied.json", "doctor.json", "metrics.jsonl", "timings.json",
    "model.safetensors",
    "model.json", "crossval.json", "crossval_confusion.png",
    "ood.safetensors",
}) | REPORT_FILES | OPTIONAL_REPORT_FILES
#: sub-folders a run writes, as ``fnmatch`` patterns: the checkpoint folder, evaluations, overlays
RUN_FOLDERS = ("checkpoints", "eval-*", "explain")


class RunDir:
    """The names of a run's files (one owner for them all) and what may be done to the folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    marker = property(lambda self: self.path / MARKER)
    config = property(lambda self: self.path / "config.yaml")
    splits = property(lambda self: self.path / "splits.json")
    skipped = property(lambda self: self.path / "skipped.json")
    labels_applied = property(lambda self: self.path / "labels_applied.json")
    doctor = property(lambda self: self.path / "doctor.json")
    metrics_log = property(lambda self: self.path / "metrics.jsonl")
    timings = property(lambda self: self.path / "timings.json")
    crossval = property(lambda self: self.path / "crossval.json")
    checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    report = property(lambda self: self.path / "report.html")

    def kind(self) -> str | None:
        """``run``, ``evaluation`` or ``explain`` for a folder tlkit made (legacy runs: ``run``); else None."""
        return folder_kind(self.path)

    def write_marker(self, kind: str = "run") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(self.marker, json.dumps({"format": MARKER_FORMAT, "version": MARKER_VERSION, "kind": kind,
                                                   "tlkit_version": __version__, "created": stamp}, indent=2))


def folder_kind(folder: str | os.PathLike) -> str | None:
    """What tlkit folder ``folder`` is, from its marker; a run made before markers existed counts as ``run``."""
    folder = Path(folder)
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("format") == MARKER_FORMAT and data.get("kind") in KINDS:
            return str(data["kind"])
    except (OSError, ValueError):
        pass
    if (folder / "config.yaml").is_file() and (folder / "splits.json").is_file() and not _foreign_entries(folder, "run"):
        return "run"
    return None


def is_tlkit_folder(folder: str | os.PathLike) -> bool:
    """True for a folder that tlkit wrote (it carries the marker): never data, never a class."""
    return (Path(folder) / MARKER).is_file()


# --------------------------------------------------------------------------------------------
# where an output folder may be


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_location(out: str | os.PathLike, *, data: str | os.PathLike | None = None, option: str = "--out") -> Path:
    """Refuse an output folder that would mix with the user's own files; returns it resolved.

    Refused: a path that is a file; one that is, contains or lies inside the data folder; one
    that is or contains ``$HOME`` or the current directory.
    """
    target = _resolved(out)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{option} {out} is a file, not a folder; give a folder for the output")
    if data is not None and os.fspath(data):
        root = _resolved(data)
        if _within(target, root) or _within(root, target):
            where = "is the data folder" if target == root else (
                "lies inside the data folder" if _within(target, root) else "contains the data folder")
            raise ConfigError(f"{option} {out} {where} {root}: outputs there would mix with your images (and be "
                              f"scanned as a class). Choose a folder outside the data, e.g. {option} runs/{root.name}")
    for name, place in (("your home folder", Path.home()), ("the current directory", Path.cwd())):
        place = _resolved(place)
        if _within(place, target):
            raise ConfigError(f"{option} {out} is or contains {name} ({place}); give a folder of its own "
                              f"for the output, e.g. {option} runs/NAME")
    return target


def _foreign_entries(folder: Path, kind: str) -> list[str]:
    """Entries of ``folder`` that a tlkit folder of ``kind`` does not write (links count as foreign)."""
    allowed = RUN_FILES if kind == "run" else REPORT_FILES | OPTIONAL_REPORT_FILES | {MARKER}
    foreign = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if entry.is_symlink():
            foreign.append(f"{name} (a link)")
        elif TMP_MARK in name:
            continue
        elif entry.is_dir():
            if kind == "run" and any(fnmatch.fnmatch(name, p) for p in RUN_FOLDERS):
                foreign += [f"{name}/{inner}" for inner in _foreign_in_subfolder(Path(entry.path), name)]
            else:
                foreign.append(name + "/")
        elif name not in allowed and not (kind == "explain" and name.endswith(".gradcam.png")):
            foreign.append(name)
    return foreign


def _foreign_in_subfolder(folder: Path, name: str) -> list[str]:
    if name == "checkpoints":
        return [e.name for e in os.scandir(folder) if e.is_symlink() or e.is_dir()
                or (e.name != "last.pt" and TMP_MARK not in e.name)]
    return _foreign_entries(folder, "explain" if name == "explain" else "evaluation")


def _occupied(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _clear(folder: Path, kind: str) -> None:
    """Delete the entries a tlkit folder of ``kind`` writes, after checking that it holds nothing else."""
    foreign = _foreign_entries(folder, kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"refusing to overwrite {folder}: it holds files a tlkit {kind} does not write ({shown}). "
                          "Move them elsewhere or choose another output folder")
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _check_writable(folder: Path, option: str) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to {folder}: {probe} is not writable (permission denied); "
                          f"choose another {option} or fix the permissions")


def prepare(out: str | os.PathLike, *, kind: str = "run", data: str | os.PathLike | None = None,
            overwrite: bool = False, resume: bool = False, option: str = "--out", check_only: bool = False) -> RunDir:
    """Create (or reopen for ``resume``) the output folder ``out`` under the rules of this module.

    An occupied folder is refused unless ``resume`` (a run with a checkpoint) or ``overwrite`` (a
    tlkit folder of the same kind holding only what it writes: its entries are deleted first).
    ``check_only``: raise what would be refused, change nothing (call again to create).
    """
    folder = Path(out)
    check_location(folder, data=data, option=option)
    _check_writable(folder, option)
    found = folder_kind(folder) if folder.is_dir() else None
    if resume:
        resumable(folder)
    elif _occupied(folder):
        if not overwrite:
            raise ConfigError(f"output folder {folder} is not empty; pass --resume to continue a run there, "
                              f"--overwrite to replace it, or {option} DIR for a new one")
        if found != kind:
            what = f"a tlkit {found} folder" if found else f"not a tlkit {kind} folder (no {MARKER})"
            raise ConfigError(f"refusing to overwrite {folder}: it is {what}. Only folders tlkit wrote are replaced; "
                              f"choose another {option}")
        if check_only:
            foreign = _foreign_entries(folder, kind)
            if foreign:
                raise ConfigError(f"refusing to overwrite {folder}: it holds files a tlkit {kind} does not write "
                                  f"({', '.join(foreign[:5])}). Move them elsewhere or choose another output folder")
            return RunDir(folder)
        _clear(folder, kind)
    if check_only:
        return RunDir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder}: {exc.strerror or exc}; choose another {option}") from exc
    _clean_own_temp_files(folder)
    run = RunDir(folder)
    if not resume or not run.marker.is_file():
        run.write_marker(kind)
    return run


def resumable(out: str | os.PathLike) -> RunDir:
    """The run in ``out`` that ``--resume`` can continue; CheckpointError when there is none."""
    run = RunDir(out)
    if not run.path.is_dir() or folder_kind(run.path) != "run" or not run.checkpoint.is_file():
        raise CheckpointError(f"nothing to resume in {run.path}: no tlkit run with checkpoints/last.pt there. "
                              "Start a new run without --resume")
    return run


def _clean_own_temp_files(folder: Path) -> None:
    """Temp files a killed writer left in the folders a run writes itself (not below them: a feature
    cache placed inside the run folder has live writers of its own and cleans its own entries)."""
    own = [folder] + [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)
                      and any(fnmatch.fnmatch(e.name, p) for p in RUN_FOLDERS)]
    for place in own:
        for entry in os.scandir(place):
            if TMP_MARK in entry.name and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)


def next_free(base: str | os.PathLike) -> Path:
    """``base`` if it is free (missing or empty), else ``base-2``, ``base-3``, ..."""
    base = Path(base)
    candidate, n = base, 2
    while _occupied(candidate) or (candidate.exists() and not candidate.is_dir()):
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate
