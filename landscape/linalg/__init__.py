"""Spectral algorithms on any symmetric LinearOperator: eigenvalues, traces, densities."""

from landscape.linalg.density import find_outliers, spectral_density
from landscape.linalg.eigen import eigenvalues, power_iteration
from landscape.linalg.results import Eigenpairs, Estimate, SpectralDensity

__all__ = [
    "Eigenpairs",
    "Estimate",
    "SpectralDensity",
    "eigenvalues",
    "find_outliers",
    "power_iteration",
    "spectral_density",
]
