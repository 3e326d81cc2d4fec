"""The generalized Gauss-Newton matrix of the mean loss, as a matrix-free operator."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.func import grad, jvp, vjp

from landscape.losses import Criterion
from landscape.operators.curvature import CurvatureOperator
from landscape.problem import Evaluation, Problem

__all__ = ["GaussNewtonOperator", "gauss_newton"]


class GaussNewtonOperator(CurvatureOperator):
    r"""Generalized Gauss-Newton matrix :math:`G = \frac1W \sum_b w_b J_b^\top H_{L_b} J_b`.

    .. math::
        G V = \frac{1}{W}\sum_b w_b \, J_b^\top \big(\nabla^2_{f} L_b\big) J_b V ,

    where :math:`J_b = \partial f_\theta(X_b)/\partial\theta` is the Jacobian of the model's
    outputs on batch :math:`b`, :math:`\nabla^2_f L_b` the Hessian of the batch's mean
    loss with respect to those outputs, and :math:`w_b` the batch's weight (samples, or
    scored tokens; :math:`W = \sum_b w_b`). :math:`G` drops the second-order term of the
    Hessian, :math:`H = G + \frac1N\sum_i\sum_k \partial_{f_k}\ell_i \nabla^2_\theta f_k(x_i)`,
    so it is positive semi-definite for convex losses (cross-entropy, MSE) and equals
    :math:`H` at an interpolating minimum of the MSE. Per batch and column: a forward-mode
    ``jvp`` through the model (:math:`J_b v`), an exact product with the output Hessian
    (reverse-over-reverse on the criterion), and one ``vjp`` (:math:`J_b^\top u`) shared
    by all columns, vectorized with ``torch.func.vmap``.

    The loss must be given as outputs + criterion: ``loss_fn``, the default criterion, or,
    for a Hugging Face model trained with its own loss, the criterion of its head
    (:func:`landscape.losses.infer_task`: shifted next-token cross-entropy for causal
    language models, and so on), checked on the first batch against the model's loss.
    ``batch_loss`` and dict batches without ``"labels"`` cannot be split this way.

    References
    ----------
    N. N. Schraudolph, "Fast curvature matrix-vector products for second-order gradient
    descent", Neural Computation 14(7), 2002. J. Martens, "New insights and perspectives on
    the natural gradient method", JMLR 21, 2020.

    Examples
    --------
    For a linear model with MSE, the Gauss-Newton matrix equals the Hessian:

    >>> X, Y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    >>> model = nn.Linear(3, 2).double()
    >>> G, H = gauss_newton(model, (X, Y)), hessian(model, (X, Y))
    >>> torch.allclose(G.to_dense(), H.to_dense())
    True
    """

    def _batch_matmat(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        run.problem.check_criterion(run, batch)  # once, before any transform

        def f(theta: dict[str, Tensor]) -> Tensor:
            return run.call_outputs(theta, batch)

        def criterion(outputs: Tensor) -> Tensor:
            return run.criterion(outputs, batch)

        outputs, pullback = vjp(f, run.theta)
        # Output-space Hessian products by reverse-over-reverse: forward-over-reverse through
        # mse_loss raises "ZeroTensors are immutable" on torch 2.13.
        _, output_hessian = vjp(grad(criterion), outputs)

        def column(v: dict[str, Tensor]) -> dict[str, Tensor]:
            _, jv = jvp(f, (run.theta,), (v,))
            return pullback(output_hessian(jv)[0])[0]

        columns = run.problem.vectorize(column, "Gauss-Newton columns", chunk_size=self.chunk_size)
        gv = columns(run.named(V))
        return run.flat(gv), criterion(outputs.detach())


def gauss_newton(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    chunk_size: int | None = None,
    **options: Any,
) -> GaussNewtonOperator:
    r"""Return the generalized Gauss-Newton matrix :math:`J^\top H_L J` of the mean loss.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model with its data and
        ``loss_fn(outputs, targets) -> scalar mean loss`` (default: cross-entropy for integer
        targets, MSE for floating targets); as for :func:`landscape.hessian`.
    chunk_size : int, optional
        Columns vectorized at once.
    **options
        The problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    GaussNewtonOperator
        ``G @ V``, positive semi-definite where the loss is convex in the outputs
        (cross-entropy, MSE); for a model sharded with FSDP2, a
        :class:`~landscape.operators.sharded.ShardedGaussNewtonOperator` on each rank's shards.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> G = gauss_newton(model, (torch.randn(16, 4), torch.randint(0, 3, (16,))))
    >>> v = torch.randn(G.shape[0])
    >>> bool(v @ (G @ v) >= 0)  # positive semi-definite for cross-entropy
    True
    """
    from landscape.operators.sharded import is_sharded, sharded_curvature

    if is_sharded(problem):  # FSDP2: on each rank's shards (landscape.operators.sharded)
        return sharded_curvature(  # type: ignore[return-value]
            "gauss_newton", problem, data, loss_fn, chunk_size=chunk_size, **options
        )
    return GaussNewtonOperator(problem, data, loss_fn, chunk_size=chunk_size, **options)
