r"""Stochastic estimators of the trace, the diagonal and the Frobenius norm of a symmetric operator.

All of them see the operator only through ``A.matmat``, and every stage pushes all of its
probe vectors through *one* call, which is one pass over the data for curvature operators:

===========================  =========================================  ============  ==========
estimator                    what it estimates                          passes        matvecs
===========================  =========================================  ============  ==========
:func:`hutchinson_trace`     :math:`\operatorname{tr} A`                1 per block   m
:func:`hutchpp_trace`        :math:`\operatorname{tr} A`                2             m
:func:`xtrace`               :math:`\operatorname{tr} A`                2             2⌊m/2⌋
:func:`diagonal`             :math:`\operatorname{diag} A`              1 per block   m
:func:`frobenius_norm`       :math:`\lVert A \rVert_F`                  1             m
===========================  =========================================  ============  ==========

:func:`trace` dispatches between the three trace estimators and optionally repeats
independent rounds until a relative tolerance is met.

Hutchinson's error falls like :math:`m^{-1/2}`. Hutch++ and XTrace first capture the dominant
eigenspace with a randomized range finder and only estimate the remainder stochastically, so
their error falls like :math:`m^{-1}` when the spectrum decays (a few outliers above a bulk, as
in neural-network Hessians); on a flat spectrum they spend matvecs on the sketch for little
gain, and Hutchinson can be as good (see ``REFERENCES.md`` section 7).

Randomness: probes are drawn on the CPU from ``as_generator(seed)`` and then moved to the
operator's device, so a result depends only on the seed, not on the device. Probe ``j`` is
always the ``j``-th draw from the generator, so :func:`hutchinson_trace` and :func:`diagonal`
give the same result whatever ``block_size``.

All tensors stay on ``A.device`` in ``A.dtype``; only the per-probe scalars are copied to the
CPU (as float64) to form the mean and the standard error.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscape.linalg._random import ProbeStream, as_generator
from landscape.linalg.results import Estimate
from landscape.memory import DEFAULT_WORKSPACE, MemoryBudget, vector_bytes
from landscape.operators.base import LinearOperator
from landscape.operators.scipy_wrapper import as_operator
from landscape.operators.space import VectorSpace

__all__ = [
    "DiagonalEstimate",
    "diagonal",
    "frobenius_norm",
    "hutchinson_trace",
    "hutchpp_trace",
    "trace",
    "xtrace",
]

METHODS = ("hutchinson", "hutch++", "xtrace")
_DEFAULT_MATVECS = {"hutchinson": 100, "hutch++": 99, "xtrace": 100}
_MIN_MATVECS = {"hutchinson": 1, "hutch++": 3, "xtrace": 2}
_DEFAULT_CAP = 1000
# The adaptive Hutchinson rule is not checked on fewer probes than this (a standard error
# estimated from a handful of samples is itself too noisy to stop on).
_MIN_ADAPTIVE_PROBES = 10
#: Vectors per probe in one ``matmat``: the probe, its product and the operator's buffers.
PROBE_VECTORS = 4
#: XTrace holds about six blocks of its k probes at its peak.
_XTRACE_BLOCKS = 6


@dataclass(frozen=True)
class DiagonalEstimate:
    """A stochastic estimate of the diagonal of an operator, entry by entry.

    Attributes
    ----------
    values : Tensor
        Estimated diagonal, shape ``(n,)``, in the operator's dtype and on its device.
    stderr : Tensor
        Estimated standard error of each entry, same shape, dtype and device (``nan`` with a
        single probe).
    num_matvecs : int
        Operator products used.
    num_passes : int
        ``matmat`` calls used.
    """

    values: Tensor
    stderr: Tensor
    num_matvecs: int
    num_passes: int


# -- plumbing -----------------------------------------------------------------------------------


class _Counted:
    """Calls ``A.matmat`` and counts matvecs and passes (operators need not count their own)."""

    def __init__(self, A: LinearOperator) -> None:
        self.A = A
        self.matvecs = 0
        self.passes = 0

    def __call__(self, V: Tensor) -> Tensor:
        self.matvecs += V.shape[1]
        self.passes += 1
        return self.A.matmat(V)


def _count(value: Any, name: str, minimum: int | None = None, what: str = "") -> int:
    """Return ``value`` as an int, checked to be at least ``minimum`` where one is given.

    Returns
    -------
    int
        ``operator.index(value)``.

    Raises
    ------
    TypeError
        For bools, floats, strings and other non-integers.
    ValueError
        If it is less than ``minimum`` (the message ends with ``what``, e.g. " for XTrace").
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got a bool.")
    count = operator.index(value)
    if minimum is not None and count < minimum:
        raise ValueError(_too_small(name, count, minimum, what))
    return count


def _too_small(name: str, value: int, minimum: int, what: str = "") -> str:
    return f"{name} must be at least {minimum}{what}; got {value}."


def _sphere(space: VectorSpace, k: int, stream: ProbeStream) -> Tensor:
    # k probes uniform on the sphere of radius sqrt(n), as columns (drawn probe after probe).
    G = stream.next(k)
    return G * (math.sqrt(space.dim) / space.norms(G))


def _mean_stderr(samples: Tensor) -> tuple[float, float]:
    # The sample mean and its standard error (nan for a single sample).
    m = samples.numel()
    mean = float(samples.mean())
    if m < 2:
        return mean, math.nan
    return mean, float(samples.std(correction=1)) / math.sqrt(m)


def _quadratic_forms(space: VectorSpace, Z: Tensor, AZ: Tensor) -> Tensor:
    # z_j^T A z_j for each column, as a float64 CPU tensor.
    return space.dots(Z, AZ).to(device="cpu", dtype=torch.float64)


def least_vectors(method: str = "hutch++") -> int:
    """Return the parameter vectors the smallest trace estimate of ``method`` holds at once.

    One probe's :data:`PROBE_VECTORS`, and for Hutch++ (XTrace) the blocks of a one-column
    sketch that :func:`sketch_size` reserves: the sketch and its QR's copy (six blocks).

    Returns
    -------
    int
        Vectors of ``P`` numbers (of ``P / world`` on a sharded operator).

    Examples
    --------
    >>> least_vectors(), least_vectors("hutchinson"), least_vectors("xtrace")
    (6, 4, 10)
    """
    blocks = {"hutchinson": 0, "hutch++": 2, "xtrace": _XTRACE_BLOCKS}[method]
    return blocks + PROBE_VECTORS


def probe_block(A: LinearOperator, wanted: int, budget: MemoryBudget, *, reserved: int = 0) -> int:
    """Return how many probes go through one ``matmat``: ``wanted``, or fewer to fit the budget.

    A probe takes :data:`PROBE_VECTORS` vectors during its product; ``reserved`` vectors
    are held besides (a sketch).

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    MemoryBudgetError
        If not even one probe fits.
    """
    space = A.vector_space
    held = reserved * vector_bytes(space.local_dim, A.dtype)
    fits = budget.vectors(space.local_dim, A.dtype, reserved=held) // PROBE_VECTORS
    if fits < 1:
        budget.require(
            reserved + PROBE_VECTORS,
            space.local_dim,
            A.dtype,
            what="one probe and its product"
            + (f" next to {reserved} sketch vectors" if reserved else ""),
            knob="raise memory_budget= or lower num_matvecs=",
        )
    return max(1, min(wanted, fits))


def sketch_size(A: LinearOperator, wanted: int, blocks: int, budget: MemoryBudget) -> int:
    """Return a sketch size: ``wanted``, or fewer so that ``blocks`` blocks of it fit.

    The default-size cap (:data:`~landscape.memory.DEFAULT_WORKSPACE`, from the global
    dimension, so that results depend on :math:`P` and the seed only) comes first; the
    budget (this process's memory) can only lower it further.

    Returns
    -------
    int
        At least 1.
    """
    space = A.vector_space
    cap = DEFAULT_WORKSPACE // max(blocks * vector_bytes(space.dim, A.dtype), 1)
    fits = budget.vectors(space.local_dim, A.dtype) // (blocks + PROBE_VECTORS)
    return max(1, min(wanted, cap, fits))


def _orthonormal(space: VectorSpace, Y: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``Q, R`` with ``Y = QR``, ``Q`` orthonormal: ``Y``'s storage reused when it can be.

    Returns
    -------
    tuple of Tensor
        ``Q`` of shape ``(n, min(n, k))`` and ``R``.
    """
    if Y.shape[1] > space.dim:  # more columns than dimensions: only a whole space is this small
        return torch.linalg.qr(Y)
    R = space.orthonormalize(Y)
    return Y, R


def _hutchinson_samples(matmat: _Counted, m: int, block_size: int, stream: ProbeStream) -> Tensor:
    space = matmat.A.vector_space
    parts = []
    done = 0
    while done < m:
        k = min(block_size, m - done)
        Z = stream.next(k)
        parts.append(_quadratic_forms(space, Z, matmat(Z)))
        done += k
    return torch.cat(parts)


def _hutchpp_round(
    matmat: _Counted, m: int, generator: torch.Generator, budget: MemoryBudget
) -> tuple[float, float, Tensor]:
    """Run Hutch++ once with ``m`` matvecs.

    The sketch has ``k = m // 3`` columns, or fewer where they would not fit
    (:func:`sketch_size`; the residual probes get the rest of the matvecs); products go
    through ``matmat`` in blocks that fit the budget (2 passes when everything fits).

    Returns
    -------
    tuple of (float, float, Tensor)
        ``(value, stderr, samples)`` as in :func:`hutchpp_trace`.
    """
    A = matmat.A
    space = A.vector_space
    n = space.dim
    k = sketch_size(A, m // 3, 2, budget)  # the sketch and its QR's copy
    g = m - 2 * k
    stream = ProbeStream(space, generator, "signs")
    width = probe_block(A, k, budget, reserved=k)
    Q = torch.empty(space.local_dim, k, dtype=A.dtype, device=A.device)
    for start in range(0, k, width):
        stop = min(start + width, k)
        Q[:, start:stop] = matmat(stream.next(stop - start))
    Q, _ = _orthonormal(space, Q)  # (n, min(n, k))
    q = Q.shape[1]
    if q >= n:  # the sketch spans the whole space: tr(Q^T A Q) is exact
        exact = float(_quadratic_forms(space, Q, matmat(Q)).sum())
        return exact, 0.0, torch.tensor([exact], dtype=torch.float64)
    width = probe_block(A, q + g, budget, reserved=q)
    if width >= q + g:  # A Q and A G' in one pass
        G = stream.next(g)
        space.project_out_(G, Q.T)
        AV = matmat(torch.cat([Q, G], dim=1))
        low_rank = float(_quadratic_forms(space, Q, AV[:, :q]).sum())
        forms = _quadratic_forms(space, G, AV[:, q:])
    else:
        low_rank = 0.0
        for start in range(0, q, width):
            block = Q[:, start : start + width].contiguous()
            low_rank += float(_quadratic_forms(space, block, matmat(block)).sum())
        parts = []
        for start in range(0, g, width):
            G = stream.next(min(width, g - start))
            space.project_out_(G, Q.T)
            parts.append(_quadratic_forms(space, G, matmat(G)))
        forms = torch.cat(parts)
    samples = low_rank + forms
    value, stderr = _mean_stderr(samples)
    return value, stderr, samples


def _xtrace_round(
    matmat: _Counted, m: int, generator: torch.Generator
) -> tuple[float, float, Tensor]:
    """Run XTrace once with ``2 * (m // 2)`` matvecs.

    Returns
    -------
    tuple of (float, float, Tensor)
        ``(value, stderr, samples)`` as in :func:`xtrace`.
    """
    A = matmat.A
    space = A.vector_space
    n = space.dim
    k = m // 2
    Omega = _sphere(space, k, ProbeStream(space, generator, "gaussian"))
    Y = matmat(Omega)
    Q, R = _orthonormal(space, Y.clone())  # Q (n, min(n, k)), R (min(n, k), k)
    Z = matmat(Q)
    H = space.gram(Q, Z)
    H = (H + H.T) / 2
    if k > n:  # every leave-one-out sketch (k - 1 >= n columns) spans the whole space
        exact = float(H.trace())
        return exact, 0.0, torch.full((k,), exact, dtype=torch.float64)

    # s_i: unit vector with s_i ⟂ R e_j for all j != i (the i-th column of R^{-T}, normalized),
    # so that Q (I - s_i s_i^T) Q^T projects onto range(Y_{-i}). A numerically singular R
    # (rank(A) < k) gets its diagonal floored: s_i then points into the directions of range(Q)
    # that Y does not reach, which is what the leave-one-out projector needs.
    R = R.to(dtype=Q.dtype, device=Q.device)
    diag = R.diagonal()
    floor = max(torch.finfo(R.dtype).eps * float(diag.abs().max()), torch.finfo(R.dtype).tiny)
    sign = torch.where(diag < 0, -1.0, 1.0).to(R.dtype)
    R_floored = R - torch.diag(diag) + torch.diag(sign * diag.abs().clamp_min(floor))
    eye = torch.eye(k, dtype=R.dtype, device=R.device)
    S = torch.linalg.solve_triangular(R_floored, eye, upper=True).T
    S = S / S.abs().amax(dim=0)  # guard the norm against overflow
    S = S / torch.linalg.vector_norm(S, dim=0)

    # x_i = (I - P_i) omega_i = u_i + c_i Q s_i, with u_i = (I - QQ^T) omega_i ⟂ Q s_i and
    # c_i = s_i^T w_i, w_i = Q^T omega_i. The residuals U and A U = Y - Z W are formed
    # explicitly: expanding u_i^T A u_i through Q^T-projections instead cancels
    # catastrophically when omega_i nearly lies in range(Q) (k close to n).
    W = space.gram(Q, Omega)
    U = Omega - Q @ W
    del Omega
    AU = Y - Z @ W
    del Y
    c = (S * W).sum(0)
    sHs = (S * (H @ S)).sum(0)
    uAu = space.dots(U, AU)
    uAQs = (S * space.gram(Z, U)).sum(0)  # u_i^T A Q s_i
    xAx = uAu + 2 * c * uAQs + c**2 * sHs
    x_norm2 = space.dots(U, U) + c**2
    # Rescale x_i to the squared norm n - k + 1 of a uniform vector on the sphere of the
    # (n - k + 1)-dimensional complement of range(Y_{-i}) (the "improved" XTrace).
    ests = H.trace() - sHs + (n - k + 1) * xAx / x_norm2
    samples = ests.to(device="cpu", dtype=torch.float64)
    value, stderr = _mean_stderr(samples)
    return value, stderr, samples


def _rounds(
    matmat: _Counted, m: int, size: int, one_round: Any, generator: torch.Generator
) -> tuple[float, float, Tensor]:
    """Average independent rounds of ``size`` matvecs each, ``m`` matvecs in all (at most).

    Returns
    -------
    tuple of (float, float, Tensor)
        The mean of the rounds, its standard error and all samples.
    """
    values, variances, parts = [], [], []
    used = 0
    while used + size <= m or not values:
        before = matmat.matvecs
        value, stderr, samples = one_round(matmat, size, generator)
        values.append(value)
        variances.append(stderr**2)
        parts.append(samples)
        used += matmat.matvecs - before
    value = math.fsum(values) / len(values)
    stderr = math.sqrt(math.fsum(variances)) / len(values)
    return value, stderr, torch.cat(parts)


# -- public estimators --------------------------------------------------------------------------


def hutchinson_trace(
    A: Any,
    num_matvecs: int = 100,
    *,
    seed: int | torch.Generator | None = 0,
    block_size: int | None = None,
    memory_budget: Any = None,
) -> Estimate:
    r"""Estimate :math:`\operatorname{tr} A` with Hutchinson's estimator (Rademacher probes).

    .. math::
        \operatorname{tr} A \approx \frac1m \sum_{j=1}^m z_j^\top A z_j, \qquad
        \operatorname{Var} = \frac{2}{m}\Big(\lVert A\rVert_F^2 - \sum_i A_{ii}^2\Big),

    with :math:`z_j` independent vectors of random signs. The standard error is the sample
    standard deviation of the :math:`z_j^\top A z_j` over :math:`\sqrt m`; it is calibrated
    (the samples are i.i.d.). The estimate is exact for a diagonal :math:`A`.

    Parameters
    ----------
    A : LinearOperator, Tensor, numpy.ndarray or scipy.sparse.linalg.LinearOperator
        A symmetric operator (see :func:`~landscape.operators.scipy_wrapper.as_operator`).
    num_matvecs : int, optional
        Number of probes :math:`m`.
    block_size : int, optional
        Probes per ``matmat`` call (one pass each). Default: all :math:`m` at once (one
        pass holding :math:`P \times m` probe and product entries), or as many as
        ``memory_budget`` holds; a smaller block bounds the memory at :math:`P \times`
        ``block_size`` for ``ceil(m / block_size)`` passes. The estimate does not depend on
        the blocking.
    memory_budget : int, float or str, optional
        Bytes the probes, sketches and products may take (see :mod:`landscape.memory`;
        default a quarter of the free memory).

    Returns
    -------
    Estimate
        ``value``, ``stderr`` (``nan`` if :math:`m = 1`), costs, ``method="hutchinson"``, and
        ``samples``: the :math:`m` values :math:`z_j^\top A z_j` (float64, CPU).

    Raises
    ------
    ValueError
        If ``num_matvecs`` or ``block_size`` is less than 1, or ``A`` is not square.

    References
    ----------
    M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Communications in Statistics - Simulation and Computation
    18(3), 1989. H. Avron, S. Toledo, "Randomized algorithms for estimating the trace of an
    implicit symmetric positive semi-definite matrix", Journal of the ACM 58(2), 2011.

    Examples
    --------
    A diagonal matrix has an exact Hutchinson estimate (:math:`z_i^2 = 1`):

    >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    >>> est = hutchinson_trace(A, num_matvecs=8)
    >>> est.value, est.stderr, est.num_passes
    (6.0, 0.0, 1)
    """
    A = as_operator(A)
    m = _count(num_matvecs, "num_matvecs", 1)
    block = _block(A, m, block_size, memory_budget)
    matmat = _Counted(A)
    stream = ProbeStream(A.vector_space, as_generator(seed), "signs")
    samples = _hutchinson_samples(matmat, m, block, stream)
    value, stderr = _mean_stderr(samples)
    return Estimate(value, stderr, matmat.matvecs, matmat.passes, "hutchinson", samples)


def _block(A: LinearOperator, m: int, block_size: Any, memory_budget: Any) -> int:
    """Return the probes per ``matmat``: ``block_size`` (checked), else all that fit.

    Returns
    -------
    int
        The block width.

    Raises
    ------
    ValueError
        If ``block_size`` is less than 1.
    """
    if block_size is not None:
        return _count(block_size, "block_size", 1)
    return probe_block(A, m, MemoryBudget.resolve(memory_budget, A.device))


def hutchpp_trace(
    A: Any,
    num_matvecs: int = 99,
    *,
    seed: int | torch.Generator | None = 0,
    memory_budget: Any = None,
) -> Estimate:
    r"""Estimate :math:`\operatorname{tr} A` with Hutch++ (low-rank sketch plus Hutchinson).

    With :math:`k = \lfloor m/3 \rfloor` Rademacher vectors :math:`S`, :math:`Q =
    \operatorname{orth}(AS)` (``torch.linalg.qr``), and :math:`g = m - 2k` Rademacher vectors
    :math:`G` projected to :math:`G' = (I - QQ^\top)G`,

    .. math::
        \operatorname{tr} A \approx \operatorname{tr}(Q^\top A Q)
        + \frac1g \sum_{j=1}^{g} {g'_j}^\top A\, g'_j ,

    the second term being Hutchinson's estimator of :math:`\operatorname{tr}\big((I -
    QQ^\top) A (I - QQ^\top)\big)`. :math:`AQ` and :math:`AG'` go through one ``matmat``, so
    the cost is exactly 2 passes and :math:`m` matvecs, with :math:`P \times (k + g)` entries
    in memory in the second pass. The estimate is exact when :math:`\operatorname{rank} A \le
    k`. For PSD :math:`A`, :math:`m = O(1/\varepsilon)` matvecs give relative error
    :math:`\varepsilon` (Hutchinson needs :math:`O(1/\varepsilon^2)`); for indefinite
    :math:`A` the guarantee is relative to the nuclear norm.

    The standard error is the sample standard error of the residual Hutchinson term, i.e.
    *conditional on* :math:`Q`. Because the conditional mean is :math:`\operatorname{tr} A`
    for every :math:`Q`, its square is nonetheless an unbiased estimate of the unconditional
    variance.

    Parameters
    ----------
    A, seed
        As for :func:`hutchinson_trace`.
    num_matvecs : int, optional
        Total matvecs :math:`m \ge 3` (fewer are used if :math:`k \ge n`, when the sketch is
        the whole space and the estimate exact).
    memory_budget : int, float or str, optional
        Bytes the sketch and the products' blocks may take (see :mod:`landscape.memory`;
        default a quarter of the free memory). The sketch has at most as many columns as fit
        in 2 GiB twice over (:func:`sketch_size`: at :math:`P = 124` million in float32,
        2 columns) and in the budget; the residual probes take the rest of the matvecs.

    Returns
    -------
    Estimate
        ``value``, ``stderr`` (``nan`` if :math:`g = 1`; 0 when exact because :math:`k \ge
        n`), costs, ``method="hutch++"``, and ``samples``: :math:`\operatorname{tr}(Q^\top A
        Q) + {g'_j}^\top A g'_j` for each residual probe (their mean is ``value``).

    Raises
    ------
    ValueError
        If ``num_matvecs`` is less than 3, or ``A`` is not square.

    References
    ----------
    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal stochastic trace
    estimation", Symposium on Simplicity in Algorithms (SOSA), 2021. arXiv:2010.09649.

    Examples
    --------
    Exact for a matrix of rank at most :math:`\lfloor m/3 \rfloor`:

    >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    >>> est = hutchpp_trace(A, num_matvecs=12)
    >>> round(est.value, 10), est.num_matvecs, est.num_passes
    (6.0, 12, 2)
    """
    A = as_operator(A)
    m = _count(num_matvecs, "num_matvecs", 3, " for Hutch++")
    matmat = _Counted(A)
    budget = MemoryBudget.resolve(memory_budget, A.device)
    value, stderr, samples = _hutchpp_round(matmat, m, as_generator(seed), budget)
    return Estimate(value, stderr, matmat.matvecs, matmat.passes, "hutch++", samples)


def xtrace(
    A: Any,
    num_matvecs: int = 100,
    *,
    seed: int | torch.Generator | None = 0,
    memory_budget: Any = None,
) -> Estimate:
    r"""Estimate :math:`\operatorname{tr} A` with XTrace, the exchangeable leave-one-out estimator.

    With :math:`k = \lfloor m/2 \rfloor` probes :math:`\Omega = [\omega_1, \dots, \omega_k]`
    uniform on the sphere of radius :math:`\sqrt n`, :math:`Y = A\Omega`, and for each
    :math:`i` the projector :math:`P_i = Q_i Q_i^\top` onto the range of :math:`Y` without
    its :math:`i`-th column,

    .. math::
        \hat t_i = \operatorname{tr}(Q_i^\top A Q_i) + \tilde\omega_i^\top A\, \tilde\omega_i,
        \qquad \tilde\omega_i = \sqrt{n-k+1}\,
        \frac{(I - P_i)\,\omega_i}{\lVert (I - P_i)\,\omega_i \rVert},
        \qquad \operatorname{tr} A \approx \frac1k \sum_{i=1}^k \hat t_i ,

    the "improved" (normalized) variant of Epperly, Tropp and Webber, unbiased for every
    symmetric :math:`A`. Every probe serves both in a low-rank sketch and as a Hutchinson
    probe; errors are typically several times smaller than Hutch++'s at equal :math:`m`.

    Implementation: one QR :math:`Y = QR` and one more pass :math:`Z = AQ` (2 passes,
    :math:`2k` matvecs). All :math:`k` leave-one-out estimates follow from rank-one downdates
    of :math:`Q`: :math:`P_i = Q(I - s_i s_i^\top)Q^\top` with :math:`s_i` the normalized
    :math:`i`-th column of :math:`R^{-\top}`, so :math:`(I - P_i)\omega_i = u_i + (s_i^\top
    w_i)\, Q s_i` with :math:`W = Q^\top\Omega` and :math:`U = \Omega - QW`; the
    :math:`\hat t_i` then come from :math:`H = Q^\top Z`, :math:`W`, :math:`U`, :math:`AU = Y
    - ZW` and :math:`Z^\top U` in :math:`O(nk^2 + k^3)` time (the residuals are formed
    explicitly, which keeps the result accurate to rounding even for :math:`k` close to
    :math:`n`). Memory: about six :math:`n \times k` blocks at the peak. The estimate is exact
    when :math:`\operatorname{rank} A \le k - 1`.

    The error estimate is the sample standard deviation of the :math:`\hat t_i` over
    :math:`\sqrt k`. The :math:`\hat t_i` are exchangeable but not independent, so it is a
    heuristic (the authors' choice), not a calibrated standard error.

    Parameters
    ----------
    A, seed
        As for :func:`hutchinson_trace`.
    num_matvecs : int, optional
        Budget :math:`m \ge 2`; :math:`2\lfloor m/2 \rfloor` matvecs are used.
    memory_budget : int, float or str, optional
        Bytes XTrace's blocks may take (see :mod:`landscape.memory`; default a quarter of the
        free memory). Where six blocks of :math:`k` probes would take more than 2 GiB (or
        the budget), independent rounds of as many probes as fit are averaged, with the
        same :math:`m` matvecs in all.

    Returns
    -------
    Estimate
        ``value``, ``stderr`` (``nan`` if :math:`k = 1`; 0 when exact because :math:`k > n`),
        costs, ``method="xtrace"``, and ``samples``: the :math:`k` leave-one-out estimates
        :math:`\hat t_i` (float64, CPU; their mean is ``value``).

    Raises
    ------
    ValueError
        If ``num_matvecs`` is less than 2, or ``A`` is not square.

    References
    ----------
    E. N. Epperly, J. A. Tropp, R. J. Webber, "XTrace: Making the most of every sample in
    stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024. arXiv:2301.07825.
    Reference implementation: https://github.com/eepperly/XTrace.

    Examples
    --------
    Exact for a matrix of rank at most :math:`\lfloor m/2 \rfloor - 1`:

    >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    >>> est = xtrace(A, num_matvecs=8)
    >>> round(est.value, 10), est.num_matvecs, est.num_passes
    (6.0, 8, 2)
    """
    A = as_operator(A)
    m = _count(num_matvecs, "num_matvecs", 2, " for XTrace")
    matmat = _Counted(A)
    budget = MemoryBudget.resolve(memory_budget, A.device)
    size = 2 * sketch_size(A, m // 2, _XTRACE_BLOCKS, budget)
    value, stderr, samples = _rounds(matmat, m, size, _xtrace_round, as_generator(seed))
    return Estimate(value, stderr, matmat.matvecs, matmat.passes, "xtrace", samples)


def trace(
    A: Any,
    method: str = "hutch++",
    num_matvecs: int | None = None,
    rtol: float | None = None,
    seed: int | torch.Generator | None = 0,
    block_size: int | None = None,
    memory_budget: Any = None,
) -> Estimate:
    r"""Estimate :math:`\operatorname{tr} A`, optionally until a relative tolerance is met.

    Without ``rtol``, one call of :func:`hutchinson_trace`, :func:`hutchpp_trace` or
    :func:`xtrace` with ``num_matvecs`` (default 100, 99 for Hutch++).

    With ``rtol``, independent rounds are run (fresh probes from the same generator) until

    .. math::
        \mathrm{stderr} \le \mathrm{rtol} \cdot \lvert \mathrm{value} \rvert

    or the next round would exceed the budget ``num_matvecs`` (default 1000). A round costs
    the method's default: 99 matvecs for Hutch++, 100 for XTrace, and for Hutchinson
    ``block_size`` probes (default 100; one pass each, the last round trimmed to the budget).
    Hutchinson pools all its samples (``value`` is their mean, ``stderr`` their standard
    error) and stops no earlier than after 10 probes; Hutch++ and XTrace average the
    :math:`R` round estimates, with :math:`\mathrm{stderr} = \sqrt{\sum_r
    \mathrm{stderr}_r^2}/R`. If the budget is below one round, a single round uses it all.
    The rule trusts the estimated standard error, which for XTrace is only approximate.

    Parameters
    ----------
    A, seed
        As for :func:`hutchinson_trace`.
    method : {"hutch++", "hutchinson", "xtrace"}, optional
        The estimator (case-insensitive).
    num_matvecs : int, optional
        Matvecs for one estimate; with ``rtol``, the budget (cap) over all rounds.
    rtol : float, optional
        Target relative standard error; ``None`` (default) for a single estimate.
    block_size : int, optional
        Probes per ``matmat`` for ``method="hutchinson"`` (see :func:`hutchinson_trace`);
        with ``rtol``, also the round size.
    memory_budget : int, float or str, optional
        Bytes the estimator's vectors may take (see :mod:`landscape.memory`; default a quarter
        of the free memory): it sizes Hutchinson's blocks, Hutch++'s sketch and XTrace's
        rounds.

    Returns
    -------
    Estimate
        As returned by the chosen estimator; with ``rtol``, the combined estimate, the total
        cost and the samples of all rounds concatenated.

    Raises
    ------
    ValueError
        For an unknown ``method``, ``num_matvecs`` below the method's minimum (1, 3 for
        Hutch++, 2 for XTrace), ``rtol <= 0``, ``block_size < 1`` or ``block_size`` with
        another method than Hutchinson, or a non-square ``A``.

    References
    ----------
    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal stochastic trace
    estimation", SOSA 2021, arXiv:2010.09649. E. N. Epperly, J. A. Tropp, R. J. Webber,
    "XTrace: Making the most of every sample in stochastic trace estimation", SIAM J. Matrix
    Anal. Appl. 45(1), 2024, arXiv:2301.07825.

    Examples
    --------
    >>> A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    >>> trace(A, method="hutchinson").value
    55.0
    >>> est = trace(A, method="hutchinson", rtol=0.01, block_size=20)
    >>> est.value, est.num_matvecs, est.num_passes
    (55.0, 20, 1)
    """
    A = as_operator(A)
    key = method.lower() if isinstance(method, str) else method
    if key not in METHODS:
        raise ValueError(
            f"unknown trace method {method!r}; expected one of "
            + ", ".join(repr(name) for name in METHODS)
            + "."
        )
    block = None if block_size is None else _count(block_size, "block_size")
    if block is not None:
        if key != "hutchinson":
            raise ValueError(
                f"block_size applies to method='hutchinson' only; got method={method!r}."
            )
        if block < 1:
            raise ValueError(_too_small("block_size", block, 1))
    minimum = _MIN_MATVECS[key]

    if rtol is None:
        m = _DEFAULT_MATVECS[key] if num_matvecs is None else num_matvecs
        m = _count(m, "num_matvecs", minimum, f" for {key}")
        if key == "hutchinson":
            return hutchinson_trace(A, m, seed=seed, block_size=block, memory_budget=memory_budget)
        if key == "hutch++":
            return hutchpp_trace(A, m, seed=seed, memory_budget=memory_budget)
        return xtrace(A, m, seed=seed, memory_budget=memory_budget)

    rtol = float(rtol)
    if not rtol > 0:  # also rejects nan
        raise ValueError(f"rtol must be positive; got {rtol}.")
    cap = _DEFAULT_CAP if num_matvecs is None else num_matvecs
    cap = _count(cap, "num_matvecs", minimum, f" for {key}")
    generator = as_generator(seed)
    matmat = _Counted(A)
    budget = MemoryBudget.resolve(memory_budget, A.device)

    if key == "hutchinson":
        round_size = _DEFAULT_MATVECS[key] if block is None else block
        width = probe_block(A, round_size, budget)
        stream = ProbeStream(A.vector_space, generator, "signs")
        parts: list[Tensor] = []
        while matmat.matvecs < cap:
            k = min(round_size, cap - matmat.matvecs)
            parts.append(_hutchinson_samples(matmat, k, min(k, width), stream))
            samples = torch.cat(parts)
            value, stderr = _mean_stderr(samples)
            enough = samples.numel() >= min(cap, _MIN_ADAPTIVE_PROBES)
            if enough and stderr <= rtol * abs(value):
                break
        return Estimate(value, stderr, matmat.matvecs, matmat.passes, key, samples)

    if key == "hutch++":

        def one_round(counted: _Counted, size: int, g: torch.Generator) -> Any:
            return _hutchpp_round(counted, size, g, budget)

        round_size = min(_DEFAULT_MATVECS[key], cap)
    else:
        one_round = _xtrace_round  # type: ignore[assignment]
        round_size = min(_DEFAULT_MATVECS[key], cap, 2 * sketch_size(A, 50, _XTRACE_BLOCKS, budget))
    values, variances, parts = [], [], []
    while True:
        before = matmat.matvecs
        round_value, round_stderr, round_samples = one_round(matmat, round_size, generator)
        values.append(round_value)
        variances.append(round_stderr**2)
        parts.append(round_samples)
        value = math.fsum(values) / len(values)
        stderr = math.sqrt(math.fsum(variances)) / len(values)
        if stderr <= rtol * abs(value) or matmat.matvecs + (matmat.matvecs - before) > cap:
            break
    return Estimate(value, stderr, matmat.matvecs, matmat.passes, key, torch.cat(parts))


def diagonal(
    A: Any,
    num_matvecs: int = 100,
    *,
    seed: int | torch.Generator | None = 0,
    block_size: int | None = None,
    memory_budget: Any = None,
) -> DiagonalEstimate:
    r"""Estimate the diagonal of :math:`A` with Rademacher probes (Bekas, Kokiopoulou, Saad).

    .. math::
        \operatorname{diag} A \approx \frac1m \sum_{j=1}^m z_j \odot A z_j, \qquad
        \operatorname{Var}\big[(z \odot Az)_i\big] = \sum_{l \ne i} A_{il}^2 ,

    with :math:`z_j` independent vectors of random signs (so :math:`z_j \odot z_j = 1` and
    the normalization of Bekas et al. is trivial). Each entry's standard error is the sample
    standard deviation of :math:`(z_j \odot A z_j)_i` over :math:`\sqrt m`, accumulated over
    blocks with Chan's pairwise update (no :math:`P \times m` storage).

    Parameters
    ----------
    A, seed
        As for :func:`hutchinson_trace`.
    num_matvecs : int, optional
        Number of probes :math:`m`.
    block_size : int, optional
        Probes per ``matmat`` (one pass each); default all at once (:math:`P \times m`
        entries in memory), or as many as ``memory_budget`` holds.
    memory_budget : int, float or str, optional
        Bytes the probes and products may take (see :mod:`landscape.memory`; default a quarter
        of the free memory).

    Returns
    -------
    DiagonalEstimate
        ``values`` and per-entry ``stderr`` (shape ``(n,)``, ``A``'s dtype and device;
        ``stderr`` is ``nan`` for :math:`m = 1`), ``num_matvecs``, ``num_passes``.

    Raises
    ------
    ValueError
        If ``num_matvecs`` or ``block_size`` is less than 1, or ``A`` is not square.

    References
    ----------
    C. Bekas, E. Kokiopoulou, Y. Saad, "An estimator for the diagonal of a matrix", Applied
    Numerical Mathematics 57(11-12), 2007.

    Examples
    --------
    Exact for a diagonal matrix:

    >>> A = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    >>> est = diagonal(A, num_matvecs=4)
    >>> est.values, est.stderr
    (tensor([ 1., -2.,  3.], dtype=torch.float64), tensor([0., 0., 0.], dtype=torch.float64))
    """
    A = as_operator(A)
    m = _count(num_matvecs, "num_matvecs", 1)
    block = _block(A, m, block_size, memory_budget)
    stream = ProbeStream(A.vector_space, as_generator(seed), "signs")
    matmat = _Counted(A)
    n = A.vector_space.local_dim
    mean = torch.zeros(n, dtype=A.dtype, device=A.device)
    m2 = torch.zeros(n, dtype=A.dtype, device=A.device)
    count = 0
    while count < m:
        b = min(block, m - count)
        Z = stream.next(b)
        X = Z * matmat(Z)
        block_mean = X.mean(dim=1)
        block_m2 = ((X - block_mean[:, None]) ** 2).sum(dim=1)
        delta = block_mean - mean
        total = count + b
        mean = mean + delta * (b / total)
        m2 = m2 + block_m2 + delta**2 * (count * b / total)
        count = total
    stderr = torch.sqrt(m2 / (m - 1) / m) if m > 1 else torch.full_like(mean, math.nan)
    return DiagonalEstimate(mean, stderr, matmat.matvecs, matmat.passes)


def frobenius_norm(
    A: Any,
    num_matvecs: int = 30,
    *,
    seed: int | torch.Generator | None = 0,
    memory_budget: Any = None,
) -> Estimate:
    r"""Estimate the Frobenius norm :math:`\lVert A \rVert_F` from :math:`m` products.

    .. math::
        \lVert A \rVert_F^2 = \mathbb E \lVert A z \rVert^2 \approx
        \frac1m \sum_{j=1}^m \lVert A z_j \rVert^2, \qquad
        \lVert A \rVert_F \approx \sqrt{\widehat{\lVert A \rVert_F^2}}, \qquad
        \mathrm{stderr} \approx \frac{\mathrm{stderr}\big(\widehat{\lVert A\rVert_F^2}\big)}
        {2\, \widehat{\lVert A \rVert_F}} \ \text{(delta method)}.

    This is Hutchinson's estimator of :math:`\operatorname{tr}(A^\top A)`. The probes are
    Rademacher: any isotropic :math:`z` is unbiased, and random signs have the smallest
    variance, :math:`\frac2m(\lVert A^\top A\rVert_F^2 - \sum_i (A^\top A)_{ii}^2)` against
    :math:`\frac2m \lVert A^\top A \rVert_F^2` for Gaussian probes (exact when the columns of
    :math:`A` are orthogonal, e.g. diagonal :math:`A`). The square root makes the norm
    estimate slightly biased low (Jensen), by about :math:`\mathrm{stderr}^2 /
    \widehat{\lVert A\rVert_F}`. One pass.

    Parameters
    ----------
    A, seed
        As for :func:`hutchinson_trace`.
    num_matvecs : int, optional
        Number of probes :math:`m` (all in one ``matmat``).
    memory_budget : int, float or str, optional
        Bytes the probes and products may take (see :mod:`landscape.memory`; default a quarter
        of the free memory): the probes go through one ``matmat``, or blocks that fit.

    Returns
    -------
    Estimate
        ``value`` (the norm), ``stderr`` (delta method; ``nan`` if :math:`m = 1`), costs,
        ``method="frobenius"``, and ``samples``: the :math:`m` values :math:`\lVert A z_j
        \rVert^2` (their mean is ``value**2``).

    Raises
    ------
    ValueError
        If ``num_matvecs`` is less than 1, or ``A`` is not square.

    References
    ----------
    M. F. Hutchinson, Communications in Statistics - Simulation and Computation 18(3), 1989.
    F. Roosta-Khorasani, U. Ascher, "Improved bounds on sample size for implicit matrix trace
    estimators", Foundations of Computational Mathematics 15(5), 2015. arXiv:1308.2475.

    Examples
    --------
    >>> A = torch.diag(torch.tensor([3.0, -4.0], dtype=torch.float64))
    >>> est = frobenius_norm(A, num_matvecs=5)
    >>> est.value, est.stderr
    (5.0, 0.0)
    """
    A = as_operator(A)
    m = _count(num_matvecs, "num_matvecs", 1)
    matmat = _Counted(A)
    space = A.vector_space
    block = _block(A, m, None, memory_budget)
    stream = ProbeStream(space, as_generator(seed), "signs")
    parts = []
    for start in range(0, m, block):
        AZ = matmat(stream.next(min(block, m - start)))
        parts.append(space.dots(AZ, AZ).to(device="cpu", dtype=torch.float64))
        del AZ
    samples = torch.cat(parts)
    squared, squared_stderr = _mean_stderr(samples)
    value = math.sqrt(max(squared, 0.0))
    # Delta method; an all-zero sample (A z_j = 0 for every probe) keeps its 0 (or nan).
    stderr = squared_stderr / (2 * value) if value > 0 else squared_stderr
    return Estimate(value, stderr, matmat.matvecs, matmat.passes, "frobenius", samples)
