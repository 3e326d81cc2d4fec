r"""Per-example quantities over one gathered dataset, for the learning-rate module.

Private helpers of :mod:`landscape.metrics.learning_rate`: the data gathered into one batch
structure (so random mini-batches are index selections), weighted per-coordinate gradient
moments (for Adam's steady-state preconditioner) and the per-example Gauss-Newton factors
:math:`F_i = \sqrt{w_i/\bar w}\,\Lambda_i^{1/2} J_i` (for the exact mean-square threshold).
Every per-sample function goes through the :class:`~landscape.problem.Problem`'s
vectorization, with its exact loop where ``vmap`` cannot trace the user's code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import jacrev

from landscape.batches import concatenate, map_tensors, select_rows
from landscape.operators.per_example import SampleChunk, per_example_pass
from landscape.problem import Evaluation, Problem


def gather(problem: Problem) -> tuple[Any, int]:
    """Return all batches of the data as one batch structure, and its number of samples.

    Dictionary batches of different sequence lengths are right-padded where that is exact
    (:meth:`landscape.losses.Objective.can_pad`).

    Returns
    -------
    tuple
        ``(dataset, n)``.

    Raises
    ------
    TypeError
        If the batches cannot be concatenated (different layouts, or sequence lengths that
        cannot be padded exactly).
    """
    batches = [batch.data for batch in problem.batches()]
    pad = problem.objective.can_pad(batches[0])
    try:
        dataset = concatenate(batches, pad=pad)
    except TypeError as error:
        raise TypeError(
            f"the learning-rate analysis draws random mini-batches from all samples and "
            f"needs batches it can concatenate: {error} Pad the batches to one length (with "
            "an attention_mask, and labels -100 on padding), or pass batches of one shape."
        ) from error
    return dataset, problem.num_samples


def split(batch: Any, n: int, size: int) -> list[Any]:
    """Cut a batch of ``n`` samples into consecutive chunks of at most ``size``.

    Returns
    -------
    list
        The chunks.
    """
    return [select_rows(batch, slice(s, s + size), n) for s in range(0, n, size)]


def select(batch: Any, index: Tensor) -> Any:
    """Return the samples ``index`` of a batch structure.

    Returns
    -------
    Any
        The sub-batch.
    """
    return map_tensors(batch, lambda t: t.index_select(0, index.to(t.device)))


def gradient_moments(problem: Problem, chunk: int = 64) -> tuple[Tensor, Tensor]:
    r"""Return the weighted mean and variance per coordinate of the per-example gradients.

    :math:`G = \sum_i w_i g_i / W` and :math:`\sigma^2 = \sum_i w_i (g_i - G)^2 / W`.

    Returns
    -------
    tuple of Tensor
        ``(mean, variance)``, flat like the problem's parameters.
    """
    space = problem.space
    total = torch.zeros(space.dim, dtype=space.dtype, device=space.device)
    squares = torch.zeros_like(total)
    weight = 0.0

    def add(c: SampleChunk) -> None:
        nonlocal weight
        w = c.weights.to(c.gradients)[:, None]
        total.add_((w * c.gradients).sum(0))
        squares.add_((w * c.gradients.square()).sum(0))
        weight += float(c.weights.sum())

    per_example_pass(problem, chunk, add)
    mean = total / weight
    return mean, (squares / weight - mean * mean).clamp_min(0.0)


def outputs_per_sample(run: Evaluation, dataset: Any, n: int) -> int:
    """Return the number of outputs (logits) of one sample.

    Returns
    -------
    int
        ``k``.
    """
    with torch.no_grad():
        return run.call_outputs(run.theta, select_rows(dataset, 0, n)).numel()


def gauss_newton_factors(
    run: Evaluation, subset: Any, chunk: int = 16
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Return the factors :math:`F_i = \sqrt{w_i/\bar w}\,\Lambda_i^{1/2} J_i`, and more.

    Also the per-example gradient norms and the weights.

    :math:`J_i` is the Jacobian of sample ``i``'s flattened outputs, :math:`\Lambda_i` the
    Hessian of its loss in the outputs (its PSD square root by eigendecomposition), so
    that :math:`F_i^\top F_i` is sample ``i``'s Gauss-Newton matrix scaled by its share of
    the units: their mean is the Gauss-Newton matrix of the weighted mean loss. The
    factors are stacked as ``(m * k, P)``.

    Returns
    -------
    tuple of Tensor
        ``(F, gradient_norms, weights)``.
    """
    samples = run.samples(subset, criterion=True)
    with torch.no_grad():  # one sample's output shape, batch dimension 1 included
        shape = samples.outputs(run.theta, tuple(t[0] for t in samples.rows)).shape
    space = run.problem.space

    def flat_outputs(theta: dict[str, Tensor], row: Any) -> Tensor:
        return samples.outputs(theta, row).reshape(-1)

    def one(theta: dict[str, Tensor], row: Any) -> tuple[Tensor, Tensor]:
        f = flat_outputs(theta, row)
        J = jacrev(flat_outputs)(theta, row)

        def crit(out: Tensor) -> Tensor:
            return samples.criterion(out.reshape(shape), row)

        # Reverse-over-reverse: correct through any criterion (unlike jvp(jacrev)).
        Lam = jacrev(jacrev(crit))(f)
        d = jacrev(crit)(f)
        return space.flatten(J, batch_dims=1), torch.cat([Lam, d[None]])

    factors = run.problem.vectorize(one, "per-sample Gauss-Newton factors", (None, 0))
    mean_weight = float(samples.weights.mean())
    rows, grads = [], []
    for _, part, w in samples.chunks(chunk):
        J, extra = factors(run.theta, part)
        J, extra = J.to(space.dtype), extra.to(space.dtype)  # half-precision models
        Lam, d = extra[:, :-1], extra[:, -1]
        eigvals, V = torch.linalg.eigh((Lam + Lam.transpose(1, 2)) / 2)
        root = V @ torch.diag_embed(eigvals.clamp_min(0).sqrt()) @ V.transpose(1, 2)
        scale = (w / mean_weight).sqrt().to(J.dtype)[:, None, None]
        rows.append((scale * (root @ J)).reshape(-1, space.dim))
        grads.append(torch.einsum("ik,ikp->ip", d, J).norm(dim=1))
    return torch.cat(rows), torch.cat(grads), samples.weights
