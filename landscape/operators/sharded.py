r"""Curvature of models sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``).

FSDP2 keeps each parameter as a ``DTensor`` split along its first dimension over the ranks
of a process group: no rank holds the parameters whole, and double-backward through FSDP2
fails, while first-order backward works (its gradients are reduce-scattered: each rank
receives its own shard of the gradient, averaged over the ranks). So here

* **vectors are the ranks' local shards**: a vector over the selected parameters is, on
  each rank, the concatenation of that rank's shard of every parameter (``to_local()``),
  :math:`P/\text{world}` numbers; the operator's
  :attr:`~landscape.operators.base.LinearOperator.vector_space` is a
  :class:`~landscape.operators.space.ShardedSpace` that all-reduces inner products, so every
  algorithm of :mod:`landscape.linalg` runs unchanged, each rank holding its slice of every
  Lanczos, SLQ or Hutch++ vector;
* **Hessian products are central differences of FSDP's own gradients**
  (:mod:`landscape.operators.finite_difference`): every rank moves its local shard by
  :math:`\pm h \hat v_\text{local}` in place, the gradient is computed with FSDP's forward
  and backward, and the shards are restored bitwise afterwards;
* **Gauss-Newton and empirical Fisher products** need only forward passes and one
  first-order backward (:class:`ShardedGaussNewtonOperator`,
  :class:`ShardedFisherOperator`): :math:`J\hat v` and the per-sample directional
  derivatives :math:`g_i^\top \hat v` by central differences of outputs and losses, then
  one FSDP backward of an output- or sample-weighted loss;
* **the data is sharded across ranks and weighted as for data parallelism**
  (:class:`~landscape.data.DataSource`): batch :math:`i` goes to rank :math:`i \bmod
  \text{world}`, and each rank's batch loss is scaled by :math:`w_b\,\text{world}/W` before
  its backward, so that FSDP's average over the ranks is the weighted mean over all the
  data, :math:`\sum_b w_b \nabla L_b / W`, whatever the ranks' shares. Ranks with fewer
  batches run zero-weighted passes so that every rank makes the same collective calls.

Measured against the exact (double-backward) product of the unsharded model: see
``docs/howto/distributed.md`` (Sharded models) and ``tests/test_fsdp.py``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from landscape import distributed
from landscape.data import DataSource
from landscape.losses import BatchLoss, Count, Criterion, Objective
from landscape.operators.base import CountingOperator
from landscape.operators.finite_difference import (
    directional_product,
    search_step,
    unit_roundoff,
)
from landscape.operators.space import ShardedSpace
from landscape.params import ParamSelector, select_parameters
from landscape.problem import evaluation_mode

__all__ = [
    "ShardedFisherOperator",
    "ShardedGaussNewtonOperator",
    "ShardedHessianOperator",
    "ShardedParameters",
    "is_sharded",
    "sharded_curvature",
    "sharded_hessian",
]

# The chosen finite-difference step, per model and parameter selection.
_CHOSEN: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[float, float]]] = (
    weakref.WeakKeyDictionary()
)


def is_sharded(model: Any) -> bool:
    """Return whether ``model`` holds ``DTensor`` parameters (FSDP2's ``fully_shard``).

    Returns
    -------
    bool
        ``True`` for an FSDP2-sharded model.

    Examples
    --------
    >>> is_sharded(nn.Linear(2, 2))
    False
    """
    return isinstance(model, nn.Module) and any(
        type(p).__name__ == "DTensor" for p in model.parameters()
    )


@dataclass(frozen=True)
class ShardedParameters:
    """The selected parameters of a sharded model, and where each rank's shard sits.

    The global flat layout is the one of the unsharded model (``parameters_to_vector``
    order); a rank's local vector concatenates its shard of each selected parameter. A
    ``Shard(0)`` shard is a contiguous run of rows, so each parameter contributes one
    contiguous global range.

    Attributes
    ----------
    names : tuple of str
        Selected parameter names, in model order.
    params : tuple of Parameter
        The ``DTensor`` parameters.
    local_shapes : tuple of torch.Size
        Shapes of this rank's shards.
    ranges : tuple of (int, int)
        Global index ranges of this rank's shards, in order.
    dim : int
        Global size :math:`P` of the selection.
    first_rows : tuple of int
        The global index of each shard's first row.
    """

    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    local_shapes: tuple[torch.Size, ...]
    ranges: tuple[tuple[int, int], ...]
    dim: int
    first_rows: tuple[int, ...] = ()

    @classmethod
    def from_model(cls, model: nn.Module, params: ParamSelector = None) -> ShardedParameters:
        """Lay out the (selected) trainable parameters of an FSDP2 model.

        Returns
        -------
        ShardedParameters
            The layout on this rank.

        Raises
        ------
        ValueError
            If a selected parameter is not a ``DTensor`` sharded along dimension 0 over a
            one-dimensional mesh of the whole world (HSDP and tensor parallelism are not
            supported).
        """
        from torch.distributed.tensor import Shard
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        table = dict(model.named_parameters())
        names = select_parameters(model, params)
        shapes, ranges, chosen, rows = [], [], [], []
        offset = 0
        for name in names:
            p = table[name]
            if type(p).__name__ != "DTensor":
                raise ValueError(
                    f"parameter {name!r} is not sharded (not a DTensor) while others are: "
                    "shard every parameter with fully_shard (e.g. the root module last)."
                )
            placements = tuple(p.placements)
            if p.device_mesh.ndim != 1 or placements not in ((Shard(0),),):
                raise ValueError(
                    f"parameter {name!r} is placed {placements} on a {p.device_mesh.ndim}-D "
                    "mesh; landscape supports FSDP2's one-dimensional Shard(0) sharding only "
                    "(not HSDP or tensor parallelism)."
                )
            if p.device_mesh.size() != distributed.world_size():
                raise ValueError(
                    f"parameter {name!r} is sharded over {p.device_mesh.size()} of "
                    f"{distributed.world_size()} ranks; landscape shards the data over the "
                    "whole world, so the model must be sharded over all of it."
                )
            local_shape, global_offset = compute_local_shape_and_global_offset(
                p.shape, p.device_mesh, p.placements
            )
            row = math.prod(p.shape[1:]) if p.ndim > 1 else 1
            start = offset + int(global_offset[0]) * row if p.ndim else offset
            ranges.append((start, start + math.prod(local_shape)))
            shapes.append(torch.Size(local_shape))
            chosen.append(p)
            rows.append(int(global_offset[0]) if p.ndim else 0)
            offset += p.numel()
        return cls(tuple(names), tuple(chosen), tuple(shapes), tuple(ranges), offset, tuple(rows))

    def constant_entries(self, model: nn.Module) -> Tensor | None:
        """Return which local entries no gradient reaches (embedding padding rows), or ``None``.

        As for unsharded models (:class:`~landscape.problem.Problem`): by PyTorch's
        convention the row ``padding_idx`` of an ``nn.Embedding`` gets a zero gradient, so
        an optimizer never moves it although the forward reads it; its entries are
        constants of every curvature, and moving them in a finite difference would add
        what the exact operators leave out.

        Returns
        -------
        Tensor or None
            Boolean ``(local_dim,)``, true on constant entries of this rank's shards.
        """
        index = {id(p): i for i, p in enumerate(self.params)}
        mask = None
        offset = [0]
        for shape in self.local_shapes:
            offset.append(offset[-1] + math.prod(shape))
        for module in model.modules():
            pad = getattr(module, "padding_idx", None)
            weight = getattr(module, "weight", None)
            if not isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or pad is None:
                continue
            i = index.get(id(weight))
            if i is None:
                continue
            rows, width = self.local_shapes[i][0], math.prod(self.local_shapes[i][1:])
            local = pad % weight.shape[0] - self.first_rows[i]
            if 0 <= local < rows:
                if mask is None:
                    mask = torch.zeros(self.local_dim, dtype=torch.bool)
                start = offset[i] + local * width
                mask[start : start + width] = True
        return mask

    @property
    def locals(self) -> list[Tensor]:
        """The shards on this rank (the parameters' storage: writing them moves the model)."""
        return [p.to_local() for p in self.params]

    @property
    def local_dim(self) -> int:
        """Numbers in this rank's shards."""
        return sum(math.prod(s) for s in self.local_shapes)

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Split a local vector ``(n_local,)``, or a batch ``(k, n_local)``, by parameter.

        Returns
        -------
        list of Tensor
            One tensor per selected parameter, shaped as its shard (with the batch
            dimension first); views where ``flat`` is contiguous.
        """
        sizes = [math.prod(s) for s in self.local_shapes]
        lead = flat.shape[:-1]
        parts = flat.split(sizes, dim=-1)
        return [part.reshape(*lead, *shape) for part, shape in zip(parts, self.local_shapes)]


def reshard(model: nn.Module) -> None:
    r"""Put every FSDP2 module of ``model`` back at rest (sharded parameters registered).

    A forward without a backward (``torch.no_grad``) leaves the root module's parameters
    unsharded, gathered before whatever moves the shards next; resharding makes the next
    forward gather the shards as they are then, and ``model.parameters()`` the sharded
    ``DTensor``\ s again.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _reduce_max(value: int, device: torch.device) -> int:
    if not distributed.is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


class ShardedHessianOperator(CountingOperator):
    r"""The Hessian of the mean loss of an FSDP2-sharded model, on each rank's shards.

    .. math::
        H \hat v \approx \frac{4 D(h/2) - D(h)}{3}, \qquad
        D(h) = \frac{\nabla L(\theta + h\hat v) - \nabla L(\theta - h \hat v)}{2h},

    with :math:`\nabla L = \sum_b w_b \nabla L_b / W` computed by FSDP's forward and backward
    (data sharded across ranks), each rank moving its own shard. The step :math:`h` is chosen
    once per model (:func:`~landscape.operators.finite_difference.search_step`, with the
    all-reduced agreement so that every rank chooses the same). Every ``matmat`` column costs
    four passes over each rank's data. The model comes back bitwise unchanged: its shards
    are restored from a copy, ``.grad`` and train/eval flags as they were.

    Parameters
    ----------
    model : torch.nn.Module
        A model sharded with ``fully_shard`` over the whole world (every rank calls every
        product: they are collective).
    data : iterable of batches, or one batch
        The same data on every rank; batch :math:`i` is used by rank :math:`i \bmod
        \text{world}` (or what a ``DistributedSampler`` yields), see
        :class:`~landscape.data.DataSource`.
    loss_fn, batch_loss, count, params, max_batches, max_samples, cache
        As for :func:`landscape.hessian`.
    mode : {"eval"}, optional
        Only eval mode.

    Raises
    ------
    ValueError
        For ``mode="train"``, or parameters not sharded as FSDP2 shards them.
    """

    is_symmetric = True
    _kind = "sharded"  # which products share a finite-difference step

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss_fn: Criterion | None = None,
        *,
        batch_loss: BatchLoss | None = None,
        count: Count | None = None,
        params: ParamSelector = None,
        mode: Literal["eval"] = "eval",
        max_batches: int | None = None,
        max_samples: int | None = None,
        cache: bool | Literal["auto"] = "auto",
    ) -> None:
        if mode != "eval":
            raise ValueError(
                f"mode={mode!r}: curvature of FSDP-sharded models is taken in eval mode only "
                "(BatchNorm batch statistics under FSDP are not supported)."
            )
        self.model = model
        self.layout = ShardedParameters.from_model(model, params)
        dtype = self.layout.params[0].dtype
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"the sharded parameters are {dtype}; finite differences need float32 or "
                "float64 parameters (shard a float32 copy, without a mixed-precision policy)."
            )
        device = self.layout.locals[0].device
        self.objective = Objective(loss_fn, batch_loss, count=count, model=model)
        self.source = DataSource(
            data,
            device=device,
            dtype=dtype,
            max_batches=max_batches,
            max_samples=max_samples,
            cache=cache,
            weigh=self.objective.weight,
        )
        self._data = data
        n = self.layout.local_dim
        super().__init__((n, n), dtype, device)
        self._vector_space = ShardedSpace(self.layout.dim, self.layout.ranges, dtype, device)
        self._local_batches: int | None = None
        constant = self.layout.constant_entries(model)
        self._constant = None if constant is None else constant.to(device)

    # -- what the operator is about ------------------------------------------------------------
    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters the operator acts on, in flat-vector order."""
        return self.layout.names

    @property
    def num_samples(self) -> int:
        """Number of samples in the data (all ranks)."""
        return self.source.num_samples

    @property
    def total_weight(self) -> float:
        r""":math:`W = \sum_b w_b` over all ranks' batches."""
        return self.source.total_weight

    def vector_to_params(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a local vector ``(n_local,)`` (or ``(k, n_local)``) into shards, by name.

        Returns
        -------
        dict of str to Tensor
            ``{name: local shard}``.
        """
        return dict(zip(self.layout.names, self.layout.unflatten(vector)))

    # -- gradients ------------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[Any, float]]:
        """Yield ``(batch, scale)``: this rank's batches, then zero-weighted padding passes.

        Every rank yields as many as the rank with the most batches, so that every rank
        makes the same forward/backward calls (each is collective under FSDP).

        Yields
        ------
        tuple
            A batch on the device and the factor its mean loss is scaled by.
        """
        W = self.source.total_weight  # every rank reads its batches
        world = distributed.world_size()
        if self._local_batches is None:
            self._local_batches = sum(1 for _ in self.source)
        count = _reduce_max(self._local_batches, self.device)
        first = None
        for batch in self.source:
            if first is None:
                first = batch.data
            yield batch.data, batch.weight * world / W
        for _ in range(count - self._local_batches):
            yield first if first is not None else self._any_batch(), 0.0

    def _any_batch(self) -> Any:
        source = DataSource(
            self._data, device=self.device, dtype=self.dtype, max_batches=1, shard=False
        )
        return next(iter(source)).data

    def _gradient(self) -> list[Tensor]:
        r"""Return this rank's shard of :math:`\nabla L` at the model's current parameters.

        Returns
        -------
        list of Tensor
            One freshly allocated local gradient per selected parameter.
        """
        reshard(self.model)
        everything = list(self.model.parameters())  # the sharded ones, at rest
        saved = [p.grad for p in everything]
        for p in everything:
            p.grad = None
        try:
            with torch.enable_grad():
                for batch, scale in self._batches():
                    loss = self.objective.loss(self.model, batch, None)
                    (loss * scale).backward()
            out = []
            for p, shape in zip(self.layout.params, self.layout.local_shapes):
                g = p.grad
                out.append(
                    torch.zeros(shape, dtype=self.dtype, device=self.device)
                    if g is None
                    else g.to_local().detach().clone()
                )
            return out
        finally:
            reshard(self.model)
            for p, g in zip(everything, saved):
                p.grad = g

    def _roundoff(self) -> float:
        """Return the unit roundoff of the loss as computed (one forward on every rank).

        Returns
        -------
        float
            :math:`u` of the coarser of the loss's and the parameters' dtype.
        """
        # The first batch of the data on every rank, not this rank's first: a partial pass
        # over the sharded source would leave its closing all-reduce to the ranks that hold
        # no batch (world 4 on three batches), and they would wait there for ever.
        with torch.no_grad():
            loss = self.objective.loss(self.model, self._any_batch(), None)
        reshard(self.model)  # or the next forward would use the root's stale gathered copy
        coarsest = max(loss.dtype, self.dtype, key=lambda d: torch.finfo(d).eps)
        return unit_roundoff(coarsest)

    def _moved(self, direction: list[Tensor], saved: list[Tensor], s: float) -> None:
        """Set every shard to its saved value plus ``s`` times its part of ``direction``."""
        with torch.no_grad():
            for shard, original, d in zip(self.layout.locals, saved, direction):
                shard.copy_(original).add_(d.to(shard.dtype), alpha=s)

    def _check_finite(self, out: Tensor) -> None:
        bad = torch.tensor([float(not bool(torch.isfinite(out).all()))], device=self.device)
        if float(self.vector_space.reduce_(bad)) > 0:
            raise FloatingPointError(
                f"the {type(self).__name__} product is not finite on some rank (a non-finite "
                "loss or gradient at the perturbed parameters)."
            )

    # -- products -------------------------------------------------------------------------------
    def _matmat(self, V: Tensor) -> Tensor:
        if self._constant is not None:  # embedding padding rows: constants (see the layout)
            return self._products(V.masked_fill(self._constant[:, None], 0.0)).masked_fill_(
                self._constant[:, None], 0.0
            )
        return self._products(V)

    def _products(self, V: Tensor) -> Tensor:
        reshard(self.model)
        saved = [s.detach().clone() for s in self.layout.locals]
        out = torch.zeros_like(V)
        norms = self.vector_space.norms(V).double().cpu()
        try:
            with evaluation_mode(self.model, fused_attention=True):
                for j, norm, direction in self._columns(V, norms):

                    def gradient_at(s: float, direction=direction, norm=norm) -> list[Tensor]:
                        self._moved(direction, saved, s / norm)
                        return self._gradient()

                    product = self._central_difference(gradient_at)
                    column = torch.cat([piece.reshape(-1) for piece in product])
                    out[:, j] = column.mul_(norm)
                    del product, column
        finally:
            self._restore(saved)
        self._check_finite(out)
        self._count(V.shape[1])
        return out

    def _columns(self, V: Tensor, norms: Tensor) -> Iterator[tuple[int, float, list[Tensor]]]:
        """Yield ``(j, norm, direction)`` for every non-zero column ``j`` of ``V``.

        Yields
        ------
        tuple
            The column's index, its norm and its local shards, one per selected parameter.
        """
        for j in range(V.shape[1]):
            norm = float(norms[j])
            if norm != 0:
                yield j, norm, self.layout.unflatten(V[:, j].detach().contiguous())

    def _central_difference(self, values_at: Callable[[float], list[Tensor]]) -> list[Tensor]:
        r"""Return the derivative of ``values_at(s)`` at :math:`s = 0` by central differences.

        The step is chosen on the first product of this kind for the model
        (:func:`~landscape.operators.finite_difference.search_step`; every rank chooses the
        same) and reused afterwards.

        Returns
        -------
        list of Tensor
            One derivative per tensor ``values_at`` returns.
        """
        reduce = self.vector_space.reduce_
        chosen = _CHOSEN.setdefault(self.model, {})
        key = (self._kind, self.layout.names, self.dtype)
        if key not in chosen:
            # the loss's precision: pieces of Hugging Face models (Llama's RMSNorm, the loss)
            # run in float32 even in float64 models
            u = self._roundoff()
            h, derivative = search_step(values_at, u, reduce=reduce)
            chosen[key] = (h, u)
            return derivative
        h, u = chosen[key]
        return directional_product(values_at, h, u, reduce=reduce)

    def _restore(self, saved: list[Tensor]) -> None:
        """Set every shard back to its saved value."""
        with torch.no_grad():
            for shard, original in zip(self.layout.locals, saved):
                shard.copy_(original)


class _FirstOrderProducts(ShardedHessianOperator):
    r"""Products :math:`J^\top M J \hat v` from central differences of forward passes.

    A subclass says what each batch's forward gives along :math:`\theta + s\hat v`
    (:meth:`_values`: outputs, or per-sample losses) and, from their derivative along
    :math:`\hat v`, which loss to back-propagate once through FSDP (:meth:`_pullback_loss`).
    """

    def _values(self, batch: Any) -> Tensor:
        raise NotImplementedError

    def _pullback_loss(self, batch: Any, derivative: Tensor, scale: float) -> Tensor:
        raise NotImplementedError

    def _products(self, V: Tensor) -> Tensor:
        reshard(self.model)
        batches = list(self._batches())
        saved = [s.detach().clone() for s in self.layout.locals]
        out = torch.zeros_like(V)
        norms = self.vector_space.norms(V).double().cpu()
        try:
            with evaluation_mode(self.model, fused_attention=True):
                self._check_criterion(batches[0][0])
                for j, norm, direction in self._columns(V, norms):

                    def values_at(s: float, direction=direction, norm=norm) -> list[Tensor]:
                        self._moved(direction, saved, s / norm)
                        with torch.no_grad():
                            values = [self._values(batch) for batch, _ in batches]
                        reshard(self.model)
                        return values

                    derivative = self._central_difference(values_at)
                    self._moved(direction, saved, 0.0)  # back at theta
                    column = self._pullback(batches, derivative)
                    out[:, j] = torch.cat([g.reshape(-1) for g in column]).mul_(norm)
        finally:
            self._restore(saved)
            reshard(self.model)
        self._check_finite(out)
        self._count(V.shape[1])
        return out

    def _check_criterion(self, batch: Any) -> None:
        """Check once (a forward on every rank) that the criterion is the model's own loss."""
        if not getattr(self, "_criterion_checked", False):
            with torch.no_grad():
                self.objective.check_criterion(self.model, batch)
            reshard(self.model)
            self._criterion_checked = True

    def _pullback(
        self, batches: list[tuple[Any, float]], derivatives: list[Tensor]
    ) -> list[Tensor]:
        """Back-propagate :meth:`_pullback_loss` of every batch once; return the local grads.

        Returns
        -------
        list of Tensor
            This rank's shard of the gradient, one tensor per selected parameter.
        """
        everything = list(self.model.parameters())
        saved = [p.grad for p in everything]
        for p in everything:
            p.grad = None
        try:
            with torch.enable_grad():
                for (batch, scale), derivative in zip(batches, derivatives):
                    self._pullback_loss(batch, derivative, scale).backward()
            return [
                torch.zeros(shape, dtype=self.dtype, device=self.device)
                if p.grad is None
                else p.grad.to_local().detach().clone()
                for p, shape in zip(self.layout.params, self.layout.local_shapes)
            ]
        finally:
            reshard(self.model)
            for p, g in zip(everything, saved):
                p.grad = g


class ShardedGaussNewtonOperator(_FirstOrderProducts):
    r"""The generalized Gauss-Newton matrix of an FSDP2-sharded model, on each rank's shards.

    .. math::
        G \hat v = \frac1W \sum_b w_b\, J_b^\top \big(\nabla_f^2 L_b\big) J_b \hat v ,

    with :math:`J_b \hat v` by central differences of the outputs along :math:`\hat v`
    (forward passes only; extrapolated and stepped as Hessian products are,
    :mod:`landscape.operators.finite_difference`), the output-space Hessian product exact
    (reverse-over-reverse on the criterion), and :math:`J_b^\top u` by one FSDP backward of
    :math:`\langle f_b(\theta), u \rangle` scaled by :math:`w_b\,\text{world}/W`. Per
    column: four forward passes and one backward over each rank's data. The loss must split
    into outputs and a criterion, as for :func:`landscape.gauss_newton`.
    """

    _kind = "gauss_newton"

    def _values(self, batch: Any) -> Tensor:
        return self.objective.outputs(self.model, batch)

    def _pullback_loss(self, batch: Any, derivative: Tensor, scale: float) -> Tensor:
        outputs = self.objective.outputs(self.model, batch)
        _, _, targets = self.objective.split(batch)
        with torch.enable_grad():
            leaf = outputs.detach().requires_grad_(True)
            (first,) = torch.autograd.grad(
                self.objective.criterion(leaf, targets), leaf, create_graph=True
            )
            (second,) = torch.autograd.grad(first, leaf, derivative.to(leaf.dtype))
        return (outputs * second.detach()).sum() * scale


class ShardedFisherOperator(_FirstOrderProducts):
    r"""The empirical Fisher of an FSDP2-sharded model, on each rank's shards.

    .. math::
        F \hat v = \frac1W \sum_i w_i\, g_i \,(g_i^\top \hat v)
        = \nabla_\theta \Big[\frac1W \sum_i w_i c_i\, \ell_i(\theta)\Big]_{c_i =
        g_i^\top \hat v},

    with each sample's loss :math:`\ell_i` the criterion on its rows of the batch's outputs
    (a sample's outputs depend on it alone in eval mode), :math:`c_i` by central
    differences of the per-sample losses along :math:`\hat v` (forward passes only), and one
    FSDP backward of the :math:`c`-weighted loss. No per-sample gradient is ever formed.
    """

    _kind = "fisher"

    def _values(self, batch: Any) -> Tensor:
        outputs = self.objective.outputs(self.model, batch)
        return self._sample_losses(outputs, batch)

    def _sample_losses(self, outputs: Tensor, batch: Any) -> Tensor:
        _, _, targets = self.objective.split(batch)
        weights = self.objective.sample_weights(batch).to(self.device)
        losses = [
            self.objective.criterion(outputs[i : i + 1], targets[i : i + 1])
            if weights[i] > 0
            else outputs.new_zeros(())
            for i in range(outputs.shape[0])
        ]
        return torch.stack(losses)

    def _pullback_loss(self, batch: Any, derivative: Tensor, scale: float) -> Tensor:
        outputs = self.objective.outputs(self.model, batch)
        losses = self._sample_losses(outputs, batch)
        weights = self.objective.sample_weights(batch).to(losses)
        world = distributed.world_size()
        factor = 0.0 if scale == 0 else world / self.source.total_weight
        return (weights * derivative.to(losses.dtype).detach() * losses).sum() * factor


#: Options of :func:`landscape.hessian` a sharded model takes, with the values that apply.
_ACCEPTED = {
    "backend": ("auto", "finite_difference"),
    "precision": ("auto", "model"),
    "shard": ("auto", True),
}


def sharded_hessian(
    model: nn.Module, data: Any, loss_fn: Criterion | None = None, **options: Any
) -> ShardedHessianOperator:
    """Return the :class:`ShardedHessianOperator` for what :func:`landscape.hessian` was given.

    Returns
    -------
    ShardedHessianOperator
        The operator.
    """
    return sharded_curvature("hessian", model, data, loss_fn, **options)


def sharded_curvature(
    kind: str, model: nn.Module, data: Any, loss_fn: Criterion | None = None, **options: Any
) -> ShardedHessianOperator:
    """Return the sharded operator of ``kind`` (``"hessian"``, ``"gauss_newton"``, ``"fisher"``).

    Returns
    -------
    ShardedHessianOperator
        The operator.

    Raises
    ------
    ValueError
        For an option a sharded model cannot take (another backend than finite differences,
        another precision than the model's, ``problem=``).
    """
    for name, allowed in _ACCEPTED.items():
        value = options.pop(name, allowed[0])
        if value not in allowed:
            raise ValueError(
                f"{name}={value!r} is not available for an FSDP-sharded model: its Hessian "
                "products are central differences of FSDP's gradients in the model's dtype "
                f"({name} may be {' or '.join(map(repr, allowed))})."
            )
    for name in ("chunk_size", "memory_budget"):
        options.pop(name, None)  # one column at a time already
    if "problem" in options:
        raise ValueError("problem= is not available for an FSDP-sharded model; pass the model.")
    options.pop("kind", None)  # the empirical Fisher, the only kind
    classes = {
        "hessian": ShardedHessianOperator,
        "gauss_newton": ShardedGaussNewtonOperator,
        "fisher": ShardedFisherOperator,
    }
    return classes[kind](model, data, loss_fn, **options)
