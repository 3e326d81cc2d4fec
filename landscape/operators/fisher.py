"""The empirical Fisher matrix (uncentered second moment of per-sample gradients)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from landscape.losses import Criterion
from landscape.operators.curvature import CurvatureOperator
from landscape.operators.per_example import sample_gradients
from landscape.problem import Evaluation, Problem

__all__ = ["EmpiricalFisherOperator", "fisher"]

_GRADIENT_ENTRIES_PER_CHUNK = 2**24  # bounds the (samples x P) per-sample gradient block


class EmpiricalFisherOperator(CurvatureOperator):
    r"""Empirical Fisher :math:`F = \frac1W \sum_i w_i g_i g_i^\top` of per-sample gradients.

    .. math::
        F V = \frac{1}{W} \sum_{i=1}^{N} w_i\, g_i \,(g_i^\top V) , \qquad W = \sum_i w_i ,

    with :math:`w_i` the units of sample :math:`i` (1, or its scored tokens for a language
    model, so that :math:`\sum_i w_i g_i / W` is the gradient of the training loss).
    Per-sample gradients :math:`g_i` come from ``torch.func.vmap(torch.func.grad(.))`` over
    the samples of each batch (each sample evaluated as a batch of one; an exact loop when
    ``vmap`` cannot trace the model), in chunks that keep the ``(samples, P)`` gradient
    block near 16M entries (or ``chunk_size`` samples). The per-sample loss is the batch
    criterion applied to one sample. Only ``mode="eval"`` is defined: with BatchNorm batch
    statistics a sample's loss depends on the whole batch.

    The empirical Fisher is *not* the Fisher information (it uses the observed labels, not
    the model's predictive distribution) and need not resemble the Hessian away from a
    minimum; see Kunstner, Balles & Hennig (NeurIPS 2019). For cross-entropy and MSE the
    true Fisher equals the Gauss-Newton matrix (:func:`landscape.gauss_newton`).

    References
    ----------
    F. Kunstner, L. Balles, P. Hennig, "Limitations of the empirical Fisher approximation
    for natural gradient descent", NeurIPS 2019, arXiv:1905.12558.

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> X, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    >>> F = fisher(model, (X, y))
    >>> v = torch.randn(F.shape[0])
    >>> bool(v @ (F @ v) >= 0)
    True
    """

    _eval_only = (
        "the empirical Fisher needs per-sample losses, which BatchNorm batch statistics "
        "(mode='train') do not define; use mode='eval'."
    )

    def _batch_matmat(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        k = V[0].shape[0]
        flat_v = torch.cat([v.reshape(k, -1) for v in V], dim=1)  # (k, P)
        step = self.chunk_size or max(1, _GRADIENT_ENTRIES_PER_CHUNK // self.shape[0])
        out = torch.zeros_like(flat_v)
        loss = torch.zeros((), dtype=torch.float64, device=flat_v.device)
        for chunk in sample_gradients(run, batch, step):
            G, w = chunk.gradients, chunk.weights
            out.add_(((flat_v @ G.T) * w.to(G.dtype)) @ G)
            loss += (chunk.losses.double() * w).sum()
        out /= weight
        parts = torch.split(out, [v[0].numel() for v in V], dim=1)
        return [p.reshape(v.shape) for p, v in zip(parts, V)], loss / weight


def fisher(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    kind: Literal["empirical"] = "empirical",
    chunk_size: int | None = None,
    **options: Any,
) -> EmpiricalFisherOperator:
    r"""Return the empirical Fisher :math:`\frac1W\sum_i w_i \nabla\ell_i \nabla\ell_i^\top`.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (evaluated in eval mode, never
        modified) with its data and criterion (applied to one sample at a time); as for
        :func:`landscape.hessian`.
    kind : {"empirical"}, optional
        Only the empirical Fisher is provided; for cross-entropy and MSE the true Fisher is
        the Gauss-Newton matrix (:func:`landscape.gauss_newton`).
    chunk_size : int, optional
        Samples per vectorized chunk.
    **options
        The problem's options (``mode="eval"`` only), as for :func:`landscape.hessian`.

    Returns
    -------
    EmpiricalFisherOperator
        ``F @ V``, positive semi-definite; for a model sharded with FSDP2, a
        :class:`~landscape.operators.sharded.ShardedFisherOperator` on each rank's shards.

    Raises
    ------
    ValueError
        If ``kind`` is not ``"empirical"``.
    """
    if kind != "empirical":
        raise ValueError(
            f"kind={kind!r} is not available; use kind='empirical', or landscape.gauss_newton "
            "for the true Fisher of cross-entropy or MSE (they coincide)."
        )
    from landscape.operators.sharded import is_sharded, sharded_curvature

    if is_sharded(problem):  # FSDP2: on each rank's shards (landscape.operators.sharded)
        return sharded_curvature(  # type: ignore[return-value]
            "fisher", problem, data, loss_fn, chunk_size=chunk_size, **options
        )
    return EmpiricalFisherOperator(problem, data, loss_fn, chunk_size=chunk_size, **options)
