r"""Which stability measure answers for which optimizer, and how exact it is.

Every optimizer is accepted; what differs is the kind of answer:

==========================================================  =====================  ============
optimizer (``torch.optim``)                                 measure                exactness
==========================================================  =====================  ============
SGD (plain, momentum, Nesterov, dampening), ASGD            frozen preconditioner  exact
Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam,     frozen preconditioner  frozen state
RAdam, SparseAdam
Adafactor                                                   frozen preconditioner  linear part
Muon                                                        critical sharpness,    generic
                                                            generalized sharpness
Rprop, LBFGS, any other optimizer (Lion, third-party)       critical sharpness     generic
==========================================================  =====================  ============

"frozen preconditioner": :func:`~landscape.metrics.optimizers.frozen.linearize` and
:func:`~landscape.metrics.optimizers.stability.frozen_stability` (a threshold on
:math:`\lambda_{\max}(P^{-1}H)` that is exact for the linear dynamics with the optimizer's
state held fixed). "critical sharpness":
:func:`~landscape.metrics.optimizers.critical.critical_sharpness`, the step along the
optimizer's own update at which the loss starts to rise (Kalra et al. 2026), which needs
nothing but the update. "generalized sharpness":
:func:`~landscape.metrics.optimizers.generalized.generalized_sharpness`, the sharpness in the
norm whose steepest descent Muon approximates (Islamov et al. 2026).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from landscape.metrics.optimizers.frozen import _NONLINEAR, _READERS, torch_class
from landscape.metrics.thresholds import unwrap_optimizer
from landscape.records import Record

__all__ = ["OptimizerSupport", "describe_optimizer"]

_EXACT = {"SGD", "ASGD"}
_LINEAR_PART = {"Adafactor"}


@dataclass(frozen=True)
class OptimizerSupport(Record):
    """How landscape answers stability questions for one optimizer.

    Attributes
    ----------
    optimizer : str
        The class name.
    measure : {"frozen preconditioner", "critical sharpness"}
        The primary measure.
    exactness : {"exact", "frozen state", "linear part", "generic"}
        How exact the primary measure is (see
        :class:`~landscape.metrics.optimizers.frozen.FrozenLinearization`; ``"generic"``: a
        measurement along the optimizer's own update, no threshold theory).
    also : tuple of str
        Further measures that apply.
    reason : str
        Why, in a sentence.
    """

    optimizer: str
    measure: str
    exactness: str
    also: tuple[str, ...]
    reason: str


def describe_optimizer(optimizer: Any) -> OptimizerSupport:
    """Say which stability measure applies to an optimizer (an instance or a class).

    Never raises for an optimizer: unknown ones get the critical sharpness.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer, a wrapper of one, or an optimizer class
        The optimizer.

    Returns
    -------
    OptimizerSupport
        The measure, its exactness and the reason.

    Examples
    --------
    >>> describe_optimizer(torch.optim.AdamW).measure
    'frozen preconditioner'
    >>> s = describe_optimizer(torch.optim.Muon)
    >>> s.measure, s.also
    ('critical sharpness', ('generalized sharpness (spectral norm per matrix)',))
    >>> describe_optimizer(object()).measure
    'critical sharpness'
    """
    if not isinstance(optimizer, type):
        optimizer = unwrap_optimizer(optimizer)
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    name = cls.__name__
    base = torch_class(cls) if hasattr(cls, "step") else None
    if base is not None and base.__name__ in _READERS:
        key = base.__name__
        if key in _EXACT:
            exactness, reason = "exact", "its step is linear in the parameters on a quadratic"
        elif key in _LINEAR_PART:
            exactness = "linear part"
            reason = (
                "its step is linear with the factored second moment and relative step held "
                "fixed, up to update clipping"
            )
        else:
            exactness = "frozen state"
            reason = "its step is a fixed linear map of the gradient with its state held fixed"
        return OptimizerSupport(
            name, "frozen preconditioner", exactness, ("critical sharpness",), reason
        )
    if base is not None and base.__name__ in _NONLINEAR:
        also = (
            ("generalized sharpness (spectral norm per matrix)",) if base.__name__ == "Muon" else ()
        )
        return OptimizerSupport(
            name, "critical sharpness", "generic", also, _NONLINEAR[base.__name__]
        )
    return OptimizerSupport(
        name,
        "critical sharpness",
        "generic",
        (),
        "its update rule is unknown to landscape (or a subclass overrides step): only its "
        "own update is used",
    )
