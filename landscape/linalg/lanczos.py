r"""Lanczos processes on symmetric operators: thick-restart block Lanczos, and batched Lanczos.

Two engines, both written here (rather than calling ARPACK through ``scipy``) because they
must keep vectors on the operator's device, push a whole block of vectors through one
``matmat`` (one pass over the data for curvature operators), and report their cost:

* :func:`restarted_lanczos` — block Lanczos with full orthogonalization and thick restarts
  (Wu & Simon 2000), for extreme eigenpairs. Full orthogonalization (classical Gram-Schmidt,
  applied twice) keeps the basis orthonormal to rounding, so converged eigenvalues never
  reappear as "ghost" copies (Paige 1976) and the Lanczos relation

  .. math::
      A Q_m = Q_m T_m + \hat Q_{m+1} B_m E_m^\top

  holds to rounding: the residual of a Ritz pair :math:`(\theta, Q_m s)` is exactly
  :math:`\lVert B_m E_m^\top s \rVert`, available without another product.
* :func:`batched_lanczos` — independent single-vector Lanczos runs from several starting
  vectors at once (one ``matmat`` per step serves all of them), returning the tridiagonal
  matrices that stochastic Lanczos quadrature needs.

References
----------
K. Wu, H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
SIAM J. Matrix Anal. Appl. 22(2), 2000. C. C. Paige, "Error analysis of the Lanczos
algorithm for tridiagonalizing a symmetric matrix", IMA J. Appl. Math. 18, 1976.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from landscape.linalg._random import draw
from landscape.operators.base import LinearOperator
from landscape.operators.space import VectorSpace

__all__ = ["LanczosResult", "Tridiagonal", "batched_lanczos", "restarted_lanczos"]

Which = Literal["largest", "smallest", "both", "magnitude"]


#: Daniel-Gragg-Kaufman-Stewart criterion: a second Gram-Schmidt sweep is made only for the
#: columns that lost more than this share of their norm in the first ("twice is enough").
_DGKS = 0.5**0.5
#: Columns of a row-stored basis transformed at a time: the block's rows and its result stay
#: in cache (a thick restart of six 124M-entry float32 rows: 0.83 s in blocks of 2^20
#: columns, 0.37 s in blocks of 2^16, on this project's CPU).
_COLUMNS_PER_CHUNK = 2**16


def _orthogonalize(
    space: VectorSpace, W: Tensor, Q: Tensor, recent: int = 0
) -> tuple[Tensor, Tensor]:
    r"""Orthogonalize the columns of ``W`` against the rows of ``Q``: classical Gram-Schmidt.

    With ``recent > 0`` (a Lanczos step between restarts), the large components of the new
    vectors — along the last two blocks, rows ``[recent, m)``, by the three-term recurrence
    — are removed first, and one sweep over the whole basis then removes what rounding left
    along the older rows: a full reorthogonalization that reads the whole basis twice
    (coefficients, update), not four times. A further sweep follows where a column lost more
    than ``1 - 1/sqrt(2)`` of its norm in the last one (Daniel, Gragg, Kaufman & Stewart
    1976, "twice is enough"): then the result is orthogonal to ``Q`` to working precision.
    The norm before a sweep needs no pass over ``W``: it is :math:`\sqrt{\lVert
    w\rVert^2 + \lVert c \rVert^2}` from the norm after it and the coefficients removed.

    Returns
    -------
    tuple of Tensor
        The coefficients ``Q W`` that were removed (summed over the sweeps), ``(m, k)``, and
        the norms of the orthogonalized columns, ``(k,)``.
    """
    if Q.shape[0] == 0:
        return W.new_zeros(0, W.shape[1]), space.norms(W)
    coefficients = W.new_zeros(Q.shape[0], W.shape[1])
    if recent > 0:
        coefficients[recent:] = space.project_out_(W, Q[recent:])
    last = space.project_out_(W, Q)
    coefficients += last
    after = space.norms(W)
    before = (after.double().square() + last.double().square().sum(0)).sqrt()
    if bool((after.double() < _DGKS * before).any()):
        coefficients += space.project_out_(W, Q)
        after = space.norms(W)
    return coefficients, after


def _store_(rows: Tensor, W: Tensor) -> None:
    """Copy the columns of ``W`` (``(n, b)``) into basis rows ``(b, n)``.

    One column is copied as a flat vector: ``rows.copy_(W.T)`` took 0.8 s instead of 0.07 s
    for 124M numbers (a copy through a transposed view of an ``(n, 1)`` tensor).
    """
    if W.shape[1] == 1:
        rows[0].copy_(W[:, 0])
    else:
        rows.copy_(W.T)


def _transform_rows_(Q: Tensor, m: int, S: Tensor) -> None:
    """Overwrite rows ``[0, S.shape[1])`` of ``Q`` with ``S^T Q[:m]``, a block of columns at a time.

    Column ``c`` of the result depends only on column ``c`` of ``Q``, so no temporary as
    large as the basis is needed (a thick restart in place): each block's product goes to a
    reused buffer, then back into the rows.
    """
    kept = S.shape[1]
    St = S.T.to(dtype=Q.dtype, device=Q.device)
    width = min(_COLUMNS_PER_CHUNK, Q.shape[1])
    result = torch.empty(kept, width, dtype=Q.dtype, device=Q.device)
    for start in range(0, Q.shape[1], width):
        stop = min(start + width, Q.shape[1])
        k = stop - start
        torch.mm(St, Q[:m, start:stop], out=result[:, :k])
        Q[:kept, start:stop] = result[:, :k]


def _ritz_vectors(Q: Tensor, m: int, S: Tensor, device: torch.device) -> Tensor:
    """Return ``Q[:m]^T S`` as an ``(n, k)`` block on ``device``, a block of rows at a time.

    Returns
    -------
    Tensor
        The Ritz vectors in columns.
    """
    n, k = Q.shape[1], S.shape[1]
    out = torch.empty(n, k, dtype=Q.dtype, device=device)
    S = S.to(dtype=Q.dtype, device=Q.device)
    for start in range(0, n, _COLUMNS_PER_CHUNK):
        stop = min(start + _COLUMNS_PER_CHUNK, n)
        out[start:stop] = (Q[:m, start:stop].T @ S).to(device)
    return out


def _orthonormal_block(
    space: VectorSpace,
    W: Tensor,
    Q: Tensor,
    generator: torch.Generator,
    scale: float,
    norms: Tensor | None = None,
) -> Tensor:
    """Orthonormalize ``W`` (already orthogonal to the rows of ``Q``); replace lost directions.

    Columns that vanished (the Krylov space became invariant) are replaced by random
    vectors orthogonal to ``Q`` and to the kept columns, so the iteration can continue.

    Returns
    -------
    Tensor
        ``R`` with ``W_in = W_out R`` restricted to the kept directions (zero rows where a
        direction was replaced); ``W`` is overwritten with the orthonormal block.
    """
    if norms is not None and W.shape[1] == 1:  # one column: its norm is known already
        R = norms.reshape(1, 1).to(W.dtype)
        W.div_(R.clamp_min(torch.finfo(W.dtype).tiny))
    else:
        R = space.orthonormalize(W)
    tiny = R.diagonal().abs().cpu() <= 1e-12 * max(scale, 1e-300) * max(1, space.dim) ** 0.5
    if bool(tiny.any()):
        R = R.clone()
        R[tiny.to(R.device), :] = 0
        fresh = draw(space, int(tiny.sum()), generator, "gaussian", probe_major=False)
        fresh = fresh.to(dtype=W.dtype, device=W.device)
        kept = W[:, ~tiny.to(W.device)]
        for _ in range(2):
            space.project_out_(fresh, Q)
            if kept.shape[1]:
                space.project_out_(fresh, kept.T)
        space.orthonormalize(fresh)
        W[:, tiny.to(W.device)] = fresh
    return R


def _select(theta: Tensor, count: int, which: Which) -> Tensor:
    """Return the indices of the wanted Ritz values, best first.

    Returns
    -------
    Tensor
        Indices into ``theta``.
    """
    m = theta.numel()
    count = min(count, m)
    if which == "largest":
        return torch.argsort(theta, descending=True)[:count]
    if which == "smallest":
        return torch.argsort(theta)[:count]
    if which == "magnitude":
        return torch.argsort(theta.abs(), descending=True)[:count]
    top = torch.argsort(theta, descending=True)
    half = (count + 1) // 2
    bottom = torch.argsort(theta)
    chosen = list(top[:half].tolist())
    for i in bottom.tolist():
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


@dataclass(frozen=True)
class LanczosResult:
    """Ritz pairs from :func:`restarted_lanczos`.

    Attributes
    ----------
    values : Tensor
        Wanted Ritz values (float64, CPU), best first.
    vectors : Tensor
        Ritz vectors in columns, on the operator's device and dtype.
    residuals : Tensor
        Residual norms from the Lanczos relation (float64, CPU).
    converged : Tensor
        Residual within tolerance.
    scale : float
        Largest Ritz value magnitude seen (the norm estimate the tolerance refers to).
    num_matvecs : int
        Products used.
    num_passes : int
        ``matmat`` calls used.
    num_restarts : int
        Thick restarts performed.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    converged: Tensor
    scale: float
    num_matvecs: int
    num_passes: int
    num_restarts: int


def restarted_lanczos(
    A: LinearOperator,
    count: int,
    which: Which,
    *,
    tol: float,
    max_matvecs: int,
    ncv: int,
    block_size: int,
    generator: torch.Generator,
    v0: Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    basis_device: torch.device | str | None = None,
) -> LanczosResult:
    r"""Compute ``count`` extreme eigenpairs of a symmetric operator by thick-restart block Lanczos.

    A Ritz pair :math:`(\theta_i, y_i)` is converged when
    :math:`\lVert A y_i - \theta_i y_i \rVert \le \mathrm{tol} \cdot \max_j |\theta_j|`
    (a backward-error criterion: the eigenvalue error is at most the residual, and at most
    residual² / gap).

    The basis is stored as rows (each vector contiguous), allocated once; a step costs the
    product, a Gram-Schmidt sweep over the two newest blocks and one over the whole basis
    (:func:`_orthogonalize`; two whole sweeps right after a restart) and a copy of the new
    vector into it; a restart rotates the basis in place. With at most
    ``ncv`` basis vectors of :math:`n` numbers, the memory is ``ncv * n`` numbers besides
    the product's.

    Parameters
    ----------
    A : LinearOperator
        Symmetric operator; its :attr:`~LinearOperator.vector_space` does the inner products.
    count : int
        Number of wanted eigenpairs (for ``which="both"``, split between the two ends).
    which : {"largest", "smallest", "both", "magnitude"}
        Which end of the spectrum.
    tol : float
        Relative residual tolerance.
    max_matvecs : int
        Budget of products; the result reports what converged within it.
    ncv : int
        Maximum basis size, the current block included (memory ``n * ncv``); restarts keep
        the wanted Ritz vectors and some neighbours.
    block_size : int
        Vectors per ``matmat`` (per pass over the data).
    generator : torch.Generator
        Source of the random starting block.
    v0 : Tensor, optional
        Starting vector(s), shape ``(n,)`` or ``(n, block_size)``.
    callback : callable, optional
        Called as ``callback(num_matvecs, num_converged)`` after every step (progress bars).
    basis_device : torch.device or str, optional
        Where the basis lives (default: the operator's device); ``"cpu"`` keeps it in host
        memory for a GPU operator, at the cost of moving each new block there and back.

    Returns
    -------
    LanczosResult
        The wanted Ritz pairs and their certificates.
    """
    space = A.vector_space
    n, n_local = space.dim, space.local_dim
    b = block_size
    home = torch.device(basis_device) if basis_device is not None else A.device
    Q = torch.empty(ncv, n_local, dtype=A.dtype, device=home)  # the basis, one vector per row
    T = torch.zeros(ncv, ncv, dtype=torch.float64)
    if v0 is not None:
        start = v0.reshape(n_local, -1).to(dtype=A.dtype, device=A.device)
        if start.shape[1] < b:
            extra = draw(space, b - start.shape[1], generator, "gaussian", probe_major=False)
            start = torch.cat([start, extra], dim=1)
        start = start[:, :b].clone()
    else:
        start = draw(space, b, generator, "gaussian", probe_major=False)
    _orthonormal_block(space, start, Q[:0], generator, 1.0)
    _store_(Q[:b], start)
    del start
    j = 0  # rows [0, j) hold processed vectors; [j, j+b) the current block
    recent = 0  # rows [recent, j) the previous block, coupled to the current one (0: all)
    matvecs = passes = restarts = 0
    scale = 0.0
    keep_extra = max(b, (ncv - count) // 2)
    while True:
        block = Q[j : j + b].T
        W = A.matmat(block if home == A.device else block.to(A.device))
        matvecs += b
        passes += 1
        m = j + b
        coefficients, norms = _orthogonalize(space, W, Q[:m], recent)
        coefficients = coefficients.double().cpu()
        T[:m, j:m] = coefficients
        T[j:m, :m] = coefficients.T
        T[j:m, j:m] = 0.5 * (coefficients[j:m] + coefficients[j:m].T)
        theta, S = torch.linalg.eigh(T[:m, :m])
        scale = max(scale, float(theta.abs().max()))
        R = _orthonormal_block(space, W, Q[:m], generator, scale, norms)
        coupling = R.double().cpu() @ S[m - b : m]  # (b, m): residual directions of Ritz pairs
        residuals = coupling.norm(dim=0)
        wanted = _select(theta, count, which)
        done = residuals[wanted] <= tol * max(scale, 1e-300)
        if wanted.numel() < count:  # fewer Ritz values than wanted so far
            done = torch.zeros(1, dtype=torch.bool)
        exhausted = m + b > n  # the Krylov space is (nearly) the whole space: exact
        if callback is not None:
            callback(matvecs, int(done.sum()))
        if bool(done.all()) or exhausted or matvecs + b > max_matvecs:
            del W
            vectors = _ritz_vectors(Q, m, S[:, wanted], A.device)
            if exhausted and m >= n:
                residuals = torch.zeros_like(residuals)
            return LanczosResult(
                values=theta[wanted],
                vectors=vectors,
                residuals=residuals[wanted],
                converged=residuals[wanted] <= tol * max(scale, 1e-300),
                scale=scale,
                num_matvecs=matvecs,
                num_passes=passes,
                num_restarts=restarts,
            )
        if m + b <= ncv:
            _store_(Q[m : m + b], W)
            recent, j = j, m
            continue
        # Thick restart: keep the wanted Ritz vectors plus neighbours from the same end(s);
        # the residual block W becomes the next block, coupled through ``coupling``.
        keep = _select(theta, min(count + keep_extra, ncv - b), which)
        kept = keep.numel()
        _transform_rows_(Q, m, S[:, keep])
        _store_(Q[kept : kept + b], W)
        del W
        T.zero_()
        T[:kept, :kept] = torch.diag(theta[keep])
        T[kept : kept + b, :kept] = coupling[:, keep]
        T[:kept, kept : kept + b] = coupling[:, keep].T
        recent, j = 0, kept  # the arrowhead: the next block is coupled to every kept row
        restarts += 1


@dataclass(frozen=True)
class Tridiagonal:
    r"""Lanczos tridiagonal matrices of several independent runs.

    Attributes
    ----------
    alphas : Tensor
        Diagonals, shape ``(num_runs, num_steps)`` (float64, CPU).
    betas : Tensor
        Off-diagonals, shape ``(num_runs, num_steps - 1)``.
    residual_norms : Tensor
        :math:`\beta_m`, the norm of each run's next Lanczos vector before normalization,
        shape ``(num_runs,)``: the residual of Ritz pair :math:`(\theta_j, Q s_j)` is
        :math:`\beta_m |e_m^\top s_j|`.
    num_matvecs : int
        Products used.
    num_passes : int
        ``matmat`` calls used.
    """

    alphas: Tensor
    betas: Tensor
    residual_norms: Tensor
    num_matvecs: int
    num_passes: int

    def matrices(self) -> Tensor:
        """Return the dense tridiagonal matrices, shape ``(num_runs, m, m)``.

        Returns
        -------
        Tensor
            Symmetric tridiagonal matrices.
        """
        T = torch.diag_embed(self.alphas)
        T += torch.diag_embed(self.betas, offset=1) + torch.diag_embed(self.betas, offset=-1)
        return T


def _project_out(space: VectorSpace, basis: Tensor, v: Tensor, count: int) -> None:
    """Orthogonalize each of the first columns of ``v`` against its run's first ``count`` vectors.

    ``basis`` is ``(r', steps, n)`` for the first ``r'`` runs; columns ``[0, r')`` of ``v``
    are orthogonalized, in place, by classical Gram-Schmidt applied twice (views of the
    basis, coefficients accumulated in float64 by the space).
    """
    for run in range(basis.shape[0]):
        column = v[:, run : run + 1]
        for _ in range(2):
            space.project_out_(column, basis[run, :count, :])


def batched_lanczos(
    A: LinearOperator,
    starts: Tensor,
    num_steps: int,
    *,
    reorthogonalize: bool | int = True,
    generator: torch.Generator | None = None,
    callback: Callable[[int], None] | None = None,
) -> Tridiagonal:
    r"""Run independent Lanczos processes from the columns of ``starts``, batched.

    Step ``j`` multiplies all current Lanczos vectors with one ``matmat`` (one pass over the
    data), so ``num_steps`` steps cost ``num_steps`` passes for any number of runs. Each
    step holds three vectors per run (the current and previous Lanczos vectors and the new
    product), updated in place.

    Parameters
    ----------
    A : LinearOperator
        Symmetric operator; its :attr:`~LinearOperator.vector_space` does the inner products.
    starts : Tensor
        Starting vectors in columns, shape ``(n, r)`` (normalized here).
    num_steps : int
        Lanczos steps :math:`m` per run (stops early, for all runs, if every run hits an
        invariant subspace).
    reorthogonalize : bool or int, optional
        Full reorthogonalization of each run against its own basis (memory ``n * m`` per
        run); an int reorthogonalizes only the first that many runs. Without it, quadrature
        moments stay accurate (Greenbaum 1989) but Ritz values may repeat.
    generator : torch.Generator, optional
        Source of fresh directions for runs that hit an invariant subspace.
    callback : callable, optional
        Called with the step number after each step.

    Returns
    -------
    Tridiagonal
        The :math:`\alpha_j` and :math:`\beta_j` of every run.
    """
    space = A.vector_space
    n_local, r = starts.shape
    steps = min(num_steps, space.dim)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    runs = r if reorthogonalize is True else int(reorthogonalize)
    runs = max(0, min(runs, r))
    q = starts / space.norms(starts)
    # The basis of the reorthogonalized runs, preallocated once: (run, step, n). Projections
    # use views of it (batched matrix products over the runs), so reorthogonalization needs
    # no copy of the basis nor temporaries of its size: the memory is n * runs * m numbers.
    basis = torch.empty(runs, steps, n_local, dtype=q.dtype, device=q.device) if runs else None

    if basis is not None:
        basis[:, 0, :] = q[:, :runs].T
    previous: Tensor | None = None
    beta = torch.zeros(r, dtype=q.dtype, device=q.device)
    alphas, betas = [], []
    matvecs = passes = 0
    for step in range(steps):
        w = A.matmat(q)
        matvecs += r
        passes += 1
        alpha = space.dots(q, w)
        w.addcmul_(q, alpha, value=-1)
        if previous is not None:
            w.addcmul_(previous, beta, value=-1)
        if basis is not None:
            _project_out(space, basis, w, step + 1)
        alphas.append(alpha)
        if callback is not None:
            callback(step + 1)
        beta = space.norms(w)
        if step == steps - 1:
            break
        invariant = beta <= 1e-10 * (alpha.abs() + beta).clamp_min(1e-300)
        if bool(invariant.all()):
            beta = torch.zeros_like(beta)
            break  # every run found an invariant subspace: its quadrature is exact
        if bool(invariant.any()):
            # A run whose Krylov space became invariant continues from a fresh direction
            # with a zero coupling: its later Ritz values get zero quadrature weight.
            beta = torch.where(invariant, torch.zeros_like(beta), beta)
            fresh = draw(space, r, generator, "gaussian", probe_major=False)
            fresh = fresh.to(dtype=w.dtype, device=w.device)
            if basis is not None:
                _project_out(space, basis, fresh, step + 1)
            w = torch.where(invariant, fresh / space.norms(fresh), w)
        betas.append(beta)
        w.div_(torch.where(invariant, torch.ones_like(beta), beta))
        previous, q = q, w
        del w
        if basis is not None:
            basis[:, step + 1, :] = q[:, :runs].T
    alpha_t = torch.stack(alphas, 1).double().cpu()
    beta_t = (
        torch.stack(betas, 1).double().cpu()[:, : alpha_t.shape[1] - 1]
        if betas
        else torch.zeros(r, 0, dtype=torch.float64)
    )
    return Tridiagonal(alpha_t, beta_t, beta.double().cpu(), matvecs, passes)
