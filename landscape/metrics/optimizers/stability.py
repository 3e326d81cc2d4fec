r"""The preconditioned sharpness of a frozen linearization, and where it puts the learning rate.

Given a curvature operator :math:`H` (the Hessian of the mean loss, or of a mini-batch) and a
:class:`~landscape.metrics.optimizers.frozen.FrozenLinearization`, the quantity that decides
stability is

.. math::
    a = \lambda_{\max}\big(P^{-1}(H + W)\big)
      = \lambda_{\max}\big(P^{-1/2}(H + W)P^{-1/2}\big),

computed on the symmetric form by Lanczos (the same eigenvalues; Cohen et al. 2022 measure
Adam's "preconditioned sharpness" this way). The iteration is stable iff :math:`a` is below
:attr:`~landscape.metrics.optimizers.frozen.FrozenLinearization.stable_sharpness`, and the
largest stable learning rate is
:meth:`~landscape.metrics.optimizers.frozen.FrozenLinearization.max_lr` of :math:`a`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from landscape.linalg.eigen import eigenvalues
from landscape.metrics.optimizers.frozen import FrozenLinearization
from landscape.operators.base import IdentityOperator, LinearOperator
from landscape.operators.scaled import diagonal_congruence
from landscape.records import Record

__all__ = [
    "FrozenStability",
    "epsilon_note",
    "epsilon_share",
    "frozen_stability",
    "preconditioned_operator",
]


def preconditioned_operator(
    H: LinearOperator, linearization: FrozenLinearization
) -> LinearOperator:
    r"""Return the symmetric operator :math:`P^{-1/2}(\pm H + W)P^{-1/2}` of a linearization.

    The sign is minus when the optimizer maximizes. Nothing is computed until products are.

    Parameters
    ----------
    H : LinearOperator
        The curvature (e.g. :class:`~landscape.operators.hessian.HessianOperator`), over the
        same parameter space as the linearization.
    linearization : FrozenLinearization
        From :func:`~landscape.metrics.optimizers.frozen.linearize`.

    Returns
    -------
    LinearOperator
        The operator whose top eigenvalue is the preconditioned sharpness.

    Raises
    ------
    ValueError
        If the sizes disagree.

    Examples
    --------
    >>> from landscape.operators.dense import DenseOperator
    >>> from landscape.metrics.optimizers.frozen import FrozenLinearization
    >>> from landscape.metrics.optimizers.recursion import ModeRecursion
    >>> lin = FrozenLinearization("Adam", 1e-3, ModeRecursion(0.9, 0.1, 0.0, 1.0),
    ...                           preconditioner=torch.tensor([2.0, 0.5], dtype=torch.float64))
    >>> H = DenseOperator(torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)))
    >>> A = preconditioned_operator(H, lin).to_dense()      # P^-1/2 H P^-1/2
    >>> [round(x, 12) for x in A.diagonal().tolist()]
    [2.0, 2.0]
    """
    A: LinearOperator = -H if linearization.maximize else H
    n = H.shape[0]
    for name, vector in (
        ("preconditioner", linearization.preconditioner),
        ("weight_decay", linearization.weight_decay),
    ):
        if vector is not None and vector.numel() != n:
            raise ValueError(
                f"the linearization's {name} has {vector.numel()} entries; the operator acts "
                f"on {n}: build both over the same parameters."
            )
    if linearization.weight_decay is not None:
        eye = IdentityOperator(n, dtype=H.dtype, device=H.device)
        A = A + diagonal_congruence(eye, linearization.weight_decay.to(H.dtype).sqrt())
    if linearization.preconditioner is not None:
        A = diagonal_congruence(A, linearization.preconditioner.to(H.dtype).rsqrt())
    return A


def epsilon_share(linearization: FrozenLinearization, direction: Tensor) -> float | None:
    r"""Return the share of :math:`P` that :math:`\epsilon` makes up along a direction.

    :math:`\sum_i u_i^2\,\epsilon_i/P_i \,/\, \sum_i u_i^2` for the direction :math:`u`
    (the top eigenvector of the preconditioned operator).

    Parameters
    ----------
    linearization : FrozenLinearization
        With its :attr:`~FrozenLinearization.epsilon` part.
    direction : Tensor
        :math:`u`, flat.

    Returns
    -------
    float or None
        The share in [0, 1], or ``None`` without a preconditioner or an epsilon part.
    """
    if linearization.epsilon is None or linearization.preconditioner is None:
        return None
    weights = direction.square() / direction.square().sum()
    ratio = linearization.epsilon.to(weights) / linearization.preconditioner.to(weights)
    return float((weights * ratio).sum())


def epsilon_note(share: float) -> str:
    """Return the note for a threshold set by epsilon-dominated coordinates.

    Returns
    -------
    str
        What the threshold means there.
    """
    return (
        f"the threshold is set by coordinates whose preconditioner is mostly epsilon "
        f"(share {share:.2g} along the top direction): their gradients vanish (inputs "
        "that are always zero, dead units, a full batch at a minimum). The frozen "
        "threshold holds for the frozen dynamics, but left free the optimizer raises "
        "its second moment there as soon as those coordinates move."
    )


@dataclass(frozen=True)
class FrozenStability(Record):
    r"""The preconditioned sharpness of an optimizer's frozen step, and its learning-rate limit.

    Attributes
    ----------
    optimizer : str
        The optimizer's class name.
    sharpness : float
        :math:`a = \lambda_{\max}(P^{-1}(H+W))` (the raw :math:`\lambda_{\max}(H+W)` when
        :math:`P = I`).
    stable_sharpness : float
        The largest stable :math:`a` at the current learning rate (:math:`c/s`).
    ratio : float
        ``sharpness / stable_sharpness``: above 1 the frozen iteration is unstable.
    lr : float
        The current learning rate.
    lr_max : float
        The learning rate at which :math:`a` is marginal.
    coefficient : float
        :math:`c` at the current learning rate.
    label : str
        Which preconditioner it rests on.
    exactness : str
        See :class:`~landscape.metrics.optimizers.frozen.FrozenLinearization`.
    epsilon_share : float or None
        The share of :math:`P` that the optimizer's :math:`\epsilon` makes up along the top
        direction (weights :math:`u_i^2` of the top eigenvector): above ½ the threshold is
        set by coordinates whose gradients vanish, not by curvature (a note says so).
    converged : bool
        Whether the eigensolver met its tolerance.
    num_hvps : int
        Hessian-vector products used.
    eigenvector : Tensor or None
        The top eigenvector of the symmetric form :math:`P^{-1/2}(H+W)P^{-1/2}` (kept out of
        the stored record).
    notes : tuple of str
        What the numbers assume.
    """

    optimizer: str
    sharpness: float
    stable_sharpness: float
    ratio: float
    lr: float
    lr_max: float
    coefficient: float
    label: str
    exactness: str
    epsilon_share: float | None
    converged: bool
    num_hvps: int
    eigenvector: Tensor | None = field(default=None, metadata={"record": False}, repr=False)
    notes: tuple[str, ...] = ()


def frozen_stability(
    H: LinearOperator,
    linearization: FrozenLinearization,
    *,
    tol: float = 1e-6,
    seed: int | torch.Generator | None = 0,
    v0: Tensor | None = None,
    max_matvecs: int | None = None,
) -> FrozenStability:
    r"""Compute the preconditioned sharpness of a frozen step and its learning-rate limit.

    Parameters
    ----------
    H : LinearOperator
        The curvature over the linearization's parameter space.
    linearization : FrozenLinearization
        From :func:`~landscape.metrics.optimizers.frozen.linearize`.
    tol : float, optional
        Relative residual tolerance of the eigenvalue.
    seed : int or torch.Generator, optional
        Randomness of the starting vector.
    v0 : Tensor, optional
        Starting vector (e.g. the previous :attr:`FrozenStability.eigenvector`).
    max_matvecs : int, optional
        Budget of products.

    Returns
    -------
    FrozenStability
        Sharpness, threshold, ratio and ``lr_max``.

    Examples
    --------
    >>> from landscape.operators.dense import DenseOperator
    >>> model = nn.Linear(2, 1, bias=False)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> lin = ls.metrics.optimizers.linearize(opt, model)
    >>> H = DenseOperator(torch.diag(torch.tensor([19.0, 1.0])))
    >>> r = frozen_stability(H, lin)
    >>> round(r.sharpness, 4), round(r.ratio, 4), round(r.lr_max, 4)
    (19.0, 0.5, 0.2)
    """
    A = preconditioned_operator(H, linearization)
    result = eigenvalues(A, k=1, tol=tol, seed=seed, v0=v0, max_matvecs=max_matvecs)
    a = float(result.values[0])
    vector = result.vectors[:, 0]
    notes = linearization.notes
    share = epsilon_share(linearization, vector)
    if share is not None and share > 0.5:
        notes = (*notes, epsilon_note(share))
    return FrozenStability(
        optimizer=linearization.optimizer,
        sharpness=a,
        stable_sharpness=linearization.stable_sharpness,
        ratio=linearization.ratio(a),
        lr=linearization.lr,
        lr_max=linearization.max_lr(a),
        coefficient=linearization.coefficient,
        label=linearization.label,
        exactness=linearization.exactness,
        epsilon_share=share,
        converged=bool(result.all_converged),
        num_hvps=int(result.num_matvecs),
        eigenvector=vector,
        notes=notes,
    )
