"""The empirical Fisher matrix (uncentered second moment of per-sample gradients)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from landscape.losses import BatchLoss, Criterion, batch_size, map_tensors
from landscape.operators.curvature import CurvatureOperator, _Pass
from landscape.params import ParamSelector

__all__ = ["EmpiricalFisherOperator", "fisher"]

_GRADIENT_ENTRIES_PER_CHUNK = 2**24  # bounds the (samples x P) per-sample gradient block


class EmpiricalFisherOperator(CurvatureOperator):
    r"""Empirical Fisher :math:`F = \frac1N \sum_i g_i g_i^\top` of per-sample gradients.

    .. math::
        F V = \frac{1}{N} \sum_{i=1}^{N} g_i \,(g_i^\top V) .

    Per-sample gradients :math:`g_i` come from ``torch.func.vmap(torch.func.grad(.))`` over
    the samples of each batch (each sample evaluated as a batch of one), in chunks that keep
    the ``(samples, P)`` gradient block near 16M entries (or ``chunk_size`` samples). The
    per-sample loss is the batch criterion applied to one sample, so the mean of the
    :math:`\ell_i` is the training loss. Only ``mode="eval"`` is defined: with BatchNorm batch
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

    def __init__(
        self, model: nn.Module, data: Any, loss_fn: Criterion | None = None, **options: Any
    ):
        if options.get("mode", "eval") != "eval":
            raise ValueError(
                "the empirical Fisher needs per-sample losses, which BatchNorm batch statistics "
                "(mode='train') do not define; use mode='eval'."
            )
        super().__init__(model, data, loss_fn, **options)

    def _batch_matmat(self, run: _Pass, batch: Any, V: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        def sample_loss(theta: dict[str, Tensor], sample: Any) -> tuple[Tensor, Tensor]:
            loss = run.call(theta, map_tensors(sample, lambda x: x.unsqueeze(0)))
            return loss, loss.detach()

        per_sample = vmap(grad(sample_loss, has_aux=True), in_dims=(None, 0))
        k = V[0].shape[0]
        flat_v = torch.cat([v.reshape(k, -1) for v in V], dim=1)  # (k, P)
        n = batch_size(batch)
        step = self.chunk_size or max(1, _GRADIENT_ENTRIES_PER_CHUNK // self.shape[0])
        out = torch.zeros_like(flat_v)
        losses = []
        for start in range(0, n, step):
            stop = min(start + step, n)
            chunk = map_tensors(batch, lambda x, a=start, b=stop: x[a:b] if x.ndim else x)
            grads, loss = per_sample(run.theta, chunk)
            G = torch.cat([g.flatten(1) for g in run.flat(grads)], dim=1)  # (samples, P)
            out.add_((flat_v @ G.T) @ G)
            losses.append(loss)
        out /= n
        parts = torch.split(out, [v[0].numel() for v in V], dim=1)
        return [p.reshape(v.shape) for p, v in zip(parts, V)], torch.cat(losses).mean()


def fisher(
    model: nn.Module,
    data: Any,
    loss_fn: Criterion | None = None,
    *,
    batch_loss: BatchLoss | None = None,
    params: ParamSelector = None,
    kind: Literal["empirical"] = "empirical",
    **options: Any,
) -> EmpiricalFisherOperator:
    r"""Return the empirical Fisher :math:`\frac1N\sum_i \nabla\ell_i \nabla\ell_i^\top`.

    Parameters
    ----------
    model : torch.nn.Module
        The model; never modified (evaluated in eval mode).
    data : iterable of batches, or one batch
        As for :func:`landscape.hessian`.
    loss_fn : callable, optional
        Criterion returning the batch mean; applied to one sample at a time.
    batch_loss : callable, optional
        ``batch_loss(model, batch) -> mean loss``, applied to one-sample batches.
    params : ParamSelector, optional
        Restrict to a parameter subset (its diagonal block).
    kind : {"empirical"}, optional
        Only the empirical Fisher is provided; for cross-entropy and MSE the true Fisher is
        the Gauss-Newton matrix (:func:`landscape.gauss_newton`).
    **options
        ``max_batches``, ``max_samples``, ``cache``, ``shard``, ``chunk_size`` (samples per
        vectorized chunk).

    Returns
    -------
    EmpiricalFisherOperator
        The operator.

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
    return EmpiricalFisherOperator(
        model, data, loss_fn, batch_loss=batch_loss, params=params, **options
    )
