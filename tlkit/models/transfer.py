"""TransferModel: backbone + head + class names + preprocessing + temperature, saved without pickles.

The temperature is the one place calibration happens: :meth:`TransferModel.probabilities` turns
logits into probabilities (``softmax(logits / temperature)``), and everything that answers with
probabilities (``predict``, ``tlkit evaluate``, the run's report, the exported graph) goes
through it. Training fits it on the validation split at the end of a run; a model saved before
tlkit kept it (no ``temperature`` in ``model.json``) loads with temperature 1: unchanged answers.

``ood`` (a :class:`tlkit.models.ood.OodDetector`, in ``ood.safetensors``) answers whether an image
is unlike the training images; a model saved before tlkit kept one loads with ``ood`` None.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from torch import nn

from tlkit._io import atomic_write_bytes, atomic_write_text
from tlkit._memory import keep_freed_memory
from tlkit._version import __version__
from tlkit.errors import CheckpointError, ConfigError, PredictionError
from tlkit.models.backbone import Backbone
from tlkit.models.builder import create_model, wrap
from tlkit.models.explain import Explanation, explain
from tlkit.models.heads import HeadSpec, make_head
from tlkit.models.inspection import ModelSummary, summarize
from tlkit.models.ood import OOD_FILE, OodDetector, load_detector
from tlkit.models.predictions import Predictions
from tlkit.models.registry import resolve
from tlkit.models.tta import NOT_USED, combine_views, tta_views
from tlkit.transforms import Preprocessing, eval_transform

MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
__all__ = ["MODEL_WEIGHTS", "MODEL_META", "OOD_FILE", "Predictions", "TransferModel", "load"]
#: a stored temperature outside this range is a damaged or edited model.json
TEMPERATURE_RANGE = (1e-3, 1e3)

ImageInput = Union[str, os.PathLike, "PIL.Image.Image", torch.Tensor]  # noqa: F821


class TransferModel(nn.Module):
    """A pretrained backbone with a new head for ``classes``.

    ``model(images)`` returns logits; :meth:`probabilities` turns them into calibrated probabilities
    (``temperature``, a plain attribute stored in ``model.json``, never in the weights);
    :meth:`predict` takes paths, PIL images or tensors and returns :class:`Predictions`;
    :meth:`save` writes ``model.safetensors`` + ``model.json``; :func:`tlkit.load` reads them back;
    :meth:`export` writes an ONNX or TorchScript graph of the calibrated probabilities.
    """

    def __init__(self, backbone: Backbone, head_spec: HeadSpec, classes: Sequence[str],
                 preprocessing: Preprocessing | None = None, *, temperature: float = 1.0) -> None:
        super().__init__()
        if head_spec.num_classes != len(classes):
            raise ConfigError(f"head has {head_spec.num_classes} outputs but {len(classes)} class names were given")
        self.backbone = backbone
        self.head = make_head(head_spec)
        self.head_spec = head_spec
        self.classes = list(classes)
        self.preprocessing = preprocessing or backbone.preprocessing
        self.temperature = 1.0
        #: how the temperature was found (``fitted_on``: "val", or None with the ``reason``)
        self.calibration: dict = {"fitted_on": None, "reason": "not calibrated"}
        self.set_temperature(temperature)
        #: two classes: ``positive`` (a class name), ``threshold`` (None: argmax) and how it was chosen
        self.decision: dict | None = None
        #: test-time augmentation: ``used`` and why (tlkit.models.tta); predict averages the flip when used
        self.tta: dict = dict(NOT_USED)
        self.source: Path | None = None  # the folder :meth:`load` read the model from
        #: the out-of-distribution score and threshold (None: saved before tlkit kept one); not in the weights
        self.ood: OodDetector | None = None

    def set_decision(self, decision: dict | None) -> None:
        """Say "positive" where p(positive) >= ``decision["threshold"]`` from now on (two classes; stored in
        model.json); ``None``, or a threshold of ``None``: argmax, as without a decision."""
        if decision is not None:
            threshold = decision.get("threshold")
            if len(self.classes) != 2 or decision.get("positive") not in self.classes:
                raise ConfigError(f"a decision needs two classes and a positive class among them ({', '.join(self.classes)}), "
                                  f"got {decision.get('positive')!r}")
            if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
                raise ConfigError(f"threshold must be a probability from 0 to 1, got {threshold!r}")
        self.decision = None if decision is None else dict(decision)

    @property
    def threshold(self) -> float | None:
        """The decision threshold on p(positive class), or None (argmax)."""
        return None if self.decision is None else self.decision.get("threshold")

    def set_temperature(self, temperature: float, calibration: dict | None = None) -> None:
        """Use ``temperature`` from now on (``calibration``: how it was found, stored in model.json)."""
        temperature = float(temperature)
        lo, hi = TEMPERATURE_RANGE
        if not lo <= temperature <= hi:  # also refuses NaN
            raise ConfigError(f"temperature must be from {lo:g} to {hi:g}, got {temperature!r}")
        self.temperature = temperature
        if calibration is not None:
            self.calibration = dict(calibration)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities: ``softmax(logits / temperature)`` over the last axis.

        The one place the temperature is applied; it never changes which class wins.
        """
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- saving and loading
    def metadata(self) -> dict:
        return {
            "format": "tlkit-model",
            "tlkit_version": __version__,
            "backbone": self.backbone.spec.name,
            "weights_source": self.backbone.weights_source,
            "feature_dim": self.backbone.feature_dim,
            "head": self.head_spec.to_dict(),
            "classes": self.classes,
            "preprocessing": self.preprocessing.to_dict(),
            "temperature": self.temperature,
            "calibration": self.calibration,
            **({"decision": self.decision} if self.decision is not None else {}),
            **({"ood": self.ood.meta()} if self.ood is not None else {}),
            "tta": self.tta,
        }

    def save(self, folder: str | os.PathLike, *, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` and ``model.json`` into ``folder`` (atomically each)."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(folder / MODEL_WEIGHTS, save(state))
        if self.ood is not None:
            self.ood.save(folder)
        meta = self.metadata() | ({"extra": extra} if extra else {})
        atomic_write_text(folder / MODEL_META, json.dumps(meta, indent=2, ensure_ascii=False))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> "TransferModel":
        """Load a saved model from its folder (or its ``model.json``); no pickle involved."""
        from safetensors.torch import load as safetensors_load

        folder = Path(path)
        if folder.is_file():
            folder = folder.parent
        meta_path, weights_path = folder / MODEL_META, folder / MODEL_WEIGHTS
        if not meta_path.is_file() or not weights_path.is_file():
            raise CheckpointError(
                f"no saved tlkit model in {folder}: expected {MODEL_META} and {MODEL_WEIGHTS} "
                "(give a run directory written by 'tlkit finetune')"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != "tlkit-model":
                raise ValueError("not a tlkit model description")
            spec = resolve(meta["backbone"])
            backbone = wrap(spec, create_model(spec), meta.get("weights_source", "none"))
            head = HeadSpec(**meta["head"])
            model = cls(backbone, head, meta["classes"], Preprocessing.from_dict(meta["preprocessing"]))
            # models saved before tlkit kept the temperature answer as they always did
            model.set_temperature(meta.get("temperature", 1.0),
                                  meta.get("calibration") or {"fitted_on": None, "reason": "saved before tlkit "
                                                              "calibrated models"})
            model.set_decision(meta.get("decision"))  # none before tlkit kept thresholds: argmax, as always
            model.tta = dict(meta.get("tta") or {"used": False, "reason": "saved before tlkit kept test-time augmentation"})
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"cannot read {meta_path}: {exc}. The file is damaged or edited; use the run's "
                                  "original model.json or train again") from exc
        try:
            state = safetensors_load(weights_path.read_bytes())  # bytes: any file name, UTF-8 or not
            model.load_state_dict(state, strict=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load weights {weights_path}: {str(exc).splitlines()[0][:300]}") from exc
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"{weights_path} holds NaN or infinite values in {len(bad)} tensor(s) "
                                  f"({', '.join(bad[:3])}): the file is damaged or was tampered with; "
                                  "use the run's original model or train again")
        model.ood = load_detector(folder, meta.get("ood"), model.backbone.feature_dim)
        model.source = folder
        if torch.device(device).type == "cpu":
            keep_freed_memory()  # a CPU run spends much of its time in page faults otherwise (tlkit._memory)
        return model.to(device).eval()

    # -- looking inside
    def summary(self, *, image_size: int | None = None, layers: bool = False) -> ModelSummary:
        """Keras-style table: layer groups, output shapes, parameters, frozen/trainable, forward FLOPs."""
        return summarize(self.backbone, image_size=image_size or self.preprocessing.input_size, head=self.head_spec,
                         layers=layers)

    def explain(self, image, class_name: str | None = None, *, layer: int | str | None = None) -> Explanation:  # noqa: ANN001
        """Grad-CAM heat map for one image (path or PIL image), for ``class_name`` or the predicted class.

        ``layer``: a layer group name or index; default the last group whose map is at least 7x7.
        """
        return explain(self, image, class_name, layer=layer)

    # -- inference
    def eval_transform(self):  # noqa: ANN201
        """The transform ``predict`` applies to each image: resize, centre-crop, normalise (``tlkit.transforms``)."""
        return eval_transform(self.preprocessing)

    @torch.inference_mode()
    def predict_proba_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities for a preprocessed batch; a non-finite output is an error, never a NaN answer."""
        return self._forward(batch)[1]

    def view_logits_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and calibrated probabilities of a preprocessed batch, averaged over the test-time views
        ``self.tta`` uses (the image alone unless it says so; :mod:`tlkit.models.tta`)."""
        return combine_views([self(view).float() for view in tta_views(images, self.tta)], self.temperature)

    @torch.inference_mode()
    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, calibrated probabilities and OOD scores (NaN without a detector) of a batch, on the CPU."""
        self.eval()
        x = batch.to(self.device)
        if x.ndim == 4:  # as features are extracted (tlkit.train.feature_extract): oneDNN / cuDNN run it faster
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.backbone(x)
        plain = self.head(features).float()  # the image alone: what the OOD score was fitted on
        logits, probs = self.view_logits_and_probs(x) if self.tta.get("used") else (plain, self.probabilities(plain))
        probs = probs.cpu()
        bad = (~torch.isfinite(probs)).any(dim=1)
        if bad.any():
            raise PredictionError(f"the model gave NaN or infinite outputs for {int(bad.sum())} of {len(probs)} "
                                  "image(s) of a batch (the first at position "
                                  f"{int(bad.nonzero()[0])}): the model or the input is broken, check the "
                                  "image and model.json's preprocessing")
        scores = self.ood.score(features, plain).cpu() if self.ood is not None else torch.full((len(probs),), float("nan"))
        return logits.cpu(), probs, scores.double()

    def ood_threshold(self, reject_rate: float | None = None, threshold: float | None = None) -> float | None:
        """The OOD threshold ``predict`` uses: the stored one, one re-derived from the validation scores
        for ``reject_rate``, or ``threshold``; None for a model without OOD statistics (an error if either is given)."""
        if self.ood is None:
            if reject_rate is not None or threshold is not None:
                raise ConfigError(f"{self.source or 'this model'} has no out-of-distribution statistics (trained before "
                                  "tlkit kept them, no ood entry in model.json): a reject rate or threshold cannot be "
                                  "applied; train the model again to get them")
            return None
        return self.ood.threshold_at(reject_rate, threshold)

    def predict(self, inputs: ImageInput | Iterable[ImageInput], *, batch_size: int = 32, workers: int = 0,
                progress=None, skip_bad: bool = False, reject_rate: float | None = None,  # noqa: ANN001
                ood_threshold: float | None = None) -> Predictions:
        """Calibrated class probabilities (``softmax(logits / temperature)``) for paths, folders' files,
        PIL images or preprocessed tensors; ``Predictions.logits`` keeps the logits.

        ``Predictions.unknown`` marks images whose out-of-distribution score is above the model's
        threshold (chosen on validation to reject 2% of real images), or above the threshold for
        ``reject_rate`` (re-derived from the stored validation scores) or ``ood_threshold``.
        Tensors must already be preprocessed (``model.eval_transform()``), shape (3, H, W) or (N, 3, H, W).
        An unreadable file is a DataError naming it; with ``skip_bad`` it is left out and listed in
        ``Predictions.skipped``. A two-class model with a decision threshold (``model.decision``, chosen on
        validation by ``--target-recall`` or set with :meth:`set_decision`) labels an image positive
        where p(positive) >= threshold; without one, labels are the argmax.
        """
        from PIL import Image

        threshold = self.ood_threshold(reject_rate, ood_threshold)
        if isinstance(inputs, (str, os.PathLike, Image.Image, torch.Tensor)):
            inputs = [inputs]
        items = list(inputs)
        transform = self.eval_transform()
        tensors: list[torch.Tensor] = []
        sources: list[str] = []
        path_items = [str(x) for x in items if isinstance(x, (str, os.PathLike))]
        if path_items and len(path_items) == len(items):
            return self._predict_files(path_items, transform, batch_size, workers, progress, skip_bad, threshold)
        from tlkit.data import load_image

        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                batch = item.unsqueeze(0) if item.ndim == 3 else item
                tensors.extend(batch)
                sources.extend(f"<tensor {i}>" for _ in range(len(batch)))
            elif isinstance(item, Image.Image):
                tensors.append(transform(item.convert("RGB")))
                sources.append(f"<image {i}>")
            else:
                tensors.append(transform(load_image(item)))
                sources.append(str(item))
        outs = [self._forward(torch.stack(tensors[s:s + batch_size])) for s in range(0, len(tensors), batch_size)]
        return self._predictions(outs, sources, [], threshold)

    def _decision_fields(self) -> dict:
        if self.threshold is None:
            return {}
        return {"positive": self.classes.index(self.decision["positive"]), "threshold": float(self.threshold)}

    def _predictions(self, outs: list[tuple[torch.Tensor, ...]], sources: list[str], skipped: list[dict],
                     threshold: float | None) -> Predictions:
        if not outs:
            empty = np.empty((0, len(self.classes)))
            return Predictions(self.classes, empty, sources, skipped, logits=empty, temperature=self.temperature,
                               **self._decision_fields())
        logits, probs, scores = (torch.cat(parts).numpy() for parts in zip(*outs))
        return Predictions(self.classes, probs, sources, skipped, logits=logits, temperature=self.temperature,
                           ood_score=scores, ood_threshold=threshold, **self._decision_fields())

    def _predict_files(self, paths: list[str], transform, batch_size: int, workers: int, progress,  # noqa: ANN001
                       skip_bad: bool, threshold: float | None) -> Predictions:
        from tlkit.data import ImageDataset, collate_readable

        dataset = ImageDataset(paths, None, transform, skip_bad=skip_bad)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False,
                                             collate_fn=collate_readable if skip_bad else None)
        outs, kept, skipped, done = [], [], [], 0
        for batch, _, index, *bad in loader:
            if len(batch):
                outs.append(self._forward(batch))
                kept += [paths[i] for i in index.tolist()]
            skipped += [{"path": paths[b["index"]], "reason": b["reason"]} for b in (bad[0] if bad else [])]
            done += len(index) + (len(bad[0]) if bad else 0)
            if progress is not None:
                progress(done, len(paths))
        return self._predictions(outs, kept, skipped, threshold)

    # -- deployment
    def export(self, path: str | os.PathLike, *, format: str = "onnx",
               images: Sequence[str | os.PathLike] | None = None, tolerance: float = 1e-4,
               overwrite: bool = False, ood: bool = False) -> Any:
        """Write a graph of the calibrated probabilities (``onnx`` or ``torchscript``) and its JSON sidecar.

        ``path``: a folder (``model.onnx`` / ``model.pt`` go in it) or a file name. The graph takes a
        float32 NCHW batch preprocessed as ``model.json`` says (any batch size, the input size fixed)
        and returns what :meth:`predict` returns. It is then checked against :meth:`predict` on
        ``images`` (default: the test images of the run the model was loaded from): a largest
        difference above ``tolerance`` is a PredictionError (and nothing is written). An existing graph
        is replaced only with ``overwrite``. ``ood``: the OOD score as a second output (``ood_score``). Returns a
        :class:`tlkit.deploy.export.ExportResult`.

        >>> # tlkit.load("runs/leaves").export("deploy/", format="onnx").max_difference
        """
        from tlkit.deploy.export import export_model

        return export_model(self, path, format=format, images=images, tolerance=tolerance, overwrite=overwrite, ood=ood)


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> TransferModel:
    """Load a model saved by tlkit: a run directory, a model folder or its ``model.json``.

    >>> # model = tlkit.load("runs/leaves"); model.predict("leaf.jpg").labels
    """
    return TransferModel.load(path, device=device)
