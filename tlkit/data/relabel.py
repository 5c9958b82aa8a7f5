"""``relabel.csv``: the doctor's suspect labels as an editable list, and applying it to a Manifest.

Columns: ``path`` (relative to the data folder, or absolute), ``given`` (the label on disk),
``suggested`` (the probes' choice), ``score`` (0..1, higher is more suspect), ``action``:

* ``relabel``: train on ``suggested`` instead of ``given`` (any class name of the dataset);
* ``exclude``: leave the image out (it is listed in the manifest's ``skipped``);
* ``keep``, ``review`` or empty: nothing changes (``review`` is what the doctor writes where it is
  unsure; change it to ``relabel`` or ``exclude`` after a look at the image).

Applying it changes the Manifest only: no file is moved, renamed or touched. A row whose ``given``
no longer matches the image's label (the data changed since the doctor ran) is skipped and listed.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from tlkit.data.manifest import SPLITS, Manifest
from tlkit.errors import ConfigError, DataError

HEADER = ["path", "given", "suggested", "score", "action"]
ACTIONS = ("relabel", "exclude", "keep", "review")
#: the doctor writes "relabel" for an image confident learning flags whose suggested class has at
#: least this out-of-fold probability; other suspects get "review"
RELABEL_CONFIDENCE = 0.5
EXCLUDED_REASON = "excluded by relabel.csv"


@dataclass(frozen=True)
class RelabelRow:
    path: str
    given: str
    suggested: str
    action: str
    line: int


@dataclass
class RelabelApplied:
    """What :func:`apply_relabel` did: label changes ``(path, old, new)``, exclusions, and rows it skipped."""

    relabeled: list[tuple[str, str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    unchanged: int = 0  # keep / review / empty rows, and relabel rows that name the label already given
    not_found: list[str] = field(default_factory=list)  # paths that are in no split of the manifest
    mismatched: list[str] = field(default_factory=list)  # rows whose "given" is not the image's label now

    def to_dict(self) -> dict:
        return {"relabeled": [list(r) for r in self.relabeled], "excluded": list(self.excluded),
                "unchanged": self.unchanged, "not_found": list(self.not_found), "mismatched": list(self.mismatched)}


def read_relabel(path: str | os.PathLike) -> list[RelabelRow]:
    """The rows of a relabel.csv; ConfigError names a missing column, an unknown action or the file."""
    file = Path(path)
    try:
        with open(file, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "action") if c not in columns]
            if missing:
                raise ConfigError(f"{file} has no {' or '.join(missing)} column; expected the columns {', '.join(HEADER)}")
            reader.fieldnames = columns
            rows = []
            for line, raw in enumerate(reader, start=2):
                action = (raw.get("action") or "").strip().lower() or "keep"
                if action not in ACTIONS:
                    raise ConfigError(f"{file} line {line}: unknown action {raw.get('action')!r}; use one of {', '.join(ACTIONS)}")
                if not (raw.get("path") or "").strip():
                    raise ConfigError(f"{file} line {line}: the path is empty")
                rows.append(RelabelRow(raw["path"].strip(), (raw.get("given") or "").strip(),
                                       (raw.get("suggested") or "").strip(), action, line))
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc.strerror or exc}; check the path") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not a readable CSV file ({exc})") from exc
    return rows


def relative_path(root: str, path: str) -> str:
    """``path`` relative to ``root`` with ``/`` separators (an absolute path outside root stays as it is)."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(Path(root)).as_posix()
        except ValueError:
            return p.as_posix()
    return p.as_posix().removeprefix("./")


def apply_relabel(manifest: Manifest, relabel_csv: str | os.PathLike) -> tuple[Manifest, RelabelApplied]:
    """A copy of ``manifest`` with the label fixes and exclusions of an (edited) relabel.csv, and what was applied.

    Files are never touched: a relabelled image keeps its path and split, only its label in the
    manifest changes. ConfigError for a ``relabel`` row whose ``suggested`` is not a class.
    """
    where = {rel: (split, i) for split in SPLITS for i, (rel, _) in enumerate(manifest.splits.get(split, []))}
    splits = {s: list(manifest.splits.get(s, [])) for s in SPLITS}
    applied, drop = RelabelApplied(), []
    for row in read_relabel(relabel_csv):
        rel = relative_path(manifest.root, row.path)
        if rel not in where:
            applied.not_found.append(row.path)
            continue
        split, i = where[rel]
        current = manifest.classes[splits[split][i][1]]
        if row.given and row.given != current:
            applied.mismatched.append(rel)
        elif row.action == "exclude":
            drop.append(rel)
            applied.excluded.append(rel)
        elif row.action == "relabel" and row.suggested != current:
            if row.suggested not in manifest.classes:
                raise ConfigError(f"{relabel_csv} line {row.line}: class {row.suggested!r} (suggested for {rel}) is not "
                                  f"one of the dataset's classes: {', '.join(manifest.classes)}")
            splits[split][i] = (rel, manifest.classes.index(row.suggested))
            applied.relabeled.append((rel, current, row.suggested))
        else:
            applied.unchanged += 1
    result = replace(manifest, splits={s: sorted(v) for s, v in splits.items()}, skipped=list(manifest.skipped))
    if drop:
        result = result.without(drop, EXCLUDED_REASON)
    return result, applied
