"""The structure of a batch: nested tuples, lists and dicts of tensors with a batch dimension.

Every layer that cuts, merges or walks batches uses these few functions, so a batch format
that works in one place works everywhere: ``(inputs, targets)``, ``(x1, ..., xm, targets)``,
Hugging Face dicts (``{"input_ids": ..., "attention_mask": ..., "labels": ...}``) and any
nest of them. A tensor belongs to the batch dimension when its first dimension is the batch
size; other tensors (a shared mask, a scalar) are shared by every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["batch_size", "concatenate", "leaves", "map_tensors", "rebuild", "select_rows"]


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples, lists and dicts.

    Parameters
    ----------
    obj : Any
        A tensor, or a (nested) tuple/list/dict containing tensors.
    fn : callable
        Applied to each tensor.

    Returns
    -------
    Any
        The same structure with ``fn`` applied; non-tensor leaves are returned unchanged.

    Examples
    --------
    >>> map_tensors({"x": torch.ones(2), "n": 3}, lambda t: 2 * t)
    {'x': tensor([2., 2.]), 'n': 3}
    """
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return type(obj)({k: map_tensors(v, fn) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def leaves(batch: Any) -> list[Tensor]:
    """Return the tensors of a batch in :func:`map_tensors` order.

    Returns
    -------
    list of Tensor
        Every tensor leaf.
    """
    found: list[Tensor] = []

    def visit(t: Tensor) -> Tensor:
        found.append(t)
        return t

    map_tensors(batch, visit)
    return found


def rebuild(batch: Any, values: list[Tensor]) -> Any:
    """Return ``batch`` with its tensor leaves replaced, in order, by ``values``.

    Returns
    -------
    Any
        A batch of the same structure.
    """
    it = iter(values)
    return map_tensors(batch, lambda _: next(it))


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    values = (
        obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (list, tuple)) else ()
    )
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def batch_size(batch: Any) -> int:
    """Return the number of samples in a batch (the length of its targets' first dimension).

    Parameters
    ----------
    batch : Any
        ``(inputs, targets)``, ``(x1, ..., targets)``, a dict (``"labels"`` preferred) or any
        nest of tensors.

    Returns
    -------
    int
        Size of the first dimension of the targets (or of the first tensor found).

    Raises
    ------
    TypeError
        If the batch holds no tensor with a batch dimension.

    Examples
    --------
    >>> batch_size((torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)))
    5
    >>> batch_size({"input_ids": torch.zeros(2, 7), "labels": torch.zeros(2, 7)})
    2
    """
    if isinstance(batch, (list, tuple)) and len(batch) >= 2 and isinstance(batch[-1], Tensor):
        candidate: Tensor | None = batch[-1]
    elif isinstance(batch, Mapping) and isinstance(batch.get("labels"), Tensor):
        candidate = batch["labels"]
    else:
        candidate = _first_tensor(batch)
    if candidate is None or candidate.ndim == 0:
        raise TypeError(
            f"cannot find the batch dimension of a batch of type {type(batch).__name__}: "
            "expected (inputs, targets), a dict of tensors, or tensors with a leading batch "
            "dimension."
        )
    return int(candidate.shape[0])


def select_rows(batch: Any, rows: Tensor | slice | int, n: int | None = None) -> Any:
    """Return the sub-batch of the given samples (rows of every tensor with the batch dimension).

    Parameters
    ----------
    batch : Any
        A batch (tuple, dict, nested).
    rows : Tensor, slice or int
        Sample indices (a 1-D index tensor), a slice, or one index (kept as a batch of one).
    n : int, optional
        The batch size (default: :func:`batch_size`). Only tensors whose first dimension is
        ``n`` are cut; the others are shared by every sample.

    Returns
    -------
    Any
        The sub-batch.

    Examples
    --------
    >>> batch = (torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2]))
    >>> select_rows(batch, 1)
    (tensor([[2., 3.]]), tensor([1]))
    """
    n = batch_size(batch) if n is None else n
    if isinstance(rows, int):
        rows = slice(rows, rows + 1)

    def cut(t: Tensor) -> Tensor:
        if t.ndim == 0 or t.shape[0] != n:
            return t
        if isinstance(rows, Tensor):
            return t.index_select(0, rows.to(t.device))
        return t[rows]

    return map_tensors(batch, cut)


# Right-padding values of Hugging Face batch entries: padded positions are masked out
# (attention_mask 0) and never scored (labels -100), so padding changes no real token.
_PAD_VALUES = {"labels": -100, "attention_mask": 0}


def _pad_to(t: Tensor, length: int, value: int | float) -> Tensor:
    if t.ndim < 2 or t.shape[1] == length:
        return t
    pad = torch.full((t.shape[0], length - t.shape[1], *t.shape[2:]), value, dtype=t.dtype)
    return torch.cat([t, pad.to(t.device)], dim=1)


def concatenate(batches: list[Any], *, pad: bool = False) -> Any:
    """Concatenate batches with the same structure along their first dimension.

    Parameters
    ----------
    batches : list
        Batches of one structure.
    pad : bool, optional
        Right-pad the entries of dictionary batches to a common sequence length (dimension
        1): ``labels`` with -100 (not scored), ``attention_mask`` with 0, everything else
        with 0. Exact when every padded position is masked or never seen: the caller must
        know that (see :meth:`landscape.losses.Objective.can_pad`).

    Returns
    -------
    Any
        One batch with the structure of the inputs.

    Raises
    ------
    TypeError
        If a leaf is neither a tensor nor a container of tensors, or shapes differ where
        they cannot be padded.

    Examples
    --------
    >>> a = {"input_ids": torch.ones(1, 2, dtype=torch.long), "labels": torch.ones(1, 2)}
    >>> b = {"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.ones(1, 3)}
    >>> concatenate([a, b], pad=True)["labels"]
    tensor([[   1.,    1., -100.],
            [   1.,    1.,    1.]])
    """
    first = batches[0]
    if isinstance(first, Tensor):
        return _cat(batches)
    if isinstance(first, Mapping):
        if pad:
            length = max(
                (b[k].shape[1] for b in batches for k in first if _sequence(b[k])), default=0
            )
            batches = [
                {
                    k: _pad_to(v, length, _PAD_VALUES.get(k, 0)) if _sequence(v) else v
                    for k, v in b.items()
                }
                for b in batches
            ]
        return type(first)({k: concatenate([b[k] for b in batches]) for k in first})  # type: ignore[call-arg]
    if isinstance(first, (list, tuple)):
        parts = [concatenate([b[i] for b in batches], pad=pad) for i in range(len(first))]
        return type(first)(parts) if isinstance(first, list) else tuple(parts)
    raise TypeError(
        f"cannot concatenate batch entries of type {type(first).__name__}: expected tensors, "
        "or tuples, lists or dicts of tensors."
    )


def _sequence(value: Any) -> bool:
    return isinstance(value, Tensor) and value.ndim >= 2


def _cat(tensors: list[Tensor]) -> Tensor:
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) > 1:
        raise TypeError(
            f"cannot concatenate batch entries of shapes {sorted(shapes)} (after the batch "
            "dimension): batches of different sequence lengths need padding."
        )
    return torch.cat(tensors)
