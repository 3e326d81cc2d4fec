r"""Per-block Hessian spectra and their heterogeneity (Zhang et al. 2024).

One SLQ density per parameter block, all in ``num_steps`` passes, and the Jensen-Shannon
distances between them ("Why transformers need Adam: a Hessian perspective").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.linalg.block_density import block_densities, js_distances, kth_largest, mean_js
from landscape.linalg.results import SpectralDensity
from landscape.losses import Criterion
from landscape.metrics.layerwise import _groups, _subtrees
from landscape.operators.hessian import hessian
from landscape.problem import Problem, as_problem, unwrap_model
from landscape.records import Record

__all__ = ["BlockSpectra", "block_spectra", "parameter_blocks"]


@dataclass(frozen=True)
class BlockSpectra(Record):
    """Spectral densities of the Hessian's diagonal blocks and their distances.

    Attributes
    ----------
    names : tuple of str
        Block names.
    sizes : tuple of int
        Parameters per block.
    densities : list of SpectralDensity
        One SLQ density per block (of :math:`H_{bb}`).
    distances : ndarray
        Jensen-Shannon distances between the blocks' (normalized) densities, ``(L, L)``.
    normalize : int or None
        Each spectrum was divided by its k-th largest eigenvalue (``None``: raw).
    num_matvecs, num_passes : int
        Hessian products and passes over the data used.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    densities: list[SpectralDensity]
    distances: np.ndarray
    normalize: int | None
    num_matvecs: int
    num_passes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def heterogeneity(self) -> float:
        r""":math:`\mathrm{JS}^0`: the mean Jensen-Shannon distance over block pairs."""
        return mean_js(self.distances)

    def table(self) -> str:
        """Return the blocks as plain text: size, top Ritz value, mean eigenvalue, mean JS.

        Returns
        -------
        str
            One line per block, then JS^0.
        """
        lines = [f"{'block':<32}{'params':>9}{'top':>12}{'trace/P':>12}{'mean JS':>9}"]
        L = len(self.names)
        for i, (name, size, d) in enumerate(
            zip(self.names, self.sizes, self.densities, strict=True)
        ):
            js = self.distances[i].sum() / max(L - 1, 1)
            top = kth_largest(d, 1)
            lines.append(f"{name:<32}{size:>9}{top:>12.4g}{d.moment(1):>12.4g}{js:>9.3f}")
        lines.append(f"JS^0 (mean over {L * (L - 1) // 2} pairs): {self.heterogeneity:.3f}")
        return "\n".join(lines)


def parameter_blocks(model: nn.Module, blocks: Any) -> list[tuple[str, list[str]]]:
    """Resolve ``blocks`` (as for :func:`block_spectra`) into ``(name, parameter_names)`` pairs.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    blocks : "parameters", "modules", list of module names, or mapping
        As for :func:`block_spectra`.

    Returns
    -------
    list of tuple
        The groups, in model order (or the given order).

    Raises
    ------
    ValueError
        For an unknown keyword, unknown parameter names, or a group without parameters.
    """
    model = unwrap_model(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if blocks == "parameters":
        return [(n, [n]) for n in trainable]
    if blocks == "modules":
        return _groups(model)
    if isinstance(blocks, str):
        raise ValueError(
            f"blocks must be 'parameters', 'modules', a list of module names or a mapping "
            f"{{name: [parameter names]}}; got {blocks!r}."
        )
    if isinstance(blocks, Mapping):
        unknown = [n for group in blocks.values() for n in group if n not in trainable]
        empty = [name for name, group in blocks.items() if not list(group)]
        if unknown or empty:
            raise ValueError(
                f"blocks: parameters {unknown} are not trainable parameters of the model and "
                f"groups {empty} are empty; use names from model.named_parameters()."
            )
        return [(name, list(group)) for name, group in blocks.items()]
    return _subtrees(model, list(blocks))


def block_spectra(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    blocks: str | Sequence[str] | Mapping[str, Sequence[str]] = "parameters",
    num_probes: int = 4,
    num_steps: int = 60,
    normalize: int | None = 10,
    seed: int | torch.Generator | None = 0,
    progress: bool = False,
    backend: str = "auto",
    **options: Any,
) -> BlockSpectra:
    r"""Hessian spectral density of every parameter block, and the blocks' heterogeneity.

    For each block :math:`b` the SLQ density of its diagonal Hessian block :math:`H_{bb}`
    (:func:`landscape.linalg.block_density.block_densities`: all blocks' probes in one
    batched product per Lanczos step, so ``num_steps`` passes over the data whatever the
    number of blocks :math:`L`, and :math:`L \cdot` ``num_probes`` products per pass). Then
    the Jensen-Shannon distance between every pair of blocks' densities, each spectrum
    divided by its ``normalize``-th largest eigenvalue first, and their mean
    :math:`\mathrm{JS}^0`. Zhang et al. (2024) find transformer blocks (embeddings,
    query/key/value, attention output, MLP) far more heterogeneous than CNN layers, and link
    large :math:`\mathrm{JS}^0` at initialization to SGD falling behind Adam.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified) with its data
        and loss, as for :func:`landscape.hessian`.
    blocks : "parameters", "modules", list of module names, or mapping, optional
        One block per parameter tensor (Zhang et al.'s choice; default), per module owning
        parameters, per named module's subtree (e.g. ``["transformer.h.0.attn", ...]``),
        or ``{name: [parameter names]}``.
    num_probes : int, optional
        Probes per block.
    num_steps : int, optional
        Lanczos steps (passes over the data).
    normalize : int or None, optional
        Divide each block's spectrum by its k-th largest eigenvalue before comparing
        (``None``: raw spectra, where scale differences count too).
    seed : int or torch.Generator, optional
        Randomness of the probes.
    progress : bool, optional
        Show a progress bar over the steps.
    backend, **options
        The Hessian backend and the problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    BlockSpectra
        Names, sizes, densities, the distance matrix and :math:`\mathrm{JS}^0`.

    Raises
    ------
    ValueError
        For unknown blocks or fewer than one.

    References
    ----------
    Y. Zhang, C. Chen, T. Ding, Z. Li, R. Sun, Z.-Q. Luo, "Why transformers need Adam: a
    Hessian perspective", NeurIPS 2024, arXiv:2402.16788 (code: zyushun/hessian-spectrum).

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    >>> X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    >>> result = block_spectra(model, (X, y), blocks="modules", num_steps=10, normalize=2)
    >>> result.names, result.num_passes, result.distances.shape
    (('0', '2'), 10, (2, 2))
    """
    problem = as_problem(problem, data, loss_fn, where="block_spectra", **options)
    groups = parameter_blocks(problem.model, blocks)
    names = list(dict.fromkeys(n for _, group in groups for n in group))
    H = hessian(problem.with_params(names), backend=backend)
    slices = H.space.slices()
    indices = [torch.cat([torch.arange(H.shape[0])[slices[n]] for n in g]) for _, g in groups]
    densities = block_densities(H, indices, num_probes, num_steps, seed=seed, progress=progress)
    distances = js_distances(densities, normalize=normalize)
    return BlockSpectra(
        names=tuple(name for name, _ in groups),
        sizes=tuple(len(i) for i in indices),
        densities=densities,
        distances=distances,
        normalize=normalize,
        num_matvecs=H.num_matvecs,
        num_passes=H.num_passes,
    )
