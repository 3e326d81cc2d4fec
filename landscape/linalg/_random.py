"""Reproducible random probes: drawn on the CPU from a seeded generator, then moved.

Drawing on the CPU makes results identical across devices for a given seed (CUDA generators
produce different streams), at the cost of one host-to-device copy per block of probes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_generator", "gaussian", "rademacher"]


def as_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """Return a CPU generator from a seed, a generator (returned as is), or ``None`` (seed 0).

    Parameters
    ----------
    seed : int, torch.Generator or None
        The source of randomness.

    Returns
    -------
    torch.Generator
        A CPU generator.

    Raises
    ------
    TypeError
        For other types.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = 0
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator; got {type(seed).__name__}.")
    return torch.Generator().manual_seed(seed)


def rademacher(
    n: int, k: int, generator: torch.Generator, *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Return an ``(n, k)`` matrix of independent random signs.

    Returns
    -------
    Tensor
        Entries in {-1, +1}.
    """
    signs = torch.randint(0, 2, (n, k), generator=generator).mul_(2).sub_(1)
    return signs.to(dtype=dtype, device=device)


def gaussian(
    n: int, k: int, generator: torch.Generator, *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Return an ``(n, k)`` matrix of independent standard normal entries.

    Returns
    -------
    Tensor
        Gaussian entries.
    """
    gauss = torch.randn(n, k, generator=generator, dtype=torch.float64)
    return gauss.to(dtype=dtype, device=device)
