"""Batches for curvature computations: normalisation of the input, limits, device moves, caching.

:class:`DataSource` turns what users pass as ``data`` (a ``DataLoader``, a list of batches,
or a single batch) into a re-iterable stream of ``(index, batch, num_samples)`` on the
model's device. It is the one place that knows about sample counts, ``max_batches`` /
``max_samples``, the on-device cache, and data-parallel sharding.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from landscape import distributed
from landscape.losses import batch_size, map_tensors

__all__ = ["DataSource"]

_DEFAULT_CACHE_BYTES = 2 * 1024**3


def _is_single_batch(data: Any) -> bool:
    if isinstance(data, Mapping):
        return any(isinstance(v, Tensor) for v in data.values())
    if isinstance(data, (tuple, list)) and 1 <= len(data) <= 4:
        return all(isinstance(x, Tensor) for x in data)
    return isinstance(data, Tensor)


def _nbytes(batch: Any) -> int:
    total = 0

    def count(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    map_tensors(batch, count)
    return total


def _truncate(batch: Any, n: int, full: int) -> Any:
    """Keep the first ``n`` samples of every tensor whose first dimension is the batch size.

    Returns
    -------
    Any
        The truncated batch.
    """
    return map_tensors(batch, lambda t: t[:n] if t.ndim > 0 and t.shape[0] == full else t)


class DataSource:
    """A re-iterable stream of batches on one device, with sample counts.

    Parameters
    ----------
    data : iterable of batches, or one batch
        A ``torch.utils.data.DataLoader``, a list of ``(inputs, targets)`` tuples or dicts,
        or a single batch (a tuple of tensors or a dict of tensors). One-shot iterators
        (generators) are rejected because every product needs a fresh pass.
    device : torch.device
        Batches are moved here; floating-point tensors are cast to ``dtype``.
    dtype : torch.dtype
        The model's floating dtype (so a ``model.double()`` works with a float32 loader).
    max_batches : int, optional
        Use only the first ``max_batches`` batches.
    max_samples : int, optional
        Use only the first ``max_samples`` samples (the last batch is cut to fit).
    cache : bool or "auto", optional
        Keep the device batches after the first pass and reuse them: ``True`` always,
        ``False`` never, ``"auto"`` (default) when they take at most 2 GiB (on CUDA, at most a
        quarter of the free memory). The cached pass is bitwise the same every time, even for
        a shuffling loader.
    shard : bool or "auto", optional
        With :mod:`torch.distributed` initialized, ``"auto"`` (default) gives batch ``i`` to
        rank ``i % world_size``, unless the loader already uses a
        :class:`~torch.utils.data.distributed.DistributedSampler` (then each rank keeps what
        its sampler yields). ``False`` makes every rank use all of ``data`` (and count only
        its own samples).

    Raises
    ------
    TypeError
        If ``data`` is a one-shot iterator or not iterable.
    ValueError
        If ``data`` is empty or a limit is not a positive integer.

    Examples
    --------
    >>> X, y = torch.randn(10, 3), torch.arange(10) % 2
    >>> source = DataSource([(X[:6], y[:6]), (X[6:], y[6:])], device=torch.device("cpu"),
    ...                     dtype=torch.float32, max_samples=8)
    >>> [n for _, _, n in source]
    [6, 2]
    >>> source.num_samples
    8
    """

    def __init__(
        self,
        data: Iterable[Any] | Any,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_batches: int | None = None,
        max_samples: int | None = None,
        cache: bool | Literal["auto"] = "auto",
        shard: bool | Literal["auto"] = "auto",
    ) -> None:
        if _is_single_batch(data):
            data = [data]
        elif isinstance(data, Iterator):
            raise TypeError(
                f"data is a one-shot iterator ({type(data).__name__}); every curvature product "
                "needs a fresh pass over the data. Pass a list of batches or a DataLoader."
            )
        elif not isinstance(data, Iterable):
            raise TypeError(
                f"data must be an iterable of batches (e.g. a DataLoader) or one batch; "
                f"got {type(data).__name__}."
            )
        if hasattr(data, "__len__") and len(data) == 0:
            raise ValueError(
                "data is empty (a DataLoader or list with no batches); curvature needs at "
                "least one batch."
            )
        for name, value in (("max_batches", max_batches), ("max_samples", max_samples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be True, False or 'auto'; got {cache!r}.")
        self.data = data
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_batches = max_batches
        self.max_samples = max_samples
        self.cache = cache
        self.shard = shard
        self._cached: list[tuple[int, Any, int]] | None = None
        self._num_samples: int | None = None
        self._num_batches: int | None = None

    @property
    def num_samples(self) -> int:
        """Total number of samples over all ranks (known after the first pass).

        Raises
        ------
        RuntimeError
            Before the first pass.
        """
        if self._num_samples is None:
            raise RuntimeError("num_samples is known after the first pass over the data.")
        return self._num_samples

    def _sharded(self) -> bool:
        if not distributed.is_distributed() or self.shard is False:
            return False
        sampler = getattr(self.data, "sampler", None)
        from torch.utils.data.distributed import DistributedSampler

        return not isinstance(sampler, DistributedSampler)

    def _to_device(self, batch: Any) -> Any:
        def move(t: Tensor) -> Tensor:
            t = t.to(self.device, non_blocking=True)
            return t.to(self.dtype) if t.is_floating_point() and t.dtype != self.dtype else t

        return map_tensors(batch, move)

    def _cache_limit(self) -> int:
        if self.cache is True:
            return 2**62
        if self.cache is False:
            return -1
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free // 4
        return _DEFAULT_CACHE_BYTES

    def _stream(self) -> Iterator[tuple[int, Any, int]]:
        sharded = self._sharded()
        world, me = distributed.world_size(), distributed.rank()
        seen = 0
        for index, batch in enumerate(self.data):
            if self.max_batches is not None and index >= self.max_batches:
                break
            n = batch_size(batch)
            if self.max_samples is not None:
                if seen >= self.max_samples:
                    break
                if seen + n > self.max_samples:
                    batch, n = _truncate(batch, self.max_samples - seen, n), self.max_samples - seen
            seen += n
            if sharded and index % world != me:
                continue
            yield index, self._to_device(batch), n

    def __iter__(self) -> Iterator[tuple[int, Any, int]]:
        """Yield ``(batch_index, batch_on_device, num_samples)`` for this rank's batches.

        Yields
        ------
        tuple
            The global batch index, the batch on the device, and its number of samples.

        Raises
        ------
        ValueError
            If the data yields no samples.
        """
        if self._cached is not None:
            yield from self._cached
            return
        limit = self._cache_limit()
        kept: list[tuple[int, Any, int]] | None = [] if limit >= 0 else None
        used = 0
        local = 0
        for item in self._stream():
            local += item[2]
            if kept is not None:
                used += _nbytes(item[1])
                if used <= limit:
                    kept.append(item)
                else:
                    kept = None
            yield item
        total = local
        if distributed.is_distributed() and self.shard is not False:  # ranks hold parts
            count = torch.tensor([float(local)], device=self.device, dtype=torch.float64)
            total = int(distributed.all_reduce_sum_(count).item())
        if total == 0:
            raise ValueError(
                "data yielded no samples (empty DataLoader or list, or limits that exclude "
                "everything); curvature needs at least one batch."
            )
        if self._num_samples is not None and total != self._num_samples:
            warnings.warn(
                f"data yielded {total} samples this pass but {self._num_samples} before; a "
                "loader with drop_last=True and shuffling, or a changing dataset, makes every "
                "product refer to different data. Use cache=True to freeze the data.",
                stacklevel=3,
            )
        self._num_samples = total
        if kept is not None:
            self._cached = kept
