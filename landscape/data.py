"""Batches for curvature computations: normalisation of the input, limits, device moves, caching.

:class:`DataSource` turns what users pass as ``data`` (a ``DataLoader``, a list of batches,
or a single batch) into a re-iterable stream of :class:`Batch` records ``(index, data,
num_samples, weight)`` on the model's device. It is the one place that knows about sample
counts and weights (the units a batch's mean loss is over), ``max_batches`` /
``max_samples``, the on-device cache, and data-parallel sharding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from landscape import distributed
from landscape.batches import batch_size, map_tensors

__all__ = ["Batch", "BatchList", "DataSource"]


class Batch(NamedTuple):
    """One batch of the data on the device, with its place, size and weight.

    Attributes
    ----------
    index : int
        0-based position of the batch in the user's data (before sharding).
    data : Any
        The batch itself, on the device.
    num_samples : int
        Its number of samples.
    weight : float
        The number of units its mean loss is over (samples, or scored tokens).
    """

    index: int
    data: Any
    num_samples: int
    weight: float


_DEFAULT_CACHE_BYTES = 2 * 1024**3


class BatchList:
    """A re-iterable list of batches, never mistaken for a single batch.

    :class:`DataSource` reads a plain list of up to four tensors as one batch; wrap a list
    of batches in this to say it is a list of batches.

    Examples
    --------
    >>> X, y = torch.randn(4, 3), torch.arange(4)
    >>> len(BatchList([(X[:2], y[:2]), (X[2:], y[2:])]))
    2
    """

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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
    """A re-iterable stream of batches on one device, with sample counts and weights.

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
    weigh : callable, optional
        ``weigh(batch) -> weight`` of a device batch, the units its mean loss is over
        (:meth:`landscape.losses.Objective.weight`); default: its number of samples. Batches
        of weight 0 (every label ignored) add nothing to any mean and are skipped.

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
    >>> [batch.num_samples for batch in source]
    [6, 2]
    >>> source.num_samples, source.total_weight
    (8, 8.0)
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
        weigh: Callable[[Any], float] | None = None,
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
        self.weigh = weigh
        self._cached: list[Batch] | None = None
        self._whole = False  # the cache holds every batch read, in order (none skipped)
        self._num_samples: int | None = None
        self._total_weight: float | None = None

    @property
    def num_samples(self) -> int:
        """Number of samples over all ranks, in batches of positive weight.

        Known after the first pass; asked before, it makes that pass (reading and weighing
        the batches, no model evaluation; under :mod:`torch.distributed` every rank must
        ask, as for any pass).
        """
        if self._num_samples is None:
            self._count()
        return self._num_samples  # type: ignore[return-value]

    @property
    def total_weight(self) -> float:
        r"""Total weight :math:`\sum_b w_b` over all ranks (see :attr:`num_samples`)."""
        if self._total_weight is None:
            self._count()
        return self._total_weight  # type: ignore[return-value]

    @property
    def spans_ranks(self) -> bool:
        """Whether the data is split across :mod:`torch.distributed` ranks (sums are all-reduced).

        True under an initialized process group unless ``shard=False`` (every rank holds all
        the data): sharded by batch index, or by the loader's ``DistributedSampler``.
        """
        return distributed.is_distributed() and self.shard is not False

    def _count(self) -> None:
        for _ in self:
            pass

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

    def _stream(self) -> Iterator[Batch]:
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
            batch = self._to_device(batch)
            weight = float(n) if self.weigh is None else float(self.weigh(batch))
            yield Batch(index, batch, n, weight)

    def __iter__(self) -> Iterator[Batch]:
        """Yield this rank's batches of positive weight.

        Yields
        ------
        Batch
            The global batch index, the batch on the device, its number of samples and its
            weight.

        Raises
        ------
        ValueError
            If the data yields no samples, or only batches of weight 0.
        """
        if self._cached is not None:
            yield from self._cached
            return
        limit = self._cache_limit()
        kept: list[Batch] | None = [] if limit >= 0 else None
        used = 0
        skipped = False
        # Samples of batches of positive weight, their weight, and all samples read.
        local = torch.zeros(3, dtype=torch.float64)
        for item in self._stream():
            local[2] += item.num_samples
            if item.weight == 0:
                skipped = True
                continue
            local[0] += item.num_samples
            local[1] += item.weight
            if kept is not None:
                used += _nbytes(item.data)
                if used <= limit:
                    kept.append(item)
                else:
                    kept = None
            yield item
        total = local
        if self.spans_ranks:  # ranks hold parts
            total = distributed.all_reduce_sum_(local.to(self.device)).cpu()
        samples, weight, read = int(total[0]), float(total[1]), int(total[2])
        if read == 0:
            raise ValueError(
                "data yielded no samples (empty DataLoader or list, or limits that exclude "
                "everything); curvature needs at least one batch."
            )
        if weight == 0:
            raise ValueError(
                f"every batch of the data has weight 0 ({read} samples, nothing to average "
                "over): all labels are ignored (-100), or count= returned 0 for every batch. "
                "Check the labels (a language model needs labels that are not -100), or the "
                "count function."
            )
        if self._num_samples is not None and samples != self._num_samples:
            warnings.warn(
                f"data yielded {samples} samples this pass but {self._num_samples} before; a "
                "loader with drop_last=True and shuffling, or a changing dataset, makes every "
                "product refer to different data. Use cache=True to freeze the data.",
                stacklevel=3,
            )
        self._num_samples = samples
        self._total_weight = weight
        if kept is not None:
            self._cached = kept
            self._whole = not skipped

    def prefix(self, *, max_batches: int | None, max_samples: int | None) -> DataSource | None:
        """Return a source of the first batches or samples of this one, from its device cache.

        No pass over the user's data is made: the cached device batches are shared. Only
        possible once a pass has cached every batch (none of weight 0 skipped, not split
        across ranks) and when the new limits take a part of this source's data.

        Parameters
        ----------
        max_batches, max_samples : int or None
            The limits of the new source.

        Returns
        -------
        DataSource or None
            The new source, or ``None`` when this one cannot serve it from its cache.

        Examples
        --------
        >>> X, y = torch.randn(10, 3), torch.arange(10) % 2
        >>> source = DataSource([(X[:6], y[:6]), (X[6:], y[6:])], device=torch.device("cpu"),
        ...                     dtype=torch.float32)
        >>> source.prefix(max_batches=None, max_samples=4) is None  # nothing cached yet
        True
        >>> source.num_samples, source.prefix(max_batches=None, max_samples=4).num_samples
        (10, 4)
        """
        if self._cached is None or not self._whole or distributed.is_distributed():
            return None
        for new, old in ((max_batches, self.max_batches), (max_samples, self.max_samples)):
            if old is not None and (new is None or new > old):
                return None
        return DataSource(
            BatchList([b.data for b in self._cached]),
            device=self.device,
            dtype=self.dtype,
            max_batches=max_batches,
            max_samples=max_samples,
            cache=True,
            shard=False,
            weigh=self.weigh,
        )
