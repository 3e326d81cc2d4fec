"""Optimizer instances as the stability measures take them: unwrapped, listed, their parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from landscape.metrics.thresholds import unwrap_optimizer
from landscape.problem import Problem, as_problem

__all__ = ["optimizer_list", "trained_problem"]


def optimizer_list(optimizers: Any) -> list[Any]:
    """Return the optimizer(s) as a list, framework wrappers and schedulers unwrapped.

    Parameters
    ----------
    optimizers : Any
        An optimizer (or a wrapper or scheduler of one), or a sequence of them.

    Returns
    -------
    list
        The unwrapped optimizers (anything that is not a sequence becomes one entry).

    Examples
    --------
    >>> opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    >>> optimizer_list(torch.optim.lr_scheduler.StepLR(opt, 1)) == [opt]
    True
    """
    if isinstance(optimizers, str) or not isinstance(optimizers, Sequence):
        optimizers = [optimizers]
    return [unwrap_optimizer(o) for o in optimizers]


def trained_problem(
    problem: Any, data: Any, loss_fn: Any, optimizers: Any, *, where: str, **options: Any
) -> Problem:
    """Return the problem of a public function, over the parameters the optimizer(s) train.

    With a model (not a :class:`~landscape.problem.Problem`) and no ``params`` option, the
    parameters are those some given optimizer trains, in the model's order.

    Parameters
    ----------
    problem, data, loss_fn : Any
        A :class:`~landscape.problem.Problem`, or a model with its data and loss.
    optimizers : Any
        What :func:`optimizer_list` takes (names and settings train nothing in particular).
    where : str
        The calling function, for error messages.
    **options
        Options of :class:`~landscape.problem.Problem`.

    Returns
    -------
    Problem
        The problem.
    """
    if not isinstance(problem, Problem) and "params" not in options:
        ids = {
            id(p)
            for o in optimizer_list(optimizers)
            if isinstance(o, torch.optim.Optimizer)
            for g in o.param_groups
            for p in g["params"]
        }
        if ids and isinstance(problem, torch.nn.Module):
            options["params"] = [p for p in problem.parameters() if id(p) in ids]
    return as_problem(problem, data, loss_fn, where=where, **options)
