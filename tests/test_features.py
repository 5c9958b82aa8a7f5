"""Tests for tlkit.train.feature_store.FeatureStore: keys, per-file invalidation, damaged caches, exact values."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pytest
import torch
from model_testing import MessageRecorder as _Recorder
from PIL import Image

from tlkit.data import load_image
from tlkit.models.backbone import Backbone
from tlkit.models.builder import build
from tlkit.train.feature_store import ExtractStats, FeatureStore, backbone_fingerprint
from tlkit.transforms import eval_transform

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _backbone(seed: int = 0, name: str = "timm:test_resnet") -> Backbone:
    torch.manual_seed(seed)
    return build(name, pretrained=False).eval()


@pytest.fixture(scope="module")
def resnet() -> Backbone:
    return _backbone(0)


def _paths(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.png"))


def _get(store: FeatureStore, backbone: Backbone, paths: list[str], size: int = 32, **kw: Any) -> tuple[torch.Tensor, ExtractStats]:
    return store.get(backbone, backbone.preprocessing.with_size(size), paths, **kw)


def test_second_identical_call_computes_nothing(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 4, "blue": 4}))
    store = FeatureStore(tmp_path / "cache")
    feats, stats = _get(store, resnet, paths)
    assert (stats.requested, stats.computed, stats.hits) == (8, 8, 0)
    assert feats.shape == (8, resnet.feature_dim)
    again, stats2 = _get(FeatureStore(tmp_path / "cache"), resnet, paths)  # a new store object: from disk
    assert (stats2.computed, stats2.hits) == (0, 8)
    assert torch.equal(feats, again)
    # any order and any subset comes back row for row
    sub, stats3 = _get(store, resnet, paths[::-1][:3])
    assert stats3.computed == 0
    assert torch.equal(sub, feats.flip(0)[:3])


def test_changed_file_is_recomputed_alone(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 4, "blue": 4}))
    store = FeatureStore(tmp_path / "cache")
    before, _ = _get(store, resnet, paths)
    changed = paths[2]
    st = os.stat(changed)
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(changed)  # different pixels
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    after, stats = _get(store, resnet, paths)
    assert stats.computed == 1
    others = [i for i in range(len(paths)) if i != 2]
    assert torch.equal(after[others], before[others])
    assert not torch.allclose(after[2], before[2])
    expected = resnet(eval_transform(resnet.preprocessing.with_size(32))(load_image(changed)).unsqueeze(0))[0]
    torch.testing.assert_close(after[2], expected, atol=1e-5, rtol=1e-5)
    # and a new file is computed alone too
    extra = tmp_path / "data" / "red" / "new.png"
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(extra)
    _, stats = _get(store, resnet, paths + [str(extra)])
    assert stats.computed == 1


def test_cached_features_equal_the_backbone_on_the_eval_transform(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "green": 3}))
    pre = resnet.preprocessing.with_size(32)
    feats, _ = FeatureStore(tmp_path / "cache").get(resnet, pre, paths)
    with torch.inference_mode():
        direct = resnet(torch.stack([eval_transform(pre)(load_image(p)) for p in paths]))
    torch.testing.assert_close(feats, direct, atol=1e-5, rtol=1e-5)
    # intermediate activations (a group boundary) too
    acts, _ = FeatureStore(tmp_path / "cache").get(resnet, pre, paths, stop_group=3)
    with torch.inference_mode():
        direct_acts = resnet.forward_groups(torch.stack([eval_transform(pre)(load_image(p)) for p in paths]), 0, 3)
    torch.testing.assert_close(acts, direct_acts, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(resnet.forward_groups(acts, 3), direct, atol=1e-5, rtol=1e-5)


def test_key_depends_on_size_weights_boundary_augment_view_and_seed(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 2, "blue": 2}))
    store = FeatureStore(tmp_path / "cache")
    pre = resnet.preprocessing.with_size(32)
    key = store.key(resnet, pre, resnet.num_groups, "none", 0, 0)
    other_init = _backbone(seed=1)
    same_init = _backbone(seed=0)
    assert store.key(same_init, pre, resnet.num_groups, "none", 0, 0) == key
    assert store.key(other_init, pre, resnet.num_groups, "none", 0, 0) != key
    assert store.key(resnet, resnet.preprocessing.with_size(40), resnet.num_groups, "none", 0, 0) != key
    assert store.key(resnet, pre, 3, "none", 0, 0) != key
    light = store.key(resnet, pre, resnet.num_groups, "light", 0, 0)
    assert light != key
    assert store.key(resnet, pre, resnet.num_groups, "light", 1, 0) != light
    assert store.key(resnet, pre, resnet.num_groups, "light", 0, 1) != light
    # view and seed are meaningless without augmentation: one entry
    assert store.key(resnet, pre, resnet.num_groups, "none", 3, 9) == key
    # a frozen prefix's key ignores weights after it; the full key does not
    assert backbone_fingerprint(resnet, 2) != backbone_fingerprint(resnet, resnet.num_groups)
    _get(store, resnet, paths)
    _, stats = _get(store, other_init, paths)
    assert stats.computed == len(paths)
    _, stats = _get(store, resnet, paths, size=40)
    assert stats.computed == len(paths)
    _, stats = _get(store, same_init, paths)
    assert stats.computed == 0


def test_fingerprint_changes_when_weights_change_in_place(resnet: Backbone) -> None:
    bb = _backbone(0)
    fp = backbone_fingerprint(bb, bb.num_groups)
    prefix = backbone_fingerprint(bb, 1)
    with torch.no_grad():
        next(bb.group_modules(bb.num_groups - 1)[0].parameters()).add_(1e-3)
    assert backbone_fingerprint(bb, bb.num_groups) != fp
    assert backbone_fingerprint(bb, 1) == prefix  # the stem did not change


@pytest.mark.parametrize("damage", ["garbage-index", "truncated-data", "rows-mismatch", "missing-data"])
def test_damaged_cache_is_rebuilt_not_fatal(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone, damage: str) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    store = FeatureStore(tmp_path / "cache")
    good, _ = _get(store, resnet, paths)
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    if damage == "garbage-index":
        (folder / "index.json").write_bytes(b"\x00{not json")
    elif damage == "truncated-data":
        data = (folder / "features.safetensors").read_bytes()
        (folder / "features.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "rows-mismatch":
        index = json.loads((folder / "index.json").read_text())
        index["rows"] = dict(list(index["rows"].items())[:2])
        (folder / "index.json").write_text(json.dumps(index))
    else:
        (folder / "features.safetensors").unlink()
    feats, stats = _get(store, resnet, paths)
    assert stats.computed == len(paths)
    torch.testing.assert_close(feats, good)
    assert len(stats.messages) == 1, stats.messages  # and it says so, naming the folder
    assert str(folder) in stats.messages[0] and "dropped" in stats.messages[0]
    _, stats = _get(store, resnet, paths)
    assert stats.computed == 0 and not stats.messages


def test_stale_temp_files_in_the_cache_are_cleaned(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 2, "blue": 2}))
    store = FeatureStore(tmp_path / "cache")
    _get(store, resnet, paths[:2])
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    stale = folder / "features.safetensors.tmp-abc123"
    stale.write_bytes(b"half a file")
    _, stats = _get(store, resnet, paths)
    assert stats.computed == 2
    assert not stale.exists()


def test_augmented_views_repeat_exactly_and_leave_the_global_rng_alone(tmp_path: Path, make_color_dataset: Callable[..., Path],
                                                                       resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    v0, _ = _get(FeatureStore(tmp_path / "a"), resnet, paths, augment="light", view=0, seed=5)
    # extraction must not reset the caller's RNG (training's dropout and shuffles depend on it)
    assert torch.equal(torch.rand(3), expected_next)
    v0_again, stats = _get(FeatureStore(tmp_path / "b"), resnet, paths, augment="light", view=0, seed=5)
    assert stats.computed == len(paths)
    assert torch.equal(v0, v0_again)  # recomputed from scratch, identical
    v1, _ = _get(FeatureStore(tmp_path / "a"), resnet, paths, augment="light", view=1, seed=5)
    assert not torch.allclose(v0, v1)
    plain, _ = _get(FeatureStore(tmp_path / "a"), resnet, paths)
    assert not torch.allclose(v0, plain)


def test_workers_give_the_same_features(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    a, _ = _get(FeatureStore(tmp_path / "a"), resnet, paths, augment="light", batch_size=2)
    b, _ = _get(FeatureStore(tmp_path / "b"), resnet, paths, augment="light", batch_size=4, workers=2)
    assert torch.equal(a, b)


def test_empty_path_list(tmp_path: Path, resnet: Backbone) -> None:
    feats, stats = _get(FeatureStore(tmp_path / "cache"), resnet, [])
    assert len(feats) == 0 and stats.requested == 0


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "env"))
    assert FeatureStore().root == tmp_path / "env"


# --------------------------------------------------------------------------- trust: content, writers, bytes, names

def _direct(backbone: Backbone, paths: list[str], size: int = 32) -> torch.Tensor:
    pre = backbone.preprocessing.with_size(size)
    with torch.inference_mode():
        return backbone(torch.stack([eval_transform(pre)(load_image(p)) for p in paths]))


def _entry(cache: Path) -> Path:
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    return folder


def _write_bmp(path: Path, seed: int) -> Path:
    """A fixed-size format: any pixels give the same byte size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, format="BMP")
    return path


def test_new_pixels_with_the_old_size_and_mtime_are_recomputed(tmp_path: Path, resnet: Backbone) -> None:
    # what cp -p, rsync -a or unpacking an archive over a dataset does: new bytes, old size and mtime
    path, other = _write_bmp(tmp_path / "data" / "a.bmp", 1), _write_bmp(tmp_path / "data" / "b.bmp", 2)
    store = FeatureStore(tmp_path / "cache")
    before, _ = _get(store, resnet, [str(path), str(other)])
    st = os.stat(path)
    _write_bmp(path, 3)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after, stats = _get(store, resnet, [str(path), str(other)])
    assert stats.computed == 1
    torch.testing.assert_close(after, _direct(resnet, [str(path), str(other)]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after[0], before[0])
    assert torch.equal(after[1], before[1])


def test_a_moved_dataset_still_hits_and_identical_files_share_a_row(tmp_path: Path, make_color_dataset: Callable[..., Path],
                                                                     resnet: Backbone) -> None:
    import shutil

    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    store = FeatureStore(tmp_path / "cache")
    views, _ = _get(store, resnet, paths, augment="light", view=0, seed=5)
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    moved = [p.replace(str(tmp_path / "data"), str(tmp_path / "moved")) for p in paths]
    again, stats = _get(store, resnet, moved, augment="light", view=0, seed=5)
    assert stats.computed == 0  # rows and augmented views follow the bytes, not the path
    assert torch.equal(again, views)
    shutil.copy(paths[0], tmp_path / "dup.png")
    fresh = FeatureStore(tmp_path / "other")
    feats, stats = _get(fresh, resnet, [paths[0], str(tmp_path / "dup.png")])
    assert stats.computed == 1
    assert torch.equal(feats[0], feats[1])


def _append_worker(cache: str, paths: list[str], barrier: Barrier) -> None:
    """The other writer (a spawned process): adds its files to the same entry, one call per file."""
    torch.set_num_threads(1)
    backbone = _backbone(0)
    store = FeatureStore(cache)
    barrier.wait(timeout=300)
    for path in paths:
        _get(store, backbone, [path])


def test_two_processes_appending_to_one_entry_lose_and_mix_nothing(tmp_path: Path, make_color_dataset: Callable[..., Path],
                                                                   resnet: Backbone) -> None:
    import multiprocessing

    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 8, "blue": 8}))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    other = ctx.Process(target=_append_worker, args=(str(tmp_path / "cache"), paths[8:], barrier))
    other.start()
    try:  # this process is the first writer: each call reads, extends and rewrites the entry
        barrier.wait(timeout=300)
        store = FeatureStore(tmp_path / "cache")
        for path in paths[:8]:
            _get(store, resnet, [path])
    finally:
        other.join(timeout=300)
    assert other.exitcode == 0
    feats, stats = _get(FeatureStore(tmp_path / "cache"), resnet, paths)
    assert stats.computed == 0, "a writer's rows were lost"
    torch.testing.assert_close(feats, _direct(resnet, paths), atol=1e-5, rtol=1e-5)
    assert not stats.messages


def test_an_index_from_another_write_is_rejected(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    first, second = paths[:3], paths[3:]
    store = FeatureStore(tmp_path / "cache")
    _get(store, resnet, first)
    folder = _entry(tmp_path / "cache")
    first_index = (folder / "index.json").read_bytes()
    import shutil

    shutil.rmtree(folder)
    _get(store, resnet, second)
    # same row count, the index of one write beside the data of another (a killed or racing writer)
    (folder / "index.json").write_bytes(first_index)
    feats, stats = _get(store, resnet, first)
    assert stats.computed == 3
    torch.testing.assert_close(feats, _direct(resnet, first), atol=1e-5, rtol=1e-5)
    assert len(stats.messages) == 1 and str(folder) in stats.messages[0]
    assert "different writes" in stats.messages[0]


def test_a_live_writers_temp_file_is_never_cleaned(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone) -> None:
    import threading

    from filelock import FileLock

    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 2, "blue": 2}))
    store = FeatureStore(tmp_path / "cache", lock_timeout=0.2)
    good, _ = _get(store, resnet, paths[:2])
    folder = _entry(tmp_path / "cache")
    live = folder / "features.safetensors.tmp-live"
    held, release = threading.Event(), threading.Event()

    def writer() -> None:  # another process's writer, mid-write: it holds the entry's lock
        with FileLock(str(folder / ".lock")):
            live.write_bytes(b"half written")
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(30)
        feats, stats = _get(store, resnet, paths)
        assert live.exists()
        assert stats.computed == 2  # the stored rows were read; nothing was written
        torch.testing.assert_close(feats[:2], good)
        assert len(stats.messages) == 1 and "lock" in stats.messages[0] and str(folder) in stats.messages[0]
    finally:
        release.set()
        thread.join()
    _, stats = _get(store, resnet, paths)  # the writer is gone: its temp file is stale now
    assert stats.computed == 2 and not live.exists()


def _flip_data(path: Path, how: str) -> None:
    """Overwrite a safetensors file's data bytes, keeping its header intact."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    count = (len(raw) - start) // 4
    if how == "nan":
        values = np.full(count, np.nan, np.float32)
    else:  # finite garbage
        values = np.random.default_rng(0).normal(size=count).astype(np.float32)
    raw[start:] = values.tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["nan", "garbage"])
def test_corrupt_feature_bytes_are_dropped_recomputed_and_reported(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone,
                                                                   how: str) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    store = FeatureStore(tmp_path / "cache")
    good, _ = _get(store, resnet, paths)
    folder = _entry(tmp_path / "cache")
    _flip_data(folder / "features.safetensors", how)
    feats, stats = _get(store, resnet, paths)
    assert stats.computed == len(paths)
    torch.testing.assert_close(feats, good)
    assert torch.isfinite(feats).all()
    assert len(stats.messages) == 1
    message = stats.messages[0]
    assert str(folder) in message and "dropped" in message and "checksum" in message
    _, stats = _get(store, resnet, paths)
    assert stats.computed == 0 and not stats.messages


def test_non_finite_features_are_never_stored(tmp_path: Path, make_color_dataset: Callable[..., Path]) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 2}))
    broken = _backbone(0)
    with torch.no_grad():
        next(broken.group_modules(broken.num_groups - 1)[0].parameters()).fill_(float("nan"))
    store = FeatureStore(tmp_path / "cache")
    feats, stats = _get(store, broken, paths)
    assert not torch.isfinite(feats).all()
    assert len(stats.messages) == 1 and "not cached" in stats.messages[0]
    _, stats = _get(store, broken, paths)
    assert stats.computed == 2  # computed again, never served from the cache


def test_a_file_changed_during_extraction_is_not_cached(tmp_path: Path, make_color_dataset: Callable[..., Path], resnet: Backbone,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.train.feature_store as feature_store

    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 2, "blue": 2}))
    real = feature_store.compute_features

    def compute_while_a_file_changes(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real(*args, **kwargs)
        Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(paths[1])  # rewritten after it was hashed
        return out

    monkeypatch.setattr(feature_store, "compute_features", compute_while_a_file_changes)
    store = FeatureStore(tmp_path / "cache")
    _, stats = _get(store, resnet, paths)
    assert len(stats.messages) == 1 and "changed while" in stats.messages[0]
    monkeypatch.setattr(feature_store, "compute_features", real)
    feats, stats = _get(store, resnet, paths)
    assert stats.computed == 1  # only the changed file, and now from its new bytes
    torch.testing.assert_close(feats, _direct(resnet, paths), atol=1e-5, rtol=1e-5)


def test_file_names_that_are_not_utf8(tmp_path: Path, resnet: Backbone) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png': a Latin-1 name on a UTF-8 system
    path = tmp_path / "data" / name
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, format="PNG")
    cache = tmp_path / os.fsdecode(b"cache-\xff")
    store = FeatureStore(cache)
    for augment in ("light", "none"):
        feats, stats = _get(store, resnet, [str(path)], augment=augment)
        assert stats.computed == 1 and feats.shape == (1, resnet.feature_dim)
        again, stats = _get(store, resnet, [str(path)], augment=augment)
        assert stats.computed == 0 and torch.equal(again, feats)
    for folder in cache.iterdir():
        json.loads((folder / "index.json").read_text(encoding="utf-8"))
    torch.testing.assert_close(feats, _direct(resnet, [str(path)]), atol=1e-5, rtol=1e-5)
    # a message about such a folder prints on any console
    folder = store.root / store.key(resnet, resnet.preprocessing.with_size(32), resnet.num_groups, "none", 0, 0)
    _flip_data(folder / "features.safetensors", "nan")
    _, stats = _get(store, resnet, [str(path)])
    assert len(stats.messages) == 1
    stats.messages[0].encode("utf-8")
    assert "cache-\\xff" in stats.messages[0]




def test_a_training_run_says_when_it_dropped_a_cache_entry(tiny_data: Path, fast_kwargs: dict) -> None:
    from tlkit.train.pipeline import finetune

    first = _Recorder()
    finetune(tiny_data, recipe="linear-probe", epochs=1, reporter=first, **fast_kwargs)
    assert not [m for m in first.messages if "feature cache" in m]
    entries = [folder for folder in Path(fast_kwargs["cache_dir"]).iterdir() if folder.is_dir()]  # not doctor-hashes.npz
    for folder in entries:
        _flip_data(folder / "features.safetensors", "nan")
    second = _Recorder()
    finetune(tiny_data, recipe="linear-probe", epochs=1, reporter=second, overwrite=True, **fast_kwargs)
    dropped = [m for m in second.messages if "feature cache" in m and "dropped" in m]
    assert len(dropped) == len(entries) >= 1


def test_a_file_that_cannot_be_read_is_a_data_error_naming_it(tmp_path: Path, resnet: Backbone) -> None:
    from tlkit.errors import DataError

    missing = tmp_path / "data" / "gone.png"
    with pytest.raises(DataError, match="gone.png"):
        _get(FeatureStore(tmp_path / "cache"), resnet, [str(missing)])
    os.mkfifo(tmp_path / "pipe.png")  # a FIFO must not block the hashing
    with pytest.raises(DataError, match="not a regular file"):
        _get(FeatureStore(tmp_path / "cache"), resnet, [str(tmp_path / "pipe.png")])


def test_channels_last_extraction_has_its_own_entries_and_the_same_features(tmp_path: Path, resnet: Backbone,
                                                                             tiny_data: Path) -> None:
    """New runs extract from channels_last batches on a CPU (faster); a run made before keeps its entries,
    and the features agree to float rounding, laid out as the store reads them back."""
    from tlkit.config import make_config

    paths = sorted(str(p) for p in (tiny_data / "red").glob("*.png"))[:4]
    new, old = FeatureStore(tmp_path / "c"), FeatureStore(tmp_path / "c", channels_last=False)
    pre = resnet.preprocessing.with_size(32)
    assert new.key(resnet, pre, 3, "none", 0, 0) != old.key(resnet, pre, 3, "none", 0, 0)
    fast, _ = _get(new, resnet, paths, stop_group=3)
    plain, _ = _get(old, resnet, paths, stop_group=3)
    assert fast.is_contiguous() and torch.allclose(fast, plain, atol=1e-5)
    assert make_config("data").channels_last and not type(make_config("data"))().channels_last
