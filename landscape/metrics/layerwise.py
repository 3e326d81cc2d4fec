r"""Per-layer curvature (HAWQ-V2 style): trace and top eigenvalue of each layer's Hessian block."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from landscape.linalg._random import ProbeStream, as_generator
from landscape.linalg.eigen import eigenvalues
from landscape.linalg.trace import probe_block
from landscape.losses import Criterion
from landscape.memory import MemoryBudget
from landscape.operators.hessian import hessian
from landscape.operators.sharded import is_sharded
from landscape.problem import Problem, as_problem, unwrap_model
from landscape.records import Record

__all__ = ["LayerCurvature", "LayerwiseResult", "layerwise"]

_METRICS = ("trace", "top_eigenvalue")


@dataclass(frozen=True)
class LayerCurvature(Record):
    """Curvature of one layer's diagonal Hessian block.

    Attributes
    ----------
    name : str
        Module name (``"(root)"`` for parameters owned by the model itself).
    parameters : tuple of str
        Parameter names in the block.
    num_params : int
        Block size.
    trace : float or None
        Hutchinson estimate of the block trace.
    trace_stderr : float or None
        Its standard error.
    top_eigenvalue : float or None
        Largest eigenvalue of the block.
    top_residual : float or None
        Residual norm of the top eigenpair.
    """

    name: str
    parameters: tuple[str, ...]
    num_params: int
    trace: float | None = None
    trace_stderr: float | None = None
    top_eigenvalue: float | None = None
    top_residual: float | None = None

    @property
    def mean_curvature(self) -> float | None:
        """Average eigenvalue of the block, ``trace / num_params`` (HAWQ-V2's sensitivity)."""
        return None if self.trace is None else self.trace / self.num_params


@dataclass(frozen=True)
class LayerwiseResult(Record):
    """A table of per-layer curvature.

    Attributes
    ----------
    layers : list of LayerCurvature
        One row per module owning trainable parameters, in model order.
    num_matvecs : int
        Hessian-vector products used in all.
    num_passes : int
        Passes over the data used in all.
    num_probes : int
        Hutchinson probes behind each trace.
    """

    layers: list[LayerCurvature]
    num_matvecs: int
    num_passes: int
    num_probes: int
    notes: tuple[str, ...] = field(default=())

    def table(self) -> str:
        """Return the result as a plain-text table.

        Returns
        -------
        str
            One line per layer.
        """
        tops = any(r.top_eigenvalue is not None for r in self.layers)
        head = f"{'layer':<28}{'params':>9}{'trace':>24}{'trace/P':>12}"
        lines = [head + (f"{'top eigenvalue':>16}" if tops else "")]
        for r in self.layers:
            trace = "" if r.trace is None else f"{r.trace:.4g} ± {r.trace_stderr:.2g}"
            mean = "" if r.mean_curvature is None else f"{r.mean_curvature:.4g}"
            top = "" if r.top_eigenvalue is None else f"{r.top_eigenvalue:.4g}"
            row = f"{r.name:<28}{r.num_params:>9}{trace:>24}{mean:>12}"
            lines.append(row + (f"{top:>16}" if tops else ""))
        return "\n".join(lines)


def _groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Group trainable parameter names by the module that owns them, in model order.

    Returns
    -------
    list of tuple
        ``(module_name, parameter_names)`` pairs.
    """
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    groups = []
    for module_name, module in model.named_modules():
        names = [
            f"{module_name}.{n}" if module_name else n
            for n, p in module.named_parameters(recurse=False)
            if p.requires_grad
        ]
        names = [n for n in names if n in trainable]  # shared parameters appear once
        if names:
            groups.append((module_name or "(root)", names))
    return groups


def _subtrees(model: nn.Module, wanted: list[str]) -> list[tuple[str, list[str]]]:
    """Group the trainable parameters below each named module (a block, a layer, a head).

    Returns
    -------
    list of tuple
        ``(module_name, parameter_names)`` pairs, in the given order.

    Raises
    ------
    ValueError
        If a name is not a module of the model, or none of its parameters is trainable.
    """
    modules = dict(model.named_modules())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    groups, missing = [], []
    for name in wanted:
        if name not in modules:
            missing.append(name)
            continue
        prefix = f"{name}." if name else ""
        members = [n for n in trainable if n.startswith(prefix)]
        if not members:
            missing.append(name)
        groups.append((name or "(root)", members))
    if missing:
        raise ValueError(
            f"modules {missing} are not modules of the model with trainable parameters; "
            "use names from model.named_modules() (e.g. 'transformer.h.0' for a whole block)."
        )
    return groups


def _layer_trace_samples(
    H: Any, groups: list[tuple[str, list[str]]], num_probes: int, generator: torch.Generator
) -> Tensor:
    r"""Return :math:`z_l^\top (Hz)_l` per layer and probe, ``(layers, num_probes)``.

    Probes go through ``H`` in groups that fit the memory budget (a probe holds
    :data:`~landscape.linalg.trace.PROBE_VECTORS` vectors during its product); they come
    from one stream, so the numbers do not depend on the grouping.

    Returns
    -------
    Tensor
        float64 samples on the CPU, one row per layer group.
    """
    space = H.vector_space
    stream = ProbeStream(space, generator, "signs")
    width = probe_block(H, num_probes, MemoryBudget.resolve(None, H.device))
    out = torch.zeros(len(groups), num_probes, dtype=torch.float64)
    for start in range(0, num_probes, width):
        Z = stream.next(min(width, num_probes - start))
        products = H.vector_to_params((Z * (H @ Z)).T)  # per parameter: (probes, *shape)
        for i, (_, members) in enumerate(groups):
            local = sum(
                products[n].reshape(Z.shape[1], -1).sum(1, dtype=torch.float64) for n in members
            )
            out[i, start : start + Z.shape[1]] = space.reduce_(local).cpu()  # shards: summed
        del Z, products
    return out


def layerwise(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    metrics: Sequence[str] = _METRICS,
    num_probes: int = 100,
    tol: float = 1e-4,
    seed: int | torch.Generator | None = 0,
    modules: Iterable[str] | None = None,
    backend: str = "auto",
    **options: Any,
) -> LayerwiseResult:
    r"""Measure the curvature of each layer's diagonal Hessian block :math:`H_{ll}`.

    **Trace.** One Hutchinson estimate serves every layer: with Rademacher probes
    :math:`z` on all parameters, :math:`z_l^\top (Hz)_l` is an unbiased estimate of
    :math:`\operatorname{tr}(H_{ll})` (the cross-block terms have zero mean), so all layers'
    traces cost ``num_probes`` products in a single pass over the data. The mean curvature
    :math:`\operatorname{tr}(H_{ll})/P_l` is HAWQ-V2's sensitivity for mixed-precision
    quantization.

    **Top eigenvalue.** Lanczos (:func:`landscape.eigenvalues`) on each block's operator
    ``ls.hessian(model, data, params=layer)``; each costs about 10-30 products.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified) with its data
        and loss, as for :func:`landscape.hessian`. Layers are the problem's selected
        parameters, grouped.
    metrics : sequence of {"trace", "top_eigenvalue"}, optional
        What to compute.
    num_probes : int, optional
        Hutchinson probes for the traces.
    tol : float, optional
        Residual tolerance of the top eigenvalues (relative to each block's norm).
    seed : int or torch.Generator, optional
        Randomness of probes and starting vectors.
    modules : iterable of str, optional
        One row per named module, over every trainable parameter below it (e.g. the
        blocks ``"transformer.h.0"``, ``"transformer.h.1"`` of a GPT-2). Default: one row
        per module that owns parameters directly.
    backend : str, optional
        How Hessian products are computed (see :class:`landscape.HessianOperator`).
    **options
        Options of :class:`~landscape.problem.Problem` (``mode``, ``batch_loss``,
        ``max_batches``, ...), as for :func:`landscape.hessian`.

    Returns
    -------
    LayerwiseResult
        One :class:`LayerCurvature` per module owning trainable parameters.

    Raises
    ------
    ValueError
        For unknown metrics, ``num_probes < 2`` or module names without trainable parameters.

    References
    ----------
    Z. Dong, Z. Yao, D. Arfeen, A. Gholami, M. W. Mahoney, K. Keutzer, "HAWQ-V2: Hessian
    aware trace-weighted quantization of neural networks", NeurIPS 2020, arXiv:1911.03852.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    >>> X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    >>> result = layerwise(model, (X, y), num_probes=8)
    >>> [row.name for row in result.layers], result.layers[0].num_params
    (['0', '2'], 30)
    """
    if is_sharded(problem):  # FSDP2: on each rank's shards (no Problem: see operators.sharded)
        model = unwrap_model(problem, sharded=True)
        selected = {n for n, p in model.named_parameters() if p.requires_grad}

        def block_hessian(members: list[str]) -> Any:
            return hessian(model, data, loss_fn, params=members, backend=backend, **options)
    else:
        problem = as_problem(problem, data, loss_fn, where="layerwise", **options)
        model, selected = problem.model, set(problem.space.names)

        def block_hessian(members: list[str]) -> Any:
            return hessian(problem.with_params(members), backend=backend)

    unknown = set(metrics) - set(_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {_METRICS}.")
    if num_probes < 2:
        raise ValueError(f"num_probes must be at least 2 (for a standard error); got {num_probes}.")
    groups = _groups(model) if modules is None else _subtrees(model, list(modules))
    groups = [(g, [n for n in members if n in selected]) for g, members in groups]
    groups = [(g, members) for g, members in groups if members]
    generator = as_generator(seed)
    names = list(dict.fromkeys(n for _, group in groups for n in group))
    rows: dict[str, dict[str, Any]] = {g: {} for g, _ in groups}
    matvecs = passes = 0
    if "trace" in metrics:
        H = block_hessian(names)
        samples = _layer_trace_samples(H, groups, num_probes, generator)
        for (group, _), row in zip(groups, samples):
            rows[group]["trace"] = float(row.mean())
            rows[group]["trace_stderr"] = float(row.std() / num_probes**0.5)
        matvecs, passes = H.num_matvecs, H.num_passes
    if "top_eigenvalue" in metrics:
        for group, members in groups:
            block = block_hessian(members)
            ev = eigenvalues(block, k=1, tol=tol, seed=generator)
            rows[group]["top_eigenvalue"] = float(ev.values[0])
            rows[group]["top_residual"] = float(ev.residuals[0])
            matvecs += ev.num_matvecs
            passes += ev.num_passes
    table = dict(model.named_parameters())
    layers = [
        LayerCurvature(
            name=group,
            parameters=tuple(members),
            num_params=sum(table[n].numel() for n in members),
            **rows[group],
        )
        for group, members in groups
    ]
    return LayerwiseResult(layers, matvecs, passes, num_probes)
