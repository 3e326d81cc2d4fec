r"""The frozen-state linearization of an optimizer's next step, and the largest stable lr.

:func:`linearize` reads an optimizer instance (its class, hyperparameters and state) and
returns a :class:`FrozenLinearization`: the diagonal preconditioner :math:`P` its *next*
step divides by, the step size :math:`s`, the decoupled decay, the coupled weight decay
:math:`W` and the per-mode recursion :math:`(\beta, k, A, B)` of
:mod:`~landscape.metrics.optimizers.recursion`, so that, on a quadratic with the optimizer's
second-moment state held at its current value,

.. math::
    \text{stable} \iff s\,\lambda_{\max}\big(P^{-1}(H + W)\big) < c(\delta),

with the coefficient :math:`c` of the recursion. **Which state:** accumulators
(:math:`v`, :math:`u`, sums, factored moments) are held at their current values — the
stationary assumption :math:`v_{t+1} = v_t`, which holds on average when mini-batch gradients
keep :math:`\mathbb{E}[g^2] = v` — while step counters, bias corrections and schedules inside
the optimizer take their values of the next step :math:`t+1`, as ``step`` applies them.
The preconditioner of the *last* step (Cohen et al. 2022's :math:`P_t`, what
:func:`~landscape.metrics.thresholds.adam_preconditioner` returns) differs from it by the
bias-correction ratios, which tend to 1 (0.5 % at :math:`t = 100` for Adam's
:math:`\beta_2 = 0.999`); the next step at zero gradient would use :math:`\beta_2 v_t`, a
factor :math:`\sqrt{\beta_2}` smaller (0.05 % for Adam, 0.5 % for RMSprop's
:math:`\alpha = 0.99`).

Per optimizer (``torch.optim`` 2.13; :math:`t` = ``state["step"]``, :math:`s = t+1`, all
operations elementwise):

* ``SGD``: :math:`P = I`; GD, heavy ball (dampening :math:`d`: :math:`k = 1-d`) or Nesterov;
  coupled weight decay. Exact on a quadratic (no adaptive state).
* ``Adam``/``AdamW``: :math:`P = (1-\beta_1^{s})\big(\sqrt{v/(1-\beta_2^{s})} + \epsilon\big)`
  (``max_exp_avg_sq`` with ``amsgrad``); EMA momentum, :math:`c = (2+2\beta_1)/(1-\beta_1)`.
* ``RMSprop``: :math:`P = \sqrt{v} + \epsilon`, centered :math:`\sqrt{v - \bar g^2} + \epsilon`;
  no momentum: :math:`c = 2`; momentum :math:`\mu`: heavy ball on :math:`P^{-1}H`,
  :math:`c = 2 + 2\mu`. No bias correction.
* ``Adagrad``: :math:`P = (\sqrt{S} + \epsilon)(1 + t\,\gamma)` with the lr decay
  :math:`\gamma` (the next step's lr is :math:`\eta/(1 + t\gamma)`); :math:`c = 2`.
* ``Adadelta``: :math:`P = \sqrt{v + \epsilon}/\sqrt{u + \epsilon}` (``square_avg``,
  ``acc_delta``); :math:`c = 2`.
* ``Adamax``: :math:`P = (1-\beta_1^{s})\,u` (``exp_inf``, which already holds
  :math:`\epsilon`); EMA momentum.
* ``NAdam``: :math:`P = \sqrt{v/(1-\beta_2^{s})} + \epsilon`; with
  :math:`\mu_j = \beta_1(1 - \tfrac12 0.96^{j\psi})`, :math:`\Pi_s = \Pi_t\,\mu_s`
  (``mu_product``) and :math:`\Pi_{s+1} = \Pi_s\mu_{s+1}`, the step is
  :math:`A_s g + B_s m'` with :math:`A_s = (1-\mu_s)/(1-\Pi_s)`,
  :math:`B_s = \mu_{s+1}/(1-\Pi_{s+1})`: the recursion :math:`(\beta_1, 1-\beta_1, A_s, B_s)`,
  whose Jury limit depends on the step count (:math:`c \to
  (2+2\beta_1)/((1-\beta_1)(1+2\beta_1))`, Nesterov-like, once :math:`\mu_s \to \beta_1`).
* ``RAdam``: with :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
  :math:`\rho_s = \rho_\infty - 2s\beta_2^{s}/(1-\beta_2^{s})`: if :math:`\rho_s > 5`,
  :math:`P = \frac{1-\beta_1^{s}}{r_s}\,\frac{\sqrt{v} + \epsilon}{\sqrt{1-\beta_2^{s}}}` with
  the rectification :math:`r_s = \sqrt{\frac{(\rho_s-4)(\rho_s-2)\rho_\infty}
  {(\rho_\infty-4)(\rho_\infty-2)\rho_s}}`, else (the SGD-like warm-up, about the first five
  steps, and always when :math:`\beta_2 \le 2/3`) :math:`P = (1-\beta_1^{s})\,I`; EMA momentum.
* ``SparseAdam``: :math:`P = (1-\beta_1^{s})(\sqrt{v} + \epsilon)/\sqrt{1-\beta_2^{s}}` (note
  :math:`\epsilon` outside the bias correction); exact for rows present in every batch (rows
  a batch does not touch neither move nor decay their moments).
* ``ASGD``: :math:`P = I`, step :math:`\eta_t = \eta/(1 + \lambda\eta t)^{\alpha}` (the
  stored ``eta``) and decay :math:`\lambda\eta_t`; exact (the averaged iterate ``ax`` is not
  what the step moves).
* ``Adafactor`` (linear part): :math:`P = \sqrt{\max(V, \epsilon_1^2)}/\max(\epsilon_2,
  \mathrm{RMS}(\theta))` per tensor, with :math:`V` the second moment (factored for
  matrices: row EMA times column EMA over the mean row EMA), step
  :math:`\min(\eta, 1/\sqrt{s})` and decoupled decay :math:`\eta w`. Held fixed: the
  relative step :math:`\max(\epsilon_2, \mathrm{RMS}(\theta))` (exact to first order at a
  minimum, where the gradient vanishes) and **no update clipping**: clipping (RMS of the
  update above ``d``) shrinks the step, bounding it, so beyond the linear threshold Adafactor
  oscillates at a bounded amplitude instead of diverging.

Not linear, hence routed to the optimizer-agnostic measures
(:mod:`~landscape.metrics.optimizers.critical`): ``Muon`` (orthogonalized momentum), ``Rprop``
(signs and adaptive step sizes), ``LBFGS`` (curvature pairs and line searches), and any
optimizer not listed (:func:`describe_optimizer`).

References
----------
Cohen, Kaur, Li, Kolter, Talwalkar (ICLR 2021), "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability". Cohen, Ghorbani, Krishnan, Agarwal, Medapati,
Badura, Suo, Cardoze, Nado, Dahl, Gilmer (2022), "Adaptive Gradient Methods at the Edge of
Stability", arXiv:2207.14484.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from landscape.metrics.optimizers.recursion import ModeRecursion
from landscape.metrics.thresholds import OptimizerSettings, unwrap_optimizer
from landscape.params import ParamSpace
from landscape.problem import Problem
from landscape.records import Record

__all__ = [
    "FrozenLinearization",
    "MissingOptimizerState",
    "NotLinearizable",
    "linearize",
    "radam_rectification",
    "settings_linearization",
    "torch_class",
]

_EXACTNESS = ("exact", "frozen state", "linear part", "steady state")


class NotLinearizable(ValueError):
    """The optimizer's step is not a fixed linear map of the gradient (use the generic measure)."""


class MissingOptimizerState(ValueError):
    """The optimizer has no state yet, and its preconditioner is defined by that state."""


@dataclass(frozen=True)
class FrozenLinearization(Record):
    r"""The next step of an optimizer, linearized with its state held fixed.

    On a quadratic the step is :math:`m' = \beta m + k g`,
    :math:`\theta' = (1-\delta)\theta - s P^{-1}(A g + B m')` with :math:`g = (H+W)\theta`
    (see :mod:`~landscape.metrics.optimizers.recursion`); it is stable iff
    :math:`s\,\lambda_{\max}(P^{-1}(H+W)) < c(\delta)`.

    Attributes
    ----------
    optimizer : str
        The optimizer's class name.
    lr : float
        The learning rate (of the reference parameter group: other groups' learning rates
        are folded into :attr:`preconditioner` as ratios, and scale with it).
    recursion : ModeRecursion
        The update rule :math:`(\beta, k, A, B)`.
    preconditioner : Tensor or None
        The diagonal of :math:`P`, flat in the parameter space's order (``None``: identity).
    epsilon : Tensor or None
        The part of :attr:`preconditioner` that the optimizer's :math:`\epsilon` contributes
        (where it dominates, the coordinate's gradients vanish: the frozen threshold there is
        set by :math:`\epsilon`, not by curvature).
    weight_decay : Tensor or None
        Coupled weight decay :math:`W` per coordinate, added to the Hessian (``None``: 0).
    decoupled_weight_decay : float
        :math:`w` of the decoupled decay :math:`\delta = w\eta` (``"asgd"``:
        :math:`\delta = \lambda\eta_t`).
    schedule : {"constant", "capped", "asgd"}
        How the step size follows ``lr``: :math:`s = \eta`; Adafactor's
        :math:`s = \min(\eta, \text{cap})`; ASGD's :math:`s = \eta/(1+\lambda\eta t)^\alpha`.
    schedule_params : tuple of float
        ``("capped")``: ``(cap,)``; ``("asgd")``: ``(lambd, alpha, t)``.
    label : str
        Which preconditioner the numbers rest on (``"optimizer state"``, or a steady state).
    exactness : {"exact", "frozen state", "linear part", "steady state"}
        ``"exact"``: the step is linear on a quadratic as it is (SGD, ASGD); ``"frozen
        state"``: exact for the dynamics with the accumulators held fixed (adaptive
        optimizers, which left free raise their accumulators when they oscillate and
        self-stabilize: Cohen et al. 2022); ``"linear part"``: a nonlinearity is left out
        (Adafactor's update clipping); ``"steady state"``: :math:`P` estimated, not read.
    maximize : bool
        The optimizer ascends the loss: the limit applies to the Hessian of :math:`-L`.
    step : int or None
        The step count of the linearized step (:math:`t+1`), where the optimizer counts.
    notes : tuple of str
        What the numbers assume.

    Examples
    --------
    >>> model = nn.Linear(3, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> lin = linearize(opt, model)
    >>> round(lin.coefficient, 10), round(lin.stable_sharpness, 8)
    (3.8, 38.0)
    >>> round(lin.max_lr(19.0), 10)       # the lr at which sharpness 19 is marginal
    0.2
    """

    optimizer: str
    lr: float
    recursion: ModeRecursion
    preconditioner: Tensor | None = None
    epsilon: Tensor | None = None
    weight_decay: Tensor | None = None
    decoupled_weight_decay: float = 0.0
    schedule: str = "constant"
    schedule_params: tuple[float, ...] = ()
    label: str = "optimizer state"
    exactness: str = "exact"
    maximize: bool = False
    step: int | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "capped", "asgd"):
            raise ValueError(f"unknown schedule {self.schedule!r}.")
        if self.exactness not in _EXACTNESS:
            raise ValueError(f"exactness must be one of {_EXACTNESS}; got {self.exactness!r}.")

    # -- the step at a learning rate --------------------------------------------------------
    def step_size(self, lr: float | None = None) -> float:
        r"""Return the step size :math:`s` the next step applies at learning rate ``lr``.

        Parameters
        ----------
        lr : float, optional
            A learning rate (default: :attr:`lr`).

        Returns
        -------
        float
            :math:`s(\eta)`.
        """
        lr = self.lr if lr is None else float(lr)
        if self.schedule == "capped":
            return min(lr, self.schedule_params[0])
        if self.schedule == "asgd":
            lambd, alpha, t = self.schedule_params
            return lr / (1.0 + lambd * lr * t) ** alpha
        return lr

    def decay(self, lr: float | None = None) -> float:
        r"""Return the decoupled decay :math:`\delta` of one step at learning rate ``lr``.

        Returns
        -------
        float
            :math:`w\eta`, or :math:`\lambda\eta_t` for ASGD.
        """
        if not self.decoupled_weight_decay:
            return 0.0  # also where the learning rate is not known (nan)
        lr = self.lr if lr is None else float(lr)
        if self.schedule == "asgd":
            return self.decoupled_weight_decay * self.step_size(lr)
        return self.decoupled_weight_decay * lr

    @property
    def coefficient(self) -> float:
        """The coefficient :math:`c` at :attr:`lr` (stable iff step size x sharpness < c)."""
        return self.recursion.coefficient(self.decay())

    @property
    def stable_sharpness(self) -> float:
        r"""The largest stable :math:`\lambda_{\max}(P^{-1}(H+W))` at :attr:`lr`: :math:`c/s`."""
        s = self.step_size()
        return self.coefficient / s if s > 0 else math.inf

    def ratio(self, sharpness: float) -> float:
        """Return sharpness over :attr:`stable_sharpness` (1: the edge of stability).

        Returns
        -------
        float
            The ratio.
        """
        return float(sharpness) / self.stable_sharpness

    def is_stable(self, sharpness: float, lr: float | None = None) -> bool:
        """Return whether the frozen iteration is stable at ``lr`` for this sharpness.

        Returns
        -------
        bool
            Step size times sharpness below the coefficient.
        """
        lr = self.lr if lr is None else float(lr)
        return self.step_size(lr) * float(sharpness) < self.recursion.coefficient(self.decay(lr))

    def max_lr(self, sharpness: float) -> float:
        r"""Return the learning rate at which preconditioned sharpness ``sharpness`` is marginal.

        With no decay and a constant schedule this is :math:`c/a`; otherwise the limit of
        the (monotone) stability condition :math:`s(\eta)\,a < c(\delta(\eta))`, in closed
        form for the constant schedule and by bisection otherwise.

        Parameters
        ----------
        sharpness : float
            :math:`a = \lambda_{\max}(P^{-1}(H+W))`.

        Returns
        -------
        float
            The largest stable learning rate (``inf`` if no learning rate is unstable).
        """
        a = float(sharpness)
        rec, w = self.recursion, self.decoupled_weight_decay
        if self.schedule == "constant":
            b, k = rec.momentum, rec.gradient_input
            A, B = rec.gradient_weight, rec.momentum_weight
            denominator = a * (A * (1 + b) + B * k) + w * (1 + b)
            bound = 2 * (1 + b) / denominator if denominator > 0 else math.inf
            if A > 0 and b > 0 and a * A + w > 0:
                bound = min(bound, (1 + 1 / b) / (a * A + w))
            return bound
        return _bisect_limit(self.is_stable, a, guess=rec.coefficient() / max(a, 1e-300))

    def with_notes(self, *notes: str) -> FrozenLinearization:
        """Return a copy with more notes.

        Returns
        -------
        FrozenLinearization
            The copy.
        """
        return replace(self, notes=self.notes + tuple(notes))


def _bisect_limit(stable: Callable[[float, float], bool], a: float, guess: float) -> float:
    if not guess > 0 or not math.isfinite(guess):
        guess = 1.0
    hi = guess
    while stable(a, hi):
        hi *= 2.0
        if hi > 1e300:
            return math.inf
    lo = hi
    for _ in range(2100):
        lo /= 2.0
        if stable(a, lo):
            break
    else:
        return 0.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if stable(a, mid):
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return lo


# -- reading an optimizer ------------------------------------------------------------------------
@dataclass
class _Part:
    """One parameter's share of a linearization, before the parts are combined."""

    diagonal: Tensor | None
    recursion: ModeRecursion
    epsilon: Tensor | float = 0.0
    coupled_decay: float = 0.0
    decoupled_decay: float = 0.0
    schedule: str = "constant"
    schedule_params: tuple[float, ...] = ()
    exactness: str = "frozen state"
    step: int | None = None
    notes: list[str] = field(default_factory=list)


def _value(x: Any) -> float:
    return float(x.item() if isinstance(x, Tensor) else x)


def _steps(state: Mapping[str, Any]) -> int:
    return round(_value(state["step"]))


def _ema(beta1: float) -> ModeRecursion:
    return ModeRecursion(beta1, 1.0 - beta1, 0.0, 1.0)


_GD = ModeRecursion()


def _needs(state: Mapping[str, Any], keys: tuple[str, ...], name: str, cls: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing or ("step" in state and _steps(state) == 0):
        raise MissingOptimizerState(
            f"{cls} has no state for {name!r} yet: its preconditioner is defined by its "
            "second-moment state. Take at least one optimizer step first, or use the "
            "steady-state estimate (landscape.metrics.optimizers.steady_state)."
        )


def _tensor(x: Tensor, like: Tensor) -> Tensor:
    return x.detach().to(dtype=torch.float64, device=like.device)


def _sgd(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    mu, d = _value(group["momentum"]), _value(group["dampening"])
    if mu == 0:
        recursion = _GD
    elif group["nesterov"]:
        recursion = ModeRecursion(mu, 1.0, 1.0, mu)
    else:
        if d >= 1.0:
            raise NotLinearizable("SGD with dampening >= 1 never moves after its first step.")
        recursion = ModeRecursion(mu, 1.0 - d, 0.0, 1.0)
    notes = []
    if mu > 0 and state.get("momentum_buffer") is None:
        notes.append(
            "SGD has no momentum buffer yet: its first step copies the gradient into it "
            "(without dampening); the limit is that of every later step."
        )
    return _Part(
        None, recursion, coupled_decay=_value(group["weight_decay"]), exactness="exact", notes=notes
    )


def _adam(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    amsgrad = bool(group.get("amsgrad", False))
    _needs(state, ("max_exp_avg_sq",) if amsgrad else ("exp_avg_sq",), name, "Adam")
    beta1, beta2 = (_value(b) for b in group["betas"])
    s = _steps(state) + 1
    v = _tensor(state["max_exp_avg_sq" if amsgrad else "exp_avg_sq"], p)
    diagonal = (1 - beta1**s) * ((v / (1 - beta2**s)).sqrt() + _value(group["eps"]))
    decoupled = bool(group.get("decoupled_weight_decay", False))
    wd = _value(group["weight_decay"])
    return _Part(
        diagonal,
        _ema(beta1),
        epsilon=(1 - beta1**s) * _value(group["eps"]),
        coupled_decay=0.0 if decoupled else wd,
        decoupled_decay=wd if decoupled else 0.0,
        step=s,
    )


def _adamax(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("exp_inf",), name, "Adamax")
    beta1, _ = (_value(b) for b in group["betas"])
    s = _steps(state) + 1
    diagonal = (1 - beta1**s) * _tensor(state["exp_inf"], p)
    return _Part(
        diagonal,
        _ema(beta1),
        epsilon=(1 - beta1**s) * _value(group["eps"]),  # exp_inf >= |g| + eps
        coupled_decay=_value(group["weight_decay"]),
        step=s,
    )


def _rmsprop(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("square_avg",), name, "RMSprop")
    v = _tensor(state["square_avg"], p)
    notes: list[str] = []
    if group["centered"]:  # v - mean(g)^2 can round below 0: clamped (no sync to check)
        v = (v - _tensor(state["grad_avg"], p).square()).clamp_min(0.0)
    diagonal = v.sqrt() + _value(group["eps"])
    mu = _value(group["momentum"])
    recursion = ModeRecursion(mu, 1.0, 0.0, 1.0) if mu > 0 else _GD
    return _Part(
        diagonal,
        recursion,
        epsilon=_value(group["eps"]),
        coupled_decay=_value(group["weight_decay"]),
        step=_steps(state) + 1,
        notes=notes,
    )


def _adagrad(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("sum",), name, "Adagrad")
    t = _steps(state)
    factor = 1.0 + t * _value(group["lr_decay"])
    diagonal = (_tensor(state["sum"], p).sqrt() + _value(group["eps"])) * factor
    return _Part(
        diagonal,
        _GD,
        epsilon=_value(group["eps"]) * factor,
        coupled_decay=_value(group["weight_decay"]),
        step=t + 1,
    )


def _adadelta(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("square_avg", "acc_delta"), name, "Adadelta")
    eps = _value(group["eps"])
    v, u = _tensor(state["square_avg"], p), _tensor(state["acc_delta"], p)
    diagonal = (v + eps).sqrt() / (u + eps).sqrt()
    return _Part(
        diagonal,
        _GD,
        epsilon=((v + eps).sqrt() - v.sqrt()) / (u + eps).sqrt(),
        coupled_decay=_value(group["weight_decay"]),
        step=_steps(state) + 1,
        notes=["Adadelta: both accumulators (square_avg and acc_delta) held fixed."],
    )


def _nadam(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("exp_avg_sq", "mu_product"), name, "NAdam")
    beta1, beta2 = (_value(b) for b in group["betas"])
    psi = _value(group["momentum_decay"])
    s = _steps(state) + 1
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (s * psi))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((s + 1) * psi))
    product = _value(state["mu_product"]) * mu
    product_next = product * mu_next
    A = (1.0 - mu) / (1.0 - product)
    B = mu_next / (1.0 - product_next)
    v = _tensor(state["exp_avg_sq"], p)
    diagonal = (v / (1 - beta2**s)).sqrt() + _value(group["eps"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    wd = _value(group["weight_decay"])
    return _Part(
        diagonal,
        ModeRecursion(beta1, 1.0 - beta1, A, B),
        epsilon=_value(group["eps"]),
        coupled_decay=0.0 if decoupled else wd,
        decoupled_decay=wd if decoupled else 0.0,
        step=s,
        notes=[
            f"NAdam at step {s}: momentum schedule mu_s = {mu:.6g}, mu_(s+1) = {mu_next:.6g} "
            "(the limit changes with the step count)."
        ],
    )


def radam_rectification(beta2: float, step: int) -> float | None:
    r"""Return RAdam's rectification :math:`r_s` at step ``step``, or ``None`` in its warm-up.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_s = \rho_\infty - \frac{2 s \beta_2^s}{1-\beta_2^s}, \quad
        r_s = \sqrt{\frac{(\rho_s-4)(\rho_s-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_s}}

    when :math:`\rho_s > 5`; otherwise the step is SGD-like (``None``), as in
    ``torch.optim.RAdam``.

    Parameters
    ----------
    beta2 : float
        RAdam's second-moment coefficient.
    step : int
        The step count :math:`s \ge 1` (after the increment, as ``step`` uses it).

    Returns
    -------
    float or None
        :math:`r_s`, or ``None`` while :math:`\rho_s \le 5`.

    Examples
    --------
    >>> radam_rectification(0.999, 5) is None, radam_rectification(0.999, 6) is not None
    (True, True)
    >>> radam_rectification(0.5, 1000) is None       # beta2 <= 2/3: always SGD-like
    True
    """
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho = rho_inf - 2.0 * step * beta2**step / (1.0 - beta2**step)
    if rho <= 5.0:
        return None
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


def _radam(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("exp_avg_sq",), name, "RAdam")
    beta1, beta2 = (_value(b) for b in group["betas"])
    s = _steps(state) + 1
    rect = radam_rectification(beta2, s)
    epsilon = 0.0
    if rect is None:
        diagonal = torch.full_like(_tensor(state["exp_avg_sq"], p), 1 - beta1**s)
        notes = [f"RAdam at step {s} is in its SGD-like warm-up (rho_s <= 5): P = (1-beta1^s) I."]
    else:
        v = _tensor(state["exp_avg_sq"], p)
        diagonal = (
            (1 - beta1**s) / rect * (v.sqrt() + _value(group["eps"])) / math.sqrt(1 - beta2**s)
        )
        epsilon = (1 - beta1**s) / rect * _value(group["eps"]) / math.sqrt(1 - beta2**s)
        notes = [f"RAdam at step {s}: rectification r_s = {rect:.6g}."]
    decoupled = bool(group.get("decoupled_weight_decay", False))
    wd = _value(group["weight_decay"])
    return _Part(
        diagonal,
        _ema(beta1),
        epsilon=epsilon,
        coupled_decay=0.0 if decoupled else wd,
        decoupled_decay=wd if decoupled else 0.0,
        step=s,
        exactness="exact" if rect is None else "frozen state",
        notes=notes,
    )


def _sparse_adam(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    _needs(state, ("exp_avg_sq",), name, "SparseAdam")
    beta1, beta2 = (_value(b) for b in group["betas"])
    s = _steps(state) + 1
    v = _tensor(state["exp_avg_sq"], p)
    diagonal = (1 - beta1**s) * (v.sqrt() + _value(group["eps"])) / math.sqrt(1 - beta2**s)
    return _Part(
        diagonal,
        _ema(beta1),
        epsilon=(1 - beta1**s) * _value(group["eps"]) / math.sqrt(1 - beta2**s),
        step=s,
        notes=[
            "SparseAdam: exact for rows present in every batch; rows a batch does not touch "
            "neither move nor decay their moments (lazy updates)."
        ],
    )


def _asgd(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    t = _steps(state) if "step" in state else 0
    lambd, alpha = _value(group["lambd"]), _value(group["alpha"])
    return _Part(
        None,
        _GD,
        coupled_decay=_value(group["weight_decay"]),
        decoupled_decay=lambd,
        schedule="asgd",
        schedule_params=(lambd, alpha, float(t)),
        exactness="exact",
        step=t + 1,
        notes=[
            "ASGD: the threshold is about the iterate the step moves, not the running "
            "average ax (which converges whenever the iterate stays bounded)."
        ],
    )


def _adafactor(group: Mapping[str, Any], state: Mapping[str, Any], p: Tensor, name: str) -> _Part:
    factored = p.dim() > 1
    _needs(state, ("row_var", "col_var") if factored else ("variance",), name, "Adafactor")
    eps1, eps2 = group["eps"]
    eps1 = torch.finfo(p.dtype).eps if eps1 is None else _value(eps1)
    if factored:
        row, col = _tensor(state["row_var"], p), _tensor(state["col_var"], p)
        variance = (row @ col) / row.mean(dim=-2, keepdim=True).clamp(min=eps1)
    else:
        variance = _tensor(state["variance"], p)
    s = _steps(state) + 1
    rms = p.detach().to(torch.float64).norm() / math.sqrt(p.numel())  # stays on the device
    scale = rms.clamp(min=_value(eps2))
    diagonal = variance.clamp(min=eps1 * eps1).sqrt() / scale
    return _Part(
        diagonal,
        _GD,
        epsilon=diagonal - variance.clamp(min=0.0).sqrt() / scale,
        decoupled_decay=_value(group["weight_decay"]),
        schedule="capped",
        schedule_params=(1.0 / math.sqrt(s),),
        exactness="linear part",
        step=s,
        notes=[
            "Adafactor (linear part): the relative step max(eps2, RMS(theta)) is held at its "
            "current value (exact to first order at a minimum) and update clipping is left "
            f"out (it acts when the update's RMS exceeds d = {_value(group['d']):g}; it "
            "shrinks the step, so past this threshold Adafactor oscillates at a bounded "
            "amplitude instead of diverging).",
            f"Adafactor: the step size is min(lr, 1/sqrt(step)) = min(lr, {1 / math.sqrt(s):.4g}):"
            " learning rates above the cap do not change the step.",
        ],
    )


_NONLINEAR: dict[str, str] = {
    "Muon": "its update orthogonalizes the momentum (Newton-Schulz), a nonlinear map",
    "Rprop": "its step uses gradient signs and step sizes adapted to sign changes",
    "LBFGS": "its step applies curvature pairs from its history and a line search",
}

_READERS: dict[str, Callable[..., _Part]] = {
    "SGD": _sgd,
    "Adam": _adam,  # AdamW subclasses Adam and shares its step
    "Adamax": _adamax,
    "RMSprop": _rmsprop,
    "Adagrad": _adagrad,
    "Adadelta": _adadelta,
    "NAdam": _nadam,
    "RAdam": _radam,
    "SparseAdam": _sparse_adam,
    "ASGD": _asgd,
    "Adafactor": _adafactor,
}


def torch_class(optimizer: Any) -> type | None:
    """Return the ``torch.optim`` class whose ``step`` the optimizer runs, or ``None``.

    A subclass counts when it keeps the torch class's ``step`` (torch wraps ``step`` in a
    profiling hook per class; the functions inside are compared).

    Returns
    -------
    type or None
        A class from ``torch.optim``.
    """
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    own = inspect.unwrap(getattr(cls, "step", None)) if hasattr(cls, "step") else None
    for base in cls.__mro__:
        if base.__module__.startswith("torch.optim") and base.__name__ in (
            *_READERS,
            *_NONLINEAR,
        ):
            if own is inspect.unwrap(base.step):
                return base
            return None
    return None


def linearize(
    optimizer: Any,
    params: Problem | nn.Module | Mapping[str, Tensor],
    *,
    space: ParamSpace | None = None,
) -> FrozenLinearization:
    r"""Linearize the optimizer's next step with its state held fixed (see the module doc).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        An instance of a ``torch.optim`` class with a linear frozen-state step (or a
        framework wrapper of one, or a scheduler driving one: see
        :func:`~landscape.metrics.thresholds.unwrap_optimizer`).
    params : Problem, nn.Module or mapping of str to Tensor
        Where the parameters are: a :class:`~landscape.problem.Problem` (its model and
        parameter space), a model, or ``{name: parameter}``.
    space : ParamSpace, optional
        The parameters, in the order of the flat vectors (default: the problem's space, or
        the parameters the optimizer trains, in ``named_parameters`` order).

    Returns
    -------
    FrozenLinearization
        The preconditioner, step size, decay, weight decay and recursion.

    Raises
    ------
    NotLinearizable
        If the step is not a fixed linear map of the gradient (``Muon``, ``Rprop``,
        ``LBFGS``, unknown classes, a subclass that overrides ``step``), or parameter groups
        follow different update rules.
    MissingOptimizerState
        If an adaptive optimizer has not stepped yet.
    ValueError
        If a parameter of ``space`` is not trained by the optimizer.
    TypeError
        If ``optimizer`` is not a ``torch.optim.Optimizer`` or ``params`` not a problem,
        model or mapping.

    Examples
    --------
    >>> model = nn.Linear(2, 1)
    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    >>> model(torch.ones(4, 2)).square().mean().backward(); opt.step()
    >>> lin = linearize(opt, model)
    >>> lin.preconditioner.shape, round(lin.coefficient, 10), lin.step
    (torch.Size([3]), 38.0, 2)
    """
    optimizer = unwrap_optimizer(optimizer)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer (or a wrapper of one); got "
            f"{type(optimizer).__name__}."
        )
    name = type(optimizer).__name__
    base = torch_class(optimizer)
    if base is None:
        raise NotLinearizable(
            f"{name} is not a torch.optim optimizer with a known step (or it overrides "
            "step): its update is not known to be linear; use the critical sharpness."
        )
    if base.__name__ in _NONLINEAR:
        raise NotLinearizable(
            f"{base.__name__} has no frozen linear threshold: {_NONLINEAR[base.__name__]}; "
            "use the critical sharpness along its own update."
        )
    reader = _READERS["Adam" if base.__name__ == "AdamW" else base.__name__]
    named, space = _where(optimizer, params, space)
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    states = _host_scalars([optimizer.state.get(named[n], {}) for n in space.names])
    parts, lrs, sizes, maximize = [], [], [], set()
    for pname, state in zip(space.names, states, strict=True):
        p = named[pname]
        group = groups.get(id(p))
        if group is None:
            raise ValueError(
                f"parameter {pname!r} is not trained by the {name} optimizer; select the "
                "parameters it trains (params=...)."
            )
        if p.is_complex():
            raise NotLinearizable(f"parameter {pname!r} is complex: not supported.")
        parts.append(reader(group, state, p, pname))
        lrs.append(_value(group["lr"]))
        sizes.append(p.numel())
        maximize.add(bool(group.get("maximize", False)))
    return _combine(name, parts, lrs, sizes, maximize, space)


def settings_linearization(settings: OptimizerSettings, space: ParamSpace) -> FrozenLinearization:
    r"""Return the linearization of a named optimizer: :math:`P = I` or none, no state read.

    For ``"sgd"``, ``"momentum"`` and ``"nesterov"`` (torch's SGD: dampening only acts with
    momentum) the step is exactly linear on a quadratic; ``"adam"`` has no preconditioner
    without a state (see :mod:`~landscape.metrics.optimizers.steady_state`) and is refused.

    Parameters
    ----------
    settings : OptimizerSettings
        A named SGD kind, with its coupled weight decay.
    space : ParamSpace
        The parameters (for the weight-decay vector).

    Returns
    -------
    FrozenLinearization
        Exactness ``"exact"``, label ``"identity"``.

    Raises
    ------
    ValueError
        For ``"adam"`` or ``"other"``.

    Examples
    --------
    >>> from landscape.metrics.thresholds import OptimizerSettings
    >>> space = ParamSpace(names=("w",), shapes=((2,),), dtype=torch.float64,
    ...                    device=torch.device("cpu"))
    >>> lin = settings_linearization(OptimizerSettings("nesterov", momentum=0.9), space)
    >>> round(lin.coefficient, 10)
    1.3571428571
    """
    kind, mu, d = settings.kind, settings.momentum, settings.dampening
    if kind == "sgd":
        recursion = _GD
    elif kind == "nesterov":
        recursion = ModeRecursion(mu, 1.0, 1.0, mu)
    elif kind == "momentum":
        recursion = ModeRecursion(mu, 1.0 - d, 0.0, 1.0)
    else:
        raise ValueError(
            f"a {kind!r} optimizer has no state-free linearization: Adam needs its state or "
            "its steady state, other optimizers their instance."
        )
    wd = settings.weight_decay
    return FrozenLinearization(
        optimizer=kind,
        lr=math.nan if settings.lr is None else float(settings.lr),
        recursion=recursion,
        weight_decay=torch.full((space.dim,), wd, dtype=space.dtype, device=space.device)
        if wd
        else None,
        label="identity",
        exactness="exact",
    )


def _host_scalars(states: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return the states with every 0-dim tensor (step counts, NAdam's products) as a float.

    One transfer per device for all of them, not one synchronization per parameter
    (``capturable`` and ``fused`` optimizers keep their step counts on the GPU).

    Returns
    -------
    list of dict
        Shallow copies of the states.
    """
    out = [dict(state) for state in states]
    found: dict[torch.device, list[tuple[int, str, Tensor]]] = {}
    for i, state in enumerate(out):
        for key, value in state.items():
            if isinstance(value, Tensor) and value.dim() == 0:
                found.setdefault(value.device, []).append((i, key, value))
    for items in found.values():
        values = torch.stack([v.detach().to(torch.float64) for _, _, v in items]).tolist()
        for (i, key, _), x in zip(items, values, strict=True):
            out[i][key] = x
    return out


def _where(
    optimizer: torch.optim.Optimizer,
    params: Problem | nn.Module | Mapping[str, Tensor],
    space: ParamSpace | None,
) -> tuple[dict[str, Tensor], ParamSpace]:
    if isinstance(params, Problem):
        return dict(params.model.named_parameters()), space or params.space
    if isinstance(params, nn.Module):
        named = dict(params.named_parameters())
    elif isinstance(params, Mapping):
        named = dict(params)
    else:
        raise TypeError(
            "params must be a Problem, a model or a {name: parameter} mapping; got "
            f"{type(params).__name__}."
        )
    if space is None:
        trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
        names = tuple(n for n, p in named.items() if id(p) in trained)
        if not names:
            raise ValueError("the optimizer trains none of the given parameters.")
        tensors = [named[n] for n in names]
        space = ParamSpace(
            names=names,
            shapes=tuple(t.shape for t in tensors),
            dtype=tensors[0].dtype if tensors[0].is_floating_point() else torch.float32,
            device=tensors[0].device,
        )
    return named, space


def _combine(
    name: str,
    parts: list[_Part],
    lrs: list[float],
    sizes: list[int],
    maximize: set[bool],
    space: ParamSpace,
) -> FrozenLinearization:
    first = parts[0]
    for part in parts[1:]:
        if not _same_rule(part.recursion, first.recursion):
            raise NotLinearizable(
                f"the {name} parameter groups follow different update rules "
                f"({first.recursion} and {part.recursion}): the modes do not decouple, and no "
                "single threshold exists; use the critical sharpness."
            )
        if (part.schedule, part.schedule_params) != (first.schedule, first.schedule_params):
            raise NotLinearizable(
                f"the {name} parameters have different step schedules; use the critical sharpness."
            )
    if len(maximize) > 1:
        raise NotLinearizable(f"some {name} groups maximize and others minimize.")
    lr = max(lrs)
    if lr <= 0:
        raise ValueError(f"the {name} learning rate is {lr:g}: nothing moves.")
    notes: list[str] = []
    if any(x != lr for x in lrs):
        if first.schedule != "constant":
            raise NotLinearizable(
                f"the {name} parameter groups have different learning rates and a "
                "learning-rate-dependent step schedule; use the critical sharpness."
            )
        notes.append(
            "parameter groups have different learning rates: their ratios to the largest "
            f"({lr:g}) are folded into the preconditioner, and scale with it."
        )
    device, dtype = space.device, space.dtype
    diagonals = []
    for part, size, group_lr in zip(parts, sizes, lrs, strict=True):
        d = (
            torch.ones(size, dtype=torch.float64, device=device)
            if part.diagonal is None
            else part.diagonal.reshape(-1).to(device)
        )
        diagonals.append(d * (lr / group_lr) if group_lr != lr else d)
    preconditioner = torch.cat(diagonals).to(dtype)
    epsilon = torch.cat(
        [
            torch.as_tensor(part.epsilon, dtype=torch.float64, device=device)
            .reshape(-1)
            .expand(size)
            * (lr / group_lr)
            for part, size, group_lr in zip(parts, sizes, lrs, strict=True)
        ]
    ).to(dtype)
    if all(p.diagonal is None for p in parts) and all(x == lr for x in lrs):
        preconditioner = None
    if preconditioner is None or not bool((epsilon != 0).any()):
        epsilon = None
    coupled = torch.cat(
        [
            torch.full((s,), p.coupled_decay, dtype=dtype, device=device)
            for p, s in zip(parts, sizes)
        ]
    )
    weight_decay = coupled if bool((coupled != 0).any()) else None
    decoupled = max(p.decoupled_decay for p in parts)
    if any(p.decoupled_decay != decoupled for p in parts):
        notes.append(
            f"decoupled weight decay differs between groups; the largest ({decoupled:g}) is "
            "used, which lowers the threshold by at most a factor (2 - lr*wd)/2 (conservative)."
        )
    steps = {p.step for p in parts if p.step is not None}
    if len(steps) > 1:
        notes.append(f"parameters have taken different numbers of steps ({sorted(steps)}).")
    order = {e: i for i, e in enumerate(_EXACTNESS)}
    exactness = max((p.exactness for p in parts), key=order.__getitem__)
    for part in parts:
        for note in part.notes:
            if note not in notes:
                notes.append(note)
    if True in maximize:
        notes.append("the optimizer maximizes: the limit applies to the Hessian of -L.")
    return FrozenLinearization(
        optimizer=name,
        lr=lr,
        recursion=first.recursion,
        preconditioner=preconditioner,
        epsilon=epsilon,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        schedule=first.schedule,
        schedule_params=first.schedule_params,
        label="optimizer state",
        exactness=exactness,
        maximize=True in maximize,
        step=max(steps) if steps else None,
        notes=tuple(notes),
    )


def _same_rule(a: ModeRecursion, b: ModeRecursion) -> bool:
    pairs = zip(
        (a.momentum, a.gradient_input, a.gradient_weight, a.momentum_weight),
        (b.momentum, b.gradient_input, b.gradient_weight, b.momentum_weight),
        strict=True,
    )
    return all(math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15) for x, y in pairs)
