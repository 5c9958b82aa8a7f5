"""Tests for tlkit.models.transfer.TransferModel: save/load without pickles, predict on every input kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tlkit.models.transfer as model_mod
from tlkit.data import load_image
from tlkit.errors import CheckpointError, ConfigError
from tlkit.models.builder import build
from tlkit.models.heads import HeadSpec
from tlkit.models.transfer import MODEL_META, MODEL_WEIGHTS, Predictions, TransferModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["blue", "green", "red"]
#: the ``saved`` fixture: a model and the folder it was saved to
Saved = tuple[TransferModel, Path]


def _model(head: str = "linear", seed: int = 0, **head_kw: object) -> TransferModel:
    torch.manual_seed(seed)
    bb = build("timm:test_resnet", pretrained=False)
    spec = HeadSpec(head, bb.feature_dim, len(CLASSES), **head_kw)
    return TransferModel(bb, spec, CLASSES, bb.preprocessing.with_size(32)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    model = _model("mlp", hidden_dim=16, dropout=0.2, norm=True)
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive the round trip
        model.head[1].running_mean.uniform_(-1, 1)
        model.head[1].running_var.uniform_(0.5, 2)
    folder = model.save(tmp_path_factory.mktemp("saved") / "m", extra={"note": "x"})
    return model, folder


def test_save_writes_safetensors_and_json(saved: Saved) -> None:
    model, folder = saved
    meta = json.loads((folder / MODEL_META).read_text())
    assert meta["format"] == "tlkit-model"
    assert meta["classes"] == CLASSES
    assert meta["backbone"] == "timm:test_resnet"
    assert meta["preprocessing"]["input_size"] == 32
    assert meta["head"]["kind"] == "mlp" and meta["head"]["dropout"] == 0.2
    assert meta["extra"] == {"note": "x"}
    assert not list(folder.glob("*.tmp-*"))


def test_load_gives_identical_tensors_and_predictions(saved: Saved, tiny_data: Path) -> None:
    model, folder = saved
    loaded = model_mod.load(folder)
    assert loaded.classes == CLASSES and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    paths = sorted(str(p) for p in tiny_data.rglob("*.png"))[:7]
    p1, p2 = model.predict(paths), loaded.predict(paths)
    np.testing.assert_allclose(p1.probs, p2.probs, atol=1e-6)
    # also through model.json and with a batch size that splits the input
    p3 = model_mod.load(folder / MODEL_META).predict(paths, batch_size=3)
    np.testing.assert_allclose(p1.probs, p3.probs, atol=1e-5)


def test_predict_accepts_paths_pil_and_tensors_alike(saved: Saved, tiny_data: Path) -> None:
    model, _ = saved
    paths = sorted(str(p) for p in tiny_data.rglob("*.png"))[:4]
    by_path = model.predict(paths)
    assert isinstance(by_path, Predictions) and len(by_path) == 4
    assert by_path.probs.shape == (4, 3)
    np.testing.assert_allclose(by_path.probs.sum(1), 1, atol=1e-5)
    by_pil = model.predict([load_image(p) for p in paths])
    tensors = torch.stack([model.eval_transform()(load_image(p)) for p in paths])
    by_tensor = model.predict(tensors)
    single = model.predict(paths[0])
    np.testing.assert_allclose(by_pil.probs, by_path.probs, atol=1e-5)
    np.testing.assert_allclose(by_tensor.probs, by_path.probs, atol=1e-5)
    np.testing.assert_allclose(single.probs[0], by_path.probs[0], atol=1e-5)
    assert by_path.sources == paths
    assert by_pil.sources[1] == "<image 1>"
    # and predict equals the model's own forward pass
    with torch.inference_mode():
        direct = torch.softmax(model(tensors), 1).numpy()
    np.testing.assert_allclose(by_path.probs, direct, atol=1e-5)


def test_predictions_helpers() -> None:
    preds = Predictions(["a", "b", "c"], np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), ["x", "y"])
    assert preds.labels == ["b", "a"]
    np.testing.assert_allclose(preds.confidence, [0.7, 0.5])
    assert preds.top_k(2) == [[("b", 0.7), ("c", 0.2)], [("a", 0.5), ("c", 0.3)]]
    assert len(preds.top_k(10)[0]) == 3
    records = preds.to_records(1)
    assert records[0] == {"source": "x", "label": "b", "confidence": 0.7, "top_k": [{"class": "b", "prob": 0.7}],
                          "unknown": False, "ood_score": None}
    json.dumps(records)


def test_head_and_class_mismatch_is_a_config_error() -> None:
    bb = build("timm:test_resnet", pretrained=False)
    with pytest.raises(ConfigError, match="2 outputs but 3 class names"):
        TransferModel(bb, HeadSpec("linear", bb.feature_dim, 2), CLASSES)


def test_load_missing_files_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no saved tlkit model"):
        model_mod.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncated-weights", "garbage-weights", "bad-json", "foreign-json",
                                    "wrong-classes", "unknown-backbone"])
def test_damaged_saved_model_is_a_checkpoint_error(tmp_path: Path, saved: Saved, damage: str) -> None:
    import shutil

    _, folder = saved
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    weights, meta_path = target / MODEL_WEIGHTS, target / MODEL_META
    meta = json.loads(meta_path.read_text())
    if damage == "truncated-weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 3])
    elif damage == "garbage-weights":
        weights.write_bytes(b"\x80\x04not safetensors at all")
    elif damage == "bad-json":
        meta_path.write_text("{")
    elif damage == "foreign-json":
        meta_path.write_text(json.dumps({"format": "something-else"}))
    elif damage == "wrong-classes":
        meta["classes"] = ["a", "b"]
        meta["head"]["num_classes"] = 2
        meta_path.write_text(json.dumps(meta))
    else:
        meta["backbone"] = "timm:no_such_model_xyz"
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        model_mod.load(target)
    assert str(target) in str(info.value)


def test_saved_weights_load_into_timm_directly(saved: Saved) -> None:
    """The backbone keeps the library's own state-dict names (documented in tlkit.models.backbone)."""
    import timm
    from safetensors.torch import load_file

    _, folder = saved
    state = load_file(str(folder / MODEL_WEIGHTS))
    backbone_state = {k[len("backbone.model."):]: v for k, v in state.items() if k.startswith("backbone.model.")}
    net = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    missing, unexpected = net.load_state_dict(backbone_state, strict=False)
    assert not unexpected and not missing


def test_rgba_and_grayscale_inputs_predict(saved: Saved, tmp_path: Path) -> None:
    model, _ = saved
    rgba = Image.fromarray(np.full((20, 30, 4), 128, np.uint8), "RGBA")
    gray = Image.fromarray(np.full((40, 40), 200, np.uint8), "L")
    preds = model.predict([rgba, gray])
    assert preds.probs.shape == (2, 3)
    assert np.isfinite(preds.probs).all()


# --------------------------------------------------------------------------- issue 14: tampered models


def _copy(saved: Saved, tmp_path: Path) -> Path:
    import shutil

    _, folder = saved
    target = tmp_path / "m"
    shutil.copytree(folder, target)
    return target


def test_non_finite_weights_are_refused_at_load(saved: Saved, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path)
    state = load_file(str(folder / MODEL_WEIGHTS))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(folder / MODEL_WEIGHTS))
    with pytest.raises(CheckpointError, match=r"NaN or infinite.*" + key.replace(".", r"\.")):
        model_mod.load(folder)


@pytest.mark.parametrize("field, value, needle", [
    ("mean", [float("nan"), 0.5, 0.5], "mean"), ("std", [0.0, 1.0, 1.0], "std"), ("std", [0.5, 0.5], "std"),
    ("input_size", 0, "input_size"), ("input_size", -3, "input_size"), ("input_size", 30000, "input_size"),
    ("resize_size", 10, "resize_size"), ("interpolation", "magic", "interpolation"), ("mean", "abc", "mean"),
])
def test_bad_preprocessing_in_model_json_is_named(saved: Saved, tmp_path: Path, field: str, value, needle: str) -> None:  # noqa: ANN001
    folder = _copy(saved, tmp_path)
    meta = json.loads((folder / MODEL_META).read_text())
    meta["preprocessing"][field] = value
    (folder / MODEL_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"preprocessing.{needle}"):
        model_mod.load(folder)


def test_non_finite_outputs_are_an_error_not_a_nan_confidence(saved: Saved, tiny_data: Path) -> None:
    from tlkit.errors import PredictionError

    model, _ = saved
    image = sorted((tiny_data / "red").glob("*.png"))[0]
    broken = _model()
    with torch.no_grad():
        broken.head[-1].bias.fill_(float("inf"))
        broken.head[-1].weight.zero_()
    with pytest.raises(PredictionError, match="NaN or infinite"):
        broken.predict([image])
    assert np.isfinite(model.predict([image]).probs).all()
