r"""The front door: ``analyze(model, loader)`` and ``compare({...}, loader)``.

Each runs the engine's stages in a fixed order with budget-dependent settings, records every
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

import dataclasses
import datetime
import math
import platform
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from landscape._paths import check_writable
from landscape.data import DataSource
from landscape.linalg.block_density import js_distances
from landscape.linalg.density import spectral_density
from landscape.linalg.eigen import eigenvalues
from landscape.linalg.results import Estimate
from landscape.linalg.trace import frobenius_norm, trace
from landscape.losses import BatchLoss, Count, Criterion
from landscape.metrics.block_spectra import BlockSpectra, block_spectra, parameter_blocks
from landscape.metrics.coherence import coherence
from landscape.metrics.layerwise import layerwise
from landscape.metrics.learning_rate import max_learning_rate
from landscape.metrics.sharpness import SharpnessResult, sharpness
from landscape.metrics.subsets import SubsetSpread, subset_spread
from landscape.metrics.thresholds import optimizer_settings
from landscape.operators.hessian import hessian
from landscape.planning import Plan, fit, measure_costs
from landscape.problem import Problem, unwrap_model
from landscape.report.contents import (
    ExtremeEigenvalues,
    Interpolation,
    LearningRates,
    LossValue,
    StageCost,
)
from landscape.report.document import Comparison, Report
from landscape.surfaces.directions import random_directions
from landscape.surfaces.grid import Surface, surface
from landscape.surfaces.paths import interpolate

__all__ = ["BUDGETS", "analyze", "compare"]

Budget = Literal["fast", "standard", "thorough"]

BUDGETS: dict[str, dict[str, Any]] = {
    "fast": {
        "curvature_samples": 512,
        "top_k": 3,
        "bottom_k": 1,
        "tol": 1e-3,
        "trace_matvecs": 30,
        "frobenius_matvecs": 10,
        "density": (4, 30),
        "layer_probes": 10,
        "block_density": (1, 20),
        "subsets": 4,
        "surface_samples": 1024,
        "surface_1d": 21,
        "surface_2d": 11,
        "sharpness": ("sam", "asam", "gam"),
        "coherence_samples": 256,
        "lr_batches": 3,
        "lr_sizes": 3,
        "exact_samples": 32,
    },
    "standard": {
        "curvature_samples": 2048,
        "top_k": 10,
        "bottom_k": 3,
        "tol": 1e-4,
        "trace_matvecs": 99,
        "frobenius_matvecs": 30,
        "density": (10, 80),
        "layer_probes": 30,
        "block_density": (2, 40),
        "subsets": 4,
        "surface_samples": 2048,
        "surface_1d": 41,
        "surface_2d": 25,
        "sharpness": ("sam", "asam", "gam", "pacbayes", "pacbayes_mag"),
        "coherence_samples": 512,
        "lr_batches": 5,
        "lr_sizes": 4,
        "exact_samples": 64,
    },
    "thorough": {
        "curvature_samples": None,
        "top_k": 20,
        "bottom_k": 5,
        "tol": 1e-5,
        "trace_matvecs": 300,
        "frobenius_matvecs": 100,
        "density": (20, 100),
        "layer_probes": 100,
        "block_density": (4, 80),
        "subsets": 8,
        "surface_samples": None,
        "surface_1d": 51,
        "surface_2d": 51,
        "sharpness": ("sam", "asam", "gam", "pacbayes", "pacbayes_mag"),
        "coherence_samples": 2048,
        "lr_batches": 8,
        "lr_sizes": 6,
        "exact_samples": 128,
    },
}


def _arr(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=float)


class _Stages:
    """Runs named stages, times them, records their cost, and shows progress."""

    def __init__(self, names: list[str], progress: bool, label: str) -> None:
        self.costs: dict[str, dict[str, float]] = {}
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc=label, unit="stage")

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, float]]:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        cost = {"hvps": 0, "passes": 0, "seconds": 0.0}
        start = time.perf_counter()
        try:
            yield cost
        finally:
            cost["seconds"] = time.perf_counter() - start
            self.costs[name] = cost
            if self.bar is not None:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _loader_batch_size(data: Any) -> int | None:
    size = getattr(data, "batch_size", None)
    if isinstance(size, int):
        return size
    return None


def evaluate(
    model: nn.Module,
    data: Any,
    loss_fn: Criterion | None = None,
    *,
    batch_loss: BatchLoss | None = None,
    count: Count | None = None,
    max_samples: int | None = None,
) -> dict[str, float | None]:
    r"""Return the mean loss and (for classification) accuracy of ``model`` on ``data``.

    The loss is :math:`\sum_b w_b L_b / \sum_b w_b` (see :mod:`landscape.losses`): for a
    Hugging Face model, its own loss averaged over scored tokens; the accuracy counts the
    same units (next-token accuracy over scored tokens for a causal language model).

    Parameters
    ----------
    model : torch.nn.Module
        The model, evaluated in eval mode (its flags are restored).
    data : iterable of batches, or one batch
        As for :func:`landscape.hessian`.
    loss_fn, batch_loss, count : callable, optional
        As for :func:`landscape.hessian`.
    max_samples : int, optional
        Use only the first samples.

    Returns
    -------
    dict
        ``{"value": loss, "accuracy": accuracy or None, "num_classes": C or None}`` (the
        width of a classifier's output, for per-sample classification).

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> out = evaluate(model, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
    >>> sorted(out), out["num_classes"]
    (['accuracy', 'num_classes', 'value'], 2)
    """
    _check_model(model)
    problem = Problem(
        model,
        data,
        loss_fn,
        batch_loss=batch_loss,
        count=count,
        max_samples=max_samples,
        shard=False,
    )
    total, correct, units = 0.0, 0.0, 0.0
    classified, classes = True, None
    with problem.evaluation() as run, torch.no_grad():
        for batch in problem.batches():
            loss, outputs = run.forward(batch.data, batch.weight)
            total += float(loss) * batch.weight
            hits = run.correct(outputs, batch.data) if classified else None
            if hits is None:
                classified = False
                continue
            correct += float(hits[0])
            units += float(hits[1])
            if classes is None and problem.objective.weighs_samples:
                classes = _num_classes(outputs)
    accuracy = correct / units if classified and units > 0 else None
    return {
        "value": total / problem.total_weight,
        "accuracy": accuracy,
        "num_classes": classes if classified else None,
    }


def _num_classes(outputs: Any) -> int | None:
    # The width of a per-sample classifier's logits (None for other outputs).
    logits = outputs if isinstance(outputs, torch.Tensor) else getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[-1] > 1:
        return int(logits.shape[-1])
    return None


def _default_batch_sizes(b: int, n: int, count: int) -> list[int]:
    sizes = {min(b, n)}
    for factor in (4, 16, 64, 256):
        if len(sizes) >= count:
            break
        if b // factor >= 2:
            sizes.add(b // factor)
        if len(sizes) < count and b * factor <= n:
            sizes.add(b * factor)
    return sorted(sizes)


def analyze(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None = None,
    *,
    budget: Budget = "fast",
    optimizer: torch.optim.Optimizer | None = None,
    batch_loss: BatchLoss | None = None,
    count: Count | None = None,
    seed: int = 0,
    progress: bool = True,
    surfaces: bool = True,
    learning_rates: bool = True,
    path: str | None = None,
    backend: str = "auto",
    time_budget: float | None = None,
    dry_run: bool = False,
) -> Report | Plan:
    r"""Analyze the loss landscape around ``model`` on ``loader``: numbers, plots, a report.

    Runs, with the settings of ``budget`` (see :data:`BUDGETS` and the module docstring):
    loss and accuracy; top and bottom Hessian eigenvalues with residuals
    (:func:`landscape.eigenvalues`); trace ± stderr (Hutch++) and :math:`\lVert H\rVert_F`;
    the SLQ spectral density with outliers and negative mass; per-layer traces (HAWQ-V2);
    1-D and 2-D filter-normalized surfaces (Li et al. 2018); sharpness measures with their
    invariance flags; gradient coherence and noise scale; and the maximum stable learning
    rate for SGD and Adam at the loader's batch size plus a small sweep (from
    ``optimizer``'s hyperparameters and state when given). Every stage records its cost.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model; never modified.
    loader : iterable of batches, or one batch
        Training data (a ``DataLoader``, a list of batches, or one batch).
    loss_fn : callable, optional
        Mean-reduced criterion (default: cross-entropy / MSE / ``.loss``).
    budget : {"fast", "standard", "thorough"}, optional
        How much to compute.
    optimizer : torch.optim.Optimizer, optional
        Its kind, hyperparameters and (Adam) state set the learning-rate analysis.
    batch_loss : callable, optional
        ``batch_loss(model, batch) -> mean loss`` for other loss formats.
    count : callable, optional
        ``count(batch) -> units`` a batch's mean loss is over (its weight); default: scored
        tokens for language models, samples otherwise (see :mod:`landscape.losses`).
    seed : int, optional
        Seed of every random choice; same seed, same numbers.
    progress : bool, optional
        Show a progress bar over stages (notebook-aware ``tqdm.auto``).
    surfaces, learning_rates : bool, optional
        Skip the surface or learning-rate stages.
    backend : str, optional
        How Hessian products are computed (see :class:`landscape.HessianOperator`):
        ``"auto"`` (default) measures the candidates on the model's first batch and
        records its choice in ``report.metadata["backend"]``; a fixed backend makes the
        report bitwise reproducible anywhere.
    time_budget : float, optional
        Seconds the analysis may take: the unit costs are measured on the model first, each
        stage is predicted, and the budget's settings are scaled down to fit
        (:mod:`landscape.planning`); the report's ``"plan"`` section has what was scaled and
        the predicted and measured seconds of every stage.
    dry_run : bool, optional
        Measure and plan, print the plan and return it (a :class:`~landscape.planning.Plan`)
        without running the stages.
    path : str, optional
        Save the report to this HDF5 file when done.

    Returns
    -------
    Report or Plan
        ``print(report.summary())``, ``report.plot("spectrum")``, ``report.save("run.h5")``,
        ``report.to_html("run.html")``; displays itself in Jupyter. With ``dry_run``, the
        plan.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or ``seed`` is not an int.
    ValueError
        For an unknown budget, a model without parameters, and bad data or losses (see
        :func:`landscape.hessian`).
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
    _check_model(model)
    model = unwrap_model(model)
    _check_budget(budget)
    _check_seed(seed)
    if path is not None:  # fail now, not after the whole analysis
        path = check_writable(path, "report")
    settings = dict(BUDGETS[budget])
    start = time.perf_counter()
    generator_seed = int(seed)
    losses = {"batch_loss": batch_loss, "count": count}
    plan = None
    if time_budget is not None or dry_run:
        plan = _plan(
            model, loader, loss_fn, losses, budget, time_budget, backend, optimizer,
            surfaces=surfaces, learning_rates=learning_rates,
        )  # fmt: skip
        if dry_run:
            print(plan.table())
            return plan
        settings = plan.settings
    names = ["loss", "eigenvalues", "subsets", "trace", "density", "layerwise", "block_spectra"]
    names += ["surfaces"] if surfaces else []
    names += ["sharpness", "coherence"]
    names += ["learning_rate"] if learning_rates else []
    stages = _Stages(names, progress, f"landscape.analyze ({budget})")
    found: dict[str, Any] = {"notes": {}}
    options = {**losses, "backend": backend, "max_samples": settings["curvature_samples"]}
    try:
        with stages.stage("loss"):
            loss = evaluate(model, loader, loss_fn, **losses)
            found["loss"] = LossValue(loss["value"], loss["accuracy"], loss["num_classes"])
        H = hessian(model, loader, loss_fn, **options)
        P = H.shape[0]

        with stages.stage("eigenvalues") as cost:
            found["eigenvalues"] = _eigenvalues(H, P, settings, generator_seed)
            cost["hvps"] = found["eigenvalues"].num_matvecs
            cost["passes"] = found["eigenvalues"].num_passes

        with stages.stage("subsets") as cost:
            try:
                found["subsets"] = _subsets(model, loader, loss_fn, options, settings, seed, cost)
            except ValueError as error:  # too few samples for k subsets: say so, go on
                found["notes"]["subsets"] = str(error)

        with stages.stage("trace") as cost:
            tr = trace(H, num_matvecs=settings["trace_matvecs"], seed=generator_seed + 2)
            fro = frobenius_norm(H, settings["frobenius_matvecs"], seed=generator_seed + 3)
            cost["hvps"] = tr.num_matvecs + fro.num_matvecs
            cost["passes"] = tr.num_passes + fro.num_passes
        found["trace"], found["frobenius"] = _without_samples(tr), _without_samples(fro)

        with stages.stage("density") as cost:
            probes, steps = settings["density"]
            density = spectral_density(H, probes, min(steps, P), seed=generator_seed + 4)
            cost["hvps"], cost["passes"] = density.num_matvecs, density.num_passes
        found["density"] = density

        with stages.stage("layerwise") as cost:
            layers = layerwise(
                model,
                loader,
                loss_fn,
                metrics=("trace",),
                num_probes=settings["layer_probes"],
                seed=generator_seed + 5,
                **options,
            )
            cost["hvps"], cost["passes"] = layers.num_matvecs, layers.num_passes
        found["layerwise"] = layers

        with stages.stage("block_spectra") as cost:
            found["block_spectra"] = _block_spectra(
                model, loader, loss_fn, options, settings, seed, cost
            )

        if surfaces:
            with stages.stage("surfaces") as cost:
                found.update(
                    _surfaces(model, loader, loss_fn, losses, settings, generator_seed, cost)
                )

        with stages.stage("sharpness") as cost:
            found["sharpness"] = _sharpness(
                model, loader, loss_fn, losses, settings, generator_seed, cost
            )

        with stages.stage("coherence") as cost:
            found["coherence"] = coherence(
                model,
                loader,
                loss_fn,
                **losses,
                backend=backend,
                max_samples=settings["coherence_samples"],
                seed=generator_seed + 7,
            )
            cost["passes"] = int(found["coherence"].num_passes)

        if learning_rates:
            with stages.stage("learning_rate") as cost:
                found["learning_rate"] = _learning_rates(
                    model,
                    loader,
                    loss_fn,
                    {**losses, "backend": backend},
                    settings,
                    optimizer,
                    generator_seed,
                    cost,
                )
    finally:
        stages.close()

    if plan is not None:
        plan.measured = {name: cost["seconds"] for name, cost in stages.costs.items()}
    metadata = _metadata(model, loader, budget, seed, start, loss_fn, losses)
    metadata["settings"] = settings
    metadata["backend"] = {"requested": backend, **H.backend_choices}
    metadata["precision"] = H.problem.precision
    report = Report(
        metadata=metadata,
        costs={name: StageCost(int(c["hvps"]), int(c["passes"]), c["seconds"])
               for name, c in stages.costs.items()},
        plan=plan,
        **found,
    )  # fmt: skip
    if path is not None:
        report.save(path)
    return report


def _eigenvalues(H: Any, P: int, settings: dict[str, Any], seed: int) -> ExtremeEigenvalues:
    """Return the top and bottom eigenvalues with their residuals (not the vectors).

    Returns
    -------
    ExtremeEigenvalues
        Both runs.
    """
    top = eigenvalues(H, k=min(settings["top_k"], P), which="largest", tol=settings["tol"],
                      seed=seed)  # fmt: skip
    with _quiet():
        bottom = eigenvalues(
            H,
            k=min(settings["bottom_k"], P),
            which="smallest",
            tol=settings["tol"],
            seed=seed + 1,
            max_matvecs=max(150, 50 * settings["bottom_k"]),
        )
    return ExtremeEigenvalues(top.without_vectors(), bottom.without_vectors(), settings["tol"])


def _without_samples(estimate: Estimate) -> Estimate:
    return dataclasses.replace(estimate, samples=None)


def _plan(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None,
    losses: dict[str, Any],
    budget: str,
    time_budget: float | None,
    backend: str,
    optimizer: torch.optim.Optimizer | None,
    **options: bool,
) -> Plan:
    settings = BUDGETS[budget]
    units = measure_costs(
        model, loader, loss_fn, losses, settings["curvature_samples"], backend,
        exact_samples=settings["exact_samples"],
    )  # fmt: skip
    kinds = {"sgd", "adam"} | ({optimizer_settings(optimizer).kind} if optimizer else set())
    seconds = math.inf if time_budget is None else time_budget - units.seconds
    blocks = len(parameter_blocks(model, "modules"))
    fitted, scaled, predicted = fit(
        settings, units, seconds, optimizers=len(kinds), blocks=blocks, **options
    )
    return Plan(budget, time_budget or math.inf, fitted, scaled, predicted, units)


def _subsets(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None,
    options: dict[str, Any],
    settings: dict[str, Any],
    seed: int,
    cost: dict[str, float],
) -> SubsetSpread:
    """λmax and the trace over disjoint subsets of the curvature sample (PyHessian #5).

    Returns
    -------
    SubsetSpread
        Per quantity: value, subset values, interval, verdict, suggested samples.
    """
    population = Problem(model, loader, loss_fn, batch_loss=options.get("batch_loss"),
                         count=options.get("count"), shard=False).num_samples  # fmt: skip
    spread = subset_spread(
        model,
        loader,
        loss_fn,
        num_subsets=settings["subsets"],
        population=population,
        trace_matvecs=max(12, settings["trace_matvecs"] // 3),
        tol=max(settings["tol"], 1e-3),
        seed=seed + 11,
        **options,
    )
    cost["hvps"], cost["passes"] = spread.num_matvecs, spread.num_passes
    return spread


_BLOCK_PRODUCTS = 400


def _block_spectra(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None,
    options: dict[str, Any],
    settings: dict[str, Any],
    seed: int,
    cost: dict[str, float],
) -> BlockSpectra | None:
    """Per-module Hessian spectra and their heterogeneity JS^0 (Zhang et al. 2024).

    Returns
    -------
    BlockSpectra or None
        The blocks' densities and distances (normalized by each block's 10th-largest
        eigenvalue where every block has one); ``None`` for a model with one block.
    """
    blocks = len(parameter_blocks(model, "modules"))
    if blocks < 2:
        return None
    probes, steps = settings["block_density"]
    # at most _BLOCK_PRODUCTS products: fewer steps for many blocks (never below 10)
    steps = max(10, min(steps, _BLOCK_PRODUCTS // max(blocks * probes, 1)))
    result = block_spectra(
        model, loader, loss_fn, blocks="modules", num_probes=probes, num_steps=steps,
        normalize=None, seed=seed + 12, **options,
    )  # fmt: skip
    cost["hvps"], cost["passes"] = result.num_matvecs, result.num_passes
    normalize = min(10, steps)
    try:
        distances = js_distances(result.densities, normalize=normalize)
    except ValueError:  # a block without a positive k-th eigenvalue: compare raw spectra
        return result
    return dataclasses.replace(result, distances=distances, normalize=normalize)


@contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _surfaces(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None,
    losses: dict[str, Any],
    settings: dict[str, Any],
    seed: int,
    cost: dict[str, float],
) -> dict[str, Surface]:
    dirs = random_directions(model, n=2, norm="filter", ignore="biasbn", seed=seed + 6)
    common = {
        "loss_fn": loss_fn,
        **losses,
        "max_samples": settings["surface_samples"],
        "progress": False,
    }
    line = surface(model, loader, dirs[0], np.linspace(-1, 1, settings["surface_1d"]), **common)
    num = settings["surface_2d"]
    plane = surface(model, loader, dirs, np.linspace(-1, 1, num), **common)
    cost["passes"] = line.num_points + plane.num_points  # one loss evaluation per point
    return {"surface_1d": line, "surface_2d": plane}


def _sharpness(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None,
    losses: dict[str, Any],
    settings: dict[str, Any],
    seed: int,
    cost: dict[str, float],
) -> SharpnessResult:
    # λmax is the eigenvalue stage's; the sharpness stage adds the perturbation measures.
    result = sharpness(
        model,
        loader,
        loss_fn,
        **losses,
        measures=settings["sharpness"],
        seed=seed + 8,
        max_samples=settings["curvature_samples"],
    )
    cost["passes"] = sum(m.num_passes for m in result.measures.values())
    cost["hvps"] = sum(m.num_hvps for m in result.measures.values())
    return result


def _learning_rates(
    model: nn.Module,
    loader: Any,
    loss_fn: Criterion | None,
    losses: dict[str, Any],
    settings: dict[str, Any],
    optimizer: torch.optim.Optimizer | None,
    seed: int,
    cost: dict[str, float],
) -> LearningRates:
    first = next(iter(model.parameters()))
    source = DataSource(
        loader,
        device=first.device,
        dtype=first.dtype,
        max_samples=settings["curvature_samples"],
        shard=False,
    )
    sizes_seen = [batch.num_samples for batch in source]  # one pass: the sample count
    n = source.num_samples
    b = _loader_batch_size(loader) or sizes_seen[0]
    sizes = _default_batch_sizes(b, n, settings["lr_sizes"])
    kinds: dict[str, Any] = {"sgd": "sgd", "adam": "adam"}
    own = None
    if optimizer is not None:
        # The user's own optimizer (with its hyperparameters and state) under its kind's name.
        own = optimizer_settings(optimizer).kind
        kinds[own] = optimizer
    results = {}
    for name, opt in kinds.items():
        result = max_learning_rate(
            model,
            loader,
            loss_fn,
            **losses,
            batch_sizes=sizes,
            optimizer=opt,
            num_batches=settings["lr_batches"],
            exact_samples=settings["exact_samples"],
            max_samples=settings["curvature_samples"],
            seed=seed + 9,
        )
        results[name] = result
        cost["hvps"] += result.num_hvps
        cost["passes"] += result.num_passes
    return LearningRates(results, loader_batch_size=b, optimizer_kind=own)


def _metadata(
    model: nn.Module,
    loader: Any,
    budget: str,
    seed: int,
    start: float,
    loss_fn: Any,
    losses: dict[str, Any],
) -> dict[str, Any]:
    import landscape

    problem = Problem(model, loader, loss_fn, **losses, shard=False)
    for _ in problem.batches():  # the sample count is known after one pass
        pass
    first = next(iter(model.parameters()))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loss_name = problem.objective.criterion_name
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
        "loss": loss_name,
        "seconds": time.perf_counter() - start,
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
    loader: Any,
    loss_fn: Criterion | None = None,
    *,
    budget: Budget = "fast",
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    batch_loss: BatchLoss | None = None,
    count: Count | None = None,
    seed: int = 0,
    progress: bool = True,
    interpolation_points: int = 25,
    path: str | None = None,
    backend: str = "auto",
) -> Comparison:
    r"""Compare 2–4 minima of the same architecture side by side (e.g. SGD vs Adam).

    Runs :func:`analyze` on each model (same budget and seed, so the same random choices),
    the linear interpolation between the first two models with its loss barrier
    :math:`\max_t L((1-t)\theta_a + t\theta_b) - ((1-t)L_a + tL_b)` (Goodfellow et al.
    2015; Frankle et al. 2020), and 2-D filter-normalized surfaces drawn on one shared color
    scale. Measures that are not invariant to layer rescaling are flagged: their
    differences may be scale artifacts (Dinh et al. 2017).

    Parameters
    ----------
    models : mapping of str to torch.nn.Module
        2 to 4 named models with identical parameter names and shapes.
    loader : iterable of batches, or one batch
        The data all models are analyzed on.
    loss_fn : callable, optional
        As for :func:`analyze`.
    budget : {"fast", "standard", "thorough"}, optional
        As for :func:`analyze`.
    optimizers : mapping of str to torch.optim.Optimizer, optional
        Each model's optimizer (for its learning-rate analysis).
    batch_loss, count : callable, optional
        As for :func:`analyze`.
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
    if not isinstance(models, Mapping):
        raise TypeError(
            "compare takes a mapping of names to models, e.g. {'sgd': model_a, 'adam': "
            f"model_b}}; got {type(models).__name__}."
        )
    if not 2 <= len(models) <= 4:
        raise ValueError(f"compare takes 2 to 4 models; got {len(models)}.")
    for model in models.values():
        _check_model(model)
    models = {name: unwrap_model(model) for name, model in models.items()}
    _check_budget(budget)
    _check_seed(seed)
    _check_same_architecture(models)
    if path is not None:  # fail now, not after analyzing every model
        path = check_writable(path, "comparison")
    names = list(models)
    optimizers = dict(optimizers or {})
    reports = {
        name: analyze(
            model,
            loader,
            loss_fn,
            budget=budget,
            optimizer=optimizers.get(name),
            batch_loss=batch_loss,
            count=count,
            seed=seed,
            progress=progress,
            backend=backend,
        )
        for name, model in models.items()
    }
    a, b = names[0], names[1]
    path_ab = interpolate(
        models[a],
        models[b],
        loader,
        num=interpolation_points,
        extend=0.0,
        loss_fn=loss_fn,
        batch_loss=batch_loss,
        count=count,
        progress=False,
    )
    first = next(iter(reports.values()))
    metadata = {
        "budget": budget,
        "settings": first.metadata.get("settings"),
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    comparison = Comparison(reports, Interpolation((a, b), path_ab), metadata)
    if path is not None:
        comparison.save(path)
    return comparison
