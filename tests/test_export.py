"""tlkit export / TransferModel.export (issue 18.3): ONNX and TorchScript graphs of the calibrated
probabilities, their sidecar, the parity check against predict, and running the ONNX graph with
onnxruntime, numpy and PIL alone (the README's snippet, in a process where torch cannot be imported).

Random backbones only: ``timm:test_resnet`` for the runs, EfficientNet-Lite0 (TF "same" padding,
tlkit's default) at 32 px for the architecture check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tlkit
from tlkit.cli import app
from tlkit.deploy.export import ExportedModel, sidecar_path
from tlkit.errors import ConfigError, PredictionError
from tlkit.models.builder import build
from tlkit.models.heads import HeadSpec
from tlkit.models.transfer import TransferModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBE = {"name": "probe", "stages": [{"kind": "probe", "epochs": 3, "lr": 0.05}]}

#: the README's lines (paths filled in by the test): onnxruntime, numpy and PIL, no torch
README_SNIPPET = '''
import json, numpy as np, onnxruntime as ort
from PIL import Image

meta = json.load(open("{graph}.json"))             # the sidecar beside the graph
pre = meta["preprocessing"]
session = ort.InferenceSession("{graph}")

def prepare(path):                                 # what tlkit predict does to an image
    image = Image.open(path).convert("RGB")
    w, h, r, s = *image.size, pre["resize"], pre["size"]
    size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)   # shorter side to r
    image = image.resize(size, Image.Resampling[pre["interpolation"].upper()])
    left, top = round((size[0] - s) / 2), round((size[1] - s) / 2)  # centre crop s x s
    x = np.asarray(image.crop((left, top, left + s, top + s)), np.float32) / 255
    return ((x - pre["mean"]) / pre["std"]).transpose(2, 0, 1).astype(np.float32)

probs = session.run(None, {{"images": np.stack([prepare(p) for p in paths])}})[0]
labels = [meta["classes"][i] for i in probs.argmax(1)]
'''


def _tiny(name: str = "timm:test_resnet", size: int = 32, temperature: float = 1.6) -> TransferModel:
    torch.manual_seed(0)
    backbone = build(name, pretrained=False)
    head = HeadSpec("linear", backbone.feature_dim, 3)
    return TransferModel(backbone, head, ["cat", "dog", "eel"], backbone.preprocessing.with_size(size),
                         temperature=temperature).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A finished probe run (calibrated, with test images in its splits.json)."""
    root = tmp_path_factory.mktemp("export-run")
    result = tlkit.finetune(tiny_data, backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0,
                            batch_size=8, recipe=PROBE, out=str(root / "run"), cache_dir=str(root / "cache"))
    return result.run_dir


def test_efficientnet_lite0_with_tf_same_padding_exports_to_onnx(tmp_path: Path) -> None:
    model = _tiny("efficientnet_lite0", size=32)
    result = model.export(tmp_path / "lite0", format="onnx")
    assert result.path == tmp_path / "lite0" / "model.onnx" and result.max_difference <= 1e-4
    graph = ExportedModel(result.path)
    for n in (1, 5):  # the batch size is free
        batch = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        np.testing.assert_allclose(graph.probabilities(batch.numpy()), model.predict(batch).probs, rtol=0, atol=1e-4)


def test_torchscript_export_answers_as_predict_for_any_batch_size(tmp_path: Path) -> None:
    model = _tiny()
    result = model.export(tmp_path / "ts.pt", format="torchscript")
    assert result.path == tmp_path / "ts.pt" and sidecar_path(result.path).is_file()
    graph = ExportedModel(result.path)
    for n in (1, 7):
        batch = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        np.testing.assert_allclose(graph.probabilities(batch.numpy()), model.predict(batch).probs, rtol=0, atol=1e-5)


def test_the_sidecar_says_how_to_prepare_the_input_and_what_comes_out(tmp_path: Path) -> None:
    model = _tiny(size=32)
    result = model.export(tmp_path, format="onnx")
    meta = json.loads(result.sidecar.read_text())
    pre = model.preprocessing
    assert meta["classes"] == ["cat", "dog", "eel"] and meta["temperature"] == 1.6
    assert meta["preprocessing"] == {**meta["preprocessing"], "size": 32, "resize": pre.resize_size, "crop": "center",
                                     "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std)}
    assert meta["input"]["shape"] == ["batch", 3, 32, 32] and meta["output"]["shape"] == ["batch", 3]
    assert meta["tlkit_version"] == tlkit.__version__ and meta["graph"] == "model.onnx"


def test_cli_exports_a_run_and_checks_parity_on_its_test_images(run_dir: Path) -> None:
    done = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert done.exit_code == 0, done.output
    n_test = len(json.loads((run_dir / "splits.json").read_text())["splits"]["test"])
    assert f"the run's {n_test} test image(s)" in done.output and "largest probability difference" in done.output
    assert (run_dir / "export" / "model.onnx").is_file() and (run_dir / "export" / "model.onnx.json").is_file()
    again = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert again.exit_code == 1 and "--overwrite" in again.output  # an existing graph is kept


def test_the_readme_snippet_runs_with_onnxruntime_alone_and_matches_predict(run_dir: Path, tmp_path: Path) -> None:
    model = tlkit.load(run_dir)
    assert model.temperature != 1.0
    graph = model.export(tmp_path, format="onnx").path
    paths = tlkit.Manifest.load(run_dir / "splits.json").paths("test")
    script = tmp_path / "snippet.py"
    script.write_text("import sys\nsys.modules['torch'] = None  # no torch in this process\n"
                      f"paths = {paths!r}\n" + README_SNIPPET.format(graph=graph)
                      + "np.save(sys.argv[1], probs)\nprint(' '.join(labels))\n")
    out = tmp_path / "probs.npy"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    preds = model.predict(paths)
    np.testing.assert_allclose(np.load(out), preds.probs, rtol=0, atol=1e-4)
    assert done.stdout.split() == preds.labels


def test_images_given_for_the_parity_check_are_used(run_dir: Path, tmp_path: Path, tiny_data: Path) -> None:
    done = CliRunner().invoke(app, ["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path),
                                    "--images", str(tiny_data / "red"), "--images", str(tiny_data / "blue" / "img_00.png")])
    assert done.exit_code == 0, done.output
    assert "11 given image(s)" in done.output and (tmp_path / "model.pt").is_file()


def test_a_graph_that_disagrees_with_predict_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(PredictionError, match="nothing was written"):
        _tiny().export(tmp_path / "out", format="torchscript", tolerance=-1.0)  # no difference is below -1
    assert not (tmp_path / "out" / "model.pt").exists() and not (tmp_path / "out" / "model.pt.json").exists()
    assert not [p for p in (tmp_path / "out").iterdir()]  # no temp files left either


def test_a_batch_of_another_size_is_refused_with_the_reason(tmp_path: Path) -> None:
    graph = ExportedModel(_tiny(size=32).export(tmp_path, format="onnx").path)
    with pytest.raises(ConfigError, match="fixed by the model's preprocessing") as info:
        graph.probabilities(np.zeros((2, 3, 48, 48), np.float32))
    assert "(N, 3, 32, 32)" in str(info.value)


def test_without_onnx_installed_the_error_says_what_to_install(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    done = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(run_dir / "no-onnx")])
    assert done.exit_code == 1
    assert done.output.startswith("error:") and 'pip install "tlkit[export]"' in done.output
    assert not (run_dir / "no-onnx").exists()


@pytest.mark.parametrize("args, expected", [
    (["--format", "tflite"], "--format must be onnx or torchscript"),
])
def test_an_unknown_format_is_refused(run_dir: Path, args: list[str], expected: str) -> None:
    done = CliRunner().invoke(app, ["export", str(run_dir), *args])
    assert done.exit_code == 1 and expected in done.output


def test_a_run_without_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty-run").mkdir()
    done = CliRunner().invoke(app, ["export", str(tmp_path / "empty-run"), "--format", "torchscript"])
    assert done.exit_code == 1 and "no saved tlkit model" in done.output and "Traceback" not in done.output
