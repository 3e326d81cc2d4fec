"""Fingerprints of tensors, data and loss functions: what a resumable file must match.

A results file (a surface's, an analysis') may be continued only by the same computation:
the same parameters, directions and data to the bit, and the same loss. These digests say
so without holding copies; every writer and reader of resumable files uses them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

__all__ = ["data_fingerprint", "describe", "fingerprint"]


def _bytes(t: Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """Return the SHA-256 of named tensors: names, shapes and bytes, in name order.

    Parameters
    ----------
    tensors : mapping of str to Tensor
        The tensors.

    Returns
    -------
    str
        The hex digest.

    Examples
    --------
    >>> fingerprint({"a": torch.zeros(2)}) == fingerprint({"a": torch.zeros(2)})
    True
    >>> fingerprint({"a": torch.zeros(2)}) == fingerprint({"a": torch.zeros(3)})
    False
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(_bytes(t))
    return h.hexdigest()


def data_fingerprint(batches: Iterable[Any], num_samples: int) -> str:
    """Return the SHA-256 of every tensor of every batch (one pass) and the sample count.

    Parameters
    ----------
    batches : iterable
        The batches (any nesting of tuples, lists and dicts of tensors).
    num_samples : int
        The number of samples.

    Returns
    -------
    str
        The hex digest.
    """
    h = hashlib.sha256()
    for batch in batches:
        leaves, _ = tree_flatten(batch)
        for t in leaves:
            if isinstance(t, Tensor):
                h.update(_bytes(t))
    h.update(str(num_samples).encode())
    return h.hexdigest()


def describe(fn: Any) -> str:
    """Return a stable description of a loss function (no memory addresses).

    Resuming compares it across processes. Modules contribute their simple attributes
    (``label_smoothing``, ``reduction``...), which their repr omits; partials their function
    and arguments. Two different lambdas of one module cannot be told apart: give such
    losses a name.

    Parameters
    ----------
    fn : callable or None
        The function (``None``: the default loss).

    Returns
    -------
    str
        The description.

    Examples
    --------
    >>> describe(nn.CrossEntropyLoss(label_smoothing=0.1))  # doctest: +ELLIPSIS
    "torch.nn.modules.loss.CrossEntropyLoss[..., ('label_smoothing', 0.1), ...]"
    """
    if fn is None:
        return "default"
    if isinstance(fn, functools.partial):
        return f"partial({describe(fn.func)}, {fn.args!r}, {sorted(fn.keywords.items())!r})"
    if isinstance(fn, nn.Module):
        simple = {
            k: v
            for k, v in vars(fn).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple, type(None)))
        }
        return f"{type(fn).__module__}.{type(fn).__qualname__}{sorted(simple.items())!r}"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', '')}.{name}"
