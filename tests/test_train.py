"""Tests for tlkit.train.pipeline (the stage loop) and tlkit.train.checkpoint (atomic, safe, resumable state).

Every run uses a randomly initialised ``timm:test_resnet`` on 32 px colour-coded images written in
tmp_path, with its run directory and feature cache in tmp_path too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import tlkit.models.transfer as model_mod
import tlkit.train.pipeline as train_mod
import tlkit.train.stage as stage_mod
from tlkit._io import TMP_MARK, clean_stale_temp_files
from tlkit._seeding import rng_state, set_rng_state
from tlkit.config import StageConfig, load_recipe
from tlkit.errors import CheckpointError, ConfigError, DataError, DivergedError
from tlkit.models.builder import build
from tlkit.train.checkpoint import load_checkpoint, save_checkpoint
from tlkit.train.feature_store import FeatureStore
from tlkit.train.losses import classification_loss
from tlkit.train.pipeline import CHECKPOINT, finetune
from tlkit.train.validation import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUILT_IN = ("linear-probe", "probe-then-finetune", "gradual-unfreeze", "full-finetune", "few-shot")

#: probe, then the last layer group on cached activations with augmented views; an MLP head with
#: dropout, so the global RNG state matters for an exact resume
CACHED_RECIPE = {"name": "cached", "stages": [
    {"kind": "probe", "epochs": 3, "lr": 0.01},
    {"kind": "finetune", "unfreeze": 1, "epochs": 3, "lr": 0.005, "augment": "light", "views": 2},
]}
#: probe, then the whole backbone on images with augmentation
IMAGE_RECIPE = {"name": "images", "stages": [
    {"kind": "probe", "epochs": 1, "lr": 0.01},
    {"kind": "finetune", "unfreeze": "all", "epochs": 3, "lr": 0.002, "augment": "light"},
]}
DROPOUT_HEAD = dict(head="mlp", hidden_dim=16, dropout=0.2)


def _strict_json(line: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name} in {line!r}")

    return json.loads(line, parse_constant=refuse)


def read_metrics(run_dir: Path, drop: tuple[str, ...] = ("seconds",)) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in _strict_json(line).items() if k not in drop} for line in lines]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Recorder:
    """A reporter that records messages and epochs and can raise KeyboardInterrupt at one epoch."""

    def __init__(self, interrupt_at: tuple[int, int] | None = None, on_message=None) -> None:  # noqa: ANN001
        self.interrupt_at = interrupt_at
        self.messages: list[str] = []
        self.records: list[dict] = []
        self.on_message = on_message

    def message(self, text: str) -> None:
        self.messages.append(text)
        if self.on_message is not None:
            self.on_message(text)

    def task(self, description: str, total: int):  # noqa: ANN201
        return None

    def epoch(self, record: dict) -> None:
        self.records.append(record)
        if self.interrupt_at == (record["stage"], record["epoch"]):
            raise KeyboardInterrupt


def _no_report(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
    return None


@pytest.fixture(autouse=True)
def _skip_html_reports(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plots are most of a tiny run's time; only the end-to-end recipe tests write the real report."""
    if request.node.originalname != "test_built_in_recipe_runs_end_to_end":
        import tlkit.report.files

        monkeypatch.setattr(tlkit.report.files, "write_report", _no_report)


# --------------------------------------------------------------------------- 1. every built-in recipe


@pytest.mark.parametrize("recipe", BUILT_IN)
def test_built_in_recipe_runs_end_to_end(recipe: str, tiny_data: Path, fast_kwargs: dict) -> None:
    res = finetune(tiny_data, recipe=recipe, epochs=2, **fast_kwargs)
    run_dir = Path(fast_kwargs["out"])
    assert res.run_dir == run_dir
    for name in ("config.yaml", "splits.json", "metrics.jsonl", "model.safetensors", "model.json", CHECKPOINT,
                 "metrics.json", "report.html", "timings.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob(f"*{TMP_MARK}*"))
    n_stages = len(load_recipe(recipe).stages)
    records = read_metrics(run_dir, drop=())
    assert len(records) == 2 * n_stages == len(res.history)
    assert [(r["stage"], r["epoch"]) for r in records] == [(s, e) for s in range(n_stages) for e in range(2)]
    for r in records:
        assert {"train_loss", "lr", "val_loss", "val_accuracy", "seconds", "step"} <= set(r)
        assert math.isfinite(r["train_loss"])
    state = load_checkpoint(run_dir / CHECKPOINT)
    assert (state["stage"], state["epoch"], state["stage_done"]) == (n_stages - 1, 1, True)
    assert json.loads((run_dir / "metrics.json").read_text())

    # the saved model, loaded back, predicts exactly what the evaluation measured
    ev = res.evaluation
    assert ev is not None and len(ev.paths) == len(res.manifest.paths("test")) > 0
    loaded = model_mod.load(run_dir)
    assert loaded.classes == res.manifest.classes == ["blue", "green", "red"]
    np.testing.assert_allclose(loaded.predict(ev.paths).probs, ev.probs, atol=1e-4)
    np.testing.assert_allclose(res.model.predict(ev.paths).probs, loaded.predict(ev.paths).probs, atol=1e-6)
    assert_same_weights({k: v.cpu() for k, v in res.model.state_dict().items()}, weights(run_dir))
    assert 0.0 <= ev.accuracy <= 1.0


def test_colour_classes_are_learned(tiny_data: Path, fast_kwargs: dict) -> None:
    """The toy task is learnable: a longer probe beats chance clearly (guards against a no-op trainer)."""
    res = finetune(tiny_data, recipe={"stages": [{"kind": "probe", "epochs": 30, "lr": 0.03}]}, **fast_kwargs)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.evaluation.accuracy >= 2 / 3


# --------------------------------------------------------------------------- 3. boundary caching


def test_finetune_stage_trains_on_cached_activations(tiny_data: Path, fast_kwargs: dict,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"stem": 0, "last": 0}
    phase = {"name": "setup"}
    per_phase: dict[str, dict[str, int]] = {}
    epochs_kinds: list[str] = []

    real_build = train_mod.build_backbone

    def build_with_hooks(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        bb = real_build(*args, **kwargs)

        def hook(name):  # noqa: ANN001, ANN202
            def count(module, inputs):  # noqa: ANN001, ANN202
                calls[name] += 1
                per_phase.setdefault(phase["name"], {"stem": 0, "last": 0})[name] += 1
            return count

        for m in bb.group_modules(0):
            m.register_forward_pre_hook(hook("stem"))
        bb.group_modules(bb.num_groups - 1)[0].register_forward_pre_hook(hook("last"))
        return bb

    def wrap(name, fn):  # noqa: ANN001, ANN202
        def inner(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            before, phase["name"] = phase["name"], name
            try:
                return fn(*args, **kwargs)
            finally:
                phase["name"] = before
        return inner

    def epochs_of(kind, fn):  # noqa: ANN001, ANN202
        def epoch(ctx, plan, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            epochs_kinds.append(f"{plan.stage.kind}:{kind}")
            return fn(ctx, plan, *args, **kwargs)
        return wrap("epoch", epoch)

    monkeypatch.setattr(train_mod, "build_backbone", build_with_hooks)
    monkeypatch.setattr(stage_mod, "epoch_on_activations", epochs_of("cached", stage_mod.epoch_on_activations))
    monkeypatch.setattr(stage_mod, "epoch_on_images", epochs_of("images", stage_mod.epoch_on_images))
    monkeypatch.setattr(Predictor, "validate", wrap("validate", Predictor.validate))
    monkeypatch.setattr(train_mod, "evaluate_test", wrap("test", train_mod.evaluate_test))
    monkeypatch.setattr(FeatureStore, "get", wrap("extract", FeatureStore.get))
    import tlkit.report.files

    real_report = tlkit.report.files.write_report

    def report(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        phase["name"] = "report"  # Grad-CAM of the mistakes runs the whole model on their images
        try:
            return real_report(*args, **kwargs)
        finally:
            phase["name"] = "setup"

    monkeypatch.setattr(tlkit.report.files, "write_report", report)
    import tlkit.models.explain

    real_explainer = tlkit.models.explain.explainer

    def explainer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        phase["name"] = "report"  # it finds the Grad-CAM layer with one forward pass
        try:
            return real_explainer(*args, **kwargs)
        finally:
            phase["name"] = "setup"

    monkeypatch.setattr(tlkit.models.explain, "explainer", explainer)

    recipe = {"stages": [{"kind": "probe", "epochs": 1}, {"kind": "finetune", "unfreeze": 1, "epochs": 2,
                                                           "augment": "light", "views": 1, "lr": 0.01}]}
    res = finetune(tiny_data, recipe=recipe, **fast_kwargs)

    assert epochs_kinds == ["probe:cached", "finetune:cached", "finetune:cached"]
    # the frozen prefix ran once per split (and view), for extraction only: train, val, augmented view, test
    assert per_phase["extract"]["stem"] > 0
    assert per_phase.get("setup", {}).get("stem", 0) == 0
    assert set(per_phase) <= {"setup", "extract", "epoch", "validate", "test", "report"}
    for name in ("epoch", "validate", "test"):
        assert per_phase.get(name, {}).get("stem", 0) == 0, f"the frozen stem ran during {name}"
    assert per_phase["epoch"]["last"] > 0  # the unfrozen group does run on the cached activations

    # the frozen prefix did not change at all (parameters and BatchNorm statistics)
    torch.manual_seed(0)
    fresh = build("timm:test_resnet", pretrained=False)
    trained = res.model.backbone
    for g in range(trained.num_groups - 1):
        for m_new, m_old in zip(trained.group_modules(g), fresh.group_modules(g)):
            assert_same_weights(m_new.state_dict(), m_old.state_dict())
    last_new = trained.group_modules(trained.num_groups - 1)[0].state_dict()
    last_old = fresh.group_modules(fresh.num_groups - 1)[0].state_dict()
    assert any(not torch.equal(last_new[k], last_old[k]) for k in last_new)

    # through images (load + predict) the model gives what the cached path measured
    loaded = model_mod.load(res.run_dir)
    np.testing.assert_allclose(loaded.predict(res.evaluation.paths).probs, res.evaluation.probs, atol=1e-4)


# --------------------------------------------------------------------------- 4. resume


def _run(data: Path, out: Path, cache: Path, recipe: dict, reporter=None, **kw: Any) -> train_mod.FinetuneResult:  # noqa: ANN001
    options = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0, batch_size=8,
                   out=str(out), cache_dir=str(cache), **DROPOUT_HEAD)
    return finetune(data, recipe=recipe, reporter=reporter, **{**options, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tlkit.report.files

    root = tmp_path_factory.mktemp("uninterrupted")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tlkit.report.files, "write_report", _no_report)
        for name, recipe in (("cached", CACHED_RECIPE), ("images", IMAGE_RECIPE)):
            res = _run(tiny_data, root / name, root / f"cache-{name}", recipe)
            (root / name / "accuracy.json").write_text(json.dumps(res.evaluation.accuracy))
            runs[name] = root / name
    return runs


@pytest.mark.parametrize("recipe_name, interrupt_at", [
    ("cached", (0, 1)),   # mid-probe
    ("cached", (1, 0)),   # first epoch of the finetune stage
    ("cached", (1, 1)),   # mid-finetune, augmented views and dropout
    ("images", (1, 1)),   # mid-finetune on images (augmentation drawn from the global RNG)
])
def test_interrupted_and_resumed_run_equals_uninterrupted(recipe_name: str, interrupt_at: tuple[int, int],
                                                          tiny_data: Path, tmp_path: Path,
                                                          uninterrupted: dict[str, Path]) -> None:
    recipe = CACHED_RECIPE if recipe_name == "cached" else IMAGE_RECIPE
    out, cache = tmp_path / "run", tmp_path / "cache"
    reporter = Recorder(interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, out, cache, recipe, reporter)
    # Ctrl-C came after the epoch finished (in the progress display): that epoch is kept, log and checkpoint agree
    assert read_metrics(out)[-1]["epoch"] == interrupt_at[1]
    state = load_checkpoint(out / CHECKPOINT)
    assert (state["stage"], state["epoch"]) == interrupt_at
    assert len(state["history"]) == len(read_metrics(out))
    assert any("--resume" in m for m in reporter.messages)
    assert not (out / "model.safetensors").exists()

    resumed = Recorder()
    res = _run(tiny_data, out, cache, recipe, resumed, resume=True)
    assert any(m.startswith("resuming at stage") for m in resumed.messages)
    # only the epochs after the checkpoint ran again
    base = uninterrupted[recipe_name]
    order = [(r["stage"], r["epoch"]) for r in read_metrics(base)]
    assert (resumed.records[0]["stage"], resumed.records[0]["epoch"]) == order[order.index(interrupt_at) + 1]
    assert_same_weights(weights(out), weights(base))
    assert read_metrics(out) == read_metrics(base)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in res.history] == read_metrics(base)
    assert res.evaluation.accuracy == json.loads((base / "accuracy.json").read_text())


def test_resume_after_the_last_epoch_only_saves_and_evaluates(tiny_data: Path, tmp_path: Path,
                                                              uninterrupted: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(model_mod.TransferModel, "save", boom)
        with pytest.raises(KeyboardInterrupt):
            _run(tiny_data, out, cache, CACHED_RECIPE)
    reporter = Recorder()
    _run(tiny_data, out, cache, CACHED_RECIPE, reporter, resume=True)
    assert reporter.records == []
    assert_same_weights(weights(out), weights(uninterrupted["cached"]))


def test_rng_state_round_trip_includes_cached_gaussians() -> None:
    import random

    random.gauss(0, 1)
    np.random.normal()
    torch.rand(1)
    state = rng_state()
    expected = (random.gauss(0, 1), random.random(), np.random.normal(), np.random.random(), torch.rand(2))
    random.random(), np.random.normal(), np.random.normal(), torch.rand(5)
    # through a real checkpoint file (weights_only load)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tlkit-rng-{os.getpid()}.pt"
    try:
        save_checkpoint({"format": "tlkit-checkpoint", "rng": state}, path)
        set_rng_state(load_checkpoint(path)["rng"])
    finally:
        path.unlink(missing_ok=True)
    got = (random.gauss(0, 1), random.random(), np.random.normal(), np.random.random(), torch.rand(2))
    assert got[:4] == expected[:4]
    assert torch.equal(got[4], expected[4])


# --------------------------------------------------------------------------- 5. run directories


def test_existing_run_dir_is_refused_then_overwritten(tiny_data: Path, tmp_path: Path, fast_kwargs: dict) -> None:
    out = Path(fast_kwargs["out"])
    finetune(tiny_data, recipe="linear-probe", epochs=1, **fast_kwargs)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError) as info:
        finetune(tiny_data, recipe="linear-probe", epochs=1, **fast_kwargs)
    assert str(out) in str(info.value) and "--overwrite" in str(info.value)
    assert (out / "model.safetensors").read_bytes() == before
    # a file the run did not write stops --overwrite, and nothing is deleted
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="precious.txt"):
        finetune(tiny_data, recipe="linear-probe", epochs=2, overwrite=True, **fast_kwargs)
    assert (out / "precious.txt").read_text() == "keep me" and (out / "model.safetensors").read_bytes() == before
    (out / "precious.txt").unlink()
    finetune(tiny_data, recipe="few-shot", epochs=1, overwrite=True, **fast_kwargs)
    assert (out / "model.safetensors").is_file()
    assert "few-shot" in (out / "config.yaml").read_text()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_data: Path, fast_kwargs: dict) -> None:
    out = Path(fast_kwargs["out"])
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "config.yaml").write_text("a common file name is no proof of a run\n")
    with pytest.raises(ConfigError, match="not a tlkit run folder"):
        finetune(tiny_data, recipe="linear-probe", epochs=1, overwrite=True, **fast_kwargs)
    assert (out / "thesis.tex").read_text() == "years of work"


def test_resume_without_a_checkpoint_is_a_checkpoint_error(tiny_data: Path, fast_kwargs: dict) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume") as info:
        finetune(tiny_data, recipe="linear-probe", epochs=1, resume=True, **fast_kwargs)
    assert fast_kwargs["out"] in str(info.value)
    out = Path(fast_kwargs["out"])
    out.mkdir(exist_ok=True)
    (out / "config.yaml").write_text("x: 1\n")
    with pytest.raises(CheckpointError):
        finetune(tiny_data, recipe="linear-probe", epochs=1, resume=True, **fast_kwargs)


def test_resume_from_a_truncated_checkpoint_never_starts_fresh(tiny_data: Path, fast_kwargs: dict) -> None:
    out = Path(fast_kwargs["out"])
    finetune(tiny_data, recipe="linear-probe", epochs=1, **fast_kwargs)
    ckpt = out / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError) as info:
        finetune(tiny_data, recipe="linear-probe", epochs=1, resume=True, **fast_kwargs)
    assert str(ckpt) in str(info.value)
    assert (out / "metrics.jsonl").read_text() == metrics


# --------------------------------------------------------------------------- 6. checkpoint safety

FULL_BYTES = 64 * 256 * 1024 * 4  # the big checkpoint's tensor data: 64 MiB


def _killable_writer(path: str, ready) -> None:  # noqa: ANN001
    """Runs in a forked child: write a big checkpoint with a long pause between "fully written" and the rename."""
    real_replace = os.replace

    def slow_replace(a, b):  # noqa: ANN001, ANN202
        time.sleep(60)
        real_replace(a, b)

    os.replace = slow_replace
    state = {"format": "tlkit-checkpoint", "big": [torch.full((256, 1024), float(i)) for i in range(64)]}
    ready.set()
    save_checkpoint(state, path)
    os._exit(0)


def _tmp_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"*{TMP_MARK}*"))


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A writer process is SIGKILLed at three points of save_checkpoint: right away, while the temp file
    grows, and once it is complete but not yet renamed. The previous checkpoint stays bit-identical."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the child starts with torch imported: no 5 s import per kill
    previous = {"format": "tlkit-checkpoint", "epoch": 3, "w": torch.arange(10.0)}
    leftovers_seen = {}
    for when in ("immediately", "mid-write", "before-rename"):
        folder = tmp_path / when / "checkpoints"
        path = folder / "last.pt"
        save_checkpoint(previous, path)
        digest = sha256(path)
        ready = ctx.Event()
        proc = ctx.Process(target=_killable_writer, args=(str(path), ready), daemon=True)
        proc.start()
        try:
            assert ready.wait(60)
            deadline = time.monotonic() + 60
            if when == "mid-write":
                while _tmp_size(folder) == 0 and time.monotonic() < deadline:
                    time.sleep(0.001)
            elif when == "before-rename":
                while _tmp_size(folder) < FULL_BYTES and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.1)
            assert proc.is_alive(), "the writer finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
        assert proc.exitcode == -signal.SIGKILL
        assert sha256(path) == digest, when
        state = load_checkpoint(path)
        assert state["epoch"] == 3 and torch.equal(state["w"], previous["w"])
        leftovers = list(folder.glob(f"*{TMP_MARK}*"))
        leftovers_seen[when] = _tmp_size(folder)
        removed = clean_stale_temp_files(folder)
        assert sorted(removed) == sorted(leftovers)
        assert not list(folder.glob(f"*{TMP_MARK}*"))
        assert sha256(path) == digest
    assert leftovers_seen["before-rename"] >= FULL_BYTES  # the kill did land after a complete write
    assert leftovers_seen["mid-write"] > 0


def test_clean_stale_temp_files_only_touches_temp_files(tmp_path: Path) -> None:
    save_checkpoint({"format": "tlkit-checkpoint"}, tmp_path / "a" / "last.pt")
    (tmp_path / "a" / f"last.pt{TMP_MARK}123").write_bytes(b"x")
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / "a" / "deep" / f"features.safetensors{TMP_MARK}9").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("keep")
    removed = clean_stale_temp_files(tmp_path / "a")
    assert len(removed) == 2
    assert sorted(p.name for p in (tmp_path / "a").rglob("*") if p.is_file()) == ["last.pt", "notes.txt"]
    assert clean_stale_temp_files(tmp_path / "missing") == []


def test_starting_a_run_cleans_stale_temp_files(tiny_data: Path, fast_kwargs: dict) -> None:
    out = Path(fast_kwargs["out"])
    finetune(tiny_data, recipe="linear-probe", epochs=1, **fast_kwargs)
    stale = out / "checkpoints" / f"last.pt{TMP_MARK}x1y2"
    stale.write_bytes(b"partial")
    finetune(tiny_data, recipe="linear-probe", epochs=1, resume=True, **fast_kwargs)
    assert not stale.exists()


def test_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "tlkit-checkpoint", "w": torch.randn(100, 100)}, path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a tlkit checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, tiny_data: Path, fast_kwargs: dict) -> None:
    marker = tmp_path / "PWNED"
    evil = {"format": "tlkit-checkpoint", "payload": _Payload(marker)}
    path = tmp_path / "evil.pt"
    torch.save(evil, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # a raw pickle (not a torch zip) too
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()
    # and through resume
    out = Path(fast_kwargs["out"])
    finetune(tiny_data, recipe="linear-probe", epochs=1, **fast_kwargs)
    torch.save(evil, out / CHECKPOINT)
    with pytest.raises(CheckpointError):
        finetune(tiny_data, recipe="linear-probe", epochs=1, resume=True, **fast_kwargs)
    assert not marker.exists()
    # sanity: the payload does run when unpickled unsafely, so the test can fail
    pickle.loads(raw.read_bytes())
    assert marker.exists()


# --------------------------------------------------------------------------- 7. class weighting


def test_class_weights_change_the_loss() -> None:
    stage = StageConfig(kind="probe")
    logits = torch.tensor([[2.0, 0.1, 0.1], [2.0, 0.2, 0.1], [1.5, 0.3, 0.1], [0.1, 0.2, 1.0]])
    targets = torch.tensor([0, 0, 0, 2])  # imbalanced batch
    plain = classification_loss(logits, targets, label_smoothing=stage.label_smoothing)
    weights_ = torch.tensor([4 / 9, 1.0, 4 / 3])
    weighted = classification_loss(logits, targets, label_smoothing=stage.label_smoothing, class_weights=weights_)
    assert not torch.isclose(plain, weighted)
    per = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(weighted, (per * weights_[targets]).sum() / weights_[targets].sum())
    # soft targets (mixup) are weighted too
    soft = torch.nn.functional.one_hot(targets, 3).float()
    assert not torch.isclose(classification_loss(logits, soft), classification_loss(logits, soft, class_weights=weights_))


@pytest.fixture
def imbalanced(tmp_path: Path, make_color_dataset) -> Path:  # noqa: ANN001
    return make_color_dataset(tmp_path / "imbalanced", {"red": 18, "green": 5, "blue": 5})


def test_balanced_weighting_and_sampler_change_training(imbalanced: Path, tmp_path: Path) -> None:
    losses = {}
    for mode in ("none", "balanced", "sampler"):
        res = finetune(imbalanced, recipe="linear-probe", epochs=1, class_weighting=mode, backbone="timm:test_resnet",
                       pretrained=False, image_size=32, workers=0, batch_size=8, out=str(tmp_path / f"run-{mode}"),
                       cache_dir=str(tmp_path / "cache"))
        (record,) = read_metrics(res.run_dir)
        assert math.isfinite(record["train_loss"])
        losses[mode] = record["train_loss"]
        assert (res.run_dir / "model.safetensors").is_file()
    assert losses["balanced"] != pytest.approx(losses["none"], rel=1e-6)
    assert losses["sampler"] != pytest.approx(losses["none"], rel=1e-6)


def test_sampler_on_an_image_stage_is_a_config_error(tiny_data: Path, fast_kwargs: dict) -> None:
    recipe = {"stages": [{"kind": "finetune", "unfreeze": "all", "epochs": 1, "class_weighting": "sampler"}]}
    with pytest.raises(ConfigError, match=r"stages\[0\].class_weighting.*balanced"):
        finetune(tiny_data, recipe=recipe, **fast_kwargs)
    assert not Path(fast_kwargs["out"]).exists()  # refused before the run directory was made


# --------------------------------------------------------------------------- 8. divergence


def test_nan_loss_raises_diverged_error_and_keeps_the_last_checkpoint(tiny_data: Path, fast_kwargs: dict) -> None:
    out = Path(fast_kwargs["out"])
    seen = {}

    def on_message(text: str) -> None:
        if text.startswith("stage 2/2"):
            seen["sha"] = sha256(out / CHECKPOINT)

    recipe = {"stages": [{"kind": "probe", "epochs": 2}, {"kind": "finetune", "unfreeze": 1, "epochs": 3}]}
    with pytest.raises(DivergedError) as info:
        finetune(tiny_data, recipe=recipe, reporter=Recorder(on_message=on_message), **{"stages.1.lr": 1e30},
                 **fast_kwargs)
    msg = str(info.value)
    for part in ("stage 2", "epoch 1", "step", "learning rate", "e+"):
        assert part in msg, msg
    assert sha256(out / CHECKPOINT) == seen["sha"]
    state = load_checkpoint(out / CHECKPOINT)
    assert (state["stage"], state["stage_done"]) == (0, True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(read_metrics(out)) == 2  # nothing logged from the diverged stage
    assert not (out / "model.safetensors").exists()


def test_nan_weights_after_the_last_step_of_an_epoch_are_never_saved(tiny_data: Path, fast_kwargs: dict) -> None:
    """One step per epoch: the loss of that step is finite, the weights it leaves are not."""
    out = Path(fast_kwargs["out"])
    with pytest.raises(DivergedError, match=r"stage 1.*epoch 2.*learning rate") as info:
        finetune(tiny_data, recipe="linear-probe", **{**fast_kwargs, "batch_size": 64}, epochs=3, lr=1e30)
    assert "NaN" in str(info.value) or "nan" in str(info.value)
    state = load_checkpoint(out / CHECKPOINT)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(read_metrics(out)) == 1


# --------------------------------------------------------------------------- 11. determinism


def test_same_seed_same_weights_and_metrics(tiny_data: Path, tmp_path: Path) -> None:
    # the second run finds the first run's features in the cache: that must not change anything
    cache = tmp_path / "cache"
    a = _run(tiny_data, tmp_path / "a", cache, CACHED_RECIPE)
    b = _run(tiny_data, tmp_path / "b", cache, CACHED_RECIPE)
    assert_same_weights(weights(a.run_dir), weights(b.run_dir))
    assert read_metrics(a.run_dir) == read_metrics(b.run_dir)
    np.testing.assert_array_equal(a.evaluation.probs, b.evaluation.probs)


def test_same_seed_with_dataloader_workers_on_images(tiny_data: Path, tmp_path: Path) -> None:
    recipe = {"stages": [{"kind": "finetune", "unfreeze": "all", "epochs": 1, "lr": 0.002, "augment": "strong"}]}
    runs = [_run(tiny_data, tmp_path / name, tmp_path / f"cache-{name}", recipe, workers=2) for name in "ab"]
    assert_same_weights(weights(runs[0].run_dir), weights(runs[1].run_dir))
    assert read_metrics(runs[0].run_dir) == read_metrics(runs[1].run_dir)


def test_resume_with_dataloader_workers_on_images_equals_uninterrupted(tiny_data: Path, tmp_path: Path) -> None:
    """RELIABILITY: resumed == uninterrupted on CPU with DataLoader workers on (augmentation in workers)."""
    import tlkit.report.files

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tlkit.report.files, "write_report", _no_report)
        base = _run(tiny_data, tmp_path / "base", tmp_path / "cache-base", IMAGE_RECIPE, workers=2)
        out = tmp_path / "run"
        with pytest.raises(KeyboardInterrupt):
            _run(tiny_data, out, tmp_path / "cache", IMAGE_RECIPE, Recorder((1, 1)), workers=2)
        _run(tiny_data, out, tmp_path / "cache", IMAGE_RECIPE, Recorder(), workers=2, resume=True)
    assert_same_weights(weights(out), weights(base.run_dir))
    assert read_metrics(out) == read_metrics(base.run_dir)


def test_image_stages_decode_each_file_once_and_match_the_file_path(tiny_data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Image epochs read decoded tensors: 3 epochs load each train/val file once; eval input is unchanged."""
    import tlkit.data.images as data_mod
    from tlkit.data import DecodedImages, ImageDataset, scan
    from tlkit.transforms import eval_transform

    loads: dict[str, int] = {}
    real = data_mod.load_image

    def counting(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        loads[str(path)] = loads.get(str(path), 0) + 1
        return real(path, *a, **kw)

    monkeypatch.setattr(data_mod, "load_image", counting)
    recipe = {"stages": [{"kind": "finetune", "unfreeze": "all", "epochs": 3, "lr": 0.002, "augment": "light"}]}
    res = _run(tiny_data, tmp_path / "run", tmp_path / "cache", recipe)
    manifest = res.manifest
    for split in ("train", "val"):  # once by the data check before training, once decoded for all epochs
        assert [loads[p] for p in manifest.paths(split)] == [2] * len(manifest.paths(split)), split
    assert res.history[-1]["epoch"] == 2

    # the eval transform gives the same tensor from a decoded image as from the file (PIL path)
    monkeypatch.setattr(data_mod, "load_image", real)
    pre = res.model.preprocessing.with_size(24)  # resize 28 -> crop 24: the resize really runs
    paths = scan(tiny_data).paths("train")[:4]
    decoded = DecodedImages(DecodedImages.decode(paths, pre.resize_size, pre.interpolation), None, eval_transform(pre))
    from_files = ImageDataset(paths, None, eval_transform(pre))
    for i in range(len(paths)):
        torch.testing.assert_close(decoded[i][0], from_files[i][0], atol=0, rtol=0)


def test_compile_option_compiles_each_group_and_saves_plain_names(tiny_data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile runs through torch.compile (the "eager" backend here: TorchDynamo tracing, no C++ build)."""
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setenv("TLKIT_COMPILE_BACKEND", "eager")
    res = _run(tiny_data, tmp_path / "run", tmp_path / "cache", IMAGE_RECIPE, compile=True)
    bb = res.model.backbone
    compiled = [m for g in range(bb.num_groups) for m in bb.group_modules(g)
                if getattr(m, "_compiled_call_impl", None) is not None]
    assert compiled, "no layer group was compiled"
    # parameter names are those of an uncompiled model: the run loads back anywhere
    loaded = model_mod.load(res.run_dir)
    assert set(loaded.state_dict()) == set(res.model.state_dict())
    assert not any("_orig_mod" in k for k in loaded.state_dict())
    np.testing.assert_allclose(loaded.predict(res.evaluation.paths).probs, res.evaluation.probs, atol=1e-4)


def test_calibrated_validation_loss_ignores_confidence_scale_but_not_ranking() -> None:
    """Selection by val_calibrated_loss: an under- or overconfident copy of a model scores the same."""
    from tlkit.train.losses import calibrated_nll

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (300,), generator=gen)
    logits = torch.randn(300, 5, generator=gen)
    logits[torch.arange(300), labels] += 1.5
    base = calibrated_nll(torch.log_softmax(logits, 1), labels)
    assert base <= F.cross_entropy(logits, labels).item()
    for factor in (10 ** -0.5, 10 ** 0.5):  # on the temperature grid: the same minimum
        scaled = calibrated_nll(torch.log_softmax(logits * factor, 1), labels)
        assert scaled == pytest.approx(base, rel=1e-6)
        assert F.cross_entropy(logits * factor, labels).item() > base + 0.05  # the plain loss does move
    worse = logits.clone()
    worse[torch.arange(300), labels] -= 1.0  # ranks the right class lower: must score worse
    assert calibrated_nll(torch.log_softmax(worse, 1), labels) > base + 0.05


def test_default_workers_leave_a_small_cpu_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DataLoader worker on CPUs of up to 4 cores (bench section 1); some on big CPUs and on GPUs."""
    for cores, cpu, cuda in ((1, 0, 0), (2, 0, 1), (4, 0, 3), (8, 2, 7), (32, 4, 8)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert train_mod.default_workers(torch.device("cpu")) == cpu, cores
        assert train_mod.default_workers(torch.device("cuda")) == cuda, cores


# --------------------------------------------------------------------------- 12. time budget

#: probe, then the whole backbone on images with BatchNorm statistics updating, up to 8 epochs
BUDGET_RECIPE = {"name": "budget", "stages": [
    {"kind": "probe", "epochs": 1, "lr": 0.01},
    {"kind": "finetune", "unfreeze": "all", "epochs": 8, "lr": 0.002, "augment": "light", "train_bn": True,
     "max_minutes": 1.5},
]}


def _clock(seconds_per_call: float):  # noqa: ANN202
    """A budget clock that advances by ``seconds_per_call`` each time it is read (once at the stage's
    start, then once per training step): every step seems to take that long."""
    state = {"now": 0.0}

    def clock() -> float:
        state["now"] += seconds_per_call
        return state["now"]

    return clock


def test_time_budget_caps_the_epochs_and_finishes_the_schedule(tiny_data: Path, tmp_path: Path) -> None:
    reporter = Recorder()
    res = _run(tiny_data, tmp_path / "run", tmp_path / "cache", BUDGET_RECIPE, reporter, clock=_clock(10.0))
    finetune_epochs = [r for r in res.history if r["stage"] == 1]
    # 10 s per step and a few steps per epoch: 90 s hold a few of the 8 epochs
    expected = len(finetune_epochs)
    assert 2 <= expected < 8
    assert [r["epoch"] for r in finetune_epochs] == list(range(expected))
    assert finetune_epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ran to its end
    assert any(m.startswith("  time budget 1.5 min") and f"{expected} of 8 epochs" in m
               for m in reporter.messages), reporter.messages
    assert load_checkpoint(res.run_dir / CHECKPOINT)["epochs"] == expected

    # one epoch over the budget: still one epoch, and the message says what to do
    reporter = Recorder()
    res = _run(tiny_data, tmp_path / "slow", tmp_path / "cache", BUDGET_RECIPE, reporter, clock=_clock(1000.0))
    assert [r["epoch"] for r in res.history if r["stage"] == 1] == [0]
    assert any("1 of 8 epochs" in m and "--image-size" in m for m in reporter.messages), reporter.messages


def test_a_resumed_run_keeps_the_epochs_its_budget_gave(tiny_data: Path, tmp_path: Path) -> None:
    base = _run(tiny_data, tmp_path / "base", tmp_path / "cache-base", BUDGET_RECIPE, clock=_clock(10.0))
    kept = len([r for r in base.history if r["stage"] == 1])
    assert 2 <= kept < 8
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, out, tmp_path / "cache", BUDGET_RECIPE, Recorder((1, 0)), clock=_clock(10.0))
    # the machine seems faster now: a new measurement would allow all 8 epochs, the resumed run keeps its own
    _run(tiny_data, out, tmp_path / "cache", BUDGET_RECIPE, Recorder(), resume=True, clock=_clock(0.001))
    assert read_metrics(out) == read_metrics(base.run_dir)
    assert_same_weights(weights(out), weights(base.run_dir))


@pytest.mark.parametrize("unfreeze", ["all", 1])
def test_a_budget_that_holds_every_epoch_changes_nothing(unfreeze: int | str, tiny_data: Path,
                                                         tmp_path: Path) -> None:
    """Real clock, a budget far above the stage's cost: the run equals one without a budget
    (image stage and cached stage), so deciding late leaves the schedule as it would have been."""
    stages = [dict(s) for s in BUDGET_RECIPE["stages"]]
    stages[1].update(unfreeze=unfreeze, epochs=2, max_minutes=10_000)
    budget = {"name": "budget", "stages": stages}
    plain = {"name": "plain", "stages": [stages[0], {k: v for k, v in stages[1].items() if k != "max_minutes"}]}
    reporter = Recorder()
    a = _run(tiny_data, tmp_path / "a", tmp_path / "cache-a", budget, reporter)
    b = _run(tiny_data, tmp_path / "b", tmp_path / "cache-b", plain)
    note = [m for m in reporter.messages if m.startswith("  time budget")]
    assert len(note) == 1 and "2 of 2 epochs" in note[0] and " s per epoch measured" in note[0]
    assert_same_weights(weights(a.run_dir), weights(b.run_dir))
    assert read_metrics(a.run_dir) == read_metrics(b.run_dir)


def test_one_cycle_schedule_with_a_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.max_minutes.*cosine"):
        load_recipe({"stages": [{"kind": "finetune", "unfreeze": 1, "schedule": "onecycle", "max_minutes": 5}]})



def test_files_deleted_before_resume_are_named_or_skipped(tmp_path: Path, make_color_dataset, fast_kwargs: dict) -> None:  # noqa: ANN001
    data = make_color_dataset(tmp_path / "data", {"red": 6, "blue": 6})
    finetune(data, recipe="linear-probe", epochs=1, **fast_kwargs)
    manifest = json.loads((Path(fast_kwargs["out"]) / "splits.json").read_text())
    gone = manifest["splits"]["train"][0][0]
    (data / gone).unlink()
    with pytest.raises(DataError, match=gone):
        finetune(data, recipe="linear-probe", epochs=1, resume=True, **fast_kwargs)
    res = finetune(data, recipe="linear-probe", epochs=1, resume=True, skip_bad=True, **fast_kwargs)
    assert gone not in res.manifest.paths("train")[0]
    skipped = json.loads((Path(fast_kwargs["out"]) / "skipped.json").read_text())
    assert skipped == [{"path": gone, "reason": "missing"}]


def test_a_stage_that_never_beats_the_probe_says_so_and_the_report_names_the_kept_weights(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.report.files

    shown: dict = {}
    monkeypatch.setattr(tlkit.report.files, "write_report", lambda result, out, **kw: shown.update(kw["extra"]))
    recipe = {"name": "stuck", "stages": [{"kind": "probe", "epochs": 3, "lr": 0.05},
                                          {"kind": "finetune", "unfreeze": 1, "epochs": 2, "lr": 1e-12}]}
    lines: list[str] = []
    reporter = Recorder(on_message=lines.append)
    reporter.epoch = lambda record: lines.append(f"epoch {record['stage']}.{record['epoch']}")  # type: ignore[method-assign]
    res = _run(tiny_data, tmp_path / "run", tmp_path / "cache", recipe, reporter)
    assert any("kept the weights the stage started from" in m for m in reporter.messages), reporter.messages
    # what a stage kept is said after its last epoch's line, not between the last two (seen in a notebook)
    said = next(i for i, m in enumerate(lines) if "kept the weights the stage started from" in m)
    assert lines[said - 1] == "epoch 1.1" and not any(m.startswith("epoch 1.") for m in lines[said:]), lines
    kept = json.loads((res.run_dir / "model.json").read_text())["extra"]["kept"]
    assert kept["stage"] == 1 and kept["stage_kind"] == "probe" and kept["not_beaten_by"] == "stage 2 (finetune)"
    probe_epochs = [r for r in res.history if r["stage"] == 0]
    best = max(probe_epochs, key=lambda r: -r["val_calibrated_loss"])
    assert kept["epoch"] == best["epoch"] + 1 and kept["val_accuracy"] == best["val_accuracy"]
    assert "stage 2 (finetune) never beat them" in shown["kept weights"] and "validation (last epoch)" not in shown
    assert f"accuracy {best['val_accuracy']:.4f}" in shown["validation (kept weights)"]  # a readable row, not JSON
