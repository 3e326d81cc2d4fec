r"""Hessian-vector products by central differences of gradients: first-order autograd only.

.. math::
    D(\epsilon) = \frac{\nabla L(\theta + \epsilon v) - \nabla L(\theta - \epsilon v)}{2\epsilon},
    \qquad H v \approx \frac{4 D(\epsilon/2) - D(\epsilon)}{3}

(the central difference and its Richardson extrapolation, error :math:`O(\epsilon^4)`)
needs nothing but gradients, so it works where double-backward does not: fused attention
kernels (flash, memory-efficient: memory linear in the sequence length, where the math
kernel's grows with its square), custom ``autograd.Function``\ s marked
``@once_differentiable``, and any model whose backward has no derivative of its own. It
costs four gradient evaluations per vector and is approximate.

**Step.** Along the unit vector :math:`\hat v = v / \lVert v\rVert` the step :math:`h` is
chosen once per model, on the first product's first batch and vector: the extrapolated
differences at :math:`h = u^{1/5} \cdot \{3, 1, 1/3, 1/10, 1/30, 1/100\}`, with :math:`u`
the unit roundoff of the loss as the model computes it (its dtype, or the model's when that
is coarser: Hugging Face language-model heads compute their loss in float32 even in float64
models), and the larger step of the two neighbours that agree best — the plateau between
truncation error, which falls with :math:`h`, and rounding error, which grows as it falls.
That costs 24 gradients, once.

**Error model.** The central difference is exact for quadratics; in general its error is

.. math::
    \frac{h^2}{6} \big\lVert \nabla^3 L[\hat v, \hat v] \big\rVert
    + \frac{c\, u \lVert \nabla L \rVert}{h} ,

truncation plus rounding; the extrapolation cancels the :math:`h^2` term, leaving
:math:`O(h^4)` and the rounding. Measured on the zoo models of the tests (relative to the
exact product): about 1e-5 in float32 for smooth transformers (BERT, ViT, GPT-2), 3e-4 for a
ReLU ResNet (its kinks are crossed by the step: smoothness is what the extrapolation
needs), 1e-10 in float64 (2e-5 for language models whose loss is float32 inside). Use
``precision="float64"`` where that matters.

References
----------
J. Nocedal, S. J. Wright, "Numerical Optimization" (2nd ed., Springer 2006), Section 8.1.
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import Any

import torch
from torch import Tensor

from landscape.problem import Evaluation

__all__ = ["choose_step", "finite_difference_product", "unit_roundoff"]


#: Multiples of u^(1/3) tried as steps, largest first.
_STEPS = (3.0, 1.0, 1 / 3, 1 / 10, 1 / 30, 1 / 100)
# The chosen step, per model and kind of problem (its parameters, dtype and mode).
_CHOSEN: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, float]] = (
    weakref.WeakKeyDictionary()
)


def choose_step(differences: list[Tensor], steps: list[float]) -> float:
    r"""Return the step whose difference quotient agrees best with the next smaller one's.

    Parameters
    ----------
    differences : list of Tensor
        Flat difference quotients :math:`D(h_i)` for decreasing steps :math:`h_i`.
    steps : list of float
        The steps.

    Returns
    -------
    float
        The larger step of the best-agreeing neighbours.

    Examples
    --------
    Estimates that settle as the step falls (truncation), then scatter (rounding):

    >>> steps = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    >>> D = [torch.tensor([v]) for v in (1.1, 1.01, 1.0001, 1.0, 0.99)]
    >>> choose_step(D, steps)
    0.001
    """
    gaps = [
        float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))
        for a, b in itertools.pairwise(differences)
    ]
    return steps[min(range(len(gaps)), key=gaps.__getitem__)]


def unit_roundoff(dtype: torch.dtype) -> float:
    """Return the unit roundoff :math:`u` of a floating dtype.

    Returns
    -------
    float
        Half the machine epsilon.

    Examples
    --------
    >>> unit_roundoff(torch.float64) == 2.0**-53
    True
    """
    return torch.finfo(dtype).eps / 2


def _gradient(run: Evaluation, theta: dict[str, Tensor], batch: Any, weight: float) -> tuple:
    leaves = {n: t.detach().requires_grad_(True) for n, t in theta.items()}
    with torch.enable_grad():
        loss = run.call(leaves, batch, weight)
        grads = torch.autograd.grad(
            loss, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
    return grads, loss.detach()


def _difference(
    run: Evaluation, batch: Any, weight: float, column: list[Tensor], eps: float
) -> list[Tensor]:
    theta = run.theta
    plus = {n: t + eps * c.to(t.dtype) for (n, t), c in zip(theta.items(), column)}
    minus = {n: t - eps * c.to(t.dtype) for (n, t), c in zip(theta.items(), column)}
    g_plus, _ = _gradient(run, plus, batch, weight)
    g_minus, _ = _gradient(run, minus, batch, weight)
    return [(a.double() - b.double()) / (2 * eps) for a, b in zip(g_plus, g_minus)]


def _step(run: Evaluation, batch: Any, weight: float, column: list[Tensor], norm: float) -> float:
    problem = run.problem
    key = (problem.space.names, problem.compute_dtype, problem.mode)
    chosen = _CHOSEN.setdefault(problem.model, {})
    if key not in chosen:
        _, loss = _gradient(run, run.theta, batch, weight)
        coarsest = max(loss.dtype, problem.compute_dtype, key=lambda d: torch.finfo(d).eps)
        steps = [unit_roundoff(coarsest) ** (1 / 5) * s for s in _STEPS]
        flat = [
            torch.cat([d.reshape(-1) for d in _extrapolated(run, batch, weight, column, h / norm)])
            for h in steps
        ]
        chosen[key] = choose_step(flat, steps)
    return chosen[key]


def _extrapolated(
    run: Evaluation, batch: Any, weight: float, column: list[Tensor], eps: float
) -> list[Tensor]:
    coarse = _difference(run, batch, weight, column, eps)
    fine = _difference(run, batch, weight, column, eps / 2)
    return [(4 * b - a) / 3 for a, b in zip(coarse, fine)]  # Richardson: h^2 terms cancel


def finite_difference_product(
    run: Evaluation, batch: Any, weight: float, V: list[Tensor]
) -> tuple[list[Tensor], Tensor]:
    """Return ``H_b V`` by central differences, column by column, and the batch's loss.

    ``V`` holds one ``(k, *shape)`` block per selected parameter, as for every per-batch
    product (see :class:`~landscape.operators.curvature.CurvatureOperator`). The step is
    chosen on the first call for the model (see the module docstring).

    Returns
    -------
    tuple
        The product blocks and the loss at the parameters.
    """
    out = [torch.zeros_like(v) for v in V]
    for j in range(V[0].shape[0]):
        column = [v[j] for v in V]
        norm = math.sqrt(sum(float(c.double().square().sum()) for c in column))
        if norm == 0:
            continue
        eps = _step(run, batch, weight, column, norm) / norm
        for o, d in zip(out, _extrapolated(run, batch, weight, column, eps)):
            o[j] = d.to(o.dtype)
    with torch.no_grad():
        loss = run.call(run.theta, batch, weight)
    return out, loss
