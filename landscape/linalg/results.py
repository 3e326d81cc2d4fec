"""Result types of the spectral algorithms: frozen dataclasses that carry their cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["Eigenpairs", "Estimate", "SpectralDensity"]


@dataclass(frozen=True)
class Estimate:
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
class Eigenpairs:
    """Eigenvalues, eigenvectors (columns) and their certificates.

    Attributes
    ----------
    values : Tensor
        Eigenvalues, shape ``(k,)``, in descending order (``"largest"``, ``"magnitude"``),
        ascending (``"smallest"``), or descending largest-first then smallest for ``"both"``.
    vectors : Tensor
        Unit eigenvectors in columns, shape ``(P, k)``.
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
    vectors: Tensor
    residuals: Tensor
    converged: Tensor
    num_matvecs: int
    num_passes: int
    named_vectors: list[dict[str, Tensor]] | None = field(default=None, repr=False)

    @property
    def all_converged(self) -> bool:
        """Whether every pair met the tolerance."""
        return bool(self.converged.all())


@dataclass(frozen=True)
class SpectralDensity:
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
        Largest ratio of consecutive top Ritz values examined (the gap evidence).
    num_matvecs : int
        Operator products used.
    num_passes : int
        ``matmat`` calls used.
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
