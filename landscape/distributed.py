"""Data-parallel helpers on top of :mod:`torch.distributed` (no-ops when it is not initialized).

Curvature products are sums over samples, so data parallelism is exact: every rank
multiplies by the curvature of its own shard, and an all-reduce of the (sample-count
weighted) partial sums gives every rank the full-dataset product. Vectors stay replicated,
so every algorithm built on the operators runs unchanged on each rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum_", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """Return whether a :mod:`torch.distributed` process group with more than one rank is active.

    Returns
    -------
    bool
        ``True`` when ``torch.distributed`` is available, initialized and ``world_size > 1``.
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Return this process's rank (0 without a process group).

    Returns
    -------
    int
        The rank.
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Return the number of ranks (1 without a process group).

    Returns
    -------
    int
        The world size.
    """
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (identity without a process group).

    Parameters
    ----------
    tensor : Tensor
        The local partial sum; overwritten with the global sum.

    Returns
    -------
    Tensor
        ``tensor`` itself.
    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
