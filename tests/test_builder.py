"""Tests for tlkit.models.builder: building by name, the library options weights need, the listing.

Caches are pointed at ``tmp_path`` and ``TLKIT_OFFLINE=1`` is set, so nothing is downloaded and the
user's caches are never read.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torchvision
from model_testing import isolate_caches
from torch import nn

from tlkit.errors import BackboneError
from tlkit.models import pretrained
from tlkit.models.builder import build, create_model, list_backbones, wrap
from tlkit.models.registry import POPULAR, resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_caches(monkeypatch, tmp_path)


def test_unknown_timm_tag_fails_clearly_at_build() -> None:
    with pytest.raises(BackboneError, match=r"timm:test_resnet\.bogus.*Invalid pretrained tag \(bogus\)"):
        build("timm:test_resnet.bogus", pretrained=False)


# --------------------------------------------------------------------------- listing


def test_list_backbones_popular_without_downloading(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("listing must not download")

    monkeypatch.setattr(pretrained, "download_weights", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    started = time.perf_counter()
    rows = list_backbones()
    print(f"list_backbones(): {len(rows)} rows in {time.perf_counter() - started:.2f} s")
    assert len(rows) == len(POPULAR)
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        assert not str(row["weights"]).startswith("error"), row
        assert row["params"] > 0 and row["feature_dim"] > 0 and row["input_size"] > 0, row
        assert row["weights"] in ("packaged", "cached", "download needed"), row

    lite0 = by_name["timm:tf_efficientnet_lite0"]
    assert (lite0["params"], lite0["feature_dim"], lite0["input_size"], lite0["weights"]) == (
        3_371_008, 1280, 224, "packaged")
    assert lite0["alias"] == "efficientnet_lite0"
    # the same meaning of "params" for both libraries: the backbone, without the 1000-class classifier
    assert by_name["tv:resnet18"]["params"] == by_name["timm:resnet18.a1_in1k"]["params"] == 11_176_512
    assert by_name["tv:resnet18"]["feature_dim"] == 512
    assert by_name["tv:resnet18"]["weights"] == "download needed"


def test_list_backbones_filter_includes_the_alias() -> None:
    rows = list_backbones("lite0")
    aliased = [r for r in rows if r["alias"] == "efficientnet_lite0"]
    assert len(aliased) == 1
    assert aliased[0]["name"] == "timm:tf_efficientnet_lite0" and aliased[0]["weights"] == "packaged"
    assert all("lite0" in r["name"] or r["alias"] for r in rows)


def test_list_backbones_shows_a_cached_torchvision_model() -> None:
    path = pretrained.cache_candidates(resolve("tv:resnet18"))[0]
    path.parent.mkdir(parents=True)
    torch.save({}, path)
    (row,) = [r for r in list_backbones("resnet18") if r["name"] == "tv:resnet18"]
    assert row["weights"] == "cached"


# --------------------------------------------------------------------------- GoogLeNet and Inception-v3


def _with_aux_state(arch: str) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision's ImageNet files: transform_input, auxiliary heads included."""
    torch.manual_seed(1)
    return torchvision.models.get_model(arch, weights=None, transform_input=True, aux_logits=True,
                                        init_weights=False).state_dict()


@pytest.mark.parametrize("arch, size", [("googlenet", 64), ("inception_v3", 80)])
def test_googlenet_and_inception_are_built_as_for_their_weights(arch: str, size: int) -> None:
    spec = resolve(f"tv:{arch}")
    state = _with_aux_state(arch)
    model = create_model(spec)
    assert model.transform_input is True  # type: ignore[union-attr]
    assert not any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in model.state_dict())
    model.load_state_dict(state)  # strict, as a download loads: the auxiliary heads' keys are ignored
    bb = wrap(spec, model).eval()

    reference = torchvision.models.get_model(arch, weights=None, transform_input=True, aux_logits=True,
                                             init_weights=False)
    reference.load_state_dict(state)
    reference.fc = nn.Identity()
    reference.eval()
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        assert torch.allclose(bb(x), reference(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3"])
@pytest.mark.parametrize("aux", [True, False])
def test_googlenet_and_inception_weights_files_load_with_or_without_aux_heads(
        arch: str, aux: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = resolve(f"tv:{arch}")
    state = _with_aux_state(arch)
    if not aux:  # what torchvision's own model holds once it dropped the heads
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    path = tmp_path / "pretrained.pth"
    torch.save(state, path)
    model = create_model(spec)
    assert pretrained.load_pretrained(spec, model, weights_file=str(path)).startswith("file:")
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])

    class Download:  # torchvision's weights enum, as far as tlkit's download path uses it
        url = f"https://example.invalid/{arch}.pth"

        @staticmethod
        def get_state_dict(progress: bool = True, check_hash: bool = True) -> dict[str, torch.Tensor]:
            return state

    monkeypatch.setattr(pretrained, "tv_weights", lambda spec: Download)
    fresh = create_model(spec)
    assert pretrained.load_pretrained(spec, fresh, offline=False) == f"download:tv:{arch}"
    assert torch.equal(fresh.state_dict()["fc.weight"], state["fc.weight"])


@pytest.mark.parametrize("arch, size", [("googlenet", 64), ("inception_v3", 80)])
@pytest.mark.parametrize("unfreeze", ["all", 1])
def test_googlenet_and_inception_fine_tune_in_train_mode(arch: str, size: int, unfreeze: int | str) -> None:
    torch.manual_seed(0)
    bb = build(f"tv:{arch}", pretrained=False)
    bb.freeze(unfreeze)
    model = nn.Sequential(bb, nn.Linear(bb.feature_dim, 3)).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 0])
    before = {n: p.detach().clone() for n, p in bb.model.named_parameters()}
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = {n for n, p in bb.model.named_parameters() if not torch.equal(before[n], p)}
    expected = {n for i in range(bb.num_groups - bb.trainable_group_count(unfreeze), bb.num_groups)
                for n, _ in bb.group_parameters(i)}
    assert changed and changed <= expected
