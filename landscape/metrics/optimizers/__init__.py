r"""Stability of every optimizer: frozen-state thresholds and optimizer-agnostic measures.

* :mod:`~landscape.metrics.optimizers.frozen`: :func:`linearize` an optimizer's next step with
  its state held fixed (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
  SparseAdam, ASGD, Adafactor's linear part), and the per-mode recursion and its coefficient
  (:mod:`~landscape.metrics.optimizers.recursion`);
* :mod:`~landscape.metrics.optimizers.stability`: the preconditioned sharpness
  :math:`\lambda_{\max}(P^{-1}H)` of a linearization and its learning-rate limit;
* :mod:`~landscape.metrics.optimizers.steady_state`: Adam without its state, and when the frozen
  preconditioner says nothing;
* :mod:`~landscape.metrics.optimizers.critical`: the critical sharpness along any optimizer's own
  update (Muon, Lion, Rprop, L-BFGS, third-party optimizers);
* :mod:`~landscape.metrics.optimizers.generalized`: the generalized sharpness in Muon's norm;
* :mod:`~landscape.metrics.optimizers.support`: which measure answers for which optimizer.
"""

from landscape.metrics.optimizers.critical import (
    CriticalSharpness,
    CriticalStep,
    critical_sharpness,
    critical_step,
    update_direction,
)
from landscape.metrics.optimizers.frozen import (
    FrozenLinearization,
    MissingOptimizerState,
    NotLinearizable,
    linearize,
    radam_rectification,
)
from landscape.metrics.optimizers.generalized import (
    GeneralizedSharpness,
    generalized_sharpness,
    muon_scales,
    polar,
)
from landscape.metrics.optimizers.recursion import ModeRecursion
from landscape.metrics.optimizers.stability import (
    FrozenStability,
    frozen_stability,
    preconditioned_operator,
)
from landscape.metrics.optimizers.steady_state import (
    PreconditionerShares,
    SteadyStateStability,
    preconditioner_shares,
    steady_state_linearization,
    steady_state_preconditioner,
    steady_state_stability,
)
from landscape.metrics.optimizers.support import OptimizerSupport, describe_optimizer

__all__ = [
    "CriticalSharpness",
    "CriticalStep",
    "FrozenLinearization",
    "FrozenStability",
    "GeneralizedSharpness",
    "MissingOptimizerState",
    "ModeRecursion",
    "NotLinearizable",
    "OptimizerSupport",
    "PreconditionerShares",
    "SteadyStateStability",
    "critical_sharpness",
    "critical_step",
    "describe_optimizer",
    "frozen_stability",
    "generalized_sharpness",
    "linearize",
    "muon_scales",
    "polar",
    "preconditioned_operator",
    "preconditioner_shares",
    "radam_rectification",
    "steady_state_linearization",
    "steady_state_preconditioner",
    "steady_state_stability",
    "update_direction",
]
