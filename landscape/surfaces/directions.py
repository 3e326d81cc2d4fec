r"""Directions in parameter space: random (filter-normalized), between models, PCA of a trajectory.

A direction is a dict ``{parameter_name: tensor}`` over the model's trainable parameters
(frozen parameters are never moved), on the model's device and dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from landscape.problem import unwrap_model

__all__ = [
    "Direction",
    "direction_between",
    "orthogonalize",
    "project_trajectory",
    "random_directions",
    "trajectory_directions",
]

Direction = dict[str, Tensor]
Norm = Literal["filter", "layer", "weight"] | None
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    model = unwrap_model(model)
    named = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to move along.")
    return named


def _normalize(d: Tensor, w: Tensor, norm: Norm) -> Tensor:
    if norm == "filter":
        # One rescaling per slice along dim 0: a conv output channel, a linear row, an
        # embedding row (Li et al. 2018); for ConvTranspose dim 0 is the *input* channel.
        dims = tuple(range(1, d.ndim))
        w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
        return d * (w_norm / (torch.linalg.vector_norm(d, dim=dims, keepdim=True) + 1e-10))
    if norm == "layer":
        return d * (w.norm() / (d.norm() + 1e-10))
    if norm == "weight":
        return d * w
    return d


def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    norm: Norm = "filter",
    ignore: Literal["biasbn"] | None = "biasbn",
    orthogonal: bool = False,
    seed: int | torch.Generator | None = 0,
) -> list[Direction]:
    r"""Draw random directions, normalized to the scale of the weights (Li et al. 2018).

    Each direction draws :math:`d \sim \mathcal N(0, I)` for every trainable parameter, in
    ``model.named_parameters()`` order, from a CPU generator (so a seed gives the same
    directions on every device). Tensors with ``dim >= 2`` are then normalized:

    * ``"filter"`` (default): every slice along dim 0 (a conv output channel, a linear or
      embedding row) is rescaled to the norm of the matching weight slice,
      :math:`d_i \leftarrow d_i \lVert w_i\rVert / (\lVert d_i\rVert + 10^{-10})`;
    * ``"layer"``: the whole tensor, :math:`d \leftarrow d\lVert w\rVert/(\lVert d\rVert+10^{-10})`;
    * ``"weight"``: elementwise, :math:`d \leftarrow d \odot w`;
    * ``None``: raw Gaussian.

    Tensors with ``dim <= 1`` (biases, norm-layer scales and shifts) get a zero direction
    with ``ignore="biasbn"`` (default), and otherwise a copy of the weight itself — both as
    in the reference implementation (``net_plotter.normalize_directions_for_weights``).

    ``ConvTranspose`` weights are laid out ``(in, out, ...)``, so "filter" slices them by
    *input* channel — what the reference code does too; we keep it for comparability.

    Parameters
    ----------
    model : torch.nn.Module
        The model (read only).
    n : int, optional
        Number of directions.
    norm : {"filter", "layer", "weight", None}, optional
        Normalization.
    ignore : {"biasbn", None}, optional
        Zero the directions of 1-D parameters.
    orthogonal : bool, optional
        Gram-Schmidt the directions against each other after normalization (each keeps its
        norm). Random high-dimensional directions are nearly orthogonal anyway.
    seed : int or torch.Generator, optional
        Randomness.

    Returns
    -------
    list of dict
        ``n`` directions ``{name: tensor}``.

    Raises
    ------
    ValueError
        For an unknown ``norm``/``ignore`` or ``n < 1``.

    References
    ----------
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the loss landscape of
    neural nets", NeurIPS 2018, arXiv:1712.09913.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> d1, d2 = random_directions(model, seed=0)
    >>> w = model[0].weight
    >>> torch.allclose(d1["0.weight"].norm(dim=1), w.norm(dim=1))
    True
    >>> float(d1["0.bias"].abs().sum())
    0.0
    """
    if norm not in ("filter", "layer", "weight", None):
        raise ValueError(f"norm must be 'filter', 'layer', 'weight' or None; got {norm!r}.")
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore must be 'biasbn' or None; got {ignore!r}.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    generator = (
        seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed or 0)
    )
    weights = _trainable(model)
    directions = []
    for _ in range(n):
        direction = {}
        for name, w in weights.items():
            d = torch.randn(w.shape, generator=generator).to(dtype=w.dtype, device=w.device)
            if w.dim() <= 1:
                d = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
            else:
                d = _normalize(d, w, norm)
            direction[name] = d
        directions.append(direction)
    return orthogonalize(directions) if orthogonal else directions


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    return sum((a[k].double() * b[k].double()).sum() for k in a)  # type: ignore[return-value]


def orthogonalize(directions: Sequence[Mapping[str, Tensor]]) -> list[Direction]:
    """Gram-Schmidt a list of directions; each keeps its original norm.

    Parameters
    ----------
    directions : sequence of dict
        Directions over the same parameter names.

    Returns
    -------
    list of dict
        Mutually orthogonal directions.

    Raises
    ------
    ValueError
        If a direction is (numerically) in the span of the previous ones.
    """
    out: list[Direction] = []
    for d in directions:
        norm = float(_dot(d, d)) ** 0.5
        v = {k: t.clone() for k, t in d.items()}
        for u in out:
            coef = float(_dot(v, u) / _dot(u, u))
            v = {k: v[k] - coef * u[k] for k in v}
        remaining = float(_dot(v, v)) ** 0.5
        if remaining <= 1e-12 * max(norm, 1e-300):
            raise ValueError("cannot orthogonalize: a direction lies in the span of the others.")
        out.append({k: t * (norm / remaining) for k, t in v.items()})
    return out


def _parameters_of(
    source: nn.Module | Mapping[str, Tensor], names: Sequence[str]
) -> dict[str, Tensor]:
    if isinstance(source, nn.Module):
        table = dict(unwrap_model(source).named_parameters())
    else:
        table = dict(source)
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(
            f"architectures differ: parameters {missing[:5]} are missing from the second model."
        )
    return {n: table[n].detach() for n in names}


def direction_between(model_a: nn.Module, model_b: nn.Module | Mapping[str, Tensor]) -> Direction:
    r"""Return the direction from ``model_a`` to ``model_b``, :math:`\theta_b - \theta_a`.

    Parameters
    ----------
    model_a : torch.nn.Module
        Start (its trainable parameters define the names).
    model_b : torch.nn.Module or state dict
        End; must have the same parameter names and shapes.

    Returns
    -------
    dict
        ``{name: theta_b - theta_a}``.

    Raises
    ------
    ValueError
        If the architectures differ.

    Examples
    --------
    >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> d = direction_between(a, b)
    >>> torch.allclose(a.weight + d["weight"], b.weight)
    True
    """
    theta_a = _trainable(model_a)
    theta_b = _parameters_of(model_b, list(theta_a))
    out = {}
    for name, wa in theta_a.items():
        wb = theta_b[name]
        if wb.shape != wa.shape:
            raise ValueError(
                f"architectures differ: {name!r} has shape {tuple(wa.shape)} in the first model "
                f"and {tuple(wb.shape)} in the second."
            )
        out[name] = wb.to(dtype=wa.dtype, device=wa.device) - wa
    return out


def _state(checkpoint: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(checkpoint, nn.Module):
        checkpoint = unwrap_model(checkpoint)
        return {n: p.detach() for n, p in checkpoint.named_parameters() if p.requires_grad}
    return {
        n: t
        for n, t in checkpoint.items()
        if torch.is_tensor(t) and t.is_floating_point() and not n.endswith(_BUFFER_SUFFIXES)
    }


def trajectory_directions(
    checkpoints: Sequence[nn.Module | Mapping[str, Tensor]],
    n: int = 2,
    *,
    ignore: Literal["biasbn"] | None = "biasbn",
) -> list[Direction]:
    r"""Principal directions of an optimization trajectory (Li et al. 2018, Fig. 9).

    With :math:`\theta_T` the last checkpoint, the matrix of differences
    :math:`M = [\theta_0-\theta_T; \dots; \theta_{T-1}-\theta_T]` is centered and its top
    ``n`` right singular vectors (PCA) are returned as unit-norm directions; plot the
    surface around :math:`\theta_T` and overlay :func:`project_trajectory`.

    Parameters
    ----------
    checkpoints : sequence of nn.Module or state dict
        At least ``n + 1`` snapshots of the same architecture, the last one the center.
        Buffers (BatchNorm statistics) are left out of state dicts.
    n : int, optional
        Number of directions.
    ignore : {"biasbn", None}, optional
        Leave 1-D parameters out of the PCA (their direction entries are zero).

    Returns
    -------
    list of dict
        ``n`` orthonormal directions.

    Raises
    ------
    ValueError
        With fewer than ``n + 1`` checkpoints or mismatched architectures.
    """
    if len(checkpoints) < n + 1:
        raise ValueError(f"need at least n + 1 = {n + 1} checkpoints; got {len(checkpoints)}.")
    states = [_state(c) for c in checkpoints]
    names = [k for k in states[-1] if not (ignore == "biasbn" and states[-1][k].dim() <= 1)]
    flat = torch.stack(
        [
            torch.cat([_parameters_of(s, names)[k].double().cpu().reshape(-1) for k in names])
            for s in states
        ]
    )
    M = flat[:-1] - flat[-1]
    M = M - M.mean(0, keepdim=True)
    _, _, Vh = torch.linalg.svd(M, full_matrices=False)
    last = states[-1]
    out = []
    for i in range(n):
        parts = torch.split(Vh[i], [last[k].numel() for k in names])
        direction = {k: torch.zeros_like(t) for k, t in last.items()}
        for k, part in zip(names, parts):
            direction[k] = part.reshape(last[k].shape).to(
                dtype=last[k].dtype, device=last[k].device
            )
        out.append(direction)
    return out


def project_trajectory(
    checkpoints: Sequence[nn.Module | Mapping[str, Tensor]],
    directions: Sequence[Mapping[str, Tensor]],
    origin: nn.Module | Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Coordinates of checkpoints in the plane of (orthonormal) ``directions`` around ``origin``.

    Parameters
    ----------
    checkpoints : sequence of nn.Module or state dict
        The trajectory.
    directions : sequence of dict
        Orthonormal directions (e.g. from :func:`trajectory_directions`).
    origin : nn.Module or state dict, optional
        The center (default: the last checkpoint).

    Returns
    -------
    Tensor
        Shape ``(len(checkpoints), len(directions))``.
    """
    center = _state(origin if origin is not None else checkpoints[-1])
    coords = []
    for c in checkpoints:
        state = _state(c)
        delta = {k: (state[k] - center[k]).to(directions[0][k].dtype) for k in directions[0]}
        coords.append([float(_dot(delta, d)) for d in directions])
    return torch.tensor(coords, dtype=torch.float64)
