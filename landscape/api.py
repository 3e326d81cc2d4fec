"""High-level entry points that combine curvature operators, spectra and surfaces."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from landscape.linalg.eigen import eigenvalues
from landscape.losses import Criterion
from landscape.operators.hessian import hessian
from landscape.problem import Problem

__all__ = ["hessian_directions"]


def hessian_directions(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    k: int = 2,
    *,
    which: str = "largest",
    tol: float = 1e-4,
    seed: int | torch.Generator | None = 0,
    backend: str = "auto",
    **options: Any,
) -> list[dict[str, Tensor]]:
    r"""Top Hessian eigenvectors as surface axes (unit norm, parameter-shaped).

    Random filter-normalized directions mostly see the flat bulk of the spectrum, and with
    BatchNorm their scale is arbitrary; plotting along the top eigenvectors shows the
    sharpest directions instead (as argued for Hessian-axis plots, e.g. by Böttcher &
    Wheeler, "Visualising high-dimensional loss landscapes with Hessian directions", 2024).
    Along an eigenvector :math:`v`, the 1-D surface curvature at 0 equals its eigenvalue.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified) with its data
        and loss, as for :func:`landscape.hessian`.
    k : int, optional
        Number of directions.
    which : {"largest", "smallest", "magnitude"}, optional
        Which eigenvectors.
    tol : float, optional
        Residual tolerance of the eigenpairs.
    seed : int or torch.Generator, optional
        Lanczos starting vector.
    backend, **options
        The Hessian backend and the problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    list of dict
        ``k`` orthonormal directions ``{name: tensor}``.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    >>> dirs = hessian_directions(model, (torch.randn(32, 3), torch.randint(0, 2, (32,))), k=2)
    >>> len(dirs), sorted(dirs[0]) == sorted(n for n, _ in model.named_parameters())
    (2, True)
    """
    H = hessian(problem, data, loss_fn, backend=backend, **options)
    ev = eigenvalues(H, k=k, which=which, tol=tol, seed=seed)  # type: ignore[arg-type]
    assert ev.named_vectors is not None  # curvature operators always provide them
    return [{n: t.clone() for n, t in d.items()} for d in ev.named_vectors]
