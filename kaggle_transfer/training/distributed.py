"""DistributedDataParallel under torchrun: `torchrun --nproc_per_node N -m kaggle_transfer train …`.

NCCL on GPUs, gloo on CPUs; torchrun's usual flags (--nnodes, --rdzv-endpoint, …) work across nodes.
Rank 0 makes the run folder and writes every file; each rank validates a disjoint shard of the
validation rows and the shards are gathered back in order, so the OOF covers every row exactly once
and every rank reaches the same best-epoch and early-stop decisions.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    import torch.distributed as dist

    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def setup() -> None:
    """Join the process group torchrun describes (no-op for a single process)."""
    import torch
    import torch.distributed as dist

    if world_size() <= 1 or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)


def broadcast(obj: Any) -> Any:
    """Rank 0's value on every rank."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int) -> np.ndarray:
    """This rank's share of n rows: every world_size-th, so shards are disjoint and cover all rows."""
    return np.arange(rank(), n, world_size()) if active() else np.arange(n)


def gather_rows(indices: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Each rank's (indices, values) → the full array in row order, on every rank."""
    if not active():
        return values
    import torch.distributed as dist

    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, (indices, values))
    out = np.empty((n, *values.shape[1:]), dtype=values.dtype)
    seen = np.zeros(n, dtype=int)
    for idx, vals in parts:
        out[idx] = vals
        seen[idx] += 1
    assert (seen == 1).all(), "validation shards must cover each row exactly once"
    return out


def cleanup() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
