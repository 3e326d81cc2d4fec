r"""Where an operator's vectors live: inner products, orthonormalization and random probes.

The spectral algorithms (:mod:`landscape.linalg`) hold blocks of vectors as the columns of
``(n, k)`` tensors and need only a few operations on them besides the operator's product:
inner products and Gram matrices, norms, orthonormalization of a block, and random probes.
A :class:`VectorSpace` provides them; every operator exposes its own as
``A.vector_space``.

* :class:`VectorSpace` — :math:`\mathbb{R}^n` on one device, each vector whole: plain torch
  (Householder QR, the generators of :mod:`landscape.linalg`).
* :class:`ShardedSpace` — :math:`\mathbb{R}^n` with each vector split across the ranks of a
  :mod:`torch.distributed` process group (the local shards of an FSDP2 model's parameters,
  concatenated): a tensor on a rank holds only that rank's entries, so a vector costs
  :math:`P/\text{world}` numbers per rank. Inner products are local products summed with
  one ``all_reduce``; a block is orthonormalized by CholeskyQR2 (one ``all_reduce`` of a
  :math:`b \times b` Gram matrix per sweep, two sweeps); small reduced results are
  broadcast from rank 0 so that every rank takes the same decisions on the same numbers.

Random probes of a :class:`ShardedSpace` are *counter-based*: entry :math:`i` of probe
:math:`j` depends only on the seed, :math:`j` and :math:`i` (blocks of :math:`2^{16}`
entries, each drawn from a generator seeded by a hash of the three), so a rank draws its own
entries without drawing anyone else's, and results do not depend on the number of ranks.

References
----------
T. Fukaya, R. Kannan, Y. Nakatsukasa, Y. Yamamoto, Y. Yanagisawa, "Shifted Cholesky QR for
computing the QR factorization of ill-conditioned matrices", SIAM J. Sci. Comput. 42(1),
2020. A. Stathopoulos, K. Wu, "A block orthogonalization procedure with constant
synchronization requirements", SIAM J. Sci. Comput. 23(6), 2002.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "ShardedSpace",
    "VectorSpace",
    "accurate_dot",
    "columnwise",
    "counter_probes",
    "inner",
    "right_multiply_",
]

_BLOCK = 2**16  # entries per counter-based random block
_MASK64 = 2**64 - 1


def _mix(*words: int) -> int:
    """Hash integers to a 63-bit seed (SplitMix64 finalizer, chained).

    Returns
    -------
    int
        A non-negative seed below 2**63.
    """
    state = 0x9E3779B97F4A7C15
    for word in words:
        state = (state + (word & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


_ROWS_PER_CHUNK = 2**18
#: How reductions over long vectors are summed. BLAS sums float32 products in float32, in
#: a few running accumulators: on this project's 2-core Xeon (MKL) the norm of a 124M-entry
#: float32 vector came out 1.3% off with ``torch.linalg.vector_norm`` and 19% with a dot
#: product; the Rayleigh quotient of a vector near an eigenvector (positive terms again)
#: 3e-3. Sums whose partial sums stay small (nearly orthogonal vectors: most Gram-Schmidt
#: coefficients) are accurate in blocks of 2^20 rows whose BLAS sums are added in float64
#: (about 1e-7 of the norms' product); the others — norms, and each column's dominant
#: coefficients — are summed by torch's cascade summation over blocks of 2^20 products in
#: a reused buffer, the blocks' sums in float64 (about 1e-9 relative). Large blocks keep
#: the number of calls small: each is a parallel region, and on a loaded machine a region
#: can wait milliseconds for its threads.
_BLAS_ROWS = 2**20
_CASCADE_ROWS = 2**20
_DOMINANT = 0.1  # coefficients within this factor of a column's largest are re-summed
_HOUSEHOLDER_LIMIT = 2**16  # longer blocks are orthonormalized by CholeskyQR2


def inner(X: Tensor, Y: Tensor) -> Tensor:
    r"""Return :math:`X^\top Y` for ``(n, a)`` and ``(n, b)`` blocks, in blocks of rows.

    Each block of 2^20 rows is a BLAS product; the blocks' results are added in float64.
    Accurate where partial sums stay small (nearly orthogonal columns); sums of squares
    and other one-signed sums need :func:`accurate_dot`.

    Returns
    -------
    Tensor
        Shape ``(a, b)``, float64, on the blocks' device.

    Examples
    --------
    >>> X = torch.ones(300_000, 2)
    >>> X[::2, 1] = -1
    >>> inner(X, X)
    tensor([[300000.,      0.],
            [     0., 300000.]], dtype=torch.float64)
    """
    out = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], _BLAS_ROWS):
        out += X[start : start + _BLAS_ROWS].T @ Y[start : start + _BLAS_ROWS]
    return out


def accurate_dot(x: Tensor, y: Tensor) -> Tensor:
    r"""Return :math:`x^\top y` of two vectors by cascade summation in blocks, added in float64.

    Returns
    -------
    Tensor
        A float64 scalar.

    Examples
    --------
    >>> x = torch.full((3_000_000,), 0.1)
    >>> round(float(accurate_dot(x, x)), 1)
    30000.0
    """
    return accurate_rows(x.unsqueeze(0), y)[0]


def accurate_rows(Q: Tensor, w: Tensor) -> Tensor:
    r"""Return :math:`Q w` for rows ``Q`` (``(m, n)``) and one vector ``w``, each entry accurately.

    One pass over ``Q`` and ``w``: each block of columns' products goes to a reused
    ``(m, r)`` buffer (:math:`m r \approx 2^{20}`), whose rows torch sums by cascade
    summation; the blocks' sums are added in float64. Every entry is as accurate as
    :func:`accurate_dot` gives it, at the memory traffic of one BLAS product (a Lanczos
    step's coefficients, dominant or not, without a second pass for the dominant ones).

    Returns
    -------
    Tensor
        Shape ``(m,)``, float64, on ``Q``'s device.

    Examples
    --------
    >>> Q = torch.full((2, 3_000_000), 0.1)
    >>> Q[1] = -0.1
    >>> [round(v, 1) for v in accurate_rows(Q, torch.full((3_000_000,), 0.1)).tolist()]
    [30000.0, -30000.0]
    """
    m, n = Q.shape
    out = torch.zeros(m, dtype=torch.float64, device=Q.device)
    width = max(1, _CASCADE_ROWS // max(m, 1))
    dtype = torch.promote_types(Q.dtype, w.dtype)
    buffer = torch.empty(m, min(width, n), dtype=dtype, device=Q.device)
    for start in range(0, n, width):
        stop = min(start + width, n)
        part = buffer[:, : stop - start]
        torch.mul(Q[:, start:stop], w[start:stop], out=part)
        out += part.sum(dim=1, dtype=torch.float64) if Q.device.type != "cpu" else part.sum(1)
    return out


def columnwise(X: Tensor, Y: Tensor) -> Tensor:
    """Return the column-wise inner products of two ``(n, k)`` blocks (:func:`accurate_dot`).

    Returns
    -------
    Tensor
        Shape ``(k,)``, float64.

    Examples
    --------
    >>> X = torch.full((300_000, 2), 0.1)
    >>> round(float(columnwise(X, X)[1]), 1)
    3000.0
    """
    if X.shape[1] == 0:
        return torch.zeros(0, dtype=torch.float64, device=X.device)
    return torch.stack([accurate_dot(X[:, j], Y[:, j]) for j in range(X.shape[1])])


def right_multiply_(X: Tensor, M: Tensor) -> Tensor:
    """Overwrite ``X`` (``(n, k)``) with ``X @ M`` (``M``: ``(k, k)``), a chunk of rows at a time.

    Row ``i`` of the product depends only on row ``i`` of ``X``, so no ``(n, k)`` temporary
    is needed: the extra memory is one chunk of rows.

    Returns
    -------
    Tensor
        ``X`` itself.

    Examples
    --------
    >>> X = torch.arange(6.0).reshape(3, 2)
    >>> right_multiply_(X, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    tensor([[1., 0.],
            [3., 2.],
            [5., 4.]])
    """
    for start in range(0, X.shape[0], _ROWS_PER_CHUNK):
        rows = X[start : start + _ROWS_PER_CHUNK]
        rows.copy_(rows @ M)
    return X


def counter_probes(
    ranges: Sequence[tuple[int, int]],
    k: int,
    key: int,
    kind: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    first: int = 0,
) -> Tensor:
    """Return entries ``ranges`` of ``k`` counter-based random probes, as an ``(n_local, k)`` block.

    Entry ``i`` of probe ``j`` is drawn from a CPU generator seeded by a hash of ``(key, j,
    i // 2**16)``: it depends on nothing else, so any subset of the entries can be drawn
    alone.

    Parameters
    ----------
    ranges : sequence of (int, int)
        Half-open global index ranges, concatenated in this order.
    k : int
        Number of probes.
    key : int
        The seed of this set of probes.
    kind : {"signs", "gaussian"}
        Rademacher or standard normal entries.
    dtype, device
        Of the result.
    first : int, optional
        The number of the first probe (the block holds probes ``first`` to ``first + k``).

    Returns
    -------
    Tensor
        Shape ``(sum of range lengths, k)``.

    Examples
    --------
    >>> whole = counter_probes([(0, 10)], 2, key=7, kind="signs", dtype=torch.float64,
    ...                        device=torch.device("cpu"))
    >>> parts = counter_probes([(0, 4), (4, 10)], 2, key=7, kind="signs", dtype=torch.float64,
    ...                        device=torch.device("cpu"))
    >>> torch.equal(whole, parts), sorted(whole.unique().tolist())
    (True, [-1.0, 1.0])
    """
    n_local = sum(end - start for start, end in ranges)
    out = torch.empty(n_local, k, dtype=torch.float64)
    for j in range(k):
        offset, cached = 0, (None, None)
        for start, end in ranges:
            position = start
            while position < end:
                block = position // _BLOCK
                stop = min(end, (block + 1) * _BLOCK)
                if cached[0] != block:
                    generator = torch.Generator().manual_seed(_mix(key, first + j, block))
                    if kind == "signs":
                        draw = torch.randint(0, 2, (_BLOCK,), generator=generator).mul_(2).sub_(1)
                        values = draw.to(torch.float64)
                    else:
                        values = torch.randn(_BLOCK, generator=generator, dtype=torch.float64)
                    cached = (block, values)
                lo = position - block * _BLOCK
                out[offset : offset + stop - position, j] = cached[1][lo : lo + stop - position]
                offset += stop - position
                position = stop
    return out.to(dtype=dtype, device=device)


class VectorSpace:
    r""":math:`\mathbb{R}^n` with the Euclidean inner product, each vector whole on one device.

    Vectors are the columns of ``(local_dim, k)`` tensors. The methods here are what the
    spectral algorithms need besides products; :class:`ShardedSpace` overrides them for
    vectors split across ranks.

    Parameters
    ----------
    dim : int
        The dimension :math:`n`.
    dtype : torch.dtype
        Of the vectors.
    device : torch.device
        Of the vectors.
    counter_random : bool, optional
        Draw probes with :func:`counter_probes` (as a :class:`ShardedSpace` does) instead of
        the algorithms' own generators: the same probes as a sharded run, for comparisons.

    Examples
    --------
    >>> space = VectorSpace(3, torch.float64, torch.device("cpu"))
    >>> X = torch.tensor([[3.0, 1.0], [4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> space.norms(X)
    tensor([5.0000, 1.4142], dtype=torch.float64)
    >>> R = space.orthonormalize(X)
    >>> torch.allclose(X.T @ X, torch.eye(2, dtype=torch.float64))
    True
    """

    is_sharded = False

    def __init__(
        self, dim: int, dtype: torch.dtype, device: torch.device, *, counter_random: bool = False
    ) -> None:
        self.dim = int(dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.counter_random = counter_random
        self._hold([(0, self.dim)])

    def _hold(self, ranges: Sequence[tuple[int, int]]) -> None:
        # The global index ranges whose entries this process's tensors hold, in order.
        self._ranges = [(int(a), int(b)) for a, b in ranges]
        self._local_dim = sum(b - a for a, b in self._ranges)

    @property
    def local_dim(self) -> int:
        """Rows of this process's tensors (the whole dimension unless sharded)."""
        return self._local_dim

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The global index ranges of this process's rows, in order."""
        return list(self._ranges)

    # -- reductions ---------------------------------------------------------------------------
    def reduce_(self, partial: Tensor) -> Tensor:
        """Sum a small local partial result over the ranks, identically on every rank.

        Returns
        -------
        Tensor
            ``partial`` itself (the identity here).
        """
        return partial

    def gram(self, X: Tensor, Y: Tensor | None = None) -> Tensor:
        r"""Return :math:`X^\top Y` (``Y`` defaults to ``X``), accumulated in float64.

        Blocks of rows by BLAS (:func:`inner`); the diagonal of :math:`X^\top X` (sums of
        squares) by cascade summation (:func:`columnwise`).

        Returns
        -------
        Tensor
            Shape ``(X.shape[1], Y.shape[1])``, in the vectors' dtype.
        """
        G = inner(X, X if Y is None else Y)
        if Y is None:
            G.diagonal().copy_(columnwise(X, X))
        return self.reduce_(G).to(X.dtype)

    def dots(self, X: Tensor, Y: Tensor) -> Tensor:
        r"""Return the column-wise inner products :math:`x_j^\top y_j` (accumulated in float64).

        Returns
        -------
        Tensor
            Shape ``(k,)``, in the vectors' dtype.
        """
        return self.reduce_(columnwise(X, Y)).to(X.dtype)

    def norms(self, X: Tensor) -> Tensor:
        """Return the column norms (accumulated in float64).

        Returns
        -------
        Tensor
            Shape ``(k,)``, in the vectors' dtype.
        """
        return self.reduce_(columnwise(X, X)).clamp_min(0).sqrt().to(X.dtype)

    def project_out_(self, W: Tensor, Q: Tensor) -> Tensor:
        r"""Remove from ``W`` its components along the rows of ``Q``: :math:`W - Q^\top (Q W)`.

        ``Q`` holds orthonormal vectors as *rows* (``(m, local_dim)``, as bases are stored);
        it may live on another device than ``W`` (a basis kept in host memory). For one
        column every coefficient is summed accurately in one pass (:func:`accurate_rows`);
        for a block by :func:`inner`, each column's dominant ones (within 10 % of its
        largest) again by :func:`accurate_dot`, in a second Gram-Schmidt sweep too:
        dropping it there made a 4M-entry float32 top eigenvalue 3e-5 off instead of 5e-8.

        Returns
        -------
        Tensor
            The coefficients :math:`QW`, shape ``(m, k)``, in ``W``'s dtype and device.
        """
        if Q.shape[0] == 0:
            return W.new_zeros(0, W.shape[1])
        target = W if Q.device == W.device else W.to(Q.device)
        if W.shape[1] == 1:  # one pass, every coefficient accurate (:func:`accurate_rows`)
            coefficients = self.reduce_(accurate_rows(Q, target[:, 0]).unsqueeze(1))
            return self._update_(W, target, Q, coefficients)
        coefficients = self.reduce_(inner(Q.T, target))
        # The dominant coefficients (a Rayleigh quotient: one-signed terms) again, accurately;
        # decided on the reduced values, so every rank re-sums the same ones.
        largest = coefficients.abs().amax(0, keepdim=True)
        rows, columns = torch.nonzero(coefficients.abs() >= _DOMINANT * largest, as_tuple=True)
        if rows.numel():
            again = torch.stack(
                [accurate_dot(Q[i], target[:, j]) for i, j in zip(rows.tolist(), columns.tolist())]
            )
            coefficients[rows, columns] = self.reduce_(again)
        return self._update_(W, target, Q, coefficients)

    @staticmethod
    def _update_(W: Tensor, target: Tensor, Q: Tensor, coefficients: Tensor) -> Tensor:
        """Subtract ``Q^T coefficients`` from ``W`` (through ``target``, ``Q``'s device).

        Returns
        -------
        Tensor
            The coefficients in ``W``'s dtype and device.
        """
        coefficients = coefficients.to(W.dtype)
        target.addmm_(Q.T, coefficients, alpha=-1)
        if target is not W:
            W.copy_(target)
        return coefficients.to(W.device)

    # -- orthonormalization -------------------------------------------------------------------
    def orthonormalize(self, W: Tensor) -> Tensor:
        """Orthonormalize the columns of ``W`` in place; return ``R`` with ``W_in = W_out R``.

        A column that is (numerically) a combination of the previous ones comes out with a
        tiny diagonal entry of ``R``. Householder QR (``torch.linalg.qr``) for short vectors;
        above 65,536 entries CholeskyQR2 with accurate Gram matrices
        (:meth:`_cholesky_qr2`), since LAPACK's float32 QR accumulates its norms in float32.

        Returns
        -------
        Tensor
            The upper triangular ``R``, shape ``(k, k)``.
        """
        if W.shape[1] == 1:
            norm = self.norms(W)
            W.div_(norm.clamp_min(torch.finfo(W.dtype).tiny))
            return norm.reshape(1, 1)
        if self.dim > _HOUSEHOLDER_LIMIT or self.is_sharded:
            return self._cholesky_qr2(W)
        Q, R = torch.linalg.qr(W)
        W.copy_(Q)
        return R

    def _cholesky_qr2(self, W: Tensor) -> Tensor:
        r"""Orthonormalize the columns of ``W`` in place by CholeskyQR2; return ``R``.

        Each sweep forms the Gram matrix :math:`G = W^\top W` (accumulated in float64; one
        ``all_reduce`` of :math:`k \times k` numbers where the vectors are sharded),
        factors :math:`G = R^\top R` and sets :math:`W \leftarrow W R^{-1}`; the second
        sweep repairs the orthogonality the first lost to the squared condition number. A
        Gram matrix that is not numerically positive definite (rank-deficient ``W``) is
        factored with a shift of :math:`11 (n k + k(k+1)) u \lVert G \rVert` (shifted
        CholeskyQR, Fukaya et al. 2020) and its tiny directions come out with tiny diagonal
        entries of ``R``.

        Returns
        -------
        Tensor
            Upper triangular ``R`` with ``W_in = W_out R``, shape ``(k, k)``.
        """
        k = W.shape[1]
        R = torch.eye(k, dtype=torch.float64)
        for _ in range(2):
            G = inner(W, W)
            G.diagonal().copy_(columnwise(W, W))  # sums of squares: accurately
            G = self.reduce_(G).cpu()
            G = (G + G.T) / 2
            factor, info = torch.linalg.cholesky_ex(G, upper=True)
            if int(info) != 0:
                u = torch.finfo(W.dtype).eps / 2
                shift = 11 * (self.dim * k + k * (k + 1)) * u * float(G.diagonal().max())
                factor = torch.linalg.cholesky(G + shift * torch.eye(k, dtype=G.dtype), upper=True)
            inverse = torch.linalg.solve_triangular(
                factor, torch.eye(k, dtype=factor.dtype), upper=True
            )
            right_multiply_(W, inverse.to(dtype=W.dtype, device=W.device))
            R = factor @ R
        return R

    # -- random probes ------------------------------------------------------------------------
    def probes(self, k: int, key: int, kind: str, *, first: int = 0) -> Tensor:
        """Return counter-based probes ``first`` to ``first + k`` (:func:`counter_probes`).

        Returns
        -------
        Tensor
            This space's rows of them, shape ``(local_dim, k)``.
        """
        return counter_probes(
            self.ranges, k, key, kind, dtype=self.dtype, device=self.device, first=first
        )

    def local_mask(self, index: Tensor) -> Tensor:
        """Return which local rows hold the global entries ``index`` (a boolean ``(local_dim,)``).

        Returns
        -------
        Tensor
            The mask.
        """
        mask = torch.zeros(self.dim, dtype=torch.bool, device=self.device)
        mask[index.to(self.device)] = True
        return mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, local_dim={self.local_dim})"


class ShardedSpace(VectorSpace):
    r""":math:`\mathbb{R}^n` with each vector split across the ranks of a process group.

    This rank holds the global entries ``ranges`` (half-open, concatenated in order); the
    ranks' ranges partition :math:`[0, n)`. Reductions are ``all_reduce`` sums followed by a
    broadcast from rank 0 (so that every rank holds bitwise the same small matrices whatever
    the reduction order), and a block is orthonormalized by CholeskyQR2.

    Parameters
    ----------
    dim : int
        The global dimension :math:`n`.
    ranges : sequence of (int, int)
        This rank's global index ranges.
    dtype, device
        Of the local tensors.
    group : ProcessGroup, optional
        The process group (default: the world).
    """

    is_sharded = True

    def __init__(
        self,
        dim: int,
        ranges: Sequence[tuple[int, int]],
        dtype: torch.dtype,
        device: torch.device,
        *,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(dim, dtype, device, counter_random=True)
        self._hold(ranges)
        self.group = group

    def reduce_(self, partial: Tensor) -> Tensor:
        """Sum ``partial`` over the ranks, then broadcast rank 0's sum (bitwise agreement).

        Returns
        -------
        Tensor
            ``partial``, overwritten with the sum.
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(partial, op=dist.ReduceOp.SUM, group=self.group)
            source = dist.get_global_rank(self.group, 0) if self.group is not None else 0
            dist.broadcast(partial, src=source, group=self.group)
        return partial

    def local_mask(self, index: Tensor) -> Tensor:
        """Return which local rows hold the global entries ``index``.

        Returns
        -------
        Tensor
            A boolean ``(local_dim,)`` on this space's device.
        """
        index = torch.sort(index.reshape(-1).cpu()).values
        mask = torch.zeros(self.local_dim, dtype=torch.bool)
        offset = 0
        for start, end in self._ranges:
            lo = int(torch.searchsorted(index, start))
            hi = int(torch.searchsorted(index, end))
            mask[index[lo:hi] - start + offset] = True
            offset += end - start
        return mask.to(self.device)
