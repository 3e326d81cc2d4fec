r"""Figures for training-time curvature: sharpness histories, stable learning rates, metric tables.

Like :mod:`landscape.report.plots`, matplotlib is imported lazily, inside the functions, and
every function accepts an optional ``ax``; these return the ``Figure``.

* :func:`plot_sharpness_history` draws a :class:`~landscape.training.tracker.SharpnessTracker`
  history: sharpness against the stability threshold :math:`c/\eta_t` (which follows the
  learning-rate schedule), and the ratio :math:`R_t` with the Edge-of-Stability crossing.
* :func:`plot_learning_rates` draws predicted largest stable learning rates against the batch
  size on log-log axes, with their bands, fitted laws, exact mean-square thresholds and
  verification runs, for one or several optimizers.
* :func:`plot_metric_table` renders ``(name, value, invariant)`` rows as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_learning_rates", "plot_metric_table", "plot_sharpness_history"]


def _column(history: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    # A history field as float64 (None -> nan), or all-nan when absent.
    values = history.get(name)
    if values is None:
        return np.full(n, np.nan)
    return np.asarray([np.nan if v is None else v for v in np.asarray(values).tolist()], float)


def _any(values: np.ndarray | None) -> bool:
    return values is not None and bool(np.isfinite(values).any())


def plot_sharpness_history(
    history: Mapping[str, Any],
    *,
    ax: Axes | Sequence[Axes] | None = None,
    level: float = 0.95,
    logy: bool | None = None,
    title: str | None = None,
) -> Figure:
    r"""Plot sharpness against the stability threshold, and their ratio, over training steps.

    The top panel shows :math:`\lambda_{\max}(H)` (and, for Adam, the preconditioned
    :math:`\lambda_{\max}(P^{-1}H)`, to which Adam's threshold applies; and the batch sharpness
    when measured) with the threshold :math:`c/\eta_t` drawn as a step line that follows the
    learning-rate schedule. The bottom panel shows the ratio :math:`R_t` with the levels 1 and
    ``level`` and the first crossing of ``level`` (:math:`t^*`).

    Parameters
    ----------
    history : mapping
        ``SharpnessTracker.history`` (numpy arrays) or ``to_dict()["history"]`` (lists with
        ``None``): ``step``, ``threshold``, ``sharpness``, ``ratio`` and optionally
        ``preconditioned_sharpness``, ``batch_sharpness``, ``batch_sharpness_ratio``, ``kind``.
    ax : matplotlib Axes or pair of Axes, optional
        One Axes: only the sharpness panel is drawn there; two: both panels. Default: a new
        figure with both panels.
    level : float, optional
        The crossing level marked on the ratio panel.
    logy : bool, optional
        Logarithmic sharpness axis; default: when the preconditioned sharpness is present
        (raw and preconditioned sharpness differ by orders of magnitude).
    title : str, optional
        Title of the top panel.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: sharpness and threshold over steps, and their ratio below.

    Raises
    ------
    ValueError
        If the history has no ``step`` entries.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> history = {"step": [10, 20, 30], "threshold": [20.0, 20.0, 10.0],
    ...            "sharpness": [12.0, 19.0, 9.9], "ratio": [0.6, 0.95, 0.99]}
    >>> fig = plot_sharpness_history(history)
    >>> len(fig.axes)
    2
    """
    if "step" not in history or len(history["step"]) == 0:
        raise ValueError("the history has no measurements (no 'step' entries).")
    steps = np.asarray(history["step"], dtype=float)
    n = steps.size
    sharpness = _column(history, "sharpness", n)
    preconditioned = _column(history, "preconditioned_sharpness", n)
    critical = _column(history, "critical_sharpness", n)
    batch = _column(history, "batch_sharpness", n)
    threshold = _column(history, "threshold", n)
    ratio = _column(history, "ratio", n)
    batch_ratio = _column(history, "batch_sharpness_ratio", n)
    kinds = [str(k) for k in np.asarray(history.get("kind", []), dtype=object).tolist()]
    adam = "adam" in kinds or _any(preconditioned)

    if ax is None:
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(
            2, 1, sharex=True, figsize=(6.4, 5.4), layout="constrained"
        )
    elif hasattr(ax, "plot"):
        top, bottom = ax, None
    else:  # a pair (list, tuple or numpy array of Axes)
        top, bottom = tuple(ax)
    fig = top.figure

    if _any(sharpness):
        top.plot(steps, sharpness, "o-", markersize=3, label=r"$\lambda_{\max}(H)$")
    if _any(preconditioned):
        top.plot(steps, preconditioned, "s-", markersize=3, label=r"$\lambda_{\max}(P^{-1}H)$")
    if _any(critical):
        top.plot(steps, critical, "d-", markersize=3, label=r"critical sharpness $2/\eta_c$")
    if _any(batch):
        top.plot(steps, batch, "^-", markersize=3, label="batch sharpness")
    if _any(threshold):
        label = r"threshold $c/\eta$" + (r" (for $P^{-1}H$)" if adam else "")
        top.plot(steps, threshold, color="k", linestyle="--", drawstyle="steps-post", label=label)
    if logy if logy is not None else _any(preconditioned):
        top.set_yscale("log")
    top.set_ylabel("sharpness")
    top.set_title(title or "Sharpness and stability threshold", fontsize="medium")
    top.legend(fontsize="small")
    if bottom is None:
        top.set_xlabel("step")
        return fig

    bottom.plot(steps, ratio, "o-", markersize=3, color="tab:red", label=r"$R = S\,\eta / c$")
    if _any(batch_ratio):
        bottom.plot(steps, batch_ratio, "^-", markersize=3, color="tab:green", label="batch")
    bottom.axhline(1.0, color="k", linewidth=0.8)
    bottom.axhline(level, color="0.4", linestyle=":", linewidth=0.8, label=f"{level:g}")
    hits = np.flatnonzero(np.isfinite(ratio) & (ratio >= level))
    if hits.size:
        bottom.axvline(
            steps[hits[0]], color="tab:purple", linestyle="--", linewidth=0.8, label="t*"
        )
    bottom.set_xlabel("step")
    bottom.set_ylabel("sharpness / threshold")
    bottom.legend(fontsize="small")
    return fig


def _results(results: Any) -> list[Any]:
    if hasattr(results, "batch_sizes"):
        return [results]
    out = list(results)
    if not out:
        raise ValueError("no results to plot.")
    return out


def _array(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    return np.asarray(value, dtype=float).reshape(-1)


def _default_label(result: Any, index: int) -> str:
    settings = getattr(result, "optimizer", None)
    kind = getattr(settings, "key", None) or getattr(settings, "kind", None)
    return str(kind) if kind is not None else f"result {index + 1}"


def plot_learning_rates(
    results: Any, *, labels: Sequence[str] | None = None, ax: Axes | None = None
) -> Figure:
    r"""Plot the largest stable learning rate against the batch size (log-log), per result.

    For each result, in its own colour: the mean-based prediction ``lr_max`` (line with dots;
    the legend gives the fitted slope :math:`d\log\eta_{\max}/d\log B`), the band between
    ``lr_max_low`` and ``lr_max_high`` (worst and best sampled batch), the fitted law
    :math:`c/(a + b\,p_B)` (dashed), the exact mean-square SGD threshold ``lr_mean_square``
    (diamonds, where computed), verification runs (open circles: stable; crosses: diverged)
    and the current learning rate (dotted horizontal line).

    Parameters
    ----------
    results : result or sequence of results
        Objects with ``batch_sizes`` and ``lr_max``, and optionally ``lr_max_low``,
        ``lr_max_high``, ``lr_fit``, ``scaling_exponent``, ``lr_mean_square``,
        ``verification`` (objects with ``batch_size``, ``lrs``, ``diverged``),
        ``optimizer.kind`` and ``current_lr`` (e.g.
        :class:`~landscape.metrics.learning_rate.LearningRateResult`).
    labels : sequence of str, optional
        Legend labels (default: each result's ``optimizer.kind``).
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``, or a new one.

    Raises
    ------
    ValueError
        If there are no results or ``labels`` has the wrong length.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from types import SimpleNamespace
    >>> B = np.array([1, 4, 16, 64])
    >>> sgd = SimpleNamespace(batch_sizes=B, lr_max=0.02 * B / (1 + B / 16),
    ...                       optimizer=SimpleNamespace(kind="sgd"))
    >>> fig = plot_learning_rates(sgd)
    >>> fig.axes[0].get_xscale(), fig.axes[0].get_yscale()
    ('log', 'log')
    """
    items = _results(results)
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"got {len(labels)} labels for {len(items)} results.")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    first = dict.fromkeys(("band", "fit", "ms", "stable", "diverged", "current"), True)

    def once(key: str, text: str) -> str:
        # Auxiliary artists get a legend entry the first time only.
        if first[key]:
            first[key] = False
            return text
        return "_nolegend_"

    for i, result in enumerate(items):
        color = f"C{i % 10}"
        B = np.asarray(result.batch_sizes, dtype=float).reshape(-1)
        lr = np.asarray(result.lr_max, dtype=float).reshape(-1)
        label = labels[i] if labels is not None else _default_label(result, i)
        slope = getattr(result, "scaling_exponent", None)
        if slope is not None and math.isfinite(float(slope)):
            label = f"{label} (slope {float(slope):.2f})"
        ax.plot(B, lr, "o-", color=color, markersize=4, label=label)
        low, high = (
            _array(getattr(result, "lr_max_low", None)),
            _array(getattr(result, "lr_max_high", None)),
        )
        if low is not None and high is not None:
            ax.fill_between(
                B,
                low,
                high,
                color=color,
                alpha=0.15,
                linewidth=0,
                label=once("band", "batch range"),
            )
        fit = _array(getattr(result, "lr_fit", None))
        if fit is not None:
            ax.plot(
                B, fit, "--", color=color, linewidth=1.0, label=once("fit", "fit c/(a + b p_B)")
            )
        ms = _array(getattr(result, "lr_mean_square", None))
        if ms is not None and np.isfinite(ms).any():
            keep = np.isfinite(ms)
            ax.plot(
                B[keep],
                ms[keep],
                linestyle="none",
                marker="D",
                markersize=6,
                color=color,
                label=once("ms", "exact mean-square"),
            )
        _plot_verification(ax, result, color, once)
        current = getattr(result, "current_lr", None)
        if current is not None:
            ax.axhline(
                float(current),
                color=color,
                linestyle=":",
                linewidth=1.0,
                label=once("current", "current lr"),
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("largest stable learning rate")
    ax.set_title("Stable learning rate vs batch size", fontsize="medium")
    ax.legend(fontsize="small")
    return ax.figure


def _plot_verification(ax: Axes, result: Any, color: str, once: Callable[[str, str], str]) -> None:
    # Verification runs: open circles where a burst stayed stable, crosses where it diverged.
    stable_x, stable_y, div_x, div_y = [], [], [], []
    for run in getattr(result, "verification", None) or ():
        lrs = np.asarray(run.lrs, dtype=float).reshape(-1)
        diverged = np.asarray(run.diverged, dtype=bool).reshape(-1)
        stable_x += [float(run.batch_size)] * int((~diverged).sum())
        stable_y += lrs[~diverged].tolist()
        div_x += [float(run.batch_size)] * int(diverged.sum())
        div_y += lrs[diverged].tolist()
    if stable_x:
        ax.plot(
            stable_x,
            stable_y,
            linestyle="none",
            marker="o",
            markerfacecolor="none",
            markeredgecolor=color,
            markersize=7,
            label=once("stable", "verified stable"),
        )
    if div_x:
        ax.plot(
            div_x,
            div_y,
            linestyle="none",
            marker="x",
            color=color,
            markersize=7,
            label=once("diverged", "diverged"),
        )


def _row(row: Any) -> tuple[Any, Any, Any]:
    if isinstance(row, Mapping):
        return row.get("name"), row.get("value"), row.get("invariant")
    if isinstance(row, (tuple, list)):
        if len(row) != 3:
            raise ValueError(f"a table row must be (name, value, invariant); got {row!r}.")
        return row[0], row[1], row[2]
    if hasattr(row, "name") and hasattr(row, "value"):
        return row.name, row.value, getattr(row, "invariant", None)
    raise ValueError(f"a table row must be (name, value, invariant); got {row!r}.")


def _format_value(value: Any) -> str:
    if value is None:
        return "—"
    if hasattr(value, "value") and hasattr(value, "stderr"):  # an Estimate
        err = float(value.stderr)
        text = f"{float(value.value):.4g}"
        return text if not math.isfinite(err) else f"{text} ± {err:.2g}"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) or (hasattr(value, "item") and np.size(value) == 1):
        return f"{float(value):.4g}"
    return str(value)


def _format_invariant(invariant: Any) -> str:
    if invariant is None:
        return "—"
    if isinstance(invariant, (bool, np.bool_)):
        return "yes" if invariant else "no"
    return str(invariant)


def plot_metric_table(rows: Any, ax: Axes | None = None) -> Figure:
    """Render ``(name, value, invariant)`` rows as a matplotlib table.

    For tables of sharpness or coherence metrics, each labelled with whether it is invariant
    to function-preserving reparametrizations (REFERENCES §5).

    Parameters
    ----------
    rows : iterable
        Rows as ``(name, value, invariant)`` tuples, mappings with those keys, or objects with
        those attributes. Values are formatted with 4 significant digits (an object with
        ``value`` and ``stderr``, such as an Estimate, as ``value ± stderr``; ``None`` as a
        dash); ``invariant`` may be a bool (yes/no), a string or ``None``.
    ax : matplotlib Axes, optional
        Where to draw (its frame is turned off).

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``, or a new one, holding the table.

    Raises
    ------
    ValueError
        If there are no rows, or a row is malformed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig = plot_metric_table([("lambda_max", 12.5, False), ("ASAM sharpness", 0.031, True)])
    >>> len(fig.axes[0].tables)
    1
    """
    cells = [_row(r) for r in rows]
    if not cells:
        raise ValueError("no rows to show.")
    text = [[str(n), _format_value(v), _format_invariant(inv)] for n, v, inv in cells]
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.0, 0.32 * len(text) + 0.7), layout="constrained")
    ax.axis("off")
    table = ax.table(
        cellText=text,
        colLabels=["metric", "value", "reparametrization-invariant"],
        loc="center",
        cellLoc="left",
        colLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.auto_set_column_width([0, 1, 2])
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(fontweight="bold")
    return ax.figure
