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

from typing import Any

import torch
from torch import Tensor, nn

from landscape.data import Batch, DataSource
from landscape.losses import Criterion, Objective
from landscape.memory import MemoryBudget
from landscape.operators.base import CountingOperator
from landscape.params import ParamSpace
from landscape.problem import Evaluation, Problem, as_problem

__all__ = ["CurvatureOperator"]

#: Vectors a product holds per column besides its input: the accumulated product, one
#: batch's part, and the output (the same buffer as the accumulated product for one column).
COLUMN_VECTORS = 3


class _OfProblem:
    """A read-only attribute of a curvature operator: its problem's attribute of that name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, operator: Any, owner: type | None = None) -> Any:
        return self if operator is None else getattr(operator.problem, self.name)

    def __set__(self, operator: Any, value: Any) -> None:
        raise AttributeError(
            f"{self.name} is the operator's problem's; make a variant of the problem instead."
        )


class CurvatureOperator(CountingOperator):
    r"""Base class: a symmetric curvature matrix of the mean loss over a dataset.

    Parameters
    ----------
    problem : Problem or torch.nn.Module
        What is measured: a :class:`~landscape.problem.Problem` (model, data, loss,
        parameters, mode, precision), or the model, with ``data``, ``loss_fn`` and the
        problem's options below. The model is never modified: parameters, buffers,
        ``.grad``, ``requires_grad`` and train/eval flags are as before after every call.
        Products use the parameters' values *at the time of the product* (or the values
        given to :meth:`Problem.at <landscape.problem.Problem.at>`).
    data : iterable of batches, or one batch, optional
        With a model: see :class:`landscape.data.DataSource`.
    loss_fn : callable, optional
        With a model: ``loss_fn(outputs, targets) -> scalar mean loss``; see
        :mod:`landscape.losses`.
    chunk_size : int, optional
        Vectorize over at most this many columns at once (bounds memory; default: all).
    memory_budget : int, float or str, optional
        Bytes the product's own buffers may take (3 vectors per column: see
        :mod:`landscape.memory`; default a quarter of the memory free at each product): a block
        of more columns is multiplied in groups that fit, one pass over the data each.
    **options
        With a model, the options of :class:`~landscape.problem.Problem` (``batch_loss``,
        ``count``, ``params``, ``mode``, ``precision``, ``max_batches``, ``max_samples``,
        ``cache``, ``shard``); with a problem, those that make a variant of it
        (``params``, ``max_batches``, ``max_samples``, ``cache``, ``shard``).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``, or an option is unknown.
    ValueError
        If ``mode`` is unknown (or ``"train"`` for an operator defined in eval mode only,
        the empirical Fisher), the model has no trainable parameters or ``params`` selects
        nothing.
    """

    is_symmetric = True
    #: Why the operator is defined in eval mode only (a subclass's message), or "".
    _eval_only = ""

    def __init__(
        self,
        problem: Problem | nn.Module,
        data: Any = None,
        loss_fn: Criterion | None = None,
        *,
        chunk_size: int | None = None,
        memory_budget: Any = None,
        **options: Any,
    ) -> None:
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
        self.problem = as_problem(problem, data, loss_fn, where=type(self).__name__, **options)
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        if memory_budget is not None:
            MemoryBudget.resolve(memory_budget, self.problem.device)  # invalid values fail now
        space = self.problem.space
        super().__init__((space.dim, space.dim), space.dtype, space.device)
        if self._eval_only and self.problem.mode != "eval":
            raise ValueError(self._eval_only)

    # -- what the operator is about: its problem's ----------------------------------------------
    model: nn.Module = _OfProblem()
    """The user's model."""
    space: ParamSpace = _OfProblem()
    """The :class:`~landscape.params.ParamSpace` of the selected parameters."""
    source: DataSource = _OfProblem()
    """The :class:`~landscape.data.DataSource` of the data."""
    objective: Objective = _OfProblem()
    """The :class:`~landscape.losses.Objective`: the loss of one batch and its weight."""
    mode: str = _OfProblem()
    """``"eval"`` or ``"train"``."""
    num_samples: int = _OfProblem()
    """Number of samples in the data (all ranks); the first product, or this, reads them."""
    total_weight: float = _OfProblem()
    r""":math:`W = \sum_b w_b` (samples, or scored tokens); reads the data if not known yet."""

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
        acc = torch.zeros(k, self.shape[0], dtype=self.dtype, device=self.device)
        blocks = [acc[:, s] for s in self.space.slices().values()]
        loss = torch.zeros((), dtype=torch.float64, device=self.device)

        def product(run: Evaluation, batch: Batch) -> list[Tensor]:
            parts, batch_loss = self._batch_matmat(run, batch.data, batch.weight, directions)
            return [batch_loss.reshape(()), *(p.reshape(k, -1) for p in parts)]

        self.problem.reduce(
            product,
            init=[loss, *blocks],
            first_order=self._first_order,
            names=("loss", "curvature product"),
            hint=f" — {self._overflow_hint()}",
        )
        self._count(k)
        out = acc.T.contiguous()
        return out if constant is None else out.masked_fill_(constant[:, None], 0.0)

    #: Whether products need only first derivatives (then fused attention kernels may run).
    _first_order = False

    def _overflow_hint(self) -> str:
        compute = self.problem.compute_dtype
        if compute in (torch.float16, torch.bfloat16):
            return (
                f"{str(compute).replace('torch.', '')} products overflow: use "
                "precision='float32' (the default for half-precision models)"
            )
        return "overflow in second derivatives? Try precision='float64'"
