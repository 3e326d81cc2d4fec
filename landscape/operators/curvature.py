r"""The data loop shared by every curvature operator (Hessian, Gauss-Newton, Fisher).

A curvature matrix of the mean loss :math:`L(\theta) = \frac1N \sum_i \ell_i(\theta)` is a
sample-weighted sum over batches,

.. math::
    C\,V = \frac{1}{N} \sum_b n_b \, C_b V ,

where :math:`C_b` is the curvature of batch :math:`b`'s mean loss and :math:`n_b` its
number of samples. A subclass writes only the per-batch product :math:`C_b V` (for all k
columns at once); this module does the rest, once: the pass over the data, the weighting
(so a partial last batch is counted exactly), the all-reduce across data-parallel ranks,
NaN/inf detection with the batch index, the math attention kernel (fused kernels have no
second derivatives), and the guarantee that the user's model is left bitwise unchanged.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape import distributed
from landscape._attention import math_attention
from landscape.data import DataSource
from landscape.losses import BatchLoss, Criterion, Objective
from landscape.operators.base import CountingOperator
from landscape.params import ParamSelector, ParamSpace

__all__ = ["CurvatureOperator"]

Mode = Literal["eval", "train"]


class _Bound(nn.Module):
    """Runs one objective on the wrapped model, so ``functional_call`` can reparametrize it."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "objective", objective)  # not a submodule: no parameters

    def forward(self, batch: Any, part: str = "loss") -> Tensor:
        if part == "outputs":
            return self.objective.outputs(self.model, batch)
        return self.objective.loss(self.model, batch)


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
    max_batches, max_samples : int, optional
        Use only part of the data.
    cache : bool or "auto", optional
        Keep device batches between products (see :class:`~landscape.data.DataSource`).
    shard : bool or "auto", optional
        Data-parallel sharding under :mod:`torch.distributed` (see
        :class:`~landscape.data.DataSource`).
    chunk_size : int, optional
        Vectorize over at most this many columns at once (bounds memory; default: all).

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
        model: nn.Module,
        data: Any,
        loss_fn: Criterion | None = None,
        *,
        batch_loss: BatchLoss | None = None,
        params: ParamSelector = None,
        mode: Mode = "eval",
        max_batches: int | None = None,
        max_samples: int | None = None,
        cache: bool | Literal["auto"] = "auto",
        shard: bool | Literal["auto"] = "auto",
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train'; got {mode!r}.")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
        self.model = model
        self.mode = mode
        self.chunk_size = chunk_size
        self.objective = Objective(loss_fn, batch_loss)
        self.space = ParamSpace.from_module(model, params)
        super().__init__((self.space.dim, self.space.dim), self.space.dtype, self.space.device)
        self.source = DataSource(
            data,
            device=self.space.device,
            dtype=self.space.dtype,
            max_batches=max_batches,
            max_samples=max_samples,
            cache=cache,
            shard=shard,
        )
        self._train_copy: nn.Module | None = None

    # -- counters and conversions ------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Number of samples in the data (all ranks), known after the first product."""
        return self.source.num_samples

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

    # -- model state ------------------------------------------------------------------------
    def _module(self) -> nn.Module:
        if self.mode == "eval":
            return self.model
        if self._train_copy is None:
            clone = copy.deepcopy(self.model)
            # Batch statistics without running-statistic updates: BatchNorm with
            # track_running_stats=False (and no running buffers) always normalizes by the batch.
            torch.func.replace_all_batch_norm_modules_(clone)
            clone.eval()
            for m in clone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
            self._train_copy = clone
        return self._train_copy

    @contextlib.contextmanager
    def _evaluation(self) -> Iterator[_Pass]:
        """Set up one pass over the data and undo every side effect afterwards.

        The module runs in the requested mode (eval flags set on the user's model, restored
        on exit; ``mode="train"`` runs a private copy whose parameters are refreshed from the
        user's). Buffers the forward pass might write are restored bitwise if it did.

        Yields
        ------
        _Pass
            What the per-batch products need.
        """
        module = self._module()
        flags = [(m, m.training) for m in module.modules()]
        buffers = [(b, b._version, b.detach().clone()) for b in module.buffers()]
        try:
            if module is self.model:
                module.eval()
            else:
                _refresh_copy(module, self.model)
            table = dict(module.named_parameters())
            with math_attention():
                yield _Pass(self, module, [table[n] for n in self.space.names])
        finally:
            for m, training in flags:
                m.training = training
            with torch.no_grad():
                for b, version, saved in buffers:
                    if b._version != version:
                        b.copy_(saved)

    # -- the per-batch hook ---------------------------------------------------------------------
    def _batch_matmat(self, run: _Pass, batch: Any, V: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Return the batch's curvature product and its loss.

        ``V`` holds one ``(k, *shape)`` block of directions per selected parameter; the
        product is returned in the same layout (``C_b V``, curvature of the batch's mean
        loss). The loss is used to check finiteness.
        """
        raise NotImplementedError

    # -- the data loop --------------------------------------------------------------------------
    def _matmat(self, V: Tensor) -> Tensor:
        k = V.shape[1]
        directions = list(self.space.unflatten(V.detach().T).values())
        # One extra slot carries a "bad batch" flag through the all-reduce, so every rank
        # raises together instead of deadlocking when one rank meets a NaN.
        total = torch.zeros(k * self.shape[0] + 1, dtype=self.dtype, device=self.device)
        acc = total[:-1].view(k, self.shape[0])
        blocks = [acc[:, s] for s in self.space.slices().values()]
        losses, indices = [], []
        with self._evaluation() as run:
            for index, batch, n in self.source:
                parts, loss = self._batch_matmat(run, batch, directions)
                for block, part in zip(blocks, parts):
                    block.add_(part.reshape(k, -1), alpha=float(n))
                losses.append(loss.detach().reshape(()))
                indices.append(index)
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
        return (acc / self.source.num_samples).T.contiguous()

    def _find_non_finite_product(self, V: list[Tensor]) -> tuple[int, str]:
        with self._evaluation() as run:
            for index, batch, _ in self.source:
                parts, loss = self._batch_matmat(run, batch, V)
                if not all(bool(torch.isfinite(p).all()) for p in parts):
                    return index, (
                        f"the curvature product is not finite (the loss, {float(loss):.6g}, is) "
                        "— overflow in second derivatives? Try float64"
                    )
        return -1, "the curvature product is not finite"


class _Pass:
    """What one pass's per-batch products need: the module and two ways to evaluate the loss.

    ``params`` are the module's own selected parameters, used as autograd leaves by
    double-backward products (``autograd.grad`` never writes ``.grad``). ``call`` evaluates
    with explicit parameter tensors through ``torch.func.functional_call``, for the
    ``torch.func`` transforms; ``theta`` holds their current values (detached).
    """

    def __init__(self, op: CurvatureOperator, module: nn.Module, params: list[Tensor]) -> None:
        self.objective = op.objective
        self.module = module
        self.params = params
        self.names = [f"model.{n}" for n in op.space.names]
        self.theta = dict(zip(self.names, (p.detach() for p in params)))
        self._bound = _Bound(module, op.objective)
        selected = set(op.space.names)
        self._constants = {
            f"model.{n}": p.detach() for n, p in module.named_parameters() if n not in selected
        }
        self._constants.update({f"model.{n}": b for n, b in module.named_buffers()})

    def loss(self, batch: Any) -> Tensor:
        """Return the mean loss of the module on ``batch`` with its own parameters.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        return self.objective.loss(self.module, batch)

    def call(self, theta: dict[str, Tensor], batch: Any, part: str = "loss") -> Tensor:
        """Return the loss (or outputs) on ``batch`` with the selected parameters set to ``theta``.

        Returns
        -------
        Tensor
            The scalar loss, or the output tensor when ``part="outputs"``.
        """
        return functional_call(self._bound, {**self._constants, **theta}, (batch,), {"part": part})

    def flat(self, tensors: dict[str, Tensor]) -> list[Tensor]:
        """Order a ``{name: tensor}`` result like the selected parameters.

        Returns
        -------
        list of Tensor
            One tensor per selected parameter.
        """
        return [tensors[n] for n in self.names]

    def named(self, V: list[Tensor]) -> dict[str, Tensor]:
        """Key a list of per-parameter blocks by name (the layout ``call`` expects).

        Returns
        -------
        dict of str to Tensor
            ``{name: block}``.
        """
        return dict(zip(self.names, V))


def _refresh_copy(clone: nn.Module, source: nn.Module) -> None:
    """Copy the current parameter and buffer values of ``source`` into its private copy."""
    with torch.no_grad():
        own = dict(clone.named_parameters())
        for n, p in source.named_parameters():
            own[n].copy_(p)
        own_buffers = dict(clone.named_buffers())
        for n, b in source.named_buffers():
            if n in own_buffers:
                own_buffers[n].copy_(b)


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
