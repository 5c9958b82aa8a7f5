"""Export a trained model as one graph: a float32 NCHW batch in, the calibrated class probabilities out.

:func:`export_model` (``TransferModel.export``, ``tlkit export``) writes ``model.onnx`` (ONNX, run it
with onnxruntime alone) or ``model.pt`` (TorchScript, ``torch.jit.load``) and a JSON sidecar beside
it (``model.onnx.json``): the classes, the preprocessing the input must have had (resize, centre
crop, mean, std, interpolation), the temperature and tlkit's version (with ``ood=True``, a second output ``ood_score`` and its
threshold). The graph's batch size is
free; its height and width are fixed by the preprocessing. Before the files are put in place, the
graph is run on real images (the run's test split, or the ones given) and compared with
``TransferModel.predict``: a largest difference above the tolerance is an error and nothing is written.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False`` where torch has that
switch, 2.5 on; torch 2.4 has only that exporter): the torch.export-based one, torch's default
from 2.9, needs ``onnxscript`` as well, and gains nothing for a fixed-size CNN or ViT.

:class:`ExportedModel` reads an export back and checks a batch against the sidecar before running it.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from tlkit._io import TMP_MARK, atomic_write_text
from tlkit._version import __version__
from tlkit.errors import CheckpointError, ConfigError, PredictionError

__all__ = ["FORMATS", "INSTALL_HINT", "ExportResult", "ExportedModel", "ProbabilityGraph", "check_format", "export_model",
           "sidecar", "sidecar_path"]

#: format -> the graph's file name when a folder is given
FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
INSTALL_HINT = 'pip install "tlkit[export]"'
INPUT_NAME, OUTPUT_NAME, OOD_OUTPUT = "images", "probabilities", "ood_score"
#: ONNX opset: supported by torch 2.4's exporter and by every onnxruntime the export extra allows
OPSET = 17
#: images run through the graph per batch in the parity check
PARITY_BATCH = 32
#: random inputs the parity check uses when there are no images to check on
RANDOM_INPUTS = 4


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well the graph agrees with ``TransferModel.predict``."""

    path: Path
    sidecar: Path
    format: str
    max_difference: float  # the largest |probability difference| against predict
    checked_on: str  # what the parity check ran on, in words
    images: int  # how many inputs it ran on
    tolerance: float
    seconds: float
    ood_difference: float | None = None  # with ood: the largest |OOD score difference| / max(1, |score|)

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


class ProbabilityGraph(nn.Module):
    """``model`` from a preprocessed batch to calibrated probabilities (and, with ``ood``, the
    out-of-distribution score as a second output): what the exported graph computes."""

    def __init__(self, model: nn.Module, ood: bool = False) -> None:
        super().__init__()
        self.model = model
        self.ood = ood

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.model.backbone(images)
        logits = self.model.head(features)
        # with the flip when model.json's tta says so; the OOD score is of the image alone, as it was fitted
        probs = (self.model.view_logits_and_probs(images)[1] if self.model.tta.get("used")
                 else self.model.probabilities(logits))
        return (probs, self.model.ood.score(features, logits)) if self.ood else probs


def sidecar_path(graph: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    graph = Path(graph)
    return graph.with_name(graph.name + ".json")


def export_model(model: Any, path: str | os.PathLike, *, format: str = "onnx",
                 images: Sequence[str | os.PathLike] | None = None, tolerance: float = 1e-4,
                 overwrite: bool = False, ood: bool = False) -> ExportResult:
    """Write ``model`` (a :class:`~tlkit.models.transfer.TransferModel`) as an ONNX or TorchScript graph
    and its sidecar, after checking the graph against ``model.predict`` (see the module's docstring).

    ``path``: a folder (created; the graph is ``model.onnx`` or ``model.pt`` in it) or the graph's
    file name. ``images``: what the parity check runs on (default: the test split of the run the
    model was loaded from; random inputs when there is none). An existing graph is replaced only
    with ``overwrite``. ``ood``: the graph has a second output, ``ood_score`` (the sidecar has its
    threshold), checked against ``predict``'s ``ood_score`` too.
    """
    start = time.perf_counter()
    fmt = check_format(format)
    if ood and getattr(model, "ood", None) is None:
        raise ConfigError("--with-ood: this model has no out-of-distribution statistics (trained before tlkit kept "
                          "them, no ood entry in model.json); export without it, or train the model again")
    target = _target(Path(path), fmt)
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists; give another --out, or --overwrite to replace it")
    paths, checked_on = _parity_images(model, images)
    reference = copy.deepcopy(model).cpu().eval()  # the graph is traced, and checked, on the CPU
    graph = ProbabilityGraph(reference, ood).eval()
    size = model.preprocessing.input_size
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{target.name}{TMP_MARK}", dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        _write_graph(graph, staged, fmt, size, ood)
        meta = sidecar(model, fmt, target.name, ood)
        difference, ood_difference, n = _parity(reference, ExportedModel(staged, meta), paths)
        for what, value in (("probabilities", difference), ("relative OOD score", ood_difference)):
            if value is not None and not value <= tolerance:  # NaN fails too
                raise PredictionError(f"the exported {fmt} graph's {what} differ from predict's by up to {value:.3g} "
                                      f"(more than {tolerance:g}) on {checked_on}; nothing was written. Try the "
                                      "other --format, or report the backbone")
        os.replace(staged, target)
    atomic_write_text(sidecar_path(target), json.dumps(meta, indent=2, ensure_ascii=False))
    return ExportResult(target, sidecar_path(target), fmt, difference, checked_on, n, tolerance,
                        time.perf_counter() - start, ood_difference)


def check_format(format: str) -> str:
    """``format`` when it is one of :data:`FORMATS` and what it needs is installed; else a ConfigError saying what to do."""
    if format not in FORMATS:
        raise ConfigError(f"--format must be {' or '.join(FORMATS)}, got {format!r}")
    if format == "onnx":
        missing = [name for name in ("onnx", "onnxruntime") if not _importable(name)]
        if missing:
            raise ConfigError(f"--format onnx needs {' and '.join(missing)}, not installed here: {INSTALL_HINT} "
                              "(or --format torchscript, which needs nothing more)")
    return format


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _target(path: Path, fmt: str) -> Path:
    """A folder (existing, or a name without a suffix) gets the format's file name inside it."""
    if path.is_dir() or not path.suffix:
        return path / FORMATS[fmt]
    return path


def sidecar(model: Any, fmt: str, graph_name: str, ood: bool = False) -> dict:
    """The JSON beside the graph: what goes in, what comes out, and how to prepare the input."""
    pre = model.preprocessing
    extra = {"ood": {"output": OOD_OUTPUT, "shape": ["batch"], **model.ood.meta(),
                     "meaning": "out-of-distribution score, higher = less like the training images; the image is "
                                "unknown when it is above threshold"}} if ood else {}
    return {
        "format": "tlkit-export", "graph": graph_name, "graph_format": fmt, "tlkit_version": __version__,
        "torch_version": torch.__version__, **({"opset": OPSET} if fmt == "onnx" else {}),
        "backbone": model.backbone.spec.name,
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW",
                  "shape": ["batch", 3, pre.input_size, pre.input_size]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(model.classes)],
                   "meaning": "calibrated class probabilities, softmax(logits / temperature), in the order of classes"},
        "classes": list(model.classes),
        "preprocessing": {"size": pre.input_size, "resize": pre.resize_size, "crop": "center",
                          "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std),
                          "steps": f"RGB; resize the shorter side to {pre.resize_size} ({pre.interpolation}, "
                                   f"antialiased); centre-crop {pre.input_size}x{pre.input_size}; scale to [0, 1]; "
                                   "subtract mean and divide by std per channel; HWC -> CHW"},
        "temperature": model.temperature,
        "calibration": dict(model.calibration),
        # two classes: say positive where output[:, classes.index(positive_class)] >= threshold (None: argmax)
        "threshold": getattr(model, "threshold", None),
        "positive_class": (getattr(model, "decision", None) or {}).get("positive"),
    } | extra


def _write_graph(graph: ProbabilityGraph, path: Path, fmt: str, size: int, ood: bool = False) -> None:
    example = torch.zeros(2, 3, size, size)  # two rows: a batch of one can fold the batch size into the graph
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes are not the user's
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(graph, example, check_trace=False)
            torch.jit.save(traced, str(path))
            return
        switch = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        outputs = [OUTPUT_NAME, OOD_OUTPUT] if ood else [OUTPUT_NAME]
        torch.onnx.export(graph, (example,), str(path), input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                          opset_version=OPSET, **switch)
    import onnx

    onnx.checker.check_model(str(path))


def _parity_images(model: Any, images: Sequence[str | os.PathLike] | None) -> tuple[list[str] | None, str]:
    """The images the parity check runs on, and how to say which; None: random inputs."""
    if images:
        return [os.fspath(p) for p in images], f"{len(images)} given image(s)"
    source = getattr(model, "source", None)
    splits = Path(source) / "splits.json" if source is not None else None
    if splits is None or not splits.is_file():
        return None, f"{RANDOM_INPUTS} random inputs (no images given and no run to take test images from)"
    from tlkit.data import Manifest

    manifest = Manifest.load(splits)
    for split in ("test", "val"):
        paths = manifest.paths(split)
        if paths:
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise CheckpointError(f"the run's {split} image {missing[0]} (splits.json) is not there: the data "
                                      "moved; give images to check the export on with --images")
            return paths, f"the run's {len(paths)} {split} image(s)"
    return None, f"{RANDOM_INPUTS} random inputs (the run has no test or validation images)"


def _parity(model: Any, exported: ExportedModel, paths: list[str] | None) -> tuple[float, float | None, int]:
    """Largest |difference| between the graph's probabilities and ``model.predict``'s, the largest relative
    difference of the OOD scores (None without that output), and on how many inputs."""
    if paths is None:
        size = model.preprocessing.input_size
        batch = torch.randn(RANDOM_INPUTS, 3, size, size, generator=torch.Generator().manual_seed(0))
        expected, batches = model.predict(batch), [batch]
    else:
        from tlkit.data import load_image

        transform = model.eval_transform()
        expected = model.predict(paths, batch_size=PARITY_BATCH)
        batches = [torch.stack([transform(load_image(p)) for p in paths[s:s + PARITY_BATCH]])
                   for s in range(0, len(paths), PARITY_BATCH)]
    outputs = [exported.outputs(b.numpy()) for b in batches]
    got = np.concatenate([o[OUTPUT_NAME] for o in outputs])
    difference = float(np.abs(got.astype(np.float64) - expected.probs).max())
    if OOD_OUTPUT not in outputs[0]:
        return difference, None, len(got)
    scores = np.concatenate([o[OOD_OUTPUT] for o in outputs]).astype(np.float64)
    relative = np.abs(scores - expected.ood_score) / np.maximum(1.0, np.abs(expected.ood_score))
    return difference, float(relative.max()), len(got)


class ExportedModel:
    """An exported graph read back (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript), with its sidecar.

    >>> # ExportedModel("runs/leaves/export/model.onnx").probabilities(batch)  # (N, 3, S, S) float32
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        self.path = Path(path)
        if meta is None:
            side = sidecar_path(self.path)
            if not side.is_file():
                raise CheckpointError(f"no {side.name} beside {self.path}: give a graph written by 'tlkit export'")
            meta = json.loads(side.read_text(encoding="utf-8"))
        self.meta = meta
        self.size = int(meta["preprocessing"]["size"])
        if meta["graph_format"] == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self._module = None
        else:
            with warnings.catch_warnings():  # torch.jit.load's deprecation note: TorchScript still loads
                warnings.simplefilter("ignore", FutureWarning)
                self._session, self._module = None, torch.jit.load(str(self.path), map_location="cpu").eval()

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, classes) for a preprocessed float32 batch of shape (N, 3, size, size)."""
        return self.outputs(batch)[OUTPUT_NAME]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name: ``probabilities``, and ``ood_score`` (N,) when exported with it."""
        batch = np.asarray(batch)
        want = (3, self.size, self.size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
            pre = self.meta["preprocessing"]
            raise ConfigError(f"the exported graph takes batches of shape (N, 3, {self.size}, {self.size}), got "
                              f"{tuple(batch.shape)}: its input size is fixed by the model's preprocessing (resize "
                              f"to {pre['resize']}, centre-crop {self.size}); prepare images as {sidecar_path(self.path).name} "
                              "says, or export a model trained at another --image-size")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        names = [OUTPUT_NAME, OOD_OUTPUT] if "ood" in self.meta else [OUTPUT_NAME]
        if self._session is not None:
            return dict(zip(names, self._session.run(names, {INPUT_NAME: batch})))
        with torch.inference_mode():
            got = self._module(torch.from_numpy(batch))
        return dict(zip(names, [t.numpy() for t in (got if isinstance(got, tuple) else (got,))]))
