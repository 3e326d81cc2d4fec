r"""Spectral densities by stochastic Lanczos quadrature (SLQ), with bulk/outlier separation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscape.linalg._random import ProbeStream, as_generator
from landscape.linalg.lanczos import Tridiagonal, batched_lanczos
from landscape.linalg.results import SpectralDensity
from landscape.memory import (
    DEFAULT_WORKSPACE,
    MemoryBudget,
    MemoryBudgetError,
    format_bytes,
    vector_bytes,
)
from landscape.operators.base import LinearOperator
from landscape.operators.scipy_wrapper import as_operator

__all__ = ["SLQPlan", "find_outliers", "plan_slq", "spectral_density", "split_outliers"]

#: Reorthogonalization bases kept by default (``reorthogonalize="auto"``), in bytes.
REORTHOGONALIZE_BYTES = DEFAULT_WORKSPACE
#: Vectors per Lanczos run during a step: the current and previous Lanczos vectors, the
#: product, and the operator's own buffers for that column.
RUN_VECTORS = 5


@dataclass(frozen=True)
class SLQPlan:
    """How a batch of Lanczos runs is laid out in memory.

    Attributes
    ----------
    groups : list of int
        Runs per group: each group is one :func:`batched_lanczos` call (its steps are its
        own passes over the data), run after the previous one has freed its memory.
    reorthogonalized : int
        How many runs, from the first, are fully reorthogonalized.
    """

    groups: list[int]
    reorthogonalized: int

    @property
    def num_passes_per_step(self) -> int:
        """Passes over the data per Lanczos step (one per group)."""
        return len(self.groups)


def plan_slq(
    space_dim: int,
    dtype: torch.dtype,
    runs: int,
    steps: int,
    reorthogonalize: bool | str,
    budget: MemoryBudget,
    *,
    unit: int = 1,
    global_dim: int | None = None,
) -> SLQPlan:
    """Size the groups of Lanczos runs and the reorthogonalized runs to a memory budget.

    A run needs :data:`RUN_VECTORS` vectors during a step, plus ``steps`` for its basis when
    it is reorthogonalized. ``"auto"`` reorthogonalizes the first runs whose bases fit in
    :data:`REORTHOGONALIZE_BYTES` together (and in the budget): the outliers come from the
    first run, and the quadrature of the others is accurate without it. Then runs are put in
    groups of as many as the budget holds, in multiples of ``unit`` (the probes of one
    block stay together).

    Parameters
    ----------
    space_dim : int
        Numbers per vector on this process.
    dtype : torch.dtype
        Of the vectors.
    runs, steps : int
        Lanczos runs and steps per run.
    reorthogonalize : bool or "auto"
        As for :func:`spectral_density`.
    budget : MemoryBudget
        The memory budget.
    unit : int, optional
        Group sizes are multiples of it.
    global_dim : int, optional
        The vectors' whole dimension where a process holds part of each (default
        ``space_dim``): the reorthogonalized runs are counted on it, so that they do not
        depend on the number of ranks.

    Returns
    -------
    SLQPlan
        The groups and the reorthogonalized runs.

    Raises
    ------
    MemoryBudgetError
        If one unit of runs does not fit (or ``reorthogonalize=True`` and its bases do not).

    Examples
    --------
    >>> budget = MemoryBudget.resolve(80 * 8 * 1000, "cpu")  # 80 vectors of 1000 float64
    >>> plan_slq(1000, torch.float64, runs=10, steps=30, reorthogonalize="auto", budget=budget)
    SLQPlan(groups=[4, 6], reorthogonalized=2)
    """
    vector = vector_bytes(global_dim or space_dim, dtype)
    fits = budget.vectors(space_dim, dtype)
    if reorthogonalize == "auto":
        affordable = min(REORTHOGONALIZE_BYTES // max(vector, 1), fits - unit * RUN_VECTORS)
        reorthogonalized = max(0, min(runs, affordable // max(steps, 1)))
    else:
        reorthogonalized = runs if reorthogonalize else 0
    need = [RUN_VECTORS + (steps if i < reorthogonalized else 0) for i in range(runs)]
    groups: list[int] = []
    start = 0
    while start < runs:
        size, used = 0, 0
        while start + size < runs:
            more = sum(need[start + size : start + size + unit])
            if used + more > fits:
                break
            size, used = size + unit, used + more
        if size == 0:
            first = sum(need[start : start + unit])
            what = "a Lanczos run" if unit == 1 else f"a block's {unit} Lanczos runs"
            if reorthogonalized > start:
                what += f" with its reorthogonalization basis ({steps} vectors per run)"
            knob = (
                "pass reorthogonalize='auto' or False, fewer num_steps, or memory_budget="
                if reorthogonalized > start
                else "raise memory_budget= or free memory"
            )
            budget.require(first, space_dim, dtype, what=what, knob=knob)
            raise MemoryBudgetError(f"{what} does not fit in {format_bytes(budget.bytes)}.")
        groups.append(min(size, runs - start))
        start += size
    return SLQPlan(groups, reorthogonalized)


def spectral_density(
    A: Any,
    num_probes: int = 10,
    num_steps: int = 80,
    *,
    sigma: float | None = None,
    grid: Tensor | int = 1024,
    seed: int | torch.Generator | None = 0,
    reorthogonalize: bool | str = "auto",
    gap: float = 1.3,
    separation: float = 3.0,
    contrast: float = 5.0,
    max_outliers: int = 50,
    progress: bool = False,
    memory_budget: Any = None,
) -> SpectralDensity:
    r"""Estimate the eigenvalue density of a symmetric operator by stochastic Lanczos quadrature.

    For :math:`n_v` Rademacher probes :math:`v_l` (normalized), :math:`m` Lanczos steps give
    a tridiagonal :math:`T^{(l)}` with eigenpairs :math:`(\theta_j^{(l)}, s_j^{(l)})`; the
    Gauss quadrature nodes are :math:`\theta_j^{(l)}` with weights
    :math:`\tau_j^{(l)} = (e_1^\top s_j^{(l)})^2` (each run's weights sum to 1), and

    .. math::
        \phi(t) = \frac{1}{n_v} \sum_{l=1}^{n_v} \sum_{j=1}^{m} \tau_j^{(l)}
        \, \frac{1}{\sigma\sqrt{2\pi}} \exp\!\Big(-\frac{(t-\theta_j^{(l)})^2}{2\sigma^2}\Big),

    an estimate of :math:`\frac1P\sum_i \delta(t-\lambda_i)` smoothed by a Gaussian of width
    :math:`\sigma`; it integrates to 1. The quadrature is exact for polynomials of degree
    :math:`\le 2m-1`, so :math:`\frac1P\operatorname{tr}(A^p)` is estimated by
    :meth:`SpectralDensity.moment`. All probes share each step's ``matmat``: ``num_steps``
    passes over the data in all.

    **Kernel width.** By default :math:`\sigma = (\theta_{\max}-\theta_{\min})/m`, the typical
    spacing of Ritz nodes in the bulk: a narrower kernel shows ``m`` spurious spikes, a wider
    one smears outliers into the bulk. PyHessian uses :math:`\sigma^2 = 10^{-5}` times the
    range, which is spiky for :math:`m` = 80. Always report :math:`\sigma`, :math:`m` and
    :math:`n_v` with a plot (the result carries them).

    **Outliers.** Following Sagun et al. and Papyan, the top of a Hessian spectrum is a few
    outliers (about one per class) above a bulk. They are split off the first run's
    converged Ritz values by :func:`split_outliers`: above the largest ratio gap
    :math:`\lambda_c/\lambda_{c+1}` > ``gap`` (a bulk near zero), or above a gap of at
    least ``separation`` kernel widths :math:`\sigma` that is also ``contrast`` times the
    spacing of the Ritz values just below it (a bulk away from zero, where ratios are small:
    Papyan 2020, Fig. 15a). The top bulk Ritz value estimates the bulk edge, each outlier
    carries its separation from it in units of :math:`\sigma`, and the result reports no
    outliers and ``bulk_edge=None`` ("no clear gap") only when no gap qualifies.

    Parameters
    ----------
    A : LinearOperator, Tensor, ndarray or scipy LinearOperator
        Symmetric operator (e.g. ``ls.hessian(model, data)``).
    num_probes : int, optional
        Number of random probes :math:`n_v`.
    num_steps : int, optional
        Lanczos steps :math:`m` per probe.
    sigma : float, optional
        Gaussian kernel width (default: see above).
    grid : Tensor or int, optional
        Evaluation points, or their number on
        :math:`[\theta_{\min} - 5\sigma, \theta_{\max} + 5\sigma]`.
    seed : int or torch.Generator, optional
        Randomness of the probes; results are deterministic given it.
    reorthogonalize : bool or "auto", optional
        Full reorthogonalization of each run (memory ``P * num_steps`` per run);
        ``"auto"`` reorthogonalizes the first runs whose bases take at most 2 GiB together
        (:func:`plan_slq`). Without it the quadrature stays accurate (Greenbaum 1989; Chen,
        Trogdon & Ubaru 2021) but Ritz values repeat ("ghosts"); outliers are split off
        the first run, so they are reported only when it is reorthogonalized.
    gap : float, optional
        Smallest ratio of consecutive top eigenvalues that counts as a gap.
    separation : float, optional
        Smallest gap below an outlier, in kernel widths :math:`\sigma` (spacing rule).
    contrast : float, optional
        Smallest ratio of that gap to the widest of the next three gaps below it.
    max_outliers : int, optional
        Largest outlier count considered.
    progress : bool, optional
        Show a tqdm progress bar over Lanczos steps.
    memory_budget : int, float or str, optional
        Bytes the Lanczos vectors may take (see :mod:`landscape.memory`; default a quarter of
        the free memory). Probes that do not fit together run in groups, one after the
        other (more passes over the data, the same products and the same result).

    Returns
    -------
    SpectralDensity
        ``grid``, ``density``, ``nodes``, ``weights``, ``sigma``, ``outliers``,
        ``outlier_separations``, ``bulk_edge``, ``gap_ratio``, ``num_matvecs``,
        ``num_passes``.

    Raises
    ------
    ValueError
        For non-positive ``num_probes``/``num_steps``/``sigma``/``separation``, or
        ``gap <= 1`` or ``contrast <= 1``.
    MemoryBudgetError
        If one probe's vectors do not fit in ``memory_budget``.

    References
    ----------
    S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
    quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017. B. Ghorbani, S. Krishnan, Y. Xiao,
    "An investigation into neural net optimization via Hessian eigenvalue density", ICML
    2019, arXiv:1901.10159. L. Sagun, U. Evci, V. U. Güney, Y. Dauphin, L. Bottou,
    "Empirical analysis of the Hessian of over-parametrized neural networks",
    arXiv:1706.04454. V. Papyan, "Traces of class/cross-class structure pervade deep learning
    spectra", JMLR 21, 2020.

    Examples
    --------
    >>> lam = torch.cat([torch.tensor([30.0, 20.0]), torch.linspace(0.0, 1.0, 198)]).double()
    >>> d = spectral_density(torch.diag(lam), num_probes=4, num_steps=40)
    >>> round(d.moment(1) * 200, 6) == round(float(lam.sum()), 6)  # tr(A) exactly
    True
    >>> d.num_outliers, d.num_passes
    (2, 40)
    """
    A = as_operator(A)
    space = A.vector_space
    n = space.dim
    for name, value in (("num_probes", num_probes), ("num_steps", num_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}.")
    if not gap > 1:
        raise ValueError(f"gap must exceed 1; got {gap!r}.")
    if not separation > 0:
        raise ValueError(f"separation must be positive (in kernel widths); got {separation!r}.")
    if not contrast > 1:
        raise ValueError(f"contrast must exceed 1; got {contrast!r}.")
    steps = min(num_steps, n)
    budget = MemoryBudget.resolve(memory_budget, A.device)
    plan = plan_slq(
        space.local_dim, A.dtype, num_probes, steps, reorthogonalize, budget, global_dim=n
    )
    generator = as_generator(seed)
    stream = ProbeStream(space, generator, "signs")
    tri = lanczos_with_progress(
        A, stream, plan, steps, generator, progress, "spectral density (SLQ)"
    )
    return density_from_lanczos(
        tri,
        sigma=sigma,
        grid=grid,
        outliers=plan.reorthogonalized > 0,
        gap=gap,
        separation=separation,
        contrast=contrast,
        max_outliers=max_outliers,
    )


def lanczos_with_progress(
    A: LinearOperator,
    probes: ProbeStream | Any,
    plan: SLQPlan,
    steps: int,
    generator: torch.Generator,
    progress: bool,
    description: str,
) -> Tridiagonal:
    """Run :func:`batched_lanczos` group by group (``plan``), with a tqdm bar over the steps.

    Parameters
    ----------
    A : LinearOperator
        The operator.
    probes : ProbeStream or callable
        ``probes.next(k)`` gives the starting vectors of the next ``k`` runs.
    plan : SLQPlan
        The groups and reorthogonalized runs.
    steps : int
        Lanczos steps per run.
    generator : torch.Generator
        For fresh directions after invariant subspaces.
    progress : bool
        Show a bar.
    description : str
        The bar's label.

    Returns
    -------
    Tridiagonal
        The runs of all groups, in order (shorter groups padded with decoupled zeros, which
        get zero quadrature weight).
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps * len(plan.groups), desc=description, unit="pass", leave=False)
    parts = []
    try:
        reorthogonalize = plan.reorthogonalized
        for size in plan.groups:
            parts.append(
                batched_lanczos(
                    A,
                    probes.next(size),
                    steps,
                    reorthogonalize=min(size, reorthogonalize),
                    generator=generator,
                    callback=(lambda _: bar.update(1)) if bar is not None else None,
                )
            )
            reorthogonalize = max(0, reorthogonalize - size)
    finally:
        if bar is not None:
            bar.close()
    return _concatenate(parts)


def _concatenate(parts: list[Tridiagonal]) -> Tridiagonal:
    if len(parts) == 1:
        return parts[0]
    m = max(p.alphas.shape[1] for p in parts)

    def pad(t: Tensor, width: int) -> Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    return Tridiagonal(
        torch.cat([pad(p.alphas, m) for p in parts]),
        torch.cat([pad(p.betas, m - 1) for p in parts]),
        torch.cat([p.residual_norms for p in parts]),
        sum(p.num_matvecs for p in parts),
        sum(p.num_passes for p in parts),
    )


def density_from_lanczos(
    tri: Tridiagonal,
    *,
    sigma: float | None = None,
    grid: Tensor | int = 1024,
    outliers: bool = True,
    gap: float = 1.3,
    separation: float = 3.0,
    contrast: float = 5.0,
    max_outliers: int = 50,
) -> SpectralDensity:
    """Assemble the SLQ density of :func:`spectral_density` from finished Lanczos runs.

    Parameters
    ----------
    tri : Tridiagonal
        The runs (one per probe).
    sigma, grid, gap, separation, contrast, max_outliers
        As for :func:`spectral_density`.
    outliers : bool, optional
        Split outliers off the first run (only meaningful with reorthogonalized runs).

    Returns
    -------
    SpectralDensity
        The density, its nodes and weights, and the outlier split.
    """
    theta, S = torch.linalg.eigh(tri.matrices())
    weights = S[:, 0, :] ** 2
    num_probes, steps = theta.shape
    lo, hi = float(theta.min()), float(theta.max())
    width = float(sigma) if sigma is not None else max((hi - lo) / steps, 1e-12 * max(1, abs(hi)))
    if isinstance(grid, int):
        grid_t = torch.linspace(lo - 5 * width, hi + 5 * width, grid, dtype=torch.float64)
    else:
        grid_t = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    kernel = torch.exp(-0.5 * ((grid_t[:, None] - theta.reshape(1, -1)) / width) ** 2)
    density = kernel @ weights.reshape(-1) / (num_probes * width * math.sqrt(2 * math.pi))

    empty = torch.zeros(0, dtype=torch.float64)
    found, separations, edge, ratio = empty, empty, None, 1.0
    if outliers:
        # Without reorthogonalization Ritz values repeat (ghosts) and would pass for outliers.
        residuals = tri.residual_norms[0] * S[0, -1, :].abs()
        converged = residuals <= 1e-3 * max(abs(lo), abs(hi), 1e-300)
        found, separations, edge, ratio = split_outliers(
            theta[0],
            converged,
            width,
            gap=gap,
            separation=separation,
            contrast=contrast,
            max_outliers=max_outliers,
        )
    return SpectralDensity(
        grid=grid_t,
        density=density,
        nodes=theta,
        weights=weights,
        sigma=width,
        outliers=found,
        outlier_separations=separations,
        bulk_edge=edge,
        gap_ratio=ratio,
        num_matvecs=tri.num_matvecs,
        num_passes=tri.num_passes,
    )


def find_outliers(top: Tensor, *, gap: float = 1.3) -> tuple[Tensor, float | None, float]:
    r"""Split the largest eigenvalues into outliers and bulk at their largest ratio gap.

    Parameters
    ----------
    top : Tensor
        Accurate (converged) top eigenvalues, any order.
    gap : float, optional
        Minimum ratio :math:`\lambda_c/\lambda_{c+1}` accepted as a gap.

    Returns
    -------
    outliers : Tensor
        The eigenvalues above the gap, descending (empty when there is no clear gap).
    bulk_edge : float or None
        :math:`\sqrt{\lambda_c\lambda_{c+1}}`, or ``None`` without a clear gap.
    gap_ratio : float
        The largest ratio found (1.0 when fewer than two positive values are given).

    Examples
    --------
    >>> outliers, edge, ratio = find_outliers(torch.tensor([10.0, 9.0, 2.0, 1.9, 1.8]))
    >>> outliers, round(edge, 4), ratio
    (tensor([10.,  9.], dtype=torch.float64), 4.2426, 4.5)
    >>> find_outliers(torch.tensor([2.0, 1.9, 1.8]))[1] is None
    True
    """
    values = torch.sort(top.double()[top > 0], descending=True).values
    if values.numel() < 2:
        return values[:0], None, 1.0
    ratios = values[:-1] / values[1:]
    c = int(torch.argmax(ratios))
    best = float(ratios[c])
    if best <= gap:
        return values[:0], None, best
    return values[: c + 1], math.sqrt(float(values[c]) * float(values[c + 1])), best


_SPACING_GAPS = 3  # gaps below a candidate that measure the bulk's spacing


def split_outliers(
    ritz: Tensor,
    converged: Tensor,
    sigma: float,
    *,
    gap: float = 1.3,
    separation: float = 3.0,
    contrast: float = 5.0,
    max_outliers: int = 50,
) -> tuple[Tensor, Tensor, float | None, float]:
    r"""Split one Lanczos run's Ritz values into outliers and bulk at a clear gap.

    With the converged top Ritz values sorted :math:`\theta_1 \ge \theta_2 \ge \dots`
    and the gaps :math:`g_j = \theta_j - \theta_{j+1}`, a split after :math:`c` is clear
    when either

    * the ratio :math:`\theta_c/\theta_{c+1}` is the largest and exceeds ``gap`` (the
      log-gap rule of Sagun et al. and Papyan, right for a bulk near zero), or
    * :math:`g_c \ge s\,\sigma` and :math:`g_c \ge \kappa\max(g_{c+1}, g_{c+2},
      g_{c+3})`: the gap is wide against the kernel width :math:`\sigma` (edge
      fluctuations of a continuous bulk are far narrower) and against the bulk's own spacing
      just below it (the top of a square-root edge has gaps within about 2x of each other,
      so a sparse but continuous tail does not qualify). This finds outliers near a bulk far
      from zero, where every ratio is small (Papyan 2020, Fig. 15a: 4.469 over an edge at
      3.957, ratio 1.13, gap 20x the spacing below).

    The lowest clear split wins: everything above it is an outlier. The bulk edge is
    :math:`\theta_{c+1}`, the top bulk Ritz value (it approaches the edge from below), and
    each outlier's separation is :math:`(\theta_j - \theta_{c+1})/\sigma`.

    Parameters
    ----------
    ritz : Tensor
        The Ritz values of one run, any order.
    converged : Tensor
        Booleans, same order: which Ritz values have converged.
    sigma : float
        The density's kernel width.
    gap : float, optional
        Smallest ratio for the ratio rule.
    separation : float, optional
        :math:`s`, the smallest gap in kernel widths for the spacing rule.
    contrast : float, optional
        :math:`\kappa`, the smallest ratio of the gap to the bulk spacing below it.
    max_outliers : int, optional
        Largest outlier count considered.

    Returns
    -------
    outliers : Tensor
        The values above the gap, descending (empty when there is no clear gap).
    separations : Tensor
        Their distances to the bulk edge in units of ``sigma``.
    bulk_edge : float or None
        :math:`\theta_{c+1}`, or ``None`` without a clear gap.
    gap_ratio : float
        :math:`\theta_c/\theta_{c+1}` at the split (without one, the largest ratio of
        consecutive positive converged top values; 1.0 when there are none).

    References
    ----------
    V. Papyan, "Traces of class/cross-class structure pervade deep learning spectra", JMLR
    21, 2020 (Fig. 15a: outliers near the bulk edge). J. Baik, G. Ben Arous, S. Péché,
    "Phase transition of the largest eigenvalue for nonnull complex sample covariance
    matrices", Ann. Probab. 33(5), 2005.

    Examples
    --------
    >>> ritz = torch.tensor([6.23, 5.33, 4.47, 3.95, 3.92, 3.88, 3.83, 3.2], dtype=torch.float64)
    >>> out, sep, edge, _ = split_outliers(ritz, torch.ones(8, dtype=torch.bool), 0.08)
    >>> out.tolist(), edge, [round(x, 1) for x in sep.tolist()]
    ([6.23, 5.33, 4.47], 3.95, [28.5, 17.2, 6.5])
    """
    order = torch.argsort(ritz.double(), descending=True)
    values = ritz.double()[order]
    leading = int(torch.cumprod(converged[order].long(), 0).sum())
    gaps = values[:-1] - values[1:]
    top = values[: min(leading, max_outliers + 1)]
    positive = top[top > 0]
    ratios = positive[:-1] / positive[1:]
    largest = float(ratios.max()) if ratios.numel() else 1.0
    split = int(torch.argmax(ratios)) + 1 if largest > gap else None
    for c in range(1, min(leading, max_outliers, values.numel() - 1) + 1):
        below = gaps[c : c + _SPACING_GAPS]
        if below.numel() == 0:
            break
        width = float(gaps[c - 1])
        if width >= separation * sigma and width >= contrast * float(below.max()):
            split = max(c, split or 0)
    empty = values[:0]
    if split is None:
        return empty, empty, None, largest
    edge = float(values[split])
    ratio = float(values[split - 1] / values[split]) if edge > 0 else math.inf
    return values[:split], (values[:split] - edge) / sigma, edge, ratio
