"""Reproducible random probes: drawn on the CPU from a seeded generator, then moved.

Drawing on the CPU makes results identical across devices for a given seed (CUDA generators
produce different streams), at the cost of one host-to-device copy per block of probes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.operators.space import VectorSpace

__all__ = ["ProbeStream", "as_generator", "draw", "gaussian", "rademacher"]


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


def draw(
    space: VectorSpace, k: int, generator: torch.Generator, kind: str, *, probe_major: bool = True
) -> Tensor:
    """Return ``k`` random vectors of ``space`` as the columns of a ``(local_dim, k)`` block.

    Where the space draws counter-based probes (a sharded space, whose ranks each hold part
    of every vector), one 62-bit key is taken from ``generator`` and the probes are
    :func:`~landscape.operators.space.counter_probes`: independent of the number of ranks.
    Otherwise they come from ``generator`` directly, on the CPU: ``probe_major`` draws them
    one probe after the other (so the draws of ``k1`` then ``k2`` probes equal the draw of
    ``k1 + k2`` for signs, whatever the blocking); otherwise as rows of an ``(n, k)`` matrix.

    Parameters
    ----------
    space : VectorSpace
        Where the vectors live.
    k : int
        How many.
    generator : torch.Generator
        The source of randomness.
    kind : {"signs", "gaussian"}
        Rademacher or standard normal entries.
    probe_major : bool, optional
        The order of the draws (see above).

    Returns
    -------
    Tensor
        Shape ``(space.local_dim, k)``, the space's dtype and device.
    """
    if space.counter_random:
        key = int(torch.randint(0, 2**62, (1,), generator=generator))
        return space.probes(k, key, kind)
    sample = rademacher if kind == "signs" else gaussian
    if probe_major:
        rows = sample(k, space.dim, generator, dtype=space.dtype, device=space.device)
        return rows.T.contiguous()
    return sample(space.dim, k, generator, dtype=space.dtype, device=space.device)


class ProbeStream:
    """Successive random probes of a space: the ``j``-th probe is the same however they are grouped.

    From a plain space, probe after probe from ``generator`` (signs: one probe's entries
    are consecutive draws, so groups of any size give the same probes). From a space of
    counter-based probes (sharded), one key is taken from ``generator`` when the stream is
    made and probe ``j`` is :func:`~landscape.operators.space.counter_probes` number ``j``.

    Parameters
    ----------
    space : VectorSpace
        Where the probes live.
    generator : torch.Generator
        The source of randomness.
    kind : {"signs", "gaussian"}
        Rademacher or standard normal entries.

    Examples
    --------
    >>> from landscape.operators.space import VectorSpace
    >>> space = VectorSpace(5, torch.float64, torch.device("cpu"))
    >>> a = ProbeStream(space, torch.Generator().manual_seed(1), "signs")
    >>> b = ProbeStream(space, torch.Generator().manual_seed(1), "signs")
    >>> torch.equal(torch.cat([a.next(1), a.next(2)], 1), b.next(3))
    True
    """

    def __init__(self, space: VectorSpace, generator: torch.Generator, kind: str) -> None:
        self.space = space
        self.generator = generator
        self.kind = kind
        self.count = 0
        self.key = (
            int(torch.randint(0, 2**62, (1,), generator=generator))
            if space.counter_random
            else None
        )

    def next(self, k: int) -> Tensor:
        """Return the next ``k`` probes as the columns of a ``(local_dim, k)`` block.

        Returns
        -------
        Tensor
            The probes, in the space's dtype and on its device.
        """
        space = self.space
        if self.key is not None:
            block = space.probes(k, self.key, self.kind, first=self.count)
        else:
            sample = rademacher if self.kind == "signs" else gaussian
            rows = sample(k, space.dim, self.generator, dtype=space.dtype, device=space.device)
            block = rows.T.contiguous()
        self.count += k
        return block
