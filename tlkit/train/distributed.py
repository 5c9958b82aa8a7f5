"""Several processes, one run: torchrun, DistributedDataParallel and engines such as Ray Train.

Reading order: :func:`session` is entered once per run by :func:`tlkit.train.run`. Without a
launcher it hands back :data:`SINGLE` and every helper below is a no-op, so a one-process run
takes exactly the code path it always took. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) it starts the process group itself: NCCL when the device is CUDA (each process on
``cuda:LOCAL_RANK``), gloo on CPUs, and destroys it at the end, also after an error. When an
engine (Ray Train, Lightning, ...) has initialised ``torch.distributed`` already, that group is
used as it is and left for the engine to destroy.

What each part of a run does across N processes:

* Scanning and checking the data, creating the run directory and every file in it: rank 0 only
  (:meth:`Distributed.on_main`); the others get the result, or the same error.
* Feature extraction (cached stages): the files to compute are split over the ranks and the rows
  gathered back in order, so every rank holds the same full tensor; rank 0 alone reads and
  writes the on-disk feature store (:meth:`tlkit.train.feature_store.FeatureStore.get`).
* Cached stages (probe, boundary fine-tuning) take milliseconds per epoch: every rank runs the
  same steps on the same full tensor, and rank 0's weights are broadcast at the end of the stage.
* Image stages: DistributedDataParallel with a DistributedSampler. **A recipe's batch_size is the
  global batch**: each of N processes takes ``batch_size // N`` images per step, so a recipe's
  learning rates mean the same on 1 or N processes. Raise ``--batch-size`` to fill more GPUs.
* Validation and test predictions: each rank predicts its share of the images with their
  indices; the rows are gathered and put back by index, so every image counts exactly once.
* Decisions (early stopping, model selection) use rank 0's numbers, broadcast to all.

All ranks need the dataset at the same path; the run directory and the feature cache need only
exist where rank 0 runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from tlkit.errors import ConfigError, TlkitError
from tlkit.train.optim import drops_lone_last, steps_per_epoch

T = TypeVar("T")

#: set on the copy of rank 0's error that the other ranks raise, so that only rank 0 prints it
FROM_RANK0 = "tlkit_raised_on_rank0"


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return torch_dist.get_backend() if self.enabled else "none"

    def _comm_device(self) -> torch.device:
        """Where tensors must be for collectives: on the GPU for NCCL, else on the CPU."""
        return self.device if "nccl" in str(self.backend) and self.device.type == "cuda" else torch.device("cpu")

    # -- objects
    def same_on_all(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; for small things)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank.

        An error on rank 0 is raised on every rank (the same ``TlkitError``), so no rank waits
        for a result that will never come.
        """
        if not self.enabled:
            return fn()
        outcome: tuple[str, Any] | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except TlkitError as exc:
                self.same_on_all(("error", exc))
                raise
            except BaseException as exc:
                self.same_on_all(("error", TlkitError(f"rank 0 stopped: {type(exc).__name__}: {exc}")))
                raise
        outcome = self.same_on_all(outcome)
        kind, value = outcome
        if kind == "error":
            setattr(value, FROM_RANK0, True)
            raise value
        return value

    # -- tensors
    def gather_rows(self, rows: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
        """Every rank's ``rows`` put in place by ``index`` (positions in ``[0, total)``), on every rank.

        Each position must be covered at least once; repeats (a sampler's padding) are the same
        image and are written once. Returns a CPU tensor of ``total`` rows.
        """
        if not self.enabled:
            out = rows.new_empty((total, *rows.shape[1:]))
            out[index] = rows
            return out
        rows, index = rows.detach().cpu(), index.detach().cpu().long()
        metas: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(metas, (len(index), tuple(rows.shape[1:]) if len(index) else None, rows.dtype))
        shapes = {m[1] for m in metas if m[0] > 0}
        if not shapes:
            return torch.empty(0)
        if len(shapes) != 1:
            raise RuntimeError(f"ranks produced rows of different shapes: {sorted(shapes)}")
        tail, dtype = shapes.pop(), next(m[2] for m in metas if m[0] > 0)
        longest = max(m[0] for m in metas)
        device = self._comm_device()
        padded = torch.zeros((longest, *tail), dtype=dtype)
        if len(index):
            padded[:len(index)] = rows
        where = torch.full((longest,), -1, dtype=torch.long)
        where[:len(index)] = index
        all_rows = [torch.empty_like(padded, device=device) for _ in range(self.world_size)]
        all_where = [torch.empty_like(where, device=device) for _ in range(self.world_size)]
        torch_dist.all_gather(all_rows, padded.to(device))
        torch_dist.all_gather(all_where, where.to(device))
        out = torch.empty((total, *tail), dtype=dtype)
        covered = torch.zeros(total, dtype=torch.bool)
        for part, at in zip(all_rows, all_where):
            at = at.cpu()
            keep = at >= 0
            out[at[keep]] = part.cpu()[keep]
            covered[at[keep]] = True
        if not covered.all():
            missing = (~covered).nonzero().flatten()[:5].tolist()
            raise RuntimeError(f"gathered rows do not cover positions {missing} of {total}")
        return out

    def mean(self, total: float, count: int) -> float:
        """``sum(total) / sum(count)`` over the ranks (an epoch's mean loss)."""
        if not self.enabled:
            return total / max(1, count)
        both = torch.tensor([total, count], dtype=torch.float64, device=self._comm_device())
        torch_dist.all_reduce(both)
        return float(both[0]) / max(1.0, float(both[1]))

    def sync_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                torch_dist.broadcast(tensor.data, src=0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (gradients averaged over ranks), or as it is alone."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    # -- sharing work
    def shard(self, n: int) -> list[int]:
        """The positions out of ``n`` that this rank works on (every ``world_size``-th)."""
        return list(range(self.rank, n, self.world_size))

    def per_rank_batch(self, batch_size: int) -> int:
        return max(1, batch_size // self.world_size)

    def steps_per_epoch(self, n: int, batch_size: int) -> int:
        """Optimizer steps per epoch of an image stage (the loader of :meth:`image_loader`)."""
        per_rank = -(-n // self.world_size)
        batch = self.per_rank_batch(batch_size)
        return steps_per_epoch(per_rank, batch)

    def image_loader(self, dataset: torch.utils.data.Dataset, batch_size: int, shuffle_gen: torch.Generator | None,
                     **loader_options: Any) -> torch.utils.data.DataLoader:
        """This rank's share of ``dataset``: shuffled by a DistributedSampler for training
        (``shuffle_gen`` given; its seed fixes the epoch's order), a plain slice for prediction."""
        from torch.utils.data import DataLoader, DistributedSampler, Subset

        if shuffle_gen is None:
            return DataLoader(Subset(dataset, self.shard(len(dataset))), batch_size=batch_size, shuffle=False,
                              **loader_options)
        seed = shuffle_gen.initial_seed()
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=seed % 2**63, drop_last=False)
        batch = self.per_rank_batch(batch_size)
        # every rank has len(sampler) samples (the sampler pads), so every rank takes the same steps
        drop_last = drops_lone_last(len(sampler), batch)
        # DataLoader workers draw their seeds from this: different augmentations on each rank
        workers_gen = torch.Generator().manual_seed((seed + 1_000_003 * self.rank) % 2**63)
        return DataLoader(dataset, batch_size=batch, sampler=sampler, generator=workers_gen, drop_last=drop_last,
                          **loader_options)

    def seed_image_epoch(self, seed: int) -> None:
        """Seed this rank's global RNGs for an epoch on images, differently on each rank
        (augmentation without workers, dropout): an epoch then depends on (seed, rank) alone."""
        if self.enabled:
            from tlkit._seeding import seed_everything

            seed_everything((seed + 7919 * self.rank) % 2**32)

    def share_workers(self, workers: int) -> int:
        """A default DataLoader worker count, lowered so the processes on a node share its cores."""
        if self.local_world_size <= 1:
            return workers
        return min(workers, max(0, (os.cpu_count() or 1) // self.local_world_size - 1))


SINGLE = Distributed()


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher setting ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def process_device(device: torch.device, local_rank: int, local_world_size: int, external: bool) -> torch.device:
    """The device of one process of a distributed run: a GPU of its own on CUDA, else ``device``; refuses
    more local processes than GPUs, and devices that cannot be shared (MPS)."""
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if external:  # the engine placed this process: its LOCAL_RANK when that GPU is visible, else its current one
            if device.index is not None:
                return device
            visible = "LOCAL_RANK" in os.environ and local_rank < count
            return torch.device("cuda", local_rank if visible else torch.cuda.current_device())
        if device.index is not None and local_world_size > 1:
            raise ConfigError(f"device {device} asked for, but each of the {local_world_size} processes on this node "
                              "uses the GPU of its LOCAL_RANK; pass --device cuda (or auto)")
        if local_rank >= count:
            raise ConfigError(f"process with LOCAL_RANK {local_rank} has no GPU: this node has {count} GPU(s) for "
                              f"{local_world_size} processes; start at most {count} per node (--nproc_per_node {count}) "
                              "or use --device cpu")
        return torch.device("cuda", device.index if device.index is not None else local_rank)
    if device.type != "cpu":
        raise ConfigError(f"distributed training runs on cpu or cuda devices, not {device.type}; use --device cpu or cuda")
    return device


@contextmanager
def session(device: torch.device) -> Iterator[Distributed]:
    """The :class:`Distributed` of this run; starts and ends the process group when it is ours."""
    external = torch_dist.is_available() and torch_dist.is_initialized()
    if not external and not launched():
        yield Distributed(device=device)
        return
    if not torch_dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process, without torchrun")
    world = torch_dist.get_world_size() if external else _env_int("WORLD_SIZE", 1)
    rank = torch_dist.get_rank() if external else _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", 1)
    device = process_device(device, local_rank, local_world, external)
    ctx = Distributed(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, device=device)
    if external:
        yield ctx
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield ctx
    finally:
        torch_dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# the convenience launcher behind `tlkit finetune --nproc-per-node N`


def launch_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The torch.distributed.run (torchrun) command line that starts ``nproc`` local copies of ``tlkit ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "-m", "tlkit", *args]


def check_local_launch(nproc: int, device: str) -> None:
    """Refuse combinations that cannot work before any process starts."""
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be at least 1, got {nproc}")
    if launched() or (torch_dist.is_available() and torch_dist.is_initialized()):
        raise ConfigError("--nproc-per-node starts its own processes; under torchrun (or another launcher) "
                          "leave it out")
    if device == "mps":
        raise ConfigError("distributed training runs on cpu or cuda devices, not mps; use --device cpu")
    if device.startswith("cuda:") and nproc > 1:
        raise ConfigError(f"--device {device} with --nproc-per-node {nproc}: each process uses the GPU of its "
                          "local rank; pass --device cuda")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < nproc:
            raise ConfigError(f"--nproc-per-node {nproc} needs {nproc} GPUs but {count} are available; use "
                              + (f"--nproc-per-node {count} or " if count else "") + "--device cpu")


def launch_local(nproc: int, args: Sequence[str], *, announce: Callable[[str], None] | None = None) -> int:
    """Run ``tlkit ARGS`` in ``nproc`` local processes through torch.distributed.run; its exit code."""
    cmd = launch_command(nproc, args)
    env = dict(os.environ)
    # torchrun would set 1 (and warn): give each process its share of the cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if announce is not None:
        announce("starting " + shlex.join(["torchrun", *cmd[3:]]))
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (same process group): let them save and stop
        proc.wait()
        raise
