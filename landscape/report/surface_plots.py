"""Figures of loss surfaces (1-D paths, 2-D contours and heatmaps, 3-D views) and VTK export.

Like :mod:`landscape.report.plots`, every function takes a :class:`~landscape.Surface` and
an optional ``ax`` and returns the ``Axes`` (:func:`plot_surfaces` returns the ``Figure``);
matplotlib is imported lazily, inside the functions. :func:`surface_to_vtk` writes a
legacy-ASCII VTK file for ParaView without needing the ``vtk`` package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.report.plots import _axes
from landscape.surfaces.grid import Surface

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

__all__ = [
    "plot_surface_1d",
    "plot_surface_2d",
    "plot_surface_3d",
    "plot_surfaces",
    "surface_to_vtk",
]

_METRICS = ("loss", "accuracy")
_KINDS = ("contour", "filled", "heatmap")
_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "w", "edgecolor": "none", "alpha": 0.75}


# -- checks and values ---------------------------------------------------------------------------
def _check_ndim(surface: Surface, ndim: int, what: str) -> None:
    if surface.ndim != ndim:
        hint = "plot_surface_1d" if surface.ndim == 1 else "plot_surface_2d or plot_surface_3d"
        raise ValueError(
            f"{what} needs a {ndim}-D surface; this one is {surface.ndim}-D (use {hint})."
        )
    if ndim == 2 and min(c.size for c in surface.coords) < 2:
        raise ValueError(
            f"{what} needs at least 2 grid points per axis; the grid is "
            f"{surface.loss.shape[0]} x {surface.loss.shape[1]}."
        )


def _values(surface: Surface, metric: str, log: bool) -> np.ndarray:
    # The metric's grid as float64, checked: known metric, present, some finite values, and
    # positive finite values when a log scale is asked for.
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    values = surface.loss if metric == "loss" else surface.accuracy
    if values is None:
        raise ValueError(
            "the surface has no accuracy (the task is not classification, or it was computed "
            "with metrics=('loss',)); use metric='loss'."
        )
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(
            f"the surface has no finite {metric} values (all NaN or infinite: not computed yet, "
            "or the model diverged everywhere on the grid)."
        )
    if log and finite.min() <= 0:
        raise ValueError(
            f"log=True needs positive {metric} values; the smallest is {finite.min():.6g}."
        )
    return values


def _is_path(surface: Surface) -> bool:
    return str(surface.settings.get("description", "")).startswith("interpolate")


def _model_coords(surface: Surface) -> np.ndarray | None:
    coords = surface.settings.get("model_coords")
    return None if coords is None else np.asarray(coords, dtype=np.float64).reshape(-1, 2)


def _title(surface: Surface, metric: str) -> str:
    description = str(surface.settings.get("description", "")).strip()
    head = f"{metric.capitalize()} " + ("along a direction" if surface.ndim == 1 else "surface")
    return head + (f": {description}" if description else "")


def _axis_labels(surface: Surface) -> tuple[str, str]:
    if _model_coords(surface) is not None:
        return "e₁ (along θ_B − θ_A)", "e₂ (toward θ_C, ⊥ e₁)"
    return "direction 1", "direction 2"


# -- 1-D ----------------------------------------------------------------------------------------
def plot_surface_1d(
    surface: Surface,
    ax: Axes | None = None,
    *,
    metric: str = "loss",
    label: str | None = None,
    log: bool = False,
) -> Axes:
    r"""Plot a 1-D surface (a random direction or an interpolation path), origin marked.

    For interpolation paths (made by :func:`landscape.interpolate`) the two models at
    :math:`t=0` and :math:`t=1` are marked, and the loss barrier
    :math:`\max_t L(t) - \big((1-t)L(0) + tL(1)\big)` is drawn against the straight chord
    between the endpoint losses and given in the title.

    Parameters
    ----------
    surface : Surface
        A 1-D result of :func:`landscape.surface` or :func:`landscape.interpolate`.
    ax : matplotlib Axes, optional
        Where to draw (a new figure otherwise).
    metric : {"loss", "accuracy", "both"}, optional
        What to plot; ``"both"`` puts the accuracy on a twin y-axis at the right.
    label : str, optional
        Legend label prefix of the curves.
    log : bool, optional
        Logarithmic loss axis (the accuracy axis stays linear).

    Returns
    -------
    matplotlib.axes.Axes
        The axes holding the loss (or the accuracy, with ``metric="accuracy"``); with
        ``"both"`` the accuracy is on its twin (sharing the x-axis) in ``ax.figure.axes``.

    Raises
    ------
    ValueError
        If the surface is not 1-D, the metric is unknown or absent, the values are all NaN,
        or ``log`` is asked for with non-positive losses.
    """
    _check_ndim(surface, 1, "plot_surface_1d")
    if metric not in (*_METRICS, "both"):
        raise ValueError(f"metric must be 'loss', 'accuracy' or 'both'; got {metric!r}.")
    shown = _METRICS if metric == "both" else (metric,)
    values = {m: _values(surface, m, log and m == "loss") for m in shown}
    ax = _axes(ax)
    t = surface.coords[0]
    path = _is_path(surface)
    prefix = f"{label} " if label else ""
    handles = []
    colors = {"loss": "tab:blue", "accuracy": "tab:orange"} if metric == "both" else {}
    axes = {shown[0]: ax}
    if metric == "both":
        axes["accuracy"] = ax.twinx()
        ax.set_zorder(axes["accuracy"].get_zorder() + 1)  # the loss and its marks on top
        ax.patch.set_visible(False)
    for m in shown:
        a = axes[m]
        origin = surface.origin_loss if m == "loss" else surface.origin_accuracy
        (line,) = a.plot(
            t, values[m], marker=".", markersize=3, color=colors.get(m), label=prefix + m
        )
        handles.append(line)
        if not path and origin is not None:
            (star,) = a.plot(
                [0.0], [origin], "*", color=line.get_color(), markersize=11, markeredgecolor="k"
            )
            if m == shown[0]:
                star.set_label("origin")
                handles.append(star)
        a.set_ylabel(m, color=colors.get(m, "k"))
        if m == "loss" and log:
            a.set_yscale("log")
    if path:  # the two models: dotted lines at t = 0 and 1, named on a top axis
        for end in (0.0, 1.0):
            ax.axvline(end, color="0.5", linestyle=":", linewidth=0.9)
        top = ax.secondary_xaxis("top")
        top.set_xticks([0.0, 1.0], labels=["θ_A (t=0)", "θ_B (t=1)"], fontsize="small")
    title = _title(surface, "loss" if "loss" in shown else "accuracy")
    if path:
        title = "Along the path (1−t) θ_A + t θ_B"
    if path and "loss" in shown:
        barrier = _draw_barrier(surface, axes["loss"])
        if barrier is not None:
            title += f": loss barrier {barrier:.4g}"
            handles.append(axes["loss"].lines[-1])
    ax.set_xlabel("t" if path else "coordinate along the direction")
    ax.set_title(title, fontsize="medium")
    ax.legend(handles=handles, fontsize="small", loc="best")
    return ax


def _draw_barrier(surface: Surface, ax: Axes) -> float | None:
    # The chord between the endpoint losses and a vertical arrow at the barrier's location
    # (when it is positive); the chord is the last line added, for the legend.
    try:
        barrier = surface.barrier()
    except ValueError:
        return None
    t, loss = surface.coords[0], np.asarray(surface.loss, dtype=np.float64)
    l0, l1 = float(loss[t == 0.0][0]), float(loss[t == 1.0][0])
    inside = np.flatnonzero((t >= 0) & (t <= 1))
    excess = loss[inside] - ((1 - t[inside]) * l0 + t[inside] * l1)
    if barrier > 0 and np.isfinite(barrier):
        k = inside[int(np.nanargmax(excess))]
        chord = (1 - t[k]) * l0 + t[k] * l1
        ax.annotate(
            "",
            xy=(t[k], loss[k]),
            xytext=(t[k], chord),
            arrowprops={"arrowstyle": "<->", "color": "tab:red", "linewidth": 1.0},
        )
        ax.annotate(
            f"barrier {barrier:.3g}",
            (t[k], (loss[k] + chord) / 2),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
            color="tab:red",
            bbox=_BOX,
        )
    ax.plot([0.0, 1.0], [l0, l1], "--", color="tab:red", linewidth=0.9, label="chord L(0)–L(1)")
    return barrier


# -- 2-D ----------------------------------------------------------------------------------------
def _range(
    values: Sequence[np.ndarray], vmin: float | None, vmax: float | None, log: bool
) -> tuple[float, float]:
    # Color range: the finite data range unless given, widened when degenerate.
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    lo = float(finite.min()) if vmin is None else float(vmin)
    hi = float(finite.max()) if vmax is None else float(vmax)
    if log and lo <= 0:
        raise ValueError(f"log=True needs a positive vmin; got {lo!r}.")
    if not hi > lo:
        if vmin is not None and vmax is not None:
            raise ValueError(f"vmin must be less than vmax; got {vmin!r} and {vmax!r}.")
        hi = lo * 1.01 if log else lo + max(1e-12, abs(lo) * 1e-6)
    return lo, hi


def _levels(levels: int | Sequence[float], lo: float, hi: float, log: bool) -> np.ndarray:
    if isinstance(levels, (int, np.integer)):
        if levels < 2:
            raise ValueError(f"levels must be at least 2; got {levels!r}.")
        return np.geomspace(lo, hi, int(levels)) if log else np.linspace(lo, hi, int(levels))
    out = np.asarray(levels, dtype=np.float64).reshape(-1)
    if out.size < 2 or np.any(np.diff(out) <= 0):
        raise ValueError("levels must be an integer or an increasing sequence of 2+ values.")
    if log and out[0] <= 0:
        raise ValueError("log=True needs positive contour levels.")
    return out


def _extend(values: Sequence[np.ndarray], lo: float, hi: float) -> str:
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    below, above = bool(finite.min() < lo), bool(finite.max() > hi)
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (below, above), "both"
    )


def _norm(lo: float, hi: float, log: bool) -> Normalize:
    from matplotlib.colors import LogNorm, Normalize

    return LogNorm(vmin=lo, vmax=hi) if log else Normalize(vmin=lo, vmax=hi)


def _colorbar(ax: Any, mappable: Any, label: str, log: bool, **options: Any) -> Any:
    # A colorbar; on a log scale with readable ticks (1-2-5 per decade, or finer over a
    # narrow range), which matplotlib does not pick by itself for filled contours.
    figure = ax[0].figure if isinstance(ax, list) else ax.figure
    bar = figure.colorbar(mappable, ax=ax, label=label, **options)
    if log:
        lo, hi = mappable.norm.vmin, mappable.norm.vmax
        decades = np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        ticks: np.ndarray = np.array([])
        for mantissas in ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10))):
            candidates = (np.array(mantissas)[None, :] * 10.0 ** decades[:, None]).ravel()
            ticks = candidates[(candidates >= lo * (1 - 1e-9)) & (candidates <= hi * (1 + 1e-9))]
            if ticks.size >= 3:
                break
        if ticks.size < 3:
            ticks = np.geomspace(lo, hi, 4)
        bar.minorticks_off()
        bar.set_ticks(ticks, labels=[f"{v:.3g}" for v in ticks])
    return bar


def _as_trajectory(trajectory: Any) -> np.ndarray:
    if hasattr(trajectory, "detach"):  # a torch tensor from project_trajectory
        trajectory = trajectory.detach().cpu().numpy()
    points = np.asarray(trajectory, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 1:
        raise ValueError(
            f"trajectory must have shape (k, 2) (see landscape.project_trajectory); got "
            f"{points.shape}."
        )
    return points


def _draw_2d(
    surface: Surface,
    ax: Axes,
    values: np.ndarray,
    *,
    kind: str,
    levels: np.ndarray,
    norm: Normalize,
    extend: str,
    cmap: str,
    trajectory: np.ndarray | None,
) -> Any:
    # Draw one 2-D panel and its marks; return the mappable for a colorbar.
    x, y = surface.coords
    masked = np.ma.masked_invalid(values)
    if kind == "heatmap":
        # Rows of the image are y: transpose the [i, j] = (x_i, y_j) grid. "nearest" shading
        # centers cells on the grid points (half a spacing beyond the ends), also non-uniform.
        mappable = ax.pcolormesh(x, y, masked.T, shading="nearest", norm=norm, cmap=cmap)
    else:
        X, Y = np.meshgrid(x, y, indexing="ij")
        draw = ax.contourf if kind == "filled" else ax.contour
        options = {} if kind == "filled" else {"linewidths": 0.8}
        mappable = draw(X, Y, masked, levels=levels, norm=norm, cmap=cmap, extend=extend, **options)
        if kind == "contour":
            step = max(1, len(mappable.levels) // 8)
            ax.clabel(mappable, mappable.levels[::step], fmt="%.3g", fontsize="x-small")
    ax.plot(
        [0.0],
        [0.0],
        "*",
        color="tab:red",
        markersize=13,
        markeredgecolor="k",
        linestyle="none",
        label=f"origin (loss {surface.origin_loss:.3g})",
        zorder=5,
    )
    models = _model_coords(surface)
    if models is not None:
        ax.plot(
            models[:, 0],
            models[:, 1],
            "o",
            color="w",
            markeredgecolor="k",
            markersize=7,
            label="models A, B, C",
            zorder=5,
        )
        for name, (mx, my) in zip("ABC", models):
            ax.annotate(
                name,
                (mx, my),
                xytext=(6, 6),
                textcoords="offset points",
                fontweight="bold",
                fontsize="small",
                zorder=6,
            )
        ax.set_aspect("equal")  # plane coordinates are Euclidean: keep angles faithful
    if trajectory is not None:
        ax.plot(
            trajectory[:, 0],
            trajectory[:, 1],
            "-o",
            color="w" if kind != "contour" else "k",
            markeredgecolor="k",
            markersize=3.5,
            linewidth=1.2,
            label="trajectory",
            zorder=4,
        )
        ax.plot(
            trajectory[:1, 0], trajectory[:1, 1], "s", color="k", markersize=5, zorder=4
        )  # its start
    xlabel, ylabel = _axis_labels(surface)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="x-small", loc=_free_corner(surface, trajectory), framealpha=0.8)
    return mappable


def _free_corner(surface: Surface, trajectory: np.ndarray | None) -> str:
    # The corner of the grid farthest from the marks (origin, models, trajectory), for the
    # legend: "best" would ignore contours and heatmaps and cover the middle of the basin.
    marks = [np.zeros((1, 2))]
    models = _model_coords(surface)
    if models is not None:
        marks.append(models)
    if trajectory is not None:
        marks.append(trajectory)
    points = np.concatenate(marks)
    lo = np.array([c.min() for c in surface.coords])
    span = np.maximum(np.array([np.ptp(c) for c in surface.coords]), 1e-300)
    points = (points - lo) / span  # grid as the unit square
    corners = {"upper right": (1, 1), "upper left": (0, 1), "lower right": (1, 0)}
    corners["lower left"] = (0, 0)
    room = {k: float(np.min(np.hypot(*(points - c).T))) for k, c in corners.items()}
    return max(room, key=lambda k: room[k] - 1e-3 * list(corners).index(k))


def plot_surface_2d(
    surface: Surface,
    ax: Axes | None = None,
    *,
    kind: str = "contour",
    levels: int | Sequence[float] = 30,
    vmin: float | None = None,
    vmax: float | None = None,
    log: bool = False,
    trajectory: Any = None,
    colorbar: bool = True,
    metric: str = "loss",
    cmap: str = "viridis",
) -> Axes:
    """Plot a 2-D surface as contour lines, filled contours or a heatmap, origin starred.

    Values above ``vmax`` (below ``vmin``) take the end colors of the colormap, and the
    colorbar shows this with a triangle: clip the high loss at the grid's edges with
    ``vmax`` or use ``log=True`` to see the structure of the basin. Surfaces from
    :func:`landscape.plane` get the three models marked and an equal aspect ratio (their
    coordinates are Euclidean distances in parameter space). Points not computed (NaN)
    are left blank.

    Parameters
    ----------
    surface : Surface
        A 2-D result of :func:`landscape.surface` or :func:`landscape.plane`: values on a
        grid of ``(alpha, beta)`` coordinates.
    ax : matplotlib Axes, optional
        Where to draw (a new figure otherwise).
    kind : {"contour", "filled", "heatmap"}, optional
        Labelled contour lines, filled contours, or one colored cell per grid point.
    levels : int or sequence of float, optional
        Number of contour levels between ``vmin`` and ``vmax`` (log-spaced with ``log``),
        or the levels themselves.
    vmin, vmax : float, optional
        Color range in units of the metric (default: the range of the finite values).
    log : bool, optional
        Logarithmic color scale.
    trajectory : array of shape (k, 2), optional
        Coordinates of checkpoints (e.g. :func:`landscape.project_trajectory`), drawn as a
        line with dots, its start as a square.
    colorbar : bool, optional
        Add a colorbar beside the axes.
    metric : {"loss", "accuracy"}, optional
        What to plot.
    cmap : str, optional
        Matplotlib colormap.

    Returns
    -------
    matplotlib.axes.Axes
        The axes.

    Raises
    ------
    ValueError
        If the surface is not 2-D, ``kind`` or ``metric`` is unknown, the metric is absent
        or all NaN, ``log`` meets non-positive values, or ``levels``, ``vmin``/``vmax`` or
        ``trajectory`` are malformed.
    """
    _check_ndim(surface, 2, "plot_surface_2d")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}; got {kind!r}.")
    values = _values(surface, metric, log)
    points = None if trajectory is None else _as_trajectory(trajectory)
    lo, hi = _range([values], vmin, vmax, log)
    figsize = (5.6, 4.4)
    models = _model_coords(surface)
    if models is not None:  # equal aspect: fit the figure to the plane's box
        ratio = np.ptp(surface.coords[1]) / max(np.ptp(surface.coords[0]), 1e-300)
        figsize = (5.6, float(np.clip(3.8 * ratio + 1.0, 2.5, 8.0)))
    ax = _axes(ax, figsize=figsize)
    mappable = _draw_2d(
        surface,
        ax,
        values,
        kind=kind,
        levels=_levels(levels, lo, hi, log),
        norm=_norm(lo, hi, log),
        extend=_extend([values], lo, hi),
        cmap=cmap,
        trajectory=points,
    )
    if colorbar:
        _colorbar(
            ax,
            mappable,
            metric + (" (log scale)" if log else ""),
            log,
            extend=_extend([values], lo, hi) if kind == "heatmap" else None,
        )
    ax.set_title(_title(surface, metric), fontsize="medium")
    return ax


def plot_surfaces(
    surfaces: Sequence[Surface],
    labels: Sequence[str] | None = None,
    *,
    kind: str = "filled",
    log: bool = False,
) -> Figure:
    """Plot 2-D surfaces side by side on one color scale, for comparing them.

    All panels share one ``Normalize`` (the common range of the finite losses), the same
    contour levels, and one colorbar.

    Parameters
    ----------
    surfaces : sequence of Surface
        2-D surfaces (e.g. before and after training, or of two models).
    labels : sequence of str, optional
        Panel titles (default: the surfaces' descriptions).
    kind : {"contour", "filled", "heatmap"}, optional
        As for :func:`plot_surface_2d`.
    log : bool, optional
        Logarithmic color scale.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; its panels are ``fig.axes[:len(surfaces)]``.

    Raises
    ------
    ValueError
        If there are no surfaces, one is not 2-D or all NaN, the labels do not match, the
        kind is unknown, or ``log`` meets non-positive values.
    """
    surfaces = list(surfaces)
    if not surfaces:
        raise ValueError("plot_surfaces needs at least one surface.")
    if labels is not None and len(labels) != len(surfaces):
        raise ValueError(f"got {len(labels)} labels for {len(surfaces)} surfaces.")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}; got {kind!r}.")
    for i, s in enumerate(surfaces):
        _check_ndim(s, 2, f"plot_surfaces (surface {i})")
    values = [_values(s, "loss", log) for s in surfaces]
    lo, hi = _range(values, None, None, log)
    norm = _norm(lo, hi, log)
    levels = _levels(30, lo, hi, log)
    import matplotlib.pyplot as plt

    n = len(surfaces)
    fig, axes = plt.subplots(
        1, n, figsize=(4.2 * n + 1.0, 4.2), layout="constrained", squeeze=False
    )
    mappable = None
    for i, (s, v, ax) in enumerate(zip(surfaces, values, axes[0])):
        mappable = _draw_2d(
            s,
            ax,
            v,
            kind=kind,
            levels=levels,
            norm=norm,
            extend="neither",
            cmap="viridis",
            trajectory=None,
        )
        title = labels[i] if labels is not None else _title(s, "loss")
        ax.set_title(title, fontsize="medium")
        if i and ax.get_ylabel() == axes[0][i - 1].get_ylabel():
            ax.set_ylabel("")
    _colorbar(list(axes[0]), mappable, "loss" + (" (log scale)" if log else ""), log)
    return fig


# -- 3-D ----------------------------------------------------------------------------------------
def plot_surface_3d(
    surface: Surface,
    ax: Axes | None = None,
    *,
    log: bool = False,
    cmap: str = "viridis",
    metric: str = "loss",
) -> Axes:
    r"""Plot a 2-D surface as a 3-D landscape (Li et al. 2018 style), origin marked.

    A new figure gets its axes from ``fig.add_subplot(projection="3d")``; a given ``ax``
    must be such a 3-D axes. With ``log`` the height is :math:`\log_{10}` of the metric
    (matplotlib's 3-D axes have no log scale). Points not computed (NaN) leave holes.

    Parameters
    ----------
    surface : Surface
        A 2-D surface.
    ax : matplotlib 3-D Axes, optional
        Where to draw (a new figure otherwise).
    log : bool, optional
        Plot :math:`\log_{10}` of the values.
    cmap : str, optional
        Matplotlib colormap.
    metric : {"loss", "accuracy"}, optional
        What to plot.

    Returns
    -------
    mpl_toolkits.mplot3d.axes3d.Axes3D
        The 3-D axes (``ax.name == "3d"``).

    Raises
    ------
    ValueError
        If the surface is not 2-D, the metric is unknown, absent or all NaN, ``log`` meets
        non-positive values, or ``ax`` is not a 3-D axes.
    """
    _check_ndim(surface, 2, "plot_surface_3d")
    values = _values(surface, metric, log)
    if ax is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(6.4, 5.2), layout="constrained")
        ax = fig.add_subplot(projection="3d")
    elif getattr(ax, "name", None) != "3d":
        raise ValueError(
            "plot_surface_3d needs a 3-D axes: fig.add_subplot(projection='3d'); got a "
            f"{getattr(ax, 'name', type(ax).__name__)!r} axes."
        )
    x, y = surface.coords
    X, Y = np.meshgrid(x, y, indexing="ij")
    Z = np.log10(values) if log else values
    Z = np.where(np.isfinite(Z), Z, np.nan)
    finite = Z[np.isfinite(Z)]
    ax.plot_surface(
        X,
        Y,
        Z,
        cmap=cmap,
        vmin=float(finite.min()),
        vmax=float(finite.max()),
        rstride=1,
        cstride=1,
        linewidth=0,
        antialiased=True,
        alpha=0.95,
    )
    origin = surface.origin_loss if metric == "loss" else surface.origin_accuracy
    if origin is not None and np.isfinite(origin) and (not log or origin > 0):
        z0 = np.log10(origin) if log else origin
        ax.plot(
            [0.0], [0.0], [z0], "*", color="tab:red", markeredgecolor="k", markersize=12, zorder=10
        )
    xlabel, ylabel = _axis_labels(surface)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel(f"log₁₀ {metric}" if log else metric, labelpad=10)
    ax.set_title(_title(surface, metric), fontsize="medium")
    return ax


# -- VTK ----------------------------------------------------------------------------------------
def surface_to_vtk(
    surface: Surface,
    path: str | os.PathLike[str],
    *,
    metric: str = "loss",
    log: bool = False,
    zmax: float | None = None,
) -> str:
    r"""Write a 2-D surface as a legacy-ASCII VTK structured grid, for ParaView.

    Points are :math:`(x_i, y_j, z_{ij})` with :math:`z` the metric (``x`` varying fastest,
    as VTK orders structured grids); the same values are attached as the point scalar
    field named after the metric (``log10_loss`` with ``log``). Values above ``zmax`` are
    clipped to it (as in Li et al.'s ``h52vtp``), which keeps the edges of the grid from
    dwarfing the basin. Points not computed (NaN or infinite) are written at the top of the
    finite range (or ``zmax``) and flagged by a second field, ``valid`` (0 there, 1 elsewhere),
    since VTK's ASCII reader has no NaN.

    Parameters
    ----------
    surface : Surface
        A 2-D surface.
    path : str or PathLike
        File to write (conventionally ``*.vtk``); overwritten.
    metric : {"loss", "accuracy"}, optional
        The height and scalar field.
    log : bool, optional
        Use :math:`\log_{10}` of the (clipped) values.
    zmax : float, optional
        Clip values above this, in units of the metric.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ValueError
        If the surface is not 2-D, the metric is unknown, absent or all NaN, ``log`` meets
        non-positive values, or ``zmax`` is not positive with ``log``.
    """
    _check_ndim(surface, 2, "surface_to_vtk")
    values = _values(surface, metric, log)
    valid = np.isfinite(values)
    if zmax is not None:
        if log and zmax <= 0:
            raise ValueError(f"log=True needs a positive zmax; got {zmax!r}.")
        values = np.minimum(values, zmax)
    top = float(values[valid].max()) if zmax is None else float(zmax)
    values = np.where(valid, values, top)
    if log:
        values = np.log10(values)
    name = f"log10_{metric}" if log else metric
    x, y = surface.coords
    n1, n2 = values.shape
    count = n1 * n2
    # VTK point order: x (index i) fastest, so walk the transposed grid row by row.
    X, Y = np.meshgrid(x, y, indexing="xy")  # shape (n2, n1): [j, i] = (x_i, y_j)
    Z = values.T
    description = " ".join(str(surface.settings.get("description", "")).split())
    title = f"landscape {metric} surface" + (f": {description}" if description else "")
    title = title.encode("ascii", "replace").decode("ascii")
    lines = [
        "# vtk DataFile Version 3.0",
        title[:255],
        "ASCII",
        "DATASET STRUCTURED_GRID",
        f"DIMENSIONS {n1} {n2} 1",
        f"POINTS {count} double",
    ]
    lines += [f"{a:.12g} {b:.12g} {c:.12g}" for a, b, c in zip(X.ravel(), Y.ravel(), Z.ravel())]
    lines += [f"POINT_DATA {count}", f"SCALARS {name} double 1", "LOOKUP_TABLE default"]
    lines += [f"{v:.12g}" for v in Z.ravel()]
    lines += ["SCALARS valid int 1", "LOOKUP_TABLE default"]
    lines += [str(int(v)) for v in valid.T.ravel()]
    out = os.fspath(path)
    with open(out, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    return out
