r"""The mean loss and accuracy of a model on its data: ``ls.evaluate``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from landscape.data import Batch
from landscape.losses import Criterion
from landscape.problem import Evaluation, Problem, as_problem

__all__ = ["evaluate"]


def _num_classes(outputs: Any) -> int | None:
    # The width of a per-sample classifier's logits (None for other outputs).
    logits = outputs if isinstance(outputs, Tensor) else getattr(outputs, "logits", None)
    if isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[-1] > 1:
        return int(logits.shape[-1])
    return None


def evaluate(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    **options: Any,
) -> dict[str, float | None]:
    r"""Return the mean loss and (for classification) accuracy on the data.

    The loss is :math:`\sum_b w_b L_b / \sum_b w_b` (see :mod:`landscape.losses`): for a
    Hugging Face model, its own loss averaged over scored tokens; the accuracy counts the
    same units (next-token accuracy over scored tokens for a causal language model). One
    pass over the data, through :meth:`Problem.reduce <landscape.problem.Problem.reduce>`.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (evaluated in eval mode, its
        flags restored) with its data and loss, as for :func:`landscape.hessian`.
    **options
        Options of :class:`~landscape.problem.Problem` (``batch_loss``, ``count``,
        ``max_samples``, ...).

    Returns
    -------
    dict
        ``{"value": loss, "accuracy": accuracy or None, "num_classes": C or None}`` (the
        width of a classifier's output, for per-sample classification).

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> out = evaluate(model, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
    >>> sorted(out), out["num_classes"]
    (['accuracy', 'num_classes', 'value'], 2)
    """
    problem = as_problem(problem, data, loss_fn, where="evaluate", **options)
    problem = problem.with_data(shard=False)
    classes: list[int | None] = []

    def part(run: Evaluation, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        loss, outputs = run.forward(batch.data, batch.weight)
        hits = run.correct(outputs, batch.data)
        if not classes:
            weighs_samples = problem.objective.weighs_samples
            classes.append(_num_classes(outputs) if weighs_samples else None)
        if hits is None:  # no accuracy for this loss: NaN through the sums
            nan = torch.full((), float("nan"), dtype=torch.float64, device=loss.device)
            return loss.double(), nan, torch.ones_like(nan)
        return loss.double(), hits[0].double() / batch.weight, hits[1].double() / batch.weight

    with torch.no_grad():
        loss, correct, units = problem.reduce(part, check_finite=False)
    accuracy = float(correct / units) if units > 0 else None
    if accuracy is not None and accuracy != accuracy:  # NaN: not a classification
        accuracy = None
    value = float(loss)
    if value != value or abs(value) == float("inf"):
        problem.loss()  # raises, naming the batch
    return {
        "value": value,
        "accuracy": accuracy,
        "num_classes": classes[0] if classes and accuracy is not None else None,
    }
