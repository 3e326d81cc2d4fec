r"""The data loop shared by every curvature operator (Hessian, Gauss-Newton, Fisher).

A curvature matrix of the mean loss :math:`L(\theta) = \sum_b w_b L_b(\theta) / W` (batch
weights :math:`w_b`: samples, or scored tokens; :math:`W = \sum_b w_b`) is a weighted sum
over batches,

.. math::
    C\,V = \frac{1}{W} \sum_b w_b \, C_b V ,

where :math:`C_b` is the curvature of batch :math:`b`'s mean loss. A subclass writes only
the per-batch product :math:`C_b V` (for all k columns at once); this module does the rest,
once: the pass over the data, the weighting (so a partial last batch, or padded language
model batches, are counted exactly), the all-reduce across data-parallel ranks and NaN/inf
detection with the batch index. How the model is evaluated — mode, attention kernel,
functional calls, the guarantee that the user's model is left bitwise unchanged — is the
:class:`~landscape.problem.Problem`'s.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from landscape import distributed
from landscape.data import DataSource
from landscape.losses import BatchLoss, Count, Criterion, Objective
from landscape.memory import MemoryBudget
from landscape.operators.base import CountingOperator
from landscape.params import ParamSelector, ParamSpace
from landscape.problem import Evaluation, Mode, Precision, Problem

__all__ = ["CurvatureOperator"]

#: Vectors a product holds per column besides its input: the accumulated product, one
#: batch's part, and the output (the same buffer as the accumulated product for one column).
COLUMN_VECTORS = 3


class CurvatureOperator(CountingOperator):
    r"""Base class: a symmetric curvature matrix of the mean loss over a dataset.

    Parameters
    ----------
    model : torch.nn.Module
        The model. It is never modified: parameters, buffers, ``.grad``, ``requires_grad``
        and train/eval flags are as before after every call. Products use the parameters'
        values *at the time of the product*.
    data : iterable of batches, or one batch
        See :class:`landscape.data.DataSource`.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets) -> scalar mean loss``; see :mod:`landscape.losses`.
    batch_loss : callable, optional
        ``batch_loss(model, batch) -> scalar mean loss``, for anything ``loss_fn`` cannot say.
    count : callable, optional
        ``count(batch) -> units`` the batch's mean loss is over, its weight (default: scored
        tokens for language models, else samples; see :mod:`landscape.losses`).
    params : ParamSelector, optional
        Restrict to a subset of parameters (names, modules, tensors or a predicate); the
        operator is then the diagonal block of the full matrix for that subset.
    mode : {"eval", "train"}, optional
        ``"eval"`` (default): the model in eval mode (dropout off, BatchNorm on its running
        statistics), so each sample's loss is a fixed function of the parameters.
        ``"train"``: BatchNorm uses the statistics of each batch (the function the optimizer
        sees), computed on a private copy of the model so the running statistics are never
        updated; dropout stays off in both modes (a random function has no Hessian). In
        ``"train"`` mode the curvature depends on how the data is batched.
    precision : {"auto", "model", "float32", "float64"}, optional
        The dtype products run in (see :class:`~landscape.problem.Problem`): by default
        the model's, except for bfloat16/float16 models, evaluated on a private float32
        copy. The operator's vectors are in at least float32 either way.
    max_batches, max_samples : int, optional
        Use only part of the data.
    cache : bool or "auto", optional
        Keep device batches between products (see :class:`~landscape.data.DataSource`).
    shard : bool or "auto", optional
        Data-parallel sharding under :mod:`torch.distributed` (see
        :class:`~landscape.data.DataSource`).
    chunk_size : int, optional
        Vectorize over at most this many columns at once (bounds memory; default: all).
    memory_budget : int, float or str, optional
        Bytes the product's own buffers may take (3 vectors per column: see
        :mod:`landscape.memory`; default half of the memory free at each product): a block
        of more columns is multiplied in groups that fit, one pass over the data each.
    problem : Problem, optional
        Instead of the arguments above: an existing :class:`~landscape.problem.Problem`
        (then ``model`` and ``data`` may be ``None``).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``.
    ValueError
        If ``mode`` is unknown, the model has no trainable parameters or ``params`` selects
        nothing.
    """

    is_symmetric = True

    def __init__(
        self,
        model: nn.Module | None,
        data: Any,
        loss_fn: Criterion | None = None,
        *,
        batch_loss: BatchLoss | None = None,
        count: Count | None = None,
        params: ParamSelector = None,
        mode: Mode = "eval",
        precision: Precision = "auto",
        max_batches: int | None = None,
        max_samples: int | None = None,
        cache: bool | Literal["auto"] = "auto",
        shard: bool | Literal["auto"] = "auto",
        chunk_size: int | None = None,
        memory_budget: Any = None,
        problem: Problem | None = None,
    ) -> None:
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
        if problem is None:
            problem = Problem(
                model,  # type: ignore[arg-type]
                data,
                loss_fn,
                batch_loss=batch_loss,
                count=count,
                params=params,
                mode=mode,
                precision=precision,
                max_batches=max_batches,
                max_samples=max_samples,
                cache=cache,
                shard=shard,
            )
        self.problem = problem
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        if memory_budget is not None:
            MemoryBudget.resolve(memory_budget, problem.device)  # invalid values fail now
        space = problem.space
        super().__init__((space.dim, space.dim), space.dtype, space.device)

    # -- what the operator is about ------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The user's model."""
        return self.problem.model

    @property
    def space(self) -> ParamSpace:
        """The :class:`~landscape.params.ParamSpace` of the selected parameters."""
        return self.problem.space

    @property
    def source(self) -> DataSource:
        """The :class:`~landscape.data.DataSource` of the data."""
        return self.problem.source

    @property
    def objective(self) -> Objective:
        """The :class:`~landscape.losses.Objective`: the loss of one batch and its weight."""
        return self.problem.objective

    @property
    def mode(self) -> str:
        """``"eval"`` or ``"train"``."""
        return self.problem.mode

    @property
    def num_samples(self) -> int:
        """Number of samples in the data (all ranks); the first product, or this, reads them."""
        return self.problem.num_samples

    @property
    def total_weight(self) -> float:
        r""":math:`W = \sum_b w_b` (samples, or scored tokens); reads the data if not known yet."""
        return self.problem.total_weight

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters the operator acts on, in flat-vector order."""
        return self.space.names

    def vector_to_params(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector ``(P,)`` (or ``(k, P)``) into parameter-shaped tensors.

        Parameters
        ----------
        vector : Tensor
            Flat vector(s) in this operator's parameter order.

        Returns
        -------
        dict of str to Tensor
            ``{name: tensor}`` views.
        """
        return self.space.unflatten(vector)

    def params_to_vector(self, tensors: dict[str, Tensor]) -> Tensor:
        """Concatenate parameter-shaped tensors into a flat vector (inverse of the above).

        Parameters
        ----------
        tensors : dict of str to Tensor
            One tensor per name in :attr:`param_names`.

        Returns
        -------
        Tensor
            Shape ``(P,)``.
        """
        return self.space.flatten(tensors)

    # -- the per-batch hook ---------------------------------------------------------------------
    def _batch_matmat(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        """Return the batch's curvature product and its loss.

        ``V`` holds one ``(k, *shape)`` block of directions per selected parameter; the
        product is returned in the same layout (``C_b V``, curvature of the batch's mean
        loss). The loss is used to check finiteness.
        """
        raise NotImplementedError

    # -- the data loop --------------------------------------------------------------------------
    def _matmat(self, V: Tensor) -> Tensor:
        width = self._columns_that_fit(V.shape[1])
        if width >= V.shape[1]:
            return self._pass(V)
        out = torch.empty_like(V)
        for start in range(0, V.shape[1], width):
            out[:, start : start + width] = self._pass(V[:, start : start + width])
        return out

    def _columns_that_fit(self, k: int) -> int:
        """Return how many columns one pass may take within the memory budget (at least 1).

        Returns
        -------
        int
            ``k``, or fewer.
        """
        if k == 1:
            return 1
        budget = MemoryBudget.resolve(self.memory_budget, self.device)
        fits = budget.vectors(self.shape[0], self.dtype) // COLUMN_VECTORS
        return max(1, min(k, fits))

    def _pass(self, V: Tensor) -> Tensor:
        k = V.shape[1]
        constant = self.problem.constant_entries  # embedding padding rows: no gradient
        if constant is not None:
            V = V.masked_fill(constant[:, None], 0.0)
        compute = self.problem.compute_dtype  # the model's dtype, or a private copy's
        directions = [d.to(compute) for d in self.space.unflatten(V.detach().T).values()]
        # One extra slot carries a "bad batch" flag through the all-reduce, so every rank
        # raises together instead of deadlocking when one rank meets a NaN.
        total = torch.zeros(k * self.shape[0] + 1, dtype=self.dtype, device=self.device)
        acc = total[:-1].view(k, self.shape[0])
        blocks = [acc[:, s] for s in self.space.slices().values()]
        losses, indices = [], []
        with self.problem.evaluation(first_order=self._first_order) as run:
            for batch in self.problem.batches():
                parts, loss = self._batch_matmat(run, batch.data, batch.weight, directions)
                for block, part in zip(blocks, parts):
                    block.add_(part.reshape(k, -1).to(block.dtype), alpha=batch.weight)
                losses.append(loss.detach().reshape(()))
                indices.append(batch.index)
        bad = _first_non_finite(losses, indices, acc)
        if bad is not None and bad[1] == "curvature":
            bad = self._find_non_finite_product(directions)  # rare: a second, diagnostic pass
        if bad is not None:
            total[-1] = 1.0
        distributed.all_reduce_sum_(total)
        self._count(k)
        if bad is not None:
            raise FloatingPointError(f"at batch {bad[0]} (0-based) of the data, {bad[1]}.")
        if total[-1] > 0:
            raise FloatingPointError("non-finite loss or curvature on another data-parallel rank.")
        out = acc.div_(self.problem.total_weight).T.contiguous()  # a copy only for k > 1
        return out if constant is None else out.masked_fill_(constant[:, None], 0.0)

    #: Whether products need only first derivatives (then fused attention kernels may run).
    _first_order = False

    def _find_non_finite_product(self, V: list[Tensor]) -> tuple[int, str]:
        compute = self.problem.compute_dtype
        if compute in (torch.float16, torch.bfloat16):
            hint = (
                f"{str(compute).replace('torch.', '')} products overflow: use "
                "precision='float32' (the default for half-precision models)"
            )
        else:
            hint = "overflow in second derivatives? Try precision='float64'"
        with self.problem.evaluation() as run:
            for batch in self.problem.batches():
                parts, loss = self._batch_matmat(run, batch.data, batch.weight, V)
                if not all(bool(torch.isfinite(p).all()) for p in parts):
                    return batch.index, (
                        f"the curvature product is not finite (the loss, {float(loss):.6g}, is) "
                        f"— {hint}"
                    )
        return -1, "the curvature product is not finite"


def _first_non_finite(
    losses: list[Tensor], indices: list[int], product: Tensor
) -> tuple[int, str] | None:
    if not losses:
        return None
    stacked = torch.stack(losses)
    finite = torch.isfinite(stacked)
    if bool(finite.all()) and bool(torch.isfinite(product).all()):  # one sync per pass
        return None
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0, 0])
        return indices[i], f"the loss is {float(stacked[i])}"
    return -1, "curvature"
