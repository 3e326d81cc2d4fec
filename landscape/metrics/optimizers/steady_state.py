r"""Adam without its state: the steady-state preconditioner, and where it says nothing.

When no optimizer state is available (a checkpoint without it, or no optimizer passed), the
preconditioner Adam *would* have if it sat at this point with random batches of :math:`B` of
the :math:`n` samples is its stationary second moment,
:math:`v_\infty = \mathbb{E}[g_B^2] = G^2 + p_B\,\sigma^2` per coordinate, with the mean
:math:`G` and variance :math:`\sigma^2` of the per-example gradients and
:math:`p_B = (n-B)/(B(n-1))` (sampling without replacement), so

.. math::
    P_B = \mathrm{diag}\Big(\sqrt{G^2 + p_B\,\sigma^2} + \epsilon\Big)

(bias corrections → 1; the square-root scaling argument of Granziol et al. 2022). It matches
the state of an Adam run at a negligible learning rate equilibrated at the same point.

**When it says nothing.** The two parts of :math:`v_\infty` are different in kind. The noise
part :math:`p_B\sigma^2` is a property of the data at this point, which Adam's steps do not
remove. The mean part :math:`G^2` is not: near a minimum :math:`G` is set by the distance to
the minimum, which Adam's own steps decide — full-batch Adam raises :math:`v` whenever it
oscillates and settles at the edge of stability for *any* learning rate (Cohen et al. 2022),
and as :math:`G \to 0` the frozen :math:`P_B \to \epsilon` and its threshold to 0. So on the
top preconditioned direction :math:`u` (the eigenvector of
:math:`P_B^{-1/2} H P_B^{-1/2}` that sets the threshold), with weights :math:`u_i^2`, the
preconditioner is split into its shares

.. math::
    \text{noise}_i = \frac{\sqrt{v_i}}{P_i}\,\frac{p_B\sigma_i^2}{v_i}, \quad
    \text{mean}_i = \frac{\sqrt{v_i}}{P_i}\,\frac{G_i^2}{v_i}, \quad
    \epsilon_i = \frac{\epsilon}{P_i},

and **no number** is given when the noise share is below one half and either :math:`\epsilon`
carries at least half of :math:`P` or the point is near a minimum — the mean gradient within
its own sampling error of zero, :math:`\lVert G\rVert^2 \le \operatorname{tr}\sigma^2 / n`.
At :math:`B = n` there is no noise part at all. Elsewhere a number is given, with a note when
the mean part dominates.

The label of every number names its preconditioner: ``"steady state at batch size B at this
point"``, not an optimizer's state. A real run's state remembers larger gradients from
earlier training, so its thresholds are typically several times higher than the steady
state's at the same point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from landscape.metrics.optimizers.frozen import FrozenLinearization
from landscape.metrics.optimizers.recursion import ModeRecursion
from landscape.metrics.optimizers.stability import frozen_stability
from landscape.metrics.thresholds import OptimizerSettings
from landscape.operators.base import LinearOperator
from landscape.records import Record

__all__ = [
    "PreconditionerShares",
    "SteadyStateStability",
    "preconditioner_shares",
    "says_nothing",
    "steady_state_linearization",
    "steady_state_note",
    "steady_state_preconditioner",
    "steady_state_stability",
]


def _noise_factor(batch_size: int, num_samples: int) -> float:
    if batch_size >= num_samples:
        return 0.0
    return (num_samples - batch_size) / (batch_size * (num_samples - 1))


def _second_moment(mean: Tensor, variance: Tensor, batch_size: int, num_samples: int) -> Tensor:
    if mean.shape != variance.shape:
        raise ValueError(
            f"mean and variance must have one shape; got {tuple(mean.shape)} and "
            f"{tuple(variance.shape)}."
        )
    if batch_size < 1 or num_samples < 1:
        raise ValueError(
            f"batch_size and num_samples must be positive; got {batch_size} and {num_samples}."
        )
    return mean.square() + _noise_factor(batch_size, num_samples) * variance


def steady_state_preconditioner(
    mean: Tensor, variance: Tensor, batch_size: int, num_samples: int, *, eps: float = 1e-8
) -> Tensor:
    r"""Return Adam's steady-state preconditioner :math:`\sqrt{G^2 + p_B\sigma^2} + \epsilon`.

    Parameters
    ----------
    mean, variance : Tensor
        Per-coordinate mean and variance of the per-example gradients (flat).
    batch_size : int
        :math:`B`.
    num_samples : int
        :math:`n` (random batches are drawn without replacement from them).
    eps : float, optional
        Adam's :math:`\epsilon`.

    Returns
    -------
    Tensor
        The diagonal :math:`P_B`.

    Examples
    --------
    >>> G, var = torch.tensor([0.0, 3.0]), torch.tensor([8.0, 0.0])
    >>> steady_state_preconditioner(G, var, 2, 5, eps=0.0)   # p_B = 3/8
    tensor([1.7321, 3.0000])
    """
    return _second_moment(mean, variance, batch_size, num_samples).sqrt() + eps


@dataclass(frozen=True)
class PreconditionerShares(Record):
    r"""What the steady-state preconditioner rests on, along the direction that matters.

    Attributes
    ----------
    noise : float
        Share of :math:`P_B` from gradient noise :math:`p_B\sigma^2` (weighted by the top
        direction).
    mean : float
        Share from the mean gradient :math:`G^2`.
    eps : float
        Share from :math:`\epsilon`. The three sum to 1.
    gradient_snr : float
        :math:`\lVert G\rVert^2 / (\operatorname{tr}\sigma^2/n)`: the squared mean gradient
        over its sampling variance (:math:`\le 1`: indistinguishable from a minimum).
    """

    noise: float
    mean: float
    eps: float
    gradient_snr: float


def preconditioner_shares(
    mean: Tensor,
    variance: Tensor,
    batch_size: int,
    num_samples: int,
    *,
    eps: float = 1e-8,
    direction: Tensor | None = None,
) -> PreconditionerShares:
    r"""Split :math:`P_B` into its noise, mean-gradient and :math:`\epsilon` shares.

    Parameters
    ----------
    mean, variance, batch_size, num_samples, eps
        As for :func:`steady_state_preconditioner`.
    direction : Tensor, optional
        The top eigenvector :math:`u` of :math:`P_B^{-1/2} H P_B^{-1/2}`; the shares are
        weighted by :math:`u_i^2` (default: uniform weights).

    Returns
    -------
    PreconditionerShares
        The shares and the gradient signal-to-noise ratio.

    Examples
    --------
    >>> G, var = torch.tensor([0.0, 1e-3]), torch.tensor([1.0, 1.0])
    >>> s = preconditioner_shares(G, var, 1000, 1000)          # the full batch
    >>> s.noise, round(s.mean + s.eps, 6)
    (0.0, 1.0)
    """
    second = _second_moment(mean, variance, batch_size, num_samples)
    p = _noise_factor(batch_size, num_samples)
    root = second.sqrt()
    P = root + eps
    safe = second.clamp_min(torch.finfo(second.dtype).tiny)
    noise = root / P * (p * variance / safe)
    mean_part = root / P * (mean.square() / safe)
    eps_part = eps / P
    weights = (
        torch.full_like(P, 1.0 / P.numel())
        if direction is None
        else direction.to(P).square() / direction.to(P).square().sum()
    )
    sampling = float(variance.sum()) / num_samples
    signal = float(mean.square().sum())
    return PreconditionerShares(
        noise=float((weights * noise).sum()),
        mean=float((weights * mean_part).sum()),
        eps=float((weights * eps_part).sum()),
        gradient_snr=signal / sampling if sampling > 0 else math.inf,
    )


def _adam_settings(optimizer: OptimizerSettings | None) -> OptimizerSettings:
    """Return ``optimizer``, or Adam's default settings for ``None``.

    Returns
    -------
    OptimizerSettings
        Settings of kind ``"adam"``.

    Raises
    ------
    ValueError
        For settings of another kind, naming the spelling to use.
    """
    if optimizer is None:
        return OptimizerSettings("adam")
    if not isinstance(optimizer, OptimizerSettings) or optimizer.kind != "adam":
        raise ValueError(
            "the steady state is Adam's: pass optimizer=OptimizerSettings('adam', lr=..., "
            f"betas=..., eps=...), not {optimizer!r}."
        )
    return optimizer


def steady_state_linearization(
    mean: Tensor,
    variance: Tensor,
    batch_size: int,
    num_samples: int,
    *,
    optimizer: OptimizerSettings | None = None,
) -> FrozenLinearization:
    r"""Return the frozen linearization of Adam with its steady-state preconditioner :math:`P_B`.

    Parameters
    ----------
    mean, variance, batch_size, num_samples
        As for :func:`steady_state_preconditioner`.
    optimizer : OptimizerSettings, optional
        Adam's hyperparameters (default ``OptimizerSettings("adam")``): ``lr`` if known (only
        the ratio needs it), ``betas`` (:math:`\beta_1` sets the coefficient), ``eps``,
        ``weight_decay`` (coupled, added to the Hessian) and ``decoupled_weight_decay``
        (AdamW's).

    Returns
    -------
    FrozenLinearization
        Labelled ``"steady state at batch size B at this point"``, exactness
        ``"steady state"``.
    """
    adam = _adam_settings(optimizer)
    P = steady_state_preconditioner(mean, variance, batch_size, num_samples, eps=adam.eps)
    beta1 = float(adam.betas[0])
    return FrozenLinearization(
        optimizer="Adam",
        lr=math.nan if adam.lr is None else float(adam.lr),
        recursion=ModeRecursion(beta1, 1.0 - beta1, 0.0, 1.0),
        preconditioner=P,
        weight_decay=torch.full_like(P, adam.weight_decay) if adam.weight_decay else None,
        decoupled_weight_decay=float(adam.decoupled_weight_decay),
        label=f"steady state at batch size {batch_size} at this point",
        exactness="steady state",
        notes=(
            f"preconditioner: Adam's steady state at batch size {batch_size} at this point, "
            "sqrt(G^2 + p_B sigma^2) + eps from per-example gradient moments (what an Adam "
            "run at a negligible learning rate equilibrates to here); a real run's state "
            "remembers larger gradients from earlier training and typically gives a higher "
            "threshold.",
        ),
    )


def says_nothing(
    shares: PreconditionerShares, *, min_noise_share: float = 0.5, near_minimum_snr: float = 1.0
) -> bool:
    r"""Whether the frozen steady-state preconditioner says nothing (the rule of the module doc).

    No number when the noise share is below ``min_noise_share`` and either :math:`\epsilon`
    carries at least half of :math:`P_B` or the point is near a minimum
    (:math:`\lVert G\rVert^2 \le` ``near_minimum_snr`` times its sampling variance).

    Parameters
    ----------
    shares : PreconditionerShares
        Along the top preconditioned direction.
    min_noise_share, near_minimum_snr : float, optional
        The rule's two levels.

    Returns
    -------
    bool
        ``True``: give no number.

    Examples
    --------
    >>> says_nothing(PreconditionerShares(noise=0.0, mean=0.9, eps=0.1, gradient_snr=0.2))
    True
    >>> says_nothing(PreconditionerShares(noise=0.8, mean=0.1, eps=0.1, gradient_snr=0.2))
    False
    """
    near_minimum = shares.gradient_snr <= near_minimum_snr
    return shares.noise < min_noise_share and (shares.eps >= 0.5 or near_minimum)


def steady_state_note(
    shares: PreconditionerShares,
    batch_size: int,
    num_samples: int,
    *,
    withheld: float,
    min_noise_share: float = 0.5,
    near_minimum_snr: float = 1.0,
) -> str | None:
    """Return why there is no number, or what a mean-dominated number means (else ``None``).

    Parameters
    ----------
    shares : PreconditionerShares
        Along the top preconditioned direction.
    batch_size, num_samples : int
        :math:`B` and :math:`n`.
    withheld : float
        The frozen threshold the rule withholds (quoted in the note).
    min_noise_share, near_minimum_snr : float, optional
        The rule's two levels (see :func:`says_nothing`).

    Returns
    -------
    str or None
        The note.
    """
    near_minimum = shares.gradient_snr <= near_minimum_snr
    if says_nothing(shares, min_noise_share=min_noise_share, near_minimum_snr=near_minimum_snr):
        what = "the full batch" if batch_size >= num_samples else f"batch size {batch_size}"
        rests = "epsilon" if shares.eps >= shares.mean else "the mean gradient"
        return (
            f"no learning-rate limit at {what}: along the direction that sets it, Adam's "
            f"steady-state preconditioner rests on {rests} (noise share {shares.noise:.2g}, "
            f"mean {shares.mean:.2g}, eps {shares.eps:.2g}) "
            + (
                f"near a minimum (|G|^2 = {shares.gradient_snr:.2g} x its sampling variance), "
                if near_minimum
                else ""
            )
            + "where Adam adapts its preconditioner to any step it takes and settles at the "
            "edge of stability instead of diverging (Cohen et al. 2022); a frozen threshold "
            f"({withheld:.3g}) would say nothing about it. With the optimizer's state, its "
            "own preconditioner gives a threshold."
        )
    if shares.noise < min_noise_share:
        return (
            f"the steady-state preconditioner rests mostly on the mean gradient at batch size "
            f"{batch_size} (noise share {shares.noise:.2g}): Adam's steps change it, so this "
            "threshold describes the first steps from this point, not a stationary state."
        )
    return None


@dataclass(frozen=True)
class SteadyStateStability(Record):
    r"""Adam's stability at batch size :math:`B` from its steady-state preconditioner.

    Attributes
    ----------
    batch_size : int
        :math:`B`.
    sharpness : float
        :math:`\lambda_{\max}(P_B^{-1/2} H P_B^{-1/2})` of the given curvature.
    lr_max : float or None
        The largest stable learning rate, or ``None`` where frozen-preconditioner stability
        says nothing (see the module doc).
    informative : bool
        Whether a number is given.
    shares : PreconditionerShares
        What :math:`P_B` rests on along the top direction.
    label : str
        ``"steady state at batch size B at this point"``.
    notes : tuple of str
        Why there is no number, or what the number assumes.
    """

    batch_size: int
    sharpness: float
    lr_max: float | None
    informative: bool
    shares: PreconditionerShares
    label: str
    notes: tuple[str, ...] = field(default=())


def steady_state_stability(
    H: LinearOperator,
    mean: Tensor,
    variance: Tensor,
    batch_size: int,
    num_samples: int,
    *,
    optimizer: OptimizerSettings | None = None,
    min_noise_share: float = 0.5,
    near_minimum_snr: float = 1.0,
    tol: float = 1e-6,
    seed: int | torch.Generator | None = 0,
) -> SteadyStateStability:
    r"""Adam's largest stable learning rate at batch size :math:`B` without its state, or none.

    Computes :math:`a = \lambda_{\max}(P_B^{-1/2} H P_B^{-1/2})` and, unless the rule of the
    module doc says the frozen preconditioner says nothing here, :math:`\eta_{\max} =
    (2+2\beta_1)/((1-\beta_1)a)` (with decoupled decay, its exact limit).

    Parameters
    ----------
    H : LinearOperator
        The curvature at batch size :math:`B` (the mean over its batches' Hessians, or the
        full-data Hessian).
    mean, variance : Tensor
        Per-coordinate mean and variance of the per-example gradients over the data.
    batch_size, num_samples : int
        :math:`B` and :math:`n`.
    optimizer : OptimizerSettings, optional
        Adam's hyperparameters (default ``OptimizerSettings("adam")``; see
        :func:`steady_state_linearization`).
    min_noise_share : float, optional
        A number needs at least this share of :math:`P_B` from gradient noise, unless the
        point is away from a minimum and :math:`\epsilon` does not dominate.
    near_minimum_snr : float, optional
        :math:`\lVert G\rVert^2 / (\operatorname{tr}\sigma^2/n)` at or below which the point
        counts as near a minimum.
    tol, seed : optional
        Eigensolver tolerance and starting-vector seed.

    Returns
    -------
    SteadyStateStability
        The sharpness, ``lr_max`` (or ``None``), the shares and notes.

    Examples
    --------
    >>> from landscape.operators.dense import DenseOperator
    >>> H = DenseOperator(torch.diag(torch.tensor([2.0, 1.0])))
    >>> G, var = torch.tensor([1e-6, 1e-6]), torch.tensor([1.0, 1.0])
    >>> steady_state_stability(H, G, var, 100, 100).lr_max is None   # full batch at a minimum
    True
    >>> r = steady_state_stability(H, G, var, 10, 100)
    >>> r.informative, round(r.shares.noise, 3)
    (True, 1.0)
    """
    adam = _adam_settings(optimizer)
    lin = steady_state_linearization(mean, variance, batch_size, num_samples, optimizer=adam)
    result = frozen_stability(H, lin, tol=tol, seed=seed)
    shares = preconditioner_shares(
        mean, variance, batch_size, num_samples, eps=adam.eps, direction=result.eigenvector
    )
    notes = list(lin.notes)
    silent = says_nothing(
        shares, min_noise_share=min_noise_share, near_minimum_snr=near_minimum_snr
    )
    note = steady_state_note(
        shares,
        batch_size,
        num_samples,
        withheld=lin.max_lr(result.sharpness),
        min_noise_share=min_noise_share,
        near_minimum_snr=near_minimum_snr,
    )
    if note:
        notes.append(note)
    return SteadyStateStability(
        batch_size=int(batch_size),
        sharpness=result.sharpness,
        lr_max=None if silent else result.lr_max,
        informative=not silent,
        shares=shares,
        label=lin.label,
        notes=tuple(notes),
    )
