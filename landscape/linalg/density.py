r"""Spectral densities by stochastic Lanczos quadrature (SLQ), with bulk/outlier separation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from landscape.linalg._random import as_generator, rademacher
from landscape.linalg.lanczos import batched_lanczos
from landscape.linalg.results import SpectralDensity
from landscape.operators.scipy_wrapper import as_operator

__all__ = ["find_outliers", "spectral_density"]

_REORTHOGONALIZE_BYTES = 2 * 1024**3


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
    max_outliers: int = 50,
    progress: bool = False,
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
    outliers (about one per class) above a bulk near zero. From the first run's leading
    converged top Ritz values :math:`\lambda_1 \ge \lambda_2 \ge \dots` (each with residual
    below :math:`10^{-3}\max|\theta|`; at most ``max_outliers + 1``), the outlier count is
    the :math:`c` maximizing :math:`\lambda_c/\lambda_{c+1}`, accepted only if that ratio
    exceeds ``gap``; then the bulk edge is :math:`\sqrt{\lambda_c\lambda_{c+1}}`. Otherwise
    the result reports no outliers and ``bulk_edge=None`` ("no clear gap") rather than
    forcing a split.

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
        Full reorthogonalization of each run (memory ``P * num_probes * num_steps``);
        ``"auto"`` when that takes at most 2 GiB. Without it the quadrature stays accurate
        (Greenbaum 1989; Chen, Trogdon & Ubaru 2021) but Ritz values repeat ("ghosts"), so
        outliers are then not reported.
    gap : float, optional
        Minimum ratio of consecutive top eigenvalues that counts as a gap.
    max_outliers : int, optional
        Largest outlier count considered.
    progress : bool, optional
        Show a tqdm progress bar over Lanczos steps.

    Returns
    -------
    SpectralDensity
        ``grid``, ``density``, ``nodes``, ``weights``, ``sigma``, ``outliers``,
        ``bulk_edge``, ``gap_ratio``, ``num_matvecs``, ``num_passes``.

    Raises
    ------
    ValueError
        For non-positive ``num_probes``/``num_steps``/``sigma`` or ``gap <= 1``.

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
    n = A.shape[0]
    for name, value in (("num_probes", num_probes), ("num_steps", num_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}.")
    if not gap > 1:
        raise ValueError(f"gap must exceed 1; got {gap!r}.")
    steps = min(num_steps, n)
    if reorthogonalize == "auto":
        itemsize = torch.empty(0, dtype=A.dtype).element_size()
        reorthogonalize = n * num_probes * steps * itemsize <= _REORTHOGONALIZE_BYTES
    generator = as_generator(seed)
    probes = rademacher(n, num_probes, generator, dtype=A.dtype, device=A.device)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="spectral density (SLQ)", unit="pass", leave=False)
    try:
        tri = batched_lanczos(
            A,
            probes,
            steps,
            reorthogonalize=bool(reorthogonalize),
            generator=generator,
            callback=(lambda _: bar.update(1)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    theta, S = torch.linalg.eigh(tri.matrices())
    weights = S[:, 0, :] ** 2
    lo, hi = float(theta.min()), float(theta.max())
    width = float(sigma) if sigma is not None else max((hi - lo) / steps, 1e-12 * max(1, abs(hi)))
    if isinstance(grid, int):
        grid_t = torch.linspace(lo - 5 * width, hi + 5 * width, grid, dtype=torch.float64)
    else:
        grid_t = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    kernel = torch.exp(-0.5 * ((grid_t[:, None] - theta.reshape(1, -1)) / width) ** 2)
    density = kernel @ weights.reshape(-1) / (num_probes * width * math.sqrt(2 * math.pi))

    outliers, edge, ratio = torch.zeros(0, dtype=torch.float64), None, 1.0
    if reorthogonalize:
        # The leading run of converged top Ritz values of the first probe (at most
        # max_outliers + 1 of them): both sides of an accepted gap are then accurate.
        residuals = tri.residual_norms[0] * S[0, -1, :].abs()
        order = torch.argsort(theta[0], descending=True)
        ok = residuals[order] <= 1e-3 * max(abs(lo), abs(hi), 1e-300)
        leading = int(torch.cumprod(ok.long(), 0).sum())
        top = theta[0][order[: min(leading, max_outliers + 1)]]
        outliers, edge, ratio = find_outliers(top, gap=gap)
    return SpectralDensity(
        grid=grid_t,
        density=density,
        nodes=theta,
        weights=weights,
        sigma=width,
        outliers=outliers,
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
