r"""The largest stable learning rate per batch size and optimizer.

Three answers, each labelled with what it is:

1. **Batch-sharpness heuristic** (Granziol, Zohren & Roberts, JMLR 2022): the top eigenvalue of
   mini-batch Hessians :math:`H_S` of size :math:`B` (mean and spread over random batches),
   turned into :math:`\eta_{\max}(B) = c/\bar\lambda_1(B)` with the optimizer's coefficient
   :math:`c` (:mod:`landscape.metrics.thresholds`), and the fitted law
   :math:`\bar\lambda_1(B) \approx a + b\,p_B` with :math:`p_B = (n-B)/(B(n-1))` (their
   :math:`a + b/B` with the finite-population factor, so that :math:`B = n` gives
   :math:`a`). It is a heuristic: on a reference problem it was
   off by −21 % to +64 % from the exact SGD threshold (it averages sharpness, while SGD's
   stability averages second moments).
2. **Exact mean-square threshold of SGD** (Mulayoff & Michaeli 2023; Wu, Ma & E 2018) at an
   interpolating minimum, from per-example Gauss-Newton factors
   (:mod:`landscape.metrics.mean_square`), beside Wu, Ma & E's sharpness/non-uniformity bound
   (:math:`\eta \le 2/\lambda_{\max}` and :math:`\eta \le s^{-1}\sqrt{B(n-1)/(n-B)}`, exact in
   one dimension; in higher dimensions the exact threshold can exceed it) and Wu & Su's trace
   bound (:math:`\eta \le 2/\operatorname{tr} H` at :math:`B = 1`).
3. **Empirical truth** (``verify=True``): short training bursts from copies of the model at
   multiples of the prediction; a burst *diverged* when its full-data loss ends non-finite or
   above ``divergence_factor`` times the starting loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape._compat import moved, moved_into
from landscape.linalg._random import as_generator
from landscape.linalg.eigen import eigenvalues
from landscape.losses import Criterion, Objective
from landscape.metrics import _per_example as per_example
from landscape.metrics._lr_measure import (
    CHUNK,
    Measure,
    Run,
    choose_measure,
    critical_samples,
    progress_bar,
)
from landscape.metrics.mean_square import gram_spectrum, mean_square_threshold, nonuniformity
from landscape.metrics.optimizers.instances import optimizer_list, trained_problem
from landscape.metrics.thresholds import OptimizerSettings, optimizer_settings
from landscape.operators.hessian import hessian
from landscape.problem import Problem, evaluation_mode
from landscape.records import Record

__all__ = ["LearningRateResult", "Verification", "VerifySettings", "max_learning_rate"]

_FACTOR_BUDGET = 250_000_000  # entries of the per-example factor matrix (1 GB in float32)
_GRAM_ROWS = 1536  # rows m*k of the Gram matrix: each eigensolver product costs m k r^2 flops


@dataclass(frozen=True)
class VerifySettings(Record):
    """How :func:`max_learning_rate` verifies its predictions with short training bursts.

    Attributes
    ----------
    steps : int
        Optimizer steps per burst.
    factors : tuple of float
        Multiples of ``lr_max`` to try at every batch size.
    divergence_factor : float
        A burst diverged if its final full-data loss exceeds this times the starting loss
        (or is not finite). Near the threshold growth is slow, so short bursts bracket the
        true threshold only coarsely.
    perturbation : float
        Bursts start from the model plus a random perturbation of this norm relative to the
        parameters' norm (the same for every learning rate), so that an unstable learning
        rate shows even at an exact minimum, where all gradients vanish.

    Raises
    ------
    ValueError
        For ``divergence_factor <= 1``, ``steps < 1`` or no factors.

    Examples
    --------
    >>> VerifySettings(steps=50).factors
    (0.5, 0.8, 1.25, 2.0)
    """

    steps: int = 200
    factors: tuple[float, ...] = (0.5, 0.8, 1.25, 2.0)
    divergence_factor: float = 2.0
    perturbation: float = 1e-3

    def __post_init__(self) -> None:
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must exceed 1; got {self.divergence_factor!r}.")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer; got {self.steps!r}.")
        if not len(self.factors):
            raise ValueError("factors is empty: give the multiples of lr_max to try.")
        object.__setattr__(self, "factors", tuple(float(x) for x in sorted(self.factors)))


@dataclass(frozen=True)
class Verification(Record):
    """Short training bursts at one batch size: which learning rates diverged.

    Attributes
    ----------
    batch_size : int
        The batch size of the bursts.
    lrs : ndarray
        Learning rates tried, ascending.
    diverged : ndarray
        Boolean per learning rate.
    final_losses : ndarray
        Full-data loss after each burst (``inf`` when it blew up).
    start_loss : float
        Full-data loss of the model.
    steps : int
        Optimizer steps per burst.
    """

    batch_size: int
    lrs: np.ndarray
    diverged: np.ndarray
    final_losses: np.ndarray
    start_loss: float
    steps: int

    @property
    def lr_stable(self) -> float | None:
        """The largest learning rate whose burst did not diverge."""
        ok = self.lrs[~self.diverged]
        return float(ok.max()) if ok.size else None

    @property
    def lr_diverged(self) -> float | None:
        """The smallest learning rate whose burst diverged."""
        bad = self.lrs[self.diverged]
        return float(bad.min()) if bad.size else None


@dataclass(frozen=True)
class LearningRateResult(Record):
    r"""Predicted maximum stable learning rates per batch size, with their evidence.

    Attributes
    ----------
    batch_sizes : ndarray
        Batch sizes, ascending (``"full"`` resolved to the dataset size).
    lr_max : ndarray
        :math:`c/\bar\lambda_1(B)`: the heuristic prediction from the mean batch sharpness.
    lr_max_low, lr_max_high : ndarray
        :math:`c/\max_S \lambda_1(H_S)` and :math:`c/\min_S \lambda_1(H_S)` over the sampled
        batches (worst and best batch).
    sharpness : ndarray
        Mean top eigenvalue :math:`\bar\lambda_1(B)` of the batch Hessians (for Adam, of the
        preconditioned :math:`P^{-1/2}H_SP^{-1/2}`).
    sharpness_std : ndarray
        Its standard deviation over batches.
    sharpness_samples : tuple of ndarray
        Every sampled value, per batch size.
    fit : dict
        ``a``, ``b`` of :math:`\bar\lambda_1(B) \approx a + b\,p_B`,
        :math:`p_B = (n-B)/(B(n-1)) \approx 1/B`, and ``b_star = b/a``, the batch size
        where noise and signal curvature are about equal.
    lr_fit : ndarray
        :math:`c/(a + b\,p_B)`.
    scaling_exponent : float
        Least-squares slope of :math:`\log\eta_{\max}` against :math:`\log B` over the
        finite batch sizes: ≈1 for SGD and ≈½ for Adam in the noise-dominated regime,
        →0 beyond ``b_star``.
    optimizer : OptimizerSettings
        The optimizer's hyperparameters.
    coefficient : float
        :math:`c`: stable iff sharpness < c / lr.
    method : str
        How the sharpness was measured (and which preconditioner).
    lr_mean_square : ndarray or None
        Exact mean-square threshold of SGD per batch size (NaN where not computed).
    lr_nonuniformity_bound : ndarray or None
        Wu, Ma & E's bound :math:`\min(2/\lambda_{\max}, s^{-1}\sqrt{B(n-1)/(n-B)})` per batch
        size, from their (sufficient) stability criterion; exact in one dimension, and in
        general the exact threshold may exceed it.
    lr_trace_bound : float or None
        Wu & Su's :math:`2/\operatorname{tr} H` (necessary at :math:`B=1`, square loss at a
        global minimum).
    verification : tuple of Verification
        Training bursts (empty unless ``verify=True``).
    current_lr : float or None
        The optimizer's current learning rate, when known.
    num_samples : int
        Dataset size :math:`n`.
    num_matvecs, num_passes : int
        Hessian-vector products and passes over (mini-)batches.
    seconds : float
        Wall time.
    notes : tuple of str
        Conditions and caveats that apply to this result.
    at_minimum : bool or None
        Whether the exact threshold's premise holds: the Gauss-Newton sharpness of the
        per-example factors within 10 % of the full-batch Hessian's (an interpolating
        minimum). ``None`` where not checked (no exact threshold, or the full batch was not
        among the batch sizes).
    measure : {"batch sharpness", "critical sharpness"}
        What each mini-batch gave: the top eigenvalue of its (preconditioned) Hessian, or
        the critical sharpness :math:`2/\eta_c` along the optimizer's own update (for
        optimizers without a linear frozen step: Muon, Rprop, L-BFGS, Lion, third-party
        ones); then :attr:`coefficient` is 2 and ``lr_max`` is :math:`2/\bar\lambda_c`.
    preconditioner : {"identity", "optimizer state", "steady state"} or None
        What the numbers rest on: no preconditioner (SGD family), the optimizer's own state
        (its next step's :math:`P`, or its update), or Adam's steady state at each batch size
        at this point (no state given). ``None``: a file written before it was recorded
        (see :attr:`rests_on`).
    exactness : str or None
        How exact the per-batch rule is: ``"exact"`` (the step is linear on a quadratic),
        ``"frozen state"`` (exact with the optimizer's accumulators held), ``"linear part"``
        (Adafactor without update clipping), ``"steady state"`` (:math:`P` estimated),
        ``"generic"`` (critical sharpness: a one-step measurement, no threshold theory).
        The average over mini-batches is Granziol et al.'s heuristic in every case.

    Notes
    -----
    ``lr_max`` is ``nan`` at a batch size where the measure says nothing (Adam's steady
    state at the full batch near a minimum; a normalized update whose every step raises the
    loss): the notes say why.
    """

    _renamed: ClassVar[dict[str, str]] = {"num_hvps": "num_matvecs"}

    batch_sizes: np.ndarray
    lr_max: np.ndarray
    lr_max_low: np.ndarray
    lr_max_high: np.ndarray
    sharpness: np.ndarray
    sharpness_std: np.ndarray
    sharpness_samples: tuple[np.ndarray, ...] = field(repr=False)
    fit: dict[str, float]
    lr_fit: np.ndarray
    scaling_exponent: float
    optimizer: OptimizerSettings
    coefficient: float
    method: str
    lr_mean_square: np.ndarray | None
    lr_nonuniformity_bound: np.ndarray | None
    lr_trace_bound: float | None
    verification: tuple[Verification, ...]
    current_lr: float | None
    num_samples: int
    num_matvecs: int
    num_passes: int
    seconds: float
    notes: tuple[str, ...] = ()
    at_minimum: bool | None = None
    measure: str = "batch sharpness"
    preconditioner: str | None = None
    exactness: str | None = None

    @property
    def basis(self) -> str:
        """The preconditioner label, inferred for files written before it was recorded.

        Returns
        -------
        str
            ``"identity"``, ``"optimizer state"`` or ``"steady state"``.
        """
        if self.preconditioner is not None:
            return self.preconditioner
        method = self.method.lower()  # older files: Adam's method named its preconditioner
        if self.optimizer.kind != "adam":
            return "identity"
        return "steady state" if "steady" in method else "optimizer state"

    @property
    def rests_on(self) -> str:
        """Which preconditioner the numbers rest on, in words.

        Returns
        -------
        str
            E.g. ``"the optimizer's state (P of its next step)"``.
        """
        label = self.basis
        if self.measure == "critical sharpness":
            return "the optimizer's own next update (from its state)"
        return {
            "identity": "no preconditioner (P = I)",
            "optimizer state": "the optimizer's state (P of its next step)",
            "steady state": "Adam's steady state at this point (no optimizer state given)",
        }.get(label, label)

    def table(self) -> str:
        """Return a plain-text table, one row per batch size.

        Returns
        -------
        str
            The table, with the notes below it.
        """
        head = f"{'B':>7} {'sharpness':>11} {'lr_max':>10} {'[worst, best batch]':>23}"
        if self.lr_mean_square is not None:
            head += f" {'lr_ms(SGD)':>11} {'WME bound':>10}"
        if self.verification:
            head += f" {'stable<=':>9} {'diverged>=':>10}"
        lines = [
            f"max learning rate ({self.optimizer.key}; {self.method})",
            f"rests on {self.rests_on}; {self.measure}",
            head,
        ]
        ver = {v.batch_size: v for v in self.verification}
        for i, B in enumerate(self.batch_sizes):
            row = (
                f"{B:>7d} {self.sharpness[i]:>11.4g} {_number(self.lr_max[i]):>10} "
                f"[{_number(self.lr_max_low[i]):>10}, {_number(self.lr_max_high[i]):>10}]"
            )
            if self.lr_mean_square is not None and self.lr_nonuniformity_bound is not None:
                row += f" {self.lr_mean_square[i]:>11.4g} {self.lr_nonuniformity_bound[i]:>10.4g}"
            if self.verification:
                v = ver.get(int(B))
                fmt = lambda x: "-" if x is None else f"{x:.4g}"  # noqa: E731
                row += f" {fmt(v and v.lr_stable):>9} {fmt(v and v.lr_diverged):>10}"
            lines.append(row)
        lines.append(
            f"fit: sharpness(B) = {self.fit['a']:.4g} + {self.fit['b']:.4g} (n-B)/(B(n-1)) "
            f"(B* = {self.fit['b_star']:.3g}); d log lr / d log B = {self.scaling_exponent:.2f}"
        )
        if self.lr_trace_bound is not None:
            lines.append(f"Wu & Su trace bound (B=1): lr <= {self.lr_trace_bound:.4g}")
        if self.current_lr is not None:
            lines.append(f"current lr {self.current_lr:.4g}")
        lines.append(
            f"cost: {self.num_matvecs} HVPs, {self.num_passes} passes, {self.seconds:.1f} s"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _number(x: float) -> str:
    """Format a learning rate: ``"-"`` for no number (``nan``).

    Returns
    -------
    str
        The text.
    """
    return "-" if math.isnan(x) else f"{x:.4g}"


def _resolve_batch_sizes(batch_sizes: Sequence[int | str], n: int) -> list[int]:
    if isinstance(batch_sizes, (int, str)):
        batch_sizes = [batch_sizes]
    out = set()
    for b in batch_sizes:
        if isinstance(b, str):
            if b != "full":
                raise ValueError(f"batch sizes are positive integers or 'full'; got {b!r}.")
            out.add(n)
        elif isinstance(b, (int, np.integer)) and not isinstance(b, bool):
            if b < 1:
                raise ValueError(f"batch sizes must be positive; got {b}.")
            if b > n:
                raise ValueError(f"batch size {b} exceeds the {n} samples of the data.")
            out.add(int(b))
        else:
            raise TypeError(f"batch sizes are positive integers or 'full'; got {b!r}.")
    if not out:
        raise ValueError("batch_sizes is empty.")
    return sorted(out)


def _fit_law(B: np.ndarray, lam: np.ndarray, n: int) -> dict[str, float]:
    """Fit lam(B) = a + b p_B, p_B = (n - B) / (B (n - 1)), by least squares in relative error.

    Batch sizes without a finite positive sharpness are left out.

    Returns
    -------
    dict
        ``a``, ``b`` and ``b_star = b / a`` (``nan`` without any usable batch size).
    """
    keep = np.isfinite(lam) & (lam != 0)
    B, lam = B[keep], lam[keep]
    if len(B) == 0:
        return {"a": math.nan, "b": math.nan, "b_star": math.nan}
    if len(B) < 2:
        return {"a": float(lam[0]), "b": 0.0, "b_star": 0.0}
    X = np.stack([np.ones_like(B, dtype=float), _noise_factor(B, n)], axis=1) / lam[:, None]
    a, b = np.linalg.lstsq(X, np.ones_like(lam), rcond=None)[0]
    return {"a": float(a), "b": float(b), "b_star": float(b / a) if a != 0 else math.inf}


def _noise_factor(B: np.ndarray, n: int) -> np.ndarray:
    return (n - B) / (B * max(n - 1, 1))


def _slope(B: np.ndarray, lr: np.ndarray, n: int) -> float:
    keep = (n > B) & np.isfinite(lr) & (lr > 0)
    if keep.sum() < 2:
        keep = np.isfinite(lr) & (lr > 0)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(B[keep]), np.log(lr[keep]), 1)[0])


@moved(
    lr="optimizer=ls.OptimizerSettings(kind, lr=...)",
    momentum="optimizer=ls.OptimizerSettings('momentum', momentum=...)",
    betas="optimizer=ls.OptimizerSettings('adam', betas=...)",
    eps="optimizer=ls.OptimizerSettings('adam', eps=...)",
    weight_decay="optimizer=ls.OptimizerSettings(kind, weight_decay=...)",
    divergence_factor="verify=ls.VerifySettings(divergence_factor=...)",
    **moved_into("verify=ls.VerifySettings", "verify_", "steps", "factors", "perturbation"),
)
def max_learning_rate(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    batch_sizes: Sequence[int | str] = (8, 32, 128, 512, "full"),
    optimizer: str | OptimizerSettings | torch.optim.Optimizer = "sgd",
    num_batches: int = 8,
    exact: bool | Literal["auto"] = "auto",
    exact_samples: int = 128,
    verify: bool | VerifySettings = False,
    tol: float = 1e-3,
    seed: int | torch.Generator | None = 0,
    progress: bool = False,
    backend: str = "auto",
    **options: Any,
) -> LearningRateResult:
    r"""Predict the largest stable learning rate for each batch size and optimizer.

    For every batch size :math:`B`, ``num_batches`` random mini-batches :math:`S` (without
    replacement) give :math:`\lambda_1(H_S)`, the top eigenvalue of the mini-batch Hessian
    (restarted Lanczos, warm-started from the previous batch's eigenvector), and

    .. math::
        \eta_{\max}(B) = \frac{c}{\overline{\lambda_1(H_S)}}, \qquad
        c = 2 \ (\text{SGD}),\ 2+2\beta \ (\text{heavy ball}),\
        \frac{2+2\beta}{1+2\beta} \ (\text{Nesterov}),\
        \frac{2+2\beta_1}{1-\beta_1} \ (\text{Adam}).

    With an optimizer **instance**, its class and state decide the measure (every
    ``torch.optim`` class, and any third-party optimizer, is accepted; the result's
    :attr:`~LearningRateResult.measure`, :attr:`~LearningRateResult.preconditioner` and
    notes say which):

    * a step that is linear once its state is frozen (SGD, ASGD, Adam, AdamW, RMSprop,
      Adagrad, Adadelta, Adamax, NAdam, RAdam, SparseAdam, Adafactor's linear part):
      :math:`\lambda_1(P^{-1/2}(H_S + W)P^{-1/2})` with :math:`P` of the optimizer's next
      step read from its state, and the learning rate at which it is marginal for the
      optimizer's own recursion (momentum, NAdam's schedule, RAdam's rectification or
      warm-up, decoupled decay: :func:`landscape.metrics.optimizers.linearize`);
    * any other optimizer (Muon, Rprop, L-BFGS, Lion-like and unknown ones, several
      optimizers at once, an adaptive one that has not stepped): the critical sharpness
      :math:`\lambda_c = 2/\eta_c` along its own next update on each mini-batch
      (:func:`landscape.critical_sharpness`), with :math:`\eta_{\max} = 2/\bar\lambda_c`
      — whether the next step raises the loss, not a divergence threshold.

    With the name ``"adam"`` (or an Adam that has not stepped), no state exists: :math:`P` is
    Adam's steady state at batch size :math:`B` at this point,
    :math:`P_B = \mathrm{diag}(\sqrt{G^2 + p_B\,\sigma^2} + \epsilon)` with the
    per-coordinate mean :math:`G` and variance :math:`\sigma^2` of per-example gradients and
    :math:`p_B = (n-B)/(B(n-1))` — the square-root scaling argument of Granziol et al. — and
    **no number** (``nan``, with a note) where it says nothing: where it rests on the mean
    gradient or :math:`\epsilon` near a minimum, as at the full batch, where Adam adapts
    its preconditioner to any step (Cohen et al. 2022;
    :func:`landscape.steady_state_stability`). A real run's state remembers larger
    gradients: its thresholds are typically several times higher. Coupled weight decay adds
    :math:`wI` to :math:`H_S`; dampening divides :math:`c` by :math:`1-d`.

    The fitted law :math:`\bar\lambda_1(B) \approx a + b\,(n-B)/(B(n-1))` and the log-log
    slope summarize
    the batch-size dependence (Granziol et al.). **This is a heuristic**: SGD's stability is
    decided by second moments over batches, not by the mean batch sharpness; for SGD, where
    affordable (``exact``), the exact mean-square threshold of Mulayoff & Michaeli (2023) is
    reported beside it (see :mod:`landscape.metrics.mean_square`; exact at an interpolating
    minimum, with the Gauss-Newton part of the per-example Hessians, on ``exact_samples``
    examples whose moments stand in for the dataset's).

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model at the point of interest (a
        minimum for the exact threshold; never modified) with its training data and loss,
        as for :func:`landscape.hessian`; the data is gathered into one batch structure so
        mini-batches can be drawn at random. Trained parameters: the problem's selection
        (default: all trainable ones, or those of an ``optimizer`` instance).
    batch_sizes : sequence of int or "full", optional
        Batch sizes to evaluate (``"full"``: the whole dataset, one "batch").
    optimizer : {"sgd", "momentum", "nesterov", "adam"}, OptimizerSettings, Optimizer or list
        The update rule: a name (default hyperparameters), :class:`OptimizerSettings`
        (``lr`` is the learning rate you plan to use, reported as ``current_lr``), or an
        instance of any optimizer class (or a framework wrapper or scheduler of one), which
        supplies its hyperparameters and state; or several instances that train the model
        together (``[muon, adamw]``). With instances the parameters are those they train.
    num_batches : int, optional
        Random batches per batch size.
    exact : bool or "auto", optional
        Compute the exact mean-square SGD threshold (``"auto"``: for plain SGD when the loss
        is given as outputs + criterion).
    exact_samples : int, optional
        Examples used for it, at most ``1536 / outputs`` (memory
        ``exact_samples * outputs * parameters`` floats; time cubic in
        ``exact_samples * outputs``).
    verify : bool or VerifySettings, optional
        Run training bursts at multiples of the prediction for every batch size
        (``True``: :class:`VerifySettings` defaults).
    tol : float, optional
        Relative residual tolerance of the eigenvalues.
    seed : int or torch.Generator, optional
        Randomness of batches, starting vectors and bursts.
    progress : bool, optional
        Show a tqdm progress bar.
    backend, **options
        The Hessian backend and the problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    LearningRateResult
        Predictions, their band, the fit, exact thresholds, verification and costs.

    Raises
    ------
    TypeError
        If ``model`` is not a module or a batch size is not an integer.
    ValueError
        For invalid batch sizes, ``num_batches < 1``, ``exact_samples < 1``, an unknown
        optimizer, or ``exact=True`` where it does not apply.
    FloatingPointError
        If the loss of a batch of the data is not finite (with the batch's index).

    References
    ----------
    Granziol, Zohren, Roberts (JMLR 2022), "Learning Rates as a Function of Batch Size: A
    Random Matrix Theory Approach to Neural Network Training". Cohen et al. (ICLR 2021;
    2022). Mulayoff & Michaeli (2023), arXiv:2306.07850. Wu, Ma & E (NeurIPS 2018). Wu & Su
    (ICML 2023).

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(5, 1)
    >>> X = torch.randn(64, 5)
    >>> y = model(X).detach()               # an interpolating minimum of the squared loss
    >>> r = max_learning_rate(model, (X, y), batch_sizes=(4, 16, "full"), num_batches=4)
    >>> r.batch_sizes.tolist()
    [4, 16, 64]
    >>> bool(abs(r.lr_mean_square[-1] * r.sharpness[-1] / 2 - 1) < 1e-3)  # GD: 2 / lambda_max
    True
    >>> bool(r.lr_mean_square[0] < r.lr_mean_square[1] < r.lr_mean_square[2])
    True
    """
    start = time.perf_counter()
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer; got {num_batches!r}.")
    if isinstance(exact_samples, bool) or not isinstance(exact_samples, int) or exact_samples < 1:
        raise ValueError(f"exact_samples must be a positive integer; got {exact_samples!r}.")
    checks = VerifySettings() if verify is True else verify or None
    settings = optimizer_settings(optimizer)
    instances = _instances(optimizer)
    problem = trained_problem(
        problem, data, loss_fn, instances, where="max_learning_rate", **options
    )
    notes: list[str] = []
    problem = _trained_parameters(problem, instances, notes).with_data(shard=False)
    problem.loss()  # a non-finite loss is named by the user's batch, not a random draw
    run = Run(problem, per_example.gather(problem), as_generator(seed), notes)
    sizes = _resolve_batch_sizes(batch_sizes, run.n)
    measure = choose_measure(run, settings, instances)
    if measure.critical:
        samples, passes = critical_samples(run, sizes, num_batches, measure, progress)
        hvps = 0
    else:
        samples, hvps, passes = _batch_sharpness(
            run, sizes, num_batches, measure, tol, backend, progress
        )
    table = _rates(samples, measure, sizes, run.n, run.notes)
    measure.finish(table, sizes, run.n, run.notes)
    exact_rates = _exact(run, settings, exact, sizes, exact_samples, table["sharpness"])
    verification = () if checks is None else _verification(
        run, sizes, table["lr_max"], settings, instances, measure, checks
    )  # fmt: skip
    return LearningRateResult(
        **table,
        **exact_rates,
        optimizer=settings,
        coefficient=measure.coefficient(run.n),
        method=measure.method,
        verification=verification,
        current_lr=measure.lr,
        num_samples=run.n,
        num_matvecs=hvps,
        num_passes=passes,
        seconds=time.perf_counter() - start,
        notes=tuple(run.notes),
        measure=measure.measure,
        preconditioner=measure.preconditioner,
        exactness=measure.exactness,
    )


def _instances(optimizer: Any) -> list[torch.optim.Optimizer]:
    """Return the optimizer instances given (none for a name or settings).

    Returns
    -------
    list of torch.optim.Optimizer
        Unwrapped from framework wrappers and schedulers.
    """
    if isinstance(optimizer, str | OptimizerSettings):
        return []
    return [o for o in optimizer_list(optimizer) if isinstance(o, torch.optim.Optimizer)]


def _trained_parameters(
    problem: Problem, instances: list[torch.optim.Optimizer], notes: list[str]
) -> Problem:
    """Return the problem over the parameters the optimizer(s) train, noting what is left out.

    Returns
    -------
    Problem
        The problem itself when every selected parameter is trained (or no instance given).

    Raises
    ------
    ValueError
        If the optimizers train none of the problem's parameters.
    """
    if not instances:
        return problem
    ids = {id(p) for o in instances for g in o.param_groups for p in g["params"]}
    named = dict(problem.model.named_parameters())
    trained = [n for n in problem.space.names if id(named[n]) in ids]
    if not trained:
        raise ValueError(
            "the optimizer trains none of the problem's parameters: pass the optimizer of "
            "this model (or a Problem over the parameters it trains)."
        )
    if len(trained) == len(problem.space.names):
        return problem
    left = len(problem.space.names) - len(trained)
    notes.append(
        f"{left} parameter tensor(s) are trained by no given optimizer (e.g. the biases and "
        "norms next to Muon's matrices): the analysis is over the ones it trains, the others "
        "held fixed."
    )
    return problem.with_params(trained)


def _batch_sharpness(
    run: Run,
    sizes: list[int],
    num_batches: int,
    measure: Measure,
    tol: float,
    backend: str,
    progress: bool,
) -> tuple[list[np.ndarray], int, int]:
    """Return the top eigenvalue of every drawn mini-batch's (preconditioned) Hessian, per B.

    Returns
    -------
    tuple
        Per batch size the array of sharpness samples, and the products and passes used.
    """
    n, generator = run.n, run.generator
    bar = progress_bar(progress, sum(1 if n == B else num_batches for B in sizes))
    samples: list[np.ndarray] = []
    hvps = passes = 0
    try:
        for B in sizes:
            values, v0 = [], None
            for _ in range(1 if n == B else num_batches):
                op = measure.operator(hessian(run.draw(B), backend=backend), B, n)
                seed_b = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                ev = eigenvalues(op, k=1, tol=tol, seed=seed_b, v0=v0)
                v0 = ev.vectors[:, 0]
                measure.observe(B, n, v0)
                values.append(float(ev.values[0]))
                hvps += ev.num_matvecs
                passes += ev.num_passes
                if bar is not None:
                    bar.update(1)
            samples.append(np.asarray(values))
    finally:
        if bar is not None:
            bar.close()
    return samples, hvps, passes


def _summaries(samples: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Return the mean, largest, smallest and spread of each batch size's finite samples.

    Returns
    -------
    tuple of ndarray
        ``nan`` where a batch size has no finite sample.
    """
    out = []
    for reduce in (np.mean, np.max, np.min, np.std):
        values = []
        for s in samples:
            finite = s[~np.isnan(s)]
            values.append(float(reduce(finite)) if finite.size else math.nan)
        out.append(np.asarray(values, dtype=float))
    return tuple(out)


def _rates(
    samples: list[np.ndarray], measure: Measure, sizes: list[int], n: int, notes: list[str]
) -> dict[str, Any]:
    """Return the learning rates, their band and the fitted law from the sharpness samples.

    Returns
    -------
    dict
        The :class:`LearningRateResult` fields of the heuristic.
    """
    Bs = np.asarray(sizes, dtype=np.int64)
    sharp, worst, best, spread = _summaries(samples)
    if bool((sharp <= 0).any()):
        notes.append(
            "a mean batch sharpness is not positive: no curvature limits the step there "
            "(lr_max = inf)."
        )

    def limits(values: np.ndarray) -> np.ndarray:
        return np.asarray([measure.limit(B, n, float(a)) for B, a in zip(sizes, values)])

    fit = _fit_law(Bs.astype(float), sharp, n)
    lr_max = limits(sharp)
    return {
        "batch_sizes": Bs,
        "lr_max": lr_max,
        "lr_max_low": limits(worst),
        "lr_max_high": limits(best),
        "sharpness": sharp,
        "sharpness_std": spread,
        "sharpness_samples": tuple(samples),
        "fit": fit,
        "lr_fit": limits(fit["a"] + fit["b"] * _noise_factor(Bs.astype(float), n)),
        "scaling_exponent": _slope(Bs.astype(float), lr_max, n),
    }


def _exact(
    run: Run,
    settings: OptimizerSettings,
    exact: bool | str,
    sizes: list[int],
    exact_samples: int,
    sharp: np.ndarray,
) -> dict[str, Any]:
    """Return the exact mean-square SGD thresholds where they apply (else ``None`` fields).

    Returns
    -------
    dict
        ``lr_mean_square``, ``lr_nonuniformity_bound``, ``lr_trace_bound``, ``at_minimum``.

    Raises
    ------
    ValueError
        For ``exact=True`` where the threshold does not apply.
    """
    applies = (
        settings.kind == "sgd"
        and run.problem.objective.has_criterion
        and not settings.weight_decay
        and not settings.dampening
    )
    if exact is True and not applies:
        raise ValueError(
            "the exact mean-square threshold applies to plain SGD (no momentum, dampening or "
            "weight decay) with the loss given as outputs + criterion (loss_fn)."
        )
    found: tuple[Any, ...] = (None, None, None, None)
    if exact is True or (exact == "auto" and applies):
        found = _exact_thresholds(
            run.on([run.dataset]), run.dataset, run.n, sizes, exact_samples, run.generator,
            run.notes, sharp,
        )  # fmt: skip
    keys = ("lr_mean_square", "lr_nonuniformity_bound", "lr_trace_bound", "at_minimum")
    return dict(zip(keys, found))


def _verification(
    run: Run,
    sizes: list[int],
    lr_max: np.ndarray,
    settings: OptimizerSettings,
    instances: list[torch.optim.Optimizer],
    measure: Measure,
    checks: VerifySettings,
) -> tuple[Verification, ...]:
    """Run the training bursts at every batch size with a finite prediction; note caveats.

    Returns
    -------
    tuple of Verification
        One per batch size.
    """
    whole = run.whole()
    verification = tuple(
        _verify(
            whole,
            run.dataset,
            run.n,
            B,
            lr_max[i] * np.asarray(checks.factors, dtype=float),
            _Trainer(settings, instances, measure.lr),
            checks,
            run.generator,
        )
        for i, B in enumerate(sizes)
        if np.isfinite(lr_max[i])
    )
    mixed = [
        v.batch_size
        for v in verification
        if v.lr_stable is not None and v.lr_diverged is not None and v.lr_stable > v.lr_diverged
    ]
    if mixed:
        run.notes.append(
            f"verification is not monotone in the learning rate at B = {mixed}: gradient "
            "noise or nonlinear effects (catapults, escape to flatter regions) decide "
            "there; the bracket is not sharp."
        )
    if measure.preconditioner != "identity" or measure.critical:
        run.notes.append(
            "verification with an adaptive or normalized optimizer: above its linear-stability "
            "limit it rarely blows up (its accumulators grow, or its step has a fixed length); "
            "a burst's loss grows from gradient noise instead, so its bracket measures "
            "noise-driven excess loss more than instability."
        )
    run.notes.append(
        f"verification: {checks.steps} steps per burst on a copy in eval mode, starting "
        f"{checks.perturbation:g} x |theta| away from the model; diverged = final "
        f"full-data loss > {checks.divergence_factor:g} x the starting loss, or not finite."
    )
    return verification


def _exact_thresholds(
    problem: Problem,
    dataset: Any,
    n: int,
    sizes: list[int],
    exact_samples: int,
    generator: torch.Generator,
    notes: list[str],
    sharp: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray | None, float | None, bool | None]:
    with problem.evaluation() as run:
        k = per_example.outputs_per_sample(run, dataset, n)
        if k > _GRAM_ROWS:
            notes.append(
                f"exact mean-square threshold not computed: one sample has {k} outputs (more "
                f"than {_GRAM_ROWS}), and its per-example Gauss-Newton factors would not fit."
            )
            return None, None, None, None
        wanted = min(n, exact_samples)
        m = max(1, min(wanted, _FACTOR_BUDGET // max(1, k * problem.space.dim), _GRAM_ROWS // k))
        if m < wanted:
            notes.append(
                f"exact_samples={exact_samples} capped to {m}: one sample has {k} outputs "
                f"(the Gram matrix holds at most {_GRAM_ROWS} rows and the factors "
                f"{_FACTOR_BUDGET:.3g} entries), so the threshold rests on few samples."
            )
        index = torch.randperm(n, generator=generator)[:m] if m < n else torch.arange(n)
        subset = per_example.select(dataset, index)
        F, grad_norms, weights = per_example.gauss_newton_factors(run, subset)
        m = len(weights)
    if bool((weights != weights[0]).any()):
        notes.append(
            "samples weigh different numbers of units (tokens): each per-example Hessian is "
            "scaled by its share of the units, exact when every mini-batch holds the average "
            "number of units."
        )
    K = (F @ F.T).double()
    gram = gram_spectrum(K, k)
    s = nonuniformity(gram)
    a = gram.sharpness
    lr_ms = np.asarray([mean_square_threshold(gram, B, num_samples=n) for B in sizes])
    lr_wme = np.asarray(
        [
            min(2.0 / a, math.sqrt(B * (n - 1) / (n - B)) / s if s > 0 and n > B else math.inf)
            for B in sizes
        ]
    )
    notes.append(
        "lr_mean_square: exact mean-square SGD threshold (Mulayoff & Michaeli 2023) at an "
        "interpolating minimum, with the Gauss-Newton part of the per-example Hessians"
        + (f" on a random {m} of the {n} examples." if m < n else f" on all {n} examples.")
    )
    rms = float(grad_norms.pow(2).mean().sqrt())
    notes.append(
        f"interpolation check: rms per-example gradient norm {rms:.3g} (0 at an interpolating "
        "minimum; the exact threshold is a local statement there)."
    )
    at_minimum = None
    if n in sizes:
        full = sharp[sizes.index(n)]
        at_minimum = bool(full > 0 and abs(a - full) <= 0.1 * full)
        if full > 0 and abs(a - full) > 0.1 * full:
            notes.append(
                f"the Gauss-Newton sharpness {a:.4g} differs from the Hessian's {full:.4g} by "
                "more than 10%: the model is not at an interpolating minimum, and the "
                "mean-square threshold is only indicative."
            )
    return lr_ms, lr_wme, 2.0 / gram.trace, at_minimum


def _weighted_parts(objective: Objective, batch: Any, n: int) -> list[tuple[Any, float]]:
    """Return the physical chunks of a batch with their weights (those of positive weight).

    Returns
    -------
    list of (batch, float)
        Chunks of at most ``CHUNK`` samples.
    """
    parts = [(part, objective.weight(part)) for part in per_example.split(batch, n, CHUNK)]
    return [(part, w) for part, w in parts if w > 0]


def _verify(
    whole: Problem,
    dataset: Any,
    n: int,
    B: int,
    lrs: np.ndarray,
    trainer: _Trainer,
    checks: VerifySettings,
    generator: torch.Generator,
) -> Verification:
    # Every burst starts from the same slightly perturbed point: from an exact (interpolating)
    # minimum all gradients vanish and even an unstable learning rate never moves.
    model, space = whole.model, whole.space
    named = dict(model.named_parameters())
    noise = {
        name: torch.randn(named[name].shape, generator=generator, dtype=torch.float64)
        for name in space.names
    }
    norm = math.sqrt(sum(float(named[k].detach().double().pow(2).sum()) for k in noise))
    scale = (
        checks.perturbation
        * norm
        / max(math.sqrt(sum(float(u.pow(2).sum()) for u in noise.values())), 1e-300)
    )

    def start_point() -> nn.Module:
        clone = copy.deepcopy(model)
        own = dict(clone.named_parameters())
        with torch.no_grad():
            for name, u in noise.items():
                own[name].add_(u.to(own[name]) * scale)
        return clone

    start = whole.with_model(start_point()).loss()
    finals, diverged = [], []
    for lr in lrs:
        clone = start_point()
        final = _burst(whole, clone, dataset, n, B, float(lr), trainer, checks, generator)
        final = final if math.isfinite(final) else math.inf
        finals.append(final)
        diverged.append(not final <= checks.divergence_factor * start)
    return Verification(
        batch_size=B,
        lrs=np.asarray(lrs, dtype=float),
        diverged=np.asarray(diverged, dtype=bool),
        final_losses=np.asarray(finals, dtype=float),
        start_loss=start,
        steps=checks.steps,
    )


def _burst(
    whole: Problem,
    clone: nn.Module,
    dataset: Any,
    n: int,
    B: int,
    lr: float,
    trainer: _Trainer,
    checks: VerifySettings,
    generator: torch.Generator,
) -> float:
    """Train ``clone`` for ``checks.steps`` steps at ``lr``; return its final full-data loss.

    Returns
    -------
    float
        The loss (``inf`` if a step's loss or the final loss is not finite).
    """
    objective, selected = whole.objective, set(whole.space.names)
    clone.eval()
    trained = []
    for name, p in clone.named_parameters():
        p.requires_grad_(name in selected)
        p.grad = None
        if name in selected:
            trained.append(p)
    optimizers = trainer.make(trained, lr, whole.model, clone)
    with evaluation_mode(clone):
        for _ in range(checks.steps):
            index = torch.randperm(n, generator=generator)[:B]
            batch = dataset if n == B else per_example.select(dataset, index)
            closure = _closure(objective, clone, _weighted_parts(objective, batch, B), optimizers)
            if not math.isfinite(float(closure())):
                return math.inf
            for opt in optimizers:
                _Trainer.step(opt, closure)
    return whole.with_model(clone).loss(nonfinite=math.inf)


def _closure(
    objective: Objective,
    model: nn.Module,
    parts: list[tuple[Any, float]],
    optimizers: list[torch.optim.Optimizer],
) -> Callable[[], Tensor]:
    """Return the closure that puts a batch's mean-loss gradient on ``model`` and returns it.

    Returns
    -------
    callable
        ``closure() -> loss`` (a 0-dim tensor on the model's device).
    """
    total = sum(w for _, w in parts)

    def closure() -> Tensor:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        value = None
        for part, w in parts:
            loss = objective.loss(model, part, w) * (w / total)
            loss.backward()
            value = loss.detach() if value is None else value + loss.detach()
        _Trainer.sparsify(optimizers)
        return value if value is not None else torch.zeros(())

    return closure


@dataclass
class _Trainer:
    """The optimizer(s) of the training bursts: fresh named ones, or copies of the instances."""

    settings: OptimizerSettings
    instances: list[torch.optim.Optimizer]
    reference_lr: float | None

    def make(
        self, trained: list[Tensor], lr: float, model: nn.Module, clone: nn.Module
    ) -> list[torch.optim.Optimizer]:
        """Return the optimizers of a burst at learning rate ``lr`` over the clone's parameters.

        Copies of the instances (class, groups and state mapped by name onto the clone) have
        every group's learning rate scaled by ``lr`` over the reference learning rate, so
        per-group ratios are kept.

        Returns
        -------
        list of torch.optim.Optimizer
            The optimizers.
        """
        if self.instances:
            factor = lr / self.reference_lr if self.reference_lr else 1.0
            return [_copy_onto(o, model, clone, factor) for o in self.instances]
        s = self.settings
        if s.kind == "adam":
            return [
                torch.optim.Adam(
                    trained, lr=lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay
                )
            ]
        nesterov = s.kind == "nesterov"
        return [
            torch.optim.SGD(
                trained, lr=lr, momentum=s.momentum, dampening=0.0 if nesterov else s.dampening,
                nesterov=nesterov, weight_decay=s.weight_decay,
            )
        ]  # fmt: skip

    @staticmethod
    def sparsify(optimizers: list[torch.optim.Optimizer]) -> None:
        """Give SparseAdam the sparse gradients it takes (evaluations run embeddings dense)."""
        for opt in optimizers:
            if isinstance(opt, torch.optim.SparseAdam):
                for g in opt.param_groups:
                    for p in g["params"]:
                        if p.grad is not None and not p.grad.is_sparse:
                            p.grad = p.grad.to_sparse()

    @staticmethod
    def step(opt: torch.optim.Optimizer, closure: Callable[[], Tensor]) -> None:
        """Step, with the closure for optimizers that re-evaluate the loss (L-BFGS)."""
        if isinstance(opt, torch.optim.LBFGS):
            opt.step(closure)
        else:
            opt.step()


def _copy_onto(
    optimizer: torch.optim.Optimizer, model: nn.Module, clone: nn.Module, factor: float
) -> torch.optim.Optimizer:
    """Return a copy of ``optimizer`` on the clone's parameters, learning rates times ``factor``.

    Returns
    -------
    torch.optim.Optimizer
        Same class, groups and state, mapped by parameter name.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    own = dict(clone.named_parameters())
    groups = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [own[names[id(p)]] for p in g["params"]],
        }
        for g in optimizer.param_groups
    ]
    twin = type(optimizer)(groups)
    twin.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for g, original in zip(twin.param_groups, optimizer.param_groups, strict=True):
        g["lr"] = float(original["lr"]) * factor
    return twin
