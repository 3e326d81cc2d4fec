r"""Spectral densities of an operator's diagonal blocks, all in one set of passes.

And their heterogeneity: Jensen-Shannon distances between the blocks' densities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from scipy.special import rel_entr
from torch import Tensor

from landscape.linalg._random import ProbeStream, as_generator
from landscape.linalg.density import density_from_lanczos, lanczos_with_progress, plan_slq
from landscape.linalg.lanczos import Tridiagonal
from landscape.linalg.results import SpectralDensity
from landscape.memory import MemoryBudget
from landscape.operators.base import LinearOperator
from landscape.operators.scipy_wrapper import as_operator
from landscape.operators.space import VectorSpace

__all__ = ["block_densities", "js_distances", "kth_largest", "mean_js"]


class _ColumnBlocks(LinearOperator):
    r"""Column :math:`j` of ``V`` goes through :math:`P_{b(j)} A P_{b(j)}`, its block's part.

    ``probes.outside`` (boolean, shape ``(n, r)``, for the runs of the current group) is
    true off the rows of each column's block. Masking the input as well as the output makes
    each column's operator exactly the (zero-padded) diagonal block :math:`A_{bb}`:
    cross-block terms :math:`A_{cb}` never enter.
    """

    is_symmetric = True

    def __init__(self, A: LinearOperator, probes: _MaskedProbes) -> None:
        super().__init__(A.shape, A.dtype, A.device)
        self.A, self.probes = A, probes

    @property
    def vector_space(self) -> VectorSpace:
        """The wrapped operator's space."""
        return self.A.vector_space

    def _matmat(self, V: Tensor) -> Tensor:
        outside = self.probes.outside
        return self.A.matmat(V.masked_fill(outside, 0)).masked_fill_(outside, 0)

    @property
    def num_matvecs(self) -> int:
        return self.A.num_matvecs

    @property
    def num_passes(self) -> int:
        return self.A.num_passes


class _MaskedProbes:
    """Probes of each block in turn: run ``j`` belongs to block ``j // num_probes``.

    The signs are drawn for the whole vector (one stream, so groups do not change them) and
    zeroed outside the run's block; :attr:`outside` is the mask of the runs last handed out.
    """

    def __init__(
        self, space: VectorSpace, generator: torch.Generator, indices: list[Tensor], probes: int
    ) -> None:
        self.stream = ProbeStream(space, generator, "signs")
        self.space, self.indices, self.probes = space, indices, probes
        self.run = 0
        self.outside = torch.zeros(0, 0, dtype=torch.bool)

    def next(self, k: int) -> Tensor:
        """Return the next ``k`` runs' starting vectors, and set :attr:`outside` for them.

        Returns
        -------
        Tensor
            ``(n, k)`` signs on each run's block, zeros elsewhere.
        """
        Z = self.stream.next(k)
        outside = torch.ones(Z.shape, dtype=torch.bool, device=Z.device)
        for j in range(k):
            block = (self.run + j) // self.probes
            outside[:, j] = ~self.space.local_mask(self.indices[block])
        self.run += k
        self.outside = outside
        return Z.masked_fill_(outside, 0)


def _indices(block: Any, n: int) -> Tensor:
    if isinstance(block, slice):
        return torch.arange(n)[block]
    index = torch.as_tensor(block, dtype=torch.long).reshape(-1)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= n:
        raise ValueError(f"a block's indices must be non-empty and within [0, {n}).")
    return index


def block_densities(
    A: Any,
    blocks: Sequence[slice | Sequence[int] | Tensor],
    num_probes: int = 4,
    num_steps: int = 60,
    *,
    seed: int | torch.Generator | None = 0,
    reorthogonalize: bool | str = "auto",
    grid: int = 512,
    progress: bool = False,
    memory_budget: Any = None,
) -> list[SpectralDensity]:
    r"""SLQ densities of the diagonal blocks :math:`A_{bb}` of a symmetric operator, batched.

    Block :math:`b` (indices :math:`I_b`, size :math:`P_b`) gets its own Lanczos runs on
    :math:`A_{bb}` from Rademacher probes supported on :math:`I_b`; every block's probe
    columns go through **one** ``matmat`` per step, so the cost is ``num_steps`` passes over
    the data for any number of blocks (``L * num_probes`` products per pass). Each density
    estimates :math:`\frac{1}{P_b}\sum_i \delta(t - \lambda_i(A_{bb}))`, with the quadrature
    moments :math:`\frac{1}{P_b}\operatorname{tr}(A_{bb}^p)` of
    :func:`landscape.spectral_density`. Zhang et al. run one SLQ per block (``L`` times the
    passes).

    Parameters
    ----------
    A : LinearOperator, Tensor or ndarray
        Symmetric operator.
    blocks : sequence of slices or index sequences
        The blocks' indices (disjoint in practice; any subsets work).
    num_probes : int, optional
        Probes per block.
    num_steps : int, optional
        Lanczos steps (capped by the smallest block's size is not needed: a run that
        exhausts its block continues with zero weight).
    seed : int or torch.Generator, optional
        Randomness of the probes.
    reorthogonalize : bool or "auto", optional
        Full reorthogonalization (memory ``n * num_steps`` per run); ``"auto"`` for the
        first runs whose bases take at most 2 GiB together (see
        :func:`~landscape.linalg.density.plan_slq`). A block's outliers are split off its
        first run, only when that run is reorthogonalized.
    grid : int, optional
        Grid points of each density.
    progress : bool, optional
        A tqdm bar over the steps.
    memory_budget : int, float or str, optional
        Bytes the Lanczos vectors may take (default a quarter of the free memory, see
        :mod:`landscape.memory`): as many blocks as fit go through one ``matmat``, the
        others in later groups (more passes, the same products and densities).

    Returns
    -------
    list of SpectralDensity
        One per block; ``num_passes`` is the shared count.

    Raises
    ------
    ValueError
        For no blocks, empty or out-of-range indices, or non-positive sizes.
    MemoryBudgetError
        If one block's probes do not fit in ``memory_budget``.

    References
    ----------
    Y. Zhang, C. Chen, T. Ding, Z. Li, R. Sun, Z.-Q. Luo, "Why transformers need Adam: a
    Hessian perspective", NeurIPS 2024, arXiv:2402.16788.

    Examples
    --------
    >>> A = torch.block_diag(torch.diag(torch.arange(1.0, 6.0)), 10 * torch.eye(3)).double()
    >>> first, second = block_densities(A, [slice(0, 5), slice(5, 8)], num_steps=5)
    >>> round(first.moment(1), 6), round(second.moment(1), 6), first.num_passes
    (3.0, 10.0, 5)
    """
    A = as_operator(A)
    space = A.vector_space
    n = space.dim
    if len(blocks) == 0:
        raise ValueError("give at least one block.")
    for name, value in (("num_probes", num_probes), ("num_steps", num_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    indices = [_indices(b, n) for b in blocks]
    r = len(indices) * num_probes
    steps = min(num_steps, max(len(i) for i in indices))
    budget = MemoryBudget.resolve(memory_budget, A.device)
    plan = plan_slq(space.local_dim, A.dtype, r, steps, reorthogonalize, budget, unit=num_probes)
    generator = as_generator(seed)
    probes = _MaskedProbes(space, generator, indices, num_probes)
    operator = _ColumnBlocks(A, probes)
    label = "block densities (SLQ)"
    tri = lanczos_with_progress(operator, probes, plan, steps, generator, progress, label)
    first_runs = plan.reorthogonalized
    out = []
    for b in range(len(indices)):
        rows = slice(b * num_probes, (b + 1) * num_probes)
        runs = Tridiagonal(
            tri.alphas[rows],
            tri.betas[rows],
            tri.residual_norms[rows],
            tri.num_matvecs,
            tri.num_passes,
        )
        outliers = b * num_probes < first_runs  # its first run was reorthogonalized
        out.append(density_from_lanczos(runs, grid=grid, outliers=outliers))
    return out


def kth_largest(density: SpectralDensity, k: int) -> float:
    """Return the k-th largest eigenvalue of a density's operator, from all its Lanczos runs.

    Each probe's run gives Ritz values whose largest converge to the largest eigenvalues;
    the median over probes of each run's k-th largest is robust to a run whose k-th value
    has not converged yet.

    Returns
    -------
    float
        The estimate.
    """
    nodes = torch.sort(density.nodes.double(), dim=1, descending=True).values
    return float(nodes[:, min(k, nodes.shape[1]) - 1].median())


# Bins per kernel width of the grid the densities are compared on: the Gaussian broadening
# is done by filtering a histogram of the nodes (scipy.ndimage), exact to a shift of at most
# half a bin, so a block whose spectrum spans 10^3 kernel widths costs 10^4 bins, not a dense
# (grid x nodes) kernel matrix.
_BINS_PER_WIDTH = 8
_MAX_BINS = 2_000_000


def js_distances(
    densities: Sequence[SpectralDensity],
    *,
    normalize: int | None = 10,
    width: float | None = None,
) -> np.ndarray:
    r"""Jensen-Shannon distances between spectral densities (block heterogeneity).

    Each density's nodes :math:`\theta` are divided by its ``normalize``-th largest
    eigenvalue (Zhang et al. normalize each block's spectrum so that scale does not count,
    only shape), broadened with **one** Gaussian kernel width :math:`w` shared by all
    densities, and made probability vectors :math:`p_b` on one grid fine enough for it;
    then

    .. math::
        \mathrm{JS}(p, q) = \sqrt{\tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m)},
        \quad m = \tfrac12(p + q),

    with base-2 logarithms, in :math:`[0, 1]` (as :func:`scipy.spatial.distance.jensenshannon`,
    clipped at 0 against round-off). :math:`\mathrm{JS}^0` is the mean over pairs
    :math:`b < c`.

    A shared width matters: each SLQ density's own width is its Ritz range over
    ``num_steps``, which after normalization grows with the block's ratio
    :math:`\lambda_1/\lambda_k` — with per-block widths a distance compares kernel widths
    as much as spectra, and depends on ``num_steps``. The grid's spacing is fixed by
    :math:`w`, so a distance does not depend on the other blocks in the set.

    Parameters
    ----------
    densities : sequence of SpectralDensity
        One per block.
    normalize : int or None, optional
        Divide each spectrum by its k-th largest eigenvalue (:func:`kth_largest`; ``None``:
        compare raw spectra).
    width : float, optional
        The kernel width :math:`w`, in the normalized units (default 0.05: 5 % of the k-th
        largest eigenvalue); without normalization, in eigenvalue units (default: the
        median of the densities' own widths).

    Returns
    -------
    ndarray
        The symmetric ``(L, L)`` matrix of distances, zero on the diagonal.

    Raises
    ------
    ValueError
        If a normalizing eigenvalue is not positive (the message names the block), or the
        width is not positive.

    Examples
    --------
    >>> A = torch.diag(torch.linspace(0.1, 1.0, 40)).double()
    >>> d = block_densities(A, [slice(0, 40)], num_steps=10)[0]
    >>> ten = block_densities(10 * A, [slice(0, 40)], num_steps=10)[0]
    >>> bool(js_distances([d, ten])[0, 1] < 1e-6)
    True
    >>> bool(js_distances([d, ten], normalize=None)[0, 1] > 0.5)
    True
    """
    scales = []
    for b, d in enumerate(densities):
        scale = 1.0 if normalize is None else kth_largest(d, normalize)
        if not scale > 0:
            raise ValueError(
                f"the {normalize}-th largest eigenvalue of block {b} is {scale:.3g}; normalize "
                "by a positive one (a smaller normalize=) or compare raw spectra "
                "(normalize=None)."
            )
        scales.append(scale)
    if width is None:
        width = 0.05 if normalize is not None else float(np.median([d.sigma for d in densities]))
    if not width > 0:
        raise ValueError(f"width must be positive; got {width!r}.")
    nodes = [(d.nodes.double() / s).numpy().reshape(-1) for d, s in zip(densities, scales)]
    weights = [d.weights.double().numpy().reshape(-1) for d in densities]
    lo = min(float(x.min()) for x in nodes) - 5 * width
    hi = max(float(x.max()) for x in nodes) + 5 * width
    spacing = max(width / _BINS_PER_WIDTH, (hi - lo) / _MAX_BINS)
    edges = np.arange(lo, hi + spacing, spacing)
    vectors = []
    for x, w in zip(nodes, weights, strict=True):
        counts, _ = np.histogram(x, bins=edges, weights=w)
        p = gaussian_filter1d(counts, width / spacing, mode="constant", truncate=6.0)
        p = np.where(p > 1e-200 * p.max(), p, 0.0)  # denormals: (p + q) / 2 would underflow
        vectors.append(p / p.sum())
    L = len(vectors)
    out = np.zeros((L, L))
    for i in range(L):
        for j in range(i + 1, L):
            out[i, j] = out[j, i] = _js(vectors[i], vectors[j])
    return out


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    divergence = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / (2 * math.log(2))
    return math.sqrt(max(float(divergence), 0.0))  # round-off can make it -1e-17


def mean_js(distances: np.ndarray) -> float:
    r"""Return :math:`\mathrm{JS}^0`, the mean distance over block pairs (``nan`` for one block).

    Parameters
    ----------
    distances : ndarray
        The matrix of :func:`js_distances`.

    Returns
    -------
    float
        The mean of the strict upper triangle.
    """
    L = distances.shape[0]
    if L < 2:
        return math.nan
    return float(distances[np.triu_indices(L, 1)].mean())
