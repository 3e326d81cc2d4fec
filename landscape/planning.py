r"""Planning ``analyze`` by time: measure what one product costs, the plan a report keeps.

``analyze(model, data, time_budget=seconds)`` (and :func:`landscape.plan`) first measures, on
the model and its data, the unit costs every stage is made of (:func:`measure_costs`): one
Hessian product over the curvature samples, a vector in a block of eight, a no-grad forward
pass and a gradient per sample, a per-example gradient. Each stage's cost is then a count of
those units, read off its settings by the stage's own declaration
(:func:`landscape.stages.stage_costs`; the counts of Lanczos products are typical values, the
rest are exact). If the budget's settings do not fit, :func:`landscape.stages.fit` scales them
down — first the samples the curvature stages use, then the density's probes and steps, the
surfaces' grids and the learning-rate sweep — until the prediction fits, and records what it
changed in a :class:`Plan`: per stage the predicted and the measured seconds.

The prediction is a model, not a promise: Lanczos stops when it converges, and the first
product of a kind of block also measures the backends (:mod:`landscape.operators._backends`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from landscape.batches import select_rows
from landscape.linalg.trace import PROBE_VECTORS
from landscape.memory import MemoryBudget, vector_bytes
from landscape.metrics._per_example import outputs_per_sample
from landscape.metrics.learning_rate import _GRAM_ROWS
from landscape.metrics.mean_square import sandwich_seconds
from landscape.operators.hessian import hessian
from landscape.operators.per_example import per_example_gradients
from landscape.problem import Problem
from landscape.records import Record

__all__ = ["Plan", "UnitCosts", "measure_costs"]

_MIN_SAMPLES = 64  # the smallest curvature sample the planner shrinks to


@dataclass(frozen=True)
class UnitCosts(Record):
    """Measured seconds of the units every stage is made of.

    Attributes
    ----------
    single : float
        One Hessian product over the curvature samples.
    block_vector : float
        One vector in a block of eight, over the curvature samples.
    forward_sample : float
        A no-grad forward pass, per sample.
    gradient_sample : float
        A gradient of the mean loss, per sample (batched).
    per_example_sample : float
        A per-example gradient, per sample (vectorized, or the exact loop).
    curvature_samples : int
        The samples the products were measured on.
    num_samples : int
        Samples in the data.
    seconds : float
        What measuring cost.
    product_overhead : float
        Seconds of a Hessian product that do not scale with the samples (Python, autograd
        graph set-up, the backend's bookkeeping): a product over ``n`` samples costs
        ``product_overhead + (single - product_overhead) * n / curvature_samples``.
    pass_overhead : float
        The same for a gradient pass: ``pass_overhead + gradient_sample * n``.
    block_overhead : float
        The same for a vector in a block of eight.
    forward_overhead : float
        The same for a forward pass: ``forward_overhead + forward_sample * n``.
    mean_square_product : float
        One product of the exact mean-square threshold's operator at this model's sizes
        (:func:`landscape.metrics.mean_square.sandwich_seconds`); 0 where the threshold is
        not computed (a model's own loss, too many outputs per sample).
    num_params : int
        Parameters the products act on (``P``).
    vector_bytes : int
        Bytes of one vector of them in the products' dtype: what the stages' memory is
        counted in (:attr:`landscape.stages.Stage.vectors`).
    """

    single: float
    block_vector: float
    forward_sample: float
    gradient_sample: float
    per_example_sample: float
    curvature_samples: int
    num_samples: int
    seconds: float
    product_overhead: float = 0.0
    pass_overhead: float = 0.0
    block_overhead: float = 0.0
    forward_overhead: float = 0.0
    mean_square_product: float = 0.0
    num_params: int = 0
    vector_bytes: int = 0

    def scale(self, unit: Literal["product", "block"], n: int) -> float:
        """Return the cost of a product (or a block vector) over ``n`` samples, relative.

        A product is a fixed part (``product_overhead``: Python, autograd's graph set-up)
        plus its share of the samples: relative to the measured one, ``(overhead + (single
        - overhead) * n / curvature_samples) / single`` (``block_overhead`` and
        ``block_vector`` for a vector in a block).

        Parameters
        ----------
        unit : {"product", "block"}
            One Hessian product, or a vector in a block of eight.
        n : int
            Samples.

        Returns
        -------
        float
            The cost relative to the measured one.

        Examples
        --------
        >>> UnitCosts(2.0, 1.0, 0, 0, 0, 100, 100, 0.0, product_overhead=0.5).scale("product", 50)
        0.625
        """
        overhead, cost = (
            (self.product_overhead, self.single)
            if unit == "product"
            else (self.block_overhead, self.block_vector)
        )
        if cost <= 0:
            return n / max(self.curvature_samples, 1)
        share = min(max(overhead / cost, 0.0), 1.0)
        return share + (1.0 - share) * n / max(self.curvature_samples, 1)

    def seconds_of(self, unit: Literal["forward", "gradient"], n: int) -> float:
        """Return the seconds of one no-grad forward pass (or gradient pass) over ``n`` samples.

        Parameters
        ----------
        unit : {"forward", "gradient"}
            The pass.
        n : int
            Samples.

        Returns
        -------
        float
            ``forward_overhead + forward_sample * n`` (``pass_overhead + gradient_sample * n``).
        """
        if unit == "forward":
            return self.forward_overhead + self.forward_sample * n
        return self.pass_overhead + self.gradient_sample * n


@dataclass
class Plan(Record):
    """What ``analyze`` will run within a time budget, and how long each stage should take.

    Attributes
    ----------
    budget : str
        The budget the settings were taken from.
    time_budget : float
        Seconds allowed.
    settings : dict
        The settings that run (after scaling).
    scaled : dict
        ``{setting: [from, to]}`` for every setting changed to fit.
    predicted : dict
        Predicted seconds per stage.
    units : UnitCosts
        The measured unit costs.
    measured : dict
        Measured seconds per stage, once run.
    dropped : dict
        ``{stage: reason}`` for the stages left out: over the memory budget at their
        smallest, or not fitting the time budget with their settings at the floors
        (:func:`landscape.stages.drop_stages`).
    """

    budget: str
    time_budget: float
    settings: dict[str, Any]
    scaled: dict[str, list[Any]]
    predicted: dict[str, float]
    units: UnitCosts
    measured: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Predicted seconds of all stages, plus the measurement already spent."""
        return sum(self.predicted.values()) + self.units.seconds

    def __str__(self) -> str:
        return self.table()

    def table(self) -> str:
        """Return the plan as plain text: scaled settings, then predicted (and measured) times.

        Returns
        -------
        str
            The table.
        """
        lines = [
            f"plan for {self.time_budget:.0f} s (budget {self.budget!r}; measuring took "
            f"{self.units.seconds:.1f} s): predicted {self.total:.1f} s"
        ]
        for name, (before, after) in self.scaled.items():
            lines.append(f"  scaled {name}: {before} -> {after}")
        if not self.scaled:
            lines.append("  the budget's settings fit as they are")
        for name, reason in self.dropped.items():
            lines.append(f"  not run {name}: {reason}")
        head = f"  {'stage':<15}{'predicted s':>12}"
        lines.append(head + (f"{'measured s':>12}{'ratio':>8}" if self.measured else ""))
        for name, seconds in self.predicted.items():
            row = f"  {name:<15}{seconds:>12.2f}"
            if name in self.measured:
                actual = self.measured[name]
                row += f"{actual:>12.2f}{actual / seconds if seconds > 0 else math.nan:>8.2f}"
            lines.append(row)
        return "\n".join(lines)


#: A unit whose warm-up call took longer than this is timed once, not ``repeats`` times:
#: the measurement should stay a small share of the budget it plans (on GPT-2 small a
#: product takes seconds, and its timing noise is a few percent).
_SLOW_CALL = 1.0


def _seconds(fn: Callable[[], object], repeats: int = 2) -> float:
    start = time.perf_counter()
    fn()  # warm-up: first-call costs, the backend measurement
    if time.perf_counter() - start > _SLOW_CALL:
        repeats = 1
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_costs(
    problem: Problem,
    curvature_samples: int | None,
    backend: str = "auto",
    exact_samples: int = 0,
) -> UnitCosts:
    """Measure the unit costs of :class:`UnitCosts` on a problem (model, data, loss).

    Parameters
    ----------
    problem : Problem
        The model and its data; the model is never modified.
    curvature_samples : int or None
        Samples the curvature stages use.
    backend : str, optional
        The Hessian backend.
    exact_samples : int, optional
        Examples of the exact mean-square threshold (0: not computed).

    Returns
    -------
    UnitCosts
        The costs.
    """
    start = time.perf_counter()
    problem = problem.with_data(shard=False)
    H = hessian(problem.with_data(max_samples=curvature_samples), backend=backend)
    P = H.shape[0]
    # A block of at most 8 columns, as many as fit in a quarter of the memory budget (at
    # least 2): measuring must not come near the memory the stages will use.
    budget = MemoryBudget.resolve(None, H.device)
    width = max(2, min(8, budget.vectors(P, H.dtype) // (4 * PROBE_VECTORS)))
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(P, 1, generator=generator, dtype=H.dtype).to(H.device)
    V = torch.randn(P, width, generator=generator, dtype=H.dtype).to(H.device)
    single = _seconds(lambda: H @ v)
    block = _seconds(lambda: H @ V) / width
    n_c = H.num_samples
    # The same on a few samples: what a product costs beyond its share of the samples (on
    # small subsets and mini-batches the fixed costs dominate; a proportional model was
    # 2-3x low there). Data of fewer than 8 samples has no smaller subsets to plan for.
    few_samples = max(1, min(_MIN_SAMPLES // 4, n_c // 8))
    problem_few = problem.with_data(max_samples=few_samples)
    product_overhead = block_overhead = 0.0
    if n_c >= 8:
        H_few = hessian(problem_few, backend=backend)
        single_few = _seconds(lambda: H_few @ v)
        block_few = _seconds(lambda: H_few @ V) / width
        product_overhead = _intercept(single_few, H_few.num_samples, single, n_c)
        block_overhead = _intercept(block_few, H_few.num_samples, block, n_c)

    def forward(on: Problem = problem) -> None:
        on.loss()

    def gradient(on: Problem = problem) -> None:
        on.value_and_grad()

    n = problem.num_samples
    forward_all = _seconds(forward, 1)
    forward_few = _seconds(lambda: forward(problem_few), 2)
    forward_overhead = _intercept(forward_few, problem_few.num_samples, forward_all, n)
    forward_sample = (forward_all - forward_overhead) / n
    gradient_all = _seconds(gradient, 1)
    gradient_few = _seconds(lambda: gradient(problem_few), 2)
    pass_overhead = _intercept(gradient_few, problem_few.num_samples, gradient_all, n)
    gradient_sample = (gradient_all - pass_overhead) / n
    first = next(problem.batches())
    few = max(1, min(16, first.num_samples, budget.vectors(P, H.dtype) // 8))
    sample = select_rows(first.data, slice(0, few), first.num_samples)
    one = problem.with_data(sample)
    per_example = _seconds(lambda: per_example_gradients(one), 1) / few
    mean_square = _mean_square_product(problem, first, exact_samples, P)
    return UnitCosts(
        single=single,
        block_vector=block,
        forward_sample=forward_sample,
        gradient_sample=gradient_sample,
        per_example_sample=per_example,
        curvature_samples=n_c,
        num_samples=n,
        seconds=time.perf_counter() - start,
        product_overhead=product_overhead,
        pass_overhead=pass_overhead,
        block_overhead=block_overhead,
        forward_overhead=forward_overhead,
        mean_square_product=mean_square,
        num_params=P,
        vector_bytes=vector_bytes(P, H.dtype),
    )


def _mean_square_product(problem: Problem, first: Any, exact_samples: int, P: int) -> float:
    # The exact threshold runs on up to `exact_samples` examples' Gauss-Newton factors when
    # the loss is outputs + criterion and a sample has at most _GRAM_ROWS outputs (as in
    # max_learning_rate); each of its eigensolver products costs m k r^2 flops in batched
    # small products, timed here at the model's sizes (a matmul's flop rate is 10x off).
    if exact_samples < 1 or not problem.objective.has_criterion:
        return 0.0
    with problem.evaluation() as run:
        k = outputs_per_sample(run, first.data, first.num_samples)
    if k > _GRAM_ROWS:
        return 0.0
    m = max(1, min(exact_samples, problem.num_samples, _GRAM_ROWS // k))
    return sandwich_seconds(m, k, min(m * k, P))


def _intercept(seconds_few: float, few: int, seconds_many: float, many: int) -> float:
    """Return the fixed part ``a`` of ``seconds = a + b * samples`` through two measurements.

    Returns
    -------
    float
        ``a``, clipped to ``[0, seconds_many]``.

    Examples
    --------
    >>> _intercept(1.5, 10, 6.0, 100)
    1.0
    """
    if many <= few:
        return 0.0
    slope = max(seconds_many - seconds_few, 0.0) / (many - few)
    return min(max(seconds_few - slope * few, 0.0), seconds_many)
