r"""The one place that evaluates the model: at :math:`\theta`, on one batch, with its weight.

A :class:`Problem` is built once from what the user passes — model, data, loss, parameters,
mode — and every layer evaluates through it: the curvature operators, per-example
gradients, sharpness, coherence, learning rates, surfaces, the tracker and ``analyze``.
It owns

* **the data** (:class:`~landscape.data.DataSource`): batches on the model's device, each
  with its weight :math:`w_b` (samples, or scored tokens of a language model), so every
  mean over the data is :math:`\sum_b w_b L_b / \sum_b w_b`;
* **the loss of one batch** (:class:`~landscape.losses.Objective`): the user's criterion,
  the model's own ``.loss`` for Hugging Face batches, or the default;
* **the parameters** (:class:`~landscape.params.ParamSpace`) that curvature is taken in;
* **the evaluation** (:meth:`Problem.evaluation`): eval mode (or BatchNorm batch statistics
  on a private copy), the math attention kernel (fused kernels have no second
  derivatives), functional calls at any :math:`\theta` with ``torch.func.functional_call``,
  and every side effect undone — parameters, buffers, ``.grad``, ``requires_grad``,
  train/eval flags and ``config.problem_type`` are as before;
* **vectorization with an exact fallback** (:meth:`Problem.vectorize`): ``vmap`` over
  samples, columns or grid points, and a loop with the same numbers when ``vmap`` cannot
  trace the user's code (data-dependent control flow, ``.item()``, ``one_hot`` without
  ``num_classes``), remembered and announced once with a :class:`VectorizationWarning`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from landscape._attention import math_attention
from landscape.batches import batch_size, leaves, rebuild, select_rows
from landscape.data import Batch, DataSource
from landscape.losses import BatchLoss, Count, Criterion, Objective
from landscape.params import ParamSelector, ParamSpace

__all__ = [
    "Evaluation",
    "Problem",
    "Samples",
    "VectorizationWarning",
    "evaluation_mode",
    "unwrap_model",
]

Mode = Literal["eval", "train"]
Precision = Literal["auto", "model", "float32", "float64"]
_PRECISIONS = ("auto", "model", "float32", "float64")
_HALF = (torch.float16, torch.bfloat16)
_MISSING = object()


def _compute_dtype(model_dtype: torch.dtype, precision: str) -> torch.dtype:
    """Return the dtype products run in (see :class:`Problem`'s ``precision``).

    Returns
    -------
    torch.dtype
        The model's dtype, or float32 / float64.
    """
    if precision == "float32":
        return torch.float32
    if precision == "float64":
        return torch.float64
    if precision == "auto" and model_dtype in _HALF:
        return torch.float32
    return model_dtype


def unwrap_model(model: Any, *, sharded: bool = False) -> nn.Module:
    """Return the module that computes: inside ``torch.compile``, ``DataParallel`` and DDP.

    ``torch.compile`` returns an ``OptimizedModule`` whose ``_orig_mod`` is the eager model
    (aot_autograd has no double backward, so curvature runs the eager code, which gives the
    same numbers); ``nn.DataParallel`` and ``DistributedDataParallel`` keep the model in
    ``.module`` (under :mod:`torch.distributed` the data sharding of
    :class:`~landscape.data.DataSource` already sums over ranks). The parameters are
    shared, so the user's model is still the one left unchanged.

    Parameters
    ----------
    model : Any
        A module, possibly wrapped (nested wrappers are followed).
    sharded : bool, optional
        Return a model sharded with FSDP2 (``DTensor`` parameters) as it is, for callers
        that handle it (:mod:`landscape.operators.sharded`); by default it is refused.

    Returns
    -------
    torch.nn.Module
        The innermost module.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``.
    ValueError
        For FSDP-sharded models, whose parameters no rank holds whole (the message names
        the function that cannot take them, and those that can).

    Examples
    --------
    >>> inner = nn.Linear(2, 2)
    >>> unwrap_model(nn.DataParallel(inner)) is inner
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    from torch.nn.parallel import DistributedDataParallel

    for _ in range(8):
        if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.DataParallel | DistributedDataParallel):
            model = model.module
        else:
            break
    fsdp2 = any(type(p).__name__ == "DTensor" for p in model.parameters())
    if fsdp2 and sharded:
        return model
    if type(model).__name__ == "FullyShardedDataParallel" or fsdp2:
        raise ValueError(
            f"{_entry_point()} cannot take {type(model).__name__}: it is sharded with FSDP, "
            "no rank holds its parameters whole, and this computation needs them. Models "
            "sharded with FSDP2's fully_shard are taken by ls.hessian, ls.gauss_newton and "
            "ls.fisher (their operators), ls.eigenvalues, ls.trace, ls.spectral_density and "
            "ls.layerwise (see docs/scale.md); for anything else, analyze the unsharded "
            "model (load its full state dict on each rank) with landscape's own data "
            "parallelism."
        )
    return model


def _entry_point() -> str:
    """Return ``"ls.<name>"`` for the outermost public landscape function on the call stack.

    Returns
    -------
    str
        The function's public name, or ``"this function"``.
    """
    import inspect
    import sys

    package = sys.modules.get("landscape")  # loaded by then; not imported (layers)
    public = set(getattr(package, "__all__", ()))
    for frame in reversed(inspect.stack(0)):
        module = frame.frame.f_globals.get("__name__", "")
        if module.startswith("landscape") and frame.function in public:
            return f"ls.{frame.function}"
    return "this function"


class VectorizationWarning(UserWarning):
    """``vmap`` could not trace the model's code; an exact loop computes the same numbers."""


# What vmap could not trace, per model (its code does not change between problems): each
# path fails, and warns, once per model.
_UNBATCHABLE: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


# -- evaluation hygiene ------------------------------------------------------------------------


@contextlib.contextmanager
def evaluation_mode(
    model: nn.Module,
    *,
    batch_statistics: bool = False,
    restore_buffers: bool = True,
    fused_attention: bool = False,
) -> Iterator[None]:
    """Run ``model`` in eval mode with the math attention kernel, undoing every side effect.

    Train/eval flags are restored on exit, and so is a Hugging Face ``config.problem_type``
    (which a classification head sets on its first forward). With ``restore_buffers``, any
    buffer the forward passes wrote (e.g. a custom module updating statistics in eval
    mode) is restored bitwise.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    batch_statistics : bool, optional
        Put BatchNorm modules in train mode (normalize by the batch); use it only on a
        copy whose BatchNorm modules track no running statistics.
    restore_buffers : bool, optional
        Restore buffers written inside the context.
    fused_attention : bool, optional
        Leave PyTorch's attention kernels as they are (fused ones included): only for
        first-order derivatives, which they support, with memory linear in the sequence
        length.

    Yields
    ------
    None
        Inside the context.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    >>> with evaluation_mode(model):
    ...     model.training
    False
    >>> model.training
    True
    """
    flags = [(m, m.training) for m in model.modules()]
    buffers = (
        [(b, b._version, b.detach().clone()) for b in model.buffers()] if restore_buffers else []
    )
    config = getattr(model, "config", None)
    problem_type = getattr(config, "problem_type", _MISSING)
    try:
        model.eval()
        if batch_statistics:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        with contextlib.nullcontext() if fused_attention else math_attention():
            yield
    finally:
        for m, training in flags:
            m.training = training
        if problem_type is not _MISSING:
            config.problem_type = problem_type
        with torch.no_grad():
            for b, version, saved in buffers:
                if b._version != version:
                    b.copy_(saved)


def _batch_statistics_copy(model: nn.Module) -> nn.Module:
    # BatchNorm with track_running_stats=False (and no running buffers) always normalizes by
    # the batch: the function SGD sees, without running-statistic updates.
    clone = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(clone)
    return clone


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


class _Bound(nn.Module):
    """Runs the objective on the wrapped model, so ``functional_call`` can reparametrize it."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "objective", objective)  # not a submodule: no parameters

    def forward(self, batch: Any, part: str = "loss", weight: Any = None) -> Any:
        if part == "outputs":
            return self.objective.outputs(self.model, batch)
        if part == "forward":
            return self.objective.forward(self.model, batch, weight)
        return self.objective.loss(self.model, batch, weight)


# -- vectorization with an exact fallback -------------------------------------------------------


def _in_dims_of(in_dims: int | Sequence[int | None], count: int) -> list[int | None]:
    return [in_dims] * count if isinstance(in_dims, int) else list(in_dims)


def _loop(fn: Callable[..., Any], in_dims: int | Sequence[int | None], args: tuple) -> Any:
    """Evaluate ``fn`` slice by slice along ``in_dims`` and stack: what ``vmap`` would return.

    Returns
    -------
    Any
        The outputs of ``fn`` stacked along a new leading dimension.

    Raises
    ------
    ValueError
        If no argument is batched.
    """
    dims = _in_dims_of(in_dims, len(args))
    size = None
    for arg, dim in zip(args, dims):
        if dim is not None:
            size = tree_flatten(arg)[0][0].shape[dim]
            break
    if size is None:
        raise ValueError("no argument is batched (every in_dim is None).")

    flats = [tree_flatten(arg) for arg in args]

    def part(i: int) -> tuple:
        return tuple(
            arg if dim is None else tree_unflatten([t.select(dim, i) for t in flat], spec)
            for arg, dim, (flat, spec) in zip(args, dims, flats)
        )

    outputs = [fn(*part(i)) for i in range(size)]
    flat, spec = tree_flatten(outputs[0])
    columns = [tree_flatten(o)[0] for o in outputs]
    return tree_unflatten([torch.stack([c[j] for c in columns]) for j in range(len(flat))], spec)


# -- the problem -------------------------------------------------------------------------------


class Problem:
    r"""What is measured: a model, its data, the loss of one batch and its weight, the parameters.

    The mean loss over the data is :math:`L(\theta) = \sum_b w_b L_b(\theta) / \sum_b w_b`,
    with :math:`L_b` the mean loss of batch :math:`b` over its :math:`w_b` units (see
    :mod:`landscape.losses`). Every curvature, metric and surface of landscape is a function
    of this :math:`L` (or of its per-batch and per-sample terms), evaluated through
    :meth:`evaluation`.

    Parameters
    ----------
    model : torch.nn.Module
        The model. It is never modified: parameters, buffers, ``.grad``, ``requires_grad``
        and train/eval flags are as before after every call. Evaluations use the
        parameters' values *at the time of the evaluation*.
    data : iterable of batches, or one batch
        See :class:`landscape.data.DataSource`.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets) -> scalar mean loss``; see :mod:`landscape.losses`.
    batch_loss : callable, optional
        ``batch_loss(model, batch) -> scalar mean loss``, for anything ``loss_fn`` cannot say.
    count : callable, optional
        ``count(batch) -> units`` of a batch's mean (its weight); default: scored tokens for
        Hugging Face language models and the criteria of :mod:`landscape.losses`, else
        samples.
    params : ParamSelector, optional
        The parameters curvature is taken in (names, modules, tensors or a predicate).
    mode : {"eval", "train"}, optional
        ``"eval"`` (default): dropout off, BatchNorm on its running statistics, so each
        sample's loss is a fixed function of the parameters. ``"train"``: BatchNorm uses
        each batch's statistics (the function the optimizer sees), on a private copy of the
        model so the running statistics never change; dropout stays off (a random function
        has no Hessian), and results depend on how the data is batched.
    precision : {"auto", "model", "float32", "float64"}, optional
        The dtype model evaluations run in. ``"auto"`` (default): the model's own, except
        for bfloat16 and float16 models, which are evaluated on a private float32 copy
        (memory: one more copy of the parameters and buffers, twice their half-precision
        size, and float32 activations); the measured error of half-precision products is
        in the README. ``"model"``: always the model's dtype (for half precision, products
        in it, accumulated and used in float32). ``"float32"`` / ``"float64"``: a private
        copy in that dtype (e.g. float64 curvature of a float32 model, for validation).
        Vectors and every linear-algebra step are in at least float32 either way.
    max_batches, max_samples : int, optional
        Use only part of the data.
    cache : bool or "auto", optional
        Keep device batches between passes (see :class:`~landscape.data.DataSource`).
    shard : bool or "auto", optional
        Data-parallel sharding under :mod:`torch.distributed`.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``.
    ValueError
        If ``mode`` or ``precision`` is unknown, the model has no trainable parameters or
        ``params`` selects nothing.

    Notes
    -----
    ``torch.compile``\ d, ``DataParallel`` and DDP models are unwrapped
    (:func:`unwrap_model`).

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> data = [(torch.randn(4, 3), torch.tensor([0, 1, 1, 0])),
    ...         (torch.randn(2, 3), torch.tensor([1, 0]))]
    >>> problem = Problem(model, data)
    >>> with problem.evaluation() as run:
    ...     total = sum(b.weight * run.loss(b.data) for b in problem.batches())
    >>> X, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    >>> bool(torch.isclose(total / problem.total_weight, nn.functional.cross_entropy(model(X), y)))
    True
    """

    def __init__(
        self,
        model: nn.Module,
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
    ) -> None:
        model = unwrap_model(model)
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train'; got {mode!r}.")
        if precision not in _PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(map(repr, _PRECISIONS))}; got {precision!r}."
            )
        objective = Objective(loss_fn, batch_loss, count=count, model=model)
        space = ParamSpace.from_module(model, params)
        compute = _compute_dtype(space.dtype, precision)
        self._setup(model, objective, space, mode, compute)
        self.source = DataSource(
            data,
            device=space.device,
            dtype=compute,
            max_batches=max_batches,
            max_samples=max_samples,
            cache=cache,
            shard=shard,
            weigh=objective.weight,
        )

    def _setup(
        self,
        model: nn.Module,
        objective: Objective,
        space: ParamSpace,
        mode: Mode,
        compute: torch.dtype,
    ) -> None:
        self.model = model
        self.objective = objective
        self.compute_dtype = compute
        # Vectors and linear algebra in at least float32, whatever the products run in.
        working = compute if compute in (torch.float32, torch.float64) else torch.float32
        self.space = dataclasses.replace(space, dtype=working)
        self.mode = mode
        self._model_dtype = space.dtype
        self.constant_entries = _padding_rows(model, space)
        self._train_copy: nn.Module | None = None
        self._unbatchable = _UNBATCHABLE.setdefault(model, set())
        self._criterion_checked = False

    def with_data(self, data: Any, **options: Any) -> Problem:
        """Return the same problem (model, loss, parameters, mode) on other data.

        Parameters
        ----------
        data : iterable of batches, or one batch
            The other data (e.g. a random mini-batch).
        **options
            ``max_batches``, ``max_samples``, ``cache``, ``shard`` of the new data source.

        Returns
        -------
        Problem
            A problem that shares this one's objective, parameters and what is known about
            vectorizing the model.
        """
        other = object.__new__(Problem)
        other._setup(
            self.model,
            self.objective,
            dataclasses.replace(self.space, dtype=self._model_dtype),
            self.mode,
            self.compute_dtype,
        )
        other._criterion_checked = self._criterion_checked
        other.source = DataSource(
            data,
            device=self.space.device,
            dtype=self.compute_dtype,
            weigh=self.objective.weight,
            **options,
        )
        return other

    # -- the data -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the parameters (and of every batch)."""
        return self.space.device

    @property
    def precision(self) -> str:
        """How products run: ``"model"`` (in the model's dtype) or ``"<dtype> copy"``."""
        if self.compute_dtype == self._model_dtype:
            return "model"
        return str(self.compute_dtype).replace("torch.", "") + " copy"

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of vectors over the parameters (at least float32)."""
        return self.space.dtype

    def batches(self) -> Iterator[Batch]:
        """Iterate over this rank's batches of positive weight (one pass over the data).

        Returns
        -------
        iterator of Batch
            ``(index, data, num_samples, weight)`` records.
        """
        return iter(self.source)

    @property
    def num_samples(self) -> int:
        """Number of samples in the data (all ranks); read from the data when first asked."""
        return self.source.num_samples

    @property
    def total_weight(self) -> float:
        r""":math:`\sum_b w_b` over the data (all ranks); read from the data when first asked."""
        return self.source.total_weight

    # -- evaluation ---------------------------------------------------------------------------
    def _module(self) -> nn.Module:
        if self.mode == "eval" and self.compute_dtype == self._model_dtype:
            return self.model
        if self._train_copy is None:
            # A private copy: batch statistics, or another precision (memory: one more copy
            # of the parameters and buffers, in the compute dtype).
            copy_ = _batch_statistics_copy(self.model) if self.mode == "train" else None
            if copy_ is None:
                copy_ = copy.deepcopy(self.model)
            self._train_copy = copy_.to(self.compute_dtype)
        return self._train_copy

    @contextlib.contextmanager
    def evaluation(self, *, first_order: bool = False) -> Iterator[Evaluation]:
        """Set up evaluations of the model and undo every side effect afterwards.

        The module runs in the requested mode (eval flags set on the user's model, restored
        on exit; ``mode="train"`` runs a private copy whose parameters and buffers are
        refreshed from the user's model), under the math attention kernel — unless
        ``first_order`` says that only first derivatives are taken, which fused kernels
        support.

        Yields
        ------
        Evaluation
            Losses, outputs and criteria of batches at the model's parameters or any other.
        """
        module = self._module()
        if module is not self.model:
            _refresh_copy(module, self.model)
        with evaluation_mode(
            module, batch_statistics=self.mode == "train", fused_attention=first_order
        ):
            yield Evaluation(self, module)

    def vectorize(
        self,
        fn: Callable[..., Any],
        what: str,
        in_dims: int | Sequence[int | None] = 0,
        *,
        chunk_size: int | None = None,
    ) -> Callable[..., Any]:
        """Return ``vmap(fn)``, falling back to an exact loop when ``vmap`` cannot trace ``fn``.

        The first failure of ``vmap`` for ``what`` is remembered for the model (every
        problem on it): later calls loop directly. One :class:`VectorizationWarning` per
        model and path names the path and the cost. When the loop fails too,
        its error (the model's own) is raised and nothing is remembered.

        Parameters
        ----------
        fn : callable
            The per-slice function.
        what : str
            What is vectorized (``"per-sample gradients"``, ``"grid points"``), for the
            memory and the warning.
        in_dims : int or sequence of (int or None)
            As for :func:`torch.func.vmap`.
        chunk_size : int, optional
            As for :func:`torch.func.vmap`.

        Returns
        -------
        callable
            A function of the same arguments as ``vmap(fn, in_dims)``.
        """

        def run(*args: Any) -> Any:
            if what not in self._unbatchable:
                try:
                    return vmap(fn, in_dims, chunk_size=chunk_size, randomness="same")(*args)
                except (RuntimeError, NotImplementedError) as error:
                    reason = str(error).strip().splitlines()[0][:200]
                    try:
                        result = _loop(fn, in_dims, args)
                    except Exception as own:  # the model's (or loss's) own error: raise it
                        if hasattr(own, "add_note"):
                            own.add_note(
                                f"(raised while computing {what} one slice at a time, e.g. "
                                "the loss of a batch of one sample; torch.func.vmap had "
                                f"failed first: {reason})"
                            )
                        raise
                    self._unbatchable.add(what)
                    warnings.warn(
                        f"torch.func.vmap cannot trace this model's code for {what} ({reason}); "
                        f"computing them with an exact loop instead, one call per slice "
                        f"(here {_size(args, in_dims)} calls where vmap makes one: this stage "
                        "is correspondingly slower, with the same numbers).",
                        VectorizationWarning,
                        stacklevel=3,
                    )
                    return result
            return _loop(fn, in_dims, args)

        return run

    def is_vectorized(self, what: str) -> bool:
        """Whether ``vmap`` has worked for ``what`` so far (see :meth:`vectorize`).

        Returns
        -------
        bool
            ``False`` once the exact loop has replaced it.
        """
        return what not in self._unbatchable

    def check_criterion(self, run: Evaluation, batch: Any) -> None:
        """Check, once, that the criterion reproduces the model's own loss (see ``Objective``)."""
        if not self._criterion_checked:
            self.objective.check_criterion(run.module, batch)
            self._criterion_checked = True


def _padding_rows(model: nn.Module, space: ParamSpace) -> Tensor | None:
    """Return a flat mask of the selected entries that no gradient reaches, or ``None``.

    By PyTorch's convention the row ``padding_idx`` of an ``nn.Embedding`` gets a zero
    gradient, so an optimizer never moves it, although the forward pass reads it.
    Reverse-mode products (gradients, double-backward) see it as constant, forward-mode
    ones (``jvp``) do not; landscape treats those entries as constants everywhere, so every
    curvature is the one of the parameters training actually changes, and all products agree.

    Returns
    -------
    Tensor or None
        Boolean ``(P,)``, true on constant entries.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    slices = space.slices()
    mask = None
    for module in model.modules():
        index = getattr(module, "padding_idx", None)
        name = names.get(id(getattr(module, "weight", None)))
        if not isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or index is None:
            continue
        if name not in slices:
            continue
        if mask is None:
            mask = torch.zeros(space.dim, dtype=torch.bool, device=space.device)
        width = module.weight.shape[1]
        start = slices[name].start + (index % module.weight.shape[0]) * width
        mask[start : start + width] = True
    return mask


def _size(args: tuple, in_dims: int | Sequence[int | None]) -> int:
    for arg, dim in zip(args, _in_dims_of(in_dims, len(args))):
        if dim is not None:
            return int(tree_flatten(arg)[0][0].shape[dim])
    return 0


class Evaluation:
    r"""Evaluations of the model inside :meth:`Problem.evaluation`.

    Two ways to evaluate: with the module's own parameters (:meth:`loss`, :meth:`forward`),
    which are autograd leaves for double-backward (``autograd.grad`` never writes ``.grad``),
    or with explicit tensors for the selected parameters through
    ``torch.func.functional_call`` (:meth:`call`, :meth:`call_outputs`), for the
    ``torch.func`` transforms. Tensors of the selected parameters are keyed by their names
    (:attr:`names`); :attr:`theta` holds their current values, detached.

    Attributes
    ----------
    module : torch.nn.Module
        The module evaluated: the user's model, or the private train-mode copy.
    params : list of Tensor
        The module's own selected parameters, in :attr:`names` order.
    names : list of str
        The selected parameter names.
    theta : dict of str to Tensor
        Their current values (detached).
    """

    def __init__(self, problem: Problem, module: nn.Module) -> None:
        self.problem = problem
        self.objective = problem.objective
        self.module = module
        table = dict(module.named_parameters())
        self.names = list(problem.space.names)
        self.params = [table[n] for n in self.names]
        self.theta = {n: p.detach() for n, p in zip(self.names, self.params)}
        self._bound = _Bound(module, problem.objective)
        selected = set(self.names)
        self._constants = {
            f"model.{n}": p.detach() for n, p in module.named_parameters() if n not in selected
        }
        self._constants.update({f"model.{n}": b for n, b in module.named_buffers()})

    # -- with the module's own parameters --------------------------------------------------------
    def loss(self, batch: Any, weight: float | Tensor | None = None) -> Tensor:
        """Return the mean loss of ``batch`` with the module's parameters.

        Parameters
        ----------
        batch : Any
            One batch.
        weight : float or Tensor, optional
            Its weight (passed on as ``num_items_in_batch`` where the model takes it).

        Returns
        -------
        Tensor
            The scalar loss.
        """
        return self.objective.loss(self.module, batch, weight)

    def forward(self, batch: Any, weight: float | Tensor | None = None) -> tuple[Tensor, Any]:
        """Return the mean loss of ``batch`` and the model's raw outputs (``None``: ``batch_loss``).

        Returns
        -------
        tuple
            ``(loss, outputs)``.
        """
        return self.objective.forward(self.module, batch, weight)

    def correct(self, outputs: Any, batch: Any) -> tuple[Tensor, Tensor] | None:
        """Return ``(correct, units)`` of the predictions on ``batch``, or ``None``.

        Returns
        -------
        tuple of Tensor or None
            See :meth:`landscape.losses.Objective.correct`.
        """
        return self.objective.correct(outputs, batch)

    # -- at explicit parameters -------------------------------------------------------------------
    def _state(self, theta: dict[str, Tensor]) -> dict[str, Tensor]:
        # Vectors may be in float32 while the module runs in half precision: cast (a no-op,
        # and differentiable, otherwise).
        compute = self.problem.compute_dtype
        return {
            **self._constants,
            **{
                f"model.{n}": t.to(compute) if t.is_floating_point() else t
                for n, t in theta.items()
            },
        }

    def call(
        self, theta: dict[str, Tensor], batch: Any, weight: float | Tensor | None = None
    ) -> Tensor:
        """Return the mean loss of ``batch`` with the selected parameters set to ``theta``.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        return functional_call(self._bound, self._state(theta), (batch,), {"weight": weight})

    def call_forward(
        self, theta: dict[str, Tensor], batch: Any, weight: float | Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """Return ``(loss, outputs)`` of ``batch`` with the selected parameters set to ``theta``.

        Returns
        -------
        tuple
            The scalar loss and the raw outputs.
        """
        return functional_call(
            self._bound, self._state(theta), (batch,), {"part": "forward", "weight": weight}
        )

    def call_outputs(self, theta: dict[str, Tensor], batch: Any) -> Tensor:
        """Return the criterion's input (the logits) of ``batch`` at ``theta``.

        Returns
        -------
        Tensor
            The output tensor.
        """
        return functional_call(self._bound, self._state(theta), (batch,), {"part": "outputs"})

    def criterion(self, outputs: Tensor, batch: Any) -> Tensor:
        """Return the criterion of ``batch`` applied to ``outputs`` (checked once, see below).

        Returns
        -------
        Tensor
            The scalar mean loss.
        """
        self.problem.check_criterion(self, batch)
        _, _, targets = self.objective.split(batch)
        return self.objective.criterion(outputs, targets)

    # -- layouts -----------------------------------------------------------------------------------
    def flat(self, tensors: dict[str, Tensor]) -> list[Tensor]:
        """Order a ``{name: tensor}`` result like the selected parameters.

        Returns
        -------
        list of Tensor
            One tensor per selected parameter.
        """
        return [tensors[n] for n in self.names]

    def named(self, V: list[Tensor]) -> dict[str, Tensor]:
        """Key a list of per-parameter blocks by name (the layout :meth:`call` expects).

        Returns
        -------
        dict of str to Tensor
            ``{name: block}``.
        """
        return dict(zip(self.names, V))

    def samples(self, batch: Any, *, criterion: bool = False) -> Samples:
        """Cut ``batch`` into its samples, for per-sample functions (see :class:`Samples`).

        Parameters
        ----------
        batch : Any
            One batch.
        criterion : bool, optional
            The per-sample functions will use :meth:`Samples.criterion`: check it against
            the model's own loss first (once per problem, outside any transform).

        Returns
        -------
        Samples
            The samples of positive weight.
        """
        if criterion:
            self.problem.check_criterion(self, batch)
        return Samples(self, batch)


class Samples:
    r"""One batch as its samples: rows, weights, and each sample's loss, outputs and criterion.

    The loss of sample :math:`i` is the loss of the batch made of that sample alone (every
    tensor with the batch dimension cut to row :math:`i`), a mean over the sample's
    :math:`w_i` units, so that :math:`\sum_i w_i \ell_i / \sum_i w_i` is the batch's loss.
    Samples of weight 0 (no scored token) contribute nothing and are left out:
    :attr:`index` holds the positions of the others in the batch.

    Attributes
    ----------
    rows : tuple of Tensor
        The batch's tensors with a batch dimension, cut to the kept samples (what
        per-sample functions are vectorized over, along dimension 0).
    weights : Tensor
        The kept samples' weights, shape ``(m,)``, float64.
    index : Tensor
        Their positions in the batch.
    """

    def __init__(self, run: Evaluation, batch: Any) -> None:
        self.run = run
        n = batch_size(batch)
        weights = run.objective.sample_weights(batch).to(run.problem.device)
        self.index = torch.nonzero(weights > 0).reshape(-1)
        if len(self.index) < n:
            batch = select_rows(batch, self.index, n)
            weights = weights[self.index]
        self.batch = batch
        self.weights = weights
        tensors = leaves(batch)
        m = len(self.index)
        self._batched = [t.ndim > 0 and t.shape[0] == m for t in tensors]
        self._tensors = tensors
        self.rows = tuple(t for t, b in zip(tensors, self._batched) if b)

    def __len__(self) -> int:
        return len(self.index)

    def batch_of(self, row: tuple[Tensor, ...]) -> Any:
        """Return the one-sample batch of a sample's rows (each given without its batch dimension).

        Returns
        -------
        Any
            A batch of one sample, of the structure of the original batch.
        """
        it = iter(row)
        values = [next(it).unsqueeze(0) if b else t for t, b in zip(self._tensors, self._batched)]
        return rebuild(self.batch, values)

    def loss(self, theta: dict[str, Tensor], row: tuple[Tensor, ...], weight: Tensor) -> Tensor:
        """Return the loss of one sample at ``theta`` (its weight passed on as for batches).

        Returns
        -------
        Tensor
            The scalar loss.
        """
        return self.run.call(theta, self.batch_of(row), weight)

    def outputs(self, theta: dict[str, Tensor], row: tuple[Tensor, ...]) -> Tensor:
        """Return the outputs (logits) of one sample at ``theta``, with a batch dimension of 1.

        Returns
        -------
        Tensor
            The output tensor.
        """
        return self.run.call_outputs(theta, self.batch_of(row))

    def criterion(self, outputs: Tensor, row: tuple[Tensor, ...]) -> Tensor:
        """Return one sample's criterion as a function of its outputs.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        _, _, targets = self.run.objective.split(self.batch_of(row))
        return self.run.objective.criterion(outputs, targets)

    def chunks(self, size: int) -> Iterator[tuple[int, tuple[Tensor, ...], Tensor]]:
        """Yield ``(start, rows, weights)`` of consecutive chunks of at most ``size`` samples.

        Yields
        ------
        tuple
            The first kept sample's position among the kept samples, its chunk of rows and
            weights.
        """
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            yield lo, tuple(t[lo:hi] for t in self.rows), self.weights[lo:hi]
