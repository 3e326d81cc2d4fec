r"""Generalized sharpness in Muon's norm: the curvature seen by a steepest descent in that norm.

Islamov, Crawshaw, Cohen & Gower (2026) read the edge of stability through directional
smoothness and extend sharpness to an arbitrary norm :math:`\lVert\cdot\rVert`:

.. math::
    S_{\lVert\cdot\rVert}(\theta) = \sup_{\lVert d\rVert \le 1} d^\top H d ,

which is :math:`\lambda_{\max}(H)` for the Euclidean norm, a Max-Cut-type problem (NP-hard)
for :math:`\ell_\infty`, and for the norm whose steepest descent Muon takes — the spectral
norm of each weight matrix, scaled by Muon's learning-rate adjustment :math:`s_W`, combined
by a maximum over matrices — the supremum over updates :math:`D = (D_W)` with
:math:`\lVert D_W\rVert_{op} \le s_W`. Steepest descent in that norm steps by
:math:`-\eta\,(s_W\,\mathrm{polar}(G_W))_W` (Muon without momentum, with an exact
orthogonalization); Islamov et al. report that the generalized sharpness rises and then
oscillates around or above :math:`2/\eta` for such methods, as :math:`\lambda_{\max}` does
for gradient descent (REFERENCES §9).

**Computed** by a generalized power iteration, :math:`D \leftarrow \mathrm{LMO}(HD) =
(s_W\,\mathrm{polar}((HD)_W))_W` (exact polar factors by SVD), which for a positive
semi-definite :math:`H` never decreases :math:`D^\top H D` (convexity: each step maximizes
the linearization over the ball); several starts, the best value kept. The result is a
**lower bound** (a local maximum), reported beside the upper bound
:math:`\lambda_{\max}(H_{\text{Muon}})\sum_W s_W^2 \min(m_W, n_W)` (since
:math:`\lVert D_W\rVert_F^2 \le \min(m_W, n_W)\,\lVert D_W\rVert_{op}^2`).

**What it predicts, and what not.** It measures curvature in the optimizer's geometry and is
the quantity that equilibrates near :math:`2/\eta` for steepest descent in this norm. It is
not a divergence threshold for Muon: its update is normalized (fixed length), so it never
converges to a minimum and oscillates at an amplitude set by :math:`\eta`; with momentum and
Newton–Schulz's approximate orthogonalization (singular values between about 0.7 and 1.2)
it is a guide, not an exact limit.

References
----------
Islamov, Crawshaw, Cohen, Gower (2026), "Non-Euclidean Gradient Descent Operates at the Edge
of Stability", arXiv:2603.05002.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from landscape.linalg._random import as_generator
from landscape.linalg.eigen import eigenvalues
from landscape.operators.base import LinearOperator
from landscape.operators.scaled import diagonal_congruence
from landscape.params import ParamSpace
from landscape.records import Record

__all__ = ["GeneralizedSharpness", "generalized_sharpness", "muon_scales", "polar"]


def polar(matrix: Tensor) -> Tensor:
    r"""Return the polar factor :math:`UV^\top` of ``matrix`` (:math:`U\Sigma V^\top`, its SVD).

    Returns
    -------
    Tensor
        Same shape; all singular values 1 (0 where ``matrix`` has a zero singular value
        is not distinguished: the factor is that of the reduced SVD).

    Examples
    --------
    >>> torch.linalg.matrix_norm(polar(torch.randn(3, 5)), ord=2).item() > 0.999999
    True
    """
    U, _, Vh = torch.linalg.svd(matrix, full_matrices=False)
    return U @ Vh


def muon_scales(optimizer: torch.optim.Optimizer, named: Mapping[str, Tensor]) -> dict[str, float]:
    r"""Return Muon's per-matrix step scale :math:`s_W` (its ``adjust_lr_fn``) by parameter name.

    ``"original"`` (default): :math:`\sqrt{\max(1, A/B)}`; ``"match_rms_adamw"``:
    :math:`0.2\sqrt{\max(A, B)}`, for a matrix of shape :math:`A\times B`, as
    ``torch.optim.Muon`` applies them.

    Parameters
    ----------
    optimizer : torch.optim.Muon
        The optimizer.
    named : mapping of str to Tensor
        ``{name: parameter}`` of the model.

    Returns
    -------
    dict of str to float
        The scale of every matrix the optimizer trains.
    """
    ids = {id(p): n for n, p in named.items()}
    scales = {}
    for group in optimizer.param_groups:
        fn = group.get("adjust_lr_fn")
        for p in group["params"]:
            if id(p) not in ids:
                continue
            A, B = p.shape[:2]
            if fn is None or fn == "original":
                scales[ids[id(p)]] = math.sqrt(max(1.0, A / B))
            elif fn == "match_rms_adamw":
                scales[ids[id(p)]] = 0.2 * math.sqrt(max(A, B))
            else:
                scales[ids[id(p)]] = 1.0
    return scales


@dataclass(frozen=True)
class GeneralizedSharpness(Record):
    r"""Sharpness in Muon's norm (spectral norm per matrix, scaled by :math:`s_W`).

    Attributes
    ----------
    sharpness : float
        The best :math:`D^\top H D` found over the unit ball (a lower bound on the supremum).
    upper_bound : float
        :math:`\lambda_{\max}(H_{\text{Muon}})\sum_W s_W^2\min(m_W, n_W)`.
    threshold : float or None
        :math:`2/\eta` at the learning rate given (what Islamov et al. compare it with).
    names : tuple of str
        The matrices of the norm.
    iterations : int
        Power iterations run (over all starts).
    num_hvps : int
        Hessian-vector products used.
    direction : Tensor or None
        The maximizing :math:`D`, flat (kept out of the stored record).
    measure : str
        ``"generalized sharpness (spectral norm per matrix)"``.
    notes : tuple of str
        What it assumes.
    """

    sharpness: float
    upper_bound: float
    threshold: float | None
    names: tuple[str, ...]
    iterations: int
    num_hvps: int
    direction: Tensor | None = field(default=None, metadata={"record": False}, repr=False)
    measure: str = "generalized sharpness (spectral norm per matrix)"
    notes: tuple[str, ...] = ()


def _lmo(V: Tensor, space: ParamSpace, scales: Mapping[str, float]) -> Tensor:
    parts = space.unflatten(V)
    out = {}
    for name, block in parts.items():
        s = scales.get(name)
        out[name] = torch.zeros_like(block) if s is None else s * polar(block)
    return space.flatten(out)


def generalized_sharpness(
    H: LinearOperator,
    space: ParamSpace,
    scales: Mapping[str, float],
    *,
    lr: float | None = None,
    starts: int = 3,
    max_iterations: int = 100,
    rtol: float = 1e-10,
    init: Tensor | None = None,
    seed: int | torch.Generator | None = 0,
) -> GeneralizedSharpness:
    r"""Estimate Muon's generalized sharpness by generalized power iteration.

    The supremum :math:`\sup_{\lVert D_W\rVert_{op} \le s_W} D^\top H D` (see the module
    doc).

    Parameters
    ----------
    H : LinearOperator
        The curvature over ``space`` (only the blocks of the matrices in ``scales`` matter).
    space : ParamSpace
        The parameter space of ``H``.
    scales : mapping of str to float
        :math:`s_W` per matrix name (:func:`muon_scales`); other parameters are not in the
        norm's ball (held at zero).
    lr : float, optional
        The learning rate, to report :math:`2/\eta` beside it.
    starts : int, optional
        Random starts (plus ``init``, if given).
    max_iterations : int, optional
        Iterations per start.
    rtol : float, optional
        Stop a start when the value changes by less than this, relatively.
    init : Tensor, optional
        A first start (e.g. the optimizer's own update, flat).
    seed : int or torch.Generator, optional
        Randomness of the starts.

    Returns
    -------
    GeneralizedSharpness
        The lower bound, the upper bound and the maximizer.

    Raises
    ------
    ValueError
        If ``scales`` names no 2-D parameter of ``space``.

    Examples
    --------
    For :math:`L(W) = \tfrac12\langle W, AW\rangle` with a 2×3 matrix, the supremum over
    :math:`\lVert D\rVert_{op} \le 1` is :math:`\operatorname{tr}A` (take :math:`DD^\top = I`).

    >>> from landscape.operators.dense import DenseOperator
    >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> H = DenseOperator(torch.kron(A, torch.eye(3, dtype=torch.float64)))
    >>> space = ls.ParamSpace(("W",), (torch.Size([2, 3]),), torch.float64, torch.device("cpu"))
    >>> round(generalized_sharpness(H, space, {"W": 1.0}).sharpness, 8)
    5.0
    """
    names = tuple(n for n, shape in zip(space.names, space.shapes) if n in scales)
    if not names or any(len(space.shapes[space.names.index(n)]) != 2 for n in names):
        raise ValueError(
            "the spectral norm per matrix needs 2-D parameters named in scales; got "
            f"{sorted(scales)} over {list(space.names)}."
        )
    generator = as_generator(seed)
    mask = space.flatten(
        {
            n: torch.full(s, 1.0 if n in scales else 0.0, dtype=space.dtype, device=space.device)
            for n, s in zip(space.names, space.shapes)
        }
    )
    candidates = [] if init is None else [init.to(space.dtype).reshape(-1)]
    for _ in range(starts):
        noise = torch.randn(space.dim, generator=generator, dtype=space.dtype)
        candidates.append(noise.to(space.device))
    best, best_D, iterations, hvps = -math.inf, None, 0, 0
    for start in candidates:
        D = _lmo(start * mask, space, scales)
        value = -math.inf
        for _ in range(max_iterations):
            HD = H.matvec(D)
            hvps += 1
            iterations += 1
            new_value = float(D @ HD)
            if new_value > best:
                best, best_D = new_value, D
            if abs(new_value - value) <= rtol * abs(new_value):
                break
            value = new_value
            D = _lmo(HD * mask, space, scales)
    top = eigenvalues(diagonal_congruence(H, mask), k=1, tol=1e-6)
    hvps += top.num_matvecs
    bound = float(top.values[0]) * sum(
        scales[n] ** 2 * min(space.shapes[space.names.index(n)]) for n in names
    )
    notes = [
        "a lower bound on the supremum (generalized power iteration with exact polar factors, "
        f"best of {len(candidates)} starts); upper bound lambda_max x sum_W s_W^2 min(m, n).",
        "Muon's norm: the spectral norm of each matrix divided by its step scale s_W, the "
        "largest over matrices; non-matrix parameters are outside it (held at zero).",
    ]
    return GeneralizedSharpness(
        sharpness=best,
        upper_bound=bound,
        threshold=2.0 / lr if lr else None,
        names=names,
        iterations=iterations,
        num_hvps=hvps,
        direction=best_D,
        notes=tuple(notes),
    )
