"""Adapters: a tensor, numpy array or scipy LinearOperator as a landscape LinearOperator."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

from landscape.operators.base import CountingOperator, LinearOperator
from landscape.operators.dense import DenseOperator

__all__ = ["ScipyOperator", "as_operator"]


class ScipyOperator(CountingOperator):
    """Wrap a :class:`scipy.sparse.linalg.LinearOperator` (float64, CPU).

    Parameters
    ----------
    operator : scipy.sparse.linalg.LinearOperator
        Square operator; assumed symmetric when ``symmetric=True``.
    symmetric : bool, optional
        Declare symmetry (not checked).

    Examples
    --------
    >>> import scipy.sparse
    >>> A = ScipyOperator(scipy.sparse.linalg.aslinearoperator(scipy.sparse.diags([1.0, 2.0])))
    >>> A @ torch.ones(2, dtype=torch.float64)
    tensor([1., 2.], dtype=torch.float64)
    """

    def __init__(
        self, operator: scipy.sparse.linalg.LinearOperator, *, symmetric: bool = True
    ) -> None:
        super().__init__(operator.shape, torch.float64, torch.device("cpu"))
        self.operator = operator
        self.is_symmetric = symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        self._count(V.shape[1])
        out = self.operator.matmat(V.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(out), dtype=torch.float64)


def as_operator(A: Any) -> LinearOperator:
    """Return ``A`` as a symmetric :class:`LinearOperator`.

    Parameters
    ----------
    A : LinearOperator, Tensor, numpy.ndarray or scipy.sparse.linalg.LinearOperator
        A landscape operator (returned as is), a dense symmetric matrix (torch or numpy), or
        a scipy operator (wrapped; products in float64 on the CPU).

    Returns
    -------
    LinearOperator
        The operator.

    Raises
    ------
    TypeError
        If ``A`` is none of these.
    ValueError
        If ``A`` is not square, or a dense matrix is not symmetric.
    """
    if isinstance(A, LinearOperator):
        op = A
    elif isinstance(A, Tensor):
        op = DenseOperator(A, symmetric=True)
    elif isinstance(A, np.ndarray):
        op = DenseOperator(torch.as_tensor(A), symmetric=True)
    elif isinstance(A, scipy.sparse.linalg.LinearOperator):
        op = ScipyOperator(A)
    else:
        raise TypeError(
            "expected a landscape operator (e.g. ls.hessian(...)), a dense symmetric tensor or "
            f"array, or a scipy LinearOperator; got {type(A).__name__}."
        )
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"expected a square operator; got shape {op.shape}.")
    return op
