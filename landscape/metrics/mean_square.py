r"""Exact mean-square linear stability of SGD at an interpolating minimum, in function space.

Near a minimum :math:`\theta^*` where every per-example gradient vanishes (interpolation),
SGD with batch size :math:`B` drawn uniformly without replacement from :math:`n` examples is the
random linear recursion :math:`\delta' = (I - \eta H_S)\delta`. Its second moment
:math:`\Sigma = E[\delta\delta^\top]` evolves as

.. math::
    \Sigma' = (I-\eta H)\Sigma(I-\eta H)
        + \eta^2 p \Big[\tfrac1n \textstyle\sum_i H_i \Sigma H_i - H\Sigma H\Big],
    \qquad p = \frac{n-B}{B(n-1)}

(:math:`p = 1/B` with replacement), and SGD is mean-square stable iff the spectral radius of
this map is at most one. The map is positive and self-adjoint on symmetric matrices, so the
threshold is :math:`\eta_{ms}(B) = 1/\mu_{\max}` for the top generalized eigenvalue of

.. math::
    Q(\Sigma) = \mu A(\Sigma), \quad A(\Sigma) = H\Sigma + \Sigma H, \quad
    Q(\Sigma) = (1-p) H\Sigma H + \tfrac{p}{n}\textstyle\sum_i H_i\Sigma H_i .

With Gauss-Newton per-example Hessians :math:`H_i = F_i^\top F_i`
(:math:`F_i = \Lambda_i^{1/2} J_i`, exact at an interpolating minimum of the squared loss),
everything reduces to the Gram matrix :math:`K = F F^\top` (:math:`n k \times n k`): with
:math:`K = U D U^\top`, :math:`D = \operatorname{diag}(\kappa)` and :math:`F = U D^{1/2} W^\top`,
the range :math:`W` of :math:`F^\top` carries :math:`W^\top H W = D/n` and
:math:`W^\top H_i W = D^{1/2} U_i^\top U_i D^{1/2}`,
so :math:`A` is diagonal and the problem has size :math:`r^2` for :math:`K`'s rank :math:`r`,
whatever the number of parameters.

References
----------
Mulayoff & Michaeli (2023), "Exact Mean Square Linear Stability Analysis for SGD",
arXiv:2306.07850; Wu, Ma & E (NeurIPS 2018), "How SGD Selects the Global Minima in
Over-parameterized Learning"; Wu & Su (ICML 2023), "The Implicit Regularization of Dynamical
Stability in Stochastic Gradient Descent".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

__all__ = ["GramSpectrum", "gram_spectrum", "mean_square_threshold", "nonuniformity"]


@dataclass(frozen=True)
class GramSpectrum:
    r"""The eigendecomposition of a per-example Gram matrix, restricted to its range.

    Attributes
    ----------
    values : Tensor
        Positive eigenvalues :math:`\kappa` of :math:`K`, shape ``(r,)`` (float64).
    blocks : Tensor
        Eigenvectors split per example, shape ``(m, k, r)``: ``blocks[i] = U_i``.
    num_examples : int
        :math:`m`.
    """

    values: Tensor
    blocks: Tensor
    num_examples: int

    @property
    def sharpness(self) -> float:
        r""":math:`\lambda_{\max}(H) = \kappa_{\max}/m`."""
        return float(self.values.max()) / self.num_examples

    @property
    def trace(self) -> float:
        r""":math:`\operatorname{tr} H = \operatorname{tr} K / m`."""
        return float(self.values.sum()) / self.num_examples


def gram_spectrum(K: Tensor, block: int, *, rtol: float = 1e-10) -> GramSpectrum:
    r"""Eigendecompose a per-example Gram matrix :math:`K = F F^\top` with ``block`` rows each.

    Parameters
    ----------
    K : Tensor
        Symmetric PSD matrix of shape ``(m * block, m * block)``; rows ``i*block`` to
        ``(i+1)*block - 1`` belong to example ``i``.
    block : int
        Rows per example (the output dimension :math:`k`).
    rtol : float, optional
        Eigenvalues below ``rtol * max`` are treated as zero (outside the range).

    Returns
    -------
    GramSpectrum
        The positive part of the spectrum, and its eigenvectors per example.

    Raises
    ------
    ValueError
        If the shape does not split into blocks, or ``K`` has no positive eigenvalue.

    Examples
    --------
    >>> F = torch.randn(6, 3, dtype=torch.float64)   # 3 examples, 2 outputs, 3 parameters
    >>> g = gram_spectrum(F @ F.T, 2)
    >>> g.values.shape, g.blocks.shape
    (torch.Size([3]), torch.Size([3, 2, 3]))
    """
    K = torch.as_tensor(K).detach().to(torch.float64).cpu()
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] % block:
        raise ValueError(f"K must be square with a multiple of {block} rows; got {tuple(K.shape)}.")
    values, vectors = torch.linalg.eigh((K + K.T) / 2)
    top = float(values.max())
    if not top > 0:
        raise ValueError("the Gram matrix has no positive eigenvalue (zero curvature).")
    keep = values > rtol * top
    m = K.shape[0] // block
    U = vectors[:, keep]
    return GramSpectrum(values[keep], U.reshape(m, block, -1), m)


def _sampling_factor(batch_size: int, num_samples: int, replacement: bool) -> float:
    if replacement:
        return 1.0 / batch_size
    if batch_size >= num_samples:
        return 0.0
    return (num_samples - batch_size) / (batch_size * (num_samples - 1))


def mean_square_threshold(
    gram: GramSpectrum,
    batch_size: int,
    *,
    num_samples: int | None = None,
    replacement: bool = False,
    tol: float = 1e-10,
) -> float:
    r"""Return the exact mean-square stability threshold :math:`\eta_{ms}(B)` of SGD.

    Solves :math:`Q(\Sigma) = \mu A(\Sigma)` (module docstring) on the range of the
    per-example Hessians: with :math:`X = W^\top \Sigma W` and
    :math:`\hat H_i = \mathrm{diag}(\kappa)^{1/2} U_i^\top U_i \mathrm{diag}(\kappa)^{1/2}`,

    .. math::
        A(X)_{ab} = \frac{\kappa_a+\kappa_b}{m} X_{ab}, \qquad
        Q(X)_{ab} = \frac{1-p}{m^2}\, \kappa_a\kappa_b X_{ab}
             + \frac{p}{m} \Big(\textstyle\sum_i \hat H_i X \hat H_i\Big)_{ab},

    and :math:`\eta_{ms} = 1/\mu_{\max}` of the symmetric operator
    :math:`A^{-1/2} Q A^{-1/2}`. For :math:`B = n` (:math:`p = 0`) this is exactly
    :math:`2/\lambda_{\max}(H)`; :math:`\eta_{ms}` is non-decreasing in :math:`B`.

    Parameters
    ----------
    gram : GramSpectrum
        From :func:`gram_spectrum` of the per-example Gauss-Newton factors
        (:math:`H_i = F_i^\top F_i`, :math:`H = \frac1m \sum_i H_i`).
    batch_size : int
        :math:`B \ge 1`.
    num_samples : int, optional
        Dataset size :math:`n` for the without-replacement factor :math:`p` (default: the
        :math:`m` examples of ``gram``; pass the true :math:`n` when ``gram`` holds a random
        subset whose moments estimate the dataset's).
    replacement : bool, optional
        Batches drawn with replacement (:math:`p = 1/B`).
    tol : float, optional
        Eigensolver tolerance.

    Returns
    -------
    float
        :math:`\eta_{ms}(B)`.

    Raises
    ------
    ValueError
        If ``batch_size < 1``.

    References
    ----------
    Mulayoff & Michaeli (2023), arXiv:2306.07850 (exact threshold); Wu, Ma & E (2018).

    Examples
    --------
    One example, one parameter, curvature 4: GD and SGD agree, :math:`\eta = 2/4`.

    >>> g = gram_spectrum(torch.tensor([[4.0]]), 1)
    >>> round(mean_square_threshold(g, 1), 12)
    0.5
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    m = gram.num_examples
    n = m if num_samples is None else int(num_samples)
    p = _sampling_factor(batch_size, n, replacement)
    kappa = gram.values
    r = kappa.numel()
    U = gram.blocks  # (m, k, r)
    A = (kappa[:, None] + kappa[None, :]) / m
    scale = A.rsqrt()
    kk = kappa[:, None] * kappa[None, :]
    root = kappa.sqrt()
    # Per-example Hessians in the orthonormal basis W of the range (F = U diag(kappa)^1/2 W^T):
    # W^T H_i W = V_i^T V_i with V_i = U_i diag(kappa)^1/2, symmetric, so Q is self-adjoint.
    # Kept factored: memory m k r, and m k r^2 flops per product.
    V = U * root  # (m, k, r)

    def Q(X: Tensor) -> Tensor:
        out = (1.0 - p) / m**2 * kk * X
        if p > 0:
            out = out + (p / m) * _sandwiches(V, X)
        return out

    def operator(x: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(r, r)
        X = (X + X.T) / 2
        return (scale * Q(scale * X)).reshape(-1).numpy()

    if r * r <= 400:  # tiny: a dense eigensolve is faster and exact
        basis = np.eye(r * r)
        M = np.stack([operator(basis[:, j]) for j in range(r * r)], axis=1)
        mu = float(np.linalg.eigvalsh((M + M.T) / 2).max())
    else:
        op = scipy.sparse.linalg.LinearOperator((r * r, r * r), matvec=operator, dtype=np.float64)
        v0 = np.eye(r).reshape(
            -1
        )  # Sigma = identity on the range: positive, near the Perron vector
        mu = float(scipy.sparse.linalg.eigsh(op, k=1, which="LA", v0=v0, tol=tol)[0][0])
    return 1.0 / mu


def _sandwiches(V: Tensor, X: Tensor) -> Tensor:
    r"""Return :math:`\sum_i V_i^\top V_i X V_i^\top V_i` for factors ``V`` of shape (m, k, r).

    Returns
    -------
    Tensor
        ``(r, r)``, from ``m k r^2`` flops: the factors are never multiplied out.
    """
    flat = V.reshape(-1, V.shape[-1])
    VX = (flat @ X).reshape(V.shape)  # V_i X
    Y = torch.einsum("iks,ils->ikl", VX, V)  # V_i X V_i^T, (m, k, k)
    W = torch.einsum("ikl,ils->iks", Y, V).reshape(flat.shape)
    return flat.T @ W


def sandwich_seconds(m: int, k: int, r: int) -> float:
    """Return the seconds of one product of :func:`mean_square_threshold`'s operator.

    Timed on random factors of the shape the threshold of ``m`` examples with ``k`` outputs
    and a range of rank ``r`` uses (``m k r^2`` flops in small batched products, far below
    a dense matrix product's rate): the unit the time planner counts the exact threshold in.

    Parameters
    ----------
    m, k, r : int
        Examples, outputs per example, rank.

    Returns
    -------
    float
        The faster of two timed products.
    """
    generator = torch.Generator().manual_seed(0)
    V = torch.randn(m, k, r, dtype=torch.float64, generator=generator)
    X = torch.randn(r, r, dtype=torch.float64, generator=generator)
    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        _sandwiches(V, X)
        best = min(best, time.perf_counter() - start)
    return best


def nonuniformity(gram: GramSpectrum) -> float:
    r"""Return Wu, Ma & E's non-uniformity of the per-example Hessians.

    .. math::
        s = \lambda_{\max}\Big(\tfrac1m\textstyle\sum_i H_i^2 - H^2\Big)^{1/2}

    With :math:`H_i = F_i^\top F_i` and :math:`D = \mathrm{diag}(\kappa)`, on the range of
    :math:`F^\top` this is the top eigenvalue of
    :math:`\frac1m\sum_i D^{1/2} U_i^\top K_{ii} U_i D^{1/2} - \frac{1}{m^2} D^2`, with
    :math:`K_{ii} = U_i D U_i^\top`.
    Wu, Ma & E derive :math:`\lambda_{\max}(H) \le 2/\eta` and :math:`s \le \sqrt{B}/\eta`
    (with replacement) from a sufficient stability criterion; in one dimension these are
    exactly mean-square stability, in higher dimensions the exact threshold
    (:func:`mean_square_threshold`) can exceed the second bound — we found examples.

    Parameters
    ----------
    gram : GramSpectrum
        From :func:`gram_spectrum`.

    Returns
    -------
    float
        :math:`s \ge 0`.

    References
    ----------
    Wu, Ma & E (NeurIPS 2018), "How SGD Selects the Global Minima in Over-parameterized
    Learning".

    Examples
    --------
    Identical examples: no non-uniformity.

    >>> F = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    >>> round(nonuniformity(gram_spectrum(F @ F.T, 1)), 6)
    0.0
    """
    kappa, U, m = gram.values, gram.blocks, gram.num_examples
    root = kappa.sqrt()
    UK = U * kappa  # (m, k, r): U_i diag(kappa)
    Kii = torch.einsum("ikr,ilr->ikl", UK, U)
    C = torch.einsum("ikr,ikl,ils->rs", U, Kii, U) / m
    C = root[:, None] * C * root[None, :] - torch.diag(kappa**2) / m**2
    return float(torch.linalg.eigvalsh((C + C.T) / 2).max().clamp_min(0.0).sqrt())
