"""Result types of the spectral algorithms: frozen dataclasses that carry their cost."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from landscape.records import Record

__all__ = ["Eigenpairs", "Estimate", "SpectralDensity"]


@dataclass(frozen=True)
class Estimate(Record):
    """A stochastic estimate with its standard error and cost.

    Attributes
    ----------
    value : float
        The estimate.
    stderr : float
        Estimated standard error (one standard deviation of the estimator).
    num_matvecs : int
        Operator products used.
    num_passes : int
        ``matmat`` calls used (passes over the data for curvature operators).
    method : str
        Estimator name.
    samples : Tensor or None
        Per-probe samples where the estimator has them.
    """

    value: float
    stderr: float
    num_matvecs: int
    num_passes: int
    method: str
    samples: Tensor | None = field(default=None, repr=False)

    def __float__(self) -> float:
        return self.value


@dataclass(frozen=True)
class Eigenpairs(Record):
    """Eigenvalues, eigenvectors (columns) and their certificates.

    Attributes
    ----------
    values : Tensor
        Eigenvalues, shape ``(k,)``, in descending order (``"largest"``, ``"magnitude"``),
        ascending (``"smallest"``), or descending largest-first then smallest for ``"both"``.
    vectors : Tensor or None
        Unit eigenvectors in columns, shape ``(P, k)`` (``None`` where they were dropped:
        :meth:`without_vectors`, reports).
    residuals : Tensor
        ``||H v_i - lambda_i v_i||`` for each pair, shape ``(k,)``.
    converged : Tensor
        Boolean, shape ``(k,)``: residual within the requested tolerance.
    num_matvecs : int
        Operator products used.
    num_passes : int
        ``matmat`` calls used.
    named_vectors : list of dict or None
        The eigenvectors as parameter-shaped dicts, for curvature operators.
    """

    values: Tensor
    vectors: Tensor | None
    residuals: Tensor
    converged: Tensor
    num_matvecs: int
    num_passes: int
    named_vectors: list[dict[str, Tensor]] | None = field(default=None, repr=False)

    @property
    def all_converged(self) -> bool:
        """Whether every pair met the tolerance."""
        return bool(self.converged.all())

    def without_vectors(self) -> Eigenpairs:
        """Return the eigenvalues and certificates without the eigenvectors (for reports).

        Returns
        -------
        Eigenpairs
            The same pairs with ``vectors`` and ``named_vectors`` set to ``None``.
        """
        return dataclasses.replace(self, vectors=None, named_vectors=None)


@dataclass(frozen=True)
class SpectralDensity(Record):
    r"""A smoothed eigenvalue density from stochastic Lanczos quadrature.

    Attributes
    ----------
    grid : Tensor
        Points :math:`t` at which the density is evaluated.
    density : Tensor
        :math:`\phi(t)`, integrating to 1 over the grid.
    nodes : Tensor
        Ritz values, shape ``(num_probes, num_steps)``.
    weights : Tensor
        Quadrature weights, same shape; each row sums to 1.
    sigma : float
        Width of the Gaussian broadening kernel.
    outliers : Tensor
        Eigenvalues separated from the bulk by a clear gap (possibly empty).
    bulk_edge : float or None
        Upper edge of the bulk (``None`` when there is no clear gap).
    gap_ratio : float
        Ratio of the values either side of the gap (without one, the largest ratio of
        consecutive top Ritz values examined).
    num_matvecs : int
        Operator products used.
    num_passes : int
        ``matmat`` calls used.
    outlier_separations : Tensor
        Each outlier's distance to the bulk edge in kernel widths :math:`\sigma`.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    outliers: Tensor
    bulk_edge: float | None
    gap_ratio: float
    num_matvecs: int
    num_passes: int
    outlier_separations: Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def num_outliers(self) -> int:
        """Number of outliers found (0 when there is no clear gap)."""
        return int(self.outliers.numel())

    @property
    def negative_fraction(self) -> float:
        """Estimated fraction of eigenvalues below zero (quadrature mass of negative nodes)."""
        return float((self.weights * (self.nodes < 0)).sum(1).mean())

    @property
    def negative_mass_ratio(self) -> float:
        r"""Estimated :math:`\sum_{\lambda<0}|\lambda| / \sum|\lambda|` (negative share)."""
        absolute = (self.weights * self.nodes.abs()).sum(1).mean()
        negative = (self.weights * self.nodes.clamp(max=0).abs()).sum(1).mean()
        return float(negative / absolute) if float(absolute) > 0 else 0.0

    def log_density(
        self, points: int = 512, sigma: float | None = None, floor: float | None = None
    ) -> tuple[Tensor, Tensor, float]:
        r"""Return the density of :math:`u = \log_{10}\lambda` over the positive spectrum.

        Heavy-tailed spectra span decades, and a linear axis shows one spike at zero (Papyan
        2020, Fig. 15b). The same quadrature nodes :math:`\theta_j` and weights
        :math:`\tau_j` are broadened in :math:`u`:

        .. math::
            \psi(u) = \frac{1}{n_v} \sum_{l,j:\,\theta_j^{(l)} > f} \tau_j^{(l)}
            \,\mathcal N\big(u;\, \log_{10}\theta_j^{(l)},\, s^2\big),

        with :math:`s` = (range of :math:`\log_{10}\theta`) / ``num_steps`` by default. It
        integrates to the estimated fraction of eigenvalues above the floor :math:`f`.

        Parameters
        ----------
        points : int, optional
            Grid points on :math:`[u_{\min} - 5s, u_{\max} + 5s]`.
        sigma : float, optional
            Kernel width :math:`s` in decades.
        floor : float, optional
            Nodes at or below it are left out (default :math:`10^{-8}\max\theta`: below it
            Lanczos does not resolve eigenvalues from zero).

        Returns
        -------
        grid : Tensor
            :math:`u` values (decades).
        density : Tensor
            :math:`\psi(u)`.
        mass_below : float
            The estimated fraction of eigenvalues at or below the floor (zero and negative
            ones included).

        Raises
        ------
        ValueError
            If no node is positive.

        Examples
        --------
        >>> lam = torch.logspace(-2, 3, 200, dtype=torch.float64)
        >>> d = ls.spectral_density(torch.diag(lam), num_probes=4, num_steps=60)
        >>> u, psi, below = d.log_density()
        >>> round(float(torch.trapezoid(psi, u)), 3), below
        (1.0, 0.0)
        """
        nodes, weights = self.nodes.double(), self.weights.double()
        top = float(nodes.max())
        if top <= 0:
            raise ValueError("the spectrum has no positive eigenvalues: no log-scale density.")
        floor = 1e-8 * top if floor is None else float(floor)
        keep = nodes > floor
        u = torch.log10(nodes[keep])
        w = weights[keep]
        lo, hi = float(u.min()), float(u.max())
        steps = nodes.shape[1]
        width = float(sigma) if sigma is not None else max((hi - lo) / steps, 1e-3)
        grid = torch.linspace(lo - 5 * width, hi + 5 * width, points, dtype=torch.float64)
        kernel = torch.exp(-0.5 * ((grid[:, None] - u[None, :]) / width) ** 2)
        density = kernel @ w / (nodes.shape[0] * width * (2 * torch.pi) ** 0.5)
        below = float((weights * ~keep).sum(1).mean())
        return grid, density, below

    def moment(self, order: int) -> float:
        r"""Return the quadrature estimate of :math:`\frac1P \operatorname{tr}(H^{order})`.

        Parameters
        ----------
        order : int
            Moment order.

        Returns
        -------
        float
            Average over probes of :math:`\sum_j \tau_j \theta_j^{order}`.
        """
        return float((self.weights * self.nodes.double() ** order).sum(1).mean())
