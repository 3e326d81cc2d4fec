"""Read report files of format version 1 into today's documents.

Version 1 (landscape 0.1 before typed documents) stored each section as a nested dictionary
in the analysis' own layout: eigenvalues as ``top``/``top_residuals`` arrays, the trace as
``value``/``stderr``/``num_hvps``, surfaces as ``coords_x``/``coords_y``, each optimizer's
learning-rate result beside ``loader_batch_size``, the comparison's path as ``t``/``loss``.
Here every section becomes its result record; fields a version-1 section lacks take empty
values (NaN, zero, empty arrays), and sections no renderer knows are left out.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from landscape.linalg.results import Eigenpairs, Estimate, SpectralDensity
from landscape.metrics.block_spectra import BlockSpectra
from landscape.metrics.coherence import CoherenceResult
from landscape.metrics.layerwise import LayerCurvature, LayerwiseResult
from landscape.metrics.learning_rate import LearningRateResult
from landscape.metrics.sharpness import SharpnessMeasure, SharpnessResult
from landscape.metrics.subsets import SubsetEstimate, SubsetSpread
from landscape.planning import Plan, UnitCosts
from landscape.records import Record, restore
from landscape.records import _hints as field_types
from landscape.report.contents import (
    ExtremeEigenvalues,
    Interpolation,
    LearningRates,
    LossValue,
    StageCost,
)
from landscape.report.document import Comparison, Report
from landscape.surfaces.grid import Surface

__all__ = ["comparison_from_version_1", "from_version_1", "report_from_version_1"]

R = typing.TypeVar("R", bound=Record)


def from_version_1(kind: str, data: Mapping[str, Any]) -> Report | Comparison:
    """Return the document a version-1 file holds.

    Parameters
    ----------
    kind : {"report", "comparison"}
        The file's kind.
    data : mapping
        Its data group, as plain values.

    Returns
    -------
    Report or Comparison
        The document.
    """
    if kind == "comparison":
        return comparison_from_version_1(data)
    return report_from_version_1(data)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _float(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _int(value: Any) -> int:
    number = _float(value, 0.0)
    return int(number) if math.isfinite(number) else 0


def _array(value: Any) -> np.ndarray:
    # A version-1 list or array as float64 (None items and "inf"-like strings as numbers).
    if value is None:
        return np.zeros(0)
    items = np.asarray(value, dtype=object)
    if items.ndim == 1:
        items = np.array([math.nan if v is None else v for v in items], dtype=object)
    return items.astype(np.float64)


def _tensor(value: Any) -> torch.Tensor:
    return torch.from_numpy(_array(value))


def _empty(hint: Any) -> Any:
    # The empty value of a type: what a field missing from a version-1 section gets.
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if type(None) in args:
        return None
    simple = {float: math.nan, int: 0, str: "", bool: False}
    if hint in simple:
        return simple[hint]
    if hint is np.ndarray:
        return np.zeros(0)
    if hint is torch.Tensor:
        return torch.zeros(0)
    if origin in (tuple, list, dict):
        return origin()
    if isinstance(hint, type) and issubclass(hint, Record):
        return record(hint, {})
    return None


def record(cls: type[R], data: Mapping[str, Any]) -> R:
    """Build a record from a version-1 dictionary, missing fields empty.

    Returns
    -------
    Record
        An instance of ``cls``.
    """
    hints = field_types(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data and data[f.name] is not None:
            values[f.name] = restore(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = _empty(hints[f.name])
    return cls(**values)


def _cost(section: Mapping[str, Any], key: str) -> int:
    return _int(section.get(key, section.get(f"num_{key}", 0)))


# -- sections -----------------------------------------------------------------------------------
def _eigenpairs(section: Mapping[str, Any], key: str) -> Eigenpairs | None:
    if section.get(key) is None:
        return None
    values = _tensor(section[key])
    residuals = section.get(f"{key}_residuals")
    res = _tensor(residuals) if residuals is not None else torch.full_like(values, math.nan)
    if res.shape != values.shape:
        res = torch.full_like(values, math.nan)
    converged = section.get(f"{key}_converged")
    flags = (
        torch.as_tensor([bool(c) for c in converged])
        if converged is not None and len(converged) == values.numel()
        else res.isfinite()
    )
    hvps = _cost(section, "hvps") if key == "top" else 0
    passes = _cost(section, "passes") if key == "top" else 0
    return Eigenpairs(values, None, res, flags, hvps, passes)


def _subsets(section: Mapping[str, Any]) -> SubsetSpread | None:
    if "lambda_max" not in section:
        return None

    def estimate(e: Mapping[str, Any]) -> SubsetEstimate:
        low, high = _float(e.get("low")), _float(e.get("high"))
        return SubsetEstimate(
            value=_float(e.get("value")),
            subsets=tuple(_float(v) for v in e.get("subsets") or ()),
            center=(low + high) / 2,
            half_width=(high - low) / 2,
            resolved=bool(e.get("resolved")),
            suggested_samples=_int(e.get("suggested_samples")),
        )

    population = section.get("population")
    return SubsetSpread(
        lambda_max=estimate(_map(section["lambda_max"])),
        trace=estimate(_map(section.get("trace"))),
        num_subsets=_int(section.get("num_subsets")),
        samples=_int(section.get("samples")),
        population=None if population is None else _int(population),
        confidence=_float(section.get("confidence"), 0.95),
        num_matvecs=_cost(section, "hvps"),
        num_passes=_cost(section, "passes"),
    )


def _estimate(section: Mapping[str, Any], method: str) -> Estimate | None:
    if "value" not in section:
        return None
    return Estimate(
        value=_float(section["value"]),
        stderr=_float(section.get("stderr")),
        num_matvecs=_cost(section, "hvps"),
        num_passes=_cost(section, "passes"),
        method=str(section.get("method") or method),
    )


def _density(section: Mapping[str, Any]) -> SpectralDensity | None:
    if section.get("grid") is None or section.get("density") is None:
        return None
    nodes = section.get("nodes")
    weights = section.get("weights")
    edge = section.get("bulk_edge")
    return SpectralDensity(
        grid=_tensor(section["grid"]),
        density=_tensor(section["density"]),
        nodes=torch.as_tensor(np.asarray(nodes, dtype=float))
        if nodes is not None
        else torch.zeros(1, 0),
        weights=torch.as_tensor(np.asarray(weights, dtype=float))
        if weights is not None
        else torch.zeros(1, 0),
        sigma=_float(section.get("sigma")),
        outliers=_tensor(section.get("outliers")),
        bulk_edge=None if edge is None else _float(edge),
        gap_ratio=_float(section.get("gap_ratio")),
        num_matvecs=_cost(section, "hvps"),
        num_passes=_cost(section, "passes"),
    )


def _layerwise(section: Mapping[str, Any]) -> LayerwiseResult | None:
    names = list(section.get("names") or [])
    if not names:
        return None

    def column(key: str) -> list[Any]:
        values = section.get(key)
        values = [] if values is None else list(np.asarray(values, dtype=object).reshape(-1))
        return values + [None] * (len(names) - len(values))

    def number(value: Any) -> float | None:
        x = _float(value)
        return None if value is None else x

    layers = [
        LayerCurvature(str(n), (), _int(p), number(t), number(s), number(e))
        for n, p, t, s, e in zip(
            names,
            column("num_params"),
            column("trace"),
            column("trace_stderr"),
            column("top_eigenvalue"),
            strict=True,
        )
    ]
    return LayerwiseResult(layers, _cost(section, "hvps"), _cost(section, "passes"), 0)


def _blocks(section: Mapping[str, Any]) -> BlockSpectra | None:
    names = [str(n) for n in section.get("names") or []]
    if len(names) < 2:
        return None
    normalize = section.get("normalize")
    return BlockSpectra(
        names=tuple(names),
        sizes=tuple(_int(s) for s in section.get("sizes") or [0] * len(names)),
        densities=[],
        distances=np.asarray(section.get("distances"), dtype=float),
        normalize=None if normalize in (None, -1) else _int(normalize),
        num_matvecs=_cost(section, "hvps"),
        num_passes=_cost(section, "passes"),
    )


def _surface(section: Mapping[str, Any], keys: tuple[str, ...]) -> Surface | None:
    if section.get("loss") is None or any(section.get(k) is None for k in keys):
        return None
    coords = tuple(_array(section[k]) for k in keys)
    loss = np.asarray(section["loss"], dtype=float)
    accuracy = section.get("accuracy")
    accuracy = None if accuracy is None else np.asarray(accuracy, dtype=float)
    origin = section.get("origin_loss")
    if origin is None and all(np.any(c == 0) for c in coords):  # the grid's value at 0
        origin = loss[tuple(int(np.flatnonzero(c == 0)[0]) for c in coords)]
    settings = {k: section[k] for k in ("norm", "description") if section.get(k) is not None}
    return Surface(
        coords=coords,
        loss=loss,
        accuracy=accuracy if accuracy is not None and accuracy.shape == loss.shape else None,
        origin_loss=_float(origin),
        origin_accuracy=None,
        settings=settings,
        num_points=_int(section.get("num_points", section.get("num_passes", 0))),
        seconds=_float(section.get("seconds"), 0.0),
    )


def _sharpness(section: Mapping[str, Any], drop_lambda_max: bool) -> SharpnessResult | None:
    measures = {
        str(k): record(SharpnessMeasure, {**_map(m), "name": str(k)})
        for k, m in _map(section.get("measures")).items()
        if not (drop_lambda_max and k == "lambda_max")
    }
    if not measures:
        return None
    return SharpnessResult(
        measures=measures,
        loss=_float(section.get("loss")),
        weight_norm=_float(section.get("weight_norm")),
        num_samples=_int(section.get("num_samples")),
        num_params=_int(section.get("num_params")),
    )


def _coherence(section: Mapping[str, Any]) -> CoherenceResult | None:
    if not section:
        return None
    data = {k: v for k, v in section.items() if k != "gsnr"}
    data["notes"] = tuple(str(n) for n in section.get("notes") or ())
    return record(CoherenceResult, data)


def _learning_rates(section: Mapping[str, Any]) -> LearningRates | None:
    results = {
        str(k): record(LearningRateResult, v)
        for k, v in section.items()
        if isinstance(v, Mapping) and v.get("batch_sizes") is not None
    }
    if not results:
        return None
    batch = section.get("loader_batch_size")
    kind = section.get("optimizer_kind")
    return LearningRates(results, None if batch is None else _int(batch), kind)


def _plan(section: Mapping[str, Any]) -> Plan | None:
    if not section.get("predicted"):
        return None
    return Plan(
        budget=str(section.get("budget", "")),
        time_budget=_float(section.get("time_budget")),
        settings={},
        scaled={str(k): list(v) for k, v in _map(section.get("scaled")).items()},
        predicted={str(k): _float(v) for k, v in _map(section.get("predicted")).items()},
        units=record(UnitCosts, _map(section.get("units"))),
        measured={str(k): _float(v) for k, v in _map(section.get("measured")).items()},
    )


def report_from_version_1(data: Mapping[str, Any]) -> Report:
    """Return the :class:`Report` of a version-1 report's data.

    Returns
    -------
    Report
        The same sections as records.
    """
    eig = _map(data.get("eigenvalues"))
    loss = _map(data.get("loss"))
    eigenvalues = (
        ExtremeEigenvalues(_eigenpairs(eig, "top"), _eigenpairs(eig, "bottom")) if eig else None
    )
    subsets = _map(data.get("subsets"))
    notes = {"subsets": str(subsets["note"])} if "note" in subsets else {}
    return Report(
        metadata=dict(_map(data.get("metadata"))),
        loss=LossValue(_float(loss.get("value")), loss.get("accuracy"))
        if "value" in loss
        else None,
        eigenvalues=eigenvalues,
        subsets=_subsets(subsets),
        trace=_estimate(_map(data.get("trace")), "hutch++"),
        frobenius=_estimate(_map(data.get("frobenius")), "hutchinson"),
        density=_density(_map(data.get("density"))),
        layerwise=_layerwise(_map(data.get("layerwise"))),
        block_spectra=_blocks(_map(data.get("block_spectra"))),
        surface_1d=_surface(_map(data.get("surface_1d")), ("coords",)),
        surface_2d=_surface(_map(data.get("surface_2d")), ("coords_x", "coords_y")),
        sharpness=_sharpness(_map(data.get("sharpness")), drop_lambda_max=eigenvalues is not None),
        coherence=_coherence(_map(data.get("coherence"))),
        learning_rate=_learning_rates(_map(data.get("learning_rate"))),
        costs={
            str(k): StageCost(
                _cost(_map(c), "hvps"),
                _cost(_map(c), "passes"),
                _float(_map(c).get("seconds"), 0.0),
            )
            for k, c in _map(data.get("costs")).items()
        },
        plan=_plan(_map(data.get("plan"))),
        notes=notes,
    )


def comparison_from_version_1(data: Mapping[str, Any]) -> Comparison:
    """Return the :class:`Comparison` of a version-1 comparison's data.

    Returns
    -------
    Comparison
        Its reports and path as records.
    """
    reports = _map(data.get("reports"))
    names = [str(n) for n in data.get("names") or reports]
    interpolation = None
    section = _map(data.get("interpolation"))
    pair = [str(p) for p in section.get("pair") or []]
    path = _surface(section, ("t",))
    if path is not None and len(pair) == 2:
        interpolation = Interpolation((pair[0], pair[1]), path)
    return Comparison(
        reports={n: report_from_version_1(_map(reports.get(n))) for n in names},
        interpolation=interpolation,
        metadata=dict(_map(data.get("metadata"))),
    )
