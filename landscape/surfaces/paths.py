r"""Loss along the straight path between two models, and on the plane through three."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.losses import Criterion
from landscape.problem import as_problem, unwrap_model
from landscape.surfaces.directions import _dot, direction_between
from landscape.surfaces.grid import BNPolicy, GridOptions, Surface, evaluate_grid

__all__ = ["interpolate", "plane"]


def _float_buffers(model: nn.Module) -> dict[str, Tensor]:
    return {n: b.detach() for n, b in model.named_buffers() if b.is_floating_point()}


def _buffer_delta(model_a: nn.Module, model_b: nn.Module) -> dict[str, Tensor]:
    other = dict(model_b.named_buffers())
    return {n: other[n].to(b.dtype) - b for n, b in _float_buffers(model_a).items() if n in other}


def _check_same_architecture(*models: nn.Module) -> None:
    first = [(n, tuple(p.shape)) for n, p in models[0].named_parameters()]
    for i, m in enumerate(models[1:], start=2):
        other = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
        if other != first:
            raise ValueError(
                f"model {i} has a different architecture from model 1 (parameter names or "
                "shapes differ); paths and planes need models of one architecture."
            )


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    loss_fn: Criterion | None = None,
    *,
    num: int = 41,
    extend: float = 0.25,
    bn: BNPolicy = "eval",
    path: str | None = None,
    progress: bool = True,
    **options: Any,
) -> Surface:
    r"""Loss along the line :math:`\theta(t) = (1-t)\,\theta_a + t\,\theta_b` (Goodfellow et al.).

    The grid has ``num`` points on :math:`[0, 1]` (both ends included exactly) plus points
    at the same spacing out to :math:`-\text{extend}` and :math:`1+\text{extend}`. With
    ``bn="eval"`` (default) floating-point buffers such as BatchNorm running statistics are
    interpolated along with the parameters, so the endpoints reproduce each model's own
    eval loss (up to rounding of :math:`\theta_a + 1\cdot(\theta_b-\theta_a)`);
    ``bn="recompute"`` re-estimates them at every point instead. The result's
    :meth:`Surface.barrier` is the loss barrier of linear mode connectivity.

    Parameters
    ----------
    model_a, model_b : torch.nn.Module
        Two models of the same architecture (never modified).
    data : iterable of batches, or one batch
        As for :func:`landscape.hessian`.
    loss_fn : callable, optional
        As for :func:`landscape.hessian`.
    num : int, optional
        Points on :math:`[0, 1]`.
    extend : float, optional
        How far to continue beyond each end, in units of the path.
    bn : {"eval", "recompute", "batch"}, optional
        BatchNorm policy, as for :func:`landscape.surface`.
    path : str, optional
        HDF5 file to write (and resume from), as for :func:`landscape.surface`.
    progress : bool, optional
        Show a progress bar.
    **options
        Options of :class:`~landscape.problem.Problem` (``batch_loss``, ``count``,
        ``max_samples``, ...).

    Returns
    -------
    Surface
        A 1-D surface over :math:`t`; ``barrier()`` gives the barrier height.

    Raises
    ------
    ValueError
        For ``num < 2``, a negative ``extend`` or different architectures.

    References
    ----------
    I. Goodfellow, O. Vinyals, A. Saxe, "Qualitatively characterizing neural network
    optimization problems", ICLR 2015. J. Frankle, G. K. Dziugaite, D. Roy, M. Carbin, "Linear
    mode connectivity and the lottery ticket hypothesis", ICML 2020.

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> path = interpolate(a, b, (X, y), num=5, extend=0.5, progress=False)
    >>> path.coords[0]
    array([-0.5 , -0.25,  0.  ,  0.25,  0.5 ,  0.75,  1.  ,  1.25,  1.5 ])
    >>> path.barrier() <= 0  # a linear model with a convex loss has no barrier
    True
    """
    if not isinstance(num, int) or num < 2:
        raise ValueError(f"num must be an integer >= 2; got {num!r}.")
    if extend < 0:
        raise ValueError(f"extend must be non-negative; got {extend!r}.")
    model_a, model_b = unwrap_model(model_a), unwrap_model(model_b)
    _check_same_architecture(model_a, model_b)
    step = 1.0 / (num - 1)
    outside = math.floor(extend / step + 1e-9)
    t = np.concatenate(
        [
            -step * np.arange(outside, 0, -1),
            np.linspace(0.0, 1.0, num),
            1.0 + step * np.arange(1, outside + 1),
        ]
    )
    moving = bn == "eval"
    grid = GridOptions(
        bn=bn,
        buffer_origin=_float_buffers(model_a) if moving else None,
        buffer_directions=[_buffer_delta(model_a, model_b)] if moving else None,
        description="interpolate(model_a, model_b)",
    )
    problem = as_problem(model_a, data, loss_fn, where="interpolate", **options)
    direction = direction_between(model_a, model_b)
    return evaluate_grid(problem, direction, t, grid, path=path, progress=progress)


def plane(
    model_a: nn.Module,
    model_b: nn.Module,
    model_c: nn.Module,
    data: Any,
    loss_fn: Criterion | None = None,
    *,
    num: int = 41,
    margin: float = 0.2,
    bn: BNPolicy = "eval",
    path: str | None = None,
    progress: bool = True,
    **options: Any,
) -> Surface:
    r"""Loss on the plane through three models (Garipov et al. 2018).

    With :math:`u = \theta_b-\theta_a` and :math:`v = \theta_c-\theta_a`, the plane gets an
    orthonormal basis :math:`e_1 = u/\lVert u\rVert`, :math:`e_2 \propto v - (v^\top e_1)e_1`,
    so coordinates are Euclidean distances in parameter space and angles are faithful. The
    models sit at ``surface.settings["model_coords"]``: :math:`(0, 0)`,
    :math:`(\lVert u\rVert, 0)` and :math:`(v^\top e_1, v^\top e_2)`. The grid spans their
    bounding box enlarged by ``margin`` of its size on each side, ``num`` points per axis.
    With ``bn="eval"`` BatchNorm statistics are interpolated affinely like the parameters.

    Parameters
    ----------
    model_a, model_b, model_c : torch.nn.Module
        Three models of one architecture (never modified); ``model_a`` is the origin.
    data : iterable of batches, or one batch
        As for :func:`landscape.hessian`.
    loss_fn : callable, optional
        As for :func:`landscape.hessian`.
    num : int, optional
        Points per axis.
    margin : float, optional
        Extra room around the three models, as a fraction of the box size.
    bn, path, progress : optional
        As for :func:`interpolate`.
    **options
        Options of :class:`~landscape.problem.Problem`.

    Returns
    -------
    Surface
        A 2-D surface; ``settings["model_coords"]`` holds the three models' coordinates.

    Raises
    ------
    ValueError
        If the models are (nearly) collinear or of different architectures.

    References
    ----------
    T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson, "Loss surfaces, mode
    connectivity, and fast ensembling of DNNs", NeurIPS 2018, arXiv:1802.10026.
    """
    model_a, model_b, model_c = (unwrap_model(m) for m in (model_a, model_b, model_c))
    _check_same_architecture(model_a, model_b, model_c)
    u = direction_between(model_a, model_b)
    v = direction_between(model_a, model_c)
    norm_u = float(_dot(u, u)) ** 0.5
    if norm_u == 0:
        raise ValueError("model_a and model_b have identical parameters.")
    e1 = {k: t / norm_u for k, t in u.items()}
    v1 = float(_dot(v, e1))
    rest = {k: v[k] - v1 * e1[k] for k in v}
    v2 = float(_dot(rest, rest)) ** 0.5
    if v2 <= 1e-9 * max(norm_u, float(_dot(v, v)) ** 0.5):
        raise ValueError("the three models are collinear; there is no plane through them.")
    e2 = {k: t / v2 for k, t in rest.items()}
    points = np.array([[0.0, 0.0], [norm_u, 0.0], [v1, v2]])
    lo, hi = points.min(0), points.max(0)
    pad = margin * (hi - lo)
    axes = tuple(np.linspace(lo[i] - pad[i], hi[i] + pad[i], num) for i in range(2))
    grid = GridOptions(bn=bn, description="plane(model_a, model_b, model_c)")
    if bn == "eval":
        # buffer(x, y) = buf_a + alpha (buf_b - buf_a) + beta (buf_c - buf_a), where
        # x e1 + y e2 = alpha u + beta v: alpha = (x - y v1 / v2) / |u|, beta = y / v2.
        db, dc = _buffer_delta(model_a, model_b), _buffer_delta(model_a, model_c)
        along_x = {k: db[k] / norm_u for k in db}
        along_y = {k: dc[k] / v2 - db[k] * (v1 / (v2 * norm_u)) for k in dc}
        grid = dataclasses.replace(
            grid, buffer_origin=_float_buffers(model_a), buffer_directions=[along_x, along_y]
        )
    problem = as_problem(model_a, data, loss_fn, where="plane", **options)
    result = evaluate_grid(problem, [e1, e2], axes, grid, path=path, progress=progress)
    result.settings["model_coords"] = points.tolist()
    return result
