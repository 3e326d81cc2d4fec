"""How a batch becomes a scalar loss: batch formats, default criteria, and their checks.

landscape always measures the curvature of the **mean** loss over samples. Three ways to say
what the loss is, checked in this order:

1. ``batch_loss(model, batch) -> scalar`` for anything unusual (multiple outputs, auxiliary
   losses, custom batch layouts).
2. ``loss_fn(outputs, targets) -> scalar`` a criterion returning the *mean* over the batch,
   e.g. ``nn.CrossEntropyLoss()``. Criteria with ``reduction="sum"`` or ``"none"`` are
   rejected (a sum-reduced loss scales every curvature number by the batch size and makes
   learning-rate thresholds wrong by that factor).
3. The default: cross-entropy for integer class targets, mean squared error for floating
   targets of the output's shape, and ``model(**batch).loss`` for dictionary batches
   (Hugging Face style) without a ``loss_fn``.

Batch formats: ``(inputs, targets)``; ``(x1, ..., xm, targets)`` (the model gets ``m``
positional arguments); a dictionary passed as ``model(**batch)``, whose ``"labels"`` entry
is the target when a ``loss_fn`` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BatchLoss", "Criterion", "Objective", "batch_size", "map_tensors"]

Criterion = Callable[[Any, Tensor], Tensor]
"""``loss_fn(outputs, targets) -> scalar mean loss``."""
BatchLoss = Callable[[nn.Module, Any], Tensor]
"""``batch_loss(model, batch) -> scalar mean loss``."""


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples, lists and dicts.

    Parameters
    ----------
    obj : Any
        A tensor, or a (nested) tuple/list/dict containing tensors.
    fn : callable
        Applied to each tensor.

    Returns
    -------
    Any
        The same structure with ``fn`` applied; non-tensor leaves are returned unchanged.
    """
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return type(obj)({k: map_tensors(v, fn) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    values = (
        obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (list, tuple)) else ()
    )
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def batch_size(batch: Any) -> int:
    """Return the number of samples in a batch (the length of its targets' first dimension).

    Parameters
    ----------
    batch : Any
        ``(inputs, targets)``, ``(x1, ..., targets)``, a dict (``"labels"`` preferred) or any
        nest of tensors.

    Returns
    -------
    int
        Size of the first dimension of the targets (or of the first tensor found).

    Raises
    ------
    TypeError
        If the batch holds no tensor with a batch dimension.

    Examples
    --------
    >>> batch_size((torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)))
    5
    >>> batch_size({"input_ids": torch.zeros(2, 7), "labels": torch.zeros(2, 7)})
    2
    """
    if isinstance(batch, (list, tuple)) and len(batch) >= 2 and isinstance(batch[-1], Tensor):
        candidate: Tensor | None = batch[-1]
    elif isinstance(batch, Mapping) and isinstance(batch.get("labels"), Tensor):
        candidate = batch["labels"]
    else:
        candidate = _first_tensor(batch)
    if candidate is None or candidate.ndim == 0:
        raise TypeError(
            f"cannot find the batch dimension of a batch of type {type(batch).__name__}: "
            "expected (inputs, targets), a dict of tensors, or tensors with a leading batch "
            "dimension."
        )
    return int(candidate.shape[0])


def _check_reduction(loss_fn: Any) -> None:
    reduction = getattr(loss_fn, "reduction", None)
    if reduction in ("sum", "none"):
        raise ValueError(
            f"loss_fn has reduction={reduction!r}; landscape measures the curvature of the MEAN "
            "loss and needs a criterion that returns the batch mean. Use "
            f"{type(loss_fn).__name__}(reduction='mean'), or pass batch_loss=... that returns a "
            "mean. "
            "(A sum-reduced loss would scale every eigenvalue by the batch size and make "
            "learning-rate thresholds wrong by that factor.)"
        )


def default_criterion(outputs: Any, targets: Tensor) -> Tensor:
    """Cross-entropy for integer targets, mean squared error for floating targets.

    Parameters
    ----------
    outputs : Tensor or object with ``.logits``
        Model outputs (logits for classification).
    targets : Tensor
        Integer class indices of shape ``(B,)``, ``(B, d1, ...)`` (class dimension 1 of the
        outputs) or ``outputs.shape[:-1]`` (class dimension last, as in sequence models); or
        floating targets of the outputs' shape.

    Returns
    -------
    Tensor
        The scalar mean loss.

    Raises
    ------
    ValueError
        If no default applies; the message says how to pass ``loss_fn``.
    """
    logits = _logits(outputs)
    if not targets.is_floating_point() and targets.dtype != torch.bool:
        if logits.ndim >= 2 and targets.shape == logits.shape[:1] + logits.shape[2:]:
            return F.cross_entropy(logits, targets)
        if logits.ndim >= 3 and targets.shape == logits.shape[:-1]:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    elif targets.is_floating_point() and targets.shape == logits.shape:
        return F.mse_loss(logits, targets)
    raise ValueError(
        f"no default loss for outputs of shape {tuple(logits.shape)} and targets of shape "
        f"{tuple(targets.shape)} and dtype {targets.dtype}: the default is cross-entropy for "
        "integer class targets and mean squared error for floating targets of the outputs' "
        "shape. Pass loss_fn=(outputs, targets) -> mean loss, e.g. loss_fn=nn.MSELoss(), or "
        "batch_loss=(model, batch) -> mean loss."
    )


def _has_logits(outputs: Any) -> bool:
    if isinstance(outputs, Mapping):
        return isinstance(outputs.get("logits"), Tensor)
    return isinstance(getattr(outputs, "logits", None), Tensor)


def _logits(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"model returned {type(outputs).__name__}, not a tensor nor an object with .logits; "
            "pass batch_loss=(model, batch) -> mean loss."
        )
    return logits


class Objective:
    """The per-batch mean loss, assembled from ``loss_fn`` or ``batch_loss`` and the batch format.

    Parameters
    ----------
    loss_fn : callable, optional
        Criterion ``loss_fn(outputs, targets) -> scalar mean``. When the model returns an
        object with ``.logits`` (Hugging Face style), the criterion receives the logits.
    batch_loss : callable, optional
        ``batch_loss(model, batch) -> scalar mean``; overrides everything else.

    Raises
    ------
    ValueError
        If both are given, or if ``loss_fn`` is sum- or none-reduced.
    TypeError
        If either is not callable.

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> batch = (torch.randn(4, 3), torch.tensor([0, 1, 1, 0]))
    >>> loss = Objective().loss(model, batch)
    >>> torch.allclose(loss, F.cross_entropy(model(batch[0]), batch[1]))
    True
    """

    def __init__(self, loss_fn: Criterion | None = None, batch_loss: BatchLoss | None = None):
        if loss_fn is not None and batch_loss is not None:
            raise ValueError("pass either loss_fn or batch_loss, not both.")
        for name, fn in (("loss_fn", loss_fn), ("batch_loss", batch_loss)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable; got {type(fn).__name__}.")
        if loss_fn is not None:
            _check_reduction(loss_fn)
        self.loss_fn = loss_fn
        self.batch_loss = batch_loss

    @property
    def has_criterion(self) -> bool:
        """Whether the loss splits into model outputs and a criterion (needed by Gauss-Newton)."""
        return self.batch_loss is None

    def split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        """Split a batch into positional inputs, keyword inputs and targets.

        Parameters
        ----------
        batch : Any
            One batch: ``(inputs, targets)``, ``(x1, ..., xm, targets)`` or a dict.

        Returns
        -------
        tuple
            ``(args, kwargs, targets)``; ``targets`` is ``None`` for a dict batch without
            ``"labels"`` (the model is then expected to return its own ``.loss``).

        Raises
        ------
        TypeError
            If the batch format is not understood.
        """
        if isinstance(batch, Mapping):
            if "labels" not in batch:
                if self.loss_fn is not None:
                    raise TypeError(
                        f"dict batch with keys {sorted(batch)} has no 'labels' entry for loss_fn; "
                        "add one, or pass batch_loss=(model, batch) -> mean loss."
                    )
                return (), dict(batch), None
            return (), {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            return tuple(batch[:-1]), {}, batch[-1]
        raise TypeError(
            f"cannot split a batch of type {type(batch).__name__} into (inputs, targets): "
            "expected an (inputs, targets) tuple or a dict. Pass batch_loss=(model, batch) -> "
            "mean loss to handle this format."
        )

    def outputs(self, model: nn.Module, batch: Any) -> Tensor:
        """Return the model's output tensor (logits) on a batch, for Gauss-Newton products.

        Parameters
        ----------
        model : torch.nn.Module
            The model (possibly reparametrized by :func:`torch.func.functional_call`).
        batch : Any
            One batch.

        Returns
        -------
        Tensor
            The outputs, or their ``.logits`` when the model returns an object.

        Raises
        ------
        TypeError
            If the loss is given as ``batch_loss`` (it does not split into outputs and a
            criterion).
        """
        if self.batch_loss is not None:
            raise TypeError(
                "this curvature needs the loss as outputs + criterion (loss_fn), but a "
                "batch_loss was given; pass loss_fn=(outputs, targets) -> mean loss instead."
            )
        args, kwargs, _ = self.split(batch)
        return _logits(model(*args, **kwargs))

    def criterion(self, outputs: Any, targets: Any) -> Tensor:
        """Apply ``loss_fn`` (or the default criterion) to outputs and targets.

        Parameters
        ----------
        outputs : Any
            Model outputs.
        targets : Any
            Targets.

        Returns
        -------
        Tensor
            The loss, checked to be a scalar.
        """
        if self.loss_fn is not None:
            if not isinstance(outputs, Tensor) and _has_logits(outputs):
                outputs = _logits(outputs)  # Hugging Face style output object
            return _check_scalar(self.loss_fn(outputs, targets))
        return _check_scalar(default_criterion(outputs, targets))

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """Return the scalar mean loss of ``model`` on ``batch``.

        Parameters
        ----------
        model : torch.nn.Module
            The model (possibly reparametrized by :func:`torch.func.functional_call`).
        batch : Any
            One batch.

        Returns
        -------
        Tensor
            A 0-dimensional tensor.

        Raises
        ------
        TypeError
            If a dict batch without labels yields no ``.loss``.
        """
        if self.batch_loss is not None:
            return _check_scalar(self.batch_loss(model, batch))
        args, kwargs, targets = self.split(batch)
        outputs = model(*args, **kwargs)
        if targets is None:
            loss = getattr(outputs, "loss", None)
            if loss is None and isinstance(outputs, Mapping):
                loss = outputs.get("loss")
            if not isinstance(loss, Tensor):
                raise TypeError(
                    "the model's output for a dict batch without 'labels' has no .loss; add "
                    "'labels' to the batch or pass loss_fn / batch_loss."
                )
            return _check_scalar(loss)
        return self.criterion(outputs, targets)


def _check_scalar(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"the loss must be a tensor; got {type(loss).__name__}.")
    if loss.ndim != 0:
        raise ValueError(
            "the loss must be a scalar (the batch mean); got a tensor of shape "
            f"{tuple(loss.shape)}. "
            "Did you pass a criterion with reduction='none'?"
        )
    return loss
