"""Faults from the reliability page: disk full, GPU out of memory, Ctrl-C in a real process."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tlkit.errors import ResourceError
from tlkit.train.checkpoint import load_checkpoint, save_checkpoint


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_full_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"format": "tlkit-checkpoint", "w": torch.arange(10)}, target)
    before = _sha(target)

    real_fsync = os.fsync

    def full(fd: int) -> None:  # the data does not fit: the kernel says so at flush time
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ResourceError, match="disk full while writing .*last.pt"):
        save_checkpoint({"format": "tlkit-checkpoint", "w": torch.zeros(1000)}, target)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _sha(target) == before
    assert load_checkpoint(target)["w"].tolist() == list(range(10))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_gpu_out_of_memory_names_the_batch_size(tiny_data, fast_kwargs, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import tlkit.train.pipeline as train

    def oom(ctx, index, stage, resume):  # noqa: ANN001, ANN202
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "run_stage", oom)
    with pytest.raises(ResourceError, match=r"batch size 16.*--batch-size 8"):
        train.finetune(tiny_data, **{**fast_kwargs, "batch_size": 16})


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_a_real_process_exits_130_with_a_resume_hint(tiny_data, tmp_path: Path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    # one stage on images (tens of ms an epoch), long enough that it cannot end before the signal
    recipe = tmp_path / "slow.yaml"
    recipe.write_text("stages:\n  - kind: finetune\n    unfreeze: all\n    epochs: 60\n    lr: 0.001\n"
                      "    early_stopping: 1000\n")
    env = {**os.environ, "TLKIT_CACHE_DIR": str(tmp_path / "cache"), "TLKIT_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tlkit", "finetune", str(tiny_data), "-b", "timm:test_resnet", "--no-pretrained",
           "--image-size", "32", "--workers", "0", "--out", str(run), "--recipe", str(recipe)]
    # a shell without job control starts background commands with SIGINT ignored, and Python then never
    # installs its KeyboardInterrupt handler: give the child the default a terminal's Ctrl-C meets
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoint, metrics = run / "checkpoints" / "last.pt", run / "metrics.jsonl"

    def epochs_logged() -> int:
        return len(metrics.read_text().splitlines()) if metrics.is_file() else 0

    deadline = time.time() + 120
    while not (checkpoint.exists() and epochs_logged() >= 2) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists() and proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert err.count("interrupted") == 1, err[-2000:]  # said once (the CLI's line), not by the run and the CLI
    state = load_checkpoint(checkpoint)  # the checkpoint on disk is whole
    assert state["format"] == "tlkit-checkpoint"
    # the final checkpoint holds every finished epoch, not just the last periodic save (epoch 1)
    logged = (run / "metrics.jsonl").read_text().splitlines()
    assert state["epoch"] >= 1 and len(state["history"]) == len(logged) == state["epoch"] + 1
    # the printed hint is the whole command: the run's options come from its config.yaml
    hint = re.search(r"continue with: (.+?)  \(the run's options", " ".join(err.split("\n"))).group(1)
    words = shlex.split(hint)
    assert words[0] == "tlkit" and "--epochs" not in words
    resumed = subprocess.run([sys.executable, "-m", *words], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "model.safetensors").is_file()


# --------------------------------------------------------------------------- issue 14: disk full, file modes


def test_disk_full_while_saving_a_checkpoint_is_a_resource_error(tmpfs) -> None:  # noqa: ANN001
    small = tmpfs("size=256k")
    path = small / "last.pt"
    save_checkpoint({"format": "tlkit-checkpoint", "w": torch.zeros(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(ResourceError, match=r"disk full while writing .*last\.pt.*intact"):
        save_checkpoint({"format": "tlkit-checkpoint", "w": torch.zeros(1_000_000)}, path)  # 4 MB > 256 kB
    assert path.read_bytes() == before and sorted(p.name for p in small.iterdir()) == ["last.pt"]


def test_disk_full_inside_torch_save_is_a_resource_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no file system can be mounted: the real torch.save writing into a handle that runs out of space
    (torch wraps the OSError in its own RuntimeError)."""
    import io

    import tlkit._io as io_mod

    real_fdopen = os.fdopen

    class Full(io.FileIO):
        def write(self, data):  # noqa: ANN001, ANN202
            if self.tell() + len(data) > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(io_mod.os, "fdopen", lambda fd, mode: Full(fd, "wb") if "b" in mode else real_fdopen(fd, mode))
    with pytest.raises(ResourceError, match="disk full"):
        save_checkpoint({"format": "tlkit-checkpoint", "w": torch.zeros(100_000)}, tmp_path / "last.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from tlkit._io import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.html", "<p>for colleagues</p>")
        save_checkpoint({"format": "tlkit-checkpoint"}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == mode
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == mode
