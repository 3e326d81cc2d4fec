r"""The front door: ``analyze(model, data)``, ``plan(model, data)`` and ``compare({...}, data)``.

``analyze`` builds one :class:`~landscape.problem.Problem` and runs the stages of
:data:`landscape.stages.STAGES` on it in a fixed order with budget-dependent settings, records every
stage's cost (HVPs, passes over the data, seconds), and returns a document
(:class:`~landscape.report.document.Report` / :class:`~landscape.report.document.Comparison`)
that prints, plots, renders to HTML and saves to HDF5.

Budgets (measured on a 2-core CPU; see the README for the numbers):

========  ===============================================================================
budget    what it runs
========  ===============================================================================
fast      curvature on ≤512 samples: top-3 / bottom-1 eigenvalues (tol 1e-3), Hutch++ trace
          (30 HVPs), ‖H‖_F (10), SLQ density 4×30, per-layer traces (10 probes), 21-point 1-D
          and 11×11 2-D surfaces on ≤1024 samples, SAM/ASAM/GAM sharpness, coherence on 256
          samples, lr_max for SGD and Adam at the loader's batch size and two others
          (3 batches each)
standard  ≤2048 samples: top-10 / bottom-3 (tol 1e-4), trace 99, ‖H‖_F 30, density 10×80,
          layer traces 30 probes, 41-point 1-D and 25×25 2-D surfaces, + PAC-Bayes,
          coherence on 512, lr_max over 4 batch sizes (5 batches each)
thorough  all samples: top-20 / bottom-5 (tol 1e-5), trace 300, density 20×100,
          51-point and 51×51 surfaces, lr_max over 6 batch sizes (8 batches each)
========  ===============================================================================
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from landscape._fingerprint import data_fingerprint, describe, fingerprint
from landscape._paths import check_writable
from landscape.losses import Criterion
from landscape.memory import MemoryBudget, MemoryBudgetError, budget_scope, vector_bytes
from landscape.metrics.block_spectra import parameter_blocks
from landscape.metrics.evaluate import evaluate
from landscape.metrics.optimizers.instances import optimizer_list
from landscape.metrics.thresholds import optimizer_settings
from landscape.planning import Plan, measure_costs
from landscape.problem import Problem, as_problem, unwrap_model
from landscape.records import jsonable
from landscape.report.contents import Interpolation, StageCost
from landscape.report.document import Comparison, Report
from landscape.report.sections import NOT_RUN
from landscape.stages import (
    DROP_ORDER,
    STAGES,
    Stage,
    StageContext,
    active_stages,
    drop_stages,
    fit,
    memory_drops,
)
from landscape.surfaces.paths import interpolate

__all__ = ["BUDGETS", "analyze", "compare", "evaluate", "plan"]

Budget = Literal["fast", "standard", "thorough"]

# One row per setting: its value in the fast, standard and thorough budgets.
_BUDGET_TABLE: tuple[tuple[Any, ...], ...] = (
    ("curvature_samples", 512, 2048, None),
    ("top_k", 3, 10, 20),
    ("bottom_k", 1, 3, 5),
    ("bottom_matvecs", 150, 150, 250),
    ("tol", 1e-3, 1e-4, 1e-5),
    ("trace_matvecs", 30, 99, 300),
    ("frobenius_matvecs", 10, 30, 100),
    ("density", (4, 30), (10, 80), (20, 100)),
    ("layer_probes", 10, 30, 100),
    ("block_density", (1, 20), (2, 40), (4, 80)),
    ("subsets", 4, 4, 8),
    ("surface_samples", 1024, 2048, None),
    ("surface_1d", 21, 41, 51),
    ("surface_2d", 11, 25, 51),
    (
        "sharpness",
        ("sam", "asam", "gam"),
        ("sam", "asam", "gam", "pacbayes", "pacbayes_mag"),
        ("sam", "asam", "gam", "pacbayes", "pacbayes_mag"),
    ),
    ("coherence_samples", 256, 512, 2048),
    ("lr_batches", 3, 5, 8),
    ("lr_sizes", 3, 4, 6),
    ("exact_samples", 32, 64, 128),
)
BUDGETS: dict[str, dict[str, Any]] = {
    name: {row[0]: row[1 + i] for row in _BUDGET_TABLE}
    for i, name in enumerate(("fast", "standard", "thorough"))
}
"""The settings of each budget (see the module docstring), by setting name."""


class _Progress:
    """A progress bar over the stages (notebook-aware ``tqdm.auto``), or nothing."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=label, unit="stage")

    def show(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _deprecated(options: dict[str, Any], data: Any) -> tuple[Any, bool]:
    """Take the 0.1 spellings out of ``options``: ``loader=`` and ``dry_run=``.

    Returns
    -------
    tuple
        ``data`` (``loader`` when given) and whether a dry run was asked for.
    """
    if "loader" in options:
        warnings.warn(
            "analyze(loader=...) is now analyze(model, data) (landscape 0.2).",
            DeprecationWarning,
            stacklevel=3,
        )
        data = options.pop("loader")
    dry_run = bool(options.pop("dry_run", False))
    if dry_run:
        warnings.warn(
            "analyze(..., dry_run=True) is now ls.plan(...) (landscape 0.2).",
            DeprecationWarning,
            stacklevel=3,
        )
    return data, dry_run


def analyze(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    budget: Budget = "fast",
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
    seed: int = 0,
    progress: bool = True,
    surfaces: bool = True,
    learning_rates: bool = True,
    path: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    time_budget: float | None = None,
    memory_budget: Any = None,
    **options: Any,
) -> Report:
    r"""Analyze the loss landscape around the model on its data: numbers, plots, a report.

    Builds one :class:`~landscape.problem.Problem` (or takes yours) and runs on it, with the
    settings of ``budget`` (see :data:`BUDGETS` and the module docstring), the stages of
    :data:`landscape.stages.STAGES`: loss and accuracy; top and bottom Hessian eigenvalues
    with residuals (:func:`landscape.eigenvalues`); their spread over subsets of the data;
    trace ± stderr (Hutch++) and :math:`\lVert H\rVert_F`; the SLQ spectral density with
    outliers and negative mass; per-layer traces (HAWQ-V2); per-module spectra and their
    heterogeneity; 1-D and 2-D filter-normalized surfaces (Li et al. 2018); sharpness
    measures with their invariance flags; gradient coherence and noise scale; and the
    maximum stable learning rate for SGD and Adam at the loader's batch size plus a small
    sweep (from ``optimizer``'s hyperparameters and state when given). Every stage records
    its cost.

    Parameters
    ----------
    problem : Problem or torch.nn.Module
        A :class:`~landscape.problem.Problem`, or the trained model (never modified).
    data : iterable of batches, or one batch, optional
        With a model: its training data (a ``DataLoader``, a list of batches, or one batch).
    loss_fn : callable, optional
        With a model: the mean-reduced criterion (default: cross-entropy / MSE / ``.loss``).
    budget : {"fast", "standard", "thorough"}, optional
        How much to compute.
    optimizer : torch.optim.Optimizer or sequence of them, optional
        The optimizer the model trains with — any ``torch.optim`` class or third-party
        optimizer, or several that train it together (``[muon, adamw]``). Its class,
        hyperparameters and state set the learning-rate analysis of the optimizer in use
        and its findings (:func:`landscape.max_learning_rate`: a frozen-state threshold for
        optimizers with a linear step, the critical sharpness along its own update for the
        others).
    seed : int, optional
        Seed of every random choice; same seed, same numbers. Each stage draws from a seed
        derived from its name (:func:`landscape.stages.stage_seed`).
    progress : bool, optional
        Show a progress bar over stages (notebook-aware ``tqdm.auto``).
    surfaces, learning_rates : bool, optional
        Skip the surface or learning-rate stages.
    path : str, optional
        Save the report to this HDF5 file, after every stage (atomically). Calling
        ``analyze`` again with the same path, model, data and settings resumes: finished
        stages are read back, not recomputed. A file made with other settings, model or
        data is refused.
    backend : str, optional
        How Hessian products are computed (see :class:`landscape.HessianOperator`):
        ``"auto"`` (default) measures the candidates on the model's first batch and
        records its choice in ``report.metadata["backend"]``; a fixed backend makes the
        report bitwise reproducible anywhere.
    time_budget : float, optional
        Seconds the analysis may take: the unit costs are measured on the model first, each
        stage is predicted, and the budget's settings are scaled down to fit
        (:func:`plan`); the report's ``"plan"`` section has what was scaled and the
        predicted and measured seconds of every stage. Stages that do not fit even at
        their smallest settings are left out, and the report says so ("Stages not run").
    memory_budget : int, float or str, optional
        Memory every stage may take beyond the model and one batch's activations: bytes,
        a string (``"8GB"``) or a fraction of the free memory; default a quarter of what is
        free when each computation starts (:mod:`landscape.memory`). Lanczos bases, probe
        blocks and per-example chunks are sized to it; a stage that cannot fit at its
        smallest is not run, and the report says why.
    **options
        With a model, the options of :class:`~landscape.problem.Problem` (``batch_loss``,
        ``count``, ``params``, ``mode``, ``precision``, ``max_batches``, ...).

    Returns
    -------
    Report
        ``print(report.summary())``, ``report.plot("spectrum")``, ``report.save("run.h5")``,
        ``report.to_html("run.html")``; displays itself in Jupyter.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or ``seed`` is not an int.
    ValueError
        For an unknown budget, a model without parameters, bad data or losses (see
        :func:`landscape.hessian`), or a ``path`` made by another analysis.
    FileNotFoundError, IsADirectoryError
        If ``path`` cannot be written (checked before the analysis starts).
    FloatingPointError
        If the loss or its curvature is not finite (with the batch index).

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
    >>> report = analyze(model, data, progress=False, surfaces=False, learning_rates=False)
    >>> report.eigenvalues.top.values.shape
    torch.Size([3])
    """
    data, dry_run = _deprecated(options, data)
    if dry_run:
        found_plan = plan(
            problem, data, loss_fn, budget=budget, time_budget=time_budget, optimizer=optimizer,
            surfaces=surfaces, learning_rates=learning_rates, backend=backend, **options,
        )  # fmt: skip
        print(found_plan.table())
        return found_plan  # type: ignore[return-value]
    _check_budget(budget)
    _check_seed(seed)
    if path is not None:  # fail now, not after the whole analysis
        path = check_writable(path, "report")
    start = time.perf_counter()
    with budget_scope(memory_budget):  # every stage sizes itself to one budget
        problem = _one_problem(problem, data, loss_fn, options)
        switches = {"surfaces": surfaces, "learning_rates": learning_rates}
        stages = active_stages(**switches)
        bar = _Progress(len(stages), progress, f"landscape.analyze ({budget})")
        try:  # the bar shows from the first pass over the data on (counting it, resuming)
            identity = previous = None
            if path is not None:
                identity = _identity(
                    problem, budget, time_budget, seed, backend, optimizer, switches, memory_budget
                )
                previous = _resumable(path, identity)
            the_plan = previous.plan if previous is not None else None
            if the_plan is None and time_budget is not None:
                the_plan = plan(
                    problem, budget=budget, time_budget=time_budget, optimizer=optimizer,
                    backend=backend, memory_budget=memory_budget, **switches,
                )  # fmt: skip
            settings = the_plan.settings if the_plan is not None else dict(BUDGETS[budget])
            context = StageContext(problem, settings, int(seed), backend, optimizer)
            metadata = _metadata(problem, budget, seed, settings)
            if identity is not None:
                metadata["resume"] = identity
            found, costs = _read_back(previous, stages)
            dropped = (
                dict(the_plan.dropped) if the_plan is not None else _over_memory(problem, settings)
            )
            for stage in stages:
                bar.show(stage.name)
                late = _out_of_time(the_plan, stage.name, time.perf_counter() - start)
                if stage.name not in costs | dropped and late is not None:
                    dropped[stage.name] = late
                if stage.name in dropped:
                    context.notes[NOT_RUN + stage.name] = dropped[stage.name]
                elif stage.name not in costs:
                    ran = _run(stage, context, found)
                    if ran is not None:
                        costs[stage.name] = ran
                    if path is not None:  # every finished stage is on disk
                        _report(metadata, context, found, costs, the_plan, start).save(path)
                bar.done()
        finally:
            bar.close()
    if the_plan is not None:
        the_plan.measured = {name: cost.seconds for name, cost in costs.items()}
    report = _report(metadata, context, found, costs, the_plan, start)
    if path is not None:
        report.save(path)
    return report


def _over_memory(problem: Problem, settings: Mapping[str, Any]) -> dict[str, str]:
    """Return the stages whose smallest need is over the memory budget (no plan was made).

    Returns
    -------
    dict
        ``{stage: reason}`` (:func:`landscape.stages.memory_drops`).
    """
    space = problem.space
    return memory_drops(
        settings,
        [stage.name for stage in STAGES],
        num_params=space.dim,
        vector_bytes=vector_bytes(space.dim, space.dtype),
        memory=MemoryBudget.resolve(None, problem.device),
    )


#: With a time budget, a stage is left out when the time spent plus its prediction would
#: pass the budget by more than this factor (the predictions' spread on real models).
_TIME_SLACK = 1.1


def _out_of_time(the_plan: Plan | None, name: str, elapsed: float) -> str | None:
    """Return why a stage no longer fits the time budget as it went, or ``None``.

    The plan fits the predictions; this guards the budget against predictions that were
    low (a stage that did not converge, a machine that got busier).

    Returns
    -------
    str or None
        The reason, for the report.
    """
    if the_plan is None or not math.isfinite(the_plan.time_budget) or name not in DROP_ORDER:
        return None  # the loss and the extreme eigenvalues always run
    predicted = the_plan.predicted.get(name, 0.0)
    if elapsed + predicted <= _TIME_SLACK * the_plan.time_budget:
        return None
    return (
        f"{elapsed:.0f} s of the {the_plan.time_budget:.0f} s time budget had passed and its "
        f"predicted {predicted:.0f} s would pass the budget: raise time_budget=, or run it alone"
    )


def _run(stage: Stage, context: StageContext, found: dict[str, Any]) -> StageCost | None:
    """Run one stage into ``found``; ``None`` (and a note) where it does not fit in memory.

    Returns
    -------
    StageCost or None
        Its products, passes and seconds.
    """
    started = time.perf_counter()
    try:
        fields, matvecs, passes = stage.run(context)
    except MemoryBudgetError as error:  # checked before allocating: the analysis goes on
        context.notes[NOT_RUN + stage.name] = str(error)
        return None
    found.update(fields)
    return StageCost(int(matvecs), int(passes), time.perf_counter() - started)


def _one_problem(problem: Any, data: Any, loss_fn: Any, options: dict[str, Any]) -> Problem:
    """Return the analysis' one problem, after the checks a front door owes its users.

    Returns
    -------
    Problem
        The problem.
    """
    if not isinstance(problem, Problem):
        _check_model(problem)
    return as_problem(problem, data, loss_fn, where="analyze", **options)


def _report(
    metadata: dict[str, Any],
    context: StageContext,
    found: dict[str, Any],
    costs: dict[str, StageCost],
    the_plan: Plan | None,
    start: float,
) -> Report:
    metadata = dict(metadata)
    metadata["seconds"] = time.perf_counter() - start
    if context._hessian is not None:
        metadata["backend"] = {"requested": context.backend, **context.hessian.backend_choices}
    else:
        metadata["backend"] = {"requested": context.backend}
    resumed = [name for name, cost in costs.items() if cost.resumed]
    if resumed:
        metadata["resumed_stages"] = resumed
    return Report(
        metadata=metadata,
        costs=dict(costs),
        plan=the_plan,
        notes=dict(context.notes) | dict(found.get("notes", {})),
        **{k: v for k, v in found.items() if k != "notes"},
    )


# -- resuming ---------------------------------------------------------------------------------


def _identity(
    problem: Problem,
    budget: str,
    time_budget: float | None,
    seed: int,
    backend: str,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None,
    switches: Mapping[str, bool],
    memory_budget: Any = None,
) -> dict[str, str]:
    """Return what a report file must match to be resumed: settings, model, optimizer, data.

    Returns
    -------
    dict of str to str
        ``settings`` (JSON), ``model_fingerprint`` and ``data_fingerprint``.
    """
    objective = problem.objective
    settings = {
        "budget": budget,
        "time_budget": time_budget,
        "memory_budget": None if memory_budget is None else str(memory_budget),
        "seed": int(seed),
        "backend": backend,
        **switches,
        "loss": describe(objective.batch_loss if objective.loss_fn is None else objective.loss_fn),
        "count": describe(objective.count),
        "parameters": list(problem.space.names),
        "mode": problem.mode,
        "precision": problem.precision,
        "optimizer": None if optimizer is None else optimizer_settings(optimizer).to_dict(),
    }
    model = problem.model
    tensors = {f"param/{n}": p for n, p in model.named_parameters()}
    tensors.update({f"buffer/{n}": b for n, b in model.named_buffers()})
    for j, instance in enumerate(optimizer_list(optimizer) if optimizer is not None else []):
        prefix = "optimizer" if j == 0 else f"optimizer{j}"
        for i, state in enumerate(instance.state_dict()["state"].values()):
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{prefix}/{i}/{key}"] = value
    source = problem.source
    return {
        "settings": json.dumps(jsonable(settings), sort_keys=True),
        "model_fingerprint": fingerprint(tensors),
        "data_fingerprint": data_fingerprint((b.data for b in source), source.num_samples),
    }


def _resumable(path: str, identity: dict[str, str]) -> Report | None:
    """Return the report an interrupted analysis left at ``path``, or ``None``.

    Returns
    -------
    Report or None
        The partial (or complete) report of the same analysis.

    Raises
    ------
    ValueError
        If the file is not a landscape report, or was made by another analysis.
    """
    if not os.path.exists(path):
        return None
    from landscape.report import load

    try:
        previous = load(path)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"{path!r} exists and is not a report this analysis can resume ({error}); delete it "
            "or choose another path."
        ) from error
    stored = previous.metadata.get("resume") if isinstance(previous, Report) else None
    if not isinstance(stored, Mapping):
        raise ValueError(
            f"{path!r} holds a report that cannot be resumed (no record of what made it); "
            "delete it or choose another path."
        )
    differing = [key for key, value in identity.items() if stored.get(key) != value]
    if differing:
        what = ", ".join(k.replace("_fingerprint", "").replace("_", " ") for k in differing)
        raise ValueError(
            f"{path!r} was made by an analysis with another {what}; refusing to resume into "
            "it. Delete it or choose another path."
        )
    return previous


def _read_back(
    previous: Report | None, stages: list[Stage]
) -> tuple[dict[str, Any], dict[str, StageCost]]:
    """Return the fields and costs of the stages an earlier run finished.

    Returns
    -------
    tuple
        ``(found, costs)``: report fields by name, and the finished stages' costs (marked
        ``resumed``).
    """
    found: dict[str, Any] = {"notes": {}}
    costs: dict[str, StageCost] = {}
    if previous is None:
        return found, costs
    found["notes"] = dict(previous.notes or {})
    for stage in stages:
        cost = previous.costs.get(stage.name)
        if cost is None:
            continue
        costs[stage.name] = StageCost(cost.num_matvecs, cost.passes, cost.seconds, True)
        for name in stage.fields:
            value = getattr(previous, name, None)
            if value is not None:
                found[name] = value
    return found, costs


# -- planning -----------------------------------------------------------------------------------


def plan(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    budget: Budget = "fast",
    time_budget: float | None = None,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
    surfaces: bool = True,
    learning_rates: bool = True,
    backend: str = "auto",
    memory_budget: Any = None,
    **options: Any,
) -> Plan:
    """Measure what one product costs on the model, predict every stage, fit a time budget.

    What :func:`analyze` does first with ``time_budget``; run alone, it analyzes nothing.
    The unit costs (:func:`landscape.planning.measure_costs`) are measured on the model and
    its data; each stage's cost is predicted from its declaration
    (:data:`landscape.stages.STAGES`), and the budget's settings are scaled down until they
    fit (:func:`landscape.stages.fit`).

    Parameters
    ----------
    problem, data, loss_fn : optional
        As for :func:`analyze`.
    budget : {"fast", "standard", "thorough"}, optional
        The settings to start from.
    time_budget : float, optional
        Seconds the analysis may take (default: no limit, the budget's settings as they are).
    optimizer : torch.optim.Optimizer, optional
        As for :func:`analyze` (its kind adds a learning-rate analysis).
    surfaces, learning_rates : bool, optional
        As for :func:`analyze`.
    backend : str, optional
        As for :func:`analyze`.
    memory_budget : int, float or str, optional
        As for :func:`analyze`: the measurement stays within a quarter of it, and stages
        whose smallest need is over it are left out (``plan.dropped``).
    **options
        Options of :class:`~landscape.problem.Problem`.

    Returns
    -------
    Plan
        ``plan.table()``, ``plan.settings``, ``plan.scaled``, ``plan.predicted``.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
    >>> p = plan(model, data, time_budget=60)
    >>> sorted(p.predicted)[:3]
    ['block_spectra', 'coherence', 'density']
    """
    _check_budget(budget)
    problem = _one_problem(problem, data, loss_fn, options)
    settings = BUDGETS[budget]
    with budget_scope(memory_budget):
        memory = MemoryBudget.resolve(None, problem.device)
        units = measure_costs(
            problem, settings["curvature_samples"], backend, exact_samples=settings["exact_samples"]
        )
    kinds = {"sgd", "adam"} | ({optimizer_settings(optimizer).key} if optimizer else set())
    seconds = math.inf if time_budget is None else time_budget - units.seconds
    blocks = len(parameter_blocks(problem.model, "modules"))
    fitted, scaled, predicted = fit(
        settings, units, seconds, optimizers=len(kinds), blocks=blocks,
        surfaces=surfaces, learning_rates=learning_rates,
    )  # fmt: skip
    dropped = drop_stages(
        fitted, predicted, seconds, num_params=units.num_params,
        vector_bytes=units.vector_bytes, memory=memory,
    )  # fmt: skip
    kept = {name: t for name, t in predicted.items() if name not in dropped}
    return Plan(budget, time_budget or math.inf, fitted, scaled, kept, units, dropped=dropped)


# -- metadata and checks --------------------------------------------------------------------------


def _metadata(problem: Problem, budget: str, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    import landscape

    model = problem.model
    first = next(iter(model.parameters()))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    unit = "samples" if problem.objective.weighs_samples else "units (scored tokens)"
    return {
        "landscape_version": landscape.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "seed": seed,
        "budget": budget,
        "model": type(model).__name__,
        "num_params": trainable,
        "num_samples": problem.num_samples,
        "weights": f"batches weighted by {unit}; total weight {problem.total_weight:g}",
        "device": str(first.device),
        "dtype": str(first.dtype).replace("torch.", ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loss": problem.objective.criterion_name,
        "settings": settings,
        "precision": problem.precision,
    }


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if next(iter(model.parameters()), None) is None:
        raise ValueError(
            f"{type(model).__name__} has no parameters; there is no landscape to analyze."
        )


def _check_budget(budget: Any) -> None:
    if not isinstance(budget, str) or budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}; got {budget!r}.")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__} {seed!r}.")


def _check_same_architecture(models: Mapping[str, nn.Module]) -> None:
    items = list(models.items())
    ref_name, ref = items[0]
    shapes = {n: tuple(p.shape) for n, p in ref.named_parameters()}
    for name, m in items[1:]:
        other = {n: tuple(p.shape) for n, p in m.named_parameters()}
        if other != shapes:
            missing = sorted(set(shapes) ^ set(other))
            differ = sorted(n for n in set(shapes) & set(other) if shapes[n] != other[n])
            raise ValueError(
                f"compare needs models of the same architecture: {ref_name!r} and {name!r} "
                f"differ (parameters only in one: {missing[:5]}; shapes differ: {differ[:5]})."
            )


def compare(
    models: Mapping[str, nn.Module],
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    budget: Budget = "fast",
    optimizers: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    interpolation_points: int = 25,
    path: str | None = None,
    backend: str = "auto",
    **options: Any,
) -> Comparison:
    r"""Compare 2–4 minima of the same architecture side by side (e.g. SGD vs Adam).

    Runs :func:`analyze` on each model (same budget and seed, so the same random choices;
    one problem whose variants share the data), the linear interpolation between the first
    two models with its loss barrier :math:`\max_t L((1-t)\theta_a + t\theta_b) - ((1-t)L_a
    + tL_b)` (Goodfellow et al. 2015; Frankle et al. 2020), and 2-D filter-normalized
    surfaces drawn on one shared color scale. Measures that are not invariant to layer
    rescaling are flagged: their differences may be scale artifacts (Dinh et al. 2017).

    Parameters
    ----------
    models : mapping of str to torch.nn.Module
        2 to 4 named models with identical parameter names and shapes.
    data : iterable of batches, or one batch
        The data all models are analyzed on.
    loss_fn : callable, optional
        As for :func:`analyze`.
    budget : {"fast", "standard", "thorough"}, optional
        As for :func:`analyze`.
    optimizers : mapping of str to torch.optim.Optimizer, optional
        Each model's optimizer (for its learning-rate analysis), of any class, or a list of
        optimizers for a model trained by several (``{"Muon": [muon, adamw]}``).
    seed : int, optional
        Seed of every random choice.
    progress : bool, optional
        Progress bars.
    interpolation_points : int, optional
        Points on [0, 1] of the interpolation path.
    path : str, optional
        Save the comparison to this HDF5 file.
    backend : str, optional
        How Hessian products are computed, as for :func:`analyze`.
    **options
        Options of :class:`~landscape.problem.Problem` (``batch_loss``, ``count``, ...).

    Returns
    -------
    Comparison
        Side-by-side summary, overlaid plots, HTML and HDF5.

    Raises
    ------
    TypeError
        If ``models`` is not a mapping of names to ``nn.Module`` objects.
    ValueError
        For fewer than 2 or more than 4 models, different architectures, or an unknown
        budget.
    FileNotFoundError, IsADirectoryError
        If ``path`` cannot be written (checked before anything is computed).

    Examples
    --------
    >>> a = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    >>> b = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    >>> data = (torch.randn(32, 4), torch.randint(0, 3, (32,)))
    >>> c = compare({"a": a, "b": b}, data, progress=False)    # doctest: +SKIP
    >>> c.interpolation.barrier >= 0                           # doctest: +SKIP
    True
    """
    data, _ = _deprecated(options, data)
    if not isinstance(models, Mapping):
        raise TypeError(
            "compare takes a mapping of names to models, e.g. {'sgd': model_a, 'adam': "
            f"model_b}}; got {type(models).__name__}."
        )
    if not 2 <= len(models) <= 4:
        raise ValueError(f"compare takes 2 to 4 models; got {len(models)}.")
    for model in models.values():
        _check_model(model)
    _check_budget(budget)
    _check_seed(seed)
    names = list(models)
    _check_same_architecture({name: unwrap_model(model) for name, model in models.items()})
    first = as_problem(models[names[0]], data, loss_fn, where="compare", **options)
    problems = {name: first.with_model(model) for name, model in models.items()}
    if path is not None:  # fail now, not after analyzing every model
        path = check_writable(path, "comparison")
    optimizers = dict(optimizers or {})
    reports = {
        name: analyze(
            problem,
            budget=budget,
            optimizer=optimizers.get(name),
            seed=seed,
            progress=progress,
            backend=backend,
        )
        for name, problem in problems.items()
    }
    a, b = names[0], names[1]
    path_ab = interpolate(
        problems[a].model, problems[b].model, data, loss_fn, num=interpolation_points,
        extend=0.0, progress=False, **options,
    )  # fmt: skip
    metadata = {
        "budget": budget,
        "settings": next(iter(reports.values())).metadata.get("settings"),
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    comparison = Comparison(reports, Interpolation((a, b), path_ab), metadata)
    if path is not None:
        comparison.save(path)
    return comparison
