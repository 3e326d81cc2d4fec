"""landscape: the loss surface around a PyTorch model, and what it means for training.

>>> import landscape as ls
>>> H = ls.hessian(model, loader)          # doctest: +SKIP
>>> H @ v                                   # doctest: +SKIP
"""

from landscape.data import DataSource
from landscape.linalg import (
    Eigenpairs,
    Estimate,
    SpectralDensity,
    eigenvalues,
    find_outliers,
    power_iteration,
    spectral_density,
)
from landscape.metrics import LayerCurvature, LayerwiseResult, layerwise
from landscape.operators import (
    CurvatureOperator,
    DenseOperator,
    EmpiricalFisherOperator,
    GaussNewtonOperator,
    HessianOperator,
    IdentityOperator,
    LinearOperator,
    fisher,
    gauss_newton,
    hessian,
)
from landscape.params import ParamSpace, select_parameters
from landscape.report import plot_eigenvalues, plot_layerwise, plot_spectral_density

__version__ = "0.1.0"

__all__ = [
    "CurvatureOperator",
    "DataSource",
    "DenseOperator",
    "Eigenpairs",
    "EmpiricalFisherOperator",
    "Estimate",
    "GaussNewtonOperator",
    "HessianOperator",
    "IdentityOperator",
    "LayerCurvature",
    "LayerwiseResult",
    "LinearOperator",
    "ParamSpace",
    "SpectralDensity",
    "eigenvalues",
    "find_outliers",
    "fisher",
    "gauss_newton",
    "hessian",
    "layerwise",
    "plot_eigenvalues",
    "plot_layerwise",
    "plot_spectral_density",
    "power_iteration",
    "select_parameters",
    "spectral_density",
]
