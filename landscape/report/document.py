r"""Result documents :class:`Report` and :class:`Comparison`, saved to HDF5, read by :func:`load`.

A document wraps a nested dictionary of plain values (``str``, ``int``, ``float``, ``bool``,
``None``, lists, tuples, numpy arrays and scalars, nested dictionaries with string keys) and
renders it: a plain-text :meth:`~Report.summary`, matplotlib figures (:meth:`~Report.plot`),
an HTML page with the figures embedded (:meth:`~Report.to_html`, and inline in Jupyter),
JSON-ready dictionaries (:meth:`~Report.to_dict`) and an exact HDF5 file
(:meth:`~Report.save`, :func:`load`). Every section is optional: what is absent is not shown.

HDF5 encoding (``format = "landscape.report"``, ``format_version = 1``)
-----------------------------------------------------------------------
The root group has the attributes ``format``, ``format_version`` (int), ``kind``
(``"report"`` or ``"comparison"``) and ``landscape_version``; the data is the group ``data``.
A value stored under a name in a group is

* ``None``: an attribute with a null dataspace (``h5py.Empty("i1")``);
* ``str``: a UTF-8 string attribute; ``bool``: a numpy-bool attribute (HDF5 enum);
  ``int`` (int64 range): an int64 attribute; ``float``: a float64 attribute (NaN and
  infinities as such); an ``int`` beyond int64: a string dataset with ``@kind = "bigint"``;
* a numpy array (any shape, empty included): a dataset with ``@kind = "ndarray"``, in its
  own dtype; unicode arrays are variable-length UTF-8 with their dtype in ``@dtype``;
* a numpy scalar: a 0-d dataset with ``@kind = "scalar"``;
* a dictionary: a group with ``@type = "dict"`` and ``@keys`` (its keys in order); each
  entry is stored under its escaped key (``%`` → ``%25``, ``/`` → ``%2F``, NUL → ``%00``,
  a leading ``.`` or ``@`` → ``%2E``/``%40``, the empty key → ``%``);
* a list or tuple whose items (ignoring ``None``) are all ``float``, all ``int``, all
  ``bool`` or all ``str``: a 1-D dataset with ``@kind = "list"`` or ``"tuple"``, ``@item``
  (the item type) and, if some items are ``None``, ``@none`` (their indices);
* any other list or tuple (empty, mixed, of dictionaries, of lists, ...): a group with
  ``@type = "list"`` or ``"tuple"`` and ``@length``, item ``i`` stored under the name ``"i"``.

Names starting with ``@`` are reserved for these tags. Loading gives back the same
structure with the same types: Python scalars as Python scalars, numpy arrays and scalars
with their dtype and bits (``np.str_`` values come back as ``str``, dictionary subclasses
as ``dict``). Files are written to a temporary file beside the target, synced, then
renamed over it, so an interrupted save leaves the previous file intact.

Examples
--------
>>> import os, tempfile
>>> report = Report({"loss": {"value": 0.25, "accuracy": 0.9},
...                  "trace": {"value": 12.0, "stderr": 0.5, "method": "hutch++"}})
>>> report["trace"]["value"]
12.0
>>> path = report.save(os.path.join(tempfile.mkdtemp(), "report.h5"))
>>> load(path).data == report.data
True
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from landscape._paths import check_writable
from landscape.report.plots import plot_eigenvalues, plot_layerwise, plot_spectral_density
from landscape.report.surface_plots import plot_surface_1d, plot_surface_2d, plot_surfaces
from landscape.report.training_plots import plot_learning_rates, plot_metric_table
from landscape.surfaces.grid import Surface

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FORMAT", "FORMAT_VERSION", "Comparison", "Report", "load"]

FORMAT = "landscape.report"
"""Value of the root attribute ``format`` of report files."""
FORMAT_VERSION = 1
"""Version of the HDF5 encoding written (and the newest read)."""

_DINH = "differences may be a scale artifact (Dinh et al. 2017)"
_MAX_LAYERS = 25  # rows of the per-layer table in summaries
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


# -- small conversions ----------------------------------------------------------------------------
def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> float | None:
    # A number as float (strings such as "inf" from to_dict() included); None otherwise.
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any) -> np.ndarray | None:
    # An array-like as float64 (None items and "nan"/"inf" strings become numbers).
    if value is None:
        return None
    return np.asarray(value, dtype=np.float64)


def _at(values: np.ndarray | None, i: int) -> float | None:
    if values is None or values.ndim != 1 or i >= values.size:
        return None
    return float(values[i])


def _g(value: Any, digits: int = 4) -> str:
    # A cell: "—" for missing, yes/no for flags, integers exactly, floats to `digits` figures.
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    x = _num(value)
    if x is None:
        return str(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _count(value: Any) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return f"{int(value):,}"
    return _g(value)


def _pm(section: Mapping[str, Any]) -> str:
    text = _g(section.get("value"), 6)
    stderr = _num(section.get("stderr"))
    if stderr is not None and math.isfinite(stderr):
        text += f" ± {stderr:.2g}"
    return text


# -- sections: shared by the text summary and the HTML page --------------------------------------
@dataclass
class _Section:
    title: str
    rows: list[list[str]]
    header: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
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

    def html(self) -> str:
        e = html.escape
        parts = [f"<h2>{e(self.title)}</h2>", "<table>"]
        if self.header:
            head = "".join(f"<th>{e(c)}</th>" for c in self.header)
            parts.append(f"<thead><tr>{head}</tr></thead>")
        parts.append("<tbody>")
        for r in self.rows:
            cells = [f"<th>{e(r[0])}</th>" if not self.header else f"<td>{e(r[0])}</td>"]
            cells += [f"<td>{e(c)}</td>" for c in r[1:]]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        parts += [f'<p class="note">{e(n)}</p>' for n in self.notes]
        return "\n".join(parts)


def _header_lines(metadata: Mapping[str, Any], title: str) -> list[str]:
    model = metadata.get("model")
    first = f"{title}: {model}" if model else title
    facts = []
    if metadata.get("num_params") is not None:
        facts.append(f"{_count(metadata['num_params'])} parameters")
    if metadata.get("num_samples") is not None:
        facts.append(f"{_count(metadata['num_samples'])} samples")
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
    backend = _mapping(metadata.get("backend"))
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
    seconds = _num(metadata.get("seconds"))
    if seconds is not None:
        provenance.append(f"{seconds:.1f} s")
    return [first] + [" · ".join(x) for x in (facts, provenance) if x]


def _loss_section(data: Mapping[str, Any]) -> _Section | None:
    loss = _mapping(data.get("loss"))
    rows = [[k, _g(loss.get(k), 6)] for k in ("value", "accuracy") if k in loss]
    if rows and rows[0][0] == "value":
        rows[0][0] = "loss"
    return _Section("Loss", rows) if rows else None


def _extreme(values: np.ndarray | None, residuals: np.ndarray | None, largest: bool) -> str | None:
    if values is None or values.ndim != 1 or values.size == 0:
        return None
    finite = np.isfinite(values)
    if finite.any():
        masked = np.where(finite, values, -np.inf if largest else np.inf)
        i = int(np.argmax(masked) if largest else np.argmin(masked))
    else:
        i = 0
    text = _g(values[i], 6)
    residual = _at(residuals, i)
    return text if residual is None else f"{text}  (residual {_g(residual, 2)})"


def _hessian_section(data: Mapping[str, Any]) -> _Section | None:
    rows: list[list[str]] = []
    eig = _mapping(data.get("eigenvalues"))
    top, bottom = _floats(eig.get("top")), _floats(eig.get("bottom"))
    top_res, bottom_res = _floats(eig.get("top_residuals")), _floats(eig.get("bottom_residuals"))
    largest = _extreme(top, top_res, largest=True)
    smallest = _extreme(bottom, bottom_res, largest=False)
    if largest is not None:
        rows.append(["λmax", largest])
    if smallest is not None:
        rows.append(["λmin", smallest])
    for name, values in (("top", top), ("bottom", bottom)):
        if values is not None and values.ndim == 1 and values.size > 1:
            rows.append([f"{name} {values.size}", ", ".join(_g(v) for v in values)])
    trace = _mapping(data.get("trace"))
    if "value" in trace:
        method = f"  ({trace['method']})" if trace.get("method") else ""
        rows.append(["trace", _pm(trace) + method])
    frobenius = _mapping(data.get("frobenius"))
    if "value" in frobenius:
        rows.append(["‖H‖_F", _pm(frobenius)])
    density = _mapping(data.get("density"))
    if density:
        outliers = _floats(density.get("outliers"))
        count = density.get("num_outliers", None if outliers is None else outliers.size)
        if count is not None:
            listed = "" if outliers is None or outliers.size == 0 else ": "
            listed += ", ".join(_g(v) for v in (outliers if outliers is not None else ()))
            rows.append(["outliers", f"{_g(count)}{listed}"])
        if "bulk_edge" in density:
            edge = density.get("bulk_edge")
            rows.append(["bulk edge", "none (no clear gap)" if edge is None else _g(edge)])
        for key in ("negative_fraction", "negative_mass_ratio"):
            if key in density:
                rows.append([key.replace("_", " "), _g(density[key])])
        nodes = _floats(density.get("nodes"))
        if nodes is not None and nodes.ndim == 2:
            rows.append(
                [
                    "SLQ",
                    f"{nodes.shape[0]} probes × {nodes.shape[1]} steps, "
                    f"σ = {_g(density.get('sigma'), 3)}",
                ]
            )
    return _Section("Hessian", rows) if rows else None


def _layerwise_section(data: Mapping[str, Any]) -> _Section | None:
    layers = _mapping(data.get("layerwise"))
    names = list(layers.get("names") or [])
    if not names:
        return None

    def column(key: str) -> list[Any]:
        values = layers.get(key)
        values = [] if values is None else list(np.asarray(values, dtype=object).reshape(-1))
        return values + [None] * (len(names) - len(values))

    params, trace = column("num_params"), column("trace")
    stderr, top = column("trace_stderr"), column("top_eigenvalue")
    rows = [
        [str(n), _count(p), _g(t), _g(s, 2), _g(e)]
        for n, p, t, s, e in zip(names, params, trace, stderr, top)
    ]
    notes = []
    if len(rows) > _MAX_LAYERS:
        notes.append(f"{len(rows) - _MAX_LAYERS} more layers not shown")
        rows = rows[:_MAX_LAYERS]
    header = ["layer", "parameters", "trace", "± stderr", "λmax"]
    return _Section("Per-layer curvature", rows, header, notes)


def _subsets_section(data: Mapping[str, Any]) -> _Section | None:
    section = _mapping(data.get("subsets"))
    if not section:
        return None
    if "lambda_max" not in section:
        return _Section("Curvature across data subsets", [], None, [str(section.get("note"))])
    rows = []
    for key, name in (("lambda_max", "λmax"), ("trace", "trace")):
        e = _mapping(section.get(key))
        if not e:
            continue
        values = [float(v) for v in np.asarray(e.get("subsets", []), dtype=float).reshape(-1)]
        spread = f"{_g(min(values))} … {_g(max(values))}" if values else "—"
        needed, population = e.get("suggested_samples"), section.get("population")
        if e.get("resolved"):
            verdict = "resolved"
        elif population is not None and needed is not None and needed > population:
            verdict = f"not resolved: needs about {_count(needed)} samples, more than the data has"
        else:
            verdict = f"not resolved: needs about {_count(needed)} samples"
        interval = f"[{_g(e.get('low'))}, {_g(e.get('high'))}]"
        rows.append([name, _g(e.get("value")), spread, interval, verdict])
    k, n = section.get("num_subsets"), section.get("samples")
    confidence = _num(section.get("confidence")) or 0.95
    header = ["quantity", f"on {_count(n)} samples", f"over {k} subsets", "interval", "verdict"]
    notes = [
        f"{confidence:.0%} interval for all {_count(section.get('population'))} samples from "
        "the spread over disjoint subsets (t quantile, finite population; λmax's small-sample "
        "bias removed); resolved when its half width is within 10 % of the value"
    ]
    return _Section("Curvature across data subsets", rows, header, notes)


def _block_spectra_section(data: Mapping[str, Any]) -> _Section | None:
    section = _mapping(data.get("block_spectra"))
    names = list(section.get("names") or [])
    if len(names) < 2:
        return None
    D = np.asarray(section.get("distances"), dtype=float)
    sizes = list(np.asarray(section.get("sizes", []), dtype=object).reshape(-1))
    rows = [
        [str(n), _count(sizes[i]) if i < len(sizes) else "—", _g(D[i].sum() / (len(names) - 1))]
        for i, n in enumerate(names[:_MAX_LAYERS])
    ]
    normalize = section.get("normalize")
    how = (
        "raw spectra"
        if normalize in (None, -1)
        else f"each normalized by its {normalize}th-largest eigenvalue"
    )
    notes = [
        f"JS⁰ = {_g(section.get('heterogeneity'))}: mean Jensen-Shannon distance between the "
        f"blocks' Hessian spectral densities ({how}); large values mean block heterogeneity, "
        "where Adam tends to beat SGD (Zhang et al., NeurIPS 2024)"
    ]
    if len(names) > _MAX_LAYERS:
        notes.append(f"{len(names) - _MAX_LAYERS} more blocks not shown")
    return _Section("Block heterogeneity", rows, ["block", "parameters", "mean JS"], notes)


def _measures(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    measures = _mapping(_mapping(data.get("sharpness")).get("measures"))
    return {str(k): v for k, v in measures.items() if isinstance(v, Mapping)}


def _invariance(measure: Mapping[str, Any]) -> str:
    flag = measure.get("invariant")
    return "—" if flag is None else ("yes" if flag else "no")


def _sharpness_section(data: Mapping[str, Any]) -> _Section | None:
    measures = _measures(data)
    if not measures:
        return None
    rows = [
        [
            name,
            _g(m.get("value"), 6),
            _g(m.get("stderr"), 2) if m.get("stderr") is not None else "",
            _invariance(m),
            str(m.get("invariance", "")),
        ]
        for name, m in measures.items()
    ]
    sharpness = _mapping(data.get("sharpness"))
    notes = []
    context = [
        f"{k.replace('_', ' ')} {_g(sharpness[k], 6)}"
        for k in ("loss", "weight_norm")
        if k in sharpness
    ]
    if context:
        notes.append(
            ", ".join(context) + " (the non-invariant measures change with the weight scale)"
        )
    header = ["measure", "value", "± stderr", "invariant", "invariance"]
    return _Section("Sharpness", rows, header, notes)


def _coherence_items(coherence: Mapping[str, Any]) -> list[tuple[str, Any]]:
    # Headline numbers: the known keys in order, else every scalar number.
    keys = [k for k in _COHERENCE_KEYS if k in coherence and coherence[k] is not None]
    if not keys:
        keys = [
            k
            for k, v in coherence.items()
            if isinstance(v, (int, float, np.number, str))
            and not isinstance(v, bool)
            and _num(v) is not None
            and k not in ("num_hvps", "num_passes", "seconds")
        ]
    return [(k, coherence[k]) for k in keys]


def _coherence_section(data: Mapping[str, Any]) -> _Section | None:
    coherence = _mapping(data.get("coherence"))
    items = _coherence_items(coherence)
    if not items:
        return None
    notes = [str(n) for n in coherence.get("notes") or []]
    return _Section("Gradient coherence", [[k, _g(v)] for k, v in items], None, notes)


def _surface_text(section: Mapping[str, Any], ndim: int) -> str | None:
    loss = _floats(section.get("loss"))
    if loss is None:
        return None
    keys = ("coords",) if ndim == 1 else ("coords_x", "coords_y")
    coords = [_floats(section.get(k)) for k in keys]
    if any(c is None or c.size == 0 for c in coords):
        return None
    grid = " × ".join(str(c.size) for c in coords if c is not None)
    span = " × ".join(f"[{_g(c.min(), 3)}, {_g(c.max(), 3)}]" for c in coords if c is not None)
    finite = loss[np.isfinite(loss)]
    text = f"{grid} points on {span}"
    if finite.size:
        text += f"; loss {_g(finite.min())} to {_g(finite.max())}"
    if "origin_loss" in section:
        text += f"; at the origin {_g(section.get('origin_loss'))}"
    missing = loss.size - finite.size
    if missing:
        text += f"; {missing} not finite"
    return text


def _surfaces_section(data: Mapping[str, Any]) -> _Section | None:
    rows = []
    for key, label, ndim in (("surface_1d", "1-D", 1), ("surface_2d", "2-D", 2)):
        section = _mapping(data.get(key))
        text = _surface_text(section, ndim) if section else None
        if text:
            rows.append([label, text])
    return _Section("Loss surfaces", rows) if rows else None


def _verification_bounds(run: Mapping[str, Any]) -> tuple[float | None, float | None]:
    if "lr_stable" in run or "lr_diverged" in run:
        return _num(run.get("lr_stable")), _num(run.get("lr_diverged"))
    lrs = _floats(run.get("lrs"))
    if lrs is None:
        return None, None
    diverged = np.asarray(run.get("diverged", []), dtype=bool).reshape(-1)
    if diverged.shape != lrs.shape:
        return None, None
    ok, bad = lrs[~diverged], lrs[diverged]
    return (float(ok.max()) if ok.size else None, float(bad.min()) if bad.size else None)


def _lr_results(section: Any) -> dict[str, Mapping[str, Any]]:
    return {
        str(k): v
        for k, v in _mapping(section).items()
        if isinstance(v, Mapping) and v.get("batch_sizes") is not None
    }


def _lr_sections(data: Mapping[str, Any]) -> list[_Section]:
    out = []
    for name, r in _lr_results(data.get("learning_rate")).items():
        batch = np.asarray(r["batch_sizes"]).reshape(-1)
        sharp, lr = _floats(r.get("sharpness")), _floats(r.get("lr_max"))
        low, high = _floats(r.get("lr_max_low")), _floats(r.get("lr_max_high"))
        ms, wme = _floats(r.get("lr_mean_square")), _floats(r.get("lr_nonuniformity_bound"))
        has_ms = ms is not None and bool(np.isfinite(ms).any())
        runs = {}
        for run in r.get("verification") or []:
            if isinstance(run, Mapping) and run.get("batch_size") is not None:
                runs[int(run["batch_size"])] = _verification_bounds(run)
        header = ["B", "sharpness", "lr_max", "[worst, best batch]"]
        header += ["exact MS (SGD)", "WME bound"] if has_ms else []
        header += ["stable ≤", "diverged ≥"] if runs else []
        rows = []
        for i, b in enumerate(batch):
            row = [
                _g(b),
                _g(_at(sharp, i)),
                _g(_at(lr, i)),
                f"[{_g(_at(low, i))}, {_g(_at(high, i))}]",
            ]
            if has_ms:
                row += [_g(_at(ms, i)), _g(_at(wme, i))]
            if runs:
                stable, diverged = runs.get(int(b), (None, None))
                row += [_g(stable), _g(diverged)]
            rows.append(row)
        notes = []
        fit = _mapping(r.get("fit"))
        if fit:
            notes.append(
                f"fit: sharpness(B) = {_g(fit.get('a'))} + {_g(fit.get('b'))} (n-B)/(B(n-1)) "
                f"(B* = {_g(fit.get('b_star'), 3)})"
            )
        if r.get("scaling_exponent") is not None:
            notes.append(f"d log lr / d log B = {_g(r.get('scaling_exponent'), 3)}")
        if r.get("lr_trace_bound") is not None:
            notes.append(f"Wu & Su trace bound (B=1): lr ≤ {_g(r.get('lr_trace_bound'))}")
        if r.get("current_lr") is not None:
            notes.append(f"current lr {_g(r.get('current_lr'))}")
        notes += [str(n) for n in r.get("notes") or []]
        method = r.get("method")
        title = f"Largest stable learning rate: {name}" + (f" ({method})" if method else "")
        out.append(_Section(title, rows, header, notes))
    return out


def _cost_items(data: Mapping[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    # (stage, HVPs, passes, seconds): the `costs` section, else what the sections carry.
    costs = _mapping(data.get("costs"))
    if costs:
        return [
            (
                str(stage),
                c.get("hvps", c.get("num_hvps")),
                c.get("passes", c.get("num_passes")),
                c.get("seconds"),
            )
            for stage, c in costs.items()
            if isinstance(c, Mapping)
        ]
    items = []
    for name, section in data.items():
        if name in ("metadata", "costs") or not isinstance(section, Mapping):
            continue
        if any(k in section for k in ("num_hvps", "num_passes", "seconds")):
            items.append(
                (
                    str(name),
                    section.get("num_hvps"),
                    section.get("num_passes"),
                    section.get("seconds"),
                )
            )
        elif name == "learning_rate":
            items += [
                (f"learning_rate/{k}", r.get("num_hvps"), r.get("num_passes"), r.get("seconds"))
                for k, r in _lr_results(section).items()
            ]
    return items


def _total(items: Sequence[tuple[str, Any, Any, Any]]) -> tuple[int, int, float]:
    def add(i: int) -> Any:
        values = [_num(it[i]) for it in items]
        return sum(v for v in values if v is not None and math.isfinite(v))

    return int(add(1)), int(add(2)), float(add(3))


def _cost_section(items: Sequence[tuple[str, Any, Any, Any]], title: str) -> _Section | None:
    if not items:
        return None
    rows = [[stage, _g(h), _g(p), _g(s, 3)] for stage, h, p, s in items]
    hvps, passes, seconds = _total(items)
    rows.append(["total", str(hvps), str(passes), f"{seconds:.3g}"])
    return _Section(title, rows, ["stage", "HVPs", "passes", "seconds"])


def _plan_section(data: Mapping[str, Any]) -> _Section | None:
    plan = _mapping(data.get("plan"))
    predicted, measured = _mapping(plan.get("predicted")), _mapping(plan.get("measured"))
    if not predicted:
        return None
    rows = []
    for stage, seconds in predicted.items():
        actual, guess = _num(measured.get(stage)), _num(seconds)
        ratio = actual / guess if actual is not None and guess else None
        rows.append([stage, _g(guess, 3), _g(actual, 3), _g(ratio, 2)])
    budget = _num(plan.get("time_budget"))
    title = f"Time plan (budget {budget:.0f} s)" if budget is not None else "Time plan"
    notes = [
        f"plan for {budget:.0f} s: scaled {name} {a} -> {b}"
        for name, (a, b) in _mapping(plan.get("scaled")).items()
    ]
    return _Section(title, rows, ["stage", "predicted s", "measured s", "ratio"], notes)


# -- metrics shared by the tables -------------------------------------------------------------
@dataclass(frozen=True)
class _Metric:
    key: str
    label: str
    value: float | None
    stderr: float | None
    invariant: bool | None


def _metrics(data: Mapping[str, Any]) -> list[_Metric]:
    out = []
    loss = _mapping(data.get("loss"))
    if "value" in loss:
        out.append(_Metric("loss", "loss", _num(loss.get("value")), None, True))
    if loss.get("accuracy") is not None:
        out.append(_Metric("accuracy", "accuracy", _num(loss.get("accuracy")), None, True))
    eig = _mapping(data.get("eigenvalues"))
    for key, label, largest in (("top", "λmax", True), ("bottom", "λmin", False)):
        values = _floats(eig.get(key))
        if values is not None and values.ndim == 1 and values.size:
            finite = values[np.isfinite(values)]
            pick = (finite.max() if largest else finite.min()) if finite.size else values[0]
            out.append(_Metric(label, label, float(pick), None, False))
    for key, label in (("trace", "trace"), ("frobenius", "‖H‖_F")):
        section = _mapping(data.get(key))
        if "value" in section:
            value, stderr = _num(section.get("value")), _num(section.get("stderr"))
            out.append(_Metric(key, label, value, stderr, False))
    density = _mapping(data.get("density"))
    if "negative_mass_ratio" in density:
        value = _num(density.get("negative_mass_ratio"))
        out.append(_Metric("negative_mass_ratio", "negative mass ratio", value, None, False))
    for name, m in _measures(data).items():
        flag = m.get("invariant")
        out.append(
            _Metric(
                f"sharpness/{name}",
                f"sharpness: {name}",
                _num(m.get("value")),
                _num(m.get("stderr")),
                None if flag is None else bool(flag),
            )
        )
    for key, value in _coherence_items(_mapping(data.get("coherence"))):
        out.append(_Metric(f"coherence/{key}", f"coherence: {key}", _num(value), None, None))
    return out


def _metric_cell(metric: _Metric | None) -> str:
    if metric is None:
        return "—"
    text = _g(metric.value)
    if metric.stderr is not None and math.isfinite(metric.stderr):
        text += f" ± {metric.stderr:.2g}"
    return text


# -- figures ------------------------------------------------------------------------------------
def _new_axes(figsize: tuple[float, float] = (6.0, 3.8)) -> Axes:
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _spectral_density(section: Mapping[str, Any]) -> Any:
    # The section as a SpectralDensity for plot_spectral_density, or None when it does not fit.
    import torch

    from landscape.linalg.results import SpectralDensity

    grid, density = _floats(section.get("grid")), _floats(section.get("density"))
    nodes, weights = _floats(section.get("nodes")), _floats(section.get("weights"))
    outliers = _floats(section.get("outliers"))
    outliers = np.zeros(0) if outliers is None else outliers.reshape(-1)
    sigma, edge = _num(section.get("sigma")), section.get("bulk_edge")
    if (
        grid is None
        or density is None
        or grid.ndim != 1
        or grid.shape != density.shape
        or grid.size < 2
        or nodes is None
        or weights is None
        or nodes.ndim != 2
        or nodes.shape != weights.shape
        or sigma is None
        or (outliers.size and _num(edge) is None)
        or not np.isfinite(density).all()
        or not density.max() > 0
    ):
        return None
    return SpectralDensity(
        grid=torch.as_tensor(grid),
        density=torch.as_tensor(density),
        nodes=torch.as_tensor(nodes),
        weights=torch.as_tensor(weights),
        sigma=sigma,
        outliers=torch.as_tensor(outliers),
        bulk_edge=_num(edge),
        gap_ratio=_num(section.get("gap_ratio")) or float("nan"),
        num_matvecs=int(_num(section.get("num_hvps")) or 0),
        num_passes=int(_num(section.get("num_passes")) or 0),
    )


def _draw_density(
    ax: Axes,
    section: Mapping[str, Any],
    *,
    label: str | None = None,
    color: str | None = None,
    floor: float | None = None,
) -> None:
    # A density on a log axis with its outliers (dotted) and bulk edge (dashed), any data.
    grid = _floats(section.get("grid"))
    values = _floats(section.get("density"))
    if grid is None or values is None or grid.shape != values.shape or grid.ndim != 1:
        raise ValueError("the density section needs 1-D 'grid' and 'density' of equal length.")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    if peak > 0:
        low = floor if floor is not None else peak * 1e-7
        ax.set_yscale("log")
        values = values.clip(min=low)
    (line,) = ax.plot(grid, values, color=color, label=label)
    outliers = _floats(section.get("outliers"))
    for value in [] if outliers is None else outliers.reshape(-1).tolist():
        ax.axvline(value, color=line.get_color(), linestyle=":", linewidth=0.8)
    edge = _num(section.get("bulk_edge"))
    if edge is not None and outliers is not None and outliers.size:
        ax.axvline(edge, color=line.get_color(), linestyle="--", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)" if peak > 0 else "density")


def _eigenpairs(section: Mapping[str, Any]) -> tuple[Any, str]:
    import torch

    from landscape.linalg.results import Eigenpairs

    parts, residuals, label = [], [], []
    for key in ("top", "bottom"):
        values = _floats(section.get(key))
        if values is None or values.size == 0:
            continue
        values = values.reshape(-1)
        res = _floats(section.get(f"{key}_residuals"))
        res = np.full(values.size, np.nan) if res is None else res.reshape(-1)
        if res.size != values.size:
            res = np.full(values.size, np.nan)
        parts.append(values)
        residuals.append(res)
        label.append(f"{key} {values.size}")
    values = torch.as_tensor(np.concatenate(parts))
    res = torch.as_tensor(np.concatenate(residuals))
    pairs = Eigenpairs(
        values=values,
        vectors=torch.zeros(0, values.numel(), dtype=values.dtype),
        residuals=torch.nan_to_num(res, nan=0.0),
        converged=torch.isfinite(res),
        num_matvecs=int(_num(section.get("num_hvps")) or 0),
        num_passes=int(_num(section.get("num_passes")) or 0),
    )
    return pairs, " and ".join(label)


def _layerwise(section: Mapping[str, Any]) -> tuple[Any, str]:
    names = list(section.get("names") or [])
    n = len(names)

    def column(key: str) -> list[float | None]:
        values = section.get(key)
        values = [] if values is None else list(np.asarray(values, dtype=object).reshape(-1))
        out = [_num(v) for v in values][:n]
        return out + [None] * (n - len(out))

    params = column("num_params")
    trace, stderr, top = column("trace"), column("trace_stderr"), column("top_eigenvalue")
    layers = [
        SimpleNamespace(
            name=str(name),
            num_params=p,
            trace=t,
            trace_stderr=float("nan") if s is None else s,
            top_eigenvalue=e,
            mean_curvature=None if t is None or not p else t / p,
        )
        for name, p, t, s, e in zip(names, params, trace, stderr, top)
    ]
    metric = "trace" if any(t is not None for t in trace) else "top_eigenvalue"
    return SimpleNamespace(layers=layers), metric


def _surface(section: Mapping[str, Any], ndim: int, description: str = "") -> Surface:
    keys = ("coords",) if ndim == 1 else ("coords_x", "coords_y")
    coords = []
    for key in keys:
        values = _floats(section.get(key))
        if values is None:
            raise ValueError(f"the {ndim}-D surface has no {key!r}.")
        coords.append(values.reshape(-1))
    loss = _floats(section.get("loss"))
    if loss is None or loss.shape != tuple(c.size for c in coords):
        shape = None if loss is None else loss.shape
        raise ValueError(
            f"the {ndim}-D surface's loss has shape {shape}; its coordinates give "
            f"{tuple(c.size for c in coords)}."
        )
    accuracy = _floats(section.get("accuracy"))
    if accuracy is not None and accuracy.shape != loss.shape:
        accuracy = None
    origin = _num(section.get("origin_loss"))
    if origin is None and all(np.any(c == 0) for c in coords):  # the grid's value at 0
        origin = float(loss[tuple(int(np.flatnonzero(c == 0)[0]) for c in coords)])
    settings: dict[str, Any] = {"description": str(section.get("description", description))}
    if section.get("model_coords") is not None:
        settings["model_coords"] = _floats(section.get("model_coords"))
    return Surface(
        coords=tuple(coords),
        loss=loss,
        accuracy=accuracy,
        origin_loss=float("nan") if origin is None else origin,
        origin_accuracy=_num(section.get("origin_accuracy")),
        settings=settings,
    )


def _has_finite(values: np.ndarray | None) -> bool:
    return values is not None and bool(np.isfinite(values).any())


def _lr_namespace(result: Mapping[str, Any]) -> SimpleNamespace:
    # A LearningRateResult.to_dict() as the attributes plot_learning_rates reads.
    runs = []
    for run in result.get("verification") or []:
        if not isinstance(run, Mapping) or run.get("batch_size") is None:
            continue
        lrs = _floats(run.get("lrs"))
        diverged = np.asarray(run.get("diverged", []), dtype=bool).reshape(-1)
        if lrs is None or lrs.reshape(-1).shape != diverged.shape:
            continue
        stable, bad = _verification_bounds(run)
        runs.append(
            SimpleNamespace(
                batch_size=int(run["batch_size"]),
                lrs=lrs.reshape(-1),
                diverged=diverged,
                lr_stable=stable,
                lr_diverged=bad,
            )
        )
    optimizer = _mapping(result.get("optimizer"))
    current = _num(result.get("current_lr"))
    return SimpleNamespace(
        batch_sizes=np.asarray(result["batch_sizes"], dtype=np.float64).reshape(-1),
        lr_max=_floats(result.get("lr_max")),
        lr_max_low=_floats(result.get("lr_max_low")),
        lr_max_high=_floats(result.get("lr_max_high")),
        lr_fit=_floats(result.get("lr_fit")),
        scaling_exponent=_num(result.get("scaling_exponent")),
        lr_mean_square=_floats(result.get("lr_mean_square")),
        verification=runs,
        optimizer=SimpleNamespace(kind=optimizer.get("kind")),
        current_lr=current if current is not None and math.isfinite(current) else None,
    )


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


def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
.lsr{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222}
.lsr h1{font-size:1.5em;margin:.2em 0}
.lsr h2{font-size:1.1em;margin:1.2em 0 .3em;border-bottom:1px solid #ccc}
.lsr table{border-collapse:collapse;font-size:13px;margin:.2em 0 .6em}
.lsr th,.lsr td{text-align:left;padding:2px 12px 2px 4px;border-bottom:1px solid #eee;
vertical-align:top}
.lsr thead th{background:#f4f4f4}
.lsr tbody th{font-weight:600}
.lsr .meta{color:#555;margin:.1em 0;font-size:13px}
.lsr .note{color:#666;font-size:12px;margin:.1em 0}
.lsr .error{color:#a00}
.lsr figure{display:inline-block;margin:.4em .8em .4em 0;vertical-align:top}
.lsr figcaption{font-size:12px;color:#555}
.lsr img{max-width:100%;height:auto}
"""


# -- JSON ---------------------------------------------------------------------------------------
def _json_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return str(value) if isinstance(value, np.str_) else value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_float(float(value))
    if isinstance(value, (complex, np.complexfloating)):
        return {"real": _json_float(value.real), "imag": _json_float(value.imag)}
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}/{k}") for k, v in value.items()}
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biu":
            return value.tolist()
        if value.dtype.kind == "f" and np.isfinite(value).all():
            return value.tolist()
        if value.dtype.kind == "O":
            return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value.tolist())]
        return _jsonable(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: cannot convert a {type(value).__name__} to JSON.")


# -- HDF5 ---------------------------------------------------------------------------------------
_INT64 = (-(2**63), 2**63 - 1)
_ESCAPED = re.compile(r"%([0-9A-F]{2})")


def _escape(key: str) -> str:
    if key == "":
        return "%"
    out = key.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if out[0] in ".@":
        out = f"%{ord(out[0]):02X}{out[1:]}"
    return out


def _unescape(name: str) -> str:
    if name == "%":
        return ""
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), name)


def _check_text(text: str, where: str) -> str:
    if "\x00" in text:
        raise ValueError(f"{where}: strings with NUL characters cannot be stored in HDF5.")
    return str(text)


def _item_type(values: Sequence[Any]) -> str | None:
    # The common type of a list's items (None ignored) when it fits a 1-D dataset.
    kinds = set()
    for v in values:
        if v is None:
            continue
        t = type(v)
        if t is int and not _INT64[0] <= v <= _INT64[1]:
            return None
        if t not in (bool, int, float, str):
            return None
        kinds.add(t.__name__)
        if len(kinds) > 1:
            return None
    return kinds.pop() if kinds else None


def _write_value(group: Any, name: str, value: Any, where: str) -> None:
    import h5py

    attrs = group.attrs
    if value is None:
        attrs[name] = h5py.Empty("i1")
    elif isinstance(value, str):
        attrs[name] = _check_text(value, where)
    elif isinstance(value, bool):
        attrs[name] = np.bool_(value)
    elif isinstance(value, np.generic):
        if value.dtype.kind in "OUVMm":
            raise TypeError(f"{where}: cannot store a numpy {value.dtype} scalar.")
        group.create_dataset(name, data=value).attrs["@kind"] = "scalar"
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            attrs[name] = np.int64(value)
        else:
            data = group.create_dataset(name, data=str(int(value)), dtype=h5py.string_dtype())
            data.attrs["@kind"] = "bigint"
    elif isinstance(value, float):
        attrs[name] = np.float64(value)
    elif isinstance(value, np.ndarray):
        _write_array(group, name, value, where)
    elif isinstance(value, Mapping):
        sub = group.create_group(name, track_order=True)
        _write_dict(sub, value, where)
    elif isinstance(value, (list, tuple)):
        _write_sequence(group, name, value, where)
    else:
        raise TypeError(
            f"{where}: cannot store a {type(value).__name__} (reports hold str, int, float, "
            "bool, None, lists, tuples, dicts and numpy arrays; convert tensors with .numpy())."
        )


def _write_array(group: Any, name: str, value: np.ndarray, where: str) -> None:
    import h5py

    kind = value.dtype.kind
    if kind == "U":
        texts = [_check_text(str(t), where) for t in value.reshape(-1).tolist()]
        data = np.array(texts, dtype=object).reshape(value.shape)
        ds = group.create_dataset(name, data=data, dtype=h5py.string_dtype())
        ds.attrs["@dtype"] = value.dtype.str
    elif kind in "biufcS":
        ds = group.create_dataset(name, data=value)
    else:
        raise TypeError(f"{where}: cannot store a numpy array of dtype {value.dtype}.")
    ds.attrs["@kind"] = "ndarray"


def _write_sequence(group: Any, name: str, value: list[Any] | tuple[Any, ...], where: str) -> None:
    import h5py

    kind = "tuple" if isinstance(value, tuple) else "list"
    item = _item_type(value)
    if item is None:
        sub = group.create_group(name, track_order=True)
        sub.attrs["@type"] = kind
        sub.attrs["@length"] = np.int64(len(value))
        for i, v in enumerate(value):
            _write_value(sub, str(i), v, f"{where}[{i}]")
        return
    nones = [i for i, v in enumerate(value) if v is None]
    if item == "str":
        texts = ["" if v is None else _check_text(v, f"{where}[{i}]") for i, v in enumerate(value)]
        ds = group.create_dataset(
            name, data=np.array(texts, dtype=object), dtype=h5py.string_dtype()
        )
    else:
        dtype, fill = {"float": (np.float64, np.nan), "int": (np.int64, 0), "bool": (bool, False)}[
            item
        ]
        data = np.array([fill if v is None else v for v in value], dtype=dtype)
        ds = group.create_dataset(name, data=data)
    ds.attrs["@kind"] = kind
    ds.attrs["@item"] = item
    if nones:
        ds.attrs["@none"] = np.array(nones, dtype=np.int64)


def _write_dict(group: Any, value: Mapping[Any, Any], where: str) -> None:
    import h5py

    group.attrs["@type"] = "dict"
    names = []
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{where}: dictionary keys must be strings; got {key!r}.")
        names.append(_escape(_check_text(key, f"{where} (a key)")))
    if names:
        group.attrs.create("@keys", np.array(names, dtype=object), dtype=h5py.string_dtype())
    for name, (key, v) in zip(names, value.items()):
        _write_value(group, name, v, f"{where}/{key}")


def _corrupt(where: str, what: str) -> ValueError:
    return ValueError(f"corrupt landscape report: {where}: {what}.")


def _read_attr(value: Any, where: str) -> Any:
    import h5py

    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise _corrupt(where, f"unexpected attribute {value!r}")


def _read_entry(group: Any, name: str, where: str) -> Any:
    import h5py

    if name in group.attrs:
        return _read_attr(group.attrs[name], where)
    obj = group.get(name)
    if isinstance(obj, h5py.Group):
        return _read_group(obj, where)
    if isinstance(obj, h5py.Dataset):
        return _read_dataset(obj, where)
    raise _corrupt(where, "missing")


def _read_dataset(ds: Any, where: str) -> Any:
    kind = ds.attrs.get("@kind")
    if kind == "ndarray":
        dtype = ds.attrs.get("@dtype")
        if dtype is not None:
            return np.array(ds.asstr()[()], dtype=np.dtype(str(dtype))).reshape(ds.shape)
        value = ds[()]
        return np.asarray(value) if ds.shape == () else value
    if kind == "scalar":
        value = ds[()]
        if not isinstance(value, np.generic):
            raise _corrupt(where, "a scalar dataset that is not a numpy scalar")
        return value
    if kind == "bigint":
        return int(ds.asstr()[()])
    if kind in ("list", "tuple"):
        item = ds.attrs.get("@item")
        if item == "str":
            items = list(ds.asstr()[()].tolist())
        elif item in ("float", "int", "bool"):
            items = ds[()].tolist()
        else:
            raise _corrupt(where, f"unknown list item type {item!r}")
        for i in ds.attrs.get("@none", np.zeros(0, dtype=np.int64)).tolist():
            items[i] = None
        return tuple(items) if kind == "tuple" else items
    raise _corrupt(where, f"unknown dataset kind {kind!r}")


def _read_group(group: Any, where: str) -> Any:
    kind = group.attrs.get("@type")
    if kind == "dict":
        names = group.attrs.get("@keys")
        names = [] if names is None else [str(n) for n in names.tolist()]
        return {_unescape(n): _read_entry(group, n, f"{where}/{_unescape(n)}") for n in names}
    if kind in ("list", "tuple"):
        length = int(group.attrs.get("@length", -1))
        if length < 0:
            raise _corrupt(where, "a sequence without @length")
        items = [_read_entry(group, str(i), f"{where}[{i}]") for i in range(length)]
        return tuple(items) if kind == "tuple" else items
    raise _corrupt(where, f"unknown group type {kind!r}")


def _landscape_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("landscape")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _temporary(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _sync_directory(path: str) -> None:
    # Make the rename durable where the platform allows it (POSIX); best effort.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> str:
    # Write to a temporary file beside `path`, sync it, and rename it over `path`.
    target = check_writable(path, "report")
    temporary = _temporary(target)
    try:
        write(temporary)
        with open(temporary, "r+b") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _sync_directory(target)
    return target


def _save(kind: str, data: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    import h5py

    def write(temporary: str) -> None:
        with h5py.File(temporary, "w-") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["kind"] = kind
            f.attrs["landscape_version"] = _landscape_version()
            _write_dict(f.create_group("data", track_order=True), data, "data")
            f.flush()

    return _atomic(path, write)


def load(path: str | os.PathLike[str]) -> Report | Comparison:
    """Read a report or comparison written by :meth:`Report.save` or :meth:`Comparison.save`.

    Parameters
    ----------
    path : str or PathLike
        The HDF5 file.

    Returns
    -------
    Report or Comparison
        As saved (by the file's ``kind``); ``load(p).data`` equals the saved data exactly.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    PermissionError
        If it cannot be read.
    ValueError
        If the file is not HDF5, not a landscape report (a foreign HDF5 file), written in
        a newer format version, or corrupt.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "r.h5")
    >>> _ = Report({"loss": {"value": 1.5, "accuracy": None}}).save(path)
    >>> load(path)["loss"]
    {'value': 1.5, 'accuracy': None}
    """
    import h5py

    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"no landscape report at {name!r}: the file does not exist.")
    if os.path.isdir(name) or not h5py.is_hdf5(name):
        raise ValueError(f"{name!r} is not a landscape report: it is not an HDF5 file.")
    try:
        handle = h5py.File(name, "r")
    except PermissionError:
        raise
    except OSError as error:
        raise ValueError(f"{name!r} is not a readable landscape report: {error}") from error
    with handle as f:
        found = f.attrs.get("format")
        if isinstance(found, bytes):
            found = found.decode("utf-8", "replace")
        if found != FORMAT:
            what = "no 'format' attribute" if found is None else f"format {found!r}"
            raise ValueError(
                f"{name!r} is not a landscape report: an HDF5 file with {what}, not {FORMAT!r}."
            )
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)):
            raise ValueError(f"{name!r} is a corrupt landscape report: no format_version.")
        if int(version) > FORMAT_VERSION:
            raise ValueError(
                f"{name!r} is a landscape report of format version {int(version)}, newer than "
                f"version {FORMAT_VERSION} that this landscape ({_landscape_version()}) reads; "
                "upgrade landscape to open it."
            )
        kind = f.attrs.get("kind")
        classes: dict[str, type[_Document]] = {"report": Report, "comparison": Comparison}
        if kind not in classes:
            raise ValueError(f"{name!r} is a corrupt landscape report: unknown kind {kind!r}.")
        if not isinstance(f.get("data"), h5py.Group):
            raise ValueError(f"{name!r} is a corrupt landscape report: no data group.")
        try:
            data = _read_group(f["data"], "data")
        except (KeyError, TypeError, IndexError, ValueError) as error:
            raise ValueError(f"{name!r}: {error}") from error
    return classes[str(kind)](data)


# -- the documents --------------------------------------------------------------------------------
class _Document:
    """Behaviour shared by :class:`Report` and :class:`Comparison`."""

    _KIND: ClassVar[str] = ""
    _TITLE: ClassVar[str] = ""
    _PLOTS: ClassVar[tuple[str, ...]] = ()
    _KEY_FIGURES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise TypeError(f"{type(self).__name__} needs a dict of sections; got {type(data)}.")
        self._data = data

    @property
    def data(self) -> Mapping[str, Any]:
        """The nested dictionary of plain values behind the document."""
        return self._data

    def __getitem__(self, section: str) -> Any:
        if section not in self._data:
            raise KeyError(
                f"this {self._KIND} has no section {section!r}; it has {list(self._data)}."
            )
        return self._data[section]

    def __contains__(self, section: object) -> bool:
        return section in self._data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sections={list(self._data)})"

    def __str__(self) -> str:
        return self.summary()

    # to be provided by subclasses
    def _sections(self) -> list[_Section]:
        raise NotImplementedError

    def _header(self) -> list[str]:
        raise NotImplementedError

    def _available(self, kind: str) -> bool:
        raise NotImplementedError

    def summary(self) -> str:
        """Return a plain-text summary of every section present.

        Returns
        -------
        str
            The header, then one block per section.
        """
        blocks = ["\n".join(self._header())] + [s.text() for s in self._sections()]
        return "\n\n".join(blocks)

    def plot_kinds(self) -> list[str]:
        """Return the plot kinds this document has data for.

        Returns
        -------
        list of str
            Valid arguments of :meth:`plot`, in a fixed order.
        """
        return [k for k in self._PLOTS if self._available(k)]

    def plot(self, kind: str) -> Figure:
        """Draw one figure.

        Parameters
        ----------
        kind : str
            One of :meth:`plot_kinds`.

        Returns
        -------
        matplotlib.figure.Figure
            A new figure (close it with ``matplotlib.pyplot.close`` when done).

        Raises
        ------
        ValueError
            If the kind is unknown or its section is missing (the message lists the kinds
            available), or the section cannot be drawn.
        """
        available = self.plot_kinds()
        if kind not in available:
            reason = (
                f"this {self._KIND} has no data for plot kind {kind!r}"
                if kind in self._PLOTS
                else f"unknown plot kind {kind!r}"
            )
            raise ValueError(
                f"{reason}; the kinds available for this {self._KIND} are {available} "
                f"(of {list(self._PLOTS)})."
            )
        return cast("Figure", getattr(self, f"_plot_{kind}")())

    def figures(self) -> dict[str, Figure]:
        """Draw every available figure.

        Returns
        -------
        dict of str to matplotlib.figure.Figure
            By plot kind, in the order of :meth:`plot_kinds`.
        """
        return {kind: self.plot(kind) for kind in self.plot_kinds()}

    def to_dict(self) -> dict[str, Any]:
        """Return the data as JSON-serializable values.

        Arrays become (nested) lists, tuples lists, numpy scalars Python scalars, and
        non-finite floats the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (``float()``
        reads them back), so ``json.dumps(doc.to_dict(), allow_nan=False)`` works.

        Returns
        -------
        dict
            The sections, converted.
        """
        return cast(dict[str, Any], _jsonable(self._data, "data"))

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the document to an HDF5 file, atomically; read it back with :func:`load`.

        The file is written beside ``path`` under a temporary name, synced, and renamed
        over ``path``: a crash or kill during the save leaves the previous file (or none)
        and never a partial one. The encoding is described in the module documentation.

        Parameters
        ----------
        path : str or PathLike
            The file (conventionally ``*.h5``); replaced if it exists.

        Returns
        -------
        str
            The path written.

        Raises
        ------
        FileNotFoundError, IsADirectoryError
            If the directory of ``path`` does not exist, or ``path`` is a directory (checked
            before anything is written).
        TypeError
            If a value cannot be stored (the previous file, if any, is kept).
        """
        return _save(self._KIND, self._data, path)

    def _html(self, kinds: Sequence[str], heading: str) -> str:
        e = html.escape
        header = self._header()
        parts = [f'<div class="lsr"><style>{_CSS}</style>']
        parts.append(f"<{heading}>{e(header[0])}</{heading}>")
        parts += [f'<p class="meta">{e(line)}</p>' for line in header[1:]]
        parts += [s.html() for s in self._sections()]
        if kinds:
            parts.append("<h2>Figures</h2>")
        import matplotlib.pyplot as plt

        for kind in kinds:
            before = set(plt.get_fignums())
            try:
                image = _png(self.plot(kind))
            except Exception as error:  # a figure that fails must not lose the page
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                parts.append(
                    f'<p class="error">figure {e(kind)!s} could not be drawn: '
                    f"{e(type(error).__name__)}: {e(str(error))}</p>"
                )
                continue
            parts.append(
                f'<figure><img alt="{e(kind)}" src="data:image/png;base64,{image}">'
                f"<figcaption>{e(kind)}</figcaption></figure>"
            )
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        kinds = [k for k in self._KEY_FIGURES if k in self.plot_kinds()]
        if self._KIND == "report" and "surface_2d" in kinds and "surface_1d" in kinds:
            kinds.remove("surface_1d")
        return self._html(kinds, "h3")

    def to_html(self, path: str | os.PathLike[str]) -> str:
        """Write one self-contained HTML page: the summary tables and every figure.

        Figures are embedded as base64 PNG images and the style sheet is inline: the page
        loads nothing from the network and runs no scripts. It is written atomically.

        Parameters
        ----------
        path : str or PathLike
            The file (conventionally ``*.html``); replaced if it exists.

        Returns
        -------
        str
            The path written.
        """
        title = html.escape(self._header()[0])
        body = self._html(self.plot_kinds(), "h1")
        page = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n<style>body{{margin:2em auto;max-width:1100px;"
            f"padding:0 1em}}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
        )

        def write(temporary: str) -> None:
            with open(temporary, "x", encoding="utf-8") as handle:
                handle.write(page)

        return _atomic(path, write)


class Report(_Document):
    r"""The result of :func:`landscape.analyze`: curvature, surfaces, learning rates of a model.

    Wraps a dictionary of sections (any may be missing): ``metadata``, ``loss``,
    ``eigenvalues``, ``trace``, ``frobenius``, ``density``, ``layerwise``, ``surface_1d``,
    ``surface_2d``, ``sharpness``, ``coherence``, ``learning_rate`` and ``costs``; index it
    by section name. Print it (or call :meth:`summary`) for a text summary, :meth:`plot`
    for figures, :meth:`to_html` for a page, :meth:`save` and :func:`load` for files.

    Parameters
    ----------
    data : dict
        The sections: nested dictionaries of plain values and numpy arrays.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> report = Report({
    ...     "loss": {"value": 0.25, "accuracy": 0.9},
    ...     "eigenvalues": {"top": [12.5, 3.0], "top_residuals": [1e-4, 2e-4]},
    ...     "trace": {"value": 40.0, "stderr": 1.5, "method": "hutch++",
    ...               "num_hvps": 60, "num_passes": 60, "seconds": 0.4},
    ... })
    >>> print(report.summary())
    Landscape report
    <BLANKLINE>
    Loss
      loss      0.25
      accuracy  0.9
    <BLANKLINE>
    Hessian
      λmax   12.5  (residual 0.0001)
      top 2  12.5, 3
      trace  40 ± 1.5  (hutch++)
    <BLANKLINE>
    Cost
      stage  HVPs  passes  seconds
      trace  60    60      0.4
      total  60    60      0.4
    >>> report.plot_kinds()
    ['eigenvalues', 'metrics']
    >>> fig = report.plot("eigenvalues")
    """

    _KIND = "report"
    _TITLE = "Landscape report"
    _PLOTS = (
        "spectrum",
        "eigenvalues",
        "layerwise",
        "surface_1d",
        "surface_2d",
        "learning_rate",
        "metrics",
    )
    _KEY_FIGURES = ("spectrum", "surface_2d", "surface_1d", "learning_rate")

    def _header(self) -> list[str]:
        return _header_lines(_mapping(self._data.get("metadata")), self._TITLE)

    def _sections(self) -> list[_Section]:
        data = self._data
        builders = (
            _loss_section,
            _hessian_section,
            _subsets_section,
            _layerwise_section,
            _block_spectra_section,
            _sharpness_section,
            _coherence_section,
            _surfaces_section,
        )
        sections = [s for s in (b(data) for b in builders) if s is not None]
        sections += _lr_sections(data)
        cost = _cost_section(_cost_items(data), "Cost")
        plan = _plan_section(data)
        return sections + [s for s in (cost, plan) if s is not None]

    def _available(self, kind: str) -> bool:
        data = self._data
        section = _mapping(data.get(kind))
        if kind == "spectrum":
            density = _mapping(data.get("density"))
            return density.get("grid") is not None and density.get("density") is not None
        if kind == "eigenvalues":
            present = [section.get(k) for k in ("top", "bottom")]
            return sum(np.size(v) for v in present if v is not None) > 0
        if kind == "layerwise":
            return bool(section.get("names"))
        if kind == "surface_1d":
            return section.get("loss") is not None and section.get("coords") is not None
        if kind == "surface_2d":
            return section.get("loss") is not None and section.get("coords_x") is not None
        if kind == "learning_rate":
            return bool(_lr_results(section))
        if kind == "metrics":
            return bool(_metrics(data))
        return False

    def _plot_spectrum(self) -> Figure:
        section = _mapping(self._data.get("density"))
        density = _spectral_density(section)
        if density is not None:
            return plot_spectral_density(density).figure
        ax = _new_axes()
        _draw_density(ax, section)
        ax.set_title("Spectral density (SLQ)", fontsize="medium")
        return ax.figure

    def _plot_eigenvalues(self) -> Figure:
        pairs, label = _eigenpairs(_mapping(self._data.get("eigenvalues")))
        return plot_eigenvalues(pairs, label=label).figure

    def _plot_layerwise(self) -> Figure:
        result, metric = _layerwise(_mapping(self._data.get("layerwise")))
        return plot_layerwise(result, metric=metric).figure

    def _plot_surface_1d(self) -> Figure:
        surface = _surface(_mapping(self._data.get("surface_1d")), 1)
        metric = "both" if _has_finite(surface.accuracy) else "loss"
        return plot_surface_1d(surface, metric=metric).figure

    def _plot_surface_2d(self) -> Figure:
        surface = _surface(_mapping(self._data.get("surface_2d")), 2)
        return plot_surface_2d(surface, kind="filled").figure

    def _plot_learning_rate(self) -> Figure:
        results = _lr_results(self._data.get("learning_rate"))
        return plot_learning_rates(
            [_lr_namespace(r) for r in results.values()], labels=list(results)
        )

    def _plot_metrics(self) -> Figure:
        rows = []
        for m in _metrics(self._data):
            value: Any = m.value
            if m.stderr is not None:
                value = SimpleNamespace(value=m.value, stderr=m.stderr)
            rows.append((m.label, value, m.invariant))
        fig = plot_metric_table(rows)
        fig.axes[0].set_title("Metrics", fontsize="medium")
        return fig


class Comparison(_Document):
    r"""Several models side by side: their reports, the path between two, shared-scale surfaces.

    Wraps a dictionary with ``metadata``, ``names`` (the models), ``reports`` (one report's
    data per name), ``interpolation`` (``pair``, ``t``, ``loss``, ``accuracy``, ``barrier``:
    the loss along :math:`(1-t)\theta_A + t\theta_B`), ``surfaces_2d`` (a 2-D surface per
    name, plotted on one color scale) and ``learning_rate`` (per name, per optimizer); any
    may be missing. Measures that are not invariant to function-preserving
    reparametrizations are flagged: their differences may be a scale artifact (Dinh et al.
    2017).

    Parameters
    ----------
    data : dict
        The sections.

    Examples
    --------
    >>> comparison = Comparison({
    ...     "names": ["a", "b"],
    ...     "reports": {"a": {"loss": {"value": 0.1}, "trace": {"value": 50.0}},
    ...                 "b": {"loss": {"value": 0.2}, "trace": {"value": 20.0}}},
    ...     "interpolation": {"pair": ["a", "b"], "t": [0.0, 0.5, 1.0],
    ...                       "loss": [0.1, 0.9, 0.2], "barrier": 0.75},
    ... })
    >>> print(comparison.summary().split("\n\n")[1])  # doctest: +NORMALIZE_WHITESPACE
    Metrics
      metric  a    b    invariant
      loss    0.1  0.2  yes
      trace   50   20   no †
      note: † not invariant to function-preserving reparametrization:
      differences may be a scale artifact (Dinh et al. 2017)
    >>> comparison.plot_kinds()
    ['interpolation', 'metrics']
    """

    _KIND = "comparison"
    _TITLE = "Landscape comparison"
    _PLOTS = ("spectrum", "interpolation", "surfaces_2d", "learning_rate", "metrics")
    _KEY_FIGURES = ("interpolation", "surfaces_2d", "spectrum")

    @property
    def names(self) -> list[str]:
        """The models compared, in order."""
        names = self._data.get("names")
        if names:
            return [str(n) for n in names]
        return [str(n) for n in _mapping(self._data.get("reports"))]

    @property
    def reports(self) -> dict[str, Report]:
        """Each model's :class:`Report`."""
        reports = _mapping(self._data.get("reports"))
        return {name: Report(_mapping(reports.get(name))) for name in self.names}

    def _report_data(self) -> dict[str, Mapping[str, Any]]:
        reports = _mapping(self._data.get("reports"))
        return {name: _mapping(reports.get(name)) for name in self.names}

    def _header(self) -> list[str]:
        lines = _header_lines(_mapping(self._data.get("metadata")), self._TITLE)
        names = self.names
        if names and ":" not in lines[0]:
            lines[0] += ": " + " vs ".join(names)
        return lines

    def _surfaces(self) -> dict[str, Mapping[str, Any]]:
        surfaces = _mapping(self._data.get("surfaces_2d"))
        if not surfaces:
            surfaces = {n: _mapping(d.get("surface_2d")) for n, d in self._report_data().items()}
        return {
            str(n): s
            for n, s in surfaces.items()
            if isinstance(s, Mapping) and s.get("loss") is not None
        }

    def _learning_rates(self) -> dict[str, dict[str, Mapping[str, Any]]]:
        section = _mapping(self._data.get("learning_rate"))
        if not section:
            section = {n: d.get("learning_rate") for n, d in self._report_data().items()}
        out = {str(n): _lr_results(r) for n, r in section.items()}
        return {n: r for n, r in out.items() if r}

    def _metric_table(self) -> tuple[list[str], list[list[str]], bool]:
        names = self.names
        per_model = {n: {m.key: m for m in _metrics(d)} for n, d in self._report_data().items()}
        keys: dict[str, _Metric] = {}
        for metrics in per_model.values():
            for key, m in metrics.items():
                keys.setdefault(key, m)
        rows, flagged = [], False
        for key, first in keys.items():
            flags = {per_model[n][key].invariant for n in names if key in per_model[n]}
            invariant = flags.pop() if len(flags) == 1 else None
            mark = "—"
            if invariant is not None:
                mark = "yes" if invariant else "no †"
                flagged = flagged or not invariant
            rows.append(
                [first.label] + [_metric_cell(per_model[n].get(key)) for n in names] + [mark]
            )
        return ["metric", *names, "invariant"], rows, flagged

    def _sections(self) -> list[_Section]:
        sections = []
        header, rows, flagged = self._metric_table()
        if rows:
            notes = []
            if flagged:
                notes.append("† not invariant to function-preserving reparametrization: " + _DINH)
            sections.append(_Section("Metrics", rows, header, notes))
        interpolation = _mapping(self._data.get("interpolation"))
        if interpolation:
            sections.append(self._interpolation_section(interpolation))
        surfaces = self._surfaces()
        rows = [[n, _surface_text(s, 2) or "—"] for n, s in surfaces.items()]
        if rows:
            notes = ["plotted on one shared color scale"] if len(rows) > 1 else []
            sections.append(_Section("2-D loss surfaces", rows, None, notes))
        sections += self._lr_sections()
        items = []
        for name, d in self._report_data().items():
            own = _cost_items(d)
            if own:
                hvps, passes, seconds = _total(own)
                items.append((f"report {name}", hvps, passes, seconds))
        items += _cost_items(
            {k: v for k, v in self._data.items() if k not in ("reports", "learning_rate")}
        )
        cost = _cost_section(items, "Cost")
        return sections + ([cost] if cost is not None else [])

    def _interpolation_section(self, section: Mapping[str, Any]) -> _Section:
        pair = [str(p) for p in section.get("pair") or []]
        t, loss = _floats(section.get("t")), _floats(section.get("loss"))
        rows = []
        if len(pair) == 2:
            rows.append(["path", f"(1−t)·{pair[0]} + t·{pair[1]}"])
        barrier = _num(section.get("barrier"))
        if barrier is not None:
            rows.append(["loss barrier", _g(barrier)])
        notes = []
        if t is not None and loss is not None and t.shape == loss.shape and t.ndim == 1:
            for end in (0.0, 1.0):
                at = loss[t == end]
                if at.size:
                    rows.append([f"loss at t={end:g}", _g(at[0])])
            finite = loss[np.isfinite(loss)]
            if finite.size:
                rows.append(["highest loss on the path", _g(finite.max())])
            rows.append(["points", str(t.size)])
        if barrier is not None and barrier <= 0:
            notes.append("no barrier: the two models are linearly mode-connected")
        return _Section("Linear interpolation", rows, None, notes)

    def _lr_sections(self) -> list[_Section]:
        results = self._learning_rates()
        optimizers: dict[str, None] = {}
        for per in results.values():
            optimizers.update(dict.fromkeys(per))
        out = []
        for opt in optimizers:
            columns = {n: per[opt] for n, per in results.items() if opt in per}
            table: dict[int, dict[str, Any]] = {}
            for n, r in columns.items():
                batch = np.asarray(r["batch_sizes"]).reshape(-1)
                lr = _floats(r.get("lr_max"))
                for i, b in enumerate(batch):
                    table.setdefault(int(b), {})[n] = _at(lr, i)
            rows = [[str(b)] + [_g(table[b].get(n)) for n in columns] for b in sorted(table)]
            notes = [
                f"{n}: d log lr / d log B = {_g(r.get('scaling_exponent'), 3)}"
                for n, r in columns.items()
                if r.get("scaling_exponent") is not None
            ]
            title = f"Largest stable learning rate (lr_max): {opt}"
            out.append(_Section(title, rows, ["B", *columns], notes))
        return out

    def _available(self, kind: str) -> bool:
        if kind == "spectrum":
            return any(
                _mapping(d.get("density")).get("grid") is not None
                for d in self._report_data().values()
            )
        if kind == "interpolation":
            section = _mapping(self._data.get("interpolation"))
            return section.get("t") is not None and section.get("loss") is not None
        if kind == "surfaces_2d":
            return bool(self._surfaces())
        if kind == "learning_rate":
            return bool(self._learning_rates())
        if kind == "metrics":
            return bool(self._metric_table()[1])
        return False

    def _plot_spectrum(self) -> Figure:
        densities = {
            n: _mapping(d.get("density"))
            for n, d in self._report_data().items()
            if _mapping(d.get("density")).get("grid") is not None
        }
        peaks = []
        for section in densities.values():
            values = _floats(section.get("density"))
            finite = values[np.isfinite(values)] if values is not None else np.zeros(0)
            if finite.size and finite.max() > 0:
                peaks.append(float(finite.max()))
        floor = max(peaks) * 1e-7 if peaks else None
        ax = _new_axes((6.4, 4.0))
        for i, (name, section) in enumerate(densities.items()):
            _draw_density(ax, section, label=name, color=f"C{i % 10}", floor=floor)
        if peaks and floor is not None:
            ax.set_ylim(floor, max(peaks) * 3)
        ax.set_title("Spectral densities (outliers dotted, bulk edges dashed)", fontsize="medium")
        ax.legend(fontsize="small")
        return ax.figure

    def _plot_interpolation(self) -> Figure:
        section = _mapping(self._data.get("interpolation"))
        pair = [str(p) for p in section.get("pair") or []]
        a, b = pair if len(pair) == 2 else ("θ_A", "θ_B")
        surface = _surface(
            {
                "coords": section.get("t"),
                "loss": section.get("loss"),
                "accuracy": section.get("accuracy"),
            },
            1,
            description=f"interpolate {a} -> {b}",
        )
        metric = "both" if _has_finite(surface.accuracy) else "loss"
        ax = plot_surface_1d(surface, metric=metric)
        barrier = _num(section.get("barrier"))
        if barrier is None:
            with contextlib.suppress(ValueError):
                barrier = surface.barrier()
        title = f"Linear interpolation: {a} (t=0) → {b} (t=1)"
        if barrier is not None:
            title += f"; loss barrier {_g(barrier)}"
        ax.set_title(title, fontsize="medium")
        return ax.figure

    def _plot_surfaces_2d(self) -> Figure:
        surfaces = self._surfaces()
        return plot_surfaces([_surface(s, 2) for s in surfaces.values()], labels=list(surfaces))

    def _plot_learning_rate(self) -> Figure:
        results, labels = [], []
        own = {
            n: (d.get("learning_rate") or {}).get("optimizer_kind")
            for n, d in self._report_data().items()
        }
        for name, per in self._learning_rates().items():
            if own.get(name) in per:  # each minimum with the optimizer that trained it
                per = {own[name]: per[own[name]]}
            for opt, r in per.items():
                results.append(_lr_namespace(r))
                labels.append(f"{name}: {opt}")
        return plot_learning_rates(results, labels=labels)

    def _plot_metrics(self) -> Figure:
        header, rows, flagged = self._metric_table()
        title = "Metrics" + (f" († {_DINH})" if flagged else "")
        return _table_figure(header, rows, title)
