r"""Linear-stability thresholds of SGD, heavy-ball, Nesterov and Adam, and Adam's preconditioner.

On a quadratic :math:`L(\theta) = \tfrac12 \theta^\top H \theta` every optimizer below is a
linear recursion per eigendirection of :math:`H` (eigenvalue :math:`\lambda`); it is stable
when the spectral radius of its companion matrix is at most one, which gives

=====================================  ==================================================
optimizer (PyTorch semantics)          stable iff
=====================================  ==================================================
GD ``SGD(lr)``                         :math:`\lambda < 2/\eta`
heavy ball ``SGD(lr, momentum=β)``     :math:`\lambda < (2+2\beta)/\eta`
Nesterov ``SGD(..., nesterov=True)``   :math:`\lambda < (2+2\beta)/(\eta(1+2\beta))`
dampening ``d``                        :math:`H` enters as :math:`(1-d)H`
coupled ``weight_decay=w``             :math:`H` becomes :math:`H + wI`
Adam, preconditioner :math:`P` frozen  :math:`\lambda_{\max}(P^{-1}H) < c_A/\eta`,
                                       :math:`c_A = (2+2\beta_1)/(1-\beta_1)`
=====================================  ==================================================

(Cohen et al. 2021 for GD and momentum; Cohen et al. 2022, "Adaptive Gradient Methods at the
Edge of Stability", for Adam, whose preconditioner in PyTorch's indexing is
:math:`P_t = (1-\beta_1^t)\,\mathrm{diag}\big(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\big)`.)
Everything here is exact for quadratics and a local statement for networks.

Training frameworks hand out wrapped optimizers (Accelerate's ``AcceleratedOptimizer`` inside a
Hugging Face ``Trainer``, Lightning's ``LightningOptimizer``); :func:`unwrap_optimizer` finds
the torch optimizer inside them, and inside learning-rate schedulers, without importing the
frameworks. Every function here that takes an optimizer instance unwraps it first.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from landscape.params import ParamSpace
from landscape.records import Record

__all__ = [
    "OptimizerSettings",
    "adam_preconditioner",
    "optimizer_settings",
    "stability_threshold",
    "unwrap_optimizer",
]

OptimizerName = Literal["sgd", "momentum", "nesterov", "adam"]
_NAMES = ("sgd", "momentum", "nesterov", "adam")
#: ``kind="other"``: an optimizer instance whose threshold is not one of the four rules above;
#: it comes from its linearization or its own update (:mod:`landscape.metrics.optimizers`).
_KINDS = (*_NAMES, "other")

#: The wrappers that Hugging Face Accelerate (used by ``transformers.Trainer``) and PyTorch
#: Lightning put around an optimizer or a learning-rate scheduler, as ``(class.__module__,
#: class.__qualname__)`` of the wrapper class, mapped to the attribute holding the wrapped
#: object. Matched along the type's MRO, so subclasses count (Accelerate's
#: ``DeepSpeedOptimizerWrapper`` and ``MegatronLMOptimizerWrapper``, and the per-instance
#: ``Lightning<Name>`` / ``Fabric<Name>`` classes that Lightning builds so that ``isinstance``
#: checks against the wrapped optimizer's class pass), and nothing is imported.
_WRAPPERS: dict[tuple[str, str], str] = {
    ("accelerate.optimizer", "AcceleratedOptimizer"): "optimizer",
    ("accelerate.scheduler", "AcceleratedScheduler"): "scheduler",
    ("lightning.pytorch.core.optimizer", "LightningOptimizer"): "_optimizer",
    ("pytorch_lightning.core.optimizer", "LightningOptimizer"): "_optimizer",
    ("lightning.fabric.wrappers", "_FabricOptimizer"): "_optimizer",
    ("lightning_fabric.wrappers", "_FabricOptimizer"): "_optimizer",
    ("lightning.pytorch.utilities.types", "LRSchedulerConfig"): "scheduler",
    ("pytorch_lightning.utilities.types", "LRSchedulerConfig"): "scheduler",
}
_MAX_WRAPPERS = 8  # nesting depth followed by unwrap_optimizer (a guard against cycles)


def _wrapped(obj: Any) -> Any:
    """Return the object ``obj`` wraps (one level), or ``None`` if it wraps nothing known.

    Returns
    -------
    Any
        The wrapped optimizer or scheduler, or ``None``.
    """
    if obj is None or isinstance(obj, str):
        return None
    for cls in type(obj).__mro__:
        attribute = _WRAPPERS.get((cls.__module__, cls.__qualname__))
        if attribute is not None:
            return getattr(obj, attribute, None)
    if isinstance(obj, LRScheduler | ReduceLROnPlateau):  # torch and transformers schedulers
        return getattr(obj, "optimizer", None)
    if isinstance(obj, torch.optim.Optimizer):
        return None  # a torch optimizer that is not a known wrapper is the optimizer itself
    for attribute in ("_optimizer", "optimizer"):  # other wrappers, by the frameworks' convention
        inner = getattr(obj, attribute, None)
        if inner is not None and not isinstance(inner, str):
            return inner
    return None


def unwrap_optimizer(optimizer: Any) -> Any:
    """Return the torch optimizer inside framework wrappers and schedulers, or the argument.

    Follows, as often as they are nested:

    * ``accelerate.optimizer.AcceleratedOptimizer`` (what ``transformers.Trainer`` passes to
      its callbacks, and its DeepSpeed and Megatron-LM subclasses): ``.optimizer``;
    * ``accelerate.scheduler.AcceleratedScheduler``: ``.scheduler``;
    * Lightning's ``LightningOptimizer`` (``lightning.pytorch.core.optimizer`` and
      ``pytorch_lightning.core.optimizer``; what ``LightningModule.optimizers()`` returns) and
      Fabric's ``_FabricOptimizer`` (``lightning.fabric.wrappers``,
      ``lightning_fabric.wrappers``): ``._optimizer``;
    * Lightning's ``LRSchedulerConfig`` (what ``trainer.lr_scheduler_configs`` holds):
      ``.scheduler``;
    * a learning-rate scheduler (``torch.optim.lr_scheduler.LRScheduler`` or
      ``ReduceLROnPlateau``, hence those of ``transformers.optimization``): ``.optimizer``;
    * any other object that is not a ``torch.optim.Optimizer``: its ``._optimizer`` or
      ``.optimizer`` attribute.

    A ``torch.optim.Optimizer`` that is none of the wrappers above, and a string, are returned
    as they are. No framework is imported.

    Parameters
    ----------
    optimizer : Any
        An optimizer, a wrapper of one, a learning-rate scheduler, or an optimizer name.

    Returns
    -------
    Any
        The innermost object reached: a ``torch.optim.Optimizer`` when the chain ends in one.

    Examples
    --------
    >>> opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    >>> unwrap_optimizer(opt) is opt
    True
    >>> unwrap_optimizer(torch.optim.lr_scheduler.StepLR(opt, step_size=10)) is opt
    True
    """
    seen: set[int] = set()
    while len(seen) < _MAX_WRAPPERS:
        seen.add(id(optimizer))
        inner = _wrapped(optimizer)
        if inner is None or id(inner) in seen:
            return optimizer
        optimizer = inner
    return optimizer


@dataclass(frozen=True)
class OptimizerSettings(Record):
    """The hyperparameters that decide an optimizer's stability threshold.

    Attributes
    ----------
    kind : {"sgd", "momentum", "nesterov", "adam", "other"}
        The update rule (``"adam"`` covers AdamW and RMSProp-like ``beta1=0``). ``"other"``:
        an optimizer instance of another class (``RMSprop``, ``Muon``, a third-party one) or
        with per-group hyperparameters; its threshold comes from the instance itself
        (:func:`landscape.metrics.optimizers.linearize` or the critical sharpness), and
        :attr:`name` says which it is.
    lr : float or None
        The current learning rate, when known (from an optimizer instance or ``lr=``).
    momentum : float
        Heavy-ball / Nesterov coefficient (0 for ``"sgd"``).
    dampening : float
        PyTorch SGD dampening.
    weight_decay : float
        Coupled weight decay (added to the gradient, so to the Hessian); 0 for decoupled.
    decoupled_weight_decay : float
        AdamW's decoupled decay (``δ = lr * wd`` per step, which lowers the threshold by the
        factor ``1 - δ/2``).
    betas : tuple of float
        Adam's ``(beta1, beta2)``.
    eps : float
        Adam's epsilon (added after the square root).
    name : str or None
        The optimizer's class name(s) when read from an instance (``"AdamW"``,
        ``"Muon + AdamW"``).

    Raises
    ------
    ValueError
        For an unknown kind, a momentum kind without a momentum in (0, 1), or ``"other"``
        without a name.

    Examples
    --------
    >>> OptimizerSettings("momentum", lr=0.1, momentum=0.9).coefficient
    3.8
    >>> OptimizerSettings("other", name="Muon").key
    'Muon'
    """

    kind: Literal["sgd", "momentum", "nesterov", "adam", "other"]
    lr: float | None = None
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    decoupled_weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(
                f"unknown optimizer kind {self.kind!r}; expected one of {', '.join(_KINDS)}."
            )
        if self.kind in ("momentum", "nesterov") and not 0.0 < self.momentum < 1.0:
            raise ValueError(
                f"kind={self.kind!r} needs its momentum in (0, 1); got {self.momentum!r} (e.g. "
                f"OptimizerSettings({self.kind!r}, lr=0.1, momentum=0.9))."
            )
        if self.kind == "other" and not self.name:
            raise ValueError(
                "kind='other' describes an optimizer instance: pass the instance itself "
                "(optimizer=opt), whose class and state decide its threshold."
            )

    @property
    def key(self) -> str:
        """The name results are filed under: the kind, or the class name for ``"other"``."""
        return self.name if self.kind == "other" and self.name else self.kind

    @property
    def coefficient(self) -> float:
        """The threshold coefficient :math:`c`: stable iff sharpness < c / lr (see module doc).

        ``nan`` for ``"other"``, whose coefficient comes from its linearization.
        """
        if self.kind == "other":
            return math.nan
        return stability_threshold(
            self.kind, 1.0, momentum=self.momentum, dampening=self.dampening, beta1=self.betas[0]
        )


def stability_threshold(
    kind: OptimizerName,
    lr: float,
    *,
    momentum: float = 0.9,
    dampening: float = 0.0,
    beta1: float = 0.9,
) -> float:
    r"""Return the largest stable sharpness for an optimizer at learning rate ``lr``.

    .. math::
        \text{GD: } \frac{2}{\eta}, \quad
        \text{heavy ball: } \frac{2+2\beta}{\eta}, \quad
        \text{Nesterov: } \frac{2+2\beta}{\eta(1+2\beta)}, \quad
        \text{Adam: } \frac{2+2\beta_1}{(1-\beta_1)\eta}

    divided by :math:`1-d` for SGD dampening :math:`d`. For Adam the sharpness to compare is
    the preconditioned one, :math:`\lambda_{\max}(P^{-1}H)`.

    Parameters
    ----------
    kind : {"sgd", "momentum", "nesterov", "adam"}
        The update rule.
    lr : float
        Learning rate :math:`\eta > 0`.
    momentum : float, optional
        :math:`\beta` for ``"momentum"`` and ``"nesterov"`` (ignored otherwise).
    dampening : float, optional
        SGD dampening :math:`d \in [0, 1)`.
    beta1 : float, optional
        Adam's first-moment coefficient.

    Returns
    -------
    float
        The threshold on the (preconditioned, for Adam) top Hessian eigenvalue.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or out-of-range hyperparameters.

    References
    ----------
    Cohen, Kaur, Li, Kolter, Talwalkar (ICLR 2021), "Gradient Descent on Neural Networks
    Typically Occurs at the Edge of Stability"; Cohen et al. (2022), "Adaptive Gradient
    Methods at the Edge of Stability".

    Examples
    --------
    >>> stability_threshold("sgd", 0.1)
    20.0
    >>> round(stability_threshold("momentum", 0.1, momentum=0.9), 6)
    38.0
    >>> round(stability_threshold("adam", 0.001, beta1=0.9), 3)
    38000.0
    """
    if kind not in _NAMES:
        raise ValueError(f"unknown optimizer {kind!r}; expected one of {', '.join(_NAMES)}.")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive; got {lr!r}.")
    if not 0.0 <= dampening < 1.0:
        raise ValueError(f"dampening must be in [0, 1); got {dampening!r}.")
    if kind == "sgd":
        c = 2.0
    elif kind in ("momentum", "nesterov"):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}.")
        c = 2.0 + 2.0 * momentum
        if kind == "nesterov":
            c /= 1.0 + 2.0 * momentum
    else:
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1); got {beta1!r}.")
        c = (2.0 + 2.0 * beta1) / (1.0 - beta1)
    return c / ((1.0 - dampening) * lr)


def optimizer_settings(
    optimizer: str | OptimizerSettings | torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    lr: float | None = None,
    momentum: float = 0.9,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> OptimizerSettings:
    """Read (or assemble) the hyperparameters that decide the stability threshold.

    Parameters
    ----------
    optimizer : {"sgd", "momentum", "nesterov", "adam"}, OptimizerSettings or Optimizer
        A name, settings (returned as they are), or an optimizer instance (or a framework
        wrapper of one, or a learning-rate scheduler driving one: see
        :func:`unwrap_optimizer`), or a sequence of instances that train one model together
        (``[muon, adamw]``). ``SGD``, ``Adam`` and ``AdamW`` with one set of
        hyperparameters across their groups give their kind, read from ``param_groups``
        (lr, momentum, nesterov, dampening, betas, eps, weight decay); every other instance
        — another class, per-group hyperparameters, a subclass that overrides ``step``,
        several optimizers — gives ``kind="other"`` with its class name(s) and learning
        rate: its threshold comes from the instance (:mod:`landscape.metrics.optimizers`).
    lr, momentum, betas, eps, weight_decay : optional
        Used with a name (ignored for an instance).

    Returns
    -------
    OptimizerSettings
        The settings.

    Raises
    ------
    TypeError
        If ``optimizer`` is neither a name nor (a wrapper of) a ``torch.optim.Optimizer``.
    ValueError
        For an unknown name.

    Examples
    --------
    >>> opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9, nesterov=True)
    >>> s = optimizer_settings(opt)
    >>> s.kind, s.lr, s.momentum
    ('nesterov', 0.1, 0.9)
    >>> s = optimizer_settings(torch.optim.RMSprop(nn.Linear(2, 1).parameters(), lr=1e-3))
    >>> s.kind, s.name, s.lr
    ('other', 'RMSprop', 0.001)
    """
    if isinstance(optimizer, OptimizerSettings):
        return optimizer
    if isinstance(optimizer, str):
        return _named_settings(optimizer, lr, momentum, betas, eps, weight_decay)
    if isinstance(optimizer, list | tuple):
        if len(optimizer) == 1:
            return optimizer_settings(optimizer[0])
        inner = [_instance(o) for o in optimizer]
        if not inner:
            raise ValueError("optimizer is an empty sequence: give one or more optimizers.")
        return OptimizerSettings(
            "other",
            lr=float(inner[0].param_groups[0]["lr"]),
            name=" + ".join(type(o).__name__ for o in inner),
        )
    instance = _instance(optimizer)
    return _instance_settings(instance)


def _named_settings(
    optimizer: str,
    lr: float | None,
    momentum: float,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
) -> OptimizerSettings:
    kind = optimizer.lower()
    if kind not in _NAMES:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; expected one of {', '.join(_NAMES)}, or pass "
            "the optimizer instance itself (any torch.optim or third-party optimizer)."
        )
    return OptimizerSettings(
        kind=kind,  # type: ignore[arg-type]
        lr=None if lr is None else float(lr),
        momentum=float(momentum) if kind in ("momentum", "nesterov") else 0.0,
        weight_decay=float(weight_decay),
        betas=(float(betas[0]), float(betas[1])),
        eps=float(eps),
    )


def _instance(given: Any) -> torch.optim.Optimizer:
    """Return the torch optimizer inside ``given``.

    Returns
    -------
    torch.optim.Optimizer
        The unwrapped optimizer.

    Raises
    ------
    TypeError
        If there is none (naming what was given).
    """
    optimizer = unwrap_optimizer(given)
    if not isinstance(optimizer, torch.optim.Optimizer):
        inside = "" if optimizer is given else f" (unwrapped to {type(optimizer).__name__})"
        raise TypeError(
            "optimizer must be a name or a torch.optim.Optimizer (or a wrapper of one); got "
            f"{type(given).__name__}{inside}."
        )
    return optimizer


def _runs_step_of(optimizer: torch.optim.Optimizer, cls: type) -> bool:
    """Whether the optimizer is a ``cls`` that runs ``cls``'s own ``step`` (not an override).

    Returns
    -------
    bool
        ``True`` for an instance of ``cls`` (or a subclass keeping its ``step``).
    """
    step = getattr(type(optimizer), "step", None)
    return isinstance(optimizer, cls) and inspect.unwrap(step) is inspect.unwrap(cls.step)


def _instance_settings(optimizer: torch.optim.Optimizer) -> OptimizerSettings:
    groups = optimizer.param_groups
    name = type(optimizer).__name__
    lr_value = float(groups[0]["lr"])
    sgd = _runs_step_of(optimizer, torch.optim.SGD)
    adam = _runs_step_of(optimizer, torch.optim.Adam)
    other = OptimizerSettings("other", lr=lr_value, name=name)
    if not (sgd or adam):
        return other
    keys = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "betas", "eps")
    keys += ("maximize", "amsgrad")
    decoupled = adam and (
        isinstance(optimizer, torch.optim.AdamW) or bool(groups[0].get("decoupled_weight_decay"))
    )
    if decoupled:
        # Decoupled decay does not enter the coefficient's rule (it lowers the threshold by
        # 1 - lr*wd/2): the usual "decay / no decay" groups of a Hugging Face Trainer differ
        # only in it, and the largest is used.
        keys = tuple(k for k in keys if k != "weight_decay")
    first = {k: groups[0].get(k) for k in keys}
    if any(g.get(k) != first[k] for g in groups[1:] for k in keys) or first.get("maximize"):
        return other  # per-group hyperparameters: the linearization folds them into P
    if sgd:
        beta = float(first["momentum"] or 0.0)
        kind = "sgd" if beta == 0 else ("nesterov" if first["nesterov"] else "momentum")
        return OptimizerSettings(
            kind=kind,  # type: ignore[arg-type]
            lr=lr_value,
            momentum=beta,
            dampening=float(first["dampening"] or 0.0),
            weight_decay=float(first["weight_decay"] or 0.0),
            name=name,
        )
    wd = max(float(g.get("weight_decay") or 0.0) for g in groups)
    b1, b2 = first["betas"]
    return OptimizerSettings(
        kind="adam",
        lr=lr_value,
        weight_decay=0.0 if decoupled else wd,
        decoupled_weight_decay=wd if decoupled else 0.0,
        betas=(float(b1), float(b2)),
        eps=float(first["eps"]),
        name=name,
    )


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, space: ParamSpace, named: Mapping[str, Tensor]
) -> Tensor:
    r"""Return Adam's diagonal preconditioner :math:`P_t` from its state, flattened like ``space``.

    .. math::
        P_t = (1-\beta_1^t)\,\mathrm{diag}\Big(\sqrt{v_t / (1-\beta_2^t)} + \epsilon\Big)

    with :math:`t` = ``state["step"]`` and :math:`v_t` = ``state["exp_avg_sq"]`` (or
    ``max_exp_avg_sq`` with ``amsgrad``), exactly as ``torch.optim.Adam`` applies it: the
    update is :math:`\theta_{t+1} = \theta_t - \eta P_t^{-1} m_t` with the un-corrected
    first moment :math:`m_t`, so the first-moment bias correction sits in :math:`P_t`, and
    :math:`\epsilon` is added after the square root (Cohen et al. 2022).

    Parameters
    ----------
    optimizer : torch.optim.Adam or torch.optim.AdamW
        An optimizer that has taken at least one step (or a wrapper of one: see
        :func:`unwrap_optimizer`).
    space : ParamSpace
        The parameters, in the order of the flat vectors.
    named : mapping of str to Tensor
        ``{name: parameter}`` of the model, to find each parameter's optimizer state.

    Returns
    -------
    Tensor
        The diagonal of :math:`P_t`, shape ``(space.dim,)``.

    Raises
    ------
    ValueError
        If a parameter is not optimized by ``optimizer`` or has no state yet.

    Examples
    --------
    >>> model = nn.Linear(2, 1)
    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    >>> model(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> space = ls.ParamSpace.from_module(model)
    >>> adam_preconditioner(opt, space, dict(model.named_parameters())).shape
    torch.Size([3])
    """
    optimizer = unwrap_optimizer(optimizer)
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    parts = []
    for name in space.names:
        p = named[name]
        group = groups.get(id(p))
        if group is None:
            raise ValueError(f"parameter {name!r} is not optimized by the given optimizer.")
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            raise ValueError(
                f"the optimizer has no state for {name!r} yet; take at least one step first "
                "(Adam's preconditioner is defined by its second-moment state)."
            )
        beta1, beta2 = group["betas"]
        step = float(state["step"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        v = v.detach().to(dtype=space.dtype, device=space.device)
        diag = (1.0 - beta1**step) * ((v / (1.0 - beta2**step)).sqrt() + group["eps"])
        parts.append(diag.reshape(-1))
    return torch.cat(parts)
