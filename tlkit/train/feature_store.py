"""The on-disk feature store: cached outputs of a backbone's frozen part, one row per file content.

A frozen backbone costs one forward pass per image (per augmented view) for a whole run: the
output of the frozen part is computed once and stored under a key (one folder, an *entry*) made of

* a fingerprint of the frozen layers' weights (so a different checkpoint or random init never hits),
* the backbone name, the preprocessing, the group boundary, the augmentation preset, view and seed,

and, inside an entry, one row per file **content**: the BLAKE2b hash of the file's bytes. New
pixels get new features whatever the file's size, mtime or name (``cp -p``, ``rsync -a`` and
archive extraction keep the old mtime; BMP/PGM/TIFF keep the size); a moved or renamed dataset
still hits; augmented views are seeded from the same hash, so they repeat after a move too.
Identical files share one row. The store lives in ``$TLKIT_CACHE_DIR`` (default
``~/.cache/tlkit/features``) so runs and recipes on the same data share it.

Every call hashes every file, once: no size+mtime or stat shortcut. Such a shortcut is only
safe where the kernel's change time (``st_ctime``, which ``os.utime`` cannot set back) changes
on every write, and that does not hold on FAT/exFAT (no change time), on Windows (``st_ctime`` is
the creation time), with coarse timestamps (two writes in one clock tick) or on network file
systems (the server's clock); tlkit cannot tell those apart. Hashing costs little next to what it
guards (``bench/hashing.py``, 2-core CPU, files in the page cache): 0.14 ms per 51 KiB JPEG and
0.04 ms per small PNG, under 0.1 % of an efficientnet_lite0 extraction at 224 px and under 0.5 %
of decoding; a fully cached call on 2,000 files takes 0.2 s. What it does cost is one read of
every file per call: on slow network storage a fully cached run reads the dataset once, as one
epoch on images would.

Trust: the rows of an entry are only read or written under a per-entry lock (``.lock``, with
:class:`filelock.FileLock`), and a writer merges what another wrote in the meantime. Each write
draws a generation id stored in both the index JSON and the safetensors metadata, with a
checksum of the data; a reader checks the pair, the checksum, the shapes and that every value is
finite. An entry that fails is dropped, recomputed, and a one-line message says so
(:attr:`ExtractStats.messages`). Temp files are only cleaned under the lock, so a live writer's
are never removed. Rows of non-finite features, and of files that changed while they were read,
are returned but never stored. File names need not be UTF-8: the index holds hashes, and
messages print undecodable bytes as ``\\xNN``.

This module owns the key, the content hashing and the get/merge logic; the entry's files, checks
and lock are :mod:`tlkit.train.feature_entries`, running the backbone is :mod:`tlkit.train.feature_extract`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from tlkit._io import clean_stale_temp_files
from tlkit.errors import DataError
from tlkit.models.backbone import Backbone
from tlkit.models.ensemble import is_ensemble, member_preprocessing, members
from tlkit.train.feature_entries import FORMAT_VERSION, Entry, EntryLockError, dropped_message, printable
from tlkit.train.feature_extract import Progress, backbone_fingerprint, compute_features, view_seed
from tlkit.transforms import Preprocessing

if TYPE_CHECKING:
    from tlkit.train.distributed import Distributed

__all__ = ["ExtractStats", "FeatureStore", "Progress", "backbone_fingerprint", "compute_features", "content_id", "content_ids",
           "default_cache_dir", "printable"]


def default_cache_dir() -> Path:
    """``$TLKIT_CACHE_DIR``, else ``~/.cache/tlkit/features``."""
    env = os.environ.get("TLKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tlkit" / "features"


def content_id(path: str) -> tuple[str, tuple[int, ...]]:
    """BLAKE2b of the file's bytes (its row key), and the stat of the file as it was read.

    The stat is only used to notice a file rewritten while it was being read (not cached then).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO named *.png would block the read
            raise DataError(f"cannot read image {printable(path)}: not a regular file; remove it from the data")
        with open(path, "rb") as handle:
            seen = _signature(os.fstat(handle.fileno()))
            digest = hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read image {printable(path)}: {exc.strerror or exc}; check the file "
                        "and its permissions, or remove it from the data") from exc
    return digest, seen


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def content_ids(paths: Sequence[str]) -> tuple[list[str], list[tuple[int, ...]]]:
    """:func:`content_id` of every path, in order. One thread: on a 2-core CPU a thread pool was
    slower (0.16 against 0.12 ms per JPEG, 0.08 against 0.03 ms per small PNG, files in the page cache)."""
    pairs = [content_id(p) for p in paths]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass
class ExtractStats:
    """What one :meth:`FeatureStore.get` call did: files asked for, rows computed, time, and what to tell the user."""

    requested: int = 0
    computed: int = 0
    seconds: float = 0.0
    #: one line per thing the caller should tell the user (an entry dropped and why, rows not cached)
    messages: list[str] = field(default_factory=list)

    @property
    def hits(self) -> int:
        """Files served from the store."""
        return self.requested - self.computed


def _missing(ids: Sequence[str], rows: dict[str, int]) -> list[int]:
    """Positions of the first file of each content that is not stored yet."""
    first: dict[str, int] = {}
    for i, cid in enumerate(ids):
        if cid not in rows:
            first.setdefault(cid, i)
    return list(first.values())


class FeatureStore:
    """Cached outputs of a backbone's frozen part, per file content, on disk."""

    def __init__(self, root: str | os.PathLike | None = None, *, lock_timeout: float = 600.0,
                 channels_last: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.lock_timeout = lock_timeout
        #: extract from channels_last batches on a CPU too (faster, numbers a rounding apart: their own
        #: entries); False for a run made before, so that it resumes to the same numbers
        self.channels_last = channels_last

    def key(self, backbone: Backbone, preprocessing: Preprocessing, stop_group: int, augment: str, view: int,
            seed: int) -> str:
        described = {
            "version": FORMAT_VERSION,
            "backbone": backbone.spec.name,
            "weights": backbone_fingerprint(backbone, stop_group),
            "preprocessing": preprocessing.to_dict(),
            "stop_group": stop_group,
            "augment": augment,
            "view": view if augment != "none" else 0,
            "seed": seed if augment != "none" else 0,
            **({"channels_last": True} if self.channels_last else {}),  # absent: entries made before it existed
        }
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]

    def get(self, backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str], *, stop_group: int | None = None,
            augment: str = "none", view: int = 0, seed: int = 0, batch_size: int = 64, workers: int = 0,
            device: torch.device | str = "cpu", progress: Progress | None = None,
            dist: Distributed | None = None) -> tuple[torch.Tensor, ExtractStats]:
        """Outputs of groups ``[0, stop_group)`` for ``paths`` (pooled features when ``stop_group`` is the end).

        Only contents not already stored go through the backbone. ``stats.messages`` holds what
        the user should be told (an entry dropped and why, rows left uncached). With ``dist``
        (several processes, see ``tlkit.train.distributed``) every rank must call this with the same
        arguments: they share the files to compute and all get the full tensor back.
        """
        from tlkit.train.distributed import SINGLE

        stop_group = backbone.num_groups if stop_group is None else stop_group
        if not paths:
            return torch.empty(0), ExtractStats()
        if is_ensemble(backbone) and stop_group == backbone.num_groups:  # each member's own entry, side by side
            return self._get_members(backbone, preprocessing, paths, augment=augment, view=view, seed=seed,
                                     batch_size=batch_size, workers=workers, device=device, progress=progress, dist=dist)
        return self._get_sharded(dist if dist is not None else SINGLE, backbone, preprocessing, paths, stop_group,
                                 augment, view, seed, batch_size, workers, torch.device(device), progress)

    def _get_members(self, backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str], **options: Any
                     ) -> tuple[torch.Tensor, ExtractStats]:
        """An ensemble's pooled features: each member's (its own cache entry at the ensemble's crop, shared
        with runs and sweeps of that backbone alone), concatenated in member order; the stats sum the members'."""
        parts, total = [], ExtractStats(requested=len(paths))
        for i, member in enumerate(members(backbone)):
            features, stats = self.get(member, member_preprocessing(backbone, i, preprocessing), paths, **options)
            parts.append(features.reshape(len(paths), -1))
            total.computed = max(total.computed, stats.computed)
            total.seconds += stats.seconds
            total.messages += stats.messages
        return torch.cat(parts, dim=1), total

    def _get_sharded(self, dist: Distributed, backbone: Backbone, preprocessing: Preprocessing, paths: Sequence[str],
                     stop_group: int, augment: str, view: int, seed: int, batch_size: int, workers: int,
                     device: torch.device, progress: Progress | None) -> tuple[torch.Tensor, ExtractStats]:
        """:meth:`get` on one or several ranks: rank 0 alone hashes the files and reads and writes the
        store (it may be on its disk only); the contents it lacks are split over the ranks, and one
        row per content, stored or fresh, is gathered on every rank, then spread to ``paths`` order.
        One process takes the same path, with every collective a no-op."""
        import time

        start = time.perf_counter()
        stats = ExtractStats(requested=len(paths))
        plan = None
        if dist.is_main:
            entry = self._entry(backbone, preprocessing, stop_group, augment, view, seed)
            ids, seen = content_ids(paths)
            snap = self._lookup(entry, stats.messages)
            todo = _missing(ids, snap.rows)
            slots = {cid: s for s, cid in enumerate(dict.fromkeys(ids))}  # one row per content
            # seeds come from rank 0's content hashes, so a view is the same whichever rank computes it
            seeds = None if augment == "none" else [view_seed(ids[i], view, seed) for i in todo]
            plan = (todo, seeds, [slots[cid] for cid in ids])
        todo, seeds, spread = dist.same_on_all(plan)
        parts, where = [], []
        mine = dist.shard(len(todo))
        if mine:
            parts.append(compute_features(backbone, preprocessing, [paths[todo[j]] for j in mine],
                                           None if seeds is None else [seeds[j] for j in mine], augment, stop_group,
                                           batch_size, workers, device, progress, channels_last=self.channels_last))
            where += [spread[todo[j]] for j in mine]
        if dist.is_main and snap.rows:
            hits = [cid for cid in slots if cid in snap.rows]
            parts.append(snap.data[torch.tensor([snap.rows[cid] for cid in hits], dtype=torch.long)])
            where += [slots[cid] for cid in hits]
        local = parts[0] if len(parts) == 1 else torch.cat(parts) if parts else torch.empty(0)
        n_unique = max(spread) + 1
        if not dist.enabled and where == list(range(n_unique)):  # already in order: no copy of a large entry
            unique = local
        else:
            unique = dist.gather_rows(local, torch.tensor(where, dtype=torch.long), n_unique)
        del parts, local
        if dist.is_main and todo and snap.writable:
            fresh = unique[torch.tensor([spread[i] for i in todo], dtype=torch.long)]
            self._store(entry, snap, [ids[i] for i in todo], [paths[i] for i in todo], [seen[i] for i in todo], fresh,
                        {"backbone": backbone.spec.name, "stop_group": stop_group}, stats.messages)
        stats.computed, stats.seconds = len(todo), time.perf_counter() - start
        return (unique if n_unique == len(spread) else unique[torch.tensor(spread, dtype=torch.long)]), stats

    # -- storage
    def _entry(self, backbone: Backbone, preprocessing: Preprocessing, stop_group: int, augment: str, view: int,
               seed: int) -> Entry:
        return Entry(self.root / self.key(backbone, preprocessing, stop_group, augment, view, seed), self.lock_timeout)

    @staticmethod
    def _lookup(entry: Entry, messages: list[str]) -> _Snapshot:
        """The entry's trusted rows, their generation, and whether this call may write the entry.

        Under the lock, stale temp files go and an untrusted entry is dropped. Without the lock
        (held elsewhere too long, a read-only cache) the entry is only read: a live writer may be
        half-way, so a disagreement there is skipped for this call, not dropped.
        """
        try:
            with entry.locked():
                clean_stale_temp_files(entry.folder)
                rows, data, generation, why = entry.read()
                if why:
                    messages.append(dropped_message(entry.folder, why))
                    entry.drop()
                return _Snapshot(rows, data, generation, True)
        except EntryLockError as exc:
            rows, data, generation, why = entry.read()
            skipped = f", and skipped it ({why})" if why else ""
            messages.append(f"feature cache {printable(entry.folder)}: {exc}; read it without writing{skipped}; "
                            "new features are not cached this time")
            return _Snapshot(rows, data, generation, False)

    def _store(self, entry: Entry, snap: _Snapshot, new_ids: list[str], new_paths: list[str],
               new_seen: list[tuple[int, ...]], fresh: torch.Tensor, described: dict, messages: list[str]) -> None:
        """Add the fresh rows worth keeping to the entry, merged with whatever it holds by now."""
        keep = _worth_keeping(new_paths, new_seen, fresh, messages)
        if not keep:
            return
        try:
            with entry.locked():
                clean_stale_temp_files(entry.folder)
                rows, data = snap.rows, snap.data
                if entry.generation() != snap.generation:  # another process wrote it since: merge with that
                    rows, data, _, why = entry.read()
                    if why:
                        messages.append(dropped_message(entry.folder, why))
                        entry.drop()
                rows = dict(rows)
                add = [j for j in keep if new_ids[j] not in rows]
                if not add:
                    return
                base = len(rows)
                for offset, j in enumerate(add):
                    rows[new_ids[j]] = base + offset
                picked = fresh[torch.tensor(add, dtype=torch.long)]
                entry.write(rows, picked if data is None else torch.cat([data, picked]), described)
        except EntryLockError as exc:
            messages.append(f"feature cache {printable(entry.folder)}: {exc}; {len(keep)} new rows not cached")


@dataclass
class _Snapshot:
    """What :meth:`FeatureStore._lookup` found: trusted rows, their generation, whether to write."""

    rows: dict[str, int]
    data: torch.Tensor | None
    generation: str | None
    writable: bool


def _worth_keeping(paths: list[str], seen: list[tuple[int, ...]], fresh: torch.Tensor, messages: list[str]) -> list[int]:
    """Which fresh rows may be stored: finite ones, of files not rewritten since they were hashed."""
    finite = torch.isfinite(fresh.reshape(len(fresh), -1)).all(1).tolist()
    changed = []
    for j, path in enumerate(paths):
        try:
            if _signature(os.stat(path)) != seen[j]:
                changed.append(j)
        except OSError:
            changed.append(j)
    if changed:
        messages.append(f"{len(changed)} file(s) changed while they were read, e.g. {printable(paths[changed[0]])}: "
                        "their features were not cached (they are computed again next time)")
    broken = [j for j, ok in enumerate(finite) if not ok]
    if broken:
        messages.append(f"the backbone gave NaN or infinite features for {len(broken)} file(s), e.g. "
                        f"{printable(paths[broken[0]])}: not cached; check the backbone's weights and these images")
    skip = set(changed) | set(broken)
    return [j for j in range(len(paths)) if j not in skip]

