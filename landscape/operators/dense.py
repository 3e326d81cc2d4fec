"""A linear operator backed by an explicit matrix (test double, small problems, dense inputs)."""

from __future__ import annotations

from torch import Tensor

from landscape.operators.base import CountingOperator

__all__ = ["DenseOperator"]


class DenseOperator(CountingOperator):
    """Wrap a dense matrix as a :class:`LinearOperator`.

    Parameters
    ----------
    matrix : Tensor
        Shape ``(m, n)``.
    symmetric : bool, optional
        Declare the matrix symmetric (checked to ``1e-6`` relative when ``True``).

    Raises
    ------
    ValueError
        If ``matrix`` is not 2-D, or declared symmetric but is not.

    Examples
    --------
    >>> import torch
    >>> A = DenseOperator(torch.diag(torch.tensor([1.0, 2.0])), symmetric=True)
    >>> A @ torch.ones(2)
    tensor([1., 2.])
    >>> A.num_matvecs
    1
    """

    def __init__(self, matrix: Tensor, *, symmetric: bool = False) -> None:
        if matrix.ndim != 2:
            raise ValueError(f"expected a 2-D matrix; got shape {tuple(matrix.shape)}.")
        if symmetric:
            scale = matrix.abs().max().clamp_min(1e-30)
            if matrix.shape[0] != matrix.shape[1] or (matrix - matrix.T).abs().max() > 1e-6 * scale:
                raise ValueError("matrix declared symmetric is not.")
        super().__init__(tuple(matrix.shape), matrix.dtype, matrix.device)  # type: ignore[arg-type]
        self.matrix = matrix
        self.is_symmetric = symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        self._count(V.shape[1])
        return self.matrix @ V
