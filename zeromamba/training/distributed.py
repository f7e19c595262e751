"""Multi-process training under ``torchrun``: process group, rank helpers, gathers.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a plain
``python``/``zeromamba`` start has none of them and runs as a single process. The backend is NCCL
when training on CUDA and Gloo on CPU. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistEnv:
    """Pick the device and, under ``torchrun`` with WORLD_SIZE > 1, join the process group.

    device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Under torchrun
    with CUDA each process takes device ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank if world_size > 1 else None)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, dev)


def pick_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; a CUDA device becomes the current one.
    local_rank: under torchrun, the CUDA index of this process (overrides the index given)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device}: this torch build sees no CUDA device")
        if local_rank is not None or dev.index is None:
            dev = torch.device("cuda", local_rank or 0)
        torch.cuda.set_device(dev)
    return dev


def teardown() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over ranks (returns it unchanged for one process)."""
    if env.distributed:
        values = values.to(env.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def gather_rows(rows: torch.Tensor, n_total: int, env: DistEnv) -> torch.Tensor:
    """Reassemble rows sharded with :func:`shard_indices` (rank r holds rows r, r+W, r+2W, ...)
    into the original order on every rank. rows: (n_r, ...) -> (n_total, ...)."""
    if not env.distributed:
        return rows
    per_rank = (n_total + env.world_size - 1) // env.world_size
    padded = rows.new_zeros((per_rank, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    padded = padded.to(env.device)
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    out = rows.new_empty((n_total, *rows.shape[1:]))
    for r, part in enumerate(parts):
        n_r = len(range(r, n_total, env.world_size))
        out[r :: env.world_size] = part[:n_r].cpu()
    return out


def shard_indices(n: int, env: DistEnv) -> list[int]:
    """The indices of an n-item evaluation set this rank scores: r, r+W, r+2W, ..."""
    return list(range(env.rank, n, env.world_size))


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
