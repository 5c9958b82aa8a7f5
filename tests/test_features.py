"""Tests for tlkit.features.FeatureStore: keys, per-file invalidation, damaged caches, exact values."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit.backbones import build
from tlkit.data import load_image
from tlkit.features import FeatureStore, backbone_fingerprint
from tlkit.transforms import eval_transform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _backbone(seed: int = 0, name: str = "timm:test_resnet"):
    torch.manual_seed(seed)
    return build(name, pretrained=False).eval()


@pytest.fixture(scope="module")
def resnet():
    return _backbone(0)


def _paths(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.png"))


def _get(store: FeatureStore, backbone, paths, size: int = 32, **kw):
    return store.get(backbone, backbone.preprocessing.with_size(size), paths, **kw)


def test_second_identical_call_computes_nothing(tmp_path: Path, make_color_dataset, resnet) -> None:
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


def test_changed_file_is_recomputed_alone(tmp_path: Path, make_color_dataset, resnet) -> None:
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


def test_cached_features_equal_the_backbone_on_the_eval_transform(tmp_path: Path, make_color_dataset, resnet) -> None:
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


def test_key_depends_on_size_weights_boundary_augment_view_and_seed(tmp_path: Path, make_color_dataset, resnet) -> None:
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


def test_fingerprint_changes_when_weights_change_in_place(resnet) -> None:
    bb = _backbone(0)
    fp = backbone_fingerprint(bb, bb.num_groups)
    prefix = backbone_fingerprint(bb, 1)
    with torch.no_grad():
        next(bb.group_modules(bb.num_groups - 1)[0].parameters()).add_(1e-3)
    assert backbone_fingerprint(bb, bb.num_groups) != fp
    assert backbone_fingerprint(bb, 1) == prefix  # the stem did not change


@pytest.mark.parametrize("damage", ["garbage-index", "truncated-data", "rows-mismatch", "missing-data"])
def test_damaged_cache_is_rebuilt_not_fatal(tmp_path: Path, make_color_dataset, resnet, damage: str) -> None:
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
    _, stats = _get(store, resnet, paths)
    assert stats.computed == 0


def test_stale_temp_files_in_the_cache_are_cleaned(tmp_path: Path, make_color_dataset, resnet) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 2, "blue": 2}))
    store = FeatureStore(tmp_path / "cache")
    _get(store, resnet, paths[:2])
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    stale = folder / "features.safetensors.tmp-abc123"
    stale.write_bytes(b"half a file")
    _, stats = _get(store, resnet, paths)
    assert stats.computed == 2
    assert not stale.exists()


def test_augmented_views_repeat_exactly_and_leave_the_global_rng_alone(tmp_path: Path, make_color_dataset,
                                                                       resnet) -> None:
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


def test_workers_give_the_same_features(tmp_path: Path, make_color_dataset, resnet) -> None:
    paths = _paths(make_color_dataset(tmp_path / "data", {"red": 3, "blue": 3}))
    a, _ = _get(FeatureStore(tmp_path / "a"), resnet, paths, augment="light", batch_size=2)
    b, _ = _get(FeatureStore(tmp_path / "b"), resnet, paths, augment="light", batch_size=4, workers=2)
    assert torch.equal(a, b)


def test_empty_path_list(tmp_path: Path, resnet) -> None:
    feats, stats = _get(FeatureStore(tmp_path / "cache"), resnet, [])
    assert len(feats) == 0 and stats.requested == 0


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "env"))
    assert FeatureStore().root == tmp_path / "env"
