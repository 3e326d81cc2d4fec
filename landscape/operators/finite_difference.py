r"""Hessian-vector products by central differences of gradients: first-order autograd only.

.. math::
    D(h) = \frac{\nabla L(\theta + h \hat v) - \nabla L(\theta - h \hat v)}{2h},
    \qquad H \hat v \approx E(h) = \frac{4 D(h/2) - D(h)}{3}

(the central difference along the unit vector :math:`\hat v = v/\lVert v\rVert` and its
Richardson extrapolation, truncation error :math:`O(h^4)`) needs nothing but gradients, so
it works where double-backward does not: fused attention kernels (flash, memory-efficient:
memory linear in the sequence length, where the math kernel's grows with its square), custom
``autograd.Function``\ s marked ``@once_differentiable``, models sharded with FSDP (whose
double-backward fails; :mod:`landscape.operators.sharded`), and any model whose backward
has no derivative of its own. It costs four gradients per vector and is approximate.

**Error model** (REFERENCES.md §9). The error of :math:`E(h)` is

.. math::
    c_4 h^4 + \frac{3\, c\, u \lVert \nabla L \rVert}{h} ,

truncation (which falls with :math:`h`) plus rounding (which grows as it falls), with
:math:`u` the unit roundoff of the loss as the model computes it (its dtype, or the
model's when that is coarser: Hugging Face language-model heads compute their loss in
float32 even in float64 models). The best step is where the two meet, on a plateau that is
wide on a log scale.

**Step.** Chosen once per model (its parameters, dtype and mode), on the first product's
first batch and vector, by :func:`search_step`: central differences on the ladder
:math:`h_i = u^{1/5}\, 2^{1-i}`, :math:`i = 0, \dots, 5`, their extrapolations
:math:`E(h_i)` (from neighbouring rungs, free), and the smaller step of the neighbours
whose extrapolations agree best (:math:`\lVert E(h_i) - E(h_{i+1}) \rVert` smallest: on
the plateau; the smaller one crosses fewer kinks of a ReLU model in the other batches).
That costs 12 gradients, of which the extrapolation at the chosen step is the first
vector's product itself (4): 8 gradients more than a product, once per model (the previous
search took 25 more, in float64, and 11.6 GB at GPT-2 small's 124M parameters; now it holds
about five parameter vectors in the model's dtype). Measured on the zoo models of the
tests, the errors over steps :math:`u^{1/5}\{3, 1, 1/3, 1/10, 1/30, 1/100\}` vary by less
than 5x from 1 to 1/10, and the best lies between 3 and 1/10 for every one (1/10 for the
ReLU ResNet in float32, whose larger steps cross its kinks); the search picks 1/8 to 1 of
:math:`u^{1/5}` on them.

Measured relative errors against the exact product: 1.5e-5 to 3.3e-5 in float32 for
smooth transformers (BERT, ViT, GPT-2, Llama), 5e-4 for a ReLU ResNet (its kinks are
crossed by the step: smoothness is what the extrapolation needs), 1e-12 to 6e-12 in float64
(6e-6 to 8e-6 for language models whose loss is float32 inside). Use
``precision="float64"`` where that matters.

References
----------
J. Nocedal, S. J. Wright, "Numerical Optimization" (2nd ed., Springer 2006), Section 8.1.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from landscape.problem import Evaluation

__all__ = [
    "central_difference",
    "directional_product",
    "extrapolated",
    "finite_difference_product",
    "search_step",
    "unit_roundoff",
]

#: The step ladder: h_i = u^(1/5) * 2^(1 - i), i = 0 .. _RUNGS - 1 (2 u^(1/5) down to
#: u^(1/5) / 16 for the extrapolations).
_RUNGS = 6
#: A vector's step is shrunk where its two central differences disagree by more than
#: ``_AGREEMENT * u^(2/5)`` of the product (their h^2 truncation; the extrapolation's h^4
#: truncation is about its square), at most ``_RETRIES`` times.
_AGREEMENT = 2.0
_RETRIES = 2
# The chosen step and unit roundoff, per model and kind of problem (parameters, dtype, mode).
_CHOSEN: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, tuple[float, float]]] = (
    weakref.WeakKeyDictionary()
)

#: ``gradient_at(s)``: the gradient (one tensor per parameter) at :math:`\theta + s\hat v`.
GradientAt = Callable[[float], list[Tensor]]


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


def central_difference(gradient_at: GradientAt, h: float) -> list[Tensor]:
    r"""Return :math:`D(h) = (g(h) - g(-h)) / 2h`, computed in the storage of :math:`g(h)`.

    Parameters
    ----------
    gradient_at : callable
        ``gradient_at(s)`` is the gradient at :math:`\theta + s \hat v`, one tensor per
        parameter (freshly allocated: it is overwritten).
    h : float
        The step.

    Returns
    -------
    list of Tensor
        :math:`D(h)`.

    Examples
    --------
    For :math:`L(x) = x^3`, :math:`g(s) = 3(x + s)^2` and :math:`D(h) = 6x` exactly:

    >>> x = torch.tensor([2.0], dtype=torch.float64)
    >>> D = central_difference(lambda s: [3 * (x + s) ** 2], 0.1)
    >>> round(float(D[0]), 12)
    12.0
    """
    plus = gradient_at(h)
    minus = gradient_at(-h)
    for p, m in zip(plus, minus):
        p.sub_(m).div_(2 * h)
    return plus


def extrapolated(coarse: list[Tensor], fine: list[Tensor]) -> list[Tensor]:
    r"""Return :math:`(4 D(h/2) - D(h)) / 3`, computed in the storage of ``coarse``.

    Returns
    -------
    list of Tensor
        The Richardson extrapolation (``coarse`` is overwritten).
    """
    for c, f in zip(coarse, fine):
        c.mul_(-1 / 3).add_(f, alpha=4 / 3)
    return coarse


def _distance(a: list[Tensor], b: list[Tensor], reduce: Callable[[Tensor], Tensor]) -> float:
    """Return ``||a - b||`` over all parameters (``reduce`` sums over ranks).

    Absolute, not relative: every extrapolation estimates the same product, and two wrong
    ones of similar size (a kink crossed by both steps) must not look close.

    Returns
    -------
    float
        The distance.
    """
    squares = torch.stack([(x.double() - y.double()).square().sum() for x, y in zip(a, b)])
    return math.sqrt(float(reduce(squares.sum().reshape(1))))


def search_step(
    gradient_at: GradientAt,
    u: float,
    *,
    reduce: Callable[[Tensor], Tensor] = lambda t: t,
) -> tuple[float, list[Tensor]]:
    r"""Choose the step on the ladder :math:`h_i = u^{1/5} 2^{1-i}`; return it and :math:`E(h)`.

    Central differences :math:`D(h_i)` are computed down the ladder; each pair of
    neighbours gives the extrapolation :math:`E(h_i)`, and the agreement
    :math:`\delta_i = \lVert E(h_i) - E(h_{i+1}) \rVert` of consecutive extrapolations is
    compared. While truncation dominates, :math:`\delta_i`
    falls (by about 16 per rung); once rounding does, it rises; where a kink of the model
    is crossed (ReLU) it is large. The smaller step of the best-agreeing pair is returned,
    with its extrapolation: 12 gradients. (The smaller one: the step is then used on
    every batch, and on a ReLU ResNet the larger one crossed kinks in other batches than
    the first, 3.2 relative error against 5e-4.)

    Parameters
    ----------
    gradient_at : callable
        ``gradient_at(s)``: the gradient at :math:`\theta + s \hat v` (see
        :func:`central_difference`).
    u : float
        Unit roundoff of the loss as computed.
    reduce : callable, optional
        Sums a small tensor over ranks (sharded gradients).

    Returns
    -------
    step : float
        The chosen :math:`h`.
    product : list of Tensor
        :math:`E(h) \approx H \hat v`.

    Examples
    --------
    On :math:`L(x) = e^x`, whose difference quotients carry truncation error at every step:

    >>> x = torch.tensor([0.5], dtype=torch.float64)
    >>> h, E = search_step(lambda s: [torch.exp(x + s)], 2.0**-53)
    >>> bool(abs(E[0] - torch.exp(x)) < 1e-10)
    True
    """
    steps = [u ** (1 / 5) * 2.0 ** (1 - i) for i in range(_RUNGS)]
    coarse = central_difference(gradient_at, steps[0])  # D(h_0)
    fine = central_difference(gradient_at, steps[1])  # D(h_1)
    previous = extrapolated(coarse, fine)  # E(h_0), in D(h_0)'s storage
    best, best_gap, best_product = 0, math.inf, previous
    for i in range(2, _RUNGS):
        finer = central_difference(gradient_at, steps[i])  # D(h_i)
        current = extrapolated(fine, finer)  # E(h_{i-1}), in D(h_{i-1})'s storage
        gap = _distance(previous, current, reduce)  # delta_{i-2}
        if gap < best_gap:
            best, best_gap, best_product = i - 1, gap, current
        previous, fine = current, finer
    return steps[best], best_product


def _norm(a: list[Tensor], reduce: Callable[[Tensor], Tensor]) -> float:
    squares = torch.stack([x.double().square().sum() for x in a])
    return math.sqrt(float(reduce(squares.sum().reshape(1))))


def directional_product(
    gradient_at: GradientAt,
    h: float,
    u: float,
    *,
    reduce: Callable[[Tensor], Tensor] = lambda t: t,
) -> list[Tensor]:
    r"""Return :math:`E(h) \approx H\hat v`, with a smaller step where this direction needs one.

    The step is chosen once per model, on one vector; along a direction concentrated on a
    few parameters (a top eigenvector: the Lanczos vectors become such directions) the
    truncation is far larger. On GPT-2 and Llama of the tests (float32) the extrapolation's
    error along the top eigenvector was 2e-2 and 7e-3 at the chosen step, against 1.4e-5
    along a random vector. The two central differences tell: their disagreement
    :math:`\rho = \lVert D(h) - D(h/2) \rVert / \lVert E(h) \rVert` (the :math:`h^2`
    truncation) was 0.22 and 0.09 there, against 8e-4 along random vectors, and the error
    of :math:`E` is about :math:`\rho^2/2`. Where :math:`\rho > 2 u^{2/5}`, the step is
    shrunk by :math:`\sqrt{2 u^{2/5}/\rho}` (as :math:`\rho \propto h^2`; at most 64
    times) and the product recomputed, at most twice: 4 gradients per vector, 8 or 12 along
    concentrated directions.

    Parameters
    ----------
    gradient_at, u, reduce
        As for :func:`search_step`.
    h : float
        The model's step.

    Returns
    -------
    list of Tensor
        The product along the unit direction.
    """
    limit = _AGREEMENT * u ** (2 / 5)
    for attempt in range(_RETRIES + 1):
        coarse = central_difference(gradient_at, h)
        fine = central_difference(gradient_at, h / 2)
        gap = _distance(coarse, fine, reduce)
        product = extrapolated(coarse, fine)
        rho = gap / max(_norm(product, reduce), 1e-300)
        if rho <= limit or attempt == _RETRIES:
            return product
        h *= max(1 / 64, 0.7 * math.sqrt(limit / rho))
    return product  # pragma: no cover - the loop returns


def _gradient(run: Evaluation, theta: dict[str, Tensor], batch: Any, weight: float) -> list[Tensor]:
    leaves = {n: t.detach().requires_grad_(True) for n, t in theta.items()}
    with torch.enable_grad():
        loss = run.call(leaves, batch, weight)
        grads = torch.autograd.grad(
            loss, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
    return list(grads)


def _direction(
    run: Evaluation, batch: Any, weight: float, column: list[Tensor], norm: float
) -> GradientAt:
    """Return ``gradient_at(s)``: the batch's gradient at ``theta + s * column / norm``.

    Returns
    -------
    callable
        The gradient along the unit direction.
    """
    theta = run.theta

    def gradient_at(s: float) -> list[Tensor]:
        shifted = {n: t + (s / norm) * c.to(t.dtype) for (n, t), c in zip(theta.items(), column)}
        return _gradient(run, shifted, batch, weight)

    return gradient_at


def _key(run: Evaluation) -> tuple:
    problem = run.problem
    return (problem.space.names, problem.compute_dtype, problem.mode)


def _roundoff(run: Evaluation, batch: Any, weight: float) -> float:
    """Return the unit roundoff of the loss as the model computes it (one forward pass).

    Returns
    -------
    float
        :math:`u` of the coarser of the loss's and the compute dtype.
    """
    with torch.no_grad():
        loss = run.call(run.theta, batch, weight)
    coarsest = max(loss.dtype, run.problem.compute_dtype, key=lambda d: torch.finfo(d).eps)
    return unit_roundoff(coarsest)


def finite_difference_product(
    run: Evaluation, batch: Any, weight: float, V: list[Tensor]
) -> tuple[list[Tensor], Tensor]:
    """Return ``H_b V`` by central differences, column by column, and the batch's loss.

    ``V`` holds one ``(k, *shape)`` block per selected parameter, as for every per-batch
    product (see :class:`~landscape.operators.curvature.CurvatureOperator`). The step is
    chosen on the first call for the model (:func:`search_step`), whose search yields the
    first column's product; later columns shrink it where their direction needs a smaller
    one (:func:`directional_product`).

    Returns
    -------
    tuple
        The product blocks and the loss at the parameters.
    """
    out = [torch.zeros_like(v) for v in V]
    chosen = _CHOSEN.setdefault(run.problem.model, {})
    key = _key(run)
    for j in range(V[0].shape[0]):
        column = [v[j] for v in V]
        norm = math.sqrt(sum(float(c.double().square().sum()) for c in column))
        if norm == 0:
            continue
        gradient_at = _direction(run, batch, weight, column, norm)
        if key not in chosen:
            u = _roundoff(run, batch, weight)
            h, product = search_step(gradient_at, u)
            chosen[key] = (h, u)
        else:
            h, u = chosen[key]
            product = directional_product(gradient_at, h, u)
        for o, d in zip(out, product):
            o[j] = d.to(o.dtype).mul_(norm)
        del product
    with torch.no_grad():
        loss = run.call(run.theta, batch, weight)
    return out, loss
