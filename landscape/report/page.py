"""The HTML page of a report or comparison: findings first, then one block per topic.

Each topic shows its tables with its figure beside them; details (other optimizers, per-layer
tables, costs, other figures) are folded in ``<details>``; every metric name carries a
one-line definition shown on hover. The page is one self-contained file: the style sheet is
inline, figures are embedded PNG images, and there are no scripts.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from landscape.report.figures import png
from landscape.report.findings import Finding
from landscape.report.sections import Section

__all__ = ["CSS", "body", "page"]

TOPICS = (
    ("overview", "Overview"),
    ("curvature", "Curvature"),
    ("learning_rate", "Learning rate and batch size"),
    ("surface", "Loss surface"),
    ("sharpness", "Sharpness"),
    ("layers", "Layers and blocks"),
    ("models", "Each model"),
    ("cost", "Cost"),
)

CSS = """
.lsr{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
line-height:1.35}
.lsr h1{font-size:1.5em;margin:.2em 0}
.lsr h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
.lsr h3{font-size:1em;margin:.8em 0 .2em}
.lsr table{border-collapse:collapse;font-size:13px;margin:.2em 0 .4em}
.lsr th,.lsr td{text-align:left;padding:2px 12px 2px 4px;border-bottom:1px solid #eee;
vertical-align:top}
.lsr thead th{background:#f4f4f4}
.lsr tbody th{font-weight:600}
.lsr abbr{text-decoration:underline dotted #999;cursor:help}
.lsr .meta{color:#555;margin:.1em 0;font-size:13px}
.lsr .note{color:#666;font-size:12px;margin:.1em 0}
.lsr .error{color:#a00}
.lsr .row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.lsr .tables{flex:1 1 420px;min-width:0;overflow-x:auto}
.lsr .figs{flex:0 1 560px}
.lsr figure{margin:.2em 0}
.lsr figcaption{font-size:12px;color:#555}
.lsr img{max-width:100%;height:auto}
.lsr details{margin:.4em 0}
.lsr summary{cursor:pointer;color:#345;font-size:14px}
.lsr ol.findings{padding-left:1.4em}
.lsr ol.findings li{margin:.5em 0}
.lsr .statement{margin:0;font-size:15px}
.lsr .evidence,.lsr .rule{margin:.1em 0;font-size:12.5px;color:#555}
.lsr .conf{display:inline-block;padding:0 .5em;border-radius:.6em;font-size:11.5px;color:#fff}
.lsr .conf-resolved{background:#2e7d32}
.lsr .conf-within-noise{background:#b26a00}
.lsr .conf-assumption-not-met{background:#6d6d6d}
.lsr .subject{font-weight:600}
"""


def _findings(findings: Sequence[Finding]) -> str:
    # The ranked findings; the caveats (priority 3) folded below the others.
    if not findings:
        return ""
    main = [f for f in findings if f.priority < 3]
    caveats = [f for f in findings if f.priority >= 3]
    text = '<h2>Findings</h2>\n<ol class="findings">\n' + _items(main) + "\n</ol>"
    if caveats:
        text += (
            f"<details><summary>{len(caveats)} caveats: estimates not resolved, assumptions"
            f' not met</summary>\n<ol class="findings" start="{len(main) + 1}">\n'
            + _items(caveats)
            + "\n</ol></details>"
        )
    return text


def _items(findings: Sequence[Finding]) -> str:
    e = html.escape
    items = []
    for f in findings:
        css = "conf-" + f.confidence.replace(" ", "-")
        who = f'<span class="subject">{e(f.subject)}:</span> ' if f.subject else ""
        items.append(
            f'<li><p class="statement">{who}{e(f.statement)}</p>'
            f'<p class="evidence">Evidence: {e(f.evidence)}</p>'
            f'<p class="rule">Rule: {e(f.rule)} — {e(f.reference)} '
            f'<span class="conf {css}" title="confidence">{e(f.confidence)}</span></p></li>'
        )
    return "\n".join(items)


def _figure(kind: str, draw: Callable[[str], object]) -> str:
    e = html.escape
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    try:
        image = png(draw(kind))  # type: ignore[arg-type]
    except Exception as error:  # a figure that fails must not lose the page
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
        return (
            f'<p class="error">figure {e(kind)} could not be drawn: '
            f"{e(type(error).__name__)}: {e(str(error))}</p>"
        )
    return (
        f'<figure><img alt="{e(kind)}" src="data:image/png;base64,{image}">'
        f"<figcaption>{e(kind.replace('_', ' '))}</figcaption></figure>"
    )


def _block(section: Section, draw: Callable[[str], object], kinds: set[str], heading: str) -> str:
    # A section's table with its first drawable figure beside it and the others folded.
    e = html.escape
    figures = [k for k in section.figures if k in kinds]
    inner = f"<{heading}>{e(section.title)}</{heading}>\n{section.table_html()}"
    if figures:
        first = _figure(figures[0], draw)
        more = "".join(_figure(k, draw) for k in figures[1:])
        if more:
            first += f"<details><summary>more figures</summary>{more}</details>"
        inner = (
            f'<div class="row"><div class="tables">{inner}</div>'
            f'<div class="figs">{first}</div></div>'
        )
    if section.folded:
        return f"<details><summary>{e(section.title)}</summary>\n{inner}\n</details>"
    return inner


def body(
    header: Sequence[str],
    findings: Sequence[Finding],
    sections: Sequence[Section],
    draw: Callable[[str], object],
    kinds: Sequence[str],
    *,
    heading: str = "h1",
    figures: bool = True,
) -> str:
    """Return the document as an HTML fragment (a ``<div>`` with its style).

    Parameters
    ----------
    header : sequence of str
        The title line, then fact lines.
    findings : sequence of Finding
        Ranked findings, shown first.
    sections : sequence of Section
        The tables, grouped by topic in :data:`TOPICS` order.
    draw : callable
        ``draw(kind)`` returns a figure.
    kinds : sequence of str
        The figure kinds that can be drawn.
    heading : str, optional
        The title's tag (``"h3"`` inside notebooks).
    figures : bool, optional
        Draw figures (off: tables only).

    Returns
    -------
    str
        The fragment.
    """
    e = html.escape
    parts = [f'<div class="lsr"><style>{CSS}</style>', f"<{heading}>{e(header[0])}</{heading}>"]
    parts += [f'<p class="meta">{e(line)}</p>' for line in header[1:]]
    parts.append(
        '<p class="meta">Costs count Hessian-vector products (HVPs), passes over the data and '
        "seconds; hover a metric's name for its definition.</p>"
    )
    parts.append(_findings(findings))
    available = set(kinds) if figures else set()
    for topic, title in TOPICS:
        members = [s for s in sections if s.topic == topic]
        if not members:
            continue
        parts.append(f"<h2>{e(title)}</h2>")
        parts += [_block(s, draw, available, "h3") for s in members]
    parts.append("</div>")
    return "\n".join(p for p in parts if p)


def page(title: str, fragment: str) -> str:
    """Wrap a fragment into a whole HTML document.

    Returns
    -------
    str
        The page.
    """
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(title)}</title>\n<style>body{{margin:2em auto;max-width:1200px;"
        f"padding:0 1em}}</style>\n</head>\n<body>\n{fragment}\n</body>\n</html>\n"
    )
