"""Distributed data-parallel training launched by ``torchrun`` (``fit(..., ddp=True)``).

Every process (rank) runs the same ``fit``; :class:`DistributedRun` joins them:

- the process group is initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) unless the caller did it already: gloo on
  the CPU, NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``);
- the network is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  averages the gradients of the ranks in the backward pass. On CUDA its BatchNorm layers
  become :class:`~torch.nn.SyncBatchNorm` for the run (batch statistics over the global
  batch). torch 2.14 refuses SyncBatchNorm on CPU tensors ("SyncBatchNorm expected input
  tensor to be on GPU"), so with gloo each rank normalises with the statistics of its own
  part of the batch; the running statistics are averaged over the ranks after every step;
- :class:`GlobalBatchSampler` shards the training chips so that the *global* batch of each
  step (the union of the ranks' batches) is exactly the batch a single process would train
  on with ``batch_size * world_size`` chips and the same sampler (``world_size=1``): a seeded
  permutation per epoch, cut into global batches, rank ``r`` taking the ``r``-th contiguous
  slice of each. The last incomplete global batch is dropped, so every rank takes the same
  number of steps;
- validation is sharded (:class:`ShardSampler`); the loss sums and the confusion matrix are
  summed over the ranks, and so is the training loss of each step, so every rank takes the
  same early-stopping and best-checkpoint decisions; the time budget follows rank 0's clock
  (broadcast at each reading, :meth:`DistributedTrainer.clock`), so the ranks stop at the same
  step and follow the same learning-rate schedule;
- the LR finder and the planning run on rank 0 alone (on its plain, unwrapped network), and
  the epochs, learning rate and budget are broadcast;
- only rank 0 writes files (the caller checks :attr:`DistributedRun.main`); the ranks leave
  the run together (a barrier). A process group created here is kept for later runs of the
  same processes and destroyed when the process exits: destroying and re-creating the default
  group races in torch (its store keys restart from the same names, so a fast rank can read
  a slow rank's address of the previous group and fail with "Connection refused").

Example:
    Not run as a doctest: it needs several processes started by torchrun.

    >>> model.fit(20, ddp=True)       # in every process of torchrun --nproc_per_node 2
    ... # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from geounet.core.errors import InvalidParameterError
from geounet.model.training import Trainer, default_device

__all__ = [
    "TORCHRUN_ENV",
    "DistributedRun",
    "DistributedTrainer",
    "GlobalBatchSampler",
    "ShardSampler",
    "revert_sync_batchnorm",
]

#: Environment variables torchrun sets in every process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_LAUNCH = (
    "launch every process with torchrun, e.g. torchrun --standalone --nproc_per_node 2 "
    "-m geounet train CHIPS --out MODEL --ddp"
)


class GlobalBatchSampler(Sampler[list[int]]):
    """One rank's training batches: its contiguous slice of each seeded global batch.

    Each pass (epoch) draws a permutation of the ``n_items`` chips from ``seed + epoch``, cuts
    it into global batches of ``batch_size * world_size`` chips (dropping the incomplete last
    one) and gives rank ``r`` the chips ``[r * batch_size, (r + 1) * batch_size)`` of each.
    With ``world_size=1`` and ``batch_size * world_size`` chips per batch it is the batch
    sequence of the single-process run that a distributed run matches.

    Args:
        n_items: Number of training chips.
        batch_size: Chips per rank and step.
        world_size: Number of ranks.
        rank: This rank (0-based).
        seed: Seed of the permutations (the same on every rank).

    Raises:
        InvalidParameterError: Fewer chips than one global batch, or a bad rank or size.

    Example:
        >>> ranks = [list(GlobalBatchSampler(10, 2, world_size=2, rank=r, seed=3)) for r in (0, 1)]
        >>> whole = list(GlobalBatchSampler(10, 4, seed=3))
        >>> [a + b for a, b in zip(*ranks)] == whole
        True
    """

    def __init__(
        self, n_items: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise InvalidParameterError(
                f"GlobalBatchSampler needs batch_size >= 1 and 0 <= rank < world_size; got "
                f"batch_size={batch_size}, rank={rank}, world_size={world_size}."
            )
        if n_items < batch_size * world_size:
            raise InvalidParameterError(
                f"{n_items} training chip(s) do not fill one global batch of {batch_size} x "
                f"{world_size} processes = {batch_size * world_size} chips; lower --batch-size "
                "or the number of processes, or prepare more chips."
            )
        self.n, self.batch, self.world, self.rank = n_items, batch_size, world_size, rank
        self.seed, self.epoch = int(seed), 0

    def __len__(self) -> int:
        """Steps per epoch (complete global batches)."""
        return self.n // (self.batch * self.world)

    def set_epoch(self, epoch: int) -> None:
        """Draw the permutation of ``epoch`` at the next pass (passes count up otherwise)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's batches of the next epoch."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        perm = torch.randperm(self.n, generator=g).tolist()
        step = self.batch * self.world
        for k in range(len(self)):
            start = k * step + self.rank * self.batch
            yield perm[start : start + self.batch]


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th item from ``rank`` on: the ranks' shards cover each item once.

    Example:
        >>> [list(ShardSampler(5, world_size=2, rank=r)) for r in (0, 1)]
        [[0, 2, 4], [1, 3]]
    """

    def __init__(self, n_items: int, *, world_size: int, rank: int) -> None:
        self.indices = list(range(rank, n_items, world_size))

    def __len__(self) -> int:
        """Items of this rank."""
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        """This rank's items in order."""
        return iter(self.indices)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn :class:`~torch.nn.SyncBatchNorm` layers back into ``BatchNorm2d`` (same weights)."""
    if isinstance(module, nn.SyncBatchNorm):
        bn = nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        module.add_module(name, revert_sync_batchnorm(child))
    return module


@dataclass(frozen=True)
class _Group:
    rank: int
    world_size: int
    device: torch.device
    backend: str


class DistributedRun:
    """The process group of one ``fit(..., ddp=True)`` (a context manager).

    Args:
        device: The device asked for; CUDA becomes ``cuda:LOCAL_RANK`` (NCCL), else the CPU
            (gloo).

    Raises:
        InvalidParameterError: Not started by torchrun (its environment is missing), or
            fewer GPUs than processes on a node.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.owns_group = not dist.is_initialized()
        self.group = _join(default_device(device), self.owns_group)
        if self.owns_group:
            atexit.register(_destroy_at_exit)

    @property
    def rank(self) -> int:
        """This process's rank (0 is the one that decides and writes)."""
        return self.group.rank

    @property
    def world_size(self) -> int:
        """Number of processes."""
        return self.group.world_size

    @property
    def device(self) -> torch.device:
        """This rank's device."""
        return self.group.device

    @property
    def main(self) -> bool:
        """True on rank 0."""
        return self.group.rank == 0

    def __enter__(self) -> DistributedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            dist.barrier()  # nobody leaves while another rank still communicates
        elif self.owns_group and dist.is_initialized():
            dist.destroy_process_group()  # a failed rank must not wait for the others

    def broadcast(self, values: Sequence[float]) -> list[float]:
        """Rank 0's ``values`` (float64) on every rank."""
        t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device(self.group))
        dist.broadcast(t, src=0)
        return t.tolist()

    def agree_seed(self, seed: int | None) -> int:
        """``seed``, or rank 0's initial torch seed when None, the same on every rank."""
        mine = torch.initial_seed() % 2**31 if seed is None else int(seed)
        return int(self.broadcast([mine])[0])

    def train_loader(self, loader: Any, seed: int) -> DataLoader:
        """This rank's shard of ``loader``'s dataset, ``loader.batch_size`` chips a step."""
        sampler = GlobalBatchSampler(
            len(loader.dataset),
            loader.batch_size or 1,
            world_size=self.world_size,
            rank=self.rank,
            seed=seed,
        )
        reseed = getattr(loader.dataset, "reseed", None)
        if callable(reseed):  # each rank augments its chips with its own stream
            reseed(seed + 1000 * self.rank)
        return DataLoader(
            loader.dataset,
            batch_sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
        )

    def valid_loader(self, loader: Any | None) -> DataLoader | None:
        """This rank's shard of the validation loader (None stays None)."""
        if loader is None:
            return None
        shard = ShardSampler(len(loader.dataset), world_size=self.world_size, rank=self.rank)
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size or 1,
            sampler=shard,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
        )


def _join(device: torch.device, create: bool) -> _Group:
    """Initialise (``create``) or read the process group; pick this rank's device."""
    if create:
        missing = [k for k in TORCHRUN_ENV if k not in os.environ]
        if missing:
            raise InvalidParameterError(
                f"ddp=True: the environment of a distributed launch is missing "
                f"({', '.join(missing)} not set); {_LAUNCH}."
            )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"ddp=True: LOCAL_RANK {local} has no GPU (this node has "
                f"{torch.cuda.device_count()}); start at most one process per GPU "
                "(--nproc_per_node), or train on the CPU with --device cpu."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if create:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return _Group(dist.get_rank(), dist.get_world_size(), device, str(dist.get_backend()))


def _destroy_at_exit() -> None:
    """Destroy the process group this module created (registered with :mod:`atexit`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(group: _Group) -> torch.device:
    """Where collective tensors live: the GPU for NCCL, the CPU for gloo."""
    return group.device if group.backend == "nccl" else torch.device("cpu")


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose steps, validation and clock are shared by the ranks.

    ``network`` stays the plain module (saved, checkpointed and validated as is); training
    steps run through its DistributedDataParallel wrapper.

    Args:
        base: The single-process trainer whose network, loss and settings are used.
        run: The process group.
    """

    def __init__(self, base: Trainer, run: DistributedRun) -> None:
        super().__init__(
            base.network,
            base.loss_fn,
            base.n_classes,
            run.device,
            weight_decay=base.weight_decay,
            grad_clip=base.grad_clip,
            mixed_precision=base.amp_dtype is not None or base.device.type != "cuda",
            channels_last=base.memory_format == torch.channels_last,
            encoder_lr_ratio=base.encoder_lr_ratio,
            encoder_norms_frozen=base.encoder_norms_frozen,
            weight_average=base.weight_average,
        )
        self.run = run
        self.comm = _comm_device(run.group)
        cuda = run.device.type == "cuda"
        if cuda:  # batch statistics over the global batch (not available on the CPU)
            self.network = nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
        self.ddp = DistributedDataParallel(
            self.network,
            device_ids=[run.device.index] if cuda else None,
            forward_sync_buffers=False,  # running statistics: averaged after each step
        )
        self._buffers = [b for b in self.network.buffers() if b.is_floating_point()]

    def release(self) -> nn.Module:
        """The plain network again (SyncBatchNorm layers turned back into BatchNorm)."""
        return revert_sync_batchnorm(self.network)

    def clock(self) -> float:
        """Rank 0's clock, so that every rank stops at the same step of a time budget."""
        return self.run.broadcast([time.perf_counter()])[0]

    def _sum(self, values: torch.Tensor) -> torch.Tensor:
        t = values.to(self.comm, torch.float64)
        dist.all_reduce(t)
        return t

    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> float:
        """One step of every rank: the mean of the ranks' losses, NaN when any is not finite.

        The gradients are averaged by DistributedDataParallel in the backward pass; a step
        where any rank's loss is not finite is skipped by all (its gradients discarded).
        """
        x, y = self._to_device(batch)
        optimizer.zero_grad(set_to_none=True)
        if self.amp_dtype is None:
            logits = self.ddp(x)
        else:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                logits = self.ddp(x)
        loss = self.loss_fn(logits.float(), y)
        finite = bool(torch.isfinite(loss))
        value = float(loss.detach()) if finite else 0.0
        total, bad = self._sum(torch.tensor([value, 0.0 if finite else 1.0])).tolist()
        if bad:
            (loss.nan_to_num() * 0.0).backward()  # completes DDP's gradient reduction
            optimizer.zero_grad(set_to_none=True)
            return float("nan")
        self.step(loss, optimizer)
        self._average_buffers()
        return total / self.run.world_size

    def _average_buffers(self) -> None:
        """Average the BatchNorm running statistics over the ranks (identical everywhere)."""
        if not self._buffers or self.run.world_size == 1:
            return
        with torch.no_grad():
            flat = self._sum(torch.cat([b.reshape(-1).to(self.comm) for b in self._buffers]))
            flat /= self.run.world_size
            start = 0
            for b in self._buffers:
                b.copy_(flat[start : start + b.numel()].view_as(b).to(b.device, b.dtype))
                start += b.numel()

    @torch.inference_mode()
    def evaluate(self, loader: Any) -> tuple[float, np.ndarray]:
        """Mean loss and confusion matrix over every rank's shard of the validation set.

        ``loader`` is this rank's shard (:meth:`DistributedRun.valid_loader`): its sampler's
        length is the number of chips the rank's mean loss was taken over.
        """
        loss, matrix = super().evaluate(loader)
        count = len(loader.sampler)
        sums = self._sum(torch.tensor([loss * count if count else 0.0, count]))
        cm = self._sum(torch.from_numpy(matrix.astype(np.float64)))
        total, count = sums.tolist()
        summed = cm.cpu().numpy().round().astype(matrix.dtype)
        return (total / count if count else float("nan")), summed
