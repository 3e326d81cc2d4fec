"""The tables of a report, one :class:`Section` per topic, shared by the text summary and HTML.

Every builder reads result records (never dictionaries rebuilt into stand-ins) and returns
a section or ``None`` when its data is absent. A section knows its topic, its rows, the
figures that belong next to it, whether it is a detail (folded on the page) and a one-line
definition of every metric it names (shown on hover in HTML). Unresolved estimates are
written as such ("not resolved: ..."), not as bare numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.metrics.learning_rate import LearningRateResult
from landscape.report.text import count, g, num, pm
from landscape.surfaces.grid import Surface

if TYPE_CHECKING:  # pragma: no cover
    from landscape.report.document import Comparison, Report

__all__ = ["DEFINITIONS", "Metric", "Section", "comparison_sections", "metrics", "report_sections"]

DINH = "differences may be a scale artifact (Dinh et al. 2017)"
_MAX_ROWS = 25  # rows of long per-layer tables

DEFINITIONS: dict[str, str] = {
    "loss": "mean loss over the data, weighted as the model trains (tokens for language models)",
    "accuracy": "fraction of correct predictions over the same units as the loss",
    "λmax": "largest eigenvalue of the Hessian of the mean loss: curvature along the sharpest "
    "direction; its residual ‖Hv − λv‖ certifies it",
    "λmin": "smallest Hessian eigenvalue: negative means a direction where the loss curves "
    "down (a saddle)",
    "trace": "sum of the Hessian's eigenvalues (total curvature), Hutch++ estimate ± standard "
    "error",
    "‖H‖_F": "Frobenius norm of the Hessian: the root of the sum of squared eigenvalues",
    "outliers": "eigenvalues set apart from the bulk of the spectrum by a clear gap",
    "bulk edge": "upper edge of the continuous part (bulk) of the spectrum",
    "negative fraction": "estimated share of eigenvalues below zero (SLQ quadrature mass)",
    "negative mass ratio": "Σ|λ<0| / Σ|λ|: the share of the spectrum's absolute mass that is "
    "negative (SLQ)",
    "SLQ": "stochastic Lanczos quadrature: probes × Lanczos steps, Gaussian kernel width σ",
    "B": "batch size",
    "sharpness": "mean top eigenvalue of mini-batch Hessians at this batch size "
    "(preconditioned by Adam's P for Adam)",
    "lr_max": "largest stable learning rate, c / sharpness (Granziol et al. 2022): the "
    "heuristic estimate",
    "[worst, best batch]": "lr_max from the sharpest and the flattest sampled batch",
    "exact MS (SGD)": "exact mean-square stability threshold of plain SGD at this batch size, "
    "at a minimum (Mulayoff & Michaeli 2024)",
    "WME bound": "Wu, Ma & E (2018) sufficient stability bound for SGD",
    "stable ≤": "largest learning rate whose training burst stayed finite",
    "diverged ≥": "smallest learning rate whose training burst blew up",
    "sam": "SAM sharpness: the largest loss rise within a Euclidean ρ-ball (Foret et al. 2021)",
    "asam": "adaptive SAM: the ball scaled by |w|, invariant to layer rescaling (Kwon et al. 2021)",
    "gam": "gradient-norm sharpness ρ·max‖∇L(w+δ)‖ over the ρ-ball (Zhang et al. 2023)",
    "pacbayes": "1/σ² of the largest isotropic Gaussian weight noise that keeps the loss rise "
    "within δ (Jiang et al. 2020)",
    "pacbayes_mag": "magnitude-aware PAC-Bayes sharpness: noise scaled by |w| (Jiang et al. "
    "2020), invariant to rescaling",
    "alpha": "gradient coherence |G|² / mean |g_i|²: 1 when every sample's gradient agrees",
    "m_coherence": "m·alpha: 1 for orthogonal per-sample gradients, m for identical ones",
    "alpha_unbiased": "pairwise coherence, unbiased: 0 orthogonal, 1 identical",
    "b_simple": "simple gradient noise scale tr Σ / |G|² (McCandlish et al. 2018)",
    "b_simple_unbiased": "B_simple from unbiased |G|² and tr Σ estimates",
    "gsnr_median": "median gradient signal-to-noise ratio over parameters (Liu et al. 2020)",
    "gsnr_mean": "mean gradient signal-to-noise ratio over parameters",
    "b_noise": "noise scale tr(HΣ)/(GᵀHG): the critical batch size (McCandlish et al. 2018)",
    "hessian_coherence": "Hessian coherence σ of per-example Hessians (Dexter et al.)",
    "hessian_coherence_normalized": "σ / s: 1 for identical per-example Hessians",
    "hessian_alignment": "λmax(S)/(s·max S_ii): 1 when all per-example Hessians are identical",
    "JS⁰": "mean Jensen-Shannon distance between the Hessian blocks' spectral densities "
    "(Zhang et al. 2024)",
    "mean JS": "this block's mean Jensen-Shannon distance to the others",
    "barrier": "max over the path of the loss above the straight line between the endpoints' "
    "losses",
    "top": "the largest Hessian eigenvalues found (Lanczos, with residual certificates)",
    "bottom": "the smallest Hessian eigenvalues found",
    "1-D": "loss along one filter-normalized random direction through the model",
    "2-D": "loss on the plane of two filter-normalized random directions through the model",
    "interval": "interval for the value on all the data, from the spread over disjoint "
    "subsets of the sample",
    "verdict": "resolved when the interval's half width is within 10 % of the value",
    "invariant": "unchanged by function-preserving rescaling of the layers (Dinh et al. 2017)",
    "HVPs": "Hessian-vector products",
    "passes": "passes over the data (mini-batch sweeps count as passes)",
}

_COHERENCE_KEYS = (
    "alpha",
    "m_coherence",
    "alpha_unbiased",
    "b_simple",
    "b_simple_unbiased",
    "gsnr_median",
    "gsnr_mean",
    "b_noise",
    "hessian_coherence",
    "hessian_coherence_normalized",
    "hessian_alignment",
)
_UNBIASED = ("alpha_unbiased", "b_simple_unbiased")


@dataclass
class Section:
    """A titled table with notes, its figures and its place on the page.

    Attributes
    ----------
    title : str
        The heading.
    rows : list of list of str
        The cells.
    header : list of str or None
        Column names (``None``: the first column names the rows).
    notes : list of str
        Lines below the table.
    topic : str
        The group it belongs to on the page.
    figures : tuple of str
        Plot kinds drawn beside it.
    folded : bool
        A detail: collapsed on the page.
    """

    title: str
    rows: list[list[str]]
    header: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    topic: str = ""
    figures: tuple[str, ...] = ()
    folded: bool = False

    def text(self) -> str:
        """Return the section as aligned plain text.

        Returns
        -------
        str
            The title, the table and the notes.
        """
        lines = [self.title]
        table = ([self.header] if self.header else []) + self.rows
        if table:
            ncol = max(len(r) for r in table)
            widths = [max((len(r[i]) for r in table if i < len(r)), default=0) for i in range(ncol)]
            for r in table:
                cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
                lines.append(("  " + "  ".join(cells)).rstrip())
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def table_html(self) -> str:
        """Return the table and notes as HTML, metric names with their definitions on hover.

        Returns
        -------
        str
            A ``<table>`` and its notes.
        """
        e = html.escape
        parts = ["<table>"]
        if self.header:
            head = "".join(f"<th>{_term(c)}</th>" for c in self.header)
            parts.append(f"<thead><tr>{head}</tr></thead>")
        parts.append("<tbody>")
        for r in self.rows:
            first = _term(r[0]) if r else ""
            cells = [f"<th>{first}</th>" if not self.header else f"<td>{first}</td>"]
            cells += [f"<td>{e(c)}</td>" for c in r[1:]]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        parts += [f'<p class="note">{e(n)}</p>' for n in self.notes]
        return "\n".join(parts)


def _term(label: str) -> str:
    # A label with its definition as a hover title, when there is one.
    e = html.escape
    key = label.removeprefix("sharpness: ").removeprefix("coherence: ")
    definition = DEFINITIONS.get(key) or DEFINITIONS.get(label.split(" ")[0])
    if definition is None:
        return e(label)
    return f'<abbr title="{e(definition, quote=True)}">{e(label)}</abbr>'


# -- numbers that may not be resolved ----------------------------------------------------------
def unbiased_cell(name: str, value: float) -> str:
    """Return an unbiased estimate, or why it is not resolved (negative or infinite).

    Returns
    -------
    str
        The cell.
    """
    if name in _UNBIASED and not (math.isfinite(value) and value >= 0):
        return f"not resolved ({g(value)})"
    return g(value)


UNRESOLVED_NOTE = (
    "not resolved: a negative or infinite unbiased estimate means the mean gradient is "
    "below its own sampling noise at this many samples"
)


def _fit_note(result: LearningRateResult) -> str | None:
    fit = result.fit or {}
    a, b, star = (num(fit.get(k)) for k in ("a", "b", "b_star"))
    if a is None or b is None:
        return None
    law = f"fit: sharpness(B) = {g(a)} + {g(b)} (n-B)/(B(n-1))"
    if star is None or not star > 0:
        return law + " (no noise-dominated regime resolved: B* ≤ 0)"
    return law + f" (noise and signal curvature equal at B* ≈ {g(star, 3)})"


# -- report sections ---------------------------------------------------------------------------
def _loss(report: Report) -> Section | None:
    if report.loss is None:
        return None
    rows = [["loss", g(report.loss.value, 6)]]
    if report.loss.accuracy is not None:
        rows.append(["accuracy", g(report.loss.accuracy, 6)])
    return Section("Loss", rows, topic="overview")


def _extreme_cell(value: float | None, pairs: Any) -> str | None:
    if value is None:
        return None
    i = int(np.argmin(np.abs(pairs.values.double().numpy() - value)))
    residual = float(pairs.residuals[i])
    text = f"{g(value, 6)}  (residual {g(residual, 2)})"
    return text if bool(pairs.converged[i]) else text + ", not converged"


def _hessian(report: Report) -> Section | None:
    rows: list[list[str]] = []
    eig = report.eigenvalues
    if eig is not None:
        for label, value, pairs in (
            ("λmax", eig.lambda_max, eig.top),
            ("λmin", eig.lambda_min, eig.bottom),
        ):
            cell = _extreme_cell(value, pairs)
            if cell is not None:
                rows.append([label, cell])
        for name, pairs in (("top", eig.top), ("bottom", eig.bottom)):
            if pairs is not None and pairs.values.numel() > 1:
                rows.append([f"{name} {pairs.values.numel()}", ", ".join(map(g, pairs.values))])
    if report.trace is not None:
        rows.append(
            ["trace", pm(report.trace.value, report.trace.stderr) + f"  ({report.trace.method})"]
        )
    if report.frobenius is not None:
        rows.append(["‖H‖_F", pm(report.frobenius.value, report.frobenius.stderr)])
    density = report.density
    if density is not None:
        listed = ", ".join(g(v) for v in density.outliers.tolist())
        rows.append(["outliers", f"{density.num_outliers}" + (f": {listed}" if listed else "")])
        edge = density.bulk_edge
        rows.append(["bulk edge", "none (no clear gap)" if edge is None else g(edge)])
        rows.append(["negative fraction", g(density.negative_fraction)])
        rows.append(["negative mass ratio", g(density.negative_mass_ratio)])
        probes, steps = density.nodes.shape
        rows.append(["SLQ", f"{probes} probes × {steps} steps, σ = {g(density.sigma, 3)}"])
    if not rows:
        return None
    return Section("Hessian", rows, topic="curvature", figures=("spectrum", "eigenvalues"))


def _subsets(report: Report) -> Section | None:
    spread, note = report.subsets, report.notes.get("subsets")
    if spread is None:
        if note:
            return Section("Curvature across data subsets", [], None, [note], topic="curvature")
        return None
    rows = []
    for name, e in (("λmax", spread.lambda_max), ("trace", spread.trace)):
        if e.resolved:
            verdict = "resolved"
        elif spread.population is not None and e.suggested_samples > spread.population:
            verdict = (
                f"not resolved: needs about {count(e.suggested_samples)} samples, more than "
                "the data has"
            )
        else:
            verdict = f"not resolved: needs about {count(e.suggested_samples)} samples"
        lo, hi = e.interval
        rows.append(
            [
                name,
                g(e.value),
                f"{g(e.spread[0])} … {g(e.spread[1])}",
                f"[{g(lo)}, {g(hi)}]",
                verdict,
            ]
        )
    header = [
        "quantity",
        f"on {count(spread.samples)} samples",
        f"over {spread.num_subsets} subsets",
        "interval",
        "verdict",
    ]
    notes = [
        f"{spread.confidence:.0%} interval for all {count(spread.population)} samples from the "
        "spread over disjoint subsets (t quantile, finite population; λmax's small-sample bias "
        "removed); resolved when its half width is within 10 % of the value"
    ]
    return Section("Curvature across data subsets", rows, header, notes, topic="curvature")


def _layerwise(report: Report) -> Section | None:
    result = report.layerwise
    if result is None or not result.layers:
        return None
    rows = [
        [
            layer.name,
            count(layer.num_params),
            g(layer.trace),
            g(layer.trace_stderr, 2),
            g(layer.top_eigenvalue),
        ]
        for layer in result.layers[:_MAX_ROWS]
    ]
    notes = list(result.notes)
    if len(result.layers) > _MAX_ROWS:
        notes.append(f"{len(result.layers) - _MAX_ROWS} more layers not shown")
    header = ["layer", "parameters", "trace", "± stderr", "λmax"]
    return Section(
        "Per-layer curvature", rows, header, notes, topic="layers", figures=("layerwise",),
        folded=True,
    )  # fmt: skip


def _blocks(report: Report) -> Section | None:
    blocks = report.block_spectra
    if blocks is None or len(blocks.names) < 2:
        return None
    D = np.asarray(blocks.distances, dtype=float)
    L = len(blocks.names)
    rows = [
        [name, count(size), g(D[i].sum() / (L - 1))]
        for i, (name, size) in enumerate(zip(blocks.names[:_MAX_ROWS], blocks.sizes, strict=False))
    ]
    how = (
        "raw spectra"
        if blocks.normalize is None
        else f"each normalized by its {blocks.normalize}th-largest eigenvalue, one kernel "
        "width for all"
    )
    notes = [
        f"JS⁰ = {g(blocks.heterogeneity)}: mean Jensen-Shannon distance between the blocks' "
        f"Hessian spectral densities ({how}); Zhang et al. (NeurIPS 2024) relate large JS⁰ "
        "at initialization to SGD falling behind Adam (not reproduced at small scale: "
        "validation/block_heterogeneity.md)"
    ]
    if L > _MAX_ROWS:
        notes.append(f"{L - _MAX_ROWS} more blocks not shown")
    header = ["block", "parameters", "mean JS"]
    return Section("Block heterogeneity", rows, header, notes, topic="layers", folded=True)


def _sharpness(report: Report) -> Section | None:
    result = report.sharpness
    if result is None or not result.measures:
        return None
    rows = [
        [
            m.name,
            g(m.value, 6),
            "" if m.stderr is None else g(m.stderr, 2),
            "yes" if m.invariant else "no",
            m.invariance,
        ]
        for m in result.measures.values()
    ]
    notes = [
        f"loss {g(result.loss, 6)}, weight norm {g(result.weight_norm, 6)} (the non-invariant "
        "measures change with the weight scale; λmax is in the Hessian section)"
    ]
    header = ["measure", "value", "± stderr", "invariant", "invariance"]
    return Section("Sharpness", rows, header, notes, topic="sharpness")


def coherence_items(report: Report) -> list[tuple[str, float]]:
    """Return the coherence headline numbers that were computed, in a fixed order.

    Returns
    -------
    list of (str, float)
        ``(name, value)``.
    """
    c = report.coherence
    if c is None:
        return []
    items = [(k, getattr(c, k)) for k in _COHERENCE_KEYS]
    return [(k, float(v)) for k, v in items if v is not None]


def _coherence(report: Report) -> Section | None:
    items = coherence_items(report)
    if not items:
        return None
    rows = [[k, unbiased_cell(k, v)] for k, v in items]
    c = report.coherence
    assert c is not None
    notes = [f"from {count(c.num_samples)} samples' gradients", *c.notes]
    if any(r[1].startswith("not resolved") for r in rows):
        notes.append(UNRESOLVED_NOTE)
    return Section("Gradient noise and coherence", rows, None, notes, topic="learning_rate")


def surface_text(surface: Surface) -> str:
    """Return a one-line description of a surface: grid, span, loss range, origin.

    Returns
    -------
    str
        The text.
    """
    coords = surface.coords
    grid = " × ".join(str(c.size) for c in coords)
    span = " × ".join(f"[{g(c.min(), 3)}, {g(c.max(), 3)}]" for c in coords if c.size)
    loss = np.asarray(surface.loss, dtype=float)
    finite = loss[np.isfinite(loss)]
    text = f"{grid} points on {span}"
    if finite.size:
        text += f"; loss {g(finite.min())} to {g(finite.max())}"
    if math.isfinite(surface.origin_loss):
        text += f"; at the origin {g(surface.origin_loss)}"
    missing = loss.size - finite.size
    if missing:
        text += f"; {missing} not finite"
    return text


def _surfaces(report: Report) -> Section | None:
    rows = [
        [label, surface_text(s)]
        for label, s in (("1-D", report.surface_1d), ("2-D", report.surface_2d))
        if s is not None
    ]
    if not rows:
        return None
    notes = ["filter-normalized random directions (Li et al. 2018); the model at the origin"]
    return Section(
        "Loss surface", rows, None, notes, topic="surface", figures=("surface_2d", "surface_1d")
    )


def learning_rate_section(
    name: str, result: LearningRateResult, *, in_use: bool, folded: bool
) -> Section:
    """Return the lr_max table of one optimizer.

    Parameters
    ----------
    name : str
        The optimizer's name in the results.
    result : LearningRateResult
        Its result.
    in_use : bool
        Whether the model trains with it (said in the title).
    folded : bool
        Whether the section is a detail (folded on the page).

    Returns
    -------
    Section
        One row per batch size.
    """
    ms, wme = result.lr_mean_square, result.lr_nonuniformity_bound
    has_ms = ms is not None and bool(np.isfinite(ms).any())
    runs = {v.batch_size: v for v in result.verification}
    header = ["B", "sharpness", "lr_max", "[worst, best batch]"]
    header += ["exact MS (SGD)", "WME bound"] if has_ms else []
    header += ["stable ≤", "diverged ≥"] if runs else []
    rows = []
    for i, b in enumerate(np.asarray(result.batch_sizes).reshape(-1)):
        row = [
            g(b),
            g(result.sharpness[i]),
            _rate(result.lr_max[i]),
            f"[{_rate(result.lr_max_low[i])}, {_rate(result.lr_max_high[i])}]",
        ]
        if has_ms:
            assert ms is not None
            row += [g(ms[i]), g(None if wme is None else wme[i])]
        if runs:
            v = runs.get(int(b))
            row += [g(v and v.lr_stable), g(v and v.lr_diverged)]
        rows.append(row)
    notes = [n for n in (_fit_note(result),) if n]
    notes.append(f"d log lr / d log B = {g(result.scaling_exponent, 3)}")
    if result.lr_trace_bound is not None:
        notes.append(f"Wu & Su trace bound (B=1): lr ≤ {g(result.lr_trace_bound)}")
    if result.current_lr is not None:
        notes.append(f"current lr {g(result.current_lr)}")
    notes.append(f"method: {result.method}")
    notes.append(f"rests on {result.rests_on} ({result.measure})")
    if bool(np.isnan(np.asarray(result.lr_max, dtype=float)).any()):
        notes.append("lr_max —: the measure says nothing at that batch size (see the notes)")
    notes += list(result.notes)
    title = f"Largest stable learning rate: {name}" + (" (in use)" if in_use else "")
    return Section(
        title,
        rows,
        header,
        notes,
        topic="learning_rate",
        figures=() if folded else ("learning_rate",),
        folded=folded,
    )


def _rate(value: float) -> str:
    """Return a learning-rate cell: "—" where there is no number (``nan``).

    Returns
    -------
    str
        The text.
    """
    return "—" if math.isnan(float(value)) else g(value)


def _learning_rates(report: Report) -> list[Section]:
    rates = report.learning_rate
    if rates is None:
        return []
    own = rates.optimizer_kind
    ordered = rates.ordered()
    out = []
    for i, (name, result) in enumerate(ordered):
        # without an optimizer given, the first (SGD) is shown open with the figure
        folded = name != own if own else i > 0
        out.append(learning_rate_section(name, result, in_use=name == own, folded=folded))
    return out


def cost_section(items: Sequence[tuple[str, int, int, float]], title: str = "Cost") -> Section:
    """Return a cost table with a total row.

    Parameters
    ----------
    items : sequence of (stage, HVPs, passes, seconds)
        The stages.
    title : str, optional
        The heading.

    Returns
    -------
    Section
        Folded on the page.
    """
    rows = [[stage, g(h), g(p), g(s, 3)] for stage, h, p, s in items]
    rows.append(
        [
            "total",
            str(sum(int(i[1]) for i in items)),
            str(sum(int(i[2]) for i in items)),
            f"{sum(float(i[3]) for i in items):.3g}",
        ]
    )
    return Section(title, rows, ["stage", "HVPs", "passes", "seconds"], topic="cost", folded=True)


def cost_items(report: Report) -> list[tuple[str, int, int, float]]:
    """Return ``(stage, HVPs, passes, seconds)`` of every stage that ran.

    Returns
    -------
    list of tuple
        In stage order.
    """
    return [(name, c.num_matvecs, c.passes, c.seconds) for name, c in report.costs.items()]


def _plan(report: Report) -> Section | None:
    plan = report.plan
    if plan is None or not plan.predicted:
        return None
    rows = []
    for stage, seconds in plan.predicted.items():
        actual = plan.measured.get(stage)
        ratio = actual / seconds if actual is not None and seconds else None
        rows.append([stage, g(seconds, 3), g(actual, 3), g(ratio, 2)])
    notes = [
        f"plan for {plan.time_budget:.0f} s: scaled {name} {a} -> {b}"
        for name, (a, b) in plan.scaled.items()
    ]
    return Section(
        f"Time plan (budget {plan.time_budget:.0f} s)",
        rows,
        ["stage", "predicted s", "measured s", "ratio"],
        notes,
        topic="cost",
        folded=True,
    )


#: Prefix of the report notes that say a stage did not run, and why.
NOT_RUN = "not run: "


def _not_run(report: Report) -> Section | None:
    rows = [
        [key[len(NOT_RUN) :], reason]
        for key, reason in report.notes.items()
        if key.startswith(NOT_RUN)
    ]
    if not rows:
        return None
    return Section(
        "Stages not run",
        rows,
        ["stage", "why"],
        ["each can be run alone (ls.block_spectra, ls.layerwise, ...) or with a larger budget"],
        topic="cost",
    )


def report_sections(report: Report) -> list[Section]:
    """Return every section of a report that has data, in page order.

    Parameters
    ----------
    report : Report
        The analysis.

    Returns
    -------
    list of Section
        Overview, curvature, learning rate and batch size, surface, sharpness, layers, cost.
    """
    sections = [
        _loss(report),
        _hessian(report),
        _subsets(report),
        *_learning_rates(report),
        _coherence(report),
        _surfaces(report),
        _sharpness(report),
        _layerwise(report),
        _blocks(report),
        _not_run(report),
        cost_section(cost_items(report)) if report.costs else None,
        _plan(report),
    ]
    return [s for s in sections if s is not None]


# -- metrics shared by comparisons and the metrics figure ------------------------------------
@dataclass(frozen=True)
class Metric:
    """One headline number of a report, with its invariance under layer rescaling.

    Attributes
    ----------
    key : str
        Stable identifier.
    label : str
        What tables show.
    value : float or None
        The number.
    stderr : float or None
        Its standard error, for estimates.
    invariant : bool or None
        Invariant to function-preserving rescaling (``None``: not applicable).
    """

    key: str
    label: str
    value: float | None
    stderr: float | None
    invariant: bool | None

    def cell(self) -> str:
        """Return the value (± stderr) as a table cell; unresolved estimates say so.

        Returns
        -------
        str
            The cell.
        """
        name = self.key.removeprefix("coherence/")
        if self.value is not None and name in _UNBIASED:
            return unbiased_cell(name, self.value)
        return pm(self.value, self.stderr, 4)


def metrics(report: Report) -> list[Metric]:
    """Return the headline numbers of a report, each once.

    Returns
    -------
    list of Metric
        Loss, accuracy, λmax, λmin, trace, ‖H‖_F, negative mass ratio, the sharpness measures
        and the coherence numbers that are present.
    """
    out = []
    if report.loss is not None:
        out.append(Metric("loss", "loss", report.loss.value, None, True))
        if report.loss.accuracy is not None:
            out.append(Metric("accuracy", "accuracy", report.loss.accuracy, None, True))
    eig = report.eigenvalues
    if eig is not None:
        for key, value in (("λmax", eig.lambda_max), ("λmin", eig.lambda_min)):
            if value is not None:
                out.append(Metric(key, key, value, None, False))
    for key, label, estimate in (
        ("trace", "trace", report.trace),
        ("frobenius", "‖H‖_F", report.frobenius),
    ):
        if estimate is not None:
            out.append(Metric(key, label, estimate.value, estimate.stderr, False))
    if report.density is not None:
        ratio = report.density.negative_mass_ratio
        out.append(Metric("negative_mass_ratio", "negative mass ratio", ratio, None, False))
    if report.sharpness is not None:
        for name, m in report.sharpness.measures.items():
            if name == "lambda_max":  # already above, from the eigenvalue stage
                continue
            label = f"sharpness: {name}"
            out.append(Metric(f"sharpness/{name}", label, m.value, m.stderr, m.invariant))
    for key, value in coherence_items(report):
        out.append(Metric(f"coherence/{key}", f"coherence: {key}", value, None, None))
    return out


# -- comparison sections ---------------------------------------------------------------------
def metric_table(comparison: Comparison) -> tuple[list[str], list[list[str]], bool]:
    """Return the models' headline numbers side by side.

    Returns
    -------
    header : list of str
        ``metric``, the models, ``invariant``.
    rows : list of list of str
        One row per metric.
    flagged : bool
        Whether a row is not invariant to rescaling (marked †).
    """
    names = comparison.names
    per_model = {n: {m.key: m for m in metrics(r)} for n, r in comparison.reports.items()}
    first: dict[str, Metric] = {}
    for ms in per_model.values():
        for key, m in ms.items():
            first.setdefault(key, m)
    rows, flagged = [], False
    for key, m in first.items():
        flags = {per_model[n][key].invariant for n in names if key in per_model[n]}
        invariant = flags.pop() if len(flags) == 1 else None
        mark = "—"
        if invariant is not None:
            mark = "yes" if invariant else "no †"
            flagged = flagged or not invariant
        cells = [per_model[n][key].cell() if key in per_model[n] else "—" for n in names]
        rows.append([m.label, *cells, mark])
    return ["metric", *names, "invariant"], rows, flagged


def _interpolation(comparison: Comparison) -> Section | None:
    interpolation = comparison.interpolation
    if interpolation is None:
        return None
    a, b = interpolation.pair
    path = interpolation.path
    t, loss = path.coords[0], np.asarray(path.loss, dtype=float)
    rows = [["path", f"(1−t)·{a} + t·{b}"]]
    notes = []
    try:
        barrier = interpolation.barrier
        rows.append(["barrier", g(barrier)])
        if barrier <= 0:
            notes.append("no barrier: the two models are linearly mode-connected")
    except ValueError:
        pass
    for end in (0.0, 1.0):
        at = loss[t == end]
        if at.size:
            rows.append([f"loss at t={end:g}", g(at[0])])
    finite = loss[np.isfinite(loss)]
    if finite.size:
        rows.append(["highest loss on the path", g(finite.max())])
    rows.append(["points", str(t.size)])
    return Section(
        "Linear interpolation", rows, None, notes, topic="surface", figures=("interpolation",)
    )


def _comparison_surfaces(comparison: Comparison) -> Section | None:
    rows = [
        [name, surface_text(r.surface_2d)]
        for name, r in comparison.reports.items()
        if r.surface_2d is not None
    ]
    if not rows:
        return None
    notes = ["plotted on one shared color scale"] if len(rows) > 1 else []
    return Section(
        "2-D loss surfaces", rows, None, notes, topic="surface", figures=("surfaces_2d",)
    )


def _comparison_learning_rates(comparison: Comparison) -> list[Section]:
    # Each model's own optimizer first and open; every other optimizer folded.
    out, folded = [], []
    for name, report in comparison.reports.items():
        rates = report.learning_rate
        if rates is None:
            continue
        for i, (kind, result) in enumerate(rates.ordered()):
            own = kind == rates.optimizer_kind
            first = own if rates.optimizer_kind else i == 0
            section = learning_rate_section(kind, result, in_use=own, folded=not first)
            section.title = f"{name}: {section.title}"
            section.figures = ()
            (out if first else folded).append(section)
    if out:
        out[0].figures = ("learning_rate",)
    elif folded:
        folded[0].figures = ("learning_rate",)
    return out + folded


def comparison_sections(comparison: Comparison) -> list[Section]:
    """Return every section of a comparison that has data, in page order.

    Parameters
    ----------
    comparison : Comparison
        The models side by side.

    Returns
    -------
    list of Section
        Metrics, interpolation, surfaces, learning rates, cost.
    """
    sections: list[Section | None] = []
    header, rows, flagged = metric_table(comparison)
    if rows:
        notes = [f"† not invariant to function-preserving reparametrization: {DINH}"]
        notes = notes if flagged else []
        if any(cell.startswith("not resolved") for row in rows for cell in row):
            notes.append(UNRESOLVED_NOTE)
        sections.append(
            Section(
                "Metrics",
                rows,
                header,
                notes,
                topic="overview",
                figures=("spectrum",),
            )
        )
    sections += [_interpolation(comparison), _comparison_surfaces(comparison)]
    sections += _comparison_learning_rates(comparison)
    items = []
    for name, report in comparison.reports.items():
        own = cost_items(report)
        if own:
            items.append(
                (
                    f"report {name}",
                    sum(i[1] for i in own),
                    sum(i[2] for i in own),
                    sum(i[3] for i in own),
                )
            )
    if items:
        sections.append(cost_section(items))
    return [s for s in sections if s is not None]


def header_lines(metadata: Mapping[str, Any], title: str) -> list[str]:
    """Return a document's title line and its facts and provenance lines.

    Returns
    -------
    list of str
        The title, then up to two lines.
    """
    model = metadata.get("model")
    first = f"{title}: {model}" if model else title
    facts = []
    if metadata.get("num_params") is not None:
        facts.append(f"{count(metadata['num_params'])} parameters")
    if metadata.get("num_samples") is not None:
        facts.append(f"{count(metadata['num_samples'])} samples")
    if metadata.get("loss"):
        facts.append(f"loss {metadata['loss']}")
    device = ", ".join(str(metadata[k]) for k in ("device", "dtype") if metadata.get(k))
    if metadata.get("precision") not in (None, "model"):
        device += f" (curvature on a {metadata['precision']})"
    if device:
        facts.append(device)
    for key in ("seed", "budget"):
        if metadata.get(key) is not None:
            facts.append(f"{key} {metadata[key]}")
    backend = metadata.get("backend") if isinstance(metadata.get("backend"), Mapping) else {}
    chosen = sorted({str(c.get("choice")) for c in backend.values() if isinstance(c, Mapping)})
    if chosen:
        how = "measured" if backend.get("requested") == "auto" else "fixed"
        facts.append(f"Hessian products {', '.join(chosen)} ({how})")
    provenance = []
    if metadata.get("created"):
        provenance.append(f"created {metadata['created']}")
    for key, name in (
        ("landscape_version", "landscape"),
        ("torch_version", "torch"),
        ("python_version", "Python"),
    ):
        if metadata.get(key):
            provenance.append(f"{name} {metadata[key]}")
    seconds = num(metadata.get("seconds"))
    if seconds is not None:
        provenance.append(f"{seconds:.1f} s")
    lines = [first] + [" · ".join(x) for x in (facts, provenance) if x]
    settings = metadata.get("settings")
    if isinstance(settings, Mapping) and settings:
        lines.append(f"budget {metadata.get('budget', '')}: {budget_text(settings)}")
    return lines


def budget_text(settings: Mapping[str, Any]) -> str:
    """Return what an analysis budget ran, in a line.

    Returns
    -------
    str
        Samples, eigenvalues, products, density, surfaces, coherence and learning rates.
    """

    def samples(key: str) -> str:
        n = settings.get(key)
        return "all samples" if n is None else f"≤ {count(n)} samples"

    parts = []
    if "curvature_samples" in settings:
        parts.append(f"curvature on {samples('curvature_samples')}")
    if "top_k" in settings:
        parts.append(
            f"top {settings['top_k']} / bottom {settings.get('bottom_k')} eigenvalues "
            f"(tol {g(settings.get('tol'), 2)})"
        )
    if "trace_matvecs" in settings:
        parts.append(f"trace {settings['trace_matvecs']} products")
    density = settings.get("density")
    if isinstance(density, (list, tuple)) and len(density) == 2:
        parts.append(f"density {density[0]} probes × {density[1]} steps")
    if "surface_2d" in settings:
        parts.append(
            f"surfaces {settings.get('surface_1d')} and {settings['surface_2d']}² points on "
            f"{samples('surface_samples')}"
        )
    if "coherence_samples" in settings:
        parts.append(f"coherence on {samples('coherence_samples')}")
    if "lr_sizes" in settings:
        parts.append(
            f"lr_max at {settings['lr_sizes']} batch sizes ({settings.get('lr_batches')} "
            "batches each)"
        )
    return "; ".join(parts)
