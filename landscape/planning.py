r"""Planning ``analyze`` by time: measure what one product costs, predict every stage, fit.

``analyze(model, loader, time_budget=seconds)`` first measures, on the model and its data,
the unit costs every stage is made of (:func:`measure_costs`): one Hessian product over the
curvature samples, a vector in a block of eight, a no-grad forward pass and a gradient per
sample, a per-example gradient. Each stage's cost is then a count of those units, read off
its settings (:func:`stage_costs`; the counts of Lanczos products are typical values, the
rest are exact). If the budget's settings do not fit, :func:`fit` scales them down — first
the samples the curvature stages use, then the density's probes and steps, the surfaces'
grids and the learning-rate sweep — until the prediction fits, and records what it changed.
The report keeps the plan: per stage the predicted and the measured seconds.

The prediction is a model, not a promise: Lanczos stops when it converges, and the first
product of a kind of block also measures the backends (:mod:`landscape.operators._backends`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from landscape.batches import select_rows
from landscape.metrics._per_example import outputs_per_sample
from landscape.metrics.learning_rate import _GRAM_ROWS
from landscape.metrics.mean_square import sandwich_seconds
from landscape.operators.hessian import hessian
from landscape.operators.per_example import per_example_gradients
from landscape.problem import Problem
from landscape.records import Record

__all__ = ["Plan", "UnitCosts", "fit", "measure_costs", "stage_costs"]

# Typical product counts of the Lanczos stages (measured with benchmarks/analyze.py): the
# top-k pairs converge in about 3k + 6 products, the bottom ones use a share of their cap.
_TOP_PRODUCTS = (3, 6)
_BOTTOM_PRODUCTS = (30, 40)
_LR_PRODUCTS = 15  # products per mini-batch sharpness (k = 1, tol 1e-3, warm-started)
# ARPACK products per exact mean-square threshold (31 on the benchmark CNN, 64 examples x 10
# outputs: 4 batch sizes took 124): the lr stage's largest part on small models.
_MEAN_SQUARE_PRODUCTS = 31
# Hutch++ and the Frobenius estimate push blocks of about m/3 columns: chunked, plus the
# sketch's QR, they cost 1.1-1.8x a vector in a block of eight (benchmarks/analyze.py:
# 1.3-1.8 on 2026-12-02, 1.1-1.2 on 2026-12-03).
_TRACE_FACTOR = 1.2
# The subsets stage runs Hutch++ k + 1 times on small subsets, where each call's fixed part
# weighs more: 1.8x a block vector (measured 1.4-1.7x short with the factor above).
_SUBSETS_TRACE_FACTOR = 1.8
# Gradient passes per sharpness measure (value-and-gradient evaluations; GAM adds HVPs).
_SHARPNESS_GRADIENTS = {"sam": 12, "asam": 12, "gam": 3, "m_sam": 12}
_SHARPNESS_FORWARDS = {"pacbayes": 150, "pacbayes_mag": 150}
# Coherence costs its per-example gradients plus their moments and per-layer summaries:
# 2.8x the per-example gradients alone (benchmarks/analyze.py, 450-490 samples: 1.6 was
# measured 1.74-1.81x short once the subsets and block stages ran before it).
_COHERENCE_PER_EXAMPLE = 2.8
# The measures' gradient and forward counts leave out their set-up (copies of the
# parameters, norms, the bisection's bookkeeping): 1.5x (measured 1.48-1.53x short).
_SHARPNESS_OVERHEAD = 1.5
_MIN_SAMPLES = 64  # the curvature stages never go below this many samples


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

    def block_scale(self, n: int) -> float:
        """Return the cost of a block vector over ``n`` samples relative to the measured one.

        Parameters
        ----------
        n : int
            Samples.

        Returns
        -------
        float
            As :meth:`product_scale`, with ``block_overhead`` and ``block_vector``.
        """
        return self._scale(self.block_overhead, self.block_vector, n)

    def forward_pass(self, n: int) -> float:
        """Return the seconds of one no-grad forward pass over ``n`` samples.

        Parameters
        ----------
        n : int
            Samples.

        Returns
        -------
        float
            ``forward_overhead + forward_sample * n``.
        """
        return self.forward_overhead + self.forward_sample * n

    def product_scale(self, n: int) -> float:
        """Return the cost of a product over ``n`` samples relative to the measured one.

        Parameters
        ----------
        n : int
            Samples.

        Returns
        -------
        float
            ``(overhead + (single - overhead) * n / curvature_samples) / single``.

        Examples
        --------
        >>> UnitCosts(2.0, 1.0, 0, 0, 0, 100, 100, 0.0, product_overhead=0.5).product_scale(50)
        0.625
        """
        return self._scale(self.product_overhead, self.single, n)

    def _scale(self, overhead: float, unit: float, n: int) -> float:
        if unit <= 0:
            return n / max(self.curvature_samples, 1)
        share = min(max(overhead / unit, 0.0), 1.0)
        return share + (1.0 - share) * n / max(self.curvature_samples, 1)

    def gradient_pass(self, n: int) -> float:
        """Return the seconds of one gradient pass over ``n`` samples.

        Parameters
        ----------
        n : int
            Samples.

        Returns
        -------
        float
            ``pass_overhead + gradient_sample * n``.
        """
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
    """

    budget: str
    time_budget: float
    settings: dict[str, Any]
    scaled: dict[str, list[Any]]
    predicted: dict[str, float]
    units: UnitCosts
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Predicted seconds of all stages, plus the measurement already spent."""
        return sum(self.predicted.values()) + self.units.seconds

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
        head = f"  {'stage':<15}{'predicted s':>12}"
        lines.append(head + (f"{'measured s':>12}{'ratio':>8}" if self.measured else ""))
        for name, seconds in self.predicted.items():
            row = f"  {name:<15}{seconds:>12.2f}"
            if name in self.measured:
                actual = self.measured[name]
                row += f"{actual:>12.2f}{actual / seconds if seconds > 0 else math.nan:>8.2f}"
            lines.append(row)
        return "\n".join(lines)


def _seconds(fn: Callable[[], object], repeats: int = 2) -> float:
    fn()  # warm-up: first-call costs, the backend measurement
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_costs(
    model: nn.Module,
    data: Any,
    loss_fn: Any,
    losses: Mapping[str, Any],
    curvature_samples: int | None,
    backend: str = "auto",
    exact_samples: int = 0,
) -> UnitCosts:
    """Measure the unit costs of :class:`UnitCosts` on the model and its data.

    Parameters
    ----------
    model : torch.nn.Module
        The model; never modified.
    data : iterable of batches, or one batch
        The data.
    loss_fn : callable or None
        As for :func:`landscape.analyze`.
    losses : mapping
        ``batch_loss`` and ``count``.
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
    H = hessian(model, data, loss_fn, **losses, backend=backend, max_samples=curvature_samples)
    P = H.shape[0]
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(P, 1, generator=generator, dtype=H.dtype).to(H.device)
    V = torch.randn(P, 8, generator=generator, dtype=H.dtype).to(H.device)
    single = _seconds(lambda: H @ v)
    block = _seconds(lambda: H @ V) / 8
    n_c = H.num_samples
    # The same on a few samples: what a product costs beyond its share of the samples (on
    # small subsets and mini-batches the fixed costs dominate; a proportional model was
    # 2-3x low there).
    few_samples = max(1, min(_MIN_SAMPLES // 4, n_c // 8))
    H_few = hessian(model, data, loss_fn, **losses, backend=backend, max_samples=few_samples)
    single_few = _seconds(lambda: H_few @ v)
    block_few = _seconds(lambda: H_few @ V) / 8
    product_overhead = _intercept(single_few, H_few.num_samples, single, n_c)
    block_overhead = _intercept(block_few, H_few.num_samples, block, n_c)
    problem = Problem(model, data, loss_fn, **losses, shard=False)
    problem_few = Problem(model, data, loss_fn, **losses, shard=False, max_samples=few_samples)

    def forward(on: Problem = problem) -> None:
        with on.evaluation() as run, torch.no_grad():
            for batch in on.batches():
                run.loss(batch.data, batch.weight)

    def gradient(on: Problem = problem) -> None:
        with on.evaluation() as run:
            for batch in on.batches():
                with torch.enable_grad():
                    torch.autograd.grad(
                        run.loss(batch.data, batch.weight), run.params, allow_unused=True
                    )

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
    few = min(16, first.num_samples)
    sample = select_rows(first.data, slice(0, few), first.num_samples)
    per_example = (
        _seconds(lambda: per_example_gradients(model, [sample], loss_fn, **losses), 1) / few
    )
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


def _samples(settings: Mapping[str, Any], key: str, n: int) -> int:
    value = settings.get(key)
    return n if value is None else min(int(value), n)


def stage_costs(
    settings: Mapping[str, Any],
    units: UnitCosts,
    *,
    surfaces: bool = True,
    learning_rates: bool = True,
    optimizers: int = 2,
    blocks: int = 1,
) -> dict[str, float]:
    """Predict the seconds of every ``analyze`` stage from its settings and the unit costs.

    Parameters
    ----------
    settings : mapping
        A budget's settings (:data:`landscape.analysis.BUDGETS`).
    units : UnitCosts
        Measured unit costs.
    surfaces, learning_rates : bool, optional
        Whether those stages run.
    optimizers : int, optional
        Optimizers the learning-rate stage analyzes.
    blocks : int, optional
        Modules with parameters (the block-spectra stage runs with two or more).

    Returns
    -------
    dict
        ``{stage: seconds}`` in the order the stages run.

    Examples
    --------
    >>> units = UnitCosts(1.0, 0.5, 1e-3, 3e-3, 1e-2, 512, 2000, 0.0)
    >>> costs = stage_costs({**ls.BUDGETS["fast"]}, units)
    >>> round(costs["trace"], 1)  # (30 + 10) vectors in wide blocks at 1.2 x 0.5 s each
    24.0
    """
    n = units.num_samples
    n_c = _samples(settings, "curvature_samples", n)
    ratio = units.product_scale(n_c)  # products: a fixed part plus their share of samples
    single, vector = units.single * ratio, units.block_vector * units.block_scale(n_c)
    gradient_pass = units.gradient_pass(n_c)
    forward_pass = units.forward_pass(n_c)
    top, bottom = settings["top_k"], settings["bottom_k"]
    cap = max(150, 50 * bottom)
    eig = (_TOP_PRODUCTS[0] * top + _TOP_PRODUCTS[1]) + min(
        cap, _BOTTOM_PRODUCTS[0] * bottom + _BOTTOM_PRODUCTS[1]
    )
    probes, steps = settings["density"]
    k = settings["subsets"]
    trace_vectors = max(12, settings["trace_matvecs"] // 3)
    per_sample = (_TOP_PRODUCTS[0] + _TOP_PRODUCTS[1]) * single + (
        _SUBSETS_TRACE_FACTOR * trace_vectors * vector
    )
    subsets = per_sample * (1 + k * units.product_scale(n_c // k) / max(ratio, 1e-12))
    block_probes, block_steps = settings["block_density"]
    costs = {
        "loss": units.forward_pass(n),
        "eigenvalues": eig * single,
        "subsets": subsets,
        "trace": _TRACE_FACTOR
        * (settings["trace_matvecs"] + settings["frobenius_matvecs"])
        * vector,
        "density": probes * steps * (vector if probes > 1 else single),
        "layerwise": settings["layer_probes"] * vector,
        "block_spectra": min(
            blocks * block_probes * block_steps, max(400, 10 * blocks * block_probes)
        )
        * vector
        if blocks > 1
        else 0.0,
    }
    if surfaces:
        points = settings["surface_1d"] + settings["surface_2d"] ** 2
        costs["surfaces"] = points * units.forward_pass(_samples(settings, "surface_samples", n))
    costs["sharpness"] = _SHARPNESS_OVERHEAD * sum(
        _SHARPNESS_GRADIENTS.get(m, 0) * gradient_pass
        + _SHARPNESS_FORWARDS.get(m, 0) * forward_pass
        for m in settings["sharpness"]
    )
    coherence_samples = _samples(settings, "coherence_samples", n)
    costs["coherence"] = _COHERENCE_PER_EXAMPLE * units.per_example_sample * coherence_samples
    if learning_rates:
        # Mini-batch products: the fixed part plus their share of the samples; Adam's moments
        # are one per-example pass.
        sizes = [max(n_c // 4**i, 1) for i in range(settings["lr_sizes"])]
        draws = sum(settings["lr_batches"] * units.product_scale(b) for b in sizes)
        per_optimizer = draws * _LR_PRODUCTS * units.single
        moments = units.per_example_sample * n_c
        exact = units.per_example_sample * settings["exact_samples"] * 10
        # SGD's exact threshold: one eigensolve per batch size (_MEAN_SQUARE_PRODUCTS each)
        exact += settings["lr_sizes"] * _MEAN_SQUARE_PRODUCTS * units.mean_square_product
        costs["learning_rate"] = optimizers * per_optimizer + moments + exact
    return costs


def _block_products(blocks: int, probes: int, steps: int) -> int:
    """Products of ``analyze``'s block-spectra stage (at most 400; none for one block).

    Returns
    -------
    int
        ``blocks * probes * steps``, with the steps cut to fit 400 but never below 10.
    """
    if blocks < 2:
        return 0
    return blocks * probes * max(10, min(steps, 400 // max(blocks * probes, 1)))


# What fit may shrink, in order: (setting, smallest value).
_KNOBS: tuple[tuple[str, Any], ...] = (
    ("curvature_samples", _MIN_SAMPLES),
    ("surface_samples", _MIN_SAMPLES),
    ("density", (2, 10)),
    ("surface_2d", 5),
    ("surface_1d", 11),
    ("lr_batches", 1),
    ("coherence_samples", 32),
    ("trace_matvecs", 12),
)


def _shrink(name: str, value: Any, floor: Any, factor: float, n: int) -> Any:
    if name == "density":
        probes, steps = value
        scale = math.sqrt(factor)
        return (max(floor[0], int(probes * scale)), max(floor[1], int(steps * scale)))
    if value is None:
        value = n
    if isinstance(value, int):
        return max(floor, int(value * factor))
    return value


def fit(
    settings: Mapping[str, Any],
    units: UnitCosts,
    seconds: float,
    **options: Any,
) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, float]]:
    """Scale ``settings`` down until the predicted stages fit in ``seconds``.

    Settings are shrunk in the order of ``_KNOBS`` (the samples of the curvature stages
    first), each by the factor the prediction is over, never below its floor; the budget's
    settings are never raised.

    Parameters
    ----------
    settings : mapping
        A budget's settings.
    units : UnitCosts
        Measured unit costs.
    seconds : float
        Time available for the stages.
    **options
        ``surfaces``, ``learning_rates``, ``optimizers`` for :func:`stage_costs`.

    Returns
    -------
    tuple
        ``(settings, scaled, predicted)``: the settings that fit (or the smallest ones),
        ``{setting: [from, to]}``, and the predicted seconds per stage.

    Examples
    --------
    >>> units = UnitCosts(1.0, 0.5, 1e-3, 3e-3, 1e-2, 512, 2000, 0.0)
    >>> fitted, scaled, predicted = fit(ls.BUDGETS["fast"], units, 60.0)
    >>> sum(predicted.values()) <= 60.0, "curvature_samples" in scaled
    (True, True)
    """
    current = dict(settings)
    n = units.num_samples
    predicted = stage_costs(current, units, **options)
    for _ in range(4):  # a few rounds: each knob shrinks by what is still over
        for name, floor in _KNOBS:
            total = sum(predicted.values())
            if total <= seconds:
                break
            before = current[name]
            current[name] = _shrink(name, before, floor, max(seconds, 0.0) / total, n)
            predicted = stage_costs(current, units, **options)
    scaled = {
        name: [settings[name], current[name]]
        for name, _ in _KNOBS
        if current[name] != settings[name] and not (settings[name] is None and current[name] == n)
    }
    return current, scaled, predicted
