"""The Hessian of the mean loss over a dataset, as a matrix-free operator."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from landscape.batches import batch_size, select_rows
from landscape.losses import Criterion
from landscape.operators._backends import (
    BATCHED_COLUMNS,
    VMAP_COLUMNS,
    BackendChooser,
    block_kind,
)
from landscape.operators.curvature import CurvatureOperator
from landscape.operators.finite_difference import finite_difference_product
from landscape.problem import Evaluation, Problem

__all__ = [
    "FiniteDifferenceWarning",
    "HessianOperator",
    "SecondDerivativeError",
    "hessian",
]

Backend = Literal[
    "auto", "double_backward", "double_backward_loop", "forward_over_reverse", "finite_difference"
]
_BACKENDS = (
    "auto",
    "double_backward",
    "double_backward_loop",
    "forward_over_reverse",
    "finite_difference",
)
# The candidates "auto" measures, the default first (see landscape.operators._backends).
_CANDIDATES = {
    "single": ["double_backward", "forward_over_reverse"],
    "block": ["double_backward_loop", "double_backward", "forward_over_reverse"],
    "wide": ["double_backward_loop", "double_backward", "forward_over_reverse"],
}


class HessianOperator(CurvatureOperator):
    r"""Hessian :math:`H = \nabla^2_\theta L(\theta)` of the mean loss, times vectors.

    .. math::
        H V = \frac{1}{W}\sum_b w_b \, \nabla^2_\theta L_b(\theta)\, V ,

    with :math:`L_b` the mean loss of batch :math:`b` and :math:`w_b` its weight (its
    samples, or scored tokens for a language model; :math:`W = \sum_b w_b`). Each batch's
    product is exact: Pearlmutter's :math:`Hv = \nabla_\theta \langle
    \nabla_\theta L_b, v\rangle` by autograd double-backward, or forward-over-reverse
    ``torch.func.jvp(torch.func.grad(L_b))`` vectorized over the k columns with
    ``torch.func.vmap``. (``torch.func.hessian`` and ``jvp(jacrev(.))`` are *not* used: on
    torch 2.13 they return wrong second derivatives through ``layer_norm``.)

    Parameters
    ----------
    problem, data, loss_fn, chunk_size, **options
        What is measured: a :class:`~landscape.problem.Problem`, or the model with its data,
        loss and problem options; see
        :class:`~landscape.operators.curvature.CurvatureOperator`.
    backend : {"auto", "double_backward", "double_backward_loop", "forward_over_reverse", \
"finite_difference"}
        How each batch's product is computed. ``"double_backward"`` builds the gradient graph
        once per batch and back-propagates all k directions through it in one batched call
        (``autograd.grad(..., is_grads_batched=True)``); ``"double_backward_loop"`` sends
        them through the retained graph one call each; ``"forward_over_reverse"`` uses
        ``vmap(jvp(grad))``. ``"auto"`` (default) times them on the model's first batch and
        uses the fastest (:mod:`landscape.operators._backends`; what it chose and measured
        is in :attr:`backend_choices`); a backend that fails on the model (an op without a
        forward-mode rule) is dropped. These are exact and differ only by float rounding; a
        fixed backend makes results bitwise reproducible across machines.
        ``"finite_difference"`` takes central differences of first-order gradients
        (:mod:`landscape.operators.finite_difference`): approximate, about 1e-5 relative in
        float32, for models without second derivatives (``"auto"`` falls back to it when
        double-backward is impossible, e.g. through a ``@once_differentiable`` function) and
        for fused attention kernels.

    References
    ----------
    B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6(1),
    1994.

    Examples
    --------
    A linear least-squares model has the constant Hessian :math:`\frac{2}{N C} X^\top X`
    per output (``nn.MSELoss`` averages over all :math:`N C` entries):

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> X, Y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    >>> model = nn.Linear(3, 1, bias=False).double()
    >>> H = hessian(model, [(X[:8], Y[:8]), (X[8:], Y[8:])], nn.MSELoss())
    >>> torch.allclose(H.to_dense(), 2 * X.T @ X / 20)
    True
    >>> H.num_matvecs, H.num_passes
    (3, 1)
    """

    def __init__(
        self,
        problem: Problem | nn.Module,
        data: Any = None,
        loss_fn: Criterion | None = None,
        *,
        backend: Backend = "auto",
        chunk_size: int | None = None,
        **options: Any,
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(map(repr, _BACKENDS))}; got {backend!r}."
            )
        super().__init__(problem, data, loss_fn, chunk_size=chunk_size, **options)
        self.backend = backend
        self._choosers: dict[str, BackendChooser] = {}

    @property
    def backend_choices(self) -> dict[str, dict[str, Any]]:
        """What ``backend="auto"`` measured and chose, per kind of block this operator met.

        ``{"single" | "block" | "wide": {"choice", "seconds_per_vector_sample", "failed"}}``;
        empty for a fixed backend. See :mod:`landscape.operators._backends`.
        """
        return {kind: chooser.summary() for kind, chooser in self._choosers.items()}

    def _candidates(self, kind: str) -> list[str]:
        # float64 asks for the reference: the double-backward backends reproduce autograd's
        # double-backward of the model's loss to the last bits, vmap(jvp(grad)) only to the
        # precision of float32 pieces inside the model (Llama's RMSNorm, HF's loss: 7e-8).
        if self.dtype == torch.float64:
            return [name for name in _CANDIDATES[kind] if name != "forward_over_reverse"]
        return _CANDIDATES[kind]

    def _batch_matmat(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        if self.backend != "auto":
            return self._product(self.backend, run, batch, weight, V)
        k = V[0].shape[0]
        kind = block_kind(k)
        samples = batch_size(batch)
        situation = (kind, self.shape[0], self.mode)
        chooser = BackendChooser.for_model(self.model, situation, samples, self._candidates(kind))
        self._choosers[kind] = chooser
        if chooser.choice is None:

            def trial(name: str, columns: int, rows: int) -> object:
                part = batch if rows >= samples else select_rows(batch, slice(0, rows), samples)
                head = [v[:columns] for v in V]
                return self._product(name, run, part, weight * rows / samples, head)

            try:
                chooser.measure(trial, k, samples, self.device)
                if not chooser.seconds:  # nothing was run (deterministic mode): run it now
                    return self._product(chooser.choice, run, batch, weight, V)
            except SecondDerivativeError as error:
                self._fall_back_to_finite_differences(chooser, error)
        return self._product(chooser.choice, run, batch, weight, V)

    @staticmethod
    def _fall_back_to_finite_differences(
        chooser: BackendChooser, error: SecondDerivativeError
    ) -> None:
        # Double-backward is impossible here: the approximate first-order product.
        chooser.choice = "finite_difference"
        chooser.failed["double_backward"] = str(error.__cause__ or error)[:200]
        warnings.warn(
            f"{error.reason}: Hessian products of this model fall back to central "
            "differences of gradients (backend='finite_difference'; about 1e-5 "
            "relative in float32 for smooth models, see "
            "landscape.operators.finite_difference).",
            FiniteDifferenceWarning,
            stacklevel=5,
        )

    @property
    def _first_order(self) -> bool:  # type: ignore[override]
        return self.backend == "finite_difference"

    def _product(
        self, name: str, run: Evaluation, batch: Any, weight: float, V: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        if name == "forward_over_reverse":
            return self._forward_over_reverse(run, batch, weight, V)
        if name == "finite_difference":
            return finite_difference_product(run, batch, weight, V)
        return self._double_backward(run, batch, weight, V, batched=name == "double_backward")

    def _forward_over_reverse(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        def loss_and_value(theta: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            loss = run.call(theta, batch, weight)
            return loss, loss.detach()

        gradient = grad(loss_and_value, has_aux=True)

        def column(v: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
            _, hv, loss = jvp(gradient, (run.theta,), (v,), has_aux=True)
            return hv, loss

        chunk = self.chunk_size or VMAP_COLUMNS  # a graph per column: bounded memory
        hv, loss = vmap(column, chunk_size=chunk, randomness="same")(run.named(V))
        return run.flat(hv), loss[0]

    def _double_backward(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor], *, batched: bool
    ) -> tuple[list[Tensor], Tensor]:
        # The module's own parameters are the autograd leaves: autograd.grad returns the
        # derivatives without writing .grad, and no functional_call overhead is paid. The
        # gradient graph is built once; the k columns go back through it either in one
        # batched call (vmap inside autograd) or one call each with the graph retained.
        try:
            return self._double_backward_columns(run, batch, weight, V, batched)
        except RuntimeError as error:
            reason = _no_second_derivative(error)
            if reason is None:
                raise
            raise SecondDerivativeError(
                f"{reason} ({str(error).splitlines()[0][:160]}): pass "
                "backend='finite_difference' (first-order autograd only, approximate; see "
                "landscape.operators.finite_difference).",
                reason,
            ) from error

    def _double_backward_columns(
        self, run: Evaluation, batch: Any, weight: float, V: list[Tensor], batched: bool
    ) -> tuple[list[Tensor], Tensor]:
        params = run.params
        with torch.enable_grad():
            loss = run.loss(batch, weight)
            grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
        used = [i for i, g in enumerate(grads) if g.requires_grad]
        custom = _custom_functions(loss)
        if any(_once_differentiable(f) for f in custom) or (len(used) < len(grads) and custom):
            # A @once_differentiable backward runs without a graph: on torch 2.13 its
            # second derivatives silently read as zero. Likewise a gradient that depends on
            # no parameter behind a custom Function (rather than a loss linear in it).
            raise RuntimeError("double backward through a custom Function is not implemented")
        k = V[0].shape[0]
        if not used:  # the loss is linear in the selected parameters
            return [torch.zeros_like(v) for v in V], loss.detach()
        outputs = [grads[i] for i in used]
        step = (self.chunk_size or BATCHED_COLUMNS) if batched else 1
        # Copied into one buffer per parameter as they come: autograd's results can be views
        # of large intermediates (42 MB per column of a ResNet-20 measured), which holding
        # them would keep alive.
        out = [torch.empty_like(v) for v in V]
        for start in range(0, k, step):
            stop = min(start + step, k)
            retain = stop < k
            if stop - start == 1:
                part = torch.autograd.grad(
                    outputs,
                    params,
                    grad_outputs=[V[i][start] for i in used],
                    retain_graph=retain,
                    materialize_grads=True,
                )
                for o, p in zip(out, part):
                    o[start].copy_(p)
            else:
                part = torch.autograd.grad(
                    outputs,
                    params,
                    grad_outputs=[V[i][start:stop] for i in used],
                    retain_graph=retain,
                    is_grads_batched=True,
                    materialize_grads=True,
                )
                for o, p in zip(out, part):
                    o[start:stop].copy_(p)
            del part
        return out, loss.detach()


class FiniteDifferenceWarning(UserWarning):
    """Double-backward is impossible through the model: products are central differences."""


class SecondDerivativeError(RuntimeError):
    """Double-backward is impossible through the model (an op has no second derivative)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_NO_SECOND_DERIVATIVE = (
    ("differentiate twice", "a custom autograd.Function marked @once_differentiable"),
    (
        "through a custom Function",
        "a custom autograd.Function whose backward is not differentiable",
    ),
    ("double backward", "an op without double-backward"),
    ("derivative for", "an op whose backward has no derivative"),
)


def _custom_functions(loss: Tensor) -> list[type]:
    """Return the custom ``autograd.Function`` classes in the autograd graph of ``loss``.

    Returns
    -------
    list of type
        Their classes (once each).
    """
    found: dict[type, None] = {}
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            found[node._forward_cls] = None  # type: ignore[attr-defined]
        stack.extend(next_node for next_node, _ in node.next_functions)
    return list(found)


def _once_differentiable(function: type) -> bool:
    # torch.autograd.function.once_differentiable wraps backward in a function of its own
    # module (functools.wraps keeps the name): recognized by where its code lives.
    code = getattr(getattr(function, "backward", None), "__code__", None)
    return code is not None and code.co_filename.endswith(
        ("autograd/function.py", "autograd\\function.py")
    )


def _no_second_derivative(error: RuntimeError) -> str | None:
    """Return why ``error`` means the model has no second derivatives, or ``None``.

    Returns
    -------
    str or None
        A description of the cause.
    """
    text = str(error)
    for marker, reason in _NO_SECOND_DERIVATIVE:
        if marker in text and ("not implemented" in text or marker != "derivative for"):
            return f"double-backward is impossible through this model: {reason}"
    return None


def hessian(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    backend: Backend = "auto",
    chunk_size: int | None = None,
    **options: Any,
) -> HessianOperator:
    r"""Return the Hessian of the mean loss over the data as a linear operator.

    .. math::
        H = \nabla^2_\theta \, \frac{\sum_b w_b L_b(\theta)}{\sum_b w_b}

    with :math:`L_b` the mean loss of batch :math:`b` and :math:`w_b` its weight: its
    samples, or its scored tokens for a language model (so padded batches give the token
    mean a trainer minimizes).

    Parameters
    ----------
    problem : Problem or torch.nn.Module
        A :class:`~landscape.problem.Problem`, or the model (never modified) with ``data``
        and ``loss_fn``.
    data : iterable of batches, or one batch, optional
        With a model: a ``DataLoader``, a list of ``(inputs, targets)`` or dict batches, or
        one batch.
    loss_fn : callable, optional
        With a model: ``loss_fn(outputs, targets) -> scalar mean loss``; default
        cross-entropy for integer targets, MSE for floating targets, ``model(**batch).loss``
        for dict batches.
    backend : str, optional
        How each batch's product is computed (see :class:`HessianOperator`).
    chunk_size : int, optional
        Columns vectorized at once (bounds memory).
    **options
        Options of :class:`~landscape.problem.Problem`: ``batch_loss``, ``count``,
        ``params`` (a parameter subset: its diagonal Hessian block), ``mode`` (eval-mode
        function, or ``"train"``: BatchNorm batch statistics), ``precision``,
        ``max_batches``, ``max_samples``, ``cache``, ``shard``; and ``memory_budget``
        (bytes a product's own buffers may take, see :mod:`landscape.memory`).

    Returns
    -------
    HessianOperator
        ``H @ v``, ``H @ V``, ``H.to_scipy()``, ``H.num_matvecs``, ``H.num_passes``. For a
        model sharded with FSDP2 (``fully_shard``), a
        :class:`~landscape.operators.sharded.ShardedHessianOperator` on each rank's shards
        (finite differences of FSDP's gradients; see :mod:`landscape.operators.sharded`).

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> H = hessian(model, (X, y))
    >>> H.shape
    (67, 67)
    >>> (H @ torch.randn(67, 5)).shape
    torch.Size([67, 5])

    The same from a :class:`~landscape.problem.Problem`, which every function accepts:

    >>> from landscape.problem import Problem
    >>> problem = Problem(model, (X, y))
    >>> torch.allclose(hessian(problem) @ torch.ones(67), H @ torch.ones(67))
    True
    """
    from landscape.operators.sharded import is_sharded, sharded_hessian

    if is_sharded(problem):  # FSDP2: on each rank's shards (landscape.operators.sharded)
        return sharded_hessian(  # type: ignore[return-value]
            problem, data, loss_fn, backend=backend, chunk_size=chunk_size, **options
        )
    return HessianOperator(
        problem, data, loss_fn, backend=backend, chunk_size=chunk_size, **options
    )
