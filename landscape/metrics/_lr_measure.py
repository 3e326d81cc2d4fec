r"""What :func:`~landscape.metrics.learning_rate.max_learning_rate` measures for an optimizer.

One :class:`Measure` per call, chosen by :func:`choose_measure` from what is known about the
optimizer, names the quantity measured on every mini-batch and how a learning rate is read
off it:

===============================================  =====================  ===================
given                                            measure                preconditioner
===============================================  =====================  ===================
``"sgd"``, ``"momentum"``, ``"nesterov"``,       batch sharpness        identity
or an SGD / ASGD instance                        :math:`\lambda_1(H_S+W)`
an instance with a linear frozen step (Adam,     batch sharpness        optimizer state
AdamW, RMSprop, Adagrad, Adadelta, Adamax,       :math:`\lambda_1(P^{-1/2}(H_S+W)P^{-1/2})`
NAdam, RAdam, SparseAdam, Adafactor)
``"adam"``, or an Adam / AdamW that has not      batch sharpness        steady state
stepped                                          :math:`\lambda_1(P_B^{-1/2}H_SP_B^{-1/2})`
any other instance (Muon, Rprop, LBFGS, Lion,    critical sharpness     optimizer state
third-party ones, several optimizers, an         along the update
adaptive optimizer that has not stepped)
===============================================  =====================  ===================

For the batch sharpness the learning rate is the linearization's
:meth:`~landscape.metrics.optimizers.FrozenLinearization.max_lr` (:math:`c/a` without
decoupled decay or a step schedule); for the critical sharpness it is :math:`2/\lambda_c`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.data import BatchList
from landscape.metrics import _per_example as per_example
from landscape.metrics.optimizers.critical import critical_sharpness
from landscape.metrics.optimizers.frozen import (
    FrozenLinearization,
    MissingOptimizerState,
    NotLinearizable,
    linearize,
    settings_linearization,
    torch_class,
)
from landscape.metrics.optimizers.stability import (
    epsilon_note,
    epsilon_share,
    preconditioned_operator,
)
from landscape.metrics.optimizers.steady_state import (
    PreconditionerShares,
    preconditioner_shares,
    says_nothing,
    steady_state_linearization,
    steady_state_note,
)
from landscape.metrics.thresholds import OptimizerSettings
from landscape.operators.base import LinearOperator
from landscape.problem import Problem

__all__ = ["CHUNK", "Measure", "Run", "choose_measure", "critical_samples", "progress_bar"]

CHUNK = 1024  # samples per physical batch when a mini-batch or the full data is evaluated
BATCH, CRITICAL = "batch sharpness", "critical sharpness"
IDENTITY, STATE, STEADY = "identity", "optimizer state", "steady state"

#: What each preconditioner means for the numbers, said once per result.
PRECONDITIONER_NOTES = {
    IDENTITY: "preconditioner: none (P = I): the threshold is that of the Hessian itself.",
    STATE: (
        "preconditioner: the optimizer's own state — P of its next step with its "
        "accumulators held (landscape.metrics.optimizers.linearize), exact for those frozen "
        "dynamics. Left free, an adaptive optimizer raises its accumulators when it "
        "oscillates and settles at this edge of stability instead of diverging (Cohen et al. "
        "2022); at a full-batch minimum, where its second moments decay, it can escape below "
        "it."
    ),
    STEADY: (
        "preconditioner: Adam's steady state at each batch size at this point, "
        "P_B = sqrt(G^2 + p_B sigma^2) + eps from per-example gradient moments — what Adam "
        "would equilibrate to if it sat here; no optimizer state was given. A real run's "
        "state remembers larger gradients from earlier training, and its thresholds are "
        "typically several times higher: pass the optimizer with its state (keep it in "
        "checkpoints) for its own thresholds."
    ),
}


@dataclass
class Run:
    """What every step of ``max_learning_rate`` shares: the problem and the gathered data."""

    problem: Problem
    gathered: tuple[Any, int]
    generator: torch.Generator
    notes: list[str]

    @property
    def dataset(self) -> Any:
        return self.gathered[0]

    @property
    def n(self) -> int:
        return self.gathered[1]

    def on(self, batches: list[Any]) -> Problem:
        return self.problem.with_data(BatchList(batches), shard=False)

    def whole(self) -> Problem:
        return self.on(per_example.split(self.dataset, self.n, CHUNK))

    def draw(self, B: int) -> Problem:
        """Return the problem on a random mini-batch of ``B`` samples (all of them at ``n``).

        Returns
        -------
        Problem
            The mini-batch problem.
        """
        if self.n <= B:
            return self.whole()
        index = torch.randperm(self.n, generator=self.generator)[:B]
        return self.on(per_example.split(per_example.select(self.dataset, index), B, CHUNK))


@dataclass
class Measure:
    """The quantity measured on every mini-batch and how a learning rate is read off it.

    Attributes
    ----------
    measure : {"batch sharpness", "critical sharpness"}
        What each draw gives.
    preconditioner : {"identity", "optimizer state", "steady state"}
        What the numbers rest on.
    exactness : str
        How exact the per-batch rule is (see :class:`~landscape.LearningRateResult`).
    method : str
        One line for the result.
    lr : float or None
        The learning rate the optimizer runs at (the reference group's), when known.
    fixed : FrozenLinearization or None
        The linearization at every batch size (identity or the optimizer's state).
    steady : OptimizerSettings or None
        Adam's hyperparameters, for the steady state at each batch size.
    optimizers : list
        The instances whose update the critical sharpness follows.
    """

    measure: str
    preconditioner: str
    exactness: str
    method: str
    lr: float | None = None
    fixed: FrozenLinearization | None = None
    steady: OptimizerSettings | None = None
    optimizers: list[Any] = field(default_factory=list)
    moments: tuple[Tensor, Tensor] | None = None
    _linearizations: dict[int, FrozenLinearization] = field(default_factory=dict)
    _shares: dict[int, list[PreconditionerShares]] = field(default_factory=dict)
    _top: tuple[int, Tensor] | None = None

    @property
    def critical(self) -> bool:
        return self.measure == CRITICAL

    def linearization(self, B: int, n: int) -> FrozenLinearization:
        """Return the frozen linearization at batch size ``B`` (the steady state's per ``B``).

        Returns
        -------
        FrozenLinearization
            The linearization.
        """
        if self.fixed is not None:
            return self.fixed
        if B not in self._linearizations:
            s = self.steady
            assert s is not None and self.moments is not None
            self._linearizations[B] = steady_state_linearization(*self.moments, B, n, optimizer=s)
        return self._linearizations[B]

    def coefficient(self, n: int) -> float:
        """Return the threshold coefficient: 2 for the critical sharpness, else the recursion's.

        Returns
        -------
        float
            :math:`c` at the current learning rate.
        """
        return 2.0 if self.critical else self.linearization(n, n).coefficient

    def operator(self, H: LinearOperator, B: int, n: int) -> LinearOperator:
        r"""Return the operator whose top eigenvalue is measured on a mini-batch Hessian.

        Returns
        -------
        LinearOperator
            :math:`P^{-1/2}(\pm H + W)P^{-1/2}`.
        """
        return preconditioned_operator(H, self.linearization(B, n))

    def limit(self, B: int, n: int, sharpness: float) -> float:
        """Return the learning rate at which ``sharpness`` is marginal at batch size ``B``.

        Returns
        -------
        float
            ``nan`` for a ``nan`` sharpness, ``inf`` for a non-positive one.
        """
        if math.isnan(sharpness):
            return math.nan
        if not sharpness > 0:
            return math.inf
        if self.critical:
            return 2.0 / sharpness
        return self.linearization(B, n).max_lr(sharpness)

    def observe(self, B: int, n: int, vector: Tensor) -> None:
        """Keep what the notes need from a draw's top eigenvector."""
        if self.moments is not None:
            shares = preconditioner_shares(
                *self.moments,
                B,
                n,
                eps=self.steady.eps,
                direction=vector,  # type: ignore[union-attr]
            )
            self._shares.setdefault(B, []).append(shares)
        if self._top is None or self._top[0] <= B:
            self._top = (B, vector)

    def finish(self, table: dict[str, Any], sizes: list[int], n: int, notes: list[str]) -> None:
        """Withhold the numbers the steady state says nothing about; note what they rest on."""
        if not self.critical:  # the critical sharpness's note says what it rests on
            notes.append(PRECONDITIONER_NOTES[self.preconditioner])
        if self.fixed is not None and self._top is not None:
            share = epsilon_share(self.fixed, self._top[1])
            if share is not None and share > 0.5:
                notes.append(epsilon_note(share))
        for i, B in enumerate(sizes):
            if B not in self._shares:
                continue
            shares = _mean_shares(self._shares[B])
            withheld = float(table["lr_max"][i])
            note = steady_state_note(shares, B, n, withheld=withheld)
            if note:
                notes.append(note)
            if says_nothing(shares):
                for key in ("lr_max", "lr_max_low", "lr_max_high", "lr_fit"):
                    table[key][i] = math.nan


def _mean_shares(shares: list[PreconditionerShares]) -> PreconditionerShares:
    return PreconditionerShares(
        noise=float(np.mean([s.noise for s in shares])),
        mean=float(np.mean([s.mean for s in shares])),
        eps=float(np.mean([s.eps for s in shares])),
        gradient_snr=shares[0].gradient_snr,
    )


def choose_measure(run: Run, settings: OptimizerSettings, instances: list[Any]) -> Measure:
    """Choose the measure for the optimizer (see the module table).

    Parameters
    ----------
    run : Run
        The problem and data.
    settings : OptimizerSettings
        The optimizer's settings (for a name) or its description (for instances).
    instances : list
        The optimizer instances (empty for a name or settings).

    Returns
    -------
    Measure
        The measure.

    Raises
    ------
    ValueError
        For ``kind="other"`` settings without an instance.
    """
    if not instances:
        if settings.kind == "adam":
            return _steady(run, settings, "")
        if settings.kind == "other":
            raise ValueError(
                f"OptimizerSettings('other', name={settings.name!r}) has no threshold of its "
                "own: pass the optimizer instance (optimizer=opt)."
            )
        fixed = settings_linearization(settings, run.problem.space)
        return Measure(
            BATCH, IDENTITY, "exact",
            "lambda_1 of mini-batch Hessians (Granziol et al. heuristic)",
            lr=settings.lr, fixed=fixed,
        )  # fmt: skip
    if len(instances) > 1:
        why = "several optimizers train the model together: their updates are measured at once"
        return _critical(instances, why, run.notes)
    (optimizer,) = instances
    try:
        lin = linearize(optimizer, run.problem)
    except MissingOptimizerState:
        base = torch_class(optimizer)
        name = type(optimizer).__name__
        if base is torch.optim.Adam:
            return _steady(run, _adam_settings(optimizer), name)
        why = f"{name} has not stepped yet: its preconditioner is defined by its state"
        return _critical(instances, why, run.notes)
    except NotLinearizable as error:
        why = str(error).split("; use the critical sharpness")[0].split(": use the critical")[0]
        return _critical(instances, why.rstrip("."), run.notes)
    run.notes.extend(lin.notes)
    preconditioner = IDENTITY if lin.preconditioner is None else STATE
    what = "(H_S + W)" if lin.preconditioner is None else "P^-1/2 (H_S + W) P^-1/2"
    source = "" if lin.preconditioner is None else ", P from the optimizer's state (next step)"
    method = f"{lin.optimizer}: lambda_max of {what} of mini-batches{source}"
    return Measure(BATCH, preconditioner, lin.exactness, method, lr=lin.lr, fixed=lin)


def _steady(run: Run, settings: OptimizerSettings, name: str) -> Measure:
    if name:
        run.notes.append(
            f"the {name} optimizer has not stepped yet (no second-moment state): Adam's "
            "steady state at this point stands in for its preconditioner."
        )
    return Measure(
        BATCH,
        STEADY,
        "steady state",
        "Adam: lambda_max(P_B^-1/2 H_S P_B^-1/2), P_B = Adam's steady-state preconditioner "
        "at batch size B from per-example gradient moments",
        lr=settings.lr,
        steady=settings,
        moments=per_example.gradient_moments(run.whole()),
    )


def _adam_settings(optimizer: torch.optim.Optimizer) -> OptimizerSettings:
    group = optimizer.param_groups[0]
    decoupled = isinstance(optimizer, torch.optim.AdamW) or bool(
        group.get("decoupled_weight_decay", False)
    )
    wd = max(float(g.get("weight_decay") or 0.0) for g in optimizer.param_groups)
    return OptimizerSettings(
        "adam",
        lr=float(group["lr"]),
        weight_decay=0.0 if decoupled else wd,
        decoupled_weight_decay=wd if decoupled else 0.0,
        betas=(float(group["betas"][0]), float(group["betas"][1])),
        eps=float(group["eps"]),
    )


def _critical(instances: list[Any], why: str, notes: list[str]) -> Measure:
    name = " + ".join(type(o).__name__ for o in instances)
    notes.append(
        f"{why}. Measured instead: the critical sharpness 2/eta_c along the optimizer's own "
        "next update on each mini-batch (Kalra et al. 2026), computed from its state "
        "(momentum, second moments): the smallest learning rate at which that step raises "
        "the batch's loss. It predicts whether the next step raises "
        "the loss, not whether training diverges: momentum, adaptive preconditioners and "
        "normalized updates (Muon, sign methods) change that, and normalized updates "
        "oscillate at an amplitude set by the learning rate rather than diverge. verify=True "
        "runs the training bursts that settle it."
    )
    return Measure(
        CRITICAL,
        STATE,
        "generic",
        f"{name}: critical sharpness 2/eta_c along its own update on each mini-batch",
        lr=float(instances[0].param_groups[0]["lr"]),
        optimizers=list(instances),
    )


def critical_samples(
    run: Run, sizes: list[int], num_batches: int, measure: Measure, progress: bool
) -> tuple[list[np.ndarray], int]:
    """Return the critical sharpness of every drawn mini-batch, per batch size.

    A draw where the loss rises at any step along the update (a normalized update near a
    minimum) says nothing about a threshold: it is ``nan``, and noted.

    Returns
    -------
    tuple
        Per batch size the array of samples, and the passes over mini-batches used.
    """
    bar = progress_bar(progress, sum(1 if run.n == B else num_batches for B in sizes))
    samples: list[np.ndarray] = []
    passes = rising = 0
    try:
        for B in sizes:
            values = []
            for _ in range(1 if run.n == B else num_batches):
                result = critical_sharpness(run.draw(B), optimizer=measure.optimizers)
                passes += result.num_evaluations + 1
                rises = result.factor == 0
                rising += rises
                values.append(math.nan if rises else result.sharpness)
                for note in result.notes:
                    if note not in run.notes and "rises at any step" not in note:
                        run.notes.append(note)
                if bar is not None:
                    bar.update(1)
            samples.append(np.asarray(values, dtype=float))
    finally:
        if bar is not None:
            bar.close()
    if rising:
        run.notes.append(
            f"on {rising} mini-batch(es) the loss rose at any step along the update (a "
            "normalized update near a minimum, where every learning rate raises the loss): "
            "they say nothing about a threshold and are left out (no number where all are)."
        )
    return samples, passes


def progress_bar(progress: bool, total: int) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="lr_max")
