"""Exact and near duplicates: the same picture twice, as the same bytes, the same pixels, or a near-copy.

* **exact**: the same file bytes (BLAKE2b) or the same decoded pixels (a PNG saved again);
  grouped with a dictionary, each copy paired with the group's first file.
* **near**: a resized, re-encoded, recompressed, slightly cropped or brightened copy. Two signals
  are compared for every pair of distinct pictures, blockwise (matrix products of one block of
  rows against the rest, never a Python loop over pairs):

  - the Hamming distance of the 64-bit perceptual hashes (``imagehash.phash``);
  - the cosine similarity of the backbone features, centred on the dataset's mean feature.

  A pair is a near-duplicate when its hashes are close AND its features agree
  (``hamming <= max_hamming`` and ``cosine >= min_cosine_with_hash``), or when its features alone
  are all but identical (``cosine >= min_cosine``: a crop or a tone change can move many hash bits).

The thresholds (:data:`DEFAULT_RULE`) were measured with ``bench/doctor.py calibrate`` on images
that are not in any benchmark folder; see ``bench/REALDATA.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tlkit.diagnosis.features import ImageTable
from tlkit.diagnosis.hashes import HASH_BITS


@dataclass(frozen=True)
class DuplicateRule:
    """When two distinct pictures count as near-duplicates: any one of three routes, each a test on the
    thumbnail correlation, the Hamming distance of the perceptual hashes and the feature cosine.

    * pixels: ``thumbnail >= min_thumbnail`` and ``cosine >= min_cosine_with_thumbnail`` (resized,
      re-encoded, recompressed, brightened: nothing moved);
    * hash: ``hamming <= max_hamming``, ``thumbnail >= min_thumbnail_with_hash`` and
      ``cosine >= min_cosine_with_hash`` (the same, where a flat picture makes the thumbnail noisy);
    * features: ``cosine >= min_cosine`` and ``thumbnail >= min_thumbnail_with_cosine`` (a slight
      crop moves pixels and hash bits; the features barely change). The weak pixel test keeps
      weak features (a random backbone, a poor fit to the data) from pairing everything.
    """

    min_thumbnail: float = 0.997
    min_cosine_with_thumbnail: float = 0.3
    max_hamming: int = 8
    min_thumbnail_with_hash: float = 0.95
    min_cosine_with_hash: float = 0.85
    min_cosine: float = 0.95
    min_thumbnail_with_cosine: float = 0.5

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))

    def accepts(self, cos: torch.Tensor, ham: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        """Which pairs (elementwise over the three similarity tensors) are near-duplicates."""
        pixels = (corr >= self.min_thumbnail) & (cos >= self.min_cosine_with_thumbnail)
        hashed = (ham <= self.max_hamming) & (corr >= self.min_thumbnail_with_hash) & (cos >= self.min_cosine_with_hash)
        features = (cos >= self.min_cosine) & (corr >= self.min_thumbnail_with_cosine)
        return pixels | hashed | features


DEFAULT_RULE = DuplicateRule()


@dataclass(frozen=True)
class Pair:
    """Two rows of an :class:`ImageTable` (``first < second``) that show the same picture."""

    first: int
    second: int
    kind: str  # "exact" | "near"
    similarity: float  # cosine of the centred features; 1.0 for exact copies
    hamming: int  # bits that differ between the perceptual hashes
    correlation: float = 1.0  # of the blurred 32x32 grey thumbnails (1.0 for exact copies)


def exact_groups(table: ImageTable) -> list[list[int]]:
    """Rows sharing their bytes or their pixels, as sorted groups (every row in exactly one group)."""
    parent = list(range(len(table)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in (table.content_ids, table.pixel_digests):
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            j = first.setdefault(key, i)
            if j != i:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(table)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


def hamming_matrix(bits_a: torch.Tensor, bits_b: torch.Tensor) -> torch.Tensor:
    """Hamming distances between rows of two ``+1/-1`` hash matrices (a matrix product)."""
    return ((HASH_BITS - bits_a @ bits_b.T) / 2).round().to(torch.int32)


def signed_bits(bits: np.ndarray) -> torch.Tensor:
    """Boolean hash bits -> ``+1/-1`` float rows, so that a dot product counts agreeing bits."""
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1)


#: similarity values held at once per matrix (a block of rows against the rest): 32M floats, 128 MB
BLOCK_ELEMENTS = 1 << 25


def near_candidates(unit: torch.Tensor, bits: torch.Tensor, thumbs: torch.Tensor, rule: DuplicateRule,
                    block: int | None = None) -> list[tuple[int, int, float, int, float]]:
    """``(i, j, cosine, hamming, thumbnail correlation)`` with ``i < j`` for every pair the rule accepts, block by block
    (``block`` rows at a time; default: as many as keep each matrix under BLOCK_ELEMENTS values)."""
    found: list[tuple[int, int, float, int, float]] = []
    n = len(unit)
    block = block or max(16, min(1024, BLOCK_ELEMENTS // max(n, 1)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        cos = unit[start:stop] @ unit[start:].T  # this block against itself and every later row
        ham = hamming_matrix(bits[start:stop], bits[start:])
        corr = thumbs[start:stop] @ thumbs[start:].T
        hit = rule.accepts(cos, ham, corr)
        rows, cols = torch.nonzero(hit, as_tuple=True)
        keep = cols > rows  # upper triangle of the block's square part, and everything after it
        rows, cols = rows[keep], cols[keep]
        for r, c in zip(rows.tolist(), cols.tolist()):
            found.append((start + r, start + c, float(cos[r, c]), int(ham[r, c]), float(corr[r, c])))
    return found


def find_duplicates(table: ImageTable, rule: DuplicateRule = DEFAULT_RULE, *, block: int | None = None) -> list[Pair]:
    """Every exact copy (paired with its group's first row) and every near-copy pair, sorted by rows."""
    groups = exact_groups(table)
    pairs = []
    bits = signed_bits(table.phash_bits)
    for group in groups:
        for other in group[1:]:
            pairs.append(Pair(group[0], other, "exact", 1.0, int(hamming_matrix(bits[group[0]:group[0] + 1],
                                                                                  bits[other:other + 1])[0, 0])))
    reps = [g[0] for g in groups]  # one row per distinct picture
    members = {g[0]: g for g in groups}
    if len(reps) > 1:
        index = torch.tensor(reps, dtype=torch.long)
        thumbs = torch.from_numpy(table.thumbnails)[index]
        for i, j, cos, ham, corr in near_candidates(table.unit_features()[index], bits[index], thumbs, rule, block):
            for a in members[reps[i]]:  # every copy of one picture against every copy of the other
                for b in members[reps[j]]:
                    pairs.append(Pair(min(a, b), max(a, b), "near", round(cos, 4), ham, round(corr, 4)))
    return sorted(pairs, key=lambda p: (p.first, p.second))
