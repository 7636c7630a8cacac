"""torchrun helpers and the deterministic, resumable, sharded sample stream.

Launched by ``torchrun`` (``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in the environment) the
process group is initialised with NCCL on CUDA and gloo on CPU; a plain ``python`` run is a world
of one and touches no process group.

:class:`SampleStream` replaces ``DistributedSampler`` + ``DataLoader`` epochs: the samples of
iteration ``it`` on rank ``r`` are a pure function of ``(seed, it, r, world_size)``. Each epoch's
order is a permutation drawn from a generator seeded by ``(seed, epoch)``, padded to a multiple
of the world size and dealt round-robin (as ``DistributedSampler``); each rank reads its share as
one endless stream, ``batch`` samples per iteration, so batches may straddle epochs. Each sample
is addressed as ``(epoch, index)`` and the dataset augments it with a generator seeded by
``(seed, epoch, index)`` (``SegmentationDataset.transform_rng``). Resuming at iteration ``it``
therefore needs no loader state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

__all__ = [
    "DistInfo",
    "EpochIndexed",
    "IterationBatches",
    "SampleStream",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "init_distributed",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 writes files and shows progress).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun (a no-op for one process).

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).

    Returns:
        The :class:`DistInfo` of this process.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(kind)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("rank %d/%d: process group up (%s)", rank, world_size, backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Destroy the process group if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (no-op for one process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` for one process."""
    if not _active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm statistics) to every rank.

    Without SyncBN each rank's running statistics drift on its own batches; evaluation and
    checkpoints use rank 0's.
    """
    if not _active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


class SampleStream:
    """The samples each iteration of each rank reads, derivable from ``(seed, iteration)``.

    Args:
        size: number of samples in the dataset.
        batch: samples per iteration *on this rank*.
        seed: the run seed.
        rank: this process's rank.
        world_size: number of processes.
        shuffle: permute each epoch (False: natural order).
    """

    def __init__(
        self,
        size: int,
        batch: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        if batch < 1:
            raise ValueError(f"batch {batch} must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.size = size
        self.batch = batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.per_rank = -(-size // world_size)  # samples of one epoch on each rank
        self._cache: tuple[int, np.ndarray] | None = None

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's share of ``epoch``, as ``DistributedSampler`` deals it."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        padded = np.resize(order, self.per_rank * self.world_size)  # repeats from the start
        share = padded[self.rank :: self.world_size]
        self._cache = (epoch, share)
        return share

    def batch_keys(self, iteration: int) -> list[tuple[int, int]]:
        """The ``(epoch, index)`` of each sample of ``iteration`` on this rank."""
        keys = []
        for position in range(iteration * self.batch, (iteration + 1) * self.batch):
            epoch, offset = divmod(position, self.per_rank)
            keys.append((epoch, int(self.epoch_indices(epoch)[offset])))
        return keys

    def batches(self, start: int, stop: int) -> IterationBatches:
        """Batch keys of iterations ``start .. stop - 1``, usable as a ``batch_sampler``."""
        return IterationBatches(self, start, stop)

    def epoch_of(self, iteration: int) -> float:
        """Fractional epoch reached at the start of ``iteration``."""
        return iteration * self.batch / self.per_rank


class IterationBatches:
    """The batches of iterations ``start .. stop - 1`` of a :class:`SampleStream` (lazy)."""

    def __init__(self, stream: SampleStream, start: int, stop: int) -> None:
        self.stream = stream
        self.start = start
        self.stop = max(start, stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start, self.stop):
            yield self.stream.batch_keys(iteration)


class EpochIndexed(Dataset):
    """Index a dataset by ``(epoch, index)`` keys, selecting the augmentation stream per sample.

    Args:
        dataset: a :class:`dynviz.data.base.SegmentationDataset` (has ``set_epoch``).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.dataset.set_epoch(epoch)  # each worker owns its copy, so this is race-free
        return self.dataset[index]
