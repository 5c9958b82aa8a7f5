"""The stage loop: a recipe's stages run one after another on one model.

Reading order: :func:`run` prepares the run directory, data and model, then calls
:func:`_run_stage` for each stage; a stage trains either on cached activations (everything
before its first trainable layer group runs once, see ``tlkit.train.feature_store``) or, when the whole
backbone trains, on images. Every epoch ends with validation, a JSON line in ``metrics.jsonl``
and an atomic checkpoint that is enough to resume exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlkit import rundir
from tlkit._io import atomic_write_text
from tlkit._seeding import rng_state, seed_everything, seed_worker, set_rng_state
from tlkit.config import RunConfig, StageConfig, config_conflicts, load_run_config, make_config, resume_config, save_yaml
from tlkit.data import DecodedImages, ImageDataset, Manifest, check, scan
from tlkit.errors import ConfigError, DataError, DivergedError, ResourceError
from tlkit.models.backbone import Backbone, compile_backend
from tlkit.models.builder import build as build_backbone
from tlkit.models.heads import HeadSpec
from tlkit.models.transfer import TransferModel
from tlkit.train import distributed
from tlkit.train.checkpoint import load_checkpoint, save_checkpoint
from tlkit.train.feature_store import FeatureStore

CHECKPOINT = "checkpoints/last.pt"
CHECKPOINT_SECONDS = 30.0
#: training steps timed (after a first, warm-up step) before a stage's time budget settles its epochs
BUDGET_TIMED_STEPS = 8
# image stages keep train and val images decoded in memory up to this size (else decode every epoch)
DECODED_CACHE_BYTES = int(float(os.environ.get("TLKIT_DECODED_CACHE_GB", "4")) * 2**30)


# --------------------------------------------------------------------------------------------
# progress reporting (display lives in tlkit.console; this is the interface)


class Reporter(Protocol):
    def message(self, text: str) -> None: ...
    def task(self, description: str, total: int): ...  # returns a callable(done, total)
    def epoch(self, record: dict) -> None: ...


class SilentReporter:
    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int):  # noqa: ANN201
        return None

    def epoch(self, record: dict) -> None:
        pass


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns."""

    model: TransferModel
    run_dir: Path
    config: RunConfig
    manifest: Manifest
    history: list[dict] = field(default_factory=list)
    evaluation: Any = None  # tlkit.evaluation.scoring.EvalResult on the test split, when there is one
    timings: dict = field(default_factory=dict)
    rank: int = 0  # this process's rank when several train together; only rank 0 has the evaluation

    def __repr__(self) -> str:
        acc = f", test accuracy={self.evaluation.accuracy:.3f}" if self.evaluation is not None else ""
        return f"FinetuneResult(run_dir='{self.run_dir}', backbone={self.model.backbone.name}{acc})"


# --------------------------------------------------------------------------------------------
# public entry points


def finetune(data: str | os.PathLike, backbone: str | None = None, recipe: Any = None, *,
             reporter: Reporter | None = None, **overrides: Any) -> FinetuneResult:
    """Fine-tune a pretrained backbone on a folder of class folders; the same options as the CLI.

    >>> # result = tlkit.finetune("data/leaves", backbone="resnet18", epochs=5)
    >>> # result.evaluation.accuracy, result.run_dir
    """
    return run(config_for(data, backbone, recipe, overrides), reporter=reporter)


def config_for(data: str | os.PathLike, backbone: str | None, recipe: Any, overrides: dict[str, Any]) -> RunConfig:
    """The config of :func:`finetune`: built from the options, or for ``resume`` read from the run's
    own ``config.yaml``, where the options given must agree with it (see :func:`tlkit.config.resume_config`)."""
    if not overrides.get("resume"):
        return make_config(data, backbone=backbone, recipe=recipe, **overrides)
    out = overrides.get("out") or Path("runs") / (Path(data).resolve().name or "data")
    return resume_config(rundir.resumable(out).config, {**overrides, "path": str(data), "backbone": backbone,
                                                        "recipe": recipe})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available here; use --device cpu")
    if name.startswith("cuda:") and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}' asked for but this machine has {torch.cuda.device_count()} GPU(s); "
                          "use --device cuda (the first) or cuda:N with a smaller N")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for but Apple's Metal (MPS) is not available here (it exists on "
                          "Apple-silicon Macs only); use --device cpu or auto")
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    """DataLoader workers when the user gives none.

    On a GPU decoding is the bottleneck: up to 8 workers. On a CPU the forward pass is, and it
    already uses every core (torch's threads): decoding is ~7% of extraction time, so a worker
    only takes a core away from the model (bench/RESULTS.md, 2 cores: 0.98x the tight loop with
    no worker, 0.64x with one). Workers start only where spare cores make them free.
    """
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, max(0, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create the run directory (``tlkit.rundir`` has the rules); an existing run is refused unless
    resume or overwrite is set, and only a folder tlkit wrote is ever overwritten."""
    if cfg.out is not None:
        out = Path(cfg.out)
    else:
        base = Path("runs") / (Path(cfg.data.path).resolve().name or "data")
        out = base if cfg.resume else rundir.next_free(base)
    run_dir = rundir.prepare(out, data=cfg.data.path, overwrite=cfg.overwrite, resume=cfg.resume)
    cfg.out = str(run_dir.path)
    return run_dir.path


def resume_hint(cfg: RunConfig, run_dir: Path) -> str:
    """The complete command that continues this run: its options come from the run's config.yaml."""
    return shlex.join(["tlkit", "finetune", str(cfg.data.path), "--out", str(run_dir), "--resume"])


def run(cfg: RunConfig, *, reporter: Reporter | None = None) -> FinetuneResult:
    """Run a validated config end to end: data, backbone, stages, saved model, test evaluation.

    A plain function of the config, so it is also what each process calls under ``torchrun`` or
    inside an engine's worker (Ray Train's ``train_loop_per_worker``): every process calls it with
    the same config, and rank 0 alone writes files and reports progress (``tlkit.train.distributed``).
    """
    cfg.validate()
    cfg.data.path = os.path.abspath(os.path.expanduser(cfg.data.path))  # config.yaml says exactly which data
    with distributed.session(resolve_device(cfg.device)) as dist:
        return _run(cfg, reporter, dist)


def _run(cfg: RunConfig, reporter: Reporter | None, dist: distributed.Distributed) -> FinetuneResult:
    reporter = (reporter or SilentReporter()) if dist.is_main else SilentReporter()
    t_start = time.perf_counter()
    device = dist.device
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    if cfg.workers is None:
        workers = dist.share_workers(workers)
    # User errors (missing or bad data, unknown backbone, unavailable weights) stop the run before its
    # directory is created or an existing one is replaced, so fixing them needs no --overwrite.
    if cfg.resume:
        _check_resume(cfg)
    scanned = None if cfg.resume else dist.on_main(lambda: _scan_data(cfg, reporter))
    seed_everything(cfg.seed)
    backbone = build_backbone(cfg.model.backbone, pretrained=cfg.model.pretrained,
                                   weights_file=cfg.model.weights, offline=cfg.model.offline)
    _check_stages_fit(cfg, backbone, device)

    def prepare() -> tuple[Path, Manifest]:
        run_dir = prepare_run_dir(cfg)
        save_yaml(cfg.to_dict(), run_dir / "config.yaml")  # on resume: the run's own, with where it runs now
        return run_dir, _prepare_data(cfg, run_dir, reporter, scanned)

    # rank 0 alone creates the run directory and its first files; every rank gets the path and split
    run_dir, manifest = dist.on_main(prepare)
    cfg.out = str(run_dir)
    preprocessing = backbone.preprocessing.with_size(cfg.data.image_size)
    head = HeadSpec(cfg.model.head, backbone.feature_dim, len(manifest.classes), cfg.model.hidden_dim,
                    cfg.model.dropout, cfg.model.norm)
    model = TransferModel(backbone, head, manifest.classes, preprocessing).to(device)
    if cfg.compile:
        model.backbone.compile_groups()
        model.head.compile(backend=compile_backend())
        reporter.message("torch.compile: each layer group is compiled on its first batch (expect a slow start)")
    dist.sync_module(model)  # every rank starts from rank 0's weights
    reporter.message(f"backbone {backbone.name} ({backbone.weights_source}), {backbone.num_groups} layer groups, "
                     f"{preprocessing.input_size}px, device {device}")
    if dist.enabled:
        reporter.message(f"{dist.world_size} processes ({dist.backend}); batch sizes are global: on images each "
                         f"process takes 1/{dist.world_size} of a batch")

    trainer = _Trainer(cfg, model, manifest, run_dir, device, workers, reporter, dist)
    trainer.restore_if_resuming()
    try:
        for index, stage in enumerate(cfg.recipe.stages):
            if index < trainer.stage_index:
                continue
            stage = stage.for_device(device.type)
            trainer.extract_batch_size = stage.batch_size
            try:
                trainer.run_stage(index, stage)
            except torch.cuda.OutOfMemoryError as exc:
                raise ResourceError(
                    f"out of GPU memory in stage {index + 1} ({stage.kind}) at batch size {stage.batch_size}; "
                    f"lower it, e.g. --batch-size {max(1, stage.batch_size // 2)}, or use a smaller --image-size. "
                    f"Progress so far is in {run_dir / CHECKPOINT} (--resume)") from exc
    except KeyboardInterrupt:
        trainer.save_interrupted()
        reporter.message(f"interrupted: progress saved in {run_dir / CHECKPOINT}; continue with: "
                         f"{resume_hint(cfg, run_dir)}  (the run's options are read from its config.yaml)")
        raise
    timings = {"total_seconds": time.perf_counter() - t_start, **trainer.timings}
    if dist.is_main:
        model.save(run_dir, extra={"recipe": cfg.recipe.name, "timings": timings})
    evaluation = trainer.evaluate_test()
    timings["total_seconds"] = time.perf_counter() - t_start
    if evaluation is not None:
        from tlkit.data import load_image
        from tlkit.models.explain import explainer
        from tlkit.report.files import write_report

        t_report = time.perf_counter()
        shown = {k: f"{v:.1f} s" for k, v in timings.items()}
        val = {k: round(v, 4) for k, v in trainer.last_val.items()}
        write_report(evaluation, run_dir, load_image=load_image, explain=explainer(model),
                     title=f"tlkit: {Path(cfg.data.path).name}",
                     extra={"backbone": f"{backbone.name} ({backbone.weights_source})", "recipe": cfg.recipe.name,
                            "image size": f"{preprocessing.input_size} px", "run_dir": str(run_dir),
                            "timings": shown, "validation (last epoch)": val,
                            "split": {s: len(v) for s, v in manifest.splits.items()}})
        timings["report_seconds"] = time.perf_counter() - t_report
        timings["total_seconds"] = time.perf_counter() - t_start
    if dist.is_main:
        atomic_write_text(run_dir / "timings.json", json.dumps(timings, indent=2))
    return FinetuneResult(model, run_dir, cfg, manifest, trainer.history, evaluation, timings, rank=dist.rank)


def _check_resume(cfg: RunConfig) -> None:
    """A resumed run computes what it was started with: refuse a config that would change that."""
    if cfg.out is None:
        cfg.out = str(Path("runs") / (Path(cfg.data.path).resolve().name or "data"))
    run = rundir.resumable(cfg.out)
    conflicts = config_conflicts(load_run_config(run.config), cfg)
    if conflicts:
        shown = "; ".join(conflicts[:6]) + (f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else "")
        raise ConfigError(f"cannot resume {run.path} with a different configuration: {shown}. Resume with the run's "
                          f"own options (tlkit.finetune(..., resume=True) or `{resume_hint(cfg, run.path)}` reads "
                          "them from config.yaml), or start a new run")
    if not Path(cfg.data.path).is_dir():
        raise DataError(f"dataset folder {cfg.data.path} does not exist or is not a folder. Check the path.")


def first_trainable_group(backbone: Backbone, stage: StageConfig) -> int:
    """The first layer group a stage's inputs enter: activations before it can be cached, 0 means images.

    A probe trains none (``num_groups``: the pooled features). A backbone whose groups only
    partition parameters (not ``sequential``) runs from images (0), and the stage still trains only
    its last ``unfreeze`` groups (see ``_Trainer._optimizer``). A backbone that is one opaque group
    refuses any ``unfreeze`` but 0 and "all" (:class:`~tlkit.errors.BackboneError`).
    """
    n = backbone.num_groups
    if stage.kind == "probe":
        return n
    k = n - backbone.trainable_group_count(stage.unfreeze)
    if k < n and not backbone.sequential:
        return 0
    return k


def _check_stages_fit(cfg: RunConfig, backbone: Backbone, device: torch.device) -> None:
    """Recipe choices that depend on the backbone, refused before any file is written."""
    for i, stage in enumerate(cfg.recipe.stages):
        stage = stage.for_device(device.type)
        if stage.class_weighting == "sampler" and first_trainable_group(backbone, stage) == 0:
            raise ConfigError(
                f"stages[{i}].class_weighting: sampler works on cached stages only, and this stage trains "
                f"{backbone.name} on images (unfreeze: {stage.unfreeze}); use class_weighting: balanced")


def _prepare_data(cfg: RunConfig, run_dir: Path, reporter: Reporter, scanned: Manifest | None = None) -> Manifest:
    run = rundir.RunDir(run_dir)
    if cfg.resume and run.splits.is_file():
        manifest = Manifest.load(run.splits, root=str(Path(cfg.data.path).resolve()))
        manifest = _without_missing(manifest, cfg, reporter, "resume")
    else:
        manifest = scanned if scanned is not None else _scan_data(cfg, reporter)
    if manifest.skipped:
        atomic_write_text(run.skipped, json.dumps(manifest.skipped, indent=2))
    manifest.save(run.splits)
    return manifest


def _list_files(files: list[str], limit: int = 10) -> str:
    return ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")


def _without_missing(manifest: Manifest, cfg: RunConfig, reporter: Reporter, when: str) -> Manifest:
    """Files of the split that are gone from disk: an error naming them, or left out with --skip-bad."""
    missing = [rel for split in manifest.splits.values() for rel, _ in split
               if not os.path.isfile(os.path.join(manifest.root, *rel.split("/")))]
    if not missing:
        return manifest
    if not cfg.data.skip_bad:
        raise DataError(f"{len(missing)} image(s) of the run's split are missing from {manifest.root} ({when}): "
                        f"{_list_files(missing)}. Put them back, or pass --skip-bad to leave them out "
                        "(they are listed in the run directory's skipped.json)")
    reporter.message(f"skipped {len(missing)} missing file(s): {_list_files(missing, 5)}")
    return manifest.without(missing, "missing")


def _scan_data(cfg: RunConfig, reporter: Reporter) -> Manifest:
    """Scan, split and check the data; nothing is written."""
    manifest = scan(cfg.data.path, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                    seed=cfg.seed)
    report = check(manifest)
    for problem in report.warnings:
        reporter.message(f"warning: {problem.message}")
    if report.bad_files:
        if not cfg.data.skip_bad:
            raise DataError(f"{len(report.bad_files)} unreadable image(s) in {cfg.data.path}: "
                            f"{_list_files(report.bad_files)}. Fix or remove them, or pass --skip-bad to leave them "
                            "out (they are listed in the run directory's skipped.json)")
        manifest = manifest.without(report.bad_files, "unreadable")
        reporter.message(f"skipped {len(report.bad_files)} unreadable file(s); class counts now: {manifest.counts('train')}")
    fatal = [p for p in report.errors if p.kind not in ("unreadable",)]
    if fatal:
        raise DataError(fatal[0].message)
    if not manifest.splits.get("train"):
        raise DataError(f"no training images found in {cfg.data.path}")
    return manifest


# --------------------------------------------------------------------------------------------
# the trainer


def calibrated_nll(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Validation loss after temperature scaling: the lowest NLL of ``softmax(log_probs / T)`` over T.

    Label smoothing and mixup make a model underconfident, long training overconfident; both raise
    the plain validation loss without changing which class wins. With the temperature fitted
    away, the loss compares how well models rank the right class, so stages trained with
    different regularisation can be compared fairly (Guo et al., 2017, for the scaling).

    >>> lp = torch.log_softmax(torch.tensor([[4.0, 0.0], [0.0, 4.0]]), 1)
    >>> calibrated_nll(lp, torch.tensor([0, 1])) < float(F.nll_loss(lp, torch.tensor([0, 1])))
    True
    """
    if len(labels) == 0:
        return float("nan")
    temperatures = torch.logspace(-1.5, 1.5, 61)  # 0.03 .. 30, 5% apart
    losses = [F.cross_entropy(log_probs.double() / t, labels).item() for t in temperatures]
    return float(min(losses))


class _Trainer:
    def __init__(self, cfg: RunConfig, model: TransferModel, manifest: Manifest, run_dir: Path,
                 device: torch.device, workers: int, reporter: Reporter,
                 dist: distributed.Distributed = distributed.SINGLE) -> None:
        self.cfg, self.model, self.manifest, self.run_dir = cfg, model, manifest, run_dir
        self.device, self.workers, self.reporter = device, workers, reporter
        self.dist = dist
        self.net: nn.Module = model  # what image stages train: the model, or the model in DDP
        self.store = FeatureStore(cfg.cache_dir)
        self.history: list[dict] = []
        self.timings: dict[str, float] = {"extract_seconds": 0.0, "train_seconds": 0.0}
        self.stage_index = 0
        self.resume_state: dict | None = None
        self.last_val: dict = {}
        backbone = model.backbone
        # the earliest layer group any cached stage trains: activations before it are computed once
        starts = [first_trainable_group(self.model.backbone, s) for s in cfg.recipe.stages]
        cached = [k for k in starts if k > 0 and (backbone.sequential or k == backbone.num_groups)]
        self.base_group = min(cached) if cached else backbone.num_groups
        self._base: dict[tuple[str, int], torch.Tensor] = {}
        self._base_fingerprint: str | None = None
        self._last_save = time.perf_counter()
        self._pending: dict | None = None
        self._decoded_cache: dict[str, DecodedImages | None] = {}
        self._saved_epochs = 0
        self._epochs = 0  # epochs of the running stage (fewer than the recipe's when a time budget says so)
        self._budget: dict | None = None  # the running stage's time budget, until it has settled the epochs
        self.extract_batch_size = 64


    # -- resume
    def restore_if_resuming(self) -> None:
        if not self.cfg.resume:
            return
        state = self.dist.on_main(lambda: load_checkpoint(self.run_dir / CHECKPOINT))
        self.model.load_state_dict(state["model"])
        self.history = [json.loads(line) for line in state["history"]]
        self._saved_epochs = len(self.history)
        # epochs logged after the checkpoint was written are replayed, so the log is rewritten to match
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        self.stage_index = int(state["stage"])
        self.resume_state = state if not state["stage_done"] else None
        if state["stage_done"]:
            self.stage_index += 1
        self.reporter.message(f"resuming at stage {self.stage_index + 1}, after epoch {state['epoch'] + 1}")

    # -- cached activations
    def _base_inputs(self, split: str, view: int, augment: str, stage_seed: int) -> torch.Tensor:
        key = (split if augment == "none" else f"{split}:{augment}", view)
        if key not in self._base:
            paths = self.manifest.paths(split)
            if not paths:
                return torch.empty(0)
            label = f"extract {split}" + (f" view {view + 1} ({augment})" if augment != "none" else "")
            tick = self.reporter.task(label, len(paths))
            t0 = time.perf_counter()
            feats, stats = self.store.get(
                self.model.backbone, self.model.preprocessing, paths, stop_group=self.base_group, augment=augment,
                view=view, seed=stage_seed, batch_size=self.extract_batch_size, workers=self.workers, device=self.device, progress=tick,
                dist=self.dist)
            self.timings["extract_seconds"] += time.perf_counter() - t0
            for text in stats.messages:  # a dropped cache entry, rows left uncached: say so
                self.reporter.message(text)
            if self._base_fingerprint is None:
                from tlkit.train.feature_store import backbone_fingerprint

                self._base_fingerprint = backbone_fingerprint(self.model.backbone, self.base_group)
            if stats.hits and tick is not None:
                tick(len(paths), len(paths))
            self._base[key] = feats
        return self._base[key]

    def _inputs_at(self, k: int, split: str, view: int = 0, augment: str = "none") -> torch.Tensor:
        """Activations entering group ``k`` (pooled features when k == num_groups), from the base cache."""
        base = self._base_inputs(split, view, augment, self.cfg.seed)
        if k == self.base_group or len(base) == 0:
            return base
        backbone = self.model.backbone
        backbone.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(base), 256):
                x = base[s:s + 256].to(self.device)
                out.append(backbone.forward_groups(x, self.base_group, k).float().cpu())
        return torch.cat(out)

    # -- one stage
    def run_stage(self, index: int, stage: StageConfig) -> None:
        backbone = self.model.backbone
        k = first_trainable_group(self.model.backbone, stage)
        backbone.freeze(0 if stage.kind == "probe" else stage.unfreeze)
        backbone.bn_eval = not stage.train_bn
        cached = k > 0
        trained = backbone.num_groups - backbone.first_trainable_group
        name = stage.name or f"{stage.kind}" + (f" (last {trained} groups)" if 0 < trained < backbone.num_groups else "")
        upto = "up to " if stage.max_minutes is not None else ""
        self.reporter.message(f"stage {index + 1}/{len(self.cfg.recipe.stages)}: {name}, {upto}{stage.epochs} epochs, "
                              f"{'cached activations' if cached else 'full images'}")
        train_labels = torch.tensor(self.manifest.labels("train"), dtype=torch.long)
        val_labels = torch.tensor(self.manifest.labels("val"), dtype=torch.long)
        if cached:
            views_list = [self._inputs_at(k, "train", 0, "none")]
            if stage.augment != "none":
                views_list += [self._inputs_at(k, "train", v, stage.augment) for v in range(stage.views)]
            views = torch.stack(views_list)  # (views, N, ...): one indexing op gathers a batch
            del views_list
            val_inputs = self._inputs_at(k, "val")
        else:
            views, val_inputs = torch.empty(0), None

        optimizer = self._optimizer(stage, k)
        steps_per_epoch = max(1, math.ceil(len(train_labels) / stage.batch_size))
        if len(train_labels) > stage.batch_size and len(train_labels) % stage.batch_size == 1:
            steps_per_epoch -= 1  # the lone last sample is dropped (BatchNorm cannot train on one)
        if not cached and self.dist.enabled:  # each rank steps through its share of the images
            steps_per_epoch = self.dist.steps_per_epoch(len(train_labels), stage.batch_size)
        resumed = self.resume_state is not None and int(self.resume_state["stage"]) == index
        # a time budget (max_minutes) settles the epochs during the first epoch (see _budget_tick);
        # a resumed stage keeps what was settled, so its schedule is the one it started with
        self._epochs = int(self.resume_state.get("epochs", stage.epochs)) if resumed else stage.epochs
        self._budget = None
        if stage.max_minutes is not None and stage.epochs > 0 and not resumed:
            self._budget = {"stage": stage, "steps_per_epoch": steps_per_epoch, "val_images": len(val_labels),
                            "steps": 0, "start": self._budget_clock()}
        self.net = self.model if cached else self.dist.wrap(self.model)
        scheduler = self._scheduler(stage, optimizer, steps_per_epoch)
        class_weights = None
        if stage.class_weighting == "balanced":
            counts = torch.bincount(train_labels, minlength=len(self.manifest.classes)).float()
            class_weights = (counts.sum() / (len(counts) * counts.clamp(min=1))).to(self.device)

        trainable_keys = self._trainable_keys()
        start_epoch, step = 0, 0
        best_metric, best_state, bad_epochs = None, None, 0
        if resumed:
            st = self.resume_state
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            start_epoch, step = int(st["epoch"]) + 1, int(st["step"])
            best_metric = st["best_metric"]
            best_state = st["best_state"] or None
            bad_epochs = int(st["bad_epochs"])
            set_rng_state(st["rng"])
            self.resume_state = None
        elif index > 0 and len(val_labels):
            # Model selection on validation includes the weights the stage starts from: a fine-tuning
            # stage that never beats the probe before it gives the probe's weights back.
            before = {"train_loss": float("inf"), **self._validate(k, val_inputs, val_labels)}
            best_metric = self._metric_value(stage, before)
            best_state = {k_: v.detach().clone() for k_, v in self.model.state_dict().items() if k_ in trainable_keys}
            bad_epochs = -1  # the starting point is not an epoch: patience counts from the first epoch
            self.reporter.message(f"  before this stage: val accuracy {before['val_accuracy']:.4f}")
        if not resumed:
            # A stage starts from RNG states fixed by (seed, stage) alone, so what ran before it
            # (feature extraction or a cache hit, earlier stages, a resume at the stage boundary)
            # cannot change its dropout masks or augmentations.
            seed_everything(self.cfg.seed * 1000003 + index * 1009 + 104729)

        epoch = start_epoch - 1
        while epoch + 1 < self._epochs:
            epoch += 1
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(self.cfg.seed * 1000003 + index * 1009 + epoch)
            self.model.train()
            if cached:
                loss, step = self._epoch_cached(stage, index, epoch, step, k, views, train_labels, optimizer,
                                                scheduler, class_weights, gen)
            else:
                loss, step = self._epoch_images(stage, index, epoch, step, train_labels, optimizer, scheduler,
                                                class_weights, gen)
            val = self._validate(k, val_inputs, val_labels) if len(val_labels) else {}
            loss, val = self.dist.same_on_all((loss, val))  # every rank decides (early stop, best epoch) alike
            if self._budget is not None:
                self._budget_first_epoch_done()
            self._check_finite(stage, index, epoch, step, optimizer, val)
            seconds = time.perf_counter() - t0
            self.timings["train_seconds"] += seconds
            record = {"stage": index, "stage_kind": stage.kind, "epoch": epoch, "step": step, "train_loss": loss,
                      "lr": optimizer.param_groups[-1]["lr"], "seconds": round(seconds, 4), **val}
            self.history.append(record)
            self.last_val = val

            metric = self._metric_value(stage, record)
            improved = best_metric is None or metric > best_metric
            if improved:
                best_metric, bad_epochs = metric, 0
                best_state = {k_: v.detach().clone() for k_, v in self.model.state_dict().items()
                              if k_ in trainable_keys}
            else:
                bad_epochs += 1
            stop = stage.early_stopping is not None and bad_epochs >= stage.early_stopping
            done = stop or epoch == self._epochs - 1
            if done and best_state is not None:
                self.model.load_state_dict(best_state, strict=False)
            # From here on this epoch is kept: a Ctrl-C writes it (save_interrupted) if nothing else does.
            state = self._state(index, epoch, step, optimizer, scheduler, best_metric, best_state, bad_epochs,
                                trainable_keys, stage_done=done)
            self._pending = state
            if self.dist.is_main:
                with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            self.reporter.epoch(record)
            # Epochs on cached features take milliseconds: checkpoint at most every CHECKPOINT_SECONDS
            # (resuming from an earlier epoch replays the same epochs exactly), always at a stage's end.
            if done or epoch == start_epoch or time.perf_counter() - self._last_save >= CHECKPOINT_SECONDS:
                self._write(state)
            if stop:
                self.reporter.message(f"early stop after epoch {epoch + 1}: no {stage.metric} gain for {bad_epochs} epochs")
                break
        if self._epochs == 0:
            self._write(self._state(index, -1, step, optimizer, scheduler, None, None, 0, trainable_keys, stage_done=True))
        self.net = self.model
        self.dist.sync_module(self.model)  # cached stages ran on every rank: rank 0's result is the one kept

    def _check_finite(self, stage: StageConfig, index: int, epoch: int, step: int, optimizer, val: dict) -> None:  # noqa: ANN001
        """The last step of an epoch can leave NaN/inf weights behind a finite loss: stop before saving them."""
        bad = [name for name, p in self.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        if bad or not math.isfinite(val.get("val_loss", 0.0)):
            what = f"weights {', '.join(bad[:3])}" if bad else "validation loss"
            raise DivergedError(
                f"{what} became NaN/inf in stage {index + 1} ({stage.kind}), epoch {epoch + 1}, step {step}, "
                f"learning rate {optimizer.param_groups[-1]['lr']:.3g}; lower the learning rate (--lr) or set grad_clip. "
                "No checkpoint was written from the diverged state")

    def _trainable_keys(self) -> set[str]:
        """State-dict keys that a stage can change: trainable parameters and their modules' buffers."""
        keys = set()
        for module_name, module in self.model.named_modules():
            own = list(module.named_parameters(recurse=False))
            if own and any(p.requires_grad for _, p in own):
                prefix = f"{module_name}." if module_name else ""
                keys.update(prefix + n for n, _ in own)
                keys.update(prefix + n for n, _ in module.named_buffers(recurse=False))
        return keys

    def _metric_value(self, stage: StageConfig, record: dict) -> float:
        if stage.metric in ("val_loss", "val_calibrated_loss"):
            return -record[stage.metric] if stage.metric in record else -record["train_loss"]
        return record.get(stage.metric, -record["train_loss"])

    def _optimizer(self, stage: StageConfig, k: int) -> torch.optim.Optimizer:
        backbone = self.model.backbone
        n = backbone.num_groups
        k = max(k, backbone.first_trainable_group)  # parameter-only groups: images in, the last groups train
        groups = [{"params": list(self.model.head.parameters()), "lr": stage.lr}]
        seen = {id(p) for p in groups[0]["params"]}
        for g in range(n - 1, max(k, 0) - 1, -1):  # later groups keep more of the head's rate
            params = [p for _, p in backbone.group_parameters(g) if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups.append({"params": params, "lr": stage.lr * stage.lr_decay ** (n - g)})
        groups = list(reversed(groups))  # earliest first; the head's group is last
        for g in groups:
            g["initial_lr"] = g["lr"]
        if stage.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay,
                                   nesterov=True)
        return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)

    # -- time budget
    def _budget_clock(self) -> float:
        return time.perf_counter()

    def _budget_tick(self) -> None:
        """After each training step of a stage with ``max_minutes``: once a few steps are timed, lay
        the schedule out over the epochs that fit. Steps after the first (which pays for decoding,
        allocation and compilation) give the time per step; what the first cost beyond that is
        counted once, as overhead."""
        b = self._budget
        now = self._budget_clock()
        b["steps"] += 1
        if b["steps"] == 1:
            b["after_first"] = now
        timed = b["steps"] - 1
        if "overhead" in b or timed < min(BUDGET_TIMED_STEPS, b["steps_per_epoch"] - 1):
            return
        per_step = self.dist.same_on_all((now - b["after_first"]) / timed if timed else now - b["start"])
        b["overhead"] = max(0.0, (now - b["start"]) - b["steps"] * per_step)
        # validation is a forward pass: about a third of a training step per image
        self._fit_epochs(per_step * b["steps_per_epoch"] + per_step / b["stage"].batch_size * b["val_images"] / 3)

    def _budget_first_epoch_done(self) -> None:
        """Settle the epochs on the first epoch's measured time (validation included); the few steps
        timed before can run slow or fast, the whole epoch does not."""
        b = self._budget
        b.setdefault("overhead", 0.0)  # set by the step that laid the schedule out; kept safe if none did
        epoch_seconds = self.dist.same_on_all(self._budget_clock() - b["start"] - b["overhead"])
        fits = self._fit_epochs(epoch_seconds)
        stage, self._budget = b["stage"], None
        note = (f"  time budget {stage.max_minutes:g} min: ~{epoch_seconds:.0f} s per epoch measured, "
                f"{self._epochs} of {stage.epochs} epochs")
        if fits < 1:
            note += " (one epoch is over the budget; lower --image-size, or --recipe linear-probe for a run in seconds)"
        self.reporter.message(note)

    def _fit_epochs(self, epoch_seconds: float) -> int:
        """Set the stage's epochs to as many as fit the budget after its overhead (at least one)."""
        b = self._budget
        fits = int((b["stage"].max_minutes * 60 - b["overhead"]) // max(epoch_seconds, 1e-9))
        self._epochs = max(1, min(b["stage"].epochs, fits))
        return fits

    def _scheduler(self, stage: StageConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):  # noqa: ANN202
        if stage.schedule == "onecycle":  # laid out once: a time budget is refused with it (config)
            return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                       total_steps=max(1, self._epochs * steps_per_epoch) + 1)
        warmup = int(stage.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if stage.schedule == "constant":
                return 1.0
            total = max(1, self._epochs * steps_per_epoch)  # read each step: a time budget may settle it late
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def _batches(self, n: int, batch_size: int, stage: StageConfig, labels: torch.Tensor,
                 gen: torch.Generator) -> list[torch.Tensor]:
        if stage.class_weighting == "sampler":
            counts = torch.bincount(labels, minlength=len(self.manifest.classes)).float()
            weights = 1.0 / counts.clamp(min=1)[labels]
            order = torch.multinomial(weights, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen)
        batches = list(order.split(batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches = batches[:-1]
        return batches

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, stage: StageConfig,
              class_weights: torch.Tensor | None) -> torch.Tensor:
        if targets.ndim == 2:  # soft targets from mixup / cutmix
            logp = F.log_softmax(logits.float(), dim=1)
            if stage.label_smoothing:
                targets = targets * (1 - stage.label_smoothing) + stage.label_smoothing / targets.shape[1]
            per = -(targets * logp)
            if class_weights is not None:
                per = per * class_weights
            return per.sum(1).mean()
        return F.cross_entropy(logits.float(), targets, weight=class_weights, label_smoothing=stage.label_smoothing)

    def _mix(self, x: torch.Tensor, y: torch.Tensor, stage: StageConfig, gen: torch.Generator):  # noqa: ANN202
        if not (stage.mixup or stage.cutmix):
            return x, y
        c = len(self.manifest.classes)
        onehot = F.one_hot(y, c).float()
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        use_cutmix = stage.cutmix > 0 and x.ndim == 4 and (not stage.mixup or torch.rand(1, generator=gen).item() < 0.5)
        alpha = stage.cutmix if use_cutmix else stage.mixup
        lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(alpha, alpha))
        if use_cutmix:
            h, w = x.shape[-2:]
            ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
            y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            x = lam * x + (1 - lam) * x[perm]
        return x, lam * onehot + (1 - lam) * onehot[perm]

    def _step(self, stage: StageConfig, index: int, epoch: int, step: int, logits_fn, x: torch.Tensor,  # noqa: ANN001
              y: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler, class_weights) -> float:  # noqa: ANN001
        use_amp = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = logits_fn(x)
        loss = self._loss(logits, y, stage, class_weights)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"loss became {loss.item()} in stage {index + 1} ({stage.kind}), epoch {epoch + 1}, step {step + 1}, "
                f"learning rate {optimizer.param_groups[-1]['lr']:.3g}; lower the learning rate (--lr) or set grad_clip. "
                "No checkpoint was written from the diverged state")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], stage.grad_clip)
        optimizer.step()
        scheduler.step()
        if self._budget is not None:
            self._budget_tick()
        return float(loss.detach())

    def _epoch_cached(self, stage, index, epoch, step, k, views, labels, optimizer, scheduler, class_weights, gen):  # noqa: ANN001, ANN202
        backbone, head = self.model.backbone, self.model.head
        total, count = 0.0, 0
        view_choice = torch.randint(0, len(views), (len(labels),), generator=gen)
        for batch in self._batches(len(labels), stage.batch_size, stage, labels, gen):
            x = views[view_choice[batch], batch].to(self.device)
            y = labels[batch].to(self.device)
            x, y = self._mix(x, y, stage, gen)
            loss = self._step(stage, index, epoch, step, lambda t: head(backbone.forward_groups(t, k)), x, y,
                              optimizer, scheduler, class_weights)
            step += 1
            total += loss * len(batch)
            count += len(batch)
        return total / max(1, count), step

    def _decoded(self, split: str) -> DecodedImages | None:
        """The split's images decoded once for every epoch of an image stage (None if they would not fit)."""
        if split not in self._decoded_cache:
            paths, pre = self.manifest.paths(split), self.model.preprocessing
            need = DecodedImages.estimate_bytes(len(paths), pre.resize_size)
            if need > DECODED_CACHE_BYTES:
                self.reporter.message(f"{split} images are decoded every epoch: holding them decoded would take "
                                      f"~{need / 2**30:.1f} GiB (limit {DECODED_CACHE_BYTES / 2**30:.0f} GiB)")
                self._decoded_cache[split] = None
            else:
                tick = self.reporter.task(f"decode {split}", len(paths))
                images = DecodedImages.decode(paths, pre.resize_size, pre.interpolation, workers=self.workers,
                                              progress=tick)
                self._decoded_cache[split] = DecodedImages(images, self.manifest.labels(split))
        return self._decoded_cache[split]

    def _image_loader(self, split: str, transform, shuffle_gen: torch.Generator | None, batch_size: int):  # noqa: ANN001, ANN202
        decoded = self._decoded(split) if split in ("train", "val") else None
        if decoded is not None:
            dataset: torch.utils.data.Dataset = decoded.with_transform(transform)
        else:
            dataset = ImageDataset(self.manifest.paths(split), self.manifest.labels(split), transform)
        if self.dist.enabled:  # this rank's share: sampled for training, a slice for prediction
            return self.dist.image_loader(dataset, batch_size, shuffle_gen, num_workers=self.workers,
                                          worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda")
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle_gen is not None, generator=shuffle_gen,
            num_workers=self.workers, worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda",
            drop_last=shuffle_gen is not None and len(dataset) > batch_size and len(dataset) % batch_size == 1)

    def _epoch_images(self, stage, index, epoch, step, labels, optimizer, scheduler, class_weights, gen):  # noqa: ANN001, ANN202
        from tlkit.transforms import train_transform

        loader = self._image_loader("train", train_transform(self.model.preprocessing, stage.augment), gen,
                                    stage.batch_size)
        self.dist.seed_image_epoch(gen.initial_seed())
        total, count = 0.0, 0
        for images, y, _ in loader:
            x = images.to(self.device)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device)
            x, y = self._mix(x, y, stage, gen)
            loss = self._step(stage, index, epoch, step, self.net, x, y, optimizer, scheduler, class_weights)
            step += 1
            total += loss * len(images)
            count += len(images)
        return self.dist.mean(total, count), step

    def _probs(self, k: int | None, inputs: torch.Tensor | None, split: str) -> torch.Tensor:
        """Class probabilities for a split, from cached activations when possible."""
        self.model.eval()
        backbone, head = self.model.backbone, self.model.head
        out, rows = [], []
        with torch.inference_mode():
            if inputs is not None:
                for s in range(0, len(inputs), 256):
                    x = inputs[s:s + 256].to(self.device)
                    out.append(torch.softmax(head(backbone.forward_groups(x, k)).float(), 1).cpu())
            else:
                from tlkit.transforms import eval_transform

                for images, _, at in self._image_loader(split, eval_transform(self.model.preprocessing), None, 64):
                    out.append(torch.softmax(self.model(images.to(self.device)).float(), 1).cpu())
                    rows.append(at)
        probs = torch.cat(out) if out else torch.empty(0, len(self.manifest.classes))
        if inputs is None and self.dist.enabled:  # each rank predicted its share: every image back in place, once
            at = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)
            probs = self.dist.gather_rows(probs, at, len(self.manifest.paths(split)))
        return probs

    def _validate(self, k: int, inputs: torch.Tensor | None, labels: torch.Tensor) -> dict:
        from sklearn.metrics import balanced_accuracy_score

        probs = self._probs(k if inputs is not None else None, inputs, "val")
        log_probs = torch.log(probs.clamp_min(1e-12))
        loss = F.nll_loss(log_probs, labels).item()
        pred = probs.argmax(1).numpy()
        return {"val_loss": loss, "val_calibrated_loss": calibrated_nll(log_probs, labels),
                "val_accuracy": float((pred == labels.numpy()).mean()),
                "val_balanced_accuracy": float(balanced_accuracy_score(labels.numpy(), pred))}

    def evaluate_test(self):  # noqa: ANN201
        from tlkit.evaluation.scoring import evaluate_predictions

        labels = self.manifest.labels("test")
        if not labels:
            return None
        # Same weights either way: cached activations only skip recomputing a prefix that never changed.
        inputs = self._base_inputs("test", 0, "none", self.cfg.seed) if self._prefix_unchanged() else None
        probs = self._probs(self.base_group if inputs is not None else None, inputs, "test")
        if not self.dist.is_main:
            return None
        return evaluate_predictions(np.array(labels), probs.numpy(), self.manifest.classes,
                                    paths=self.manifest.paths("test"), seed=self.cfg.seed)

    def _prefix_unchanged(self) -> bool:
        from tlkit.train.feature_store import backbone_fingerprint

        if not self._base or self._base_fingerprint is None:
            return False
        return backbone_fingerprint(self.model.backbone, self.base_group) == self._base_fingerprint

    # -- checkpoints
    def _state(self, stage: int, epoch: int, step: int, optimizer, scheduler, best_metric, best_state, bad_epochs,  # noqa: ANN001
               changing: set[str], *, stage_done: bool) -> dict:
        """Everything needed to resume after this epoch. What the stage goes on changing (``changing``:
        its trainable keys, the optimizer, the scheduler) is copied; frozen tensors are shared, as they
        stay as they are until this state is written or replaced at the stage's end."""

        return {
            "format": "tlkit-checkpoint",
            "stage": stage, "epoch": epoch, "step": step, "stage_done": stage_done,
            "model": {k: v.detach().cpu().clone() if k in changing else v.detach().cpu()
                      for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
            "best_metric": best_metric, "best_state": best_state or {}, "bad_epochs": bad_epochs,
            "epochs": self._epochs,
            "rng": rng_state(),
            "history": [json.dumps(r) for r in self.history],
        }

    def _write(self, state: dict) -> None:
        if self.dist.is_main:  # one writer; every rank holds the same state
            save_checkpoint(state, self.run_dir / CHECKPOINT)
        self._saved_epochs = len(state["history"])
        self._pending = None
        self._last_save = time.perf_counter()

    def save_interrupted(self) -> None:
        """Ctrl-C: write the last finished epoch if it is newer than the checkpoint on disk.

        The epoch that was running is lost (its partial updates are not a resumable state);
        every finished epoch is kept.
        """
        if self._pending is not None:
            self._write(self._pending)
        if not self.dist.is_main:
            return
        if not (self.run_dir / CHECKPOINT).is_file():
            self.reporter.message("interrupted before the first epoch ended: nothing to resume from yet")
            return
        # the epoch log says what the checkpoint holds (an epoch logged but not saved is replayed on resume)
        atomic_write_text(self.run_dir / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in self.history[:self._saved_epochs]))


