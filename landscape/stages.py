r"""The stages of ``analyze``, each declared once: how it runs and what it costs.

:data:`STAGES` lists them in the order they run. A :class:`Stage` has a name, the report
fields it fills, a ``run`` function of a :class:`StageContext` (the analysis' one
:class:`~landscape.problem.Problem`, the settings, a seed derived from the stage's name) and a
``cost`` function of the settings and the measured unit costs
(:class:`~landscape.planning.UnitCosts`). ``analyze`` runs them; the planner prices them
(:func:`stage_costs`) and scales the settings to a time budget (:func:`fit`) — from the same
declarations, so the two cannot drift apart.

The unit costs are counted per stage from its settings: the Lanczos stages at their typical
product counts (measured with ``benchmarks/analyze.py``), the others exactly.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.linalg.block_density import js_distances
from landscape.linalg.density import RUN_VECTORS, spectral_density
from landscape.linalg.eigen import eigenvalues
from landscape.linalg.eigen import least_vectors as least_eigen_vectors
from landscape.linalg.results import Estimate
from landscape.linalg.trace import frobenius_norm, trace
from landscape.linalg.trace import least_vectors as least_trace_vectors
from landscape.memory import MemoryBudget, format_bytes
from landscape.metrics.block_spectra import block_spectra, parameter_blocks
from landscape.metrics.coherence import coherence
from landscape.metrics.evaluate import evaluate
from landscape.metrics.layerwise import layerwise
from landscape.metrics.learning_rate import max_learning_rate
from landscape.metrics.sharpness import SharpnessSettings, sharpness
from landscape.metrics.subsets import subset_spread
from landscape.metrics.thresholds import optimizer_settings
from landscape.operators.hessian import HessianOperator, hessian
from landscape.planning import UnitCosts
from landscape.problem import Problem
from landscape.report.contents import ExtremeEigenvalues, LearningRates, LossValue
from landscape.surfaces.directions import random_directions
from landscape.surfaces.grid import surface

__all__ = [
    "STAGES",
    "Stage",
    "StageContext",
    "Workload",
    "drop_stages",
    "fit",
    "stage_costs",
    "stage_seed",
]

# Typical product counts of the Lanczos stages (measured with benchmarks/analyze.py): the
# top-k pairs converge in about 3k + 6 products; the bottom ones are priced at their cap.
_TOP_PRODUCTS = (3, 6)
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
#: Products of the block-spectra stage: at most this many (fewer Lanczos steps for many
#: blocks, never below 10 steps).
BLOCK_PRODUCTS = 400


def stage_seed(seed: int, name: str) -> int:
    """Return the seed of a stage (or a part of one), derived from its name.

    Stages get independent random numbers that do not depend on which other stages run,
    nor on their order, and never collide the way ``seed + offset`` did.

    Parameters
    ----------
    seed : int
        The analysis' seed.
    name : str
        The stage, or ``"stage/part"``.

    Returns
    -------
    int
        A seed in ``[0, 2**31)``.

    Examples
    --------
    >>> stage_seed(0, "trace") == stage_seed(0, "trace") != stage_seed(0, "density")
    True
    """
    return zlib.crc32(f"{int(seed)}:{name}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Workload:
    """What a stage's cost depends on besides its settings: the model's shape of work.

    Attributes
    ----------
    optimizers : int
        Optimizers the learning-rate stage analyzes.
    blocks : int
        Modules owning parameters (block spectra run with two or more).
    """

    optimizers: int = 2
    blocks: int = 1


@dataclass
class StageContext:
    """What every stage of one analysis shares: the problem, the settings, the operator.

    Attributes
    ----------
    problem : Problem
        The analysis' one problem (all the data).
    settings : dict
        The budget's (possibly scaled) settings.
    seed : int
        The analysis' seed.
    backend : str
        How Hessian products are computed.
    optimizer : torch.optim.Optimizer, sequence of them, or None
        The user's optimizer(s).
    """

    problem: Problem
    settings: dict[str, Any]
    seed: int
    backend: str = "auto"
    optimizer: Any = None
    notes: dict[str, str] = field(default_factory=dict)
    _hessian: HessianOperator | None = None

    def samples(self, key: str) -> Problem:
        """Return the problem on the first ``settings[key]`` samples (shares cached batches).

        Returns
        -------
        Problem
            The variant.
        """
        return self.problem.with_data(max_samples=self.settings[key])

    @property
    def curvature(self) -> Problem:
        """The problem on the curvature samples."""
        return self.samples("curvature_samples")

    @property
    def hessian(self) -> HessianOperator:
        """The Hessian over the curvature samples (one operator for every stage)."""
        if self._hessian is None:
            self._hessian = hessian(self.curvature, backend=self.backend)
        return self._hessian

    def seed_for(self, name: str) -> int:
        """Return :func:`stage_seed` of ``name`` for this analysis.

        Returns
        -------
        int
            The seed.
        """
        return stage_seed(self.seed, name)


#: What a stage's run returns: the report fields it fills, and its cost (products, passes).
Outcome = tuple[dict[str, Any], int, int]


@dataclass(frozen=True)
class Stage:
    """One stage of ``analyze``: its name, the report fields it fills, how it runs and costs.

    Attributes
    ----------
    name : str
        The stage's name (report costs and plans are keyed by it).
    fields : tuple of str
        The :class:`~landscape.report.document.Report` fields it fills.
    run : callable
        ``run(context) -> (fields, num_matvecs, passes)``.
    cost : callable
        ``cost(settings, units, workload) -> seconds``.
    switch : str or None
        The ``analyze`` flag that turns the stage off (``"surfaces"``, ``"learning_rates"``).
    vectors : callable
        ``vectors(settings) -> int``: the parameter vectors (``P`` numbers each) the stage
        holds at least at once — its algorithms at their smallest sizes, plus one
        product's :data:`~landscape.linalg.trace.PROBE_VECTORS` — besides the model and the
        activations of one batch. Above that, its algorithms size themselves to the memory
        budget (:mod:`landscape.memory`).
    """

    name: str
    fields: tuple[str, ...]
    run: Callable[[StageContext], Outcome]
    cost: Callable[[Mapping[str, Any], UnitCosts, Workload], float]
    switch: str | None = None
    vectors: Callable[[Mapping[str, Any]], int] = lambda settings: _LEAST_VECTORS


#: A stage's least need unless it declares its own: a Hutch++ estimate at its smallest
#: (the stages' probes and one-vector sketches go through the same products).
_LEAST_VECTORS = least_trace_vectors()


def _samples(settings: Mapping[str, Any], key: str, n: int) -> int:
    value = settings.get(key)
    return n if value is None else min(int(value), n)


class _Prices:
    """Per-unit prices at a settings' sample counts (the shared part of the cost functions)."""

    def __init__(self, settings: Mapping[str, Any], units: UnitCosts) -> None:
        self.n = units.num_samples
        self.n_c = _samples(settings, "curvature_samples", self.n)
        self.ratio = units.scale("product", self.n_c)  # a fixed part plus a share of samples
        self.single = units.single * self.ratio
        self.vector = units.block_vector * units.scale("block", self.n_c)
        self.gradient_pass = units.seconds_of("gradient", self.n_c)
        self.forward_pass = units.seconds_of("forward", self.n_c)


# -- loss -----------------------------------------------------------------------------------------


def _run_loss(ctx: StageContext) -> Outcome:
    loss = evaluate(ctx.problem)
    return {"loss": LossValue(loss["value"], loss["accuracy"], loss["num_classes"])}, 0, 1


def _cost_loss(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    return units.seconds_of("forward", units.num_samples)


# -- eigenvalues ----------------------------------------------------------------------------------


def _run_eigenvalues(ctx: StageContext) -> Outcome:
    H, s = ctx.hessian, ctx.settings
    P = H.shape[0]
    top = eigenvalues(
        H, k=min(s["top_k"], P), which="largest", tol=s["tol"], seed=ctx.seed_for("top")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bottom = eigenvalues(
            H,
            k=min(s["bottom_k"], P),
            which="smallest",
            tol=s["tol"],
            seed=ctx.seed_for("bottom"),
            max_matvecs=s["bottom_matvecs"],
        )
    result = ExtremeEigenvalues(top.without_vectors(), bottom.without_vectors(), s["tol"])
    return (
        {"eigenvalues": result},
        top.num_matvecs + bottom.num_matvecs,
        top.num_passes + bottom.num_passes,
    )


def _cost_eigenvalues(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    # The bottom end is priced at its cap: the smallest eigenvalues sit at the edge of a
    # continuous bulk and rarely converge before it on large models (GPT-2 small: all 150).
    top = _TOP_PRODUCTS[0] * settings["top_k"] + _TOP_PRODUCTS[1]
    return (top + settings["bottom_matvecs"]) * _Prices(settings, units).single


# -- subsets --------------------------------------------------------------------------------------


def _run_subsets(ctx: StageContext) -> Outcome:
    s = ctx.settings
    try:
        spread = subset_spread(
            ctx.curvature,
            num_subsets=s["subsets"],
            population=ctx.problem.num_samples,
            trace_matvecs=max(12, s["trace_matvecs"] // 3),
            tol=max(s["tol"], 1e-3),
            seed=ctx.seed_for("subsets"),
            backend=ctx.backend,
        )
    except ValueError as error:  # too few samples for k subsets: say so, go on
        ctx.notes["subsets"] = str(error)
        return {}, 0, 0
    return {"subsets": spread}, spread.num_matvecs, spread.num_passes


def _cost_subsets(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    p = _Prices(settings, units)
    k = settings["subsets"]
    trace_vectors = max(12, settings["trace_matvecs"] // 3)
    per_sample = (_TOP_PRODUCTS[0] + _TOP_PRODUCTS[1]) * p.single + (
        _SUBSETS_TRACE_FACTOR * trace_vectors * p.vector
    )
    return per_sample * (1 + k * units.scale("product", p.n_c // k) / max(p.ratio, 1e-12))


# -- trace and Frobenius norm ---------------------------------------------------------------------


def _without_samples(estimate: Estimate) -> Estimate:
    return dataclasses.replace(estimate, samples=None)


def _run_trace(ctx: StageContext) -> Outcome:
    H, s = ctx.hessian, ctx.settings
    tr = trace(H, num_matvecs=s["trace_matvecs"], seed=ctx.seed_for("trace"))
    fro = frobenius_norm(H, s["frobenius_matvecs"], seed=ctx.seed_for("frobenius"))
    fields = {"trace": _without_samples(tr), "frobenius": _without_samples(fro)}
    return fields, tr.num_matvecs + fro.num_matvecs, tr.num_passes + fro.num_passes


def _cost_trace(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    vectors = settings["trace_matvecs"] + settings["frobenius_matvecs"]
    return _TRACE_FACTOR * vectors * _Prices(settings, units).vector


# -- density --------------------------------------------------------------------------------------


def _run_density(ctx: StageContext) -> Outcome:
    H = ctx.hessian
    probes, steps = ctx.settings["density"]
    density = spectral_density(H, probes, min(steps, H.shape[0]), seed=ctx.seed_for("density"))
    return {"density": density}, density.num_matvecs, density.num_passes


def _cost_density(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    probes, steps = settings["density"]
    p = _Prices(settings, units)
    return probes * steps * (p.vector if probes > 1 else p.single)


# -- layerwise ------------------------------------------------------------------------------------


def _run_layerwise(ctx: StageContext) -> Outcome:
    layers = layerwise(
        ctx.curvature,
        metrics=("trace",),
        num_probes=ctx.settings["layer_probes"],
        seed=ctx.seed_for("layerwise"),
        backend=ctx.backend,
    )
    return {"layerwise": layers}, layers.num_matvecs, layers.num_passes


def _cost_layerwise(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    return settings["layer_probes"] * _Prices(settings, units).vector


# -- block spectra --------------------------------------------------------------------------------


def block_steps(blocks: int, probes: int, steps: int) -> int:
    """Return the Lanczos steps of the block-spectra stage: at most ``BLOCK_PRODUCTS`` products.

    Parameters
    ----------
    blocks, probes, steps : int
        Blocks, probes per block, and the budget's steps.

    Returns
    -------
    int
        ``steps``, cut so that ``blocks * probes * steps`` fits ``BLOCK_PRODUCTS``, but
        never below 10.

    Examples
    --------
    >>> block_steps(16, 2, 40), block_steps(2, 1, 20)
    (12, 20)
    """
    return max(10, min(steps, BLOCK_PRODUCTS // max(blocks * probes, 1)))


def _run_block_spectra(ctx: StageContext) -> Outcome:
    """Per-module Hessian spectra and their heterogeneity JS^0 (Zhang et al. 2024).

    Returns
    -------
    tuple
        The blocks' densities and distances (normalized by each block's 10th-largest
        eigenvalue where every block has one); nothing for a model with one block.
    """
    blocks = len(parameter_blocks(ctx.problem.model, "modules"))
    if blocks < 2:
        return {}, 0, 0
    probes, steps = ctx.settings["block_density"]
    steps = block_steps(blocks, probes, steps)
    result = block_spectra(
        ctx.curvature, blocks="modules", num_probes=probes, num_steps=steps, normalize=None,
        seed=ctx.seed_for("block_spectra"), backend=ctx.backend,
    )  # fmt: skip
    cost = result.num_matvecs, result.num_passes
    normalize = min(10, steps)
    try:
        distances = js_distances(result.densities, normalize=normalize)
    except ValueError:  # a block without a positive k-th eigenvalue: compare raw spectra
        return {"block_spectra": result}, *cost
    result = dataclasses.replace(result, distances=distances, normalize=normalize)
    return {"block_spectra": result}, *cost


def _cost_block_spectra(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    if work.blocks < 2:
        return 0.0
    probes, steps = settings["block_density"]
    products = work.blocks * probes * block_steps(work.blocks, probes, steps)
    return products * _Prices(settings, units).vector


# -- surfaces -------------------------------------------------------------------------------------


def _run_surfaces(ctx: StageContext) -> Outcome:
    s = ctx.settings
    on = ctx.samples("surface_samples")
    model = on.model
    dirs = random_directions(
        model, n=2, norm="filter", ignore="biasbn", seed=ctx.seed_for("surfaces")
    )
    line = surface(
        on, directions=dirs[0], coords=np.linspace(-1, 1, s["surface_1d"]), progress=False
    )
    num = s["surface_2d"]
    plane = surface(on, directions=dirs, coords=np.linspace(-1, 1, num), progress=False)
    # one loss evaluation per point
    return {"surface_1d": line, "surface_2d": plane}, 0, line.num_points + plane.num_points


def _cost_surfaces(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    points = settings["surface_1d"] + settings["surface_2d"] ** 2
    samples = _samples(settings, "surface_samples", units.num_samples)
    return points * units.seconds_of("forward", samples)


# -- sharpness ------------------------------------------------------------------------------------


def _run_sharpness(ctx: StageContext) -> Outcome:
    # λmax is the eigenvalue stage's; the sharpness stage adds the perturbation measures.
    result = sharpness(
        ctx.curvature,
        measures=ctx.settings["sharpness"],
        settings=SharpnessSettings(),
        seed=ctx.seed_for("sharpness"),
        backend=ctx.backend,
    )
    measures = result.measures.values()
    return (
        {"sharpness": result},
        sum(m.num_matvecs for m in measures),
        sum(m.num_passes for m in measures),
    )


def _cost_sharpness(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    p = _Prices(settings, units)
    return _SHARPNESS_OVERHEAD * sum(
        _SHARPNESS_GRADIENTS.get(m, 0) * p.gradient_pass
        + _SHARPNESS_FORWARDS.get(m, 0) * p.forward_pass
        for m in settings["sharpness"]
    )


# -- coherence ------------------------------------------------------------------------------------


def _run_coherence(ctx: StageContext) -> Outcome:
    result = coherence(
        ctx.samples("coherence_samples"), seed=ctx.seed_for("coherence"), backend=ctx.backend
    )
    return {"coherence": result}, result.num_matvecs, int(result.num_passes)


def _cost_coherence(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    samples = _samples(settings, "coherence_samples", units.num_samples)
    return _COHERENCE_PER_EXAMPLE * units.per_example_sample * samples


# -- learning rates -------------------------------------------------------------------------------


def _loader_batch_size(data: Any) -> int | None:
    size = getattr(data, "batch_size", None)
    return size if isinstance(size, int) else None


def default_batch_sizes(b: int, n: int, count: int) -> list[int]:
    """Return ``count`` batch sizes around the loader's ``b``: quarters and quadruples.

    Parameters
    ----------
    b : int
        The loader's batch size.
    n : int
        Samples.
    count : int
        How many sizes.

    Returns
    -------
    list of int
        Sorted sizes, at most ``n``.

    Examples
    --------
    >>> default_batch_sizes(32, 512, 3)
    [8, 32, 128]
    """
    sizes = {min(b, n)}
    for factor in (4, 16, 64, 256):
        if len(sizes) >= count:
            break
        if b // factor >= 2:
            sizes.add(b // factor)
        if len(sizes) < count and b * factor <= n:
            sizes.add(b * factor)
    return sorted(sizes)


def _run_learning_rate(ctx: StageContext) -> Outcome:
    s = ctx.settings
    on = ctx.curvature
    first = next(iter(on.batches()))
    b = _loader_batch_size(ctx.problem.source.data) or first.num_samples
    sizes = default_batch_sizes(b, on.num_samples, s["lr_sizes"])
    kinds: dict[str, Any] = {"sgd": "sgd", "adam": "adam"}
    own = None
    if ctx.optimizer is not None:
        # The user's own optimizer (its hyperparameters and state) under its kind's name
        # ("momentum", "adam"), or its class name for any other ("RMSprop", "Muon + AdamW").
        own = optimizer_settings(ctx.optimizer).key
        kinds[own] = ctx.optimizer
    results, matvecs, passes = {}, 0, 0
    for name, optimizer in kinds.items():
        result = max_learning_rate(
            on,
            batch_sizes=sizes,
            optimizer=optimizer,
            num_batches=s["lr_batches"],
            exact_samples=s["exact_samples"],
            seed=ctx.seed_for("learning_rate"),
            backend=ctx.backend,
        )
        results[name] = result
        matvecs += result.num_matvecs
        passes += result.num_passes
    rates = LearningRates(results, loader_batch_size=b, optimizer_kind=own)
    return {"learning_rate": rates}, matvecs, passes


def _cost_learning_rate(settings: Mapping[str, Any], units: UnitCosts, work: Workload) -> float:
    # Mini-batch products: the fixed part plus their share of the samples; Adam's moments
    # are one per-example pass.
    n_c = _Prices(settings, units).n_c
    sizes = [max(n_c // 4**i, 1) for i in range(settings["lr_sizes"])]
    draws = sum(settings["lr_batches"] * units.scale("product", b) for b in sizes)
    per_optimizer = draws * _LR_PRODUCTS * units.single
    moments = units.per_example_sample * n_c
    exact = units.per_example_sample * settings["exact_samples"] * 10
    # SGD's exact threshold: one eigensolve per batch size (_MEAN_SQUARE_PRODUCTS each)
    exact += settings["lr_sizes"] * _MEAN_SQUARE_PRODUCTS * units.mean_square_product
    return work.optimizers * per_optimizer + moments + exact


#: The stages of ``analyze``, in the order they run.
STAGES: tuple[Stage, ...] = (
    Stage("loss", ("loss",), _run_loss, _cost_loss, vectors=lambda s: 0),
    Stage(
        "eigenvalues",
        ("eigenvalues",),
        _run_eigenvalues,
        _cost_eigenvalues,
        vectors=lambda s: least_eigen_vectors(max(s["top_k"], s["bottom_k"])),
    ),
    Stage("subsets", ("subsets",), _run_subsets, _cost_subsets),
    Stage("trace", ("trace", "frobenius"), _run_trace, _cost_trace),
    Stage("density", ("density",), _run_density, _cost_density, vectors=lambda s: RUN_VECTORS),
    Stage("layerwise", ("layerwise",), _run_layerwise, _cost_layerwise),
    Stage("block_spectra", ("block_spectra",), _run_block_spectra, _cost_block_spectra),
    Stage(
        "surfaces",
        ("surface_1d", "surface_2d"),
        _run_surfaces,
        _cost_surfaces,
        "surfaces",
        vectors=lambda s: 4,  # two directions, the origin, a point
    ),
    Stage("sharpness", ("sharpness",), _run_sharpness, _cost_sharpness),
    Stage("coherence", ("coherence",), _run_coherence, _cost_coherence),
    Stage(
        "learning_rate",
        ("learning_rate",),
        _run_learning_rate,
        _cost_learning_rate,
        "learning_rates",
        vectors=lambda s: 9,  # Adam's two moments and P, a small basis, one product
    ),
)


def active_stages(*, surfaces: bool = True, learning_rates: bool = True) -> list[Stage]:
    """Return the stages that run with these switches, in order.

    Parameters
    ----------
    surfaces, learning_rates : bool, optional
        The ``analyze`` switches.

    Returns
    -------
    list of Stage
        The stages.
    """
    switches = {"surfaces": surfaces, "learning_rates": learning_rates}
    return [s for s in STAGES if s.switch is None or switches[s.switch]]


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
    work = Workload(optimizers=optimizers, blocks=blocks)
    chosen = active_stages(surfaces=surfaces, learning_rates=learning_rates)
    return {s.name: s.cost(settings, units, work) for s in chosen}


# What fit may shrink, in order: (setting, smallest value).
_KNOBS: tuple[tuple[str, Any], ...] = (
    ("curvature_samples", _MIN_SAMPLES),
    ("surface_samples", _MIN_SAMPLES),
    ("density", (2, 10)),
    ("bottom_matvecs", 30),
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
        ``surfaces``, ``learning_rates``, ``optimizers``, ``blocks`` for :func:`stage_costs`.

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


#: The stages ``drop_stages`` leaves out first when the smallest settings do not fit the
#: time budget: the most expensive per insight first; the loss and the extreme eigenvalues
#: are never dropped.
DROP_ORDER = (
    "block_spectra",
    "subsets",
    "layerwise",
    "coherence",
    "density",
    "sharpness",
    "surfaces",
    "learning_rate",
    "trace",
)


def memory_drops(
    settings: Mapping[str, Any],
    names: Iterable[str],
    *,
    num_params: int,
    vector_bytes: int,
    memory: MemoryBudget,
) -> dict[str, str]:
    """Return the stages whose smallest need is over the memory budget, each with why.

    A stage holds at least :attr:`Stage.vectors` parameter vectors besides the model; when
    they do not fit in ``memory`` it cannot run at all.

    Parameters
    ----------
    settings : mapping
        The analysis' settings.
    names : iterable of str
        The stages to check.
    num_params, vector_bytes : int
        Parameters, and bytes of one vector of them.
    memory : MemoryBudget
        The analysis' memory budget.

    Returns
    -------
    dict
        ``{stage: reason}``, in the order of ``names``.

    Examples
    --------
    >>> small = MemoryBudget.resolve(5 * 8000, "cpu")  # five vectors of 1000 float64
    >>> list(memory_drops(ls.BUDGETS["fast"], ["loss", "density", "trace"], num_params=1000,
    ...                   vector_bytes=8000, memory=small))
    ['trace']
    """
    stages = {s.name: s for s in STAGES}
    dropped: dict[str, str] = {}
    for name in names:
        count = stages[name].vectors(settings)
        if count * vector_bytes > memory.bytes:
            dropped[name] = (
                f"needs at least {count} vectors of {num_params:,} parameters "
                f"({format_bytes(count * vector_bytes)}) besides the model; the memory "
                f"budget is {memory.describe()}: pass memory_budget= to analyze, or run "
                "it alone on a device with more memory"
            )
    return dropped


def drop_stages(
    settings: Mapping[str, Any],
    predicted: Mapping[str, float],
    seconds: float,
    *,
    num_params: int = 0,
    vector_bytes: int = 0,
    memory: MemoryBudget | None = None,
) -> dict[str, str]:
    """Return the stages to leave out, each with why: they do not fit in memory or in time.

    First the stages over the memory budget (:func:`memory_drops`). Then, while the
    predicted seconds of the others are over ``seconds`` (the settings already at their
    floors, :func:`fit`), stages are left out: the first in :data:`DROP_ORDER` whose time
    alone covers the excess, else the longest, so that as few as possible are lost.

    Parameters
    ----------
    settings : mapping
        The fitted settings.
    predicted : mapping
        ``{stage: seconds}`` from :func:`fit`.
    seconds : float
        Time available for the stages.
    num_params, vector_bytes : int, optional
        Parameters, and bytes of one vector of them (0: no memory check).
    memory : MemoryBudget, optional
        The analysis' memory budget.

    Returns
    -------
    dict
        ``{stage: reason}``, in stage order.

    Examples
    --------
    >>> predicted = {"loss": 1.0, "eigenvalues": 50.0, "block_spectra": 500.0, "trace": 40.0}
    >>> list(drop_stages(ls.BUDGETS["fast"], predicted, 100.0))
    ['block_spectra']
    """
    dropped: dict[str, str] = {}
    if memory is not None and vector_bytes > 0:
        dropped = memory_drops(
            settings, predicted, num_params=num_params, vector_bytes=vector_bytes, memory=memory
        )
    left = sum(t for name, t in predicted.items() if name not in dropped)
    candidates = [n for n in DROP_ORDER if n in predicted and n not in dropped and predicted[n] > 0]
    while left > seconds and candidates:
        # The first stage (in DROP_ORDER) whose time alone covers the excess, else the
        # longest: as few stages left out as the budget allows.
        over = left - seconds
        name = next((n for n in candidates if predicted[n] >= over), None)
        name = name or max(candidates, key=lambda n: predicted[n])
        dropped[name] = (
            f"predicted {predicted[name]:.0f} s at its smallest settings, and the stages "
            f"together {left:.0f} s for the {max(seconds, 0):.0f} s left of the time budget: "
            "raise time_budget=, or run it alone"
        )
        left -= predicted[name]
        candidates.remove(name)
    return {name: dropped[name] for name in predicted if name in dropped}
