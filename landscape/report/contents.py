"""The records a report holds beside the algorithms' own results.

``analyze`` stores each stage's result record as it comes (:class:`~landscape.Eigenpairs`,
:class:`~landscape.Estimate`, :class:`~landscape.SpectralDensity`, ...); these records
gather what a stage makes of several: the loss and accuracy, the top and bottom
eigenpairs, the learning-rate results per optimizer, the cost of a stage, the path between
two models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from landscape.linalg.results import Eigenpairs
from landscape.metrics.learning_rate import LearningRateResult
from landscape.records import Record
from landscape.surfaces.grid import Surface

__all__ = ["ExtremeEigenvalues", "Interpolation", "LearningRates", "LossValue", "StageCost"]


@dataclass(frozen=True)
class LossValue(Record):
    r"""The mean loss and accuracy at the model's parameters.

    Attributes
    ----------
    value : float
        :math:`L(\theta) = \sum_b w_b L_b / \sum_b w_b` (see :mod:`landscape.losses`).
    accuracy : float or None
        Classification accuracy over the same units (``None`` for other tasks).
    num_classes : int or None
        Classes of a classifier (the width of its output), when known.
    """

    value: float
    accuracy: float | None = None
    num_classes: int | None = None


@dataclass(frozen=True)
class ExtremeEigenvalues(Record):
    """The largest and smallest Hessian eigenvalues with their residuals (no vectors).

    Attributes
    ----------
    top : Eigenpairs or None
        The largest, in descending order.
    bottom : Eigenpairs or None
        The smallest, in ascending order.
    tol : float or None
        The tolerance they were asked for (relative to ``||H||``).
    """

    top: Eigenpairs | None = None
    bottom: Eigenpairs | None = None
    tol: float | None = None

    @property
    def lambda_max(self) -> float | None:
        """The largest eigenvalue found."""
        return _extreme(self.top, largest=True)

    @property
    def lambda_min(self) -> float | None:
        """The smallest eigenvalue found."""
        return _extreme(self.bottom, largest=False)

    @property
    def num_matvecs(self) -> int:
        """Hessian products of both runs."""
        return sum(p.num_matvecs for p in (self.top, self.bottom) if p is not None)

    @property
    def num_passes(self) -> int:
        """Passes over the data of both runs."""
        return sum(p.num_passes for p in (self.top, self.bottom) if p is not None)


def _extreme(pairs: Eigenpairs | None, largest: bool) -> float | None:
    if pairs is None or pairs.values.numel() == 0:
        return None
    values = pairs.values.double()
    finite = values[values.isfinite()]
    if finite.numel() == 0:
        return float(values[0])
    return float(finite.max() if largest else finite.min())


@dataclass(frozen=True)
class StageCost(Record):
    """What one stage of an analysis cost.

    Attributes
    ----------
    num_matvecs : int
        Hessian-vector products.
    passes : int
        Passes over the data (or over its mini-batches, counted as passes).
    seconds : float
        Wall-clock time.
    resumed : bool
        Whether the stage's result was read back from an earlier, interrupted run's file
        (its cost is that run's).
    """

    _renamed: ClassVar[dict[str, str]] = {"hvps": "num_matvecs"}

    num_matvecs: int = 0
    passes: int = 0
    seconds: float = 0.0
    resumed: bool = False


@dataclass(frozen=True)
class LearningRates(Record):
    """The largest stable learning rates, per optimizer, at the batch sizes analyzed.

    Attributes
    ----------
    results : dict of str to LearningRateResult
        One result per optimizer (``"sgd"``, ``"adam"``, and the user's own optimizer under
        its kind, e.g. ``"momentum"``).
    loader_batch_size : int or None
        The batch size the user's loader trains with.
    optimizer_kind : str or None
        The kind of the user's optimizer (its result is ``results[optimizer_kind]``), when
        one was given.
    """

    results: dict[str, LearningRateResult] = field(default_factory=dict)
    loader_batch_size: int | None = None
    optimizer_kind: str | None = None

    @property
    def own(self) -> LearningRateResult | None:
        """The result for the user's optimizer, when one was given."""
        return self.results.get(self.optimizer_kind) if self.optimizer_kind else None

    def ordered(self) -> list[tuple[str, LearningRateResult]]:
        """Return the results with the user's optimizer first.

        Returns
        -------
        list of (str, LearningRateResult)
            The user's optimizer's result, then the others in their order.
        """
        items = list(self.results.items())
        return sorted(items, key=lambda item: item[0] != self.optimizer_kind)


@dataclass(frozen=True)
class Interpolation(Record):
    r"""The loss along the straight line between two models.

    Attributes
    ----------
    pair : tuple of str
        The two models' names, ``t = 0`` first.
    path : Surface
        The loss (and accuracy) at :math:`(1-t)\theta_A + t\theta_B`.
    """

    pair: tuple[str, str]
    path: Surface

    @property
    def barrier(self) -> float:
        """The loss barrier (:meth:`landscape.Surface.barrier`)."""
        return self.path.barrier()
