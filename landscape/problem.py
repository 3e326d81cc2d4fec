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

from landscape import distributed
from landscape._attention import math_attention
from landscape.batches import batch_size, leaves, rebuild, select_rows
from landscape.data import Batch, DataSource
from landscape.losses import BatchLoss, Count, Criterion, Objective
from landscape.params import ParamSelector, ParamSpace

__all__ = [
    "PROBLEM_OPTIONS",
    "Evaluation",
    "Problem",
    "Samples",
    "VectorizationWarning",
    "as_problem",
    "evaluation_mode",
    "unwrap_model",
]

Mode = Literal["eval", "train"]
Precision = Literal["auto", "model", "float32", "float64"]
_PRECISIONS = ("auto", "model", "float32", "float64")
_HALF = (torch.float16, torch.bfloat16)
_MISSING = object()
_SOURCE_OPTIONS = ("max_batches", "max_samples", "cache", "shard")  # what limits a data source


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
            "ls.layerwise (see docs/howto/distributed.md, 'Sharded models'); for anything else, "
            "analyze the unsharded "
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


#: The keyword arguments of :class:`Problem` besides ``model, data, loss_fn``: every public
#: function that takes ``model, data, loss_fn`` accepts them as ``**options`` and builds its
#: problem from them (:func:`as_problem`).
PROBLEM_OPTIONS = (
    "batch_loss",
    "count",
    "params",
    "mode",
    "precision",
    "max_batches",
    "max_samples",
    "cache",
    "shard",
)
_VARIANT_OPTIONS = ("params", "max_batches", "max_samples", "cache", "shard")


def as_problem(
    problem: Any, data: Any = None, loss_fn: Any = None, /, *, where: str, **options: Any
) -> Problem:
    """Return the :class:`Problem` a public function works on: given, or built from its parts.

    Every curvature function and metric takes either a :class:`Problem` or the parts of one,
    ``(model, data, loss_fn, **options)`` with the options of :class:`Problem`; this is the
    one place that tells them apart. With a :class:`Problem`, the options that make a
    variant of it (``params``, ``max_batches``, ``max_samples``, ``cache``, ``shard``) are
    applied (:meth:`Problem.with_params`, :meth:`Problem.with_data`); the others are part of
    the problem and refused.

    Parameters
    ----------
    problem : Problem or torch.nn.Module
        A problem, or the model.
    data, loss_fn : optional
        With a model: its data and loss (see :class:`Problem`).
    where : str
        The calling function's name, for error messages.
    **options
        Options of :class:`Problem`.

    Returns
    -------
    Problem
        The problem.

    Raises
    ------
    TypeError
        For an unknown option, data given twice, or a missing ``data``.

    Examples
    --------
    >>> problem = Problem(nn.Linear(3, 2), (torch.randn(8, 3), torch.arange(8) % 2))
    >>> as_problem(problem, where="f", max_samples=4).num_samples
    4
    """
    unknown = sorted(k for k in options if k not in PROBLEM_OPTIONS)
    if unknown:
        raise TypeError(
            f"{where}() got unexpected keyword argument(s) {unknown}; the problem's options "
            f"are {list(PROBLEM_OPTIONS)} (see landscape.Problem)."
        )
    if isinstance(problem, Problem):
        if data is not None or loss_fn is not None:
            raise TypeError(
                f"{where}() got a Problem and data or loss_fn: a Problem carries its data and "
                "loss. Pass either ls.Problem(model, data, loss_fn) or model, data, loss_fn."
            )
        fixed = sorted(k for k in options if k not in _VARIANT_OPTIONS)
        if fixed:
            raise TypeError(
                f"{where}(): {fixed} are part of the Problem; build it with them, e.g. "
                f"ls.Problem(model, data, {fixed[0]}=...)."
            )
        if "params" in options:
            problem = problem.with_params(options.pop("params"))
        return problem.with_data(**options) if options else problem
    if data is None:
        raise TypeError(
            f"{where}() needs data: pass model, data (a DataLoader, a list of batches or one "
            "batch), or a landscape.Problem."
        )
    return Problem(problem, data, loss_fn, **options)


class VectorizationWarning(UserWarning):
    """``vmap`` could not trace the model's code; an exact loop computes the same numbers."""


# What vmap could not trace, per model (its code does not change between problems): each
# path fails, and warns, once per model.
_UNBATCHABLE: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


# -- evaluation hygiene ------------------------------------------------------------------------


_SPARSE_GRADIENT = (nn.Embedding, nn.EmbeddingBag)


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
    # Sparse embedding gradients have no dense copy_, reshape or double backward: the same
    # values come dense with the flag off (restored on exit).
    sparse = [m for m in model.modules() if isinstance(m, _SPARSE_GRADIENT) and m.sparse]
    buffers = (
        [(b, b._version, b.detach().clone()) for b in model.buffers()] if restore_buffers else []
    )
    config = getattr(model, "config", None)
    problem_type = getattr(config, "problem_type", _MISSING)
    try:
        model.eval()
        for m in sparse:
            m.sparse = False
        if batch_statistics:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        with contextlib.nullcontext() if fused_attention else math_attention():
            yield
    finally:
        for m, training in flags:
            m.training = training
        for m in sparse:
            m.sparse = True
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
        self.source = self._source(
            data,
            compute,
            max_batches=max_batches,
            max_samples=max_samples,
            cache=cache,
            shard=shard,
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
        self._theta: dict[str, Tensor] | None = None
        self.shared: dict[str, Any] = {}  # what every variant of this problem shares

    def _source(self, data: Any, dtype: torch.dtype, **options: Any) -> DataSource:
        # The data on this problem's device in ``dtype``, batches weighed by its objective;
        # ``options``: any of _SOURCE_OPTIONS.
        return DataSource(
            data, device=self.space.device, dtype=dtype, weigh=self.objective.weight, **options
        )

    # -- variants ------------------------------------------------------------------------------
    def _variant(self) -> Problem:
        other = copy.copy(self)  # shares model, objective, data source, private copy, caches
        return other

    def with_data(
        self,
        data: Any = None,
        *,
        max_batches: int | object | None = _MISSING,
        max_samples: int | object | None = _MISSING,
        cache: bool | Literal["auto"] | object = _MISSING,
        shard: bool | Literal["auto"] | object = _MISSING,
    ) -> Problem:
        """Return the same problem (model, loss, parameters, mode, θ) on other data or limits.

        Parameters
        ----------
        data : iterable of batches, or one batch, optional
            Other data (e.g. a random mini-batch); default: this problem's data, with the
            limits below (when they are this problem's, the data source itself is shared:
            its cached device batches and sample counts).
        max_batches, max_samples, cache, shard : optional
            As for :class:`Problem`; default: this problem's (for new ``data``: the defaults).

        Returns
        -------
        Problem
            A problem sharing this one's model, objective, parameters and what is known
            about vectorizing the model.

        Examples
        --------
        >>> problem = Problem(nn.Linear(3, 2), (torch.randn(8, 3), torch.arange(8) % 2))
        >>> problem.with_data(max_samples=4).num_samples, problem.num_samples
        (4, 8)
        """
        source = self.source
        given = {
            "max_batches": max_batches,
            "max_samples": max_samples,
            "cache": cache,
            "shard": shard,
        }
        given = {k: v for k, v in given.items() if v is not _MISSING}
        other = self._variant()
        if data is None:
            current = {k: getattr(source, k) for k in given}
            if given == current:
                return other
            options = {k: getattr(source, k) for k in _SOURCE_OPTIONS}
            options.update(given)
            shared = source.prefix(
                max_batches=options["max_batches"], max_samples=options["max_samples"]
            )
            if shared is not None:  # the cached device batches: no new pass over the data
                other.source = shared
                return other
            data = source.data
        else:
            options = given
        other.source = self._source(data, self.compute_dtype, **options)
        return other

    def with_params(self, params: ParamSelector) -> Problem:
        """Return the same problem with curvature taken in other parameters.

        Parameters
        ----------
        params : ParamSelector
            The parameters (names, modules, tensors or a predicate; see
            :func:`landscape.params.select_parameters`).

        Returns
        -------
        Problem
            A problem sharing the data source, objective and model.

        Examples
        --------
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> Problem(model, (torch.randn(8, 3), torch.arange(8) % 2)).with_params("2").space.dim
        10
        """
        other = self._variant()
        space = ParamSpace.from_module(self.model, params)
        other.space = dataclasses.replace(space, dtype=self.space.dtype)
        other.constant_entries = _padding_rows(self.model, space)
        if self._theta is not None:
            table = {n: p.detach() for n, p in self.model.named_parameters()}
            other._theta = {n: self._theta.get(n, table[n]) for n in other.space.names}
        return other

    def with_evaluation(
        self, *, mode: Mode | None = None, precision: Precision | None = None
    ) -> Problem:
        """Return the same problem evaluated in another mode or precision.

        Parameters
        ----------
        mode : {"eval", "train"}, optional
            As for :class:`Problem` (default: this problem's).
        precision : {"auto", "model", "float32", "float64"}, optional
            As for :class:`Problem` (default: this problem's dtype).

        Returns
        -------
        Problem
            A problem sharing the model, objective and parameters (a new data source when
            the dtype of the batches changes).

        Raises
        ------
        ValueError
            For an unknown mode or precision.
        """
        mode = self.mode if mode is None else mode
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train'; got {mode!r}.")
        compute = self.compute_dtype
        if precision is not None:
            if precision not in _PRECISIONS:
                raise ValueError(f"precision must be one of {_PRECISIONS}; got {precision!r}.")
            compute = _compute_dtype(self._model_dtype, precision)
        if mode == self.mode and compute == self.compute_dtype:
            return self
        other = self._variant()
        other.mode = mode
        other.compute_dtype = compute
        working = compute if compute in (torch.float32, torch.float64) else torch.float32
        other.space = dataclasses.replace(self.space, dtype=working)
        other._train_copy = None
        if compute != self.compute_dtype:
            options = {k: getattr(self.source, k) for k in _SOURCE_OPTIONS}
            other.source = self._source(self.source.data, compute, **options)
        return other

    def with_model(self, model: nn.Module) -> Problem:
        """Return the same problem on another model of the same architecture (e.g. a copy).

        Used where landscape trains or perturbs a private copy (learning-rate verification
        bursts) and needs the same loss, weighting and data on it.

        Parameters
        ----------
        model : torch.nn.Module
            A model with the selected parameters under the same names and shapes.

        Returns
        -------
        Problem
            A problem sharing the data source and objective, evaluating ``model``.

        Raises
        ------
        ValueError
            If ``model`` lacks a selected parameter or its shape differs.
        """
        model = unwrap_model(model)
        table = dict(model.named_parameters())
        wrong = [
            n for n, s in zip(self.space.names, self.space.shapes)
            if n not in table or tuple(table[n].shape) != tuple(s)
        ]  # fmt: skip
        if wrong:
            raise ValueError(f"the other model lacks, or reshapes, the parameters {wrong[:5]}.")
        other = self._variant()
        other.model = model
        other._train_copy = None
        other._unbatchable = _UNBATCHABLE.setdefault(model, set())
        return other

    def at(self, theta: Tensor | dict[str, Tensor]) -> Problem:
        r"""Return the same problem evaluated at other values :math:`\theta` of the parameters.

        The model is not touched: every evaluation of the returned problem (losses,
        gradients, curvature products, :meth:`reduce`) calls it functionally with
        ``theta`` in place of the selected parameters.

        Parameters
        ----------
        theta : Tensor or dict of str to Tensor
            A flat vector of length ``P`` in this problem's parameter order, or one tensor
            per selected parameter name.

        Returns
        -------
        Problem
            The problem at ``theta``.

        Raises
        ------
        ValueError
            If ``theta`` does not match the selected parameters.

        Examples
        --------
        >>> model = nn.Linear(2, 1, bias=False)
        >>> data = (torch.ones(4, 2), torch.zeros(4, 1))
        >>> round(Problem(model, data).at(torch.tensor([1.0, 2.0])).loss(), 6)
        9.0
        """
        if isinstance(theta, Tensor):
            if theta.shape != (self.space.dim,):
                raise ValueError(
                    f"theta has shape {tuple(theta.shape)}; expected ({self.space.dim},), the "
                    "number of selected parameters."
                )
            theta = self.space.unflatten(theta)
        missing = [n for n in self.space.names if n not in theta]
        if missing:
            raise ValueError(f"theta lacks the selected parameters {missing[:5]}.")
        other = self._variant()
        other._theta = {n: theta[n].detach() for n in self.space.names}
        return other

    @property
    def theta(self) -> dict[str, Tensor]:
        """The values of the selected parameters this problem is evaluated at (detached)."""
        if self._theta is not None:
            return self._theta
        table = dict(self.model.named_parameters())
        return {n: table[n].detach() for n in self.space.names}

    def parameters_vector(self) -> Tensor:
        """Return :attr:`theta` as one flat vector (a copy, in the working dtype).

        Returns
        -------
        Tensor
            Shape ``(P,)``.
        """
        return self.space.flatten(self.theta).to(self.space.dtype, copy=True)

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

    # -- the one data loop --------------------------------------------------------------------
    def reduce(
        self,
        per_batch: Callable[[Evaluation, Batch], Tensor | Sequence[Tensor]],
        *,
        init: Sequence[Tensor] | None = None,
        mean: bool = True,
        first_order: bool = False,
        names: Sequence[str] = ("loss",),
        hint: str = "",
        check_finite: bool = True,
    ) -> list[Tensor]:
        r"""Return the weighted mean of per-batch quantities over the data: the one data loop.

        .. math::
            \bar f = \frac{\sum_b w_b\, f_b}{\sum_b w_b},

        over this rank's batches (:meth:`batches`), summed over the data-parallel ranks, with
        :math:`f_b` = ``per_batch(run, batch)`` evaluated inside :meth:`evaluation` (so at
        the problem's parameters, :meth:`at` included) and :math:`w_b` the batch's weight
        (samples, or scored tokens). Every mean over the data in landscape is this loop:
        the loss, gradients, curvature products, sharpness, surfaces, the tracker. It
        checks every part for non-finite values with one synchronization per pass and
        names the first batch where one appears (every rank raises together).

        Parameters
        ----------
        per_batch : callable
            ``per_batch(run, batch) -> Tensor or sequence of Tensor``, the batch's
            quantities (for ``mean=True``, the batch's *mean* quantities, e.g. its mean
            loss). Detached before they are summed.
        init : sequence of Tensor, optional
            Zero accumulators of the parts' shapes (summed into in place, and returned); by
            default created from the first batch's parts (needed under
            :mod:`torch.distributed` when a rank may have no batch).
        mean : bool, optional
            ``True``: weight by :math:`w_b` and divide by :math:`\sum_b w_b`; ``False``:
            return the plain sums :math:`\sum_b f_b`.
        first_order : bool, optional
            Only first derivatives are taken (fused attention kernels may run).
        names : sequence of str, optional
            What the parts are, for the error message (``("loss", "curvature product")``).
        hint : str, optional
            Appended to the message when a non-scalar part is not finite.
        check_finite : bool, optional
            Raise on non-finite parts (default); ``False`` for quantities that may
            legitimately be infinite or undefined (a loss surface far from the minimum).

        Returns
        -------
        list of Tensor
            The reduced parts (scalars in float64, others in at least the working dtype).

        Raises
        ------
        FloatingPointError
            If a part is not finite: ``"at batch i (0-based) of the data, the loss is nan"``.
        RuntimeError
            If this rank has no batch and ``init`` is not given.

        Examples
        --------
        >>> model = nn.Linear(3, 1)
        >>> data = [(torch.randn(4, 3), torch.randn(4, 1)),
        ...         (torch.randn(2, 3), torch.randn(2, 1))]
        >>> problem = Problem(model, data)
        >>> with torch.no_grad():
        ...     (loss,) = problem.reduce(lambda run, b: run.loss(b.data, b.weight))
        >>> X, Y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
        >>> bool(torch.isclose(loss, nn.functional.mse_loss(model(X), Y).double()))
        True
        """
        sums = list(init) if init is not None else None
        flags: list[Tensor] = []
        firsts: list[Tensor] = []
        indices: list[int] = []
        with self.evaluation(first_order=first_order) as run:
            for batch in self.batches():
                parts = per_batch(run, batch)
                parts = (parts,) if isinstance(parts, Tensor) else tuple(parts)
                if sums is None:
                    sums = [_accumulator(p, self.dtype) for p in parts]
                for total, part in zip(sums, parts):
                    total.add_(part.detach().to(total.dtype), alpha=batch.weight if mean else 1.0)
                if check_finite:
                    flags.append(torch.stack([torch.isfinite(p).all() for p in parts]))
                    firsts.append(parts[0].detach().reshape(-1)[0])
                    indices.append(batch.index)
        if sums is None:
            raise RuntimeError(
                "this rank has no batch of the data and no accumulators were given (init=)."
            )
        bad = _non_finite(flags, firsts, indices, names, hint)
        spans = self.source.spans_ranks
        if spans:  # every rank raises together instead of deadlocking in the next collective
            flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
            distributed.all_reduce_sum_(flag)
            if bad is None and float(flag) > 0:
                raise FloatingPointError(
                    f"non-finite {' or '.join(names)} on another data-parallel rank."
                )
        if bad is not None:
            raise FloatingPointError(bad)
        if spans:
            _all_reduce_(sums)
        if mean:
            weight = self.total_weight
            for total in sums:
                total.div_(weight)
        return sums

    def loss(self, nonfinite: float | None = None) -> float:
        r"""Return the mean loss :math:`L(\theta) = \sum_b w_b L_b / \sum_b w_b` over the data.

        Parameters
        ----------
        nonfinite : float, optional
            What a non-finite loss reads as (``math.inf`` for "it diverged"); by default
            it raises.

        Returns
        -------
        float
            The loss at the problem's parameters (:meth:`at` included), in float64.

        Raises
        ------
        FloatingPointError
            If a batch's loss is not finite and ``nonfinite`` is not given (see
            :meth:`reduce`).

        Examples
        --------
        >>> data = (torch.ones(4, 2), torch.zeros(4, 1))
        >>> Problem(nn.Linear(2, 1, bias=False), data).at(torch.tensor([0.5, 0.5])).loss()
        1.0
        >>> far = torch.tensor([float("inf"), 0.0])
        >>> Problem(nn.Linear(2, 1, bias=False), data).at(far).loss(nonfinite=float("inf"))
        inf
        """
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        try:
            with torch.no_grad():
                (value,) = self.reduce(lambda run, b: run.loss(b.data, b.weight), init=[zero])
        except FloatingPointError:
            if nonfinite is None:
                raise
            return nonfinite
        return float(value)

    def value_and_grad(self) -> tuple[float, Tensor]:
        r"""Return the mean loss and its gradient :math:`\nabla_\theta L` (flat, length ``P``).

        Returns
        -------
        tuple of (float, Tensor)
            The loss (float64) and the gradient in the working dtype.

        Examples
        --------
        >>> data = (torch.ones(4, 2), torch.zeros(4, 1))
        >>> loss, g = Problem(nn.Linear(2, 1, bias=False), data).at(torch.ones(2)).value_and_grad()
        >>> loss, g.tolist()
        (4.0, [4.0, 4.0])
        """

        def part(run: Evaluation, batch: Batch) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                loss = run.loss(batch.data, batch.weight)
                grads = torch.autograd.grad(
                    loss, run.params, allow_unused=True, materialize_grads=True
                )
            return loss.detach(), self.space.flatten(run.named(list(grads)))

        init = [
            torch.zeros((), dtype=torch.float64, device=self.device),
            torch.zeros(self.space.dim, dtype=self.dtype, device=self.device),
        ]
        loss, gradient = self.reduce(part, init=init, first_order=True)
        return float(loss), gradient

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
        self._at = problem._theta is not None  # evaluated at other values than the module's
        if self._at:
            # Fresh autograd leaves holding theta: derivatives are taken with respect to them.
            given = problem._theta
            self.params = [given[n].detach().requires_grad_(True) for n in self.names]  # type: ignore[index]
        else:
            self.params = [table[n] for n in self.names]
        self.theta = {n: p.detach() for n, p in zip(self.names, self.params)}
        self._bound = _Bound(module, problem.objective)
        selected = set(self.names)
        self._constants = {
            f"model.{n}": p.detach() for n, p in module.named_parameters() if n not in selected
        }
        self._constants.update({f"model.{n}": b for n, b in module.named_buffers()})

    # -- at the problem's parameters (the module's own, or those of Problem.at) -------------------
    def loss(self, batch: Any, weight: float | Tensor | None = None) -> Tensor:
        """Return the mean loss of ``batch`` at the problem's parameters (:attr:`params`).

        Differentiable with respect to :attr:`params` (the module's own parameters, or the
        leaves holding the values given to :meth:`Problem.at`).

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
        if self._at:
            return self.call(self.named(self.params), batch, weight)
        return self.objective.loss(self.module, batch, weight)

    def forward(self, batch: Any, weight: float | Tensor | None = None) -> tuple[Tensor, Any]:
        """Return the mean loss of ``batch`` and the model's raw outputs (``None``: ``batch_loss``).

        Returns
        -------
        tuple
            ``(loss, outputs)``.
        """
        if self._at:
            return self.call_forward(self.named(self.params), batch, weight)
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


def _accumulator(part: Tensor, working: torch.dtype) -> Tensor:
    # Scalars (losses) sum in float64; vectors in at least the working dtype.
    if part.ndim == 0:
        dtype = torch.float64
    elif part.is_floating_point():
        dtype = torch.promote_types(part.dtype, working)
    else:
        dtype = torch.float64
    return torch.zeros(part.shape, dtype=dtype, device=part.device)


def _non_finite(
    flags: list[Tensor],
    firsts: list[Tensor],
    indices: list[int],
    names: Sequence[str],
    hint: str,
) -> str | None:
    """Return the message naming the first batch with a non-finite part, or ``None``.

    One synchronization: the flags of every batch are stacked and read once.

    Returns
    -------
    str or None
        ``"at batch i (0-based) of the data, the <name> is <value>"``.
    """
    if not flags:
        return None
    stacked = torch.stack(flags)
    if bool(stacked.all()):
        return None
    row = int((~stacked.all(dim=1)).nonzero()[0, 0])
    column = int((~stacked[row]).nonzero()[0, 0])
    where = f"at batch {indices[row]} (0-based) of the data"
    first = float(firsts[row])
    name = names[column] if column < len(names) else f"part {column}"
    if column == 0:
        return f"{where}, the {name} is {first}"
    return f"{where}, the {name} is not finite (the {names[0]}, {first:.6g}, is){hint}"


def _all_reduce_(tensors: list[Tensor]) -> None:
    """Sum tensors over the data-parallel ranks in place.

    Views of one buffer are reduced with one call on the whole buffer (a curvature
    product's per-parameter blocks): every element of that buffer must be an accumulator.
    """
    if not distributed.is_distributed():
        return
    groups: dict[tuple[int, torch.dtype], Tensor] = {}
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key in groups:
            continue
        storage = t.untyped_storage()
        whole = torch.empty(0, dtype=t.dtype, device=t.device)
        whole.set_(storage, 0, (storage.nbytes() // t.element_size(),))
        groups[key] = whole
    for whole in groups.values():
        distributed.all_reduce_sum_(whole)
