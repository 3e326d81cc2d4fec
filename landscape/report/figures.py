"""The figures of reports and comparisons, drawn from their result records.

Every function returns a new matplotlib ``Figure`` (matplotlib is imported inside them).
"""

from __future__ import annotations

import base64
import contextlib
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.report.plots import plot_eigenvalues, plot_layerwise, plot_spectral_density
from landscape.report.sections import DINH, metric_table, metrics
from landscape.report.surface_plots import plot_surface_1d, plot_surface_2d, plot_surfaces
from landscape.report.text import g
from landscape.report.training_plots import plot_learning_rates, plot_metric_table

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from landscape.linalg.results import SpectralDensity
    from landscape.report.document import Comparison, Report

__all__ = ["comparison_figure", "comparison_kinds", "png", "report_figure", "report_kinds"]

REPORT_KINDS = (
    "spectrum",
    "eigenvalues",
    "layerwise",
    "surface_1d",
    "surface_2d",
    "learning_rate",
    "metrics",
)
COMPARISON_KINDS = ("spectrum", "interpolation", "surfaces_2d", "learning_rate", "metrics")


def report_kinds(report: Report) -> list[str]:
    """Return the figure kinds a report has data for, in a fixed order.

    Returns
    -------
    list of str
        Valid kinds for :func:`report_figure`.
    """
    eig = report.eigenvalues
    present = {
        "spectrum": report.density is not None,
        "eigenvalues": eig is not None and (eig.top is not None or eig.bottom is not None),
        "layerwise": report.layerwise is not None and bool(report.layerwise.layers),
        "surface_1d": report.surface_1d is not None,
        "surface_2d": report.surface_2d is not None,
        "learning_rate": report.learning_rate is not None and bool(report.learning_rate.results),
        "metrics": bool(metrics(report)),
    }
    return [k for k in REPORT_KINDS if present[k]]


def report_figure(report: Report, kind: str) -> Figure:
    """Draw one figure of a report.

    Parameters
    ----------
    report : Report
        The analysis.
    kind : str
        One of :func:`report_kinds`.

    Returns
    -------
    matplotlib.figure.Figure
        A new figure.

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    if kind == "spectrum":
        assert report.density is not None
        return plot_spectral_density(report.density).figure
    if kind == "eigenvalues":
        return _eigenvalues(report)
    if kind == "layerwise":
        assert report.layerwise is not None
        result = report.layerwise
        metric = "trace" if any(x.trace is not None for x in result.layers) else "top_eigenvalue"
        return plot_layerwise(result, metric=metric).figure
    if kind == "surface_1d":
        assert report.surface_1d is not None
        surface = report.surface_1d
        accuracy = surface.accuracy is not None and bool(np.isfinite(surface.accuracy).any())
        return plot_surface_1d(surface, metric="both" if accuracy else "loss").figure
    if kind == "surface_2d":
        assert report.surface_2d is not None
        return plot_surface_2d(report.surface_2d, kind="filled").figure
    if kind == "learning_rate":
        assert report.learning_rate is not None
        items = report.learning_rate.ordered()
        return plot_learning_rates([r for _, r in items], labels=[n for n, _ in items])
    if kind == "metrics":
        rows: list[tuple[str, Any, Any]] = []
        for m in metrics(report):
            rows.append((m.label, m.cell(), m.invariant))
        fig = plot_metric_table(rows)
        fig.axes[0].set_title("Metrics", fontsize="medium")
        return fig
    raise ValueError(f"unknown report figure {kind!r}")


def _eigenvalues(report: Report) -> Figure:
    import torch

    from landscape.linalg.results import Eigenpairs

    eig = report.eigenvalues
    assert eig is not None
    parts = [(name, p) for name, p in (("top", eig.top), ("bottom", eig.bottom)) if p is not None]
    pairs = Eigenpairs(
        values=torch.cat([p.values.double() for _, p in parts]),
        vectors=None,
        residuals=torch.cat([p.residuals.double() for _, p in parts]),
        converged=torch.cat([p.converged.bool() for _, p in parts]),
        num_matvecs=eig.num_matvecs,
        num_passes=eig.num_passes,
    )
    label = " and ".join(f"{name} {p.values.numel()}" for name, p in parts)
    return plot_eigenvalues(pairs, label=label).figure


def comparison_kinds(comparison: Comparison) -> list[str]:
    """Return the figure kinds a comparison has data for, in a fixed order.

    Returns
    -------
    list of str
        Valid kinds for :func:`comparison_figure`.
    """
    reports = comparison.reports.values()
    present = {
        "spectrum": any(r.density is not None for r in reports),
        "interpolation": comparison.interpolation is not None,
        "surfaces_2d": any(r.surface_2d is not None for r in reports),
        "learning_rate": any(r.learning_rate is not None for r in reports),
        "metrics": bool(metric_table(comparison)[1]),
    }
    return [k for k in COMPARISON_KINDS if present[k]]


def comparison_figure(comparison: Comparison, kind: str) -> Figure:
    """Draw one figure of a comparison.

    Parameters
    ----------
    comparison : Comparison
        The models side by side.
    kind : str
        One of :func:`comparison_kinds`.

    Returns
    -------
    matplotlib.figure.Figure
        A new figure.

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    if kind == "spectrum":
        densities = {n: r.density for n, r in comparison.reports.items() if r.density is not None}
        return _densities(densities)  # type: ignore[arg-type]
    if kind == "interpolation":
        return _interpolation(comparison)
    if kind == "surfaces_2d":
        surfaces = {
            n: r.surface_2d for n, r in comparison.reports.items() if r.surface_2d is not None
        }
        return plot_surfaces(list(surfaces.values()), labels=list(surfaces))
    if kind == "learning_rate":
        results, labels = [], []
        for name, report in comparison.reports.items():
            rates = report.learning_rate
            if rates is None:
                continue
            own = rates.own  # each minimum with the optimizer that trained it
            items = [(rates.optimizer_kind, own)] if own is not None else rates.ordered()
            for kind_name, result in items:
                results.append(result)
                labels.append(f"{name}: {kind_name}")
        return plot_learning_rates(results, labels=labels)
    if kind == "metrics":
        header, rows, flagged = metric_table(comparison)
        return _table_figure(header, rows, "Metrics" + (f" († {DINH})" if flagged else ""))
    raise ValueError(f"unknown comparison figure {kind!r}")


def _densities(densities: dict[str, SpectralDensity]) -> Figure:
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    peaks = [float(d.density.max()) for d in densities.values() if float(d.density.max()) > 0]
    floor = max(peaks) * 1e-7 if peaks else None
    for i, (name, d) in enumerate(densities.items()):
        values = np.nan_to_num(d.density.double().numpy(), nan=0.0, posinf=0.0, neginf=0.0)
        if floor is not None:
            values = values.clip(min=floor)
        (line,) = ax.plot(d.grid.double().numpy(), values, color=f"C{i % 10}", label=name)
        for value in d.outliers.tolist():
            ax.axvline(value, color=line.get_color(), linestyle=":", linewidth=0.8)
        if d.bulk_edge is not None and d.num_outliers:
            ax.axvline(d.bulk_edge, color=line.get_color(), linestyle="--", linewidth=0.8)
    if floor is not None:
        ax.set_yscale("log")
        ax.set_ylim(floor, max(peaks) * 3)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)" if floor is not None else "density")
    ax.set_title("Spectral densities (outliers dotted, bulk edges dashed)", fontsize="medium")
    ax.legend(fontsize="small")
    return ax.figure


def _interpolation(comparison: Comparison) -> Figure:
    interpolation = comparison.interpolation
    assert interpolation is not None
    a, b = interpolation.pair
    surface = interpolation.path
    accuracy = surface.accuracy is not None and bool(np.isfinite(surface.accuracy).any())
    ax = plot_surface_1d(surface, metric="both" if accuracy else "loss")
    title = f"Linear interpolation: {a} (t=0) → {b} (t=1)"
    with contextlib.suppress(ValueError):
        title += f"; loss barrier {g(interpolation.barrier)}"
    ax.set_title(title, fontsize="medium")
    return ax.figure


def _table_figure(header: list[str], rows: list[list[str]], title: str) -> Figure:
    import matplotlib.pyplot as plt

    width = min(2.0 + 1.5 * len(header), 16.0)
    fig, ax = plt.subplots(figsize=(width, 0.3 * len(rows) + 1.0), layout="constrained")
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.auto_set_column_width(list(range(len(header))))
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(fontweight="bold")
    ax.set_title(title, fontsize="medium")
    return fig


def png(fig: Figure) -> str:
    """Return a figure as base64 PNG text, closing it.

    Returns
    -------
    str
        The image, base64-encoded.
    """
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
