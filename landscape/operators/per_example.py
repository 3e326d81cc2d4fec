r"""Per-example gradients :math:`g_i = \nabla_\theta \ell_i(\theta)`, one row per sample.

The loss of sample :math:`i` is the loss of the batch made of that sample alone (every tensor
of the batch with a leading batch dimension is cut to row :math:`i`): a mean over its
:math:`w_i` units (1, or its scored tokens), so that the weighted mean of the rows is the
gradient of the training loss, :math:`\nabla L = \sum_i w_i g_i / \sum_i w_i`. Rows come
from ``torch.func.vmap(torch.func.grad(.))`` over the samples, in chunks of ``chunk_size``
samples, with an exact per-sample loop as the fallback for models that ``vmap`` cannot
trace (:meth:`landscape.problem.Problem.vectorize`).

The model is evaluated through the :class:`~landscape.problem.Problem`, as the curvature
operators are: eval mode (dropout off, BatchNorm on its running statistics), the math
attention kernel, and every side effect undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import grad

from landscape.losses import Criterion
from landscape.memory import MemoryBudget
from landscape.params import ParamSpace
from landscape.problem import Evaluation, Problem, as_problem

__all__ = ["PerExampleGradients", "per_example_gradients"]

Mode = Literal["eval", "train"]

_WHAT = "per-sample gradients"
#: Vectors of P numbers a sample of a chunk holds: its gradient as vmap returns it, per
#: parameter, and flattened.
SAMPLE_VECTORS = 3


def samples_that_fit(space: ParamSpace, requested: int, memory_budget: Any = None) -> int:
    """Return the samples per vectorized chunk: ``requested``, or fewer where P makes them large.

    A chunk of ``c`` samples holds about :data:`SAMPLE_VECTORS` ``c`` vectors of P numbers
    (64 samples of GPT-2 small: 96 GB); the chunk is cut to what fits in the memory budget
    (default a quarter of the free memory). The rows do not depend on the chunking.

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> space = ParamSpace.from_module(nn.Linear(1000, 1000))
    >>> samples_that_fit(space, 64, memory_budget=10 * 4 * 1_001_000 * SAMPLE_VECTORS)
    10
    """
    budget = MemoryBudget.resolve(memory_budget, space.device)
    fits = budget.vectors(space.dim, space.dtype) // SAMPLE_VECTORS
    return max(1, min(requested, fits))


@dataclass(frozen=True)
class PerExampleGradients:
    """Per-example gradients of the selected parameters, one row per sample, in data order.

    Attributes
    ----------
    gradients : Tensor
        Shape ``(n, P)``, in the model's dtype and on its device; row ``i`` is the gradient
        of the loss of sample ``i`` alone, flattened in :attr:`space` order.
    space : ParamSpace
        Names and shapes of the columns (``space.unflatten(gradients)`` gives
        ``{name: (n, *shape)}``).
    losses : Tensor
        Shape ``(n,)``: the loss of each sample.
    weights : Tensor
        Shape ``(n,)``: the units of each sample (1, or its scored tokens); a sample of
        weight 0 (no scored token) has a zero row and loss.
    num_passes : int
        Passes over the data used (one; each sample's gradient is computed once).
    vectorized : bool
        Whether ``torch.func.vmap`` computed the rows (``False``: the per-sample loop
        fallback was used).
    """

    gradients: Tensor
    space: ParamSpace
    losses: Tensor
    weights: Tensor
    num_passes: int
    vectorized: bool = True

    @property
    def num_samples(self) -> int:
        """Number of rows ``n``."""
        return int(self.gradients.shape[0])

    def named(self) -> dict[str, Tensor]:
        """Return the gradients as parameter-shaped blocks.

        Returns
        -------
        dict of str to Tensor
            ``{name: tensor of shape (n, *shape)}`` (views of :attr:`gradients`).
        """
        return self.space.unflatten(self.gradients)


@dataclass(frozen=True)
class SampleChunk:
    """Per-example gradients of a chunk of samples of one batch.

    Attributes
    ----------
    positions : Tensor
        0-based positions of the samples in data order (over all batches).
    gradients : Tensor
        Shape ``(c, P)``.
    losses : Tensor
        Shape ``(c,)``.
    weights : Tensor
        Shape ``(c,)``, float64: each sample's units.
    """

    positions: Tensor
    gradients: Tensor
    losses: Tensor
    weights: Tensor


def sample_gradients(run: Evaluation, batch: Any, chunk_size: int) -> Iterator[SampleChunk]:
    """Yield the per-example gradients of the samples of positive weight of one batch.

    Positions in the chunks are relative to the batch. Must run inside
    :meth:`~landscape.problem.Problem.evaluation`.

    Yields
    ------
    SampleChunk
        Consecutive chunks of at most ``chunk_size`` samples.
    """
    samples = run.samples(batch)

    def loss_and_value(theta: dict[str, Tensor], row: Any, weight: Tensor) -> tuple[Tensor, Tensor]:
        loss = samples.loss(theta, row, weight)
        return loss, loss.detach()

    per_sample = run.problem.vectorize(grad(loss_and_value, has_aux=True), _WHAT, (None, 0, 0))
    for lo, rows, weights in samples.chunks(chunk_size):
        grads, losses = per_sample(run.theta, rows, weights)
        G = run.problem.space.flatten(grads, batch_dims=1).to(run.problem.space.dtype)
        del grads  # free the per-parameter copy before G is consumed
        yield SampleChunk(
            samples.index[lo : lo + len(weights)], G.detach(), losses.detach(), weights
        )


def per_example_pass(
    problem: Problem, chunk_size: int, consume: Callable[[SampleChunk], None]
) -> None:
    """Compute per-example gradients over the data, chunk by chunk, and hand them to ``consume``.

    ``consume`` is called in data order with positions counted over all batches.

    Raises
    ------
    FloatingPointError
        If a sample's loss or gradient is not finite (the message names the sample).
    """
    chunk_size = samples_that_fit(problem.space, chunk_size)
    with problem.evaluation() as run:
        start = 0
        for batch in problem.batches():
            for chunk in sample_gradients(run, batch.data, chunk_size):
                chunk = replace(chunk, positions=chunk.positions + start)
                _check_finite(chunk)
                consume(chunk)
            start += batch.num_samples


def _check_finite(chunk: SampleChunk) -> None:
    losses, G = chunk.losses, chunk.gradients
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0, 0])
        raise FloatingPointError(
            f"the loss of sample {int(chunk.positions[i])} (0-based, in data order) is "
            f"{float(losses[i])}."
        )
    rows = torch.isfinite(G).all(dim=1)
    if not bool(rows.all()):
        i = int((~rows).nonzero()[0, 0])
        raise FloatingPointError(
            f"the gradient of sample {int(chunk.positions[i])} (0-based, in data order) is not "
            f"finite (its loss, {float(losses[i]):.6g}, is) — overflow? Try float64."
        )


def _check_mode(mode: str) -> None:
    if mode == "train":
        raise ValueError(
            "mode='train' has no per-example meaning: with BatchNorm batch statistics a "
            "sample's loss depends on every other sample of its batch, so no per-example "
            "gradient exists. Use mode='eval' (BatchNorm on its running statistics)."
        )
    if mode != "eval":
        raise ValueError(f"mode must be 'eval'; got {mode!r}.")


def check_chunk_size(chunk_size: Any) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")


def per_example_gradients(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    chunk_size: int = 64,
    **options: Any,
) -> PerExampleGradients:
    r"""Return the gradient of each sample's loss, :math:`g_i = \nabla_\theta \ell_i(\theta)`.

    .. math::
        \ell_i(\theta) = \mathcal{L}\big(f_\theta(x_i), y_i\big), \qquad
        \frac{\sum_i w_i g_i}{\sum_i w_i} = \nabla_\theta L(\theta) ,

    where :math:`\ell_i` is the loss of the batch made of sample :math:`i` alone, the mean
    over its :math:`w_i` units (:math:`w_i = 1` for classification and regression; its
    scored tokens for a language model). The equality holds for criteria that average over
    units. Computed with ``torch.func.vmap(torch.func.grad(.))`` over ``chunk_size``
    samples at a time; models that ``vmap`` cannot trace fall back to an exact per-sample
    loop (same values, one :class:`~landscape.problem.VectorizationWarning`).

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified) with its data
        and loss, as for :func:`landscape.hessian`: ``(inputs, targets)``, multi-input
        tuples or dict batches; the criterion (or ``batch_loss``) is applied to one-sample
        batches. Batches are not sharded across data-parallel ranks: every rank computes
        all rows. Only ``mode="eval"``: BatchNorm batch statistics define no per-sample loss.
    chunk_size : int, optional
        Samples per vectorized call (bounds the memory of ``vmap``); fewer where they would
        not fit in a quarter of the free memory (:func:`samples_that_fit`).
    **options
        Options of :class:`~landscape.problem.Problem` (``params``, ``count``,
        ``max_samples``: memory is ``n * P`` entries, ...).

    Returns
    -------
    PerExampleGradients
        ``gradients`` ``(n, P)``, ``losses`` ``(n,)``, ``weights`` ``(n,)``, ``space``,
        ``num_passes``.

    Raises
    ------
    ValueError
        For ``mode="train"`` or an invalid ``chunk_size``.
    TypeError
        If ``model`` is not an ``nn.Module``.

    Notes
    -----
    A sample whose loss or gradient is not finite raises ``FloatingPointError`` naming its
    0-based index in data order.

    Examples
    --------
    The mean of the per-example gradients is the gradient of the mean loss:

    >>> model = nn.Linear(3, 2).double()
    >>> X, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    >>> pe = per_example_gradients(model, (X, y))
    >>> pe.gradients.shape, pe.losses.shape
    (torch.Size([6, 8]), torch.Size([6]))
    >>> loss = nn.functional.cross_entropy(model(X), y)
    >>> full = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, model.parameters())])
    >>> torch.allclose(pe.gradients.mean(0), full)
    True
    """
    problem = as_problem(problem, data, loss_fn, where="per_example_gradients", **options)
    _check_mode(problem.mode)
    check_chunk_size(chunk_size)
    problem = problem.with_data(cache=False, shard=False)
    chunks: list[SampleChunk] = []
    per_example_pass(problem, chunk_size, chunks.append)
    n, space = problem.num_samples, problem.space
    if sum(len(c.positions) for c in chunks) == n:  # every sample has a row, in data order
        gradients = torch.cat([c.gradients for c in chunks])
        losses = torch.cat([c.losses for c in chunks])
        weights = torch.cat([c.weights for c in chunks])
    else:  # samples of weight 0 (nothing scored) get zero rows
        gradients = torch.zeros(n, space.dim, dtype=space.dtype, device=space.device)
        losses = torch.zeros(n, dtype=chunks[0].losses.dtype, device=space.device)
        weights = torch.zeros(n, dtype=torch.float64, device=space.device)
        for c in chunks:
            gradients[c.positions], losses[c.positions], weights[c.positions] = (
                c.gradients,
                c.losses,
                c.weights,
            )
        chunks.clear()
    return PerExampleGradients(
        gradients=gradients,
        space=space,
        losses=losses,
        weights=weights,
        num_passes=1,
        vectorized=problem.is_vectorized(_WHAT),
    )
