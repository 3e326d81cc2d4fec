"""Spectral algorithms on any symmetric LinearOperator: eigenvalues, traces, densities."""

from landscape.linalg.density import find_outliers, spectral_density, split_outliers
from landscape.linalg.eigen import eigenvalues, power_iteration
from landscape.linalg.results import Eigenpairs, Estimate, SpectralDensity
from landscape.linalg.trace import (
    DiagonalEstimate,
    diagonal,
    frobenius_norm,
    hutchinson_trace,
    hutchpp_trace,
    trace,
    xtrace,
)

__all__ = [
    "DiagonalEstimate",
    "Eigenpairs",
    "Estimate",
    "SpectralDensity",
    "diagonal",
    "eigenvalues",
    "find_outliers",
    "frobenius_norm",
    "hutchinson_trace",
    "hutchpp_trace",
    "power_iteration",
    "spectral_density",
    "split_outliers",
    "trace",
    "xtrace",
]
