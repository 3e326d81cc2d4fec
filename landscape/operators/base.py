"""Matrix-free linear operators on flat torch vectors, following scipy's ``LinearOperator``.

Subclasses implement only ``_matmat(V)`` for ``V`` of shape ``(n, k)``; the public
:meth:`LinearOperator.matmat` / :meth:`LinearOperator.matvec` / ``@`` validate shapes, dtypes
and devices first, so ``_matmat`` never has to. Operators compose lazily (``A + B``,
``A - sigma * I``, ``2.0 * A``), which the spectral algorithms use for shifts, and export to
:class:`scipy.sparse.linalg.LinearOperator` with :meth:`LinearOperator.to_scipy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

from landscape.operators.space import VectorSpace

__all__ = ["CountingOperator", "IdentityOperator", "LinearOperator"]


class LinearOperator:
    r"""A matrix :math:`A \in \mathbb{R}^{m \times n}` known only through products :math:`AV`.

    Attributes
    ----------
    shape : tuple of int
        ``(m, n)``.
    dtype : torch.dtype
        Dtype of inputs and outputs.
    device : torch.device
        Device of inputs and outputs.
    is_symmetric : bool
        Whether :math:`A = A^\top` (all curvature operators are).
    """

    is_symmetric: bool = False

    def __init__(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.device = torch.device(device)

    # -- the one hook --------------------------------------------------------------------------
    def _matmat(self, V: Tensor) -> Tensor:
        raise NotImplementedError

    # -- where the vectors live ------------------------------------------------------------------
    @property
    def vector_space(self) -> VectorSpace:
        """The :class:`~landscape.operators.space.VectorSpace` of the operator's vectors.

        Inner products, orthonormalization and random probes of the spectral algorithms go
        through it: whole vectors on one device here; an operator on an FSDP-sharded model
        returns a :class:`~landscape.operators.space.ShardedSpace`, whose tensors hold one
        rank's entries.
        """
        space = getattr(self, "_vector_space", None)
        if space is None:
            space = VectorSpace(self.shape[1], self.dtype, self.device)
            self._vector_space = space
        return space

    # -- counters (overridden by operators that touch data) --------------------------------------
    @property
    def num_matvecs(self) -> int:
        """Number of matrix-vector products so far (a ``matmat`` with k columns counts k)."""
        return 0

    @property
    def num_passes(self) -> int:
        """Number of passes over the data so far (one per ``matmat`` call, whatever its k)."""
        return 0

    # -- validated public products ---------------------------------------------------------------
    def _check_input(self, X: Tensor, ndim: int) -> None:
        if not isinstance(X, Tensor):
            raise TypeError(f"expected a torch.Tensor; got {type(X).__name__}.")
        n = self.shape[1]
        if X.ndim != ndim or X.shape[0] != n:
            want = f"({n},)" if ndim == 1 else f"({n}, k)"
            raise ValueError(
                f"{'matvec' if ndim == 1 else 'matmat'} expects a tensor of shape {want}; "
                f"got {tuple(X.shape)}."
            )
        if X.dtype != self.dtype:
            raise TypeError(
                f"expected dtype {self.dtype} (the operator's); got {X.dtype}. "
                f"Convert with v.to({self.dtype})."
            )
        if X.device != self.device:
            raise ValueError(
                f"expected a tensor on {self.device} (the operator's device); got one on "
                f"{X.device}. Move it with v.to('{self.device}')."
            )

    def matmat(self, V: Tensor) -> Tensor:
        """Multiply by a block of vectors: ``(n, k) -> (m, k)``.

        Parameters
        ----------
        V : Tensor
            Shape ``(n, k)``, with the operator's dtype and device.

        Returns
        -------
        Tensor
            ``A @ V`` of shape ``(m, k)``.
        """
        self._check_input(V, 2)
        if V.shape[1] == 0:
            return V.new_zeros(self.shape[0], 0)
        return self._matmat(V)

    def matvec(self, v: Tensor) -> Tensor:
        """Multiply by one vector: ``(n,) -> (m,)``.

        Parameters
        ----------
        v : Tensor
            Shape ``(n,)``, with the operator's dtype and device.

        Returns
        -------
        Tensor
            ``A @ v`` of shape ``(m,)``.
        """
        self._check_input(v, 1)
        return self._matmat(v[:, None])[:, 0]

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, LinearOperator):
            return _ProductOperator(self, other)
        if isinstance(other, Tensor) and other.ndim == 1:
            return self.matvec(other)
        return self.matmat(other)

    # -- lazy algebra ----------------------------------------------------------------------------
    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _SumOperator(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _SumOperator(self, _ScaledOperator(other, -1.0))

    def __mul__(self, scalar: float) -> LinearOperator:
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        return _ScaledOperator(self, float(scalar))

    __rmul__ = __mul__

    def __neg__(self) -> LinearOperator:
        return _ScaledOperator(self, -1.0)

    # -- export ----------------------------------------------------------------------------------
    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """Wrap as a :class:`scipy.sparse.linalg.LinearOperator` (numpy float64 in and out).

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            Products convert numpy input to this operator's dtype and device and return numpy
            float64, so ``scipy.sparse.linalg.eigsh(A.to_scipy(), k=5)`` works as is.

        Examples
        --------
        >>> A = IdentityOperator(3, dtype=torch.float64) * 2.0
        >>> A.to_scipy() @ np.ones(3)
        array([2., 2., 2.])
        """

        def matmat(X: np.ndarray) -> np.ndarray:
            V = torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)
            return self.matmat(V.reshape(self.shape[1], -1)).detach().cpu().double().numpy()

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.asarray(x).reshape(-1, 1)).reshape(-1)

        return scipy.sparse.linalg.LinearOperator(
            self.shape,
            matvec=matvec,
            rmatvec=matvec if self.is_symmetric else None,
            matmat=matmat,
            rmatmat=matmat if self.is_symmetric else None,
            dtype=np.float64,
        )

    def to_dense(self, *, max_dim: int = 8192) -> Tensor:
        """Materialize the matrix by multiplying with the identity (one ``matmat``).

        Parameters
        ----------
        max_dim : int, optional
            Refuse operators larger than this in either dimension (memory is ``m * n``).

        Returns
        -------
        Tensor
            Shape ``(m, n)``.

        Raises
        ------
        ValueError
            If the operator is larger than ``max_dim``.
        """
        if max(self.shape) > max_dim:
            raise ValueError(
                f"refusing to materialize a {self.shape} operator (max_dim={max_dim}); raise "
                "max_dim if you have the memory."
            )
        eye = torch.eye(self.shape[1], dtype=self.dtype, device=self.device)
        return self.matmat(eye)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"
        )


class CountingOperator(LinearOperator):
    """A leaf operator that counts its own products; subclasses call :meth:`_count`."""

    def __init__(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(shape, dtype, device)
        self._num_matvecs = 0
        self._num_passes = 0

    def _count(self, k: int) -> None:
        self._num_matvecs += k
        self._num_passes += 1

    @property
    def num_matvecs(self) -> int:
        """Number of matrix-vector products so far (a ``matmat`` with k columns counts k)."""
        return self._num_matvecs

    @property
    def num_passes(self) -> int:
        """Number of ``matmat`` calls so far (passes over the data for curvature operators)."""
        return self._num_passes


class IdentityOperator(LinearOperator):
    """The ``n x n`` identity.

    Parameters
    ----------
    n : int
        Dimension.
    dtype : torch.dtype, optional
        Dtype.
    device : torch.device or str, optional
        Device.
    """

    is_symmetric = True

    def __init__(
        self, n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__((n, n), dtype, torch.device(device))

    def _matmat(self, V: Tensor) -> Tensor:
        return V.clone()


class _Composite(LinearOperator):
    def __init__(self, parts: tuple[LinearOperator, ...], shape: tuple[int, int]) -> None:
        first = parts[0]
        for p in parts[1:]:
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"cannot combine operators with dtype/device {first.dtype}/{first.device} "
                    f"and {p.dtype}/{p.device}."
                )
        super().__init__(shape, first.dtype, first.device)
        self.parts = parts

    @property
    def vector_space(self) -> VectorSpace:
        return self.parts[0].vector_space

    @property
    def num_matvecs(self) -> int:
        return sum(p.num_matvecs for p in self.parts)

    @property
    def num_passes(self) -> int:
        return sum(p.num_passes for p in self.parts)


class _SumOperator(_Composite):
    def __init__(self, a: LinearOperator, b: LinearOperator) -> None:
        if a.shape != b.shape:
            raise ValueError(f"cannot add operators of shapes {a.shape} and {b.shape}.")
        super().__init__((a, b), a.shape)
        self.is_symmetric = a.is_symmetric and b.is_symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        return self.parts[0]._matmat(V) + self.parts[1]._matmat(V)


class _ScaledOperator(_Composite):
    def __init__(self, a: LinearOperator, scalar: float) -> None:
        super().__init__((a,), a.shape)
        self.scalar = scalar
        self.is_symmetric = a.is_symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        return self.parts[0]._matmat(V) * self.scalar


class _ProductOperator(_Composite):
    def __init__(self, a: LinearOperator, b: LinearOperator) -> None:
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"cannot multiply operators of shapes {a.shape} and {b.shape}.")
        super().__init__((a, b), (a.shape[0], b.shape[1]))

    def _matmat(self, V: Tensor) -> Tensor:
        return self.parts[0]._matmat(self.parts[1]._matmat(V))
