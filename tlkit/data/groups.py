"""Group-aware splits: images of one object, patient, panel or session stay in one split.

A *group rule* (``--group-by``) names each image's group:

* ``subfolder``: the first folder below the class folder (``leaves/rust/plant07/a.jpg`` -> ``plant07``;
  images directly in the class folder are groups of one);
* a CSV file (``groups.csv`` with columns ``path,group``; paths relative to the data folder or absolute);
* anything else is a regular expression searched in the file name: its first capture group, or the
  whole match, is the group (``--group-by "^(P\\d+)_"`` groups ``P012_left.png`` with ``P012_right.png``).

Files the rule does not place are groups of one (and counted, so the user can see the rule miss).
The split itself is scikit-learn's ``StratifiedGroupKFold``: whole groups go to test, then to
validation, with class proportions kept as far as the groups allow; it is seeded, and it depends
only on the file names, the groups and the seed.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlkit.errors import ConfigError, DataError

__all__ = ["GroupRule", "group_rule", "grouped_split", "split_by_groups"]

#: files by class, per split (what the split rule returns)
BySplit = dict[str, dict[str, list[str]]]


@dataclass
class GroupRule:
    """How file paths (relative to the data folder, posix) map to groups."""

    spec: str
    kind: str  # "subfolder", "csv" or "regex"
    pattern: re.Pattern | None = None
    table: dict[str, str] = field(default_factory=dict)

    def group(self, rel: str, depth: int) -> str | None:
        """The group of ``rel``, whose class folder is at ``depth`` (0: ``class/...``, 1: ``train/class/...``);
        None when the rule does not place it."""
        parts = rel.split("/")
        if self.kind == "subfolder":
            return parts[depth + 1] if len(parts) > depth + 2 else None
        if self.kind == "csv":
            return self.table.get(rel)
        match = self.pattern.search(parts[-1])
        if match is None:
            return None
        return match.group(1) if match.groups() and match.group(1) is not None else match.group(0)


def group_rule(spec: str, root: str) -> GroupRule:
    """Parse ``--group-by``; ConfigError names what is wrong with it."""
    if not spec or not spec.strip():
        raise ConfigError("--group-by is empty: give 'subfolder', a CSV file of path,group, or a regular expression")
    if spec == "subfolder":
        return GroupRule(spec, "subfolder")
    if spec.lower().endswith(".csv"):
        return GroupRule(spec, "csv", table=_read_group_csv(Path(spec), root))
    try:
        return GroupRule(spec, "regex", pattern=re.compile(spec))
    except re.error as exc:
        raise ConfigError(f"--group-by {spec!r} is not a valid regular expression ({exc}); give 'subfolder', "
                          "a CSV file ending in .csv, or a regular expression such as '^(P\\d+)_'") from exc


def _read_group_csv(path: Path, root: str) -> dict[str, str]:
    if not path.is_file():
        raise ConfigError(f"--group-by {path}: no such CSV file (columns: path,group)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"path", "group"} <= set(rows[0]):
        raise ConfigError(f"--group-by {path}: the CSV needs a header with the columns path and group")
    table = {}
    for row in rows:
        p = row["path"].strip()
        rel = os.path.relpath(p, root) if os.path.isabs(p) else p
        table[Path(rel).as_posix()] = row["group"].strip()
    return table


def grouped_split(files_by_class: dict[str, list[str]], rule: GroupRule, *, depth: int, val_fraction: float,
                  test_fraction: float, seed: int) -> tuple[BySplit, dict[str, str], int]:
    """Split whole groups into train/val/test, stratified by class.

    Returns the split (files by class, per split), every file's group, and how many files the rule
    did not place (each became a group of its own).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    rels = sorted((rel, name) for name, files in files_by_class.items() for rel in files)
    groups, unplaced = {}, 0
    for rel, _ in rels:
        g = rule.group(rel, depth)
        if g is None:
            unplaced += 1
            g = rel  # a group of one
        groups[rel] = g
    labels = np.array([name for _, name in rels])
    group_ids = np.array([groups[rel] for rel, _ in rels])
    n_groups = len(set(group_ids.tolist()))
    held = [f for f in (test_fraction, val_fraction) if f > 0]
    if held and n_groups < 3:
        raise DataError(f"--group-by {rule.spec!r} puts the {len(rels)} images into {n_groups} group(s); keeping "
                        "train, validation and test apart needs at least 3. Check the rule, or split without it")
    assignment = np.array(["train"] * len(rels), dtype=object)
    remaining = np.arange(len(rels))
    for split, fraction in (("test", test_fraction), ("val", val_fraction / max(1e-9, 1 - test_fraction))):
        left = len(set(group_ids[remaining].tolist()))
        if fraction <= 0 or left < 2:
            continue
        n_splits = max(2, min(round(1 / fraction), left))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % 2**32)
        _, held_out = next(folds.split(np.zeros(len(remaining)), labels[remaining], group_ids[remaining]))
        assignment[remaining[held_out]] = split
        remaining = np.delete(remaining, held_out)
    # a class whose every group was held out would have nothing to learn from: its groups train
    untrained = set(labels.tolist()) - set(labels[assignment == "train"].tolist())
    for g in sorted({group_ids[i] for i in range(len(rels)) if labels[i] in untrained}):
        assignment[group_ids == g] = "train"
    by_split: BySplit = {s: {name: [] for name in files_by_class} for s in ("train", "val", "test")}
    for (rel, name), split in zip(rels, assignment):
        by_split[split][name].append(rel)
    return by_split, groups, unplaced


def split_by_groups(layout: str, found: dict[str, dict[str, list[str]]], rule: GroupRule, *, val_fraction: float,
                    test_fraction: float, seed: int) -> tuple[BySplit, dict[str, str]]:
    """The split of a scanned folder (``layout``, and its files by class under ``"all"`` or per given split)
    by whole groups, and every file's group. Given split folders stay as they are; a missing val or test
    split is cut from train by groups."""
    if layout == "class-folders":
        by_split, groups, _ = grouped_split(found["all"], rule, depth=0, val_fraction=val_fraction,
                                            test_fraction=test_fraction, seed=seed)
        return by_split, groups
    cut, groups, _ = grouped_split(found.get("train", {}), rule, depth=1,
                                   val_fraction=val_fraction if "val" not in found else 0.0,
                                   test_fraction=test_fraction if "test" not in found else 0.0, seed=seed)
    for split in ("val", "test"):
        for files in found.get(split, {}).values():
            groups.update({rel: rule.group(rel, 1) or rel for rel in files})
    return {"train": cut["train"], **{s: found[s] if s in found else cut[s] for s in ("val", "test")}}, groups
