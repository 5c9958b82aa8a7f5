"""Tests for tlkit.train.distributed: torchrun with 2 gloo CPU processes against 1 process, and the
``--nproc-per-node`` launcher.

The 2-process run is launched for real (``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m tlkit finetune ...``) on a randomly initialised ``timm:test_resnet`` at 32 px.

Why the two runs can be compared tightly: the recipe has a cached probe, a cached boundary stage
and a full fine-tune on images without augmentation or dropout, with a batch (64) larger than the
18 training images. Every rank then takes one step per epoch on its half of the images (18 is
even: the DistributedSampler pads nothing), and DDP's average of the two half-batch mean
gradients is the one-process full-batch mean gradient; cached stages run the same steps on every
rank. So the runs differ only by float rounding (different batch compositions and summation
order). Tolerances: 1e-4 on every logged loss and on every test probability, 1e-5 on every
weight, and at most one test image on accuracies (observed: identical accuracies, probabilities
within ~1e-7, weights within ~1e-7).
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
import yaml
from conftest import _make_color_dataset
from safetensors.torch import load_file
from typer.testing import CliRunner

import tlkit
import tlkit.train.distributed as distributed
from tlkit.cli import app
from tlkit.errors import ConfigError
from tlkit.train.pipeline import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: split per class (15 % val, 15 % test): 6/2/2, 6/2/2, 6/1/1 -> train 18 (even), val 5 and test 5 (odd:
#: a shard padded with a duplicate would count one image twice)
COUNTS = {"red": 10, "green": 10, "blue": 8}
N_TEST = 5
RECIPE = {"name": "ddp-test", "stages": [
    {"kind": "probe", "epochs": 3, "lr": 0.05},
    {"kind": "finetune", "unfreeze": 1, "epochs": 1, "lr": 0.01},
    # a time budget that holds every epoch: the ranks must agree on it without changing anything
    {"kind": "finetune", "unfreeze": "all", "epochs": 2, "lr": 0.005, "max_minutes": 10000},
]}
OPTIONS = ["-b", "timm:test_resnet", "--no-pretrained", "--image-size", "32", "--workers", "0", "--batch-size", "64"]
REPO = Path(tlkit.__file__).resolve().parent.parent


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict:  # noqa: ANN001
    root = tmp_path_factory.mktemp("ddp")
    data = _make_color_dataset(root / "colors", COUNTS)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))

    one = finetune(data, recipe=str(recipe), backbone="timm:test_resnet", pretrained=False, image_size=32, workers=0,
                   batch_size=64, out=str(root / "one"), cache_dir=str(root / "cache-one"))

    work = root / "work"  # the processes' working directory: nothing may appear here
    work.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "tlkit", "finetune", str(data), *OPTIONS, "--recipe", str(recipe),
           "--out", str(root / "two"), "--cache-dir", str(root / "cache-two")]
    proc = subprocess.run(cmd, cwd=work, env=_child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {"root": root, "one": one, "two": root / "two", "proc": proc, "work": work}


def test_two_gloo_processes_give_the_metrics_of_one(runs: dict) -> None:
    one, two = runs["one"], runs["two"]
    a, b = _metrics(one.run_dir), _metrics(two)
    assert [(r["stage"], r["epoch"], r["step"]) for r in a] == [(r["stage"], r["epoch"], r["step"]) for r in b]
    assert len(b) == sum(s["epochs"] for s in RECIPE["stages"])
    assert runs["proc"].stderr.count("time budget 10000 min") == 1, runs["proc"].stderr[-3000:]  # rank 0 says it
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-4), (ra, rb)
        for key in ("val_accuracy", "val_balanced_accuracy"):
            assert abs(rb[key] - ra[key]) <= 1 / 5 + 1e-9, (ra, rb)  # val has 5 images

    wa, wb = load_file(str(one.run_dir / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-5, rtol=0, msg=key)

    metrics = json.loads((two / "metrics.json").read_text())
    assert abs(metrics["accuracy"] - one.evaluation.accuracy) <= 1 / N_TEST + 1e-9
    probs_two = np.loadtxt(two / "predictions.csv", delimiter=",", skiprows=1,
                           usecols=range(6, 6 + len(COUNTS)))
    np.testing.assert_allclose(probs_two, one.evaluation.probs, atol=1e-4)


def test_every_test_image_counted_exactly_once(runs: dict) -> None:
    one, two = runs["one"], runs["two"]
    assert len(one.evaluation.paths) == N_TEST
    confusion = np.loadtxt(two / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 1 + len(COUNTS)))
    assert confusion.sum() == N_TEST
    np.testing.assert_array_equal(confusion, one.evaluation.confusion)
    assert json.loads((two / "metrics.json").read_text())["n"] == N_TEST
    rows = (two / "predictions.csv").read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == list(one.evaluation.paths)  # each once, in split order


def test_one_set_of_output_files_written_by_rank_0(runs: dict) -> None:
    one, two, proc = runs["one"], runs["two"], runs["proc"]
    assert _files(two) == _files(one.run_dir)
    assert not any("rank" in name for name in _files(two))
    assert _files(runs["work"]) == []  # no default runs/ folder or stray file next to the processes
    # the feature store: the same entries as one process writes, each written once
    assert _files(runs["root"] / "cache-two") == _files(runs["root"] / "cache-one")
    assert len(_metrics(two)) == len(set((r["stage"], r["epoch"]) for r in _metrics(two)))
    # progress and the summary come from rank 0 alone
    assert proc.stdout.count("run written to") == 1
    assert proc.stderr.count("stage 1 epoch 1 ") == 1
    assert "2 processes (gloo)" in proc.stderr
    assert "error" not in proc.stderr.lower()


# --------------------------------------------------------------------------- a process group made by an engine

ENGINE_SCRIPT = """
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp

def worker(rank, port, data, out):
    # what an engine such as Ray Train does before it calls the training function
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    import tlkit
    cfg = tlkit.make_config(data, backbone="timm:test_resnet", recipe="linear-probe", epochs=2, pretrained=False,
                            image_size=32, workers=0, batch_size=8, out=out, cache_dir=out + "-cache")
    result = tlkit.run(cfg)
    has_eval = result.evaluation is not None
    print(f"rank {rank}: result.rank={result.rank} evaluation={has_eval} group_alive={dist.is_initialized()}",
          flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.spawn(worker, args=(int(sys.argv[1]), sys.argv[2], sys.argv[3]), nprocs=2)
"""


def test_run_inside_a_process_group_made_by_an_engine(tmp_path: Path, tiny_data: Path) -> None:
    """tlkit.run(cfg) as an engine's per-worker function: it uses the group and leaves it alive."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "engine.py"
    script.write_text(ENGINE_SCRIPT)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(port), str(tiny_data), str(out)], cwd=tmp_path,
                          env=_child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "rank 0: result.rank=0 evaluation=True group_alive=True" in proc.stdout
    assert "rank 1: result.rank=1 evaluation=False group_alive=True" in proc.stdout
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


# --------------------------------------------------------------------------- the --nproc-per-node launcher


class _FakeProcess:
    def __init__(self, cmd: list[str], env: dict) -> None:
        self.cmd, self.env = cmd, env

    def wait(self) -> int:
        return 3


def test_nproc_per_node_relaunches_through_torch_distributed_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 tiny_data: Path) -> None:
    started: list[_FakeProcess] = []

    def popen(cmd, env=None):  # noqa: ANN001, ANN202
        started.append(_FakeProcess(cmd, env))
        return started[-1]

    monkeypatch.setattr(distributed.subprocess, "Popen", popen)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    args = ["finetune", str(tiny_data), "-b", "timm:test_resnet", "--no-pretrained", "--nproc-per-node", "2",
            "--device", "cpu", "--set", "head=mlp", "--set", "stages.0.lr=0.1", "--out", str(tmp_path / "my run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output  # the launcher's exit code
    (proc,) = started
    assert proc.cmd[:10] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                             "--nproc_per_node", "2", "-m", "tlkit"]
    forwarded = proc.cmd[10:]
    assert "--nproc-per-node" not in forwarded
    assert forwarded[:2] == ["finetune", str(tiny_data)]
    for option in (["--backbone", "timm:test_resnet"], ["--no-pretrained"], ["--device", "cpu"],
                   ["--set", "head=mlp"], ["--set", "stages.0.lr=0.1"], ["--out", str(tmp_path / "my run")]):
        assert any(forwarded[i:i + len(option)] == option for i in range(len(forwarded))), (option, forwarded)
    assert proc.env["OMP_NUM_THREADS"]
    assert "torchrun --standalone" in result.stderr
    assert not (tmp_path / "my run").exists()  # the parent process only launches


@pytest.mark.parametrize("nproc, device, env, needle", [
    (0, "cpu", {}, "at least 1"),
    (2, "cpu", {"WORLD_SIZE": "2"}, "under torchrun"),
    (2, "mps", {}, "cpu or cuda"),
    (2, "cuda:1", {}, "--device cuda"),
])
def test_local_launch_refuses_what_cannot_work(nproc: int, device: str, env: dict, needle: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=needle):
        distributed.check_local_launch(nproc, device)


@pytest.mark.skipif(torch.cuda.device_count() >= 64, reason="a machine with 64 GPUs")
def test_more_processes_than_gpus_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="needs 64 GPUs"):
        distributed.check_local_launch(64, "cuda")


def test_single_process_helpers_change_nothing() -> None:
    single = distributed.SINGLE
    assert not single.enabled and single.is_main
    assert single.same_on_all({"a": 1}) == {"a": 1}
    assert single.shard(5) == [0, 1, 2, 3, 4]
    assert single.mean(3.0, 4) == 0.75
    rows = torch.arange(12.0).reshape(4, 3)
    torch.testing.assert_close(single.gather_rows(rows[[2, 0, 3, 1]], torch.tensor([2, 0, 3, 1]), 4), rows)
    model = torch.nn.Linear(2, 2)
    assert single.wrap(model) is model
    # the same steps per epoch as the one-process loader: ceil(n / batch), minus a lone last sample
    for n, batch in ((18, 64), (18, 8), (17, 8), (16, 8)):
        expected = max(1, -(-n // batch)) - (1 if n > batch and n % batch == 1 else 0)
        assert single.steps_per_epoch(n, batch) == expected


def test_torchrun_process_without_its_gpu_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="LOCAL_RANK 1 has no GPU.*--nproc_per_node 1"):
        distributed.process_device(torch.device("cuda"), 1, 2, external=False)
    with pytest.raises(ConfigError, match="--device cuda"):
        distributed.process_device(torch.device("cuda:0"), 0, 2, external=False)
    with pytest.raises(ConfigError, match="cpu or cuda"):
        distributed.process_device(torch.device("mps"), 0, 2, external=False)
    assert distributed.process_device(torch.device("cuda"), 0, 2, external=False) == torch.device("cuda", 0)
