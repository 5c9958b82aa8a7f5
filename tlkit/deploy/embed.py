"""Pooled features of every image in a folder, from a trained run's backbone or a pretrained one.

:func:`embed` (``tlkit embed``) runs the backbone through the feature store
(:class:`~tlkit.train.feature_store.FeatureStore`), so images it has already seen with the same
weights and preprocessing cost nothing, and returns :class:`Embeddings`: the features, the paths
relative to the data folder, the class names when the images sit in class folders, the backbone
and its preprocessing. :meth:`Embeddings.save` writes a ``.npz`` of plain arrays (strings as
numpy unicode, the preprocessing as JSON text), so ``np.load(path, allow_pickle=False)`` reads it;
``.parquet`` only where pyarrow is installed.

>>> # e = tlkit.embed("runs/leaves", "data/leaves"); e.features.shape, e.labels[:3]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable

import numpy as np

from tlkit._io import atomic_write, readable_text
from tlkit._version import __version__
from tlkit.errors import CheckpointError, ConfigError, DataError

__all__ = ["Embeddings", "embed", "load_embeddings", "SUFFIXES"]

#: what ``--out`` may end in
SUFFIXES = (".npz", ".parquet")


@dataclass
class Embeddings:
    """Pooled backbone features of a folder of images, one row per image."""

    features: np.ndarray  # (N, feature_dim) float32
    paths: list[str]  # relative to ``root``, posix separators
    labels: list[str] | None  # class folder of each image ("" for one outside any), None without class folders
    backbone: str
    weights_source: str
    preprocessing: dict  # as model.json holds it (JSON types: lists, not tuples)
    root: str
    source: str  # the run directory the backbone came from, or "" for a pretrained backbone
    cached: int = 0  # how many images the feature store already had

    @property
    def classes(self) -> list[str]:
        return sorted({c for c in self.labels or [] if c})

    def __len__(self) -> int:
        return len(self.paths)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.npz`` (read with ``np.load(path, allow_pickle=False)``) or ``.parquet`` (pyarrow), atomically."""
        path = Path(path)
        if path.suffix == ".parquet":
            return _save_parquet(self, path)
        if path.suffix != ".npz":
            raise ConfigError(f"--out must end in .npz (or .parquet where pyarrow is installed), got {path.name}")
        arrays = {
            "features": np.asarray(self.features, dtype=np.float32),
            "paths": np.array(self.paths, dtype=str),
            "labels": np.array(self.labels if self.labels is not None else [], dtype=str),
            "has_labels": np.array(self.labels is not None),
            "classes": np.array(self.classes, dtype=str),
            "backbone": np.array(self.backbone), "weights_source": np.array(self.weights_source),
            "preprocessing": np.array(json.dumps(self.preprocessing)),
            "root": np.array(self.root), "source": np.array(self.source), "tlkit_version": np.array(__version__),
        }
        atomic_write(path, lambda handle: np.savez(handle, **arrays))
        return path


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read back what :meth:`Embeddings.save` wrote as ``.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        def text(key: str) -> str:
            return str(data[key][()])

        labels = [str(v) for v in data["labels"]] if bool(data["has_labels"]) else None
        return Embeddings(data["features"], [str(v) for v in data["paths"]], labels, text("backbone"),
                          text("weights_source"), json.loads(text("preprocessing")), text("root"), text("source"))


def _save_parquet(emb: Embeddings, path: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError(f"{path.name}: writing Parquet needs pyarrow, which is not installed here; write .npz "
                          "instead (np.load(path, allow_pickle=False) reads it)") from exc
    dim = emb.features.shape[1] if emb.features.ndim == 2 else 0
    columns = {"path": emb.paths, "label": emb.labels if emb.labels is not None else [None] * len(emb),
               "features": pa.FixedSizeListArray.from_arrays(pa.array(emb.features.reshape(-1), pa.float32()), dim)}
    meta = {"backbone": emb.backbone, "weights_source": emb.weights_source, "root": emb.root, "source": emb.source,
            "preprocessing": json.dumps(emb.preprocessing), "tlkit_version": __version__}
    table = pa.table(columns).replace_schema_metadata(meta)
    atomic_write(path, lambda handle: pq.write_table(table, handle))
    return path


def embed(run_or_backbone: str | os.PathLike, data: str | os.PathLike, *, out: str | os.PathLike | None = None,
          batch_size: int = 64, workers: int = 0, device: str = "cpu", cache_dir: str | os.PathLike | None = None,
          image_size: int | None = None, pretrained: bool = True, weights: str | None = None, offline: bool | None = None,
          progress: Callable[[int, int], None] | None = None) -> Embeddings:
    """Pooled features of every image below ``data`` (written to ``out`` when given: ``.npz``).

    ``run_or_backbone``: a run directory (or saved model folder: its backbone, fine-tuned weights
    and preprocessing) or a backbone name (pretrained weights, found as ``tlkit finetune`` finds them;
    ``image_size`` changes its input size). ``cache_dir``: the feature store (default: the run's own,
    else ``$TLKIT_CACHE_DIR`` or ``~/.cache/tlkit/features``). Labels are the class folders of ``data`` when it has
    them (``train/val/test`` split folders too), else None.

    >>> # tlkit.embed("efficientnet_lite0", "data/leaves", out="leaves.npz").features.shape
    """
    import torch

    from tlkit.train.feature_store import FeatureStore

    _check_out(out)  # before any work
    backbone, preprocessing, source = _backbone(run_or_backbone, image_size, pretrained, weights, offline)
    if cache_dir is None and source:
        cache_dir = _run_cache_dir(Path(source))
    root, rel, labels = _images(data)
    paths = [os.path.join(root, *r.split("/")) for r in rel]
    features, stats = FeatureStore(cache_dir).get(backbone, preprocessing, paths, batch_size=batch_size,
                                                  workers=workers, device=torch.device(device), progress=progress)
    result = Embeddings(features.numpy().astype(np.float32, copy=False), rel, labels, backbone.spec.name,
                        backbone.weights_source, json.loads(json.dumps(preprocessing.to_dict())), root, source,
                        cached=stats.hits)
    if out is not None:
        result.save(out)
    return result


def _check_out(out: str | os.PathLike | None) -> None:
    if out is None:
        return
    path = Path(out)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"--out must end in .npz (or .parquet where pyarrow is installed), got {path.name}")
    if path.suffix == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError(f"{path.name}: writing Parquet needs pyarrow, which is not installed here; write .npz "
                              "instead (np.load(path, allow_pickle=False) reads it)")


def _run_cache_dir(run: Path) -> str | None:
    """The feature cache the run trained with (its config.yaml), so features it computed are found."""
    from tlkit.config import load_run_config

    config = run / "config.yaml"
    try:
        return load_run_config(config).cache_dir if config.is_file() else None
    except ConfigError:  # a damaged config.yaml only costs the cache: the default one is used
        return None


def _backbone(name: str | os.PathLike, image_size: int | None, pretrained: bool, weights: str | None,
              offline: bool | None) -> tuple[Any, Any, str]:
    """(backbone, preprocessing, source) of a run directory or a backbone name."""
    text = os.fspath(name)
    folder = Path(text).expanduser()
    if folder.is_dir():
        from tlkit.models.transfer import load

        if image_size is not None:
            raise ConfigError(f"--image-size is fixed by the run {folder} (its model.json); leave it out")
        model = load(folder)  # CheckpointError when the folder holds no model
        return model.backbone, model.preprocessing, str(folder.resolve())
    if os.sep in text or (os.altsep and os.altsep in text):
        raise CheckpointError(f"no run directory {text}: give a run written by 'tlkit finetune', or a backbone name "
                              "(see 'tlkit backbones')")
    from tlkit.models.builder import build

    backbone = build(text, pretrained=pretrained, weights_file=weights, offline=offline)
    return backbone, backbone.preprocessing.with_size(image_size), ""


def _images(data: str | os.PathLike) -> tuple[str, list[str], list[str] | None]:
    """The data root, every image below it (relative, sorted), and its class folder when there are any."""
    from tlkit.data import list_images
    from tlkit.data.scan import find_layout

    root = os.path.abspath(os.path.expanduser(os.fspath(data)))
    if not os.path.isdir(root):
        raise DataError(f"no such folder: {readable_text(os.fspath(data))} (give a folder of images, or of class folders)")
    rel = sorted(PurePath(os.path.relpath(p, root)).as_posix() for p in list_images([root]))
    layout = find_layout(root)
    class_of = {f: name for per_class in layout.groups.values() for name, files in per_class.items() for f in files}
    labels = [class_of.get(r, "") for r in rel] if class_of else None
    return root, rel, labels
