r"""What one batch's loss is, and how much it weighs.

landscape measures the curvature of the **mean** loss over the data,

.. math::
    L(\theta) = \frac{\sum_b w_b\, L_b(\theta)}{\sum_b w_b},

where :math:`L_b` is the mean loss of batch :math:`b` over its :math:`w_b` units: samples
for classification and regression, *scored tokens* for language models. So two padded
batches of a language model give exactly the token mean over all of them, which is what a
trainer minimizes (Hugging Face ``Trainer`` normalizes by ``num_items_in_batch``).

Three ways to say what the loss is, checked in this order:

1. ``batch_loss(model, batch) -> scalar`` for anything unusual (multiple outputs, auxiliary
   losses, custom batch layouts). Batches weigh their sample count unless ``count`` says
   otherwise.
2. ``loss_fn(outputs, targets) -> scalar``, a criterion returning the *mean* over the batch,
   e.g. ``nn.CrossEntropyLoss()`` or one of the criteria below. Criteria with
   ``reduction="sum"`` or ``"none"`` are rejected (a sum-reduced loss scales every curvature
   number by the batch size and makes learning-rate thresholds wrong by that factor).
3. The default: for a dictionary batch (Hugging Face style), the model's own
   ``model(**batch).loss``, the loss the model trains with; otherwise cross-entropy for
   integer class targets and mean squared error for floating targets of the output's shape.

For a Hugging Face model the head's convention is inferred from the model (its
``loss_type`` or class name): causal language models score ``labels[:, 1:] != -100``
(the next token), masked-LM, sequence-to-sequence and token-classification heads score
``labels != -100``, sequence and image classification heads weigh samples and use the
criterion of ``config.problem_type`` (regression: MSE, single-label: cross-entropy,
multi-label: BCE with logits). Curvatures that need outputs and a criterion (Gauss-Newton,
the exact SGD threshold) use that criterion, after checking on the first batch that it
reproduces the model's own loss; per-sample quantities (per-example gradients, the
empirical Fisher) differentiate the model's own loss of each one-sample batch. The criteria
are exported: :class:`CausalLMLoss`, :class:`TokenClassificationLoss`,
:class:`SequenceClassificationLoss`.

Batch formats: ``(inputs, targets)``; ``(x1, ..., xm, targets)`` (the model gets ``m``
positional arguments); a dictionary passed as ``model(**batch)``, whose ``"labels"`` entry
is the target.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.batches import batch_size, select_rows

__all__ = [
    "BatchLoss",
    "CausalLMLoss",
    "Count",
    "Criterion",
    "Objective",
    "SequenceClassificationLoss",
    "Task",
    "TokenClassificationLoss",
    "default_criterion",
    "infer_task",
]

Criterion = Callable[[Any, Tensor], Tensor]
"""``loss_fn(outputs, targets) -> scalar mean loss``."""
BatchLoss = Callable[[nn.Module, Any], Tensor]
"""``batch_loss(model, batch) -> scalar mean loss``."""
Count = Callable[[Any], "int | float | Tensor"]
"""``count(batch) -> number of units the batch's mean loss averages over``."""

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy and Hugging Face models skip


# -- criteria that know their units -----------------------------------------------------------


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


def _has_logits(outputs: Any) -> bool:
    if isinstance(outputs, Mapping):
        return isinstance(outputs.get("logits"), Tensor)
    return isinstance(getattr(outputs, "logits", None), Tensor)


def _at_least_float32(t: Tensor) -> Tensor:
    # Hugging Face heads up-cast half-precision logits before the loss; float64 stays float64.
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class _TokenCrossEntropy:
    """Cross-entropy over the scored positions of ``(batch, length, classes)`` logits.

    ``shift`` positions separate a prediction from its label: 1 for next-token prediction.
    """

    reduction = "mean"
    shift = 0

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index

    def _aligned(self, outputs: Any, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits = _logits(outputs)
        if logits.ndim < 2 or labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"{type(self).__name__} needs logits (batch, ..., classes) and labels of their "
                f"leading shape; got {tuple(logits.shape)} and {tuple(labels.shape)}."
            )
        if self.shift:
            return logits[:, : -self.shift], labels[:, self.shift :]
        return logits, labels

    def __call__(self, outputs: Any, labels: Tensor) -> Tensor:
        """Return the mean cross-entropy over the scored positions.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        logits, target = self._aligned(outputs, labels)
        return F.cross_entropy(
            _at_least_float32(logits).reshape(-1, logits.shape[-1]),
            target.reshape(-1),
            ignore_index=self.ignore_index,
        )

    def count(self, labels: Tensor) -> Tensor:
        """Return the number of scored positions of each sample.

        Returns
        -------
        Tensor
            Shape ``(batch,)``.
        """
        target = labels[:, self.shift :] if self.shift else labels
        return (target != self.ignore_index).reshape(labels.shape[0], -1).sum(1)

    def correct(self, outputs: Any, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Return the number of correct predictions at scored positions, and of those positions.

        Returns
        -------
        tuple of Tensor
            ``(correct, scored)``, 0-dimensional.
        """
        logits, target = self._aligned(outputs, labels)
        scored = target != self.ignore_index
        return ((logits.argmax(-1) == target) & scored).sum(), scored.sum()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ignore_index={self.ignore_index})"


class CausalLMLoss(_TokenCrossEntropy):
    r"""Next-token cross-entropy of a causal language model, the mean over scored tokens.

    .. math::
        L = \frac{1}{|S|} \sum_{(i, t) \in S} -\log \operatorname{softmax}(z_{i,t})_{y_{i,t+1}},
        \qquad S = \{(i, t) : y_{i,t+1} \ne -100\},

    with logits :math:`z` of shape ``(batch, length, vocabulary)`` and labels :math:`y` of
    shape ``(batch, length)``: position :math:`t` predicts token :math:`t+1` (the labels are
    *shifted*, as in Hugging Face ``ForCausalLMLoss``), and labels equal to ``ignore_index``
    (padding, prompts) are not scored. A batch weighs :math:`|S|` tokens. ``ignore_index``
    (default -100) is the label that is not scored.

    Examples
    --------
    >>> loss = CausalLMLoss()
    >>> logits = torch.randn(2, 4, 5)
    >>> labels = torch.tensor([[1, 2, 3, 4], [1, 2, -100, -100]])
    >>> loss.count(labels).tolist()    # three and one scored next tokens
    [3, 1]
    >>> expected = F.cross_entropy(logits[:, :-1].reshape(-1, 5), labels[:, 1:].reshape(-1))
    >>> bool(torch.isclose(loss(logits, labels), expected))
    True
    """

    shift = 1


class TokenClassificationLoss(_TokenCrossEntropy):
    r"""Cross-entropy over every scored position, the mean over scored positions.

    .. math::
        L = \frac{1}{|S|} \sum_{(i, t) \in S} -\log \operatorname{softmax}(z_{i,t})_{y_{i,t}},
        \qquad S = \{(i, t) : y_{i,t} \ne -100\},

    without a shift: the convention of token classification, masked language modelling and
    encoder-decoder (sequence-to-sequence) heads. A batch weighs :math:`|S|` positions, and
    ``ignore_index`` (default -100) marks the positions that are not scored.

    Examples
    --------
    >>> loss = TokenClassificationLoss()
    >>> labels = torch.tensor([[0, 2, -100], [1, -100, -100]])
    >>> loss.count(labels).tolist()
    [2, 1]
    """


class SequenceClassificationLoss:
    r"""The loss of a Hugging Face sequence (or image) classification head, by problem type.

    ``"regression"``: mean squared error (with one label, of the squeezed logits, as
    Hugging Face does); ``"single_label_classification"``: cross-entropy;
    ``"multi_label_classification"``: binary cross-entropy with logits. With
    ``problem_type=None`` the type is inferred from the labels exactly as the models do:
    one label means regression, integer labels single-label, otherwise multi-label. A batch
    weighs its number of samples.

    Parameters
    ----------
    num_labels : int
        ``config.num_labels``.
    problem_type : str, optional
        ``config.problem_type``.

    Raises
    ------
    ValueError
        For an unknown problem type.

    Examples
    --------
    >>> loss = SequenceClassificationLoss(num_labels=3)
    >>> logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    >>> bool(torch.isclose(loss(logits, labels), F.cross_entropy(logits, labels)))
    True
    """

    reduction = "mean"
    _KINDS = ("regression", "single_label_classification", "multi_label_classification")

    def __init__(self, num_labels: int, problem_type: str | None = None) -> None:
        if problem_type is not None and problem_type not in self._KINDS:
            raise ValueError(
                f"problem_type must be one of {self._KINDS} or None; got {problem_type!r}."
            )
        self.num_labels = int(num_labels)
        self.problem_type = problem_type

    def kind(self, labels: Tensor) -> str:
        """Return the problem type, inferred from the labels when not set.

        Returns
        -------
        str
            One of the three problem types.
        """
        if self.problem_type is not None:
            return self.problem_type
        if self.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int):
            return "single_label_classification"
        return "multi_label_classification"

    def __call__(self, outputs: Any, labels: Tensor) -> Tensor:
        """Return the mean loss of the batch.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        logits = _logits(outputs)
        kind = self.kind(labels)
        if kind == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if kind == "single_label_classification":
            return F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def count(self, labels: Tensor) -> Tensor:
        """Return one unit per sample.

        Returns
        -------
        Tensor
            Ones of shape ``(batch,)``.
        """
        return torch.ones(labels.shape[0], dtype=torch.long, device=labels.device)

    def correct(self, outputs: Any, labels: Tensor) -> tuple[Tensor, Tensor] | None:
        """Return correct predictions and samples (multi-label: all labels right), or ``None``.

        Returns
        -------
        tuple of Tensor or None
            ``(correct, samples)``; ``None`` for regression.
        """
        logits = _logits(outputs)
        kind = self.kind(labels)
        n = torch.tensor(labels.shape[0], device=labels.device)
        if kind == "single_label_classification":
            return (logits.reshape(-1, self.num_labels).argmax(-1) == labels.reshape(-1)).sum(), n
        if kind == "multi_label_classification":
            return ((logits > 0) == (labels > 0.5)).reshape(labels.shape[0], -1).all(1).sum(), n
        return None

    def __repr__(self) -> str:
        return (
            f"SequenceClassificationLoss(num_labels={self.num_labels}, "
            f"problem_type={self.problem_type!r})"
        )


def default_criterion(outputs: Any, targets: Tensor) -> Tensor:
    """Cross-entropy for integer targets, mean squared error for floating targets.

    Parameters
    ----------
    outputs : Tensor or object with ``.logits``
        Model outputs (logits for classification).
    targets : Tensor
        Integer class indices of shape ``(B,)``, ``(B, d1, ...)`` (class dimension 1 of the
        outputs) or ``outputs.shape[:-1]`` (class dimension last); or floating targets of
        the outputs' shape.

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


def _argmax_correct(outputs: Any, targets: Any) -> tuple[Tensor, Tensor] | None:
    # Correct argmax predictions and their number, or None when the task is not
    # classification with integer class targets.
    if (
        not isinstance(targets, Tensor)
        or targets.is_floating_point()
        or targets.dtype == torch.bool
    ):
        return None
    try:
        logits = _logits(outputs)
    except TypeError:
        return None
    if logits.ndim >= 2 and targets.shape == logits.shape[:1] + logits.shape[2:]:
        hits = logits.argmax(1) == targets
    elif logits.ndim >= 3 and targets.shape == logits.shape[:-1]:
        hits = logits.argmax(-1) == targets
    else:
        return None
    return hits.sum(), torch.tensor(hits.numel(), device=hits.device)


# -- Hugging Face conventions -------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A model head's loss convention: its name, its criterion and whether to pass counts.

    Attributes
    ----------
    name : str
        ``"causal_lm"``, ``"masked_lm"``, ``"seq2seq_lm"``, ``"token_classification"`` or
        ``"sequence_classification"``.
    criterion : callable
        The criterion that reproduces the head's loss from its logits and labels, with a
        ``count(labels)`` method giving each sample's units.
    num_items : bool
        Whether the model takes ``num_items_in_batch`` (the loss is then normalized by the
        batch's weight, exactly as Hugging Face ``Trainer`` asks).
    """

    name: str
    criterion: Any
    num_items: bool = False


def _accepts_num_items(model: nn.Module) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return any(
        p.name == "num_items_in_batch" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )


def _is_hugging_face(model: nn.Module) -> bool:
    return any(cls.__name__ == "PreTrainedModel" for cls in type(model).__mro__)


def infer_task(model: nn.Module) -> Task | None:
    """Return the loss convention of a Hugging Face model's head, or ``None``.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; only ``transformers`` models (subclasses of ``PreTrainedModel``) have a
        convention, read from ``model.loss_type`` (``transformers`` ≥ 4.46) or the class name.

    Returns
    -------
    Task or None
        The convention, or ``None`` for other models and heads without a known convention.

    Examples
    --------
    >>> infer_task(nn.Linear(2, 2)) is None
    True
    """
    if not _is_hugging_face(model):
        return None
    config = getattr(model, "config", None)
    label = f"{type(model).__name__} {getattr(model, 'loss_type', None) or ''}"
    num_items = _accepts_num_items(model)
    if re.search(r"ForCausalLM|LMHeadModel", label):
        return Task("causal_lm", CausalLMLoss(), num_items)
    if "ForConditionalGeneration" in label:
        if getattr(config, "is_encoder_decoder", False):
            return Task("seq2seq_lm", TokenClassificationLoss(), num_items)
        return Task("causal_lm", CausalLMLoss(), num_items)
    if "ForMaskedLM" in label:
        return Task("masked_lm", TokenClassificationLoss(), num_items)
    if "ForTokenClassification" in label:
        return Task("token_classification", TokenClassificationLoss(), num_items)
    if re.search(r"For(Sequence|Image|Audio|Video)Classification", label) and config is not None:
        criterion = SequenceClassificationLoss(
            getattr(config, "num_labels", 2), getattr(config, "problem_type", None)
        )
        return Task("sequence_classification", criterion, False)
    return None


# -- the objective ------------------------------------------------------------------------------


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


def _model_loss(outputs: Any) -> Tensor | None:
    loss = getattr(outputs, "loss", None)
    if loss is None and isinstance(outputs, Mapping):
        loss = outputs.get("loss")
    return loss if isinstance(loss, Tensor) else None


def _takes_labels(model: nn.Module) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return True
    return "labels" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class Objective:
    """The mean loss of one batch, its weight, the criterion behind it and its accuracy.

    Parameters
    ----------
    loss_fn : callable, optional
        Criterion ``loss_fn(outputs, targets) -> scalar mean``. When the model returns an
        object with ``.logits`` (Hugging Face style), the criterion receives the logits. A
        criterion with a ``count(targets)`` method (the criteria of this module) weighs
        batches by its units.
    batch_loss : callable, optional
        ``batch_loss(model, batch) -> scalar mean``; overrides everything else.
    count : callable, optional
        ``count(batch) -> number of units`` the batch's mean is over (its weight); default:
        the criterion's units, or the number of samples.
    model : torch.nn.Module, optional
        The model, to infer a Hugging Face head's convention (:func:`infer_task`) and
        whether its forward takes ``labels``.

    Raises
    ------
    ValueError
        If both ``loss_fn`` and ``batch_loss`` are given, or if ``loss_fn`` is sum- or
        none-reduced.
    TypeError
        If one of the callables is not callable.

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> batch = (torch.randn(4, 3), torch.tensor([0, 1, 1, 0]))
    >>> objective = Objective(model=model)
    >>> loss = objective.loss(model, batch)
    >>> torch.allclose(loss, F.cross_entropy(model(batch[0]), batch[1]))
    True
    >>> objective.weight(batch)
    4.0
    """

    def __init__(
        self,
        loss_fn: Criterion | None = None,
        batch_loss: BatchLoss | None = None,
        *,
        count: Count | None = None,
        model: nn.Module | None = None,
    ) -> None:
        if loss_fn is not None and batch_loss is not None:
            raise ValueError("pass either loss_fn or batch_loss, not both.")
        for name, fn in (("loss_fn", loss_fn), ("batch_loss", batch_loss), ("count", count)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable; got {type(fn).__name__}.")
        if loss_fn is not None:
            _check_reduction(loss_fn)
        self.loss_fn = loss_fn
        self.batch_loss = batch_loss
        self.count = count
        self.task = infer_task(model) if model is not None and loss_fn is None else None
        self._takes_labels = True if model is None else _takes_labels(model)
        # The model normalizes its loss by our weight only when the weight is its own unit
        # count (not a user's count=), as Hugging Face Trainer does.
        self._passes_num_items = self.task is not None and self.task.num_items and count is None

    # -- what the loss is ---------------------------------------------------------------------
    @property
    def has_criterion(self) -> bool:
        """Whether the loss splits into model outputs and a criterion (needed by Gauss-Newton)."""
        return self.batch_loss is None

    def own_loss(self, batch: Any) -> bool:
        """Whether the loss of ``batch`` is the model's own ``.loss``.

        Returns
        -------
        bool
            ``True`` without ``loss_fn`` or ``batch_loss`` for a dictionary batch (with a
            model that takes its ``labels``), and for an ``(inputs, labels)`` pair given to a
            Hugging Face head: its loss is what it trains with (computed in float32 whatever
            the model's dtype), not landscape's reading of it.
        """
        if self.loss_fn is not None or self.batch_loss is not None:
            return False
        if isinstance(batch, Mapping):
            return "labels" not in batch or self._takes_labels
        pair = isinstance(batch, (list, tuple)) and len(batch) == 2
        return pair and self.task is not None and self._takes_labels

    @staticmethod
    def _own_arguments(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # How the model is called for its own loss: a dict as keywords, a pair as
        # model(inputs, labels=labels).
        if isinstance(batch, Mapping):
            return (), dict(batch)
        return (batch[0],), {"labels": batch[1]}

    @property
    def criterion_name(self) -> str:
        """A description of the criterion behind the loss (for reports and errors)."""
        if self.batch_loss is not None:
            return "batch_loss=" + getattr(
                self.batch_loss, "__name__", type(self.batch_loss).__name__
            )
        if self.loss_fn is not None:
            return getattr(self.loss_fn, "__name__", repr(self.loss_fn))
        if self.task is not None:
            return f"the model's own loss ({self.task.name}: {self.task.criterion!r})"
        return "default (the model's .loss for dict batches; cross-entropy / MSE otherwise)"

    def split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        """Split a batch into positional inputs, keyword inputs and targets.

        Parameters
        ----------
        batch : Any
            One batch: ``(inputs, targets)``, ``(x1, ..., xm, targets)`` or a dict.

        Returns
        -------
        tuple
            ``(args, kwargs, targets)``; the keyword inputs of a dict batch exclude its
            ``"labels"`` (the targets), which are ``None`` when the batch has none.

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

    def forward(
        self, model: nn.Module, batch: Any, weight: Tensor | float | None = None
    ) -> tuple[Tensor, Any]:
        """Return the mean loss of ``model`` on ``batch`` and the model's raw outputs.

        Parameters
        ----------
        model : torch.nn.Module
            The model (possibly reparametrized by :func:`torch.func.functional_call`).
        batch : Any
            One batch.
        weight : Tensor or float, optional
            The batch's weight; passed to Hugging Face language models as
            ``num_items_in_batch``, so their loss is the sum over scored tokens over it.

        Returns
        -------
        tuple
            ``(loss, outputs)``; ``outputs`` is ``None`` for ``batch_loss``.

        Raises
        ------
        TypeError
            If a dict batch yields no ``.loss`` and no criterion applies.
        """
        if self.batch_loss is not None:
            return _check_scalar(self.batch_loss(model, batch)), None
        if self.own_loss(batch):
            args, kwargs = self._own_arguments(batch)
            if weight is not None and "labels" in kwargs and self._passes_num_items:
                kwargs["num_items_in_batch"] = _num_items(weight)
            outputs = model(*args, **kwargs)
            loss = _model_loss(outputs)
            if loss is not None:
                return _check_scalar(loss), outputs
            if "labels" not in kwargs:
                raise TypeError(
                    "the model's output for a dict batch without 'labels' has no .loss; add "
                    "'labels' to the batch or pass loss_fn / batch_loss."
                )
            return self.criterion(outputs, kwargs["labels"]), outputs
        args, kwargs, targets = self.split(batch)
        outputs = model(*args, **kwargs)
        return self.criterion(outputs, targets), outputs

    def loss(self, model: nn.Module, batch: Any, weight: Tensor | float | None = None) -> Tensor:
        """Return the scalar mean loss of ``model`` on ``batch`` (see :meth:`forward`).

        Parameters
        ----------
        model, batch, weight
            As for :meth:`forward`.

        Returns
        -------
        Tensor
            A 0-dimensional tensor.
        """
        return self.forward(model, batch, weight)[0]

    def outputs(self, model: nn.Module, batch: Any) -> Tensor:
        """Return the model's output tensor (logits) on a batch, the input of the criterion.

        Parameters
        ----------
        model, batch
            As for :meth:`forward`.

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
        """Apply the criterion behind the loss to outputs and targets.

        ``loss_fn`` when given; for a Hugging Face head, the criterion of its convention
        (:func:`infer_task`); otherwise :func:`default_criterion`.

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
        if self.task is not None:
            return _check_scalar(self.task.criterion(_logits(outputs), targets))
        return _check_scalar(default_criterion(outputs, targets))

    def check_criterion(self, model: nn.Module, batch: Any) -> None:
        """Check that the inferred criterion reproduces the model's own loss on ``batch``.

        Only the model's own loss (a batch with labels and no ``loss_fn``) needs this:
        the criterion is then landscape's reading of the head, and a head with label
        smoothing, class weights or a custom loss would make it silently different.

        Parameters
        ----------
        model : torch.nn.Module
            The model (in the state it is evaluated in).
        batch : Any
            One batch.

        Raises
        ------
        ValueError
            If the two losses differ; the message names the ``loss_fn`` to pass.
        """
        if not self.own_loss(batch):
            return
        args, kwargs = self._own_arguments(batch)
        if "labels" not in kwargs:
            return
        with torch.no_grad():
            outputs = model(*args, **kwargs)
            own = _model_loss(outputs)
            if own is None:
                return
            try:
                ours = self.criterion(outputs, kwargs["labels"])
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(self._mismatch(model, f"cannot be applied ({error})")) from error
        a, b = float(own), float(ours)
        if not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6):
            raise ValueError(
                self._mismatch(model, f"gives {b:.8g} where the model's loss is {a:.8g}")
            )

    def _mismatch(self, model: nn.Module, what: str) -> str:
        name = type(model).__name__
        guess = self.task.criterion if self.task is not None else "cross-entropy / MSE"
        return (
            f"this curvature needs the loss as model outputs + a criterion; the criterion "
            f"inferred for {name} ({guess!r}) {what} on the first batch. Pass the criterion "
            "the model trains with as loss_fn=(logits, labels) -> mean loss, e.g. "
            "loss_fn=landscape.losses.CausalLMLoss() for a causal language model, "
            "TokenClassificationLoss() or SequenceClassificationLoss(num_labels, problem_type)."
        )

    # -- how much a batch weighs ----------------------------------------------------------------
    def _unit_criterion(self) -> Any:
        if self.batch_loss is not None:
            return None
        if self.loss_fn is not None:
            return self.loss_fn if callable(getattr(self.loss_fn, "count", None)) else None
        return self.task.criterion if self.task is not None else None

    def _targets(self, batch: Any) -> Any:
        if isinstance(batch, Mapping):
            return batch.get("labels")
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            return batch[-1]
        return None

    def sample_weights(self, batch: Any) -> Tensor:
        """Return the units of every sample of ``batch`` (its tokens, or 1).

        Returns
        -------
        Tensor
            Shape ``(batch_size,)``, float64.
        """
        n = batch_size(batch)
        if self.count is not None:
            values = [_check_count(self.count(select_rows(batch, i, n))) for i in range(n)]
            return torch.tensor(values, dtype=torch.float64)
        unit = self._unit_criterion()
        targets = self._targets(batch)
        if unit is not None and isinstance(targets, Tensor):
            return unit.count(targets).to(torch.float64)
        device = targets.device if isinstance(targets, Tensor) else None
        return torch.ones(n, dtype=torch.float64, device=device)

    def weight(self, batch: Any) -> float:
        """Return the number of units the batch's mean loss is over: :math:`w_b`.

        Returns
        -------
        float
            ``count(batch)`` when given, else the sum of :meth:`sample_weights`.
        """
        if self.count is not None:
            return _check_count(self.count(batch))
        unit = self._unit_criterion()
        targets = self._targets(batch)
        if unit is not None and isinstance(targets, Tensor):
            return float(unit.count(targets).sum())
        return float(batch_size(batch))

    @property
    def weighs_samples(self) -> bool:
        """Whether every sample weighs one unit (no tokens, no ``count``)."""
        return self.count is None and self._unit_criterion() is None

    # -- accuracy --------------------------------------------------------------------------------
    def correct(self, outputs: Any, batch: Any) -> tuple[Tensor, Tensor] | None:
        """Return correct predictions and their units on a batch, or ``None``.

        Next-token accuracy over scored tokens for a causal language model, argmax accuracy
        for integer class targets; ``None`` where accuracy is not defined (regression,
        ``batch_loss``).

        Parameters
        ----------
        outputs : Any
            The model's raw outputs on ``batch`` (from :meth:`forward`).
        batch : Any
            The batch.

        Returns
        -------
        tuple of Tensor or None
            ``(correct, units)``, 0-dimensional.
        """
        if outputs is None:
            return None
        targets = self._targets(batch)
        if not isinstance(targets, Tensor):
            return None
        criterion = (
            self.loss_fn
            if self.loss_fn is not None
            else (self.task.criterion if self.task is not None else None)
        )
        method = getattr(criterion, "correct", None)
        if callable(method):
            return method(outputs, targets)
        return _argmax_correct(outputs, targets)

    def can_pad(self, batch: Any) -> bool:
        """Whether right-padding this dict batch to a longer sequence changes no loss term.

        True when padded positions are masked (an ``attention_mask`` entry) or never seen
        by earlier positions (a causal language model), and are not scored (labels -100).

        Returns
        -------
        bool
            Whether :func:`landscape.batches.concatenate` may pad it.
        """
        if not isinstance(batch, Mapping) or self.batch_loss is not None:
            return False
        causal = self.task is not None and self.task.name == "causal_lm"
        return "attention_mask" in batch or causal


def _num_items(weight: Tensor | float) -> Tensor | int:
    # Hugging Face losses divide a float32 sum by it: an integer keeps the loss's dtype.
    if isinstance(weight, Tensor):
        return weight.round().long()
    return round(weight)


def _check_count(value: Any) -> float:
    count = float(value)
    if not (count >= 0 and math.isfinite(count)):
        raise ValueError(f"count(batch) must return a non-negative number of units; got {value!r}.")
    return count
