"""The figures of reports and comparisons, drawn from their result records.

Every function returns a new matplotlib ``Figure`` (matplotlib is imported inside them).
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Callable
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
    from landscape.report.document import Comparison, Report, _Document

__all__ = ["KINDS", "figure", "kinds", "png"]


def kinds(document: _Document) -> list[str]:
    """Return the figure kinds a report or a comparison has data for, in a fixed order.

    Returns
    -------
    list of str
        Valid kinds for :func:`figure`.
    """
    return [kind for kind, (has, _) in _FIGURES[document._KIND].items() if has(document)]


def figure(document: _Document, kind: str) -> Figure:
    """Draw one figure of a report or a comparison.

    Parameters
    ----------
    document : Report or Comparison
        The analysis, or the models side by side.
    kind : str
        One of :func:`kinds`.

    Returns
    -------
    matplotlib.figure.Figure
        A new figure.

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    table = _FIGURES[document._KIND]
    if kind not in table:
        raise ValueError(f"unknown {document._KIND} figure {kind!r}")
    _, draw = table[kind]
    return draw(document)


# -- the figures of a report ---------------------------------------------------------------------


def _has_eigenvalues(report: Report) -> bool:
    eig = report.eigenvalues
    return eig is not None and (eig.top is not None or eig.bottom is not None)


def _spectrum(report: Report) -> Figure:
    assert report.density is not None
    return plot_spectral_density(report.density).figure


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


def _layerwise(report: Report) -> Figure:
    assert report.layerwise is not None
    result = report.layerwise
    metric = "trace" if any(x.trace is not None for x in result.layers) else "top_eigenvalue"
    return plot_layerwise(result, metric=metric).figure


def _surface_1d(report: Report) -> Figure:
    assert report.surface_1d is not None
    surface = report.surface_1d
    accuracy = surface.accuracy is not None and bool(np.isfinite(surface.accuracy).any())
    return plot_surface_1d(surface, metric="both" if accuracy else "loss").figure


def _surface_2d(report: Report) -> Figure:
    assert report.surface_2d is not None
    return plot_surface_2d(report.surface_2d, kind="filled").figure


def _learning_rates(report: Report) -> Figure:
    assert report.learning_rate is not None
    items = report.learning_rate.ordered()
    return plot_learning_rates([r for _, r in items], labels=[n for n, _ in items])


def _metrics(report: Report) -> Figure:
    rows: list[tuple[str, Any, Any]] = []
    for m in metrics(report):
        rows.append((m.label, m.cell(), m.invariant))
    fig = plot_metric_table(rows)
    fig.axes[0].set_title("Metrics", fontsize="medium")
    return fig


# -- the figures of a comparison -----------------------------------------------------------------


def _spectra(comparison: Comparison) -> Figure:
    densities = {n: r.density for n, r in comparison.reports.items() if r.density is not None}
    return _densities(densities)  # type: ignore[arg-type]


def _surfaces_2d(comparison: Comparison) -> Figure:
    surfaces = {n: r.surface_2d for n, r in comparison.reports.items() if r.surface_2d is not None}
    return plot_surfaces(list(surfaces.values()), labels=list(surfaces))


def _compared_learning_rates(comparison: Comparison) -> Figure:
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


def _compared_metrics(comparison: Comparison) -> Figure:
    header, rows, flagged = metric_table(comparison)
    return _table_figure(header, rows, "Metrics" + (f" († {DINH})" if flagged else ""))


def _some_report_has(comparison: Comparison, section: str) -> bool:
    return any(getattr(r, section) is not None for r in comparison.reports.values())


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


# For each kind of document, its figure kinds in page order: (whether the document has data
# for the kind, how to draw it).
_FIGURES: dict[str, dict[str, tuple[Callable[[Any], bool], Callable[[Any], Figure]]]] = {
    "report": {
        "spectrum": (lambda r: r.density is not None, _spectrum),
        "eigenvalues": (_has_eigenvalues, _eigenvalues),
        "layerwise": (lambda r: r.layerwise is not None and bool(r.layerwise.layers), _layerwise),
        "surface_1d": (lambda r: r.surface_1d is not None, _surface_1d),
        "surface_2d": (lambda r: r.surface_2d is not None, _surface_2d),
        "learning_rate": (
            lambda r: r.learning_rate is not None and bool(r.learning_rate.results),
            _learning_rates,
        ),
        "metrics": (lambda r: bool(metrics(r)), _metrics),
    },
    "comparison": {
        "spectrum": (lambda c: _some_report_has(c, "density"), _spectra),
        "interpolation": (lambda c: c.interpolation is not None, _interpolation),
        "surfaces_2d": (lambda c: _some_report_has(c, "surface_2d"), _surfaces_2d),
        "learning_rate": (lambda c: _some_report_has(c, "learning_rate"), _compared_learning_rates),
        "metrics": (lambda c: bool(metric_table(c)[1]), _compared_metrics),
    },
}
KINDS = {document: tuple(table) for document, table in _FIGURES.items()}
"""Every figure kind of a report and of a comparison, in page order."""


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
