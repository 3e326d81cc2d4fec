"""landscape: the loss surface around a PyTorch model, and what it means for training.

>>> import landscape as ls
>>> H = ls.hessian(model, loader)          # doctest: +SKIP
>>> H @ v                                   # doctest: +SKIP
"""

from landscape.data import DataSource
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

__version__ = "0.1.0"

__all__ = [
    "CurvatureOperator",
    "DataSource",
    "DenseOperator",
    "EmpiricalFisherOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    "IdentityOperator",
    "LinearOperator",
    "ParamSpace",
    "fisher",
    "gauss_newton",
    "hessian",
    "select_parameters",
]
