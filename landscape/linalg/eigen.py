"""Extreme eigenpairs of symmetric operators: certified, restarted Lanczos (and power iteration)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from landscape.linalg._random import as_generator, draw
from landscape.linalg.lanczos import Which, restarted_lanczos
from landscape.linalg.results import Eigenpairs
from landscape.memory import DEFAULT_WORKSPACE, MemoryBudget, vector_bytes
from landscape.operators.base import LinearOperator
from landscape.operators.scipy_wrapper import as_operator

__all__ = ["eigenvalues", "power_iteration"]

_WHICH = ("largest", "smallest", "both", "magnitude")
#: The largest basis chosen by default where the model is large (its size depends on P only,
#: so results are reproducible); a larger one converges in fewer products but makes every
#: step's orthogonalization, which reads the whole basis, cost more than the product.
DEFAULT_BASIS_BYTES = DEFAULT_WORKSPACE
#: Basis vectors beyond k' + block_size in the smallest default basis: max(4, k'). Thick
#: restarts keep the wanted Ritz vectors and some neighbours; on a spectrum with clustered
#: top eigenvalues (ten within 20 % of the top, a dense bulk below) this needs about 1.5x the
#: products of a 40-vector basis for k = 1 and k = 5 at tol = 1e-6, against 2.5-5x with one
#: or two extra vectors.
SMALL_BASIS_EXTRA = 4
#: Vectors besides the basis during a step, per column of a block: the product's input
#: and output and the operator's own buffers.
STEP_VECTORS = 3


def least_vectors(wanted: int, block_size: int = 1, dim: int | None = None) -> int:
    """Return the parameter vectors the smallest Lanczos run for ``wanted`` pairs holds at once.

    The basis of ``wanted + block_size + 1`` vectors (at most ``dim``) and a step's
    :data:`STEP_VECTORS` per column of the block: what :func:`basis_size` requires of the
    memory budget at least.

    Returns
    -------
    int
        A count of vectors of the operator's (local) dimension.

    Examples
    --------
    >>> least_vectors(1)  # a basis of 3, a step's 3
    6
    """
    basis = wanted + block_size + 1 if dim is None else min(wanted + block_size + 1, dim)
    return basis + STEP_VECTORS * block_size


def basis_size(
    A: LinearOperator,
    wanted: int,
    block_size: int,
    ncv: int | None,
    budget: MemoryBudget,
) -> int:
    """Return the Lanczos basis size: ``ncv`` if given (checked), else sized from P and the budget.

    The default is ``max(2 k' + 20, 40)`` vectors while they take at most
    :data:`DEFAULT_BASIS_BYTES`, else ``k' + block_size + max(4, k')``, and never more than the
    budget holds next to the step's own vectors (:data:`STEP_VECTORS` per column), down to
    ``k' + block_size + 1``.

    Returns
    -------
    int
        The basis size, capped at the dimension.

    Raises
    ------
    MemoryBudgetError
        If the smallest basis (or the given ``ncv``) does not fit in the budget.
    ValueError
        If a given ``ncv`` is below ``k' + block_size``.
    """
    space = A.vector_space
    n, n_local = space.dim, space.local_dim
    reserved = STEP_VECTORS * block_size * vector_bytes(n_local, A.dtype)
    fits = budget.vectors(n_local, A.dtype, reserved=reserved)
    if ncv is not None:
        ncv = min(ncv, n)
        if ncv < wanted + block_size and ncv < n:
            raise ValueError(f"ncv={ncv} must be at least k' + block_size = {wanted + block_size}.")
        budget.require(
            ncv + STEP_VECTORS * block_size,
            n_local,
            A.dtype,
            what=f"the Lanczos basis (ncv={ncv}) and a step's {STEP_VECTORS * block_size} vectors",
            knob=f"pass a smaller ncv= (at least {wanted + block_size}), or memory_budget=",
        )
        return ncv
    preferred = max(2 * wanted + 20, 40)
    affordable = DEFAULT_BASIS_BYTES // max(vector_bytes(n, A.dtype), 1)  # P alone decides
    size = max(min(preferred, affordable), wanted + block_size + max(SMALL_BASIS_EXTRA, wanted))
    smallest = min(wanted + block_size + 1, n)
    if min(size, n) > fits:
        budget.require(
            least_vectors(wanted, block_size, n),
            n_local,
            A.dtype,
            what=f"the smallest Lanczos basis for k'={wanted} ({smallest} vectors) and a step",
            knob="lower k or block_size, raise memory_budget=, or free memory",
        )
        size = fits
    return min(size, n)


def _named(A: LinearOperator, vectors: Tensor) -> list[dict[str, Tensor]] | None:
    to_params = getattr(A, "vector_to_params", None)
    if to_params is None:
        return None
    return [to_params(vectors[:, i]) for i in range(vectors.shape[1])]


def _order(values: Tensor, which: Which, k: int) -> Tensor:
    if which == "smallest":
        return torch.argsort(values)
    if which == "magnitude":
        return torch.argsort(values.abs(), descending=True)
    if which == "both":
        top = torch.argsort(values, descending=True)[:k]
        bottom = torch.argsort(values)[:k]
        return torch.cat([top, bottom.flip(0)])
    return torch.argsort(values, descending=True)


def eigenvalues(
    A: Any,
    k: int = 10,
    which: Which = "largest",
    *,
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    seed: int | torch.Generator | None = 0,
    block_size: int = 1,
    ncv: int | None = None,
    v0: Tensor | None = None,
    certify: bool = False,
    progress: bool = False,
    memory_budget: Any = None,
    basis_device: torch.device | str | None = None,
) -> Eigenpairs:
    r"""Compute extreme eigenvalues and eigenvectors of a symmetric operator, with residuals.

    Thick-restart block Lanczos with full orthogonalization
    (:func:`landscape.linalg.lanczos.restarted_lanczos`). A pair is converged when

    .. math::
        \lVert A v_i - \lambda_i v_i \rVert \le \mathrm{tol}\cdot \max_j |\theta_j| ,

    with :math:`\max_j|\theta_j|` the largest Ritz value magnitude seen (an estimate of
    :math:`\lVert A\rVert_2`). Then :math:`|\lambda_i - \lambda_i^{\text{exact}}|` is at most
    the residual, and at most residual² / (distance to the rest of the spectrum). Residuals
    come from the Lanczos relation, which full orthogonalization keeps exact to rounding;
    ``certify=True`` recomputes them explicitly with one more pass (k products).

    The smallest eigenvalues of a Hessian (negative curvature at saddles) sit next to a
    dense bulk near zero and converge more slowly than the top ones; give ``which="both"``
    or ``"smallest"`` a larger ``max_matvecs`` if the result reports ``converged=False``.
    The residual test only proves that a Ritz value is near *some* eigenvalue: with a loose
    ``tol``, a vector from the bulk near zero passes it before the true smallest eigenvalue
    is found, so a warning is issued when a smallest eigenvalue is within
    ``10 * tol * ||A||`` of zero.

    Parameters
    ----------
    A : LinearOperator, Tensor, ndarray or scipy LinearOperator
        Symmetric operator (e.g. ``ls.hessian(model, data)``) or dense symmetric matrix.
    k : int, optional
        Number of eigenpairs (``which="both"``: ``k`` at each end).
    which : {"largest", "smallest", "both", "magnitude"}, optional
        Algebraically largest (default; the sharpness), smallest (negative curvature),
        both ends, or largest in magnitude.
    tol : float, optional
        Relative residual tolerance (see above).
    max_matvecs : int, optional
        Budget of products (default ``max(600, 60 * k)``); pairs not converged within it
        are returned with ``converged=False`` and a warning.
    seed : int or torch.Generator, optional
        Randomness of the starting vector; results are deterministic given it.
    block_size : int, optional
        Vectors per ``matmat`` (one pass over the data). Larger blocks use fewer passes
        and cope better with repeated eigenvalues, at the price of more products.
    ncv : int, optional
        Maximum Krylov basis size (memory ``P * ncv``). Default, for ``k'`` wanted pairs:
        ``max(2 k' + 20, 40)`` while that takes at most 2 GiB, else
        ``k' + block_size + max(4, k')``
        (a large model: every step reads the whole basis, so a small one keeps a step's cost
        near the product's), and at most what ``memory_budget`` holds (see
        :func:`basis_size`).
    v0 : Tensor, optional
        Starting vector(s) (e.g. the previous top eigenvector, to track sharpness cheaply).
    certify : bool, optional
        Recompute residuals as :math:`\lVert A v - \lambda v\rVert` with one more pass.
    progress : bool, optional
        Show a tqdm progress bar of products used.
    memory_budget : int, float or str, optional
        Bytes the basis and a step's vectors may take (a float in (0, 1]: that fraction of
        the free memory; ``"8GB"``); default a quarter of the memory free on the basis' device
        (:mod:`landscape.memory`). The product's own activations come on top.
    basis_device : torch.device or str, optional
        Where the basis lives (default: the operator's device). ``"cpu"`` keeps it in host
        memory for a GPU operator (each step moves one block there and back).

    Returns
    -------
    Eigenpairs
        ``values``, ``vectors`` (columns), ``residuals``, ``converged``, ``num_matvecs``,
        ``num_passes``; ``named_vectors`` as parameter dicts for curvature operators.

    Raises
    ------
    ValueError
        For ``k < 1``, ``k`` larger than the dimension, an unknown ``which``, or invalid
        ``tol``/``block_size``/``ncv``/``max_matvecs``.
    MemoryBudgetError
        If the smallest basis, or the given ``ncv``, does not fit in ``memory_budget``.

    References
    ----------
    C. Lanczos (1950), J. Res. Natl. Bur. Stand. 45. K. Wu, H. Simon (2000), SIAM J. Matrix
    Anal. Appl. 22(2). B. N. Parlett, *The Symmetric Eigenvalue Problem*, SIAM 1998.

    Examples
    --------
    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> ev = eigenvalues(A, k=3)
    >>> torch.round(ev.values, decimals=6)
    tensor([100.,  99.,  98.], dtype=torch.float64)
    >>> bool(ev.all_converged), bool(ev.residuals.max() < 1e-4)
    (True, True)
    """
    A = as_operator(A)
    n = A.vector_space.dim
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}; got {which!r}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    wanted = 2 * k if which == "both" else k
    if wanted > n:
        raise ValueError(
            f"k={k} asks for {wanted} eigenpairs of a {n}x{n} operator; at most {n} exist."
        )
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol!r}.")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}.")
    budget = MemoryBudget.resolve(memory_budget, basis_device or A.device)
    ncv = basis_size(A, wanted, block_size, ncv, budget)
    max_matvecs = max_matvecs if max_matvecs is not None else max(600, 60 * wanted)
    if max_matvecs < block_size:
        raise ValueError(f"max_matvecs must be at least block_size; got {max_matvecs}.")
    generator = as_generator(seed)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_matvecs, desc=f"eigenvalues ({which})", unit="HVP", leave=False)

    def callback(matvecs: int, converged: int) -> None:
        if bar is not None:
            bar.n = matvecs
            bar.set_postfix(converged=f"{converged}/{wanted}")
            bar.refresh()

    try:
        result = restarted_lanczos(
            A,
            wanted,
            which,
            tol=tol,
            max_matvecs=max_matvecs,
            ncv=ncv,
            block_size=block_size,
            generator=generator,
            v0=v0,
            callback=callback,
            basis_device=basis_device,
        )
    finally:
        if bar is not None:
            bar.close()
    order = _order(result.values, which, k)
    values = result.values[order]
    vectors = result.vectors[:, order.to(result.vectors.device)]
    residuals = result.residuals[order]
    matvecs, passes = result.num_matvecs, result.num_passes
    if certify:
        AV = A.matmat(vectors)
        matvecs += vectors.shape[1]
        passes += 1
        lam = values.to(dtype=vectors.dtype, device=vectors.device)
        residuals = A.vector_space.norms(AV - vectors * lam).double().cpu()
    converged = residuals <= tol * max(result.scale, 1e-300)
    resolution = tol * result.scale
    if which in ("smallest", "both") and bool((values.abs() < 10 * resolution).any()):
        # A converged Ritz value is within its residual of *some* eigenvalue; next to a dense
        # bulk near zero that can be a bulk eigenvalue rather than the smallest one.
        warnings.warn(
            f"some of the smallest eigenvalues are within 10 x tol x ||A|| = {10 * resolution:.2e} "
            "of zero, the resolution of the stopping rule; they may be bulk eigenvalues rather "
            "than the smallest. Lower tol (e.g. 1e-6) to resolve negative curvature near zero.",
            stacklevel=2,
        )
    if not bool(converged.all()):
        warnings.warn(
            f"{int((~converged).sum())} of {wanted} eigenpairs did not reach tol={tol:g} "
            f"within {matvecs} products (largest relative residual "
            f"{float(residuals.max()) / max(result.scale, 1e-300):.2e}); raise max_matvecs "
            "or tol. Unconverged values are still Ritz values (bounds on the spectrum).",
            stacklevel=2,
        )
    return Eigenpairs(
        values=values,
        vectors=vectors,
        residuals=residuals,
        converged=converged,
        num_matvecs=matvecs,
        num_passes=passes,
        named_vectors=_named(A, vectors),
    )


def power_iteration(
    A: Any,
    *,
    tol: float = 1e-3,
    max_matvecs: int = 100,
    seed: int | torch.Generator | None = 0,
    v0: Tensor | None = None,
) -> Eigenpairs:
    r"""Largest-magnitude eigenpair by power iteration (for comparison with PyHessian).

    Iterates :math:`v \leftarrow Av/\lVert Av\rVert` until the Rayleigh quotient changes by
    less than ``tol`` relative, as PyHessian does. Convergence is linear with rate
    :math:`|\lambda_2/\lambda_1|` — slow when the top eigenvalues are close (at the edge of
    stability); prefer :func:`eigenvalues`.

    Parameters
    ----------
    A : LinearOperator, Tensor, ndarray or scipy LinearOperator
        Symmetric operator.
    tol : float, optional
        Relative change of the eigenvalue estimate at which to stop.
    max_matvecs : int, optional
        Budget of products.
    seed : int or torch.Generator, optional
        Randomness of the starting vector.
    v0 : Tensor, optional
        Starting vector.

    Returns
    -------
    Eigenpairs
        One pair, with its explicit residual (from the last product).

    Examples
    --------
    >>> A = torch.diag(torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64))
    >>> ev = power_iteration(A, tol=1e-12)
    >>> round(float(ev.values[0]), 6)
    10.0
    """
    A = as_operator(A)
    space = A.vector_space
    generator = as_generator(seed)
    v = (
        v0.reshape(-1, 1).to(A.dtype).to(A.device)
        if v0 is not None
        else draw(space, 1, generator, "gaussian", probe_major=False)
    )
    v = v / space.norms(v)
    value = torch.zeros((), dtype=torch.float64)
    Av = A.matmat(v)
    matvecs = 1
    for _ in range(max_matvecs - 1):
        new = space.dots(v, Av).sum().double().cpu()
        if abs(float(new - value)) <= tol * abs(float(new)) + 1e-300:
            value = new
            break
        value = new
        v = Av / space.norms(Av)
        Av = A.matmat(v)
        matvecs += 1
    value = space.dots(v, Av).sum().double().cpu()
    residual = space.norms(Av - v * value.to(Av.dtype)).sum().double().cpu()
    converged = residual <= tol * value.abs()
    return Eigenpairs(
        values=value.reshape(1),
        vectors=v,
        residuals=residual.reshape(1),
        converged=converged.reshape(1),
        num_matvecs=matvecs,
        num_passes=matvecs,
        named_vectors=_named(A, v),
    )
