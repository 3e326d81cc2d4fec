"""Parameter spaces: which parameters a curvature operator acts on, and flat <-> named vectors.

Curvature operators work on *flat* vectors of length ``P`` (the number of selected
parameters); users often think in parameter-shaped dictionaries ``{name: tensor}``.
:class:`ParamSpace` records the selected names and shapes, in ``model.named_parameters()``
order, and converts between the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor, nn

__all__ = ["ParamSelector", "ParamSpace", "select_parameters"]

ParamSelector = Union[  # noqa: UP007 (a runtime alias: ``X | None`` with strings fails on 3.10)
    None,
    str,
    nn.Module,
    Tensor,
    Callable[[str, Tensor], bool],
    Iterable[Union[str, nn.Module, Tensor]],  # noqa: UP007
]
"""What ``params=`` accepts; see :func:`select_parameters`."""


def _matches_name(name: str, key: str) -> bool:
    return name == key or name.startswith(key + ".")


def select_parameters(model: nn.Module, params: ParamSelector = None) -> list[str]:
    """Return the names of the trainable parameters of ``model`` that ``params`` selects.

    Parameters
    ----------
    model : torch.nn.Module
        The model. Parameters shared between modules appear once, under their first name
        (``model.named_parameters()`` order); frozen parameters (``requires_grad=False``) are
        never selected.
    params : None, str, Module, Tensor, callable, or iterable of str/Module/Tensor
        ``None`` selects every trainable parameter. A string selects the parameter of that
        name, or every parameter below a module of that name (``"layer1"`` selects
        ``"layer1.weight"`` and ``"layer1.bias"``). A module (which must be a submodule of
        ``model``) or a parameter tensor selects by identity. A callable
        ``predicate(name, parameter) -> bool`` selects where it returns true. An iterable
        combines strings, modules and tensors.

    Returns
    -------
    list of str
        Selected names in ``model.named_parameters()`` order.

    Raises
    ------
    ValueError
        If the model has no trainable parameters, if an entry selects nothing, or if the
        selection is empty.
    TypeError
        If an entry has an unsupported type.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> select_parameters(model, "2")
    ['2.weight', '2.bias']
    >>> select_parameters(model, lambda name, p: name.endswith("bias"))
    ['0.bias', '2.bias']
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if next(iter(model.parameters()), None) is None:
        raise ValueError(
            f"{type(model).__name__} has no parameters; there is no landscape to analyze."
        )
    if not named:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters (all have requires_grad=False "
            "or it has none); there is no curvature to compute."
        )
    if params is None:
        return [n for n, _ in named]
    if callable(params) and not isinstance(params, nn.Module):
        chosen = {n for n, p in named if params(n, p)}
        if not chosen:
            raise ValueError("params= predicate selected no trainable parameter.")
        return [n for n, _ in named if n in chosen]
    entries = (
        [params] if isinstance(params, (str, nn.Module, Tensor)) else list(params)  # type: ignore[arg-type]
    )
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    chosen: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            hits = {n for n, _ in named if _matches_name(n, entry)}
            if not hits:
                why = (
                    " It is frozen (requires_grad=False)."
                    if any(_matches_name(n, entry) for n in frozen)
                    else ""
                )
                raise ValueError(
                    f"params= entry {entry!r} matches no trainable parameter.{why} "
                    f"Trainable names: {[n for n, _ in named][:12]}..."
                )
        elif isinstance(entry, nn.Module):
            ids = {id(p) for p in entry.parameters()}
            hits = {n for n, p in named if id(p) in ids}
            if not hits:
                raise ValueError(
                    f"params= module {type(entry).__name__} has no trainable parameter of the "
                    "model (is it a submodule of this model?)."
                )
        elif isinstance(entry, Tensor):
            hits = {n for n, p in named if p is entry}
            if not hits:
                raise ValueError("params= tensor is not a trainable parameter of the model.")
        else:
            raise TypeError(
                "params= entries must be parameter names, modules or parameter tensors; "
                f"got {type(entry).__name__}."
            )
        chosen |= hits
    return [n for n, _ in named if n in chosen]


@dataclass(frozen=True)
class ParamSpace:
    """Names, shapes, dtype and device of a set of parameters, and flat <-> dict conversion.

    The flat layout concatenates ``tensor.reshape(-1)`` in the order of ``names``, the same
    layout as :func:`torch.nn.utils.parameters_to_vector`.

    Parameters
    ----------
    names : tuple of str
        Parameter names (as in ``model.named_parameters()``).
    shapes : tuple of torch.Size
        Their shapes.
    dtype : torch.dtype
        Common dtype.
    device : torch.device
        Common device.

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> space = ParamSpace.from_module(model)
    >>> space.dim
    8
    >>> named = space.unflatten(torch.arange(8.0))
    >>> named["bias"]
    tensor([6., 7.])
    >>> bool((space.flatten(named) == torch.arange(8.0)).all())
    True
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def from_module(cls, model: nn.Module, params: ParamSelector = None) -> ParamSpace:
        """Build the space of the parameters of ``model`` selected by ``params``.

        Parameters
        ----------
        model : torch.nn.Module
            The model.
        params : ParamSelector, optional
            Selection, as in :func:`select_parameters`.

        Returns
        -------
        ParamSpace
            The space of the selected parameters.

        Raises
        ------
        ValueError
            If the selected parameters live on several devices or have several dtypes.
        """
        names = select_parameters(model, params)
        table = dict(model.named_parameters())
        tensors = [table[n] for n in names]
        devices = {t.device for t in tensors}
        dtypes = {t.dtype for t in tensors}
        if len(devices) > 1:
            raise ValueError(
                f"Selected parameters live on several devices {sorted(map(str, devices))}; "
                "move the model to one device (model.to(device)) or select a subset with params=."
            )
        if len(dtypes) > 1:
            raise ValueError(
                f"Selected parameters have several dtypes {sorted(map(str, dtypes))}; "
                "cast the model to one dtype (model.double() or model.float())."
            )
        return cls(
            names=tuple(names),
            shapes=tuple(t.shape for t in tensors),
            dtype=tensors[0].dtype,
            device=tensors[0].device,
        )

    @property
    def numels(self) -> tuple[int, ...]:
        """Number of entries of each parameter."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """Total number of entries ``P``."""
        return sum(self.numels)

    def slices(self) -> dict[str, slice]:
        """Return the slice of the flat vector that holds each parameter.

        Returns
        -------
        dict of str to slice
            ``{name: slice(start, stop)}``.
        """
        out, start = {}, 0
        for name, n in zip(self.names, self.numels):
            out[name] = slice(start, start + n)
            start += n
        return out

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector ``(P,)`` or a batch of them ``(k, P)`` into named views.

        Parameters
        ----------
        vector : Tensor
            Shape ``(P,)`` or ``(k, P)``.

        Returns
        -------
        dict of str to Tensor
            Views of shape ``shape`` or ``(k, *shape)`` (no copy when ``vector`` is contiguous).

        Raises
        ------
        ValueError
            If the last dimension is not ``P``.
        """
        if vector.ndim not in (1, 2) or vector.shape[-1] != self.dim:
            raise ValueError(
                f"expected a vector of shape ({self.dim},) or (k, {self.dim}); "
                f"got {tuple(vector.shape)}."
            )
        lead = vector.shape[:-1]
        parts = torch.split(vector, list(self.numels), dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def flatten(self, tensors: Mapping[str, Tensor], *, batch_dims: int = 0) -> Tensor:
        """Concatenate named tensors into a flat vector (inverse of :meth:`unflatten`).

        Parameters
        ----------
        tensors : mapping of str to Tensor
            One tensor per name of this space, of shape ``shape`` (or ``(k, *shape)`` with
            ``batch_dims=1``).
        batch_dims : int, optional
            Number of leading batch dimensions to keep (0 or 1).

        Returns
        -------
        Tensor
            Shape ``(P,)``, or ``(k, P)`` with ``batch_dims=1``.

        Raises
        ------
        ValueError
            If a name is missing or a shape does not match.
        """
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"missing tensors for parameters {missing}.")
        parts = []
        for n, s in zip(self.names, self.shapes):
            t = tensors[n]
            if tuple(t.shape[batch_dims:]) != tuple(s):
                raise ValueError(
                    f"tensor for {n!r} has shape {tuple(t.shape)}; expected {tuple(s)} "
                    f"after {batch_dims} batch dimension(s)."
                )
            parts.append(t.reshape(*t.shape[:batch_dims], -1))
        return torch.cat(parts, dim=-1)
