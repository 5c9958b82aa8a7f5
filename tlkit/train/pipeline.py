"""A run from start to finish: prepare -> stages -> finish.

Reading order: :func:`run` validates the config and opens the (possibly distributed) session;
:func:`_prepare` checks the data and the recipe, builds the backbone and writes the run
directory's first files; :func:`_train` runs the recipe's stages (:mod:`tlkit.train.stage`),
writing a final checkpoint on Ctrl-C; :func:`_finish` calibrates the model, fits its out-of-distribution
score (:mod:`tlkit.train.ood_fit`), saves it, evaluates it on the test
split and writes the run's report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tlkit import rundir
from tlkit._io import atomic_write_text
from tlkit._seeding import seed_everything
from tlkit.config import RunConfig, make_config, resume_config, save_yaml
from tlkit.console import Reporter, SilentReporter, default_reporter
from tlkit.data import Manifest
from tlkit.errors import ResourceError
from tlkit.models.backbone import Backbone, compile_backend
from tlkit.models.builder import build as build_backbone
from tlkit.models.heads import HeadSpec
from tlkit.models.transfer import TransferModel
from tlkit.train import distributed
from tlkit.train.activations import ActivationCache, base_group, first_trainable_group
from tlkit.train.checkpoint import Checkpointer, TrainState, finished_checkpoint, load_checkpoint
from tlkit.train.context import RunContext
from tlkit.train.crossval import cross_validate
from tlkit.train.data_doctor import doctor_run_data, load_findings, save_findings
from tlkit.train.decision import check_decision, decide
from tlkit.train.devices import default_workers, resolve_device
from tlkit.train.feature_store import FeatureStore
from tlkit.train.folds import check_folds
from tlkit.train.image_feed import ImageFeed
from tlkit.train.ood_fit import fit_run_ood, split_features
from tlkit.train.prepare import check_resume, check_run_dir, check_stages_fit, default_out, prepare_data, prepare_run_dir, resume_hint, scan_data
from tlkit.train.stage import run_stage
from tlkit.train.tta import choose_tta, tta_split_logits, tta_text
from tlkit.train.validation import Predictor, calibrate

__all__ = ["finetune", "run", "config_for", "FinetuneResult", "Reporter", "CHECKPOINT", "resolve_device",
           "default_workers", "first_trainable_group", "prepare_run_dir", "resume_hint"]

#: where a run keeps the state it resumes from (see :class:`tlkit.rundir.RunDir`)
CHECKPOINT = "checkpoints/last.pt"


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns."""

    model: TransferModel
    run_dir: Path
    config: RunConfig
    manifest: Manifest
    history: list[dict] = field(default_factory=list)
    evaluation: Any = None  # tlkit.evaluation.metrics.EvalResult on the test split, when there is one
    timings: dict = field(default_factory=dict)
    rank: int = 0  # this process's rank when several train together; only rank 0 has the evaluation
    doctor: Any = None  # tlkit.diagnosis.DoctorResult of the run's split (data.doctor), from its doctor.json

    def plot_history(self, ax: Any = None) -> Any:
        """Draw the learning curves (loss, accuracy, learning rate per epoch over all stages; stage boundaries and
        the kept epoch marked); ``ax``: one axes, or three (default: a new figure). Returns the first axes."""
        from tlkit.evaluation.curve_display import HistoryDisplay

        return HistoryDisplay.from_history(self.history, kept=self.kept).plot(ax).ax_

    @property
    def kept(self) -> dict:
        """Which weights the model kept (stage and epoch counted from 1), as model.json's ``extra.kept``."""
        meta = self.run_dir / "model.json"
        return (json.loads(meta.read_text(encoding="utf-8")).get("extra") or {}).get("kept", {}) if meta.is_file() else {}

    def __repr__(self) -> str:
        acc = f", test accuracy={self.evaluation.accuracy:.3f}" if self.evaluation is not None else ""
        return f"FinetuneResult(run_dir='{self.run_dir}', backbone={self.model.backbone.name}{acc})"


def finetune(data: str | os.PathLike, backbone: str | None = None, recipe: Any = None, *,
             reporter: Reporter | None = None, verbose: bool = True, clock: Callable[[], float] = time.perf_counter,
             **overrides: Any) -> FinetuneResult:
    """Fine-tune a pretrained backbone on a folder of class folders; the same options as the CLI.

    Progress (bars, one line per epoch) goes to stderr, or into the notebook, unless ``verbose=False``;
    a ``reporter`` given replaces it. ``clock`` is what stage time budgets (``max_minutes``) measure with
    (tests give a fake one).

    >>> # result = tlkit.finetune("data/leaves", backbone="resnet18", epochs=5)
    >>> # result.evaluation.accuracy, result.run_dir
    """
    cfg = config_for(data, backbone, recipe, overrides)
    return run(cfg, reporter=reporter if reporter is not None else default_reporter(verbose), clock=clock)


def config_for(data: str | os.PathLike, backbone: str | None, recipe: Any, overrides: dict[str, Any]) -> RunConfig:
    """The config of :func:`finetune`: built from the options, or for ``resume`` read from the run's
    own ``config.yaml``, where the options given must agree with it (see :func:`tlkit.config.resume_config`)."""
    if not overrides.get("resume"):
        return make_config(data, backbone=backbone, recipe=recipe, **overrides)
    out = overrides.get("out") or default_out(data)
    return resume_config(rundir.resumable(out).config, {**overrides, "path": str(data), "backbone": backbone,
                                                        "recipe": recipe})


def run(cfg: RunConfig, *, reporter: Reporter | None = None,
        clock: Callable[[], float] = time.perf_counter) -> FinetuneResult:
    """Run a validated config end to end: data, backbone, stages, saved model, test evaluation.

    A plain function of the config, so it is also what each process calls under ``torchrun`` or
    inside an engine's worker (Ray Train's ``train_loop_per_worker``): every process calls it with
    the same config, and rank 0 alone writes files and reports progress (``tlkit.train.distributed``).
    ``clock`` is what stage time budgets (``max_minutes``) measure with.
    """
    cfg.validate()
    cfg.data.path = os.path.abspath(os.path.expanduser(cfg.data.path))  # config.yaml says exactly which data
    with distributed.session(resolve_device(cfg.device)) as dist:
        reporter = (reporter or SilentReporter()) if dist.is_main else SilentReporter()
        t_start = time.perf_counter()
        ctx = _prepare(cfg, reporter, dist, clock)
        if cfg.folds:  # K models on the folds of train+val first, from the final model's initial weights
            cross_validate(ctx)
        _train(ctx)
        return _finish(ctx, t_start)


def _prepare(cfg: RunConfig, reporter: Reporter, dist: distributed.Distributed,
             clock: Callable[[], float]) -> RunContext:
    """Checks first (nothing written), then the run directory, its split and the model."""
    device = dist.device
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    if cfg.workers is None:
        workers = dist.share_workers(workers)
    if cfg.resume:
        check_resume(cfg)
    scanned = None if cfg.resume else dist.on_main(lambda: scan_data(cfg, reporter))
    if scanned is not None:
        check_decision(cfg, scanned.classes)  # a threshold target on a task that is not two-class: refused now
    seed_everything(cfg.seed)
    backbone = build_backbone(cfg.model.backbone, pretrained=cfg.model.pretrained,
                                   weights_file=cfg.model.weights, offline=cfg.model.offline)
    check_stages_fit(cfg, backbone, device)
    check_folds(cfg, backbone, device, scanned)
    # the doctor on the split (rank 0; a resumed run was examined when it started): leakage stops here
    if scanned is not None:
        dist.on_main(lambda: check_run_dir(cfg))  # an occupied --out is refused before the doctor's work
    findings = None if scanned is None else dist.on_main(lambda: doctor_run_data(cfg, scanned, backbone, device,
                                                                                 workers, reporter))

    def first_files() -> tuple[Path, Manifest]:
        run_dir = prepare_run_dir(cfg)
        save_yaml(cfg.to_dict(), run_dir / "config.yaml")  # on resume: the run's own, with where it runs now
        save_findings(findings, rundir.RunDir(run_dir).doctor)
        return run_dir, prepare_data(cfg, run_dir, reporter, scanned)

    # rank 0 alone creates the run directory and its first files; every rank gets the path and split
    run_dir, manifest = dist.on_main(first_files)
    cfg.out = str(run_dir)
    model = _model(cfg, backbone, manifest, device, reporter, dist)
    timings = {"extract_seconds": 0.0, "train_seconds": 0.0}
    if findings is not None:
        timings["doctor_seconds"] = float(findings.timings.get("total_seconds", 0.0))
    feed = ImageFeed(manifest, model.preprocessing, workers=workers, device=device, reporter=reporter, dist=dist)
    activations = ActivationCache(FeatureStore(cfg.cache_dir, channels_last=cfg.channels_last), backbone, model.preprocessing, manifest,
                                  base=base_group(backbone, cfg.recipe.stages), seed=cfg.seed, workers=workers,
                                  device=device, reporter=reporter, timings=timings, dist=dist)
    return RunContext(cfg, model, manifest, rundir.RunDir(run_dir), device, reporter, dist, activations, feed,
                      Predictor(model, feed, device, dist), Checkpointer(run_dir / CHECKPOINT, is_main=dist.is_main),
                      clock=clock, timings=timings, net=model)


def _model(cfg: RunConfig, backbone: Backbone, manifest: Manifest, device: torch.device,
           reporter: Reporter, dist: distributed.Distributed) -> TransferModel:
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
    return model


def _restore(ctx: RunContext) -> tuple[int, TrainState | None]:
    """On resume: the model, the epoch log and where to go on (the first stage to run and, when that
    stage was cut off, its state)."""
    state = TrainState.from_dict(ctx.dist.on_main(lambda: load_checkpoint(ctx.run.checkpoint)))
    ctx.model.load_state_dict(state.model)
    ctx.history[:] = [json.loads(line) for line in state.history]
    ctx.checkpointer.saved_epochs = len(ctx.history)
    # epochs logged after the checkpoint was written are replayed, so the log is rewritten to match
    if ctx.dist.is_main:
        atomic_write_text(ctx.run.metrics_log, "".join(json.dumps(r) + "\n" for r in ctx.history))
    ctx.reporter.message(f"resuming at stage {state.stage + 1 + state.stage_done}, after epoch {state.epoch + 1}")
    return (state.stage + 1, None) if state.stage_done else (state.stage, state)


def _train(ctx: RunContext) -> None:
    """Every stage of the recipe, from where a resumed run stopped; Ctrl-C keeps the finished epochs."""
    first, resume = _restore(ctx) if ctx.cfg.resume else (0, None)
    try:
        for index, stage in enumerate(ctx.cfg.recipe.stages):
            if index < first:
                continue
            stage = stage.for_device(ctx.device.type)
            ctx.activations.batch_size = stage.batch_size
            try:
                run_stage(ctx, index, stage, resume if index == first else None)
            except torch.cuda.OutOfMemoryError as exc:
                raise ResourceError(
                    f"out of GPU memory in stage {index + 1} ({stage.kind}) at batch size {stage.batch_size}; "
                    f"lower it, e.g. --batch-size {max(1, stage.batch_size // 2)}, or use a smaller --image-size. "
                    f"Progress so far is in {ctx.run.checkpoint} (--resume)") from exc
    except KeyboardInterrupt:
        _save_interrupted(ctx)
        ctx.reporter.message(f"progress saved in {ctx.run.checkpoint}; continue with: "
                             f"{resume_hint(ctx.cfg, ctx.run.path)}  (the run's options are read from its config.yaml)")
        raise


def _save_interrupted(ctx: RunContext) -> None:
    """Ctrl-C: write the last finished epoch if it is newer than the checkpoint on disk. The epoch that
    was running is lost (its partial updates are not a resumable state); every finished one is kept."""
    ctx.checkpointer.flush()
    if not ctx.dist.is_main:
        return
    if not ctx.run.checkpoint.is_file():
        ctx.reporter.message("interrupted before the first epoch ended: nothing to resume from yet")
        return
    # the epoch log says what the checkpoint holds (an epoch logged but not saved is replayed on resume)
    atomic_write_text(ctx.run.metrics_log,
                      "".join(json.dumps(r) + "\n" for r in ctx.history[:ctx.checkpointer.saved_epochs]))


def evaluate_test(ctx: RunContext) -> Any:
    """The trained model on the test split (None without one, and on every process but rank 0), with
    the calibrated probabilities ``predict`` gives; the ECE before temperature scaling is kept too."""
    from tlkit.evaluation.metrics import evaluate_predictions

    labels = ctx.manifest.labels("test")
    if not labels:
        return None
    ood = ctx.model.ood
    if ood is not None:  # the image alone (as the OOD score was fitted), with the pooled features it needs
        features, plain = split_features(ctx.predictor, ctx.activations, "test")
    # one pass over the test split: split_features' logits are split_logits', so they serve without TTA
    logits = plain if ood is not None and not ctx.model.tta.get("used") else \
        tta_split_logits(ctx.model, ctx.predictor, ctx.activations, "test")
    if not ctx.dist.is_main:
        return None
    result = evaluate_predictions(np.array(labels), ctx.model.probabilities(logits).numpy(), ctx.manifest.classes,
                                  paths=ctx.manifest.paths("test"), seed=ctx.cfg.seed,
                                  uncalibrated_probs=torch.softmax(logits, 1).numpy() if ctx.model.temperature != 1.0
                                  else None, temperature=ctx.model.temperature,
                                  positive=(ctx.model.decision or {}).get("positive"), threshold=ctx.model.threshold)
    if result.binary is not None and ctx.model.decision:
        result.binary.positive_rule = ctx.model.decision.get("positive_rule", "given")
    if ood is not None:
        from tlkit.evaluation.coverage import coverage_of

        result.ood = coverage_of(ood.score(features, plain).double().numpy(), result.y_pred == result.y_true,
                                 ood.threshold, method=ood.method, reject_rate=ood.reject_rate)
    return result


def _finish(ctx: RunContext, t_start: float) -> FinetuneResult:
    """Calibrate and save the model, evaluate it on the test split, write the report and the timings."""
    cfg, model, run_dir = ctx.cfg, ctx.model, ctx.run.path
    calibrate(ctx.model, ctx.predictor, ctx.activations, ctx.manifest.labels("val"), ctx.reporter)
    choose_tta(ctx)  # before the threshold and the OOD fit, which see the final probabilities' model
    decide(ctx)  # two classes: the positive class, and the threshold for a target recall or precision
    fit_run_ood(ctx.model, ctx.predictor, ctx.activations, ctx.manifest, ctx.reporter, timings=ctx.timings)
    timings = {"total_seconds": time.perf_counter() - t_start, **ctx.timings}
    if ctx.dist.is_main:
        model.save(run_dir, extra={"recipe": cfg.recipe.name, "timings": timings, "kept": ctx.kept})
    evaluation = evaluate_test(ctx)
    timings["total_seconds"] = time.perf_counter() - t_start
    if evaluation is not None:
        t_report = time.perf_counter()
        _write_report(ctx, evaluation, timings)
        timings["report_seconds"] = time.perf_counter() - t_report
        timings["total_seconds"] = time.perf_counter() - t_start
    if ctx.dist.is_main:
        atomic_write_text(ctx.run.timings, json.dumps(timings, indent=2))
        ctx.reporter.message(finished_checkpoint(ctx.run.checkpoint, keep=cfg.keep_checkpoint))
    return FinetuneResult(model, run_dir, cfg, ctx.manifest, ctx.history, evaluation, timings, rank=ctx.dist.rank,
                          doctor=load_findings(ctx.run.doctor) if ctx.dist.is_main else None)


def _kept_text(kept: dict) -> str:
    """``stage 2 (finetune), epoch 5``, or what a stage kept when no epoch beat its starting point."""
    if not kept:
        return "the last epoch"
    where = (f"the weights stage {kept['stage']} ({kept['stage_kind']}) started from" if kept["epoch"] == "start"
             else f"stage {kept['stage']} ({kept['stage_kind']}), epoch {kept['epoch']}")
    if "not_beaten_by" in kept:
        where += f"; {kept['not_beaten_by']} never beat them on validation, so its weights were not kept"
    return where


def _write_report(ctx: RunContext, evaluation: Any, timings: dict) -> None:
    from tlkit.evaluation.history import TrainingHistory
    from tlkit.report.crossval_html import run_crossval_sections
    from tlkit.report.doctor_html import run_section_html
    from tlkit.report.files import write_run_report
    from tlkit.report.run_info import run_header

    findings = load_findings(ctx.run.doctor)
    write_run_report(evaluation, ctx.model, ctx.run.path, title=f"tlkit: {Path(ctx.cfg.data.path).name}",
                     extra={**run_header(ctx.cfg, ctx.manifest, ctx.history, ctx.kept, timings, ctx.model, ctx.device,
                                         _kept_text(ctx.kept)), "test-time augmentation": tta_text(ctx.model.tta)},
                     history=TrainingHistory.from_records(ctx.history, ctx.kept), data_root=ctx.manifest.root,
                     sections=(() if findings is None else (run_section_html(findings, ctx.cfg.data.path),))
                     + run_crossval_sections(ctx.run))
