r"""Critical sharpness: the step along an optimizer's own update at which the loss starts to rise.

For any optimizer — Muon's orthogonalized momentum, sign methods such as Lion, Rprop, L-BFGS,
third-party optimizers — the next update :math:`\Delta\theta` (taken at learning rate
:math:`\eta`) defines a line :math:`\theta + t\,\Delta\theta`. The **critical learning rate**
is the smallest step along it that raises the loss,

.. math::
    \eta_c = \eta\, t_c, \qquad
    t_c = \min\{t > 0 : L(\theta + t\,\Delta\theta) > L(\theta)\}, \qquad
    \lambda_c = 2/\eta_c,

found by a line search (a few forward passes, no Hessian-vector product; Kalra et al. 2026
measure it on models up to 7B parameters). On a quadratic along the update direction
:math:`u = -\Delta\theta/\eta`, :math:`L(\theta - \eta' u) - L(\theta) =
-\eta' g^\top u + \tfrac12 \eta'^2 u^\top H u`, so

.. math::
    \eta_c = \frac{2\, g^\top u}{u^\top H u}, \qquad
    \lambda_c = \frac{u^\top H u}{g^\top u},

which for gradient descent (:math:`u = g`) is the Rayleigh quotient
:math:`g^\top H g / g^\top g \le \lambda_{\max}` (Kalra et al.; REFERENCES §9).

**What it predicts, and what not.** :math:`\eta > \eta_c` means the next step raises the
loss along the direction the optimizer actually takes: a one-step, directional statement,
whatever the update rule. It is not a divergence threshold: momentum, adaptive
preconditioners (which self-stabilize) and normalized updates change what happens over many
steps — a normalized update (Muon, sign methods) keeps a fixed length, so near any minimum
:math:`g^\top u \to 0` and *every* learning rate raises the loss; such optimizers oscillate
at an amplitude set by :math:`\eta` instead of diverging. Training bursts (``verify=True``)
remain the ground truth for divergence.

:func:`critical_step` is the line search, a pure function of ``loss_along(t)``;
:func:`update_direction` takes :math:`\Delta\theta` from a deep copy of the optimizer
stepped on a copy of the parameters; :func:`critical_sharpness` evaluates the mean loss over
a :class:`~landscape.problem.Problem`'s data, :math:`L = \sum_b w_b L_b / \sum_b w_b`.

References
----------
Kalra, Gagnon-Audet, Gromov, Mediratta, Niu, Miller, Shvartsman (2026), "A Scalable Measure
of Loss Landscape Curvature for Analyzing the Training Dynamics of LLMs", arXiv:2601.16979.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from landscape.losses import Criterion
from landscape.metrics.optimizers.frozen import torch_class
from landscape.metrics.optimizers.instances import optimizer_list, trained_problem
from landscape.metrics.optimizers.support import describe_optimizer
from landscape.problem import Problem
from landscape.records import Record

__all__ = [
    "CriticalSharpness",
    "CriticalStep",
    "critical_sharpness",
    "critical_step",
    "update_direction",
]

_DESCRIPTION = (
    "critical sharpness (Kalra et al. 2026): 2 / the smallest learning rate at which the "
    "optimizer's own next update raises the loss; a one-step, directional measure that "
    "predicts whether the next step raises the loss, not whether training diverges "
    "(momentum, adaptive preconditioners and normalized updates change that); training "
    "bursts remain the ground truth."
)


@dataclass(frozen=True)
class CriticalStep(Record):
    r"""The result of the line search :func:`critical_step`.

    Attributes
    ----------
    step : float
        :math:`t_c`, the smallest step found at which the loss exceeds its value at 0
        (``0``: it rises at any step; ``inf``: it never rises within the search).
    lower : float
        The largest step known not to raise the loss (``step`` is bracketed by ``lower`` and
        ``step``).
    loss : float
        The loss at step 0.
    num_evaluations : int
        Calls of ``loss_along`` (including step 0).
    status : {"found", "rises at once", "never rises"}
        What the search found.
    """

    step: float
    lower: float
    loss: float
    num_evaluations: int
    status: str


def critical_step(
    loss_along: Callable[[float], float],
    *,
    initial: float = 1.0,
    rtol: float = 1e-3,
    max_doublings: int = 60,
) -> CriticalStep:
    r"""Find the smallest step :math:`t > 0` with ``loss_along(t) > loss_along(0)``.

    Brackets the crossing by doubling or halving from ``initial``, then bisects
    geometrically until the bracket is within ``rtol``. A non-finite loss counts as a rise.
    Only the first crossing found by this search is reported: on a loss that rises, falls and
    rises again along the line, an earlier crossing between two probes can be missed.

    Parameters
    ----------
    loss_along : callable
        ``loss_along(t) -> float``: the loss at step ``t`` along a fixed direction.
    initial : float, optional
        The first step tried (the optimizer's own step is ``1`` in units of its update).
    rtol : float, optional
        Relative width of the final bracket.
    max_doublings : int, optional
        How far the bracketing search goes (``initial * 2**±max_doublings``).

    Returns
    -------
    CriticalStep
        The step, its bracket and the number of evaluations.

    Raises
    ------
    ValueError
        If ``initial`` or ``rtol`` is out of range.
    FloatingPointError
        If the loss at step 0 is not finite.

    Examples
    --------
    A quadratic along a direction: :math:`f(t) = -t + t^2` rises past :math:`t = 1`.

    >>> r = critical_step(lambda t: -t + t * t, initial=0.3, rtol=1e-9)
    >>> round(r.step, 6), r.status
    (1.0, 'found')
    """
    if not initial > 0 or not math.isfinite(initial):
        raise ValueError(f"initial must be a positive finite step; got {initial!r}.")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1); got {rtol!r}.")
    count = 0

    def rises(t: float) -> bool:
        nonlocal count
        count += 1
        value = float(loss_along(t))
        return not value <= base

    count += 1
    base = float(loss_along(0.0))
    if not math.isfinite(base):
        raise FloatingPointError(f"the loss at the current parameters is {base}.")
    t = float(initial)
    if rises(t):
        hi = t
        for _ in range(max_doublings):
            t /= 2.0
            if not rises(t):
                lo = t
                break
            hi = t
        else:
            return CriticalStep(0.0, 0.0, base, count, "rises at once")
    else:
        lo = t
        for _ in range(max_doublings):
            t *= 2.0
            if rises(t):
                hi = t
                break
            lo = t
        else:
            return CriticalStep(math.inf, lo, base, count, "never rises")
    while hi - lo > rtol * hi:
        mid = math.sqrt(lo * hi)
        if rises(mid):
            hi = mid
        else:
            lo = mid
    return CriticalStep(hi, lo, base, count, "found")


@dataclass(frozen=True)
class CriticalSharpness(Record):
    r"""The critical learning rate and sharpness along an optimizer's own next update.

    Attributes
    ----------
    optimizer : str
        The optimizer class name(s).
    lr : float
        The current learning rate (of the first parameter group of the first optimizer).
    critical_lr : float
        :math:`\eta_c = t_c\,\eta`: the learning rate at which the next step starts to raise
        the loss (every group's learning rate scaled by :math:`t_c`).
    factor : float
        :math:`t_c = \eta_c/\eta` (below 1: the next step at the current learning rate
        raises the loss).
    sharpness : float
        :math:`\lambda_c = 2/\eta_c`.
    loss : float
        The loss at the current parameters.
    update_norm : float
        :math:`\lVert\Delta\theta\rVert` of the next update at the current learning rate.
    num_evaluations : int
        Loss evaluations of the line search (full passes over the data).
    measure : str
        ``"critical sharpness"``.
    description : str
        What it does and does not predict.
    notes : tuple of str
        What the numbers assume.
    """

    optimizer: str
    lr: float
    critical_lr: float
    factor: float
    sharpness: float
    loss: float
    update_norm: float
    num_evaluations: int
    measure: str = "critical sharpness"
    description: str = _DESCRIPTION
    notes: tuple[str, ...] = field(default=())


def _gradient(problem: Problem, theta: dict[str, Tensor]) -> tuple[float, dict[str, Tensor]]:
    """Return the mean loss and its gradient per parameter at ``theta`` (the one data loop).

    Returns
    -------
    tuple of (float, dict of str to Tensor)
        The loss and the gradient, all-reduced under :mod:`torch.distributed`.
    """
    loss, gradient = problem.at(theta).value_and_grad()
    return loss, problem.space.unflatten(gradient)


def _loss(problem: Problem, theta: dict[str, Tensor]) -> float:
    """Return the mean loss at ``theta``; a non-finite loss reads as ``inf`` (a rise).

    Returns
    -------
    float
        The loss.
    """
    return problem.at(theta).loss(nonfinite=math.inf)


def update_direction(
    problem: Problem,
    optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
) -> tuple[dict[str, Tensor], list[str]]:
    r"""Return the next update :math:`\Delta\theta` the optimizer(s) would take, and notes.

    The full-data gradient of the problem's loss is put on copies of the parameters, a deep
    copy of each optimizer (its state and groups mapped onto the copies) takes one step —
    with a closure for optimizers that re-evaluate the loss (L-BFGS) — and
    :math:`\Delta\theta` is the copies' change. The model and the optimizers are not touched.

    Parameters
    ----------
    problem : Problem
        The model, data and loss; :math:`\Delta\theta` is over its parameter space.
    optimizers : torch.optim.Optimizer or sequence of them
        The optimizer(s) that train the model (e.g. Muon for matrices and AdamW for the
        rest), or wrappers of them.

    Returns
    -------
    (dict of str to Tensor, list of str)
        The update per parameter name (zero where no optimizer trains the parameter), and
        notes.

    Raises
    ------
    ValueError
        If no optimizer trains any parameter of the problem.
    """
    optimizers = optimizer_list(optimizers)
    named = dict(problem.model.named_parameters())
    space = problem.space
    theta = {k: v.detach().clone() for k, v in problem.theta.items()}
    _, grads = _gradient(problem, theta)
    notes: list[str] = []
    ids = {id(named[n]): n for n in space.names}
    trained: set[str] = set()
    delta = {k: torch.zeros_like(v) for k, v in theta.items()}
    for opt in optimizers:
        sparse = (torch_class(opt) or type(opt)).__name__ == "SparseAdam"
        params = [p for g in opt.param_groups for p in g["params"]]
        clones = {id(p): p.detach().clone().requires_grad_(p.requires_grad) for p in params}
        for p in params:
            name = ids.get(id(p))
            clone = clones[id(p)]
            if name is not None:
                clone.data.copy_(theta[name].to(clone.dtype))
                grad = grads[name].to(clone.dtype).clone()
                clone.grad = grad.to_sparse() if sparse else grad
                trained.add(name)
            else:
                clone.grad = None
        outside = sum(1 for p in params if id(p) not in ids)
        if outside:
            notes.append(
                f"{type(opt).__name__} trains {outside} parameter tensor(s) outside the "
                "measured parameters: they are held fixed."
            )
        twin = _twin(opt, clones)
        closure = _closure(problem, theta, ids, params, clones, sparse)
        with _preserved_rng():
            twin.step(closure)
        for p in params:
            name = ids.get(id(p))
            if name is not None:
                delta[name] = delta[name] + (clones[id(p)].detach() - theta[name].to(p.dtype)).to(
                    theta[name].dtype
                )
    if not trained:
        raise ValueError("none of the given optimizers trains a parameter of the problem.")
    idle = [n for n in space.names if n not in trained]
    if idle:
        notes.append(f"{len(idle)} parameter tensor(s) are trained by no given optimizer: fixed.")
    return delta, notes


def _twin(optimizer: torch.optim.Optimizer, clones: dict[int, Tensor]) -> torch.optim.Optimizer:
    """Deep-copy an optimizer onto other parameters: every attribute, state keyed by the clones.

    Copies ``__dict__`` rather than going through ``Optimizer.__getstate__``, which keeps only
    the defaults, state and groups (L-BFGS also holds its parameter list in ``_params``).

    Returns
    -------
    torch.optim.Optimizer
        The copy.
    """
    memo: dict[int, Any] = dict(clones)
    twin = object.__new__(type(optimizer))
    twin.__dict__.update(copy.deepcopy(optimizer.__dict__, memo))
    return twin


def _closure(
    problem: Problem,
    theta: dict[str, Tensor],
    ids: dict[int, str],
    params: list[Tensor],
    clones: dict[int, Tensor],
    sparse: bool,
) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        current = dict(theta)
        for p in params:
            name = ids.get(id(p))
            if name is not None:
                current[name] = clones[id(p)].detach().to(theta[name].dtype)
        loss, grads = _gradient(problem, current)
        for p in params:
            name = ids.get(id(p))
            if name is not None:
                grad = grads[name].to(clones[id(p)].dtype)
                clones[id(p)].grad = grad.to_sparse() if sparse else grad
        return torch.tensor(loss)

    return closure


class _preserved_rng:
    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()

    def __exit__(self, *exc: Any) -> None:
        torch.random.set_rng_state(self.state)


def critical_sharpness(
    problem: Problem | torch.nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    optimizer: Any,
    rtol: float = 1e-3,
    max_doublings: int = 60,
    **options: Any,
) -> CriticalSharpness:
    r"""Measure the critical learning rate along the optimizer's own next update.

    .. math::
        \eta_c = \eta\,\min\{t > 0 : L(\theta + t\,\Delta\theta) > L(\theta)\},
        \qquad \lambda_c = 2/\eta_c

    with :math:`\Delta\theta` the update the optimizer would take next at its learning rate
    :math:`\eta` (from the full-data gradient of the problem's loss; see
    :func:`update_direction`). On a quadratic, :math:`\lambda_c = u^\top H u / g^\top u`
    along :math:`u = -\Delta\theta/\eta`: for gradient descent the Rayleigh quotient of the
    gradient. It predicts whether the next step raises the loss, not whether training
    diverges (see the module documentation).

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model with its data and loss (the loss
        is the weighted mean over the batches; pass one mini-batch to measure on it). With a
        model, the parameters are those the optimizer(s) train.
    optimizer : torch.optim.Optimizer or sequence of them
        Any optimizer(s) — ``Muon`` with ``AdamW`` for the rest, third-party ones — or
        wrappers of them; never modified.
    rtol : float, optional
        Relative precision of :math:`\eta_c`.
    max_doublings : int, optional
        Range of the bracketing search.
    **options
        Options of :class:`~landscape.problem.Problem`.

    Returns
    -------
    CriticalSharpness
        :math:`\eta_c`, :math:`t_c = \eta_c/\eta`, :math:`\lambda_c = 2/\eta_c` and notes.

    Raises
    ------
    ValueError
        If no optimizer trains a parameter of the problem.
    FloatingPointError
        If the loss at the current parameters is not finite (naming the batch).

    References
    ----------
    Kalra et al. (2026), arXiv:2601.16979.

    Examples
    --------
    Gradient descent on a least-squares problem: :math:`\lambda_c = g^\top H g/g^\top g`.

    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(3, 1, bias=False).double()
    >>> X, y = torch.randn(20, 3).double(), torch.randn(20, 1).double()
    >>> sgd = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> r = ls.critical_sharpness(model, (X, y), nn.MSELoss(), optimizer=sgd, rtol=1e-10)
    >>> H = 2 * X.T @ X / 20
    >>> g = (2 * X.T @ (X @ model.weight.detach().T - y) / 20).reshape(-1)
    >>> bool(abs(r.sharpness / float(g @ H @ g / (g @ g)) - 1) < 1e-8)
    True
    """
    inner = optimizer_list(optimizer)
    problem = trained_problem(problem, data, loss_fn, inner, where="critical_sharpness", **options)
    delta, notes = update_direction(problem, inner)
    theta = {k: v.detach().clone() for k, v in problem.theta.items()}
    lr = float(inner[0].param_groups[0]["lr"])
    squares = [d.double().square().sum() for d in delta.values()]
    norm = math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0

    def loss_along(t: float) -> float:
        if t == 0:
            return problem.at(theta).loss()  # a non-finite loss here names its batch
        with torch.no_grad():
            return _loss(problem, {k: theta[k] + t * delta[k] for k in theta})

    if norm == 0:
        result = CriticalStep(math.inf, math.inf, loss_along(0.0), 1, "never rises")
        notes.append("the optimizer's next update is zero: nothing limits the learning rate.")
    else:
        result = critical_step(loss_along, initial=1.0, rtol=rtol, max_doublings=max_doublings)
    if result.status == "rises at once":
        notes.append(
            "the loss rises at any step along the update: it is not a descent direction for "
            "this data (a normalized update near a minimum, or a mini-batch update measured "
            "on other data)."
        )
    elif result.status == "never rises":
        notes.append("the loss never rises along the update within the search range.")
    for opt in inner:
        support = describe_optimizer(opt)
        if support.measure != "critical sharpness":
            notes.append(
                f"{type(opt).__name__} also has an exact frozen-state threshold "
                "(landscape.metrics.optimizers.linearize)."
            )
        elif type(opt).__name__ == "LBFGS":
            notes.append("LBFGS: its whole step (inner iterations and line search) is scaled.")
    critical_lr = result.step * lr
    return CriticalSharpness(
        optimizer=" + ".join(type(o).__name__ for o in inner),
        lr=lr,
        critical_lr=critical_lr,
        factor=result.step,
        sharpness=2.0 / critical_lr if critical_lr > 0 else math.inf,
        loss=result.loss,
        update_norm=norm,
        num_evaluations=result.num_evaluations,
        notes=tuple(notes),
    )
