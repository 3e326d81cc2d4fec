r"""Sharpness and flatness measures of the mean training loss, each with its invariance status.

:func:`sharpness` computes, around the model's current parameters :math:`w`, any of

* ``lambda_max``, ``trace``, ``frobenius``: :math:`\lambda_{\max}(H)`, :math:`\operatorname{tr}H`
  and :math:`\lVert H\rVert_F` of the Hessian. Not invariant.
* ``sam``: :math:`\max_{\lVert\epsilon\rVert_2\le\rho} L(w+\epsilon)-L(w)` (Foret et al.
  2021), optionally m-sharpness. Not invariant.
* ``asam``: the same over :math:`\lVert T_w^{-1}\epsilon\rVert_2\le\rho` with
  :math:`T_w = \operatorname{diag}(|w|)+\eta_0 I` (Kwon et al. 2021). Invariant, up to
  :math:`\eta_0`.
* ``gam``: :math:`\rho\max_{\lVert\delta\rVert_2\le\rho}\lVert\nabla L(w+\delta)\rVert`
  (Zhang et al. 2023). Not invariant.
* ``pacbayes``: :math:`1/\sigma^2` for the largest isotropic Gaussian noise that raises the
  mean loss by at most :math:`\delta` (Jiang et al. 2020). Not invariant.
* ``pacbayes_mag``: :math:`1/\sigma'^2` with noise of standard deviation
  :math:`\sqrt{\sigma'^2 w_j^2+\epsilon^2}`. Invariant, up to :math:`\epsilon`.

"Rescaling" is the function-preserving reparametrisation of Dinh et al. (2017): in a ReLU
network, multiplying layer :math:`l` by :math:`\alpha` and layer :math:`l+1` by
:math:`1/\alpha` leaves every output unchanged but maps the Hessian to
:math:`D^{-1} H D^{-1}`, so every measure marked "not invariant" can be made arbitrarily large or
small at the same function. Every result carries its ``invariant`` flag and ``invariance`` text,
printed next to the number by :meth:`SharpnessResult.table`, and the loss and weight norm are
reported alongside (near zero cross-entropy every curvature measure shrinks: large weights,
small Hessians).

The model is never modified: losses at perturbed parameters go through the
:class:`~landscape.problem.Problem`'s functional calls with a dictionary of new tensors, in
eval mode (flags restored), under the math attention kernel. The mean loss is the weighted
mean over batches of :mod:`landscape.losses` (scored tokens for language models).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from landscape._compat import moved, moved_into
from landscape.batches import batch_size, select_rows
from landscape.linalg._random import as_generator, gaussian
from landscape.linalg.eigen import eigenvalues
from landscape.linalg.trace import frobenius_norm, trace
from landscape.losses import Criterion
from landscape.operators.hessian import HessianOperator
from landscape.params import ParamSpace
from landscape.problem import Problem, as_problem
from landscape.records import Record

__all__ = ["MEASURES", "SharpnessMeasure", "SharpnessResult", "SharpnessSettings", "sharpness"]

MEASURES: tuple[str, ...] = (
    "lambda_max",
    "trace",
    "frobenius",
    "sam",
    "asam",
    "gam",
    "pacbayes",
    "pacbayes_mag",
)
"""Names accepted by ``sharpness(measures=...)``, in their default order."""

_SPECTRAL = ("lambda_max", "trace", "frobenius")
_DINH = "not invariant to layer rescaling (Dinh et al. 2017)"
_MAX_BRACKET = 60  # factor-of-2 expansions when bracketing sigma: a range of 2**60 either way


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharpnessMeasure(Record):
    r"""One sharpness or flatness number, with its invariance status and cost.

    Attributes
    ----------
    name : str
        The measure (one of :data:`MEASURES`).
    value : float
        The number (larger = sharper for every measure, including the PAC-Bayes ones,
        which report :math:`1/\sigma^2`).
    invariant : bool
        Whether the measure is invariant to function-preserving rescaling of the weights
        (possibly only approximately; ``invariance`` says how).
    invariance : str
        What the measure is (or is not) invariant to, and its reference.
    num_passes : int
        Passes over the data used (full-data equivalents).
    num_matvecs : int
        Hessian-vector products used.
    seconds : float
        Wall-clock time.
    details : dict
        Measure-specific extras (one-step value, sigma, residuals, settings, ...).
    stderr : float or None
        Standard error of a stochastic estimate (``trace``, ``frobenius``), else ``None``.
    """

    _renamed: ClassVar[dict[str, str]] = {"num_hvps": "num_matvecs"}

    name: str
    value: float
    invariant: bool
    invariance: str
    num_passes: int
    num_matvecs: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    stderr: float | None = None

    def __float__(self) -> float:
        return self.value


@dataclass(frozen=True)
class SharpnessResult(Record):
    r"""The measures computed by :func:`sharpness`, with the loss and weight norm they refer to.

    Index it by measure name: ``result["sam"].value``.

    Attributes
    ----------
    measures : dict of str to SharpnessMeasure
        One entry per requested measure, in the requested order.
    loss : float
        The mean loss :math:`L(w)` at the model's parameters.
    weight_norm : float
        :math:`\lVert w\rVert_2` of the selected parameters (report it with any sharpness:
        rescaling the weights changes the non-invariant measures).
    num_samples : int
        Number of samples in the data.
    num_params : int
        Number of selected parameters :math:`P`.
    """

    measures: dict[str, SharpnessMeasure]
    loss: float
    weight_norm: float
    num_samples: int
    num_params: int

    def __getitem__(self, name: str) -> SharpnessMeasure:
        if name not in self.measures:
            raise KeyError(
                f"measure {name!r} was not computed; this result has {list(self.measures)}."
            )
        return self.measures[name]

    def __contains__(self, name: object) -> bool:
        return name in self.measures

    def __iter__(self) -> Iterator[str]:
        return iter(self.measures)

    def __len__(self) -> int:
        return len(self.measures)

    @property
    def num_passes(self) -> int:
        """Passes over the data in all (the measures' plus one for the loss)."""
        return 1 + sum(m.num_passes for m in self.measures.values())

    def table(self) -> str:
        """Return the result as a plain-text table, one row per measure with its invariance.

        Returns
        -------
        str
            A header line with the loss, weight norm and sizes, then the table.
        """
        lines = [
            f"loss {self.loss:.6g}   weight norm {self.weight_norm:.6g}   "
            f"samples {self.num_samples}   parameters {self.num_params}",
            f"{'measure':<14}{'value':>13}{'± stderr':>11}  {'invariant':<10}"
            f"{'passes':>7}{'HVPs':>6}{'seconds':>9}  invariance",
        ]
        for m in self.measures.values():
            stderr = "" if m.stderr is None else f"{m.stderr:.2g}"
            lines.append(
                f"{m.name:<14}{m.value:>13.6g}{stderr:>11}  {'yes' if m.invariant else 'no':<10}"
                f"{m.num_passes:>7}{m.num_matvecs:>6}{m.seconds:>9.3f}  {m.invariance}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# -- evaluation at perturbed parameters ------------------------------------------------------------


class _Evaluator:
    """Mean loss, gradient and Hessian-vector products at flat parameter vectors ``w + e``.

    Every evaluation goes through the :class:`~landscape.problem.Problem` at those values
    (:meth:`~landscape.problem.Problem.at`): its one data loop for losses and gradients and
    its Hessian operator for products, so nothing is written into the model and every
    product gets the backend choice, the precision policy and the guard against
    ``@once_differentiable`` functions. ``on`` is the problem (or a data variant of it: the
    subsets of m-sharpness) to average over. A loss that is not finite reads as ``nan``
    (the measures decide what that means).
    """

    def __init__(self, problem: Problem, backend: str) -> None:
        self.problem = problem
        self.space = problem.space
        self.backend = backend
        self.w = problem.parameters_vector()
        self.evaluated = 0.0  # weight evaluated so far (for pass counting)
        self.hvps = 0

    def loss(self, flat: Tensor, on: Problem) -> float:
        """Return the weighted mean loss at ``flat`` over ``on``'s data (``nan`` if not finite).

        Returns
        -------
        float
            The loss.
        """
        self.evaluated += on.total_weight
        return on.at(flat).loss(nonfinite=math.nan)

    def value_and_grad(self, flat: Tensor, on: Problem) -> tuple[float, Tensor]:
        """Return the mean loss and its gradient at ``flat`` (``nan`` loss if not finite).

        Returns
        -------
        tuple of (float, Tensor)
            The loss (float64) and the flat gradient (the parameters' dtype).
        """
        self.evaluated += on.total_weight
        try:
            return on.at(flat).value_and_grad()
        except FloatingPointError:
            return math.nan, torch.full_like(flat, math.nan)

    def hvp(self, flat: Tensor, v: Tensor, on: Problem) -> Tensor:
        r"""Return :math:`H(w + \epsilon)\, v` for the mean loss over ``on``'s data.

        Returns
        -------
        Tensor
            The flat product.
        """
        self.evaluated += on.total_weight
        self.hvps += 1
        return HessianOperator(on.at(flat), backend=self.backend) @ v


def _subset_problems(problem: Problem, m: int) -> list[Problem]:
    """Split every batch into consecutive subsets of ``m`` samples (the last may be smaller).

    Returns
    -------
    list of Problem
        One problem per subset of positive weight; subsets never span two batches.
    """
    out = []
    for batch in problem.batches():
        n = batch_size(batch.data)
        for start in range(0, n, m):
            part = select_rows(batch.data, slice(start, min(start + m, n)), n)
            if problem.objective.weight(part) > 0:
                out.append(problem.with_data(part, cache=True, shard=False))
    return out


def _unit(v: Tensor) -> tuple[Tensor, float]:
    norm = float(torch.linalg.vector_norm(v))
    return (v / norm if norm > 0 else v), norm


def _random_unit(space: ParamSpace, generator: torch.Generator) -> Tensor:
    z = gaussian(space.dim, 1, generator, dtype=space.dtype, device=space.device)[:, 0]
    return z / torch.linalg.vector_norm(z)


def _check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{what} is {value}; check the data and the model, or lower the perturbation "
            "radius (rho) if the loss overflows at perturbed parameters."
        )


# -- SAM / ASAM ------------------------------------------------------------------------------------


def _adversarial(
    ev: _Evaluator,
    on: Problem,
    scale: Tensor | None,
    rho: float,
    steps: int,
    generator: torch.Generator,
    name: str,
) -> dict[str, Any]:
    r"""Maximize :math:`L(w + T\tilde\epsilon) - L(w)` over the ball of radius :math:`\rho`.

    :math:`T` is ``diag(scale)`` (the identity for SAM). Starting from the first-order
    maximizer :math:`\tilde\epsilon_0 = \rho\, Tg/\lVert Tg\rVert`, each step moves to the
    maximizer of the linearization at the current point over the ball,
    :math:`\tilde\epsilon_{t+1} = \rho\, T g_t/\lVert T g_t\rVert` with
    :math:`g_t = \nabla L(w + T\tilde\epsilon_t)`.

    Returns
    -------
    dict
        ``one_step``, ``value`` (best seen), ``history`` (each iterate's increase),
        ``start`` and ``grad_norm`` (of :math:`g` at :math:`w`).
    """
    w = ev.w
    loss0, g = ev.value_and_grad(w, on)
    _check_finite(loss0, f"{name}: the loss at the model's parameters")
    grad_norm = float(torch.linalg.vector_norm(g))
    direction, norm = _unit(g if scale is None else scale * g)
    start = "gradient"
    if norm == 0:  # an exact stationary point: no first-order direction
        direction, start = _random_unit(ev.space, generator), "random (zero gradient)"
    eps = rho * direction if scale is None else scale * (rho * direction)
    history = []
    for t in range(steps + 1):
        if t == steps:
            loss = ev.loss(w + eps, on)
        else:
            loss, g = ev.value_and_grad(w + eps, on)
        _check_finite(loss, f"{name}: the loss at a perturbed point (rho={rho:g})")
        history.append(loss - loss0)
        if t == steps:
            break
        direction, norm = _unit(g if scale is None else scale * g)
        if norm == 0:  # a stationary point of L: no ascent direction to follow
            break
        eps = rho * direction if scale is None else scale * (rho * direction)
    one_step = history[0] if start == "gradient" else 0.0
    return {
        "value": max([one_step, *history]),
        "one_step": one_step,
        "history": history,
        "start": start,
        "grad_norm": grad_norm,
    }


def _sharpness_measure(
    ev: _Evaluator,
    scale: Tensor | None,
    rho: float,
    steps: int,
    m: int | None,
    generator: torch.Generator,
    name: str,
) -> tuple[float, dict[str, Any]]:
    if m is None:
        out = _adversarial(ev, ev.problem, scale, rho, steps, generator, name)
        details = {
            "one_step": out["one_step"],
            "ascent": out["value"],
            "history": out["history"],
            "start": out["start"],
            "grad_norm": out["grad_norm"],
        }
        return out["value"], details
    parts = _subset_problems(ev.problem, m)
    total = sum(part.total_weight for part in parts)
    value = one_step = 0.0
    random_starts = 0
    for part in parts:
        w = part.total_weight
        out = _adversarial(ev, part, scale, rho, steps, generator, name)
        value += w * out["value"] / total
        one_step += w * out["one_step"] / total
        random_starts += out["start"] != "gradient"
    details = {
        "one_step": one_step,
        "ascent": value,
        "num_subsets": len(parts),
        "random_starts": random_starts,
    }
    return value, details


def _asam_scale(
    ev: _Evaluator, eta: float, normalize: Literal["weights", "all"]
) -> tuple[Tensor, list[str]]:
    parts, normalized = [], []
    for name, w in ev.space.unflatten(ev.w).items():
        if normalize == "all" or "weight" in name:
            parts.append(w.abs().reshape(-1) + eta)
            normalized.append(name)
        else:
            parts.append(torch.ones_like(w).reshape(-1))
    return torch.cat(parts), normalized


# -- GAM -------------------------------------------------------------------------------------------


def _gam(
    ev: _Evaluator, rho: float, steps: int, generator: torch.Generator
) -> tuple[float, dict[str, Any]]:
    w, on = ev.w, ev.problem
    loss0, g = ev.value_and_grad(w, on)
    _check_finite(loss0, "gam: the loss at the model's parameters")
    norms = [float(torch.linalg.vector_norm(g))]
    delta = torch.zeros_like(w)
    start = "Hg"
    for t in range(steps):
        if norms[-1] == 0 and t == 0:  # exact stationary point: Hg = 0, use a random direction
            direction, start = _random_unit(ev.space, generator), "random (zero gradient)"
        else:
            direction, norm = _unit(ev.hvp(w + delta, g, on))
            if norm == 0:
                break
        delta = rho * direction
        loss, g = ev.value_and_grad(w + delta, on)
        _check_finite(loss, f"gam: the loss at a perturbed point (rho={rho:g})")
        norms.append(float(torch.linalg.vector_norm(g)))
    details = {
        "grad_norm": norms[0],
        "max_grad_norm": max(norms),
        "grad_norms": norms,
        "start": start,
    }
    return rho * max(norms), details


# -- PAC-Bayes -------------------------------------------------------------------------------------


class _Noise:
    """``K`` fixed standard-normal draws of dimension ``P``, regenerated from per-draw seeds.

    Draw ``k`` is ``gaussian(P, 1, torch.Generator().manual_seed(seeds[k]))``: common random
    numbers for every sigma, without holding ``K x P`` numbers when that would be large.
    """

    _CACHE_LIMIT = 2**24  # entries kept in memory (K * P); beyond, draws are regenerated

    def __init__(self, space: ParamSpace, num: int, generator: torch.Generator) -> None:
        self.space = space
        self.seeds = [int(s) for s in torch.randint(0, 2**62, (num,), generator=generator)]
        self._cache: list[Tensor] | None = None
        if num * space.dim <= self._CACHE_LIMIT:
            self._cache = [self._draw(s) for s in self.seeds]

    def _draw(self, seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        return gaussian(
            self.space.dim, 1, generator, dtype=self.space.dtype, device=self.space.device
        )[:, 0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._cache is not None:
            yield from self._cache
        else:
            for seed in self.seeds:
                yield self._draw(seed)


def _pacbayes(
    ev: _Evaluator,
    loss0: float,
    target: float,
    num_samples: int,
    steps: int,
    generator: torch.Generator,
    magnitude_eps: float | None,
) -> tuple[float, dict[str, Any]]:
    w = ev.w
    noise = _Noise(ev.space, num_samples, generator)
    evaluations = 0

    def increase(sigma: float) -> float:
        nonlocal evaluations
        evaluations += 1
        if magnitude_eps is None:
            std: Tensor | float = sigma
        else:
            std = torch.sqrt(sigma**2 * w**2 + magnitude_eps**2)
        total = 0.0
        for z in noise:
            value = ev.loss(w + std * z, ev.problem)
            if not math.isfinite(value):  # overflow at large sigma: more than any target
                return math.inf
            total += value
        return total / num_samples - loss0

    # Bracket: lo satisfies the target, hi exceeds it (factor 2 apart), then bisect in log-space.
    rms = float(torch.linalg.vector_norm(w)) / math.sqrt(w.numel())
    sigma = (0.01 * rms if rms > 0 else 0.01) if magnitude_eps is None else 0.05
    lo: float | None
    hi: float | None
    if increase(sigma) <= target:
        lo, hi = sigma, None
        for _ in range(_MAX_BRACKET):
            if increase(2 * lo) > target:
                hi = 2 * lo
                break
            lo *= 2
    else:
        lo, hi = None, sigma
        for _ in range(_MAX_BRACKET):
            if increase(hi / 2) <= target:
                lo = hi / 2
                break
            hi /= 2
    note = None
    if hi is None:
        note = "the target was never exceeded: sigma is only a lower bound"
    elif lo is None:
        note = "even the smallest sigma tried exceeds the target"
    else:
        for _ in range(steps):
            mid = math.sqrt(lo * hi)
            if increase(mid) <= target:
                lo = mid
            else:
                hi = mid
    sigma = lo if lo is not None else 0.0
    value = 1.0 / sigma**2 if sigma > 0 else math.inf
    details: dict[str, Any] = {
        "sigma": sigma,
        "sigma_upper": hi if hi is not None else math.inf,
        "target": target,
        "num_samples": num_samples,
        "search_steps": steps,
        "loss_evaluations": evaluations,
        "noise_seeds": noise.seeds,
    }
    if magnitude_eps is not None:
        details["epsilon"] = magnitude_eps
    if note is not None:
        details["note"] = note
    return value, details


# -- invariance texts ------------------------------------------------------------------------------


def _invariance(name: str, settings: SharpnessSettings) -> tuple[bool, str]:
    eta, eps = settings.asam_eta, settings.pacbayes_eps
    if name in ("lambda_max", "trace", "frobenius"):
        return False, f"{_DINH}: H -> D^-1 H D^-1"
    if name == "sam":
        return False, f"{_DINH}: fixed Euclidean rho-ball"
    if name == "gam":
        return False, f"{_DINH}: fixed Euclidean rho-ball"
    if name == "pacbayes":
        return False, f"{_DINH}: isotropic noise"
    if name == "asam":
        text = "invariant to per-weight and per-filter rescaling (Kwon et al. 2021)"
        text += f", up to the eta0={eta:g} term" if eta > 0 else ", exactly (eta0=0)"
        if settings.asam_normalize == "weights":
            text += "; biases use T=1, so rescalings that also scale biases break it"
        return True, text
    text = "invariant to per-weight rescaling (Jiang et al. 2020)"
    text += f", up to the eps={eps:g} noise floor" if eps > 0 else ", exactly (eps=0)"
    return True, text


# -- dispatch --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharpnessSettings(Record):
    r"""The settings of the sharpness measures (see :func:`sharpness` for what each means).

    Attributes
    ----------
    rho : float
        SAM radius :math:`\rho` (and GAM's unless ``gam_rho``).
    asam_rho : float
        ASAM radius in normalized coordinates (0.5, as in the authors' code).
    asam_eta : float
        :math:`\eta_0` of :math:`T_w` (0 for exact invariance).
    asam_normalize : {"weights", "all"}
        Which parameters ASAM normalizes by their magnitude.
    gam_rho : float or None
        GAM radius (default ``rho``).
    ascent_steps : int
        Projected-ascent steps after the one-step perturbation, for SAM and ASAM (0: the
        one-step value only).
    gam_steps : int
        Ascent steps on the gradient norm (1: the paper's approximation).
    m : int or None
        Subset size for m-sharpness (SAM and ASAM); ``None`` uses all the data.
    pacbayes_target : float
        :math:`\delta`, the allowed increase of the mean loss.
    pacbayes_samples : int
        Monte-Carlo noise draws per :math:`\sigma` (each one pass over the data).
    pacbayes_steps : int
        Bisection steps after bracketing.
    pacbayes_eps : float
        :math:`\epsilon` of the magnitude-aware noise (0 for exact invariance).
    lanczos_tol : float
        Relative residual tolerance for ``lambda_max``.
    trace_matvecs : int
        Hutch++ products for ``trace``.
    frobenius_matvecs : int
        Probes for ``frobenius``.

    Raises
    ------
    ValueError
        For non-positive radii or targets, negative ``asam_eta``/``pacbayes_eps``, counts
        out of range or an unknown ``asam_normalize``.
    TypeError
        For non-numeric radii or non-integer counts.

    Examples
    --------
    >>> SharpnessSettings(rho=0.1).gam_radius
    0.1
    """

    rho: float = 0.05
    asam_rho: float = 0.5
    asam_eta: float = 0.01
    asam_normalize: Literal["weights", "all"] = "weights"
    gam_rho: float | None = None
    ascent_steps: int = 10
    gam_steps: int = 1
    m: int | None = None
    pacbayes_target: float = 0.1
    pacbayes_samples: int = 10
    pacbayes_steps: int = 15
    pacbayes_eps: float = 1e-3
    lanczos_tol: float = 1e-5
    trace_matvecs: int = 99
    frobenius_matvecs: int = 30

    def __post_init__(self) -> None:
        for label in ("asam_eta", "pacbayes_eps"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{label} must be a number; got {type(value).__name__}.")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be non-negative and finite; got {value}.")
        if self.asam_normalize not in ("weights", "all"):
            raise ValueError(
                f"asam_normalize must be 'weights' or 'all'; got {self.asam_normalize!r}."
            )
        for label in ("rho", "asam_rho", "pacbayes_target", "lanczos_tol"):
            _positive(label, getattr(self, label))
        if self.gam_rho is not None:
            _positive("gam_rho", self.gam_rho)
        for label, minimum in (
            ("ascent_steps", 0),
            ("gam_steps", 1),
            ("pacbayes_samples", 1),
            ("pacbayes_steps", 0),
            ("trace_matvecs", 3),
            ("frobenius_matvecs", 1),
        ):
            _integer(label, getattr(self, label), minimum)
        if self.m is not None:
            _integer("m", self.m, 1)

    @property
    def gam_radius(self) -> float:
        """GAM's radius: ``gam_rho``, or ``rho``."""
        return float(self.rho if self.gam_rho is None else self.gam_rho)


def _spectral(
    H: Any, name: str, settings: SharpnessSettings, generator: torch.Generator
) -> tuple[float, float | None, int, int, dict[str, Any]]:
    if name == "lambda_max":
        pairs = eigenvalues(H, k=1, which="largest", tol=settings.lanczos_tol, seed=generator)
        details: dict[str, Any] = {
            "residual": float(pairs.residuals[0]),
            "converged": bool(pairs.converged[0]),
            "tol": settings.lanczos_tol,
        }
        return float(pairs.values[0]), None, pairs.num_passes, pairs.num_matvecs, details
    if name == "trace":
        est = trace(H, method="hutch++", num_matvecs=settings.trace_matvecs, seed=generator)
        details = {"method": est.method, "mean_eigenvalue": est.value / H.shape[0]}
    else:
        est = frobenius_norm(H, num_matvecs=settings.frobenius_matvecs, seed=generator)
        details = {"method": est.method}
    return est.value, est.stderr, est.num_passes, est.num_matvecs, details


def _perturbation(
    ev: _Evaluator,
    name: str,
    settings: SharpnessSettings,
    generator: torch.Generator,
    loss: float,
) -> tuple[float, dict[str, Any]]:
    s = settings
    if name == "sam":
        value, details = _sharpness_measure(ev, None, s.rho, s.ascent_steps, s.m, generator, name)
        details.update(rho=s.rho, ascent_steps=s.ascent_steps, m=s.m)
    elif name == "asam":
        scale, normalized = _asam_scale(ev, s.asam_eta, s.asam_normalize)
        if not normalized:
            warnings.warn(
                "asam: no selected parameter has 'weight' in its name, so T_w = I and ASAM "
                "reduces to SAM with radius asam_rho; pass asam_normalize='all' to normalize "
                "every parameter.",
                stacklevel=3,
            )
        value, details = _sharpness_measure(
            ev, scale, s.asam_rho, s.ascent_steps, s.m, generator, name
        )
        details.update(
            rho=s.asam_rho,
            eta=s.asam_eta,
            normalize=s.asam_normalize,
            normalized_params=normalized,
            ascent_steps=s.ascent_steps,
            m=s.m,
        )
    elif name == "gam":
        value, details = _gam(ev, s.gam_radius, s.gam_steps, generator)
        details.update(rho=s.gam_radius, steps=s.gam_steps)
    else:
        eps = s.pacbayes_eps if name == "pacbayes_mag" else None
        value, details = _pacbayes(
            ev, loss, s.pacbayes_target, s.pacbayes_samples, s.pacbayes_steps, generator, eps
        )
    return value, details


# -- the entry point -------------------------------------------------------------------------------


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}.")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite; got {value}.")
    return value


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return value


def _measure_names(measures: str | Iterable[str]) -> list[str]:
    names = [measures] if isinstance(measures, str) else list(measures)
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ValueError(
            f"unknown sharpness measure(s) {unknown}; valid measures are {list(MEASURES)}."
        )
    if not names:
        raise ValueError(f"measures is empty; choose from {list(MEASURES)}.")
    return list(dict.fromkeys(names))


def _sub_generator(base: int, name: str) -> torch.Generator:
    # One generator per measure: its numbers do not depend on which other measures ran.
    return torch.Generator().manual_seed((base * 1_000_003 + MEASURES.index(name)) % 2**63)


@moved(
    **moved_into(
        "settings=ls.SharpnessSettings", "",
        "rho", "asam_rho", "asam_eta", "asam_normalize", "gam_rho", "ascent_steps",
        "gam_steps", "m", "pacbayes_target", "pacbayes_samples", "pacbayes_steps",
        "pacbayes_eps", "lanczos_tol", "trace_matvecs", "frobenius_matvecs",
    )
)  # fmt: skip
def sharpness(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    measures: str | Sequence[str] = MEASURES,
    settings: SharpnessSettings | None = None,
    seed: int | torch.Generator | None = 0,
    progress: bool = False,
    backend: str = "auto",
    **options: Any,
) -> SharpnessResult:
    r"""Measure the sharpness (or flatness) of the mean training loss around the model's weights.

    :math:`L(w) = \sum_b w_b L_b(w) / \sum_b w_b` is the mean loss over ``data`` (batches
    weighted by samples, or scored tokens; see :mod:`landscape.losses`) at the model's
    parameters :math:`w` (the selected ones; the rest stay fixed), :math:`g = \nabla L(w)`
    and :math:`H = \nabla^2 L(w)`, in eval mode (dropout off, BatchNorm on running
    statistics). Each measure reports whether it is invariant to the function-preserving
    rescalings of Dinh et al. (2017) (see the module docstring).

    **Spectral** (not invariant). ``lambda_max``: :math:`\lambda_{\max}(H)` by restarted
    Lanczos (:func:`landscape.eigenvalues`, residual in ``details``); ``trace``:
    :math:`\operatorname{tr} H` by Hutch++ (:func:`landscape.trace`, with ``stderr``; exact
    when ``trace_matvecs >= 3P``); ``frobenius``: :math:`\lVert H\rVert_F =
    \sqrt{\mathbb E\lVert Hz\rVert^2}` (:func:`landscape.frobenius_norm`).

    **SAM sharpness** (Foret et al. 2021), not invariant:

    .. math::
        S_\rho(w) = \max_{\lVert\epsilon\rVert_2 \le \rho} L(w+\epsilon) - L(w),
        \qquad \hat\epsilon = \rho\,\frac{g}{\lVert g\rVert_2} .

    ``details["one_step"]`` is :math:`L(w+\hat\epsilon) - L(w)`; ``value`` is the best of it
    and ``ascent_steps`` steps of projected gradient ascent started from :math:`\hat\epsilon`,
    each with an unbounded step (the projection of :math:`\epsilon_t + s\nabla L(w+\epsilon_t)`
    onto the ball as :math:`s\to\infty`), i.e. the maximizer of the linearization at the
    current point: :math:`\epsilon_{t+1} = \rho\,\nabla L(w+\epsilon_t)/\lVert\nabla
    L(w+\epsilon_t)\rVert`. Its fixed points are the boundary KKT points of the
    trust-region problem; on a quadratic at its minimum it is power iteration on :math:`H`,
    so it reaches :math:`\tfrac12\rho^2\lambda_{\max}(H)` geometrically (at rate
    :math:`(\lambda_2/\lambda_1)^2` when :math:`H \succeq 0`). The value is a lower bound on
    :math:`S_\rho` and at least the one-step value. At an exact stationary point
    (:math:`g = 0`) :math:`\hat\epsilon = 0`, the one-step value is 0 and the ascent starts
    from a random direction (``details["start"]``). With ``m``, this is **m-sharpness**:
    every batch is cut into consecutive subsets :math:`S_j` of ``m`` samples (a subset never
    spans two batches), each gets its own :math:`\epsilon_j`, and the value is
    :math:`\frac1W\sum_j w_{S_j}\max_{\lVert\epsilon_j\rVert\le\rho} [L_{S_j}(w+\epsilon_j) -
    L_{S_j}(w)]` with :math:`w_{S_j}` the subset's weight (Foret et al., Section 4.1).

    **ASAM adaptive sharpness** (Kwon et al. 2021), invariant:

    .. math::
        S^{\mathrm{adap}}_\rho(w) = \max_{\lVert T_w^{-1}\epsilon\rVert_2 \le \rho}
        L(w+\epsilon) - L(w), \qquad T_w = \operatorname{diag}(|w|) + \eta_0 I,
        \qquad \hat\epsilon = \rho\,\frac{T_w^2 g}{\lVert T_w g\rVert_2} ,

    computed as SAM in the coordinates :math:`\tilde\epsilon = T_w^{-1}\epsilon` (radius
    ``asam_rho``, default 0.5 as in the authors' code). With
    ``asam_normalize="weights"`` (default, as in the authors' code) only parameters whose
    name contains ``"weight"`` (linear, convolution, embedding and normalization-layer
    weights) get :math:`|w_j| + \eta_0`; the others (biases) get :math:`T = 1`.
    ``"all"`` normalizes every parameter. For any :math:`w' = Dw` with :math:`D` diagonal and
    positive that preserves the function, :math:`S^{\mathrm{adap}}` (and every ascent
    iterate) is unchanged when :math:`\eta_0 = 0` and every rescaled parameter is normalized;
    :math:`\eta_0 > 0` breaks this for weights comparable to :math:`\eta_0`.

    **GAM first-order flatness** (Zhang et al. 2023), not invariant:

    .. math::
        R^{(1)}_\rho(w) = \rho \max_{w' \in B(w,\rho)} \lVert\nabla L(w')\rVert_2 ,

    approximated as in the paper by one ascent step on :math:`\lVert\nabla L\rVert`, whose
    gradient is :math:`Hg/\lVert g\rVert`: :math:`\delta = \rho\,Hg/\lVert Hg\rVert` (one
    HVP), then :math:`\lVert\nabla L(w+\delta)\rVert`. ``gam_steps > 1`` repeats the step
    from the new point (the same full-step rule as SAM's ascent); the value uses the largest
    gradient norm seen, :math:`w` included. Radius ``gam_rho`` (default ``rho``). At a
    minimum, :math:`R^{(1)}_\rho \approx \rho^2\lambda_{\max}(H)`, which bounds SAM's
    :math:`\tfrac12\rho^2\lambda_{\max}`; at an exact stationary point the first step takes
    a random direction.

    **PAC-Bayes flatness** (Jiang et al. 2020, "pacbayes.flatness"), not invariant: the
    largest :math:`\sigma` with

    .. math::
        \mathbb E_{u\sim\mathcal N(0,\sigma^2 I)}\big[L(w+u)\big] - L(w) \le \delta ,

    reported as :math:`1/\sigma^2` (``details["sigma"]``). **Magnitude-aware**
    ("pacbayes.mag.flatness"), invariant: :math:`u_j \sim \mathcal N(0, \sigma'^2 w_j^2 +
    \epsilon^2)` with :math:`\epsilon` = ``pacbayes_eps`` (1e-3), reported as
    :math:`1/\sigma'^2`. The expectation uses ``pacbayes_samples`` fixed noise draws (common
    random numbers, so the search is deterministic); :math:`\sigma` is bracketed by factors
    of 2 and refined by ``pacbayes_steps`` steps of bisection in :math:`\log\sigma` (relative
    precision :math:`2^{2^{-s}} - 1`, 2e-5 for 15 steps), returning the end that satisfies
    the bound. At a minimum where the loss is convex along the draws, the increase grows
    with :math:`\sigma` and the crossing is unique; elsewhere one crossing is returned.
    Near a minimum :math:`\mathbb E[L(w+u)] - L(w) \approx \tfrac12\sigma^2
    \operatorname{tr}H`, so :math:`1/\sigma^2 \approx \operatorname{tr}H / (2\delta)`.
    Jiang et al. target a deviation of 0.1 in the *training error*; the reimplementation of
    their measures by Dziugaite et al. (2020) bisects :math:`\sigma \in [0, 2]` (15 steps, 10
    Monte-Carlo draws) until the training accuracy moves by 0.1. Here :math:`\delta` =
    ``pacbayes_target`` bounds the increase of the mean *loss* (defined for regression too),
    so the values are not on the same scale as theirs.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified: parameters,
        buffers, ``.grad``, ``requires_grad`` and train/eval flags are bitwise as before)
        with its data and loss, as for :func:`landscape.hessian`. Only the problem's
        selected parameters are perturbed and differentiated (the rest stay fixed).
    measures : str or sequence of str, optional
        Any of :data:`MEASURES` (default: all), computed in the given order.
    settings : SharpnessSettings, optional
        Radii, steps and sample counts of the measures (default: ``SharpnessSettings()``).
    seed : int or torch.Generator, optional
        Randomness (probes, noise, random starts). Each measure draws from its own generator
        derived from the seed, so its numbers do not depend on the other measures requested.
    progress : bool, optional
        Show a tqdm progress bar over the measures.
    backend, **options
        The Hessian backend and the problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    SharpnessResult
        ``result["sam"].value``, ``.invariant``, ``.invariance``, ``.num_passes``,
        ``.num_matvecs``, ``.seconds``, ``.details``; ``result.loss``, ``result.weight_norm``,
        ``result.table()``, ``result.to_dict()``.

    Raises
    ------
    ValueError
        For unknown measure names (the message lists the valid ones), non-positive radii or
        targets, negative ``asam_eta``/``pacbayes_eps``, or counts out of range.
    TypeError
        For non-numeric radii or non-integer counts.
    FloatingPointError
        If the loss at the model's parameters (naming the first batch where it is not
        finite) or at a SAM/ASAM/GAM perturbation is not finite. (A non-finite loss under
        PAC-Bayes noise counts as exceeding the target.)

    References
    ----------
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-aware minimization for
    efficiently improving generalization", ICLR 2021, arXiv:2010.01412.
    J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive sharpness-aware minimization for
    scale-invariant learning of deep neural networks", ICML 2021, arXiv:2102.11600.
    X. Zhang, R. Xu, H. Yu, H. Zou, P. Cui, "Gradient norm aware minimization seeks
    first-order flatness and improves generalization", CVPR 2023, arXiv:2303.03108.
    Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio, "Fantastic generalization
    measures and where to find them", ICLR 2020, arXiv:1912.02178.
    G. K. Dziugaite et al., "In search of robust measures of generalization", NeurIPS 2020,
    arXiv:2010.11924.
    L. Dinh, R. Pascanu, S. Bengio, Y. Bengio, "Sharp minima can generalize for deep nets",
    ICML 2017, arXiv:1703.04933.

    Examples
    --------
    Least squares at its minimum: :math:`L(w) = \tfrac12 (w-w^*)^\top A (w-w^*)` with
    :math:`A = \tfrac{2}{N}X^\top X = \operatorname{diag}(4, 1)`, so SAM's maximum over the
    :math:`\rho`-ball is :math:`\tfrac12\rho^2\lambda_{\max} = 2\rho^2`:

    >>> X = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    >>> model = nn.Linear(2, 1, bias=False).double()
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    >>> y = X @ torch.tensor([[1.0], [-1.0]], dtype=torch.float64)  # zero residual
    >>> settings = SharpnessSettings(rho=0.1)
    >>> r = sharpness(model, (X, y), measures=("lambda_max", "sam"), settings=settings)
    >>> round(r["lambda_max"].value, 6), round(r["sam"].value, 6), r["sam"].details["one_step"]
    (4.0, 0.02, 0.0)
    >>> r["sam"].invariant, r["sam"].invariance
    (False, 'not invariant to layer rescaling (Dinh et al. 2017): fixed Euclidean rho-ball')
    """
    names = _measure_names(measures)
    settings = SharpnessSettings() if settings is None else settings
    problem = as_problem(problem, data, loss_fn, where="sharpness", **options)
    problem = problem.with_data(shard=False)
    space = problem.space
    ev = _Evaluator(problem, backend)
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool)):
        base = 0 if seed is None else seed
    else:
        base = int(torch.randint(0, 2**62, (1,), generator=as_generator(seed)))
    try:
        loss = problem.loss()
    except FloatingPointError as error:  # names the batch
        where = str(error).replace("the loss is", "the loss at the model's parameters is")
        raise FloatingPointError(f"{where}; check the data and the model.") from None
    num_samples = problem.num_samples
    H = None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc="sharpness", unit="measure", leave=False)
    results: dict[str, SharpnessMeasure] = {}
    try:
        for name in names:
            if bar is not None:
                bar.set_postfix_str(name)
            generator = _sub_generator(base, name)
            started = time.perf_counter()
            if name in _SPECTRAL:
                if H is None:
                    H = HessianOperator(problem, backend=backend)
                value, stderr, passes, hvps, details = _spectral(H, name, settings, generator)
            else:
                before_weight, before_hvps = ev.evaluated, ev.hvps
                value, details = _perturbation(ev, name, settings, generator, loss)
                stderr = None
                passes = round((ev.evaluated - before_weight) / problem.total_weight)
                hvps = ev.hvps - before_hvps
            invariant, invariance = _invariance(name, settings)
            results[name] = SharpnessMeasure(
                name=name,
                value=float(value),
                invariant=invariant,
                invariance=invariance,
                num_passes=int(passes),
                num_matvecs=int(hvps),
                seconds=time.perf_counter() - started,
                details=details,
                stderr=stderr,
            )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SharpnessResult(
        measures=results,
        loss=loss,
        weight_norm=float(torch.linalg.vector_norm(ev.w.double())),
        num_samples=num_samples,
        num_params=space.dim,
    )
