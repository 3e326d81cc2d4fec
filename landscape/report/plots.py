"""Matplotlib figures of spectral results. The only module that imports matplotlib (lazily).

Each function takes a result object and an optional ``ax`` and returns the ``Axes``, so
figures compose (several densities on one axis, side-by-side panels).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from landscape.linalg.results import Eigenpairs, SpectralDensity
from landscape.metrics.layerwise import LayerwiseResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["plot_eigenvalues", "plot_layerwise", "plot_spectral_density"]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 3.6)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def plot_spectral_density(
    density: SpectralDensity,
    ax: Axes | None = None,
    *,
    log: bool = True,
    floor: float | None = None,
    label: str | None = None,
    mark_outliers: bool = True,
    **line_kwargs: Any,
) -> Axes:
    r"""Plot an SLQ spectral density, on a log-density axis by default, outliers marked.

    Outliers carry a mass of about :math:`c/P` and vanish on a linear axis (Papyan 2020;
    Ghorbani et al. 2019 plot :math:`\log_{10}` densities); the log axis is floored at
    ``floor`` (default :math:`10^{-7}` times the peak) so Gaussian tails do not dominate.

    Parameters
    ----------
    density : SpectralDensity
        Result of :func:`landscape.spectral_density`.
    ax : matplotlib Axes, optional
        Where to draw (a new figure otherwise).
    log : bool, optional
        Logarithmic density axis.
    floor : float, optional
        Lower limit of the log axis.
    label : str, optional
        Legend label of the curve.
    mark_outliers : bool, optional
        Draw the outliers and the bulk edge.
    **line_kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax`` (or new axes) with the density curve.
    """
    ax = _axes(ax)
    grid = density.grid.numpy()
    values = density.density.numpy()
    if log:
        low = floor if floor is not None else float(values.max()) * 1e-7
        ax.set_yscale("log")
        ax.set_ylim(low, float(values.max()) * 3)
        values = values.clip(min=low)
    (line,) = ax.plot(grid, values, label=label, **line_kwargs)
    if mark_outliers and density.num_outliers:
        for i, value in enumerate(density.outliers.tolist()):
            ax.axvline(
                value,
                color=line.get_color(),
                linestyle=":",
                linewidth=0.8,
                label=(
                    f"{density.num_outliers} outlier{'s' if density.num_outliers > 1 else ''}"
                    if i == 0
                    else None
                ),
            )
        ax.axvline(density.bulk_edge, color="0.4", linestyle="--", linewidth=0.8, label="bulk edge")
    num_probes, num_steps = density.nodes.shape
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density" + (" (log scale)" if log else ""))
    ax.set_title(
        f"Spectral density (SLQ: {num_probes} probes x {num_steps} steps, σ={density.sigma:.3g})",
        fontsize="medium",
    )
    if label is not None or (mark_outliers and density.num_outliers):
        ax.legend(fontsize="small")
    return ax


def plot_eigenvalues(
    eigenpairs: Eigenpairs, ax: Axes | None = None, *, label: str | None = None
) -> Axes:
    """Plot eigenvalues as bars (negative ones in red), with their residuals as error bars.

    Parameters
    ----------
    eigenpairs : Eigenpairs
        Result of :func:`landscape.eigenvalues`; its residuals become the error bars.
    ax : matplotlib Axes, optional
        Where to draw.
    label : str, optional
        Title suffix.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax`` (or new axes) with one bar per eigenvalue.
    """
    ax = _axes(ax)
    values = eigenpairs.values.numpy()
    colors = ["tab:red" if v < 0 else "tab:blue" for v in values]
    ax.bar(
        range(1, len(values) + 1),
        values,
        color=colors,
        yerr=eigenpairs.residuals.numpy(),
        capsize=2,
    )
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue")
    title = f"Hessian eigenvalues ({eigenpairs.num_matvecs} HVPs)"
    ax.set_title(title if label is None else f"{title}: {label}", fontsize="medium")
    return ax


def plot_layerwise(
    result: LayerwiseResult, ax: Axes | None = None, *, metric: str = "trace"
) -> Axes:
    """Plot a per-layer curvature table as horizontal bars.

    Parameters
    ----------
    result : LayerwiseResult
        Result of :func:`landscape.layerwise`: one bar per layer, the first at the top.
    ax : matplotlib Axes, optional
        Where to draw.
    metric : {"trace", "mean_curvature", "top_eigenvalue"}, optional
        Which column; traces get their standard errors as error bars.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``, or the axes of a new figure.

    Raises
    ------
    ValueError
        If the metric was not computed.
    """
    rows = [r for r in result.layers if getattr(r, metric) is not None]
    if not rows:
        raise ValueError(f"the result has no {metric!r} values; compute it with metrics=.")
    ax = _axes(ax, figsize=(6.0, 0.35 * len(rows) + 1.2))
    values = [getattr(r, metric) for r in rows]
    errors = None
    if metric == "trace":
        errors = [math.nan if r.trace_stderr is None else r.trace_stderr for r in rows]
    ax.barh(range(len(rows)), values, xerr=errors, capsize=2, color="tab:blue")
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(metric.replace("_", " "))
    ax.set_title(f"Per-layer Hessian {metric.replace('_', ' ')}", fontsize="medium")
    return ax
