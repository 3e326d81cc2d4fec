r"""Memory planned like time: what is free on a device, a budget, and vectors that fit in it.

Every algorithm of landscape holds a small number of vectors as long as the parameters
(:math:`P` numbers each: a Lanczos basis, Hutch++'s sketch, SLQ probes, per-example
gradients). At :math:`P = 124` million (GPT-2 small) one float32 vector is 0.5 GB, so *how
many* decides whether a computation fits. Each algorithm therefore sizes itself from
:math:`P` and a :class:`MemoryBudget`: its basis, its sketch, its blocks of probes. When even
the smallest useful size does not fit, it raises :class:`MemoryBudgetError` naming the
quantity, the need and the knob, before allocating — never the kernel's OOM killer.

Sizes that change a result (a Lanczos basis, a Hutch++ sketch) default to what fits in
:data:`DEFAULT_WORKSPACE`, a function of :math:`P` alone, so results are reproducible; sizes
that do not (how many probes share one pass over the data) use the whole budget. The
budget covers the algorithm's own vectors (and the blocks it pushes through one
product); the activations of the products themselves come on top, bounded by one batch. The
default is :data:`DEFAULT_FRACTION` of the memory free on the device when the computation
starts: host RAM as ``psutil.virtual_memory().available`` (what can be allocated without
swapping), on CUDA ``torch.cuda.mem_get_info``. The other three quarters are left to the
products' activations, which grow with the columns of a block (GPT-2 small: Hutch++ in
blocks sized to half of the free memory peaked at 15.4 GB and ran at 6.4 s a column, in
blocks of two at about 3 s), and to other processes.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import torch

__all__ = [
    "DEFAULT_FRACTION",
    "DEFAULT_WORKSPACE",
    "MemoryBudget",
    "MemoryBudgetError",
    "budget_scope",
    "format_bytes",
    "free_memory",
    "vector_bytes",
]

#: Share of the free memory a computation may use by default (see the module docstring).
DEFAULT_FRACTION = 0.25
#: Bytes that sizes which change a result (a Lanczos basis, a Hutch++ sketch, XTrace's
#: rounds, SLQ's reorthogonalized runs) take by default, counted on the global dimension:
#: so those sizes, and the results, depend on P and the seed only — not on the free memory
#: of the moment nor on the number of ranks. The budget can only lower them.
DEFAULT_WORKSPACE = 2 * 1024**3

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


class MemoryBudgetError(MemoryError):
    """A computation cannot fit in its memory budget (the message names the knob)."""


# What ``memory_budget=None`` means inside :func:`budget_scope` (unset: the default share).
_SCOPE: contextvars.ContextVar[Any] = contextvars.ContextVar("memory_budget", default=None)


@contextlib.contextmanager
def budget_scope(memory_budget: Any) -> Iterator[None]:
    """Make ``memory_budget`` the default of every computation inside the block.

    How :func:`landscape.analyze` hands one budget to all its stages: every algorithm that
    is not given ``memory_budget=`` itself resolves ``None`` to this value
    (:meth:`MemoryBudget.resolve`). ``None`` leaves the default as it is.

    Parameters
    ----------
    memory_budget : None, int, float, str or MemoryBudget
        As for :meth:`MemoryBudget.resolve`.

    Examples
    --------
    >>> with budget_scope("1 GB"):
    ...     MemoryBudget.resolve(None, "cpu").bytes
    1000000000
    """
    token = _SCOPE.set(memory_budget if memory_budget is not None else _SCOPE.get())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def free_memory(device: torch.device | str) -> int:
    """Return the bytes that can be allocated on ``device`` now.

    Parameters
    ----------
    device : torch.device or str
        ``"cpu"`` (host RAM: ``psutil.virtual_memory().available``), a CUDA device
        (``torch.cuda.mem_get_info``), or another accelerator (host RAM is returned: its
        memory is not queried).

    Returns
    -------
    int
        Bytes.

    Examples
    --------
    >>> free_memory("cpu") > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def vector_bytes(n: int, dtype: torch.dtype) -> int:
    """Return the bytes of one vector of ``n`` numbers of ``dtype``.

    Returns
    -------
    int
        ``n * itemsize``.

    Examples
    --------
    >>> vector_bytes(124_439_808, torch.float32)
    497759232
    """
    return int(n) * torch.empty(0, dtype=dtype).element_size()


def format_bytes(n: float) -> str:
    """Return ``n`` bytes in decimal units, e.g. ``"19.9 GB"``.

    Returns
    -------
    str
        Three significant digits and a unit.

    Examples
    --------
    >>> format_bytes(19_910_384_640), format_bytes(512), format_bytes(3.2e6)
    ('19.9 GB', '512 B', '3.2 MB')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?i?)[bB]?\s*", text)
    if match is None:
        raise ValueError(
            f"memory_budget={text!r} is not a size; give bytes (an int), a fraction of the "
            "free memory (a float in (0, 1]) or a string such as '8GB' or '6 GiB'."
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    scale = _BINARY[unit] if unit in _BINARY else _UNITS[unit]
    return int(number * scale)


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes a computation may use, and where that number came from.

    Attributes
    ----------
    bytes : int
        The budget.
    free : int
        Bytes free on the device when the budget was resolved.
    device : torch.device
        Where the memory is (host RAM for ``"cpu"``).
    given : str
        How it was set (``"default"``, ``"fraction 0.25"``, ``"bytes"``), for messages.
    """

    bytes: int
    free: int
    device: torch.device
    given: str

    @classmethod
    def resolve(cls, memory_budget: Any, device: torch.device | str) -> MemoryBudget:
        """Turn what a user passes as ``memory_budget=`` into a budget on ``device``.

        Parameters
        ----------
        memory_budget : None, int, float, str or MemoryBudget
            ``None``: :data:`DEFAULT_FRACTION` of the free memory. A float in (0, 1]: that
            fraction of the free memory. An int (or a float above 1): bytes. A string:
            ``"8GB"``, ``"6 GiB"``, ``"500MB"``. A :class:`MemoryBudget` is returned as is.
        device : torch.device or str
            The device whose free memory counts.

        Returns
        -------
        MemoryBudget
            The budget.

        Raises
        ------
        ValueError
            For a non-positive or unparsable budget.

        Examples
        --------
        >>> MemoryBudget.resolve("2 GiB", "cpu").bytes
        2147483648
        >>> half = MemoryBudget.resolve(None, "cpu")
        >>> half.bytes == int(0.25 * half.free)
        True
        """
        if memory_budget is None:
            memory_budget = _SCOPE.get()  # inside budget_scope: its budget
        if isinstance(memory_budget, MemoryBudget):
            return memory_budget
        device = torch.device(device)
        free = free_memory(device)
        if memory_budget is None:
            return cls(int(DEFAULT_FRACTION * free), free, device, "default")
        if isinstance(memory_budget, bool):
            raise ValueError(f"memory_budget must be bytes or a fraction; got {memory_budget!r}.")
        if isinstance(memory_budget, str):
            size = _parse_bytes(memory_budget)
            if size <= 0:
                raise ValueError(f"memory_budget must be positive; got {memory_budget!r}.")
            return cls(size, free, device, "bytes")
        if isinstance(memory_budget, float) and 0 < memory_budget <= 1:
            return cls(int(memory_budget * free), free, device, f"fraction {memory_budget:g}")
        if (isinstance(memory_budget, int) and memory_budget > 0) or (
            isinstance(memory_budget, float) and memory_budget > 1
        ):
            return cls(int(memory_budget), free, device, "bytes")
        raise ValueError(
            "memory_budget must be a positive number of bytes, a fraction of the free memory "
            f"in (0, 1], or a string such as '8GB'; got {memory_budget!r}."
        )

    def describe(self) -> str:
        """Return the budget in words, e.g. ``"4.55 GB (the default: a quarter of 18.2 GB free)"``.

        Returns
        -------
        str
            The budget and where it came from.
        """
        where = "host RAM" if self.device.type == "cpu" else str(self.device)
        free = f"{format_bytes(self.free)} free in {where}"
        if self.given == "default":
            share = {0.5: "half", 0.25: "a quarter"}.get(DEFAULT_FRACTION, f"{DEFAULT_FRACTION:g}")
            return f"{format_bytes(self.bytes)} (the default: {share} of the {free})"
        if self.given.startswith("fraction"):
            return f"{format_bytes(self.bytes)} ({self.given} of the {free})"
        return f"{format_bytes(self.bytes)} ({free})"

    def vectors(self, n: int, dtype: torch.dtype, *, reserved: int = 0) -> int:
        """Return how many vectors of ``n`` numbers fit, after ``reserved`` bytes.

        Returns
        -------
        int
            ``floor((bytes - reserved) / (n * itemsize))``, at least 0.

        Examples
        --------
        >>> budget = MemoryBudget.resolve(10_000, "cpu")
        >>> budget.vectors(100, torch.float64), budget.vectors(100, torch.float32, reserved=2_000)
        (12, 20)
        """
        size = vector_bytes(max(n, 1), dtype)
        return max(0, (self.bytes - reserved) // size)

    def require(
        self, count: int, n: int, dtype: torch.dtype, *, what: str, knob: str, extra: int = 0
    ) -> None:
        """Raise :class:`MemoryBudgetError` unless ``count`` vectors (plus ``extra`` bytes) fit.

        Parameters
        ----------
        count : int
            Vectors of ``n`` numbers of ``dtype`` needed.
        what : str
            What needs them (``"the Lanczos basis"``).
        knob : str
            What the user can change (``"pass ncv= (at least 3) or memory_budget="``).
        extra : int, optional
            Further bytes needed besides the vectors.

        Raises
        ------
        MemoryBudgetError
            With a message naming the quantity, the need, the budget and the knob.
        """
        need = count * vector_bytes(n, dtype) + extra
        if need <= self.bytes:
            return
        raise MemoryBudgetError(
            f"{what} needs {count} vectors of {n:,} {str(dtype).replace('torch.', '')} "
            f"= {format_bytes(need)}; the memory budget is {self.describe()}. {knob[0].upper()}"
            f"{knob[1:]}."
        )
