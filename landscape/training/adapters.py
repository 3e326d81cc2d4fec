"""Callbacks that run a :class:`~landscape.training.tracker.SharpnessTracker` inside frameworks.

* :class:`LightningSharpnessCallback`: a PyTorch Lightning ``Callback`` (``lightning`` or
  ``pytorch_lightning``) that calls ``tracker.step`` after every optimizer step.
* :class:`HFSharpnessCallback`: a Hugging Face ``transformers.TrainerCallback`` doing the same
  from ``on_step_end``.

The frameworks are optional: they are imported only when an adapter is instantiated, so
``landscape`` imports without them. An instance *is* an instance of the framework's callback
class (the adapter class is combined with it on first use), as the trainers require.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from landscape.training.tracker import SharpnessTracker

__all__ = ["HFSharpnessCallback", "LightningSharpnessCallback"]

_BOUND: dict[tuple[type, type], type] = {}


def _bind(cls: type, base: type) -> type:
    """Return (and cache) the subclass of both the adapter ``cls`` and the framework ``base``.

    Returns
    -------
    type
        ``type(cls.__name__, (cls, base), ...)``.
    """
    key = (cls, base)
    if key not in _BOUND:
        _BOUND[key] = type(
            cls.__name__,
            (cls, base),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "_bound": True},
        )
    return _BOUND[key]


def _lightning_callback_class(package: str | None) -> type:
    """Import and return Lightning's ``Callback`` class.

    Returns
    -------
    type
        ``lightning.pytorch.Callback`` or ``pytorch_lightning.Callback``.

    Raises
    ------
    ValueError
        For an unknown ``package``.
    ImportError
        If neither package is installed.
    """
    if package not in (None, "lightning", "pytorch_lightning"):
        raise ValueError(f"package must be 'lightning' or 'pytorch_lightning'; got {package!r}.")
    if package is None:
        # Match the package the user's Trainer comes from when only one is already imported.
        old_only = "pytorch_lightning" in sys.modules and "lightning" not in sys.modules
        order = (
            ["pytorch_lightning", "lightning"] if old_only else ["lightning", "pytorch_lightning"]
        )
    else:
        order = [package]
    for name in order:
        try:
            if name == "lightning":
                from lightning.pytorch import Callback
            else:
                from pytorch_lightning import Callback
        except ImportError:
            continue
        return Callback
    raise ImportError(
        "LightningSharpnessCallback needs PyTorch Lightning: pip install lightning "
        "(or pip install pytorch-lightning)."
    )


def _transformers_callback_class() -> type:
    """Import and return ``transformers.TrainerCallback``.

    Returns
    -------
    type
        The callback base class.

    Raises
    ------
    ImportError
        If ``transformers`` is not installed.
    """
    try:
        from transformers import TrainerCallback
    except ImportError as error:
        raise ImportError(
            "HFSharpnessCallback needs Hugging Face Transformers: pip install transformers."
        ) from error
    return TrainerCallback


def _restore(cls: type, base: type, state: dict[str, Any]) -> Any:
    """Rebuild a pickled adapter (its class is created at run time).

    Returns
    -------
    Any
        The adapter.
    """
    obj = object.__new__(_bind(cls, base))
    obj.__dict__.update(state)
    return obj


class _Adapter:
    """Shared machinery: late binding to the framework's base class, and pickling."""

    _bound = False

    @staticmethod
    def _framework_base(**kwargs: Any) -> type:  # pragma: no cover - overridden
        raise NotImplementedError

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._bound:
            return super().__new__(cls)
        base = cls._framework_base(**kwargs)
        return super().__new__(_bind(cls, base))

    def __reduce__(self) -> tuple[Any, ...]:
        adapter, base = type(self).__bases__
        return (_restore, (adapter, base, dict(self.__dict__)))


class LightningSharpnessCallback(_Adapter):
    """A PyTorch Lightning callback that measures sharpness after optimizer steps.

    Calls ``tracker.step(optimizer, loss=..., step=trainer.global_step)`` from
    ``on_train_batch_end`` whenever an optimizer step has happened since the last call (so
    gradient accumulation is respected), with the trainer's optimizer (Lightning's
    ``LightningOptimizer`` wrappers, if any, are unwrapped by the tracker). Measurements land in
    ``tracker.history``; with ``log=True`` they are also logged through ``pl_module.log_dict``
    (``sharpness``, ``sharpness_threshold``, ``sharpness_ratio`` and, where measured,
    ``preconditioned_sharpness`` or ``critical_sharpness``).

    Parameters
    ----------
    tracker : SharpnessTracker
        The tracker (built on the module being trained and a fixed measurement set).
    optimizer_index : int, optional
        Which of ``trainer.optimizers`` to read.
    log : bool, optional
        Log the measurements with ``pl_module.log_dict``.
    package : {"lightning", "pytorch_lightning"}, optional
        Which Lightning package the Trainer comes from (default: ``lightning`` if installed,
        else ``pytorch_lightning``; ``pytorch_lightning`` when only it has been imported).

    Raises
    ------
    ImportError
        If PyTorch Lightning is not installed (``pip install lightning``).
    TypeError
        If ``tracker`` is not a :class:`SharpnessTracker`.

    Examples
    --------
    >>> callback = LightningSharpnessCallback(tracker)               # doctest: +SKIP
    >>> trainer = lightning.Trainer(callbacks=[callback])             # doctest: +SKIP
    """

    @staticmethod
    def _framework_base(**kwargs: Any) -> type:
        return _lightning_callback_class(kwargs.get("package"))

    def __init__(
        self,
        tracker: SharpnessTracker,
        *,
        optimizer_index: int = 0,
        log: bool = True,
        package: str | None = None,
    ) -> None:
        if not isinstance(tracker, SharpnessTracker):
            raise TypeError(f"tracker must be a SharpnessTracker; got {type(tracker).__name__}.")
        super().__init__()
        self.tracker = tracker
        self.optimizer_index = optimizer_index
        self.log = log
        self.package = package
        self.last_record: dict[str, Any] | None = None
        self._last_step: int | None = None

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Step the tracker if the optimizer stepped (Lightning hook)."""
        step = int(trainer.global_step)
        if step == self._last_step or step == 0:
            return  # no optimizer step since the last call (accumulation, or a skipped step)
        self._last_step = step
        optimizers = trainer.optimizers
        if not optimizers:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        record = self.tracker.step(optimizers[self.optimizer_index], loss=loss, step=step)
        if record is not None:
            self.last_record = record
        if record is not None and self.log and hasattr(pl_module, "log_dict"):
            values = {
                "sharpness": record["sharpness"],
                "sharpness_threshold": record["threshold"],
                "sharpness_ratio": record["ratio"],
            }
            for key in ("preconditioned_sharpness", "critical_sharpness"):
                if record[key] == record[key]:  # measured (not nan)
                    values[key] = record[key]
            pl_module.log_dict(values, on_step=True, on_epoch=False)


class HFSharpnessCallback(_Adapter):
    """A Hugging Face ``TrainerCallback`` that measures sharpness after optimizer steps.

    Calls ``tracker.step(kwargs["optimizer"], step=state.global_step)`` from ``on_step_end``
    (after the optimizer and scheduler steps). The ``Trainer`` passes Accelerate's
    ``AcceleratedOptimizer``; the tracker reads the torch optimizer inside it (see
    :func:`~landscape.metrics.thresholds.unwrap_optimizer`).
    Measurements land in ``tracker.history``; with ``log=True`` they are also appended to
    ``state.log_history``.

    Parameters
    ----------
    tracker : SharpnessTracker
        The tracker (built on the model being trained and a fixed measurement set).
    log : bool, optional
        Append ``{"step", "sharpness", "sharpness_threshold", "sharpness_ratio"}`` records to
        ``state.log_history``.

    Raises
    ------
    ImportError
        If ``transformers`` is not installed (``pip install transformers``).
    TypeError
        If ``tracker`` is not a :class:`SharpnessTracker`.

    Examples
    --------
    >>> trainer = transformers.Trainer(model, args, train_dataset=train,
    ...                                callbacks=[HFSharpnessCallback(tracker)])  # doctest: +SKIP
    """

    @staticmethod
    def _framework_base(**kwargs: Any) -> type:
        return _transformers_callback_class()

    def __init__(self, tracker: SharpnessTracker, *, log: bool = True) -> None:
        if not isinstance(tracker, SharpnessTracker):
            raise TypeError(f"tracker must be a SharpnessTracker; got {type(tracker).__name__}.")
        super().__init__()
        self.tracker = tracker
        self.log = log
        self.last_record: dict[str, Any] | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Step the tracker with the trainer's optimizer (transformers hook)."""
        optimizer = kwargs.get("optimizer")
        if optimizer is None:
            return
        step = int(state.global_step)
        record = self.tracker.step(optimizer, step=step)
        if record is not None:
            self.last_record = record
        if record is not None and self.log and hasattr(state, "log_history"):
            state.log_history.append(
                {
                    "step": step,
                    "sharpness": record["sharpness"],
                    "sharpness_threshold": record["threshold"],
                    "sharpness_ratio": record["ratio"],
                }
            )
