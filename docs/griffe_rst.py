"""Griffe extension: the docstrings' reStructuredText markup, rendered for mkdocstrings.

landscape's docstrings are numpy style with Sphinx markup: cross-reference roles
(``:func:`~landscape.linalg.eigenvalues```), inline formulas (``:math:`\\lambda_{\\max}```)
and ``.. math::`` blocks. mkdocstrings renders docstrings as Markdown, where that markup
would show as raw text. Before a docstring is parsed this extension rewrites

* a role to its target as code (``~`` keeps the last component, as in Sphinx);
* a formula to MathML (``latex2mathml``), which browsers render natively: no MathJax, no
  JavaScript, nothing loaded from the network. A formula latex2mathml cannot convert stays
  as its LaTeX source in code, so the build never fails on one.

The source files are not changed; ``help()`` and IDEs still show the reStructuredText.
"""

from __future__ import annotations

import re

import griffe
from latex2mathml.converter import convert

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc):`(~?)\.?([^`]+)`")
MATH = re.compile(r":math:`([^`]+)`")
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def mathml(tex: str, display: bool = False) -> str:
    """MathML for a LaTeX formula, or the formula as code when it cannot be converted."""
    tex = " ".join(tex.split())
    try:
        markup = convert(tex, display="block" if display else "inline")
    except Exception:  # latex2mathml raises many kinds of errors on unsupported input
        return f"`{tex}`"
    # Python-Markdown takes a line that starts with <math> for a raw HTML block: a <span>
    # keeps an inline formula inline wherever the docstring's line breaks put it.
    return markup if display else f"<span>{markup}</span>"


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _math_blocks(text: str) -> str:
    """Replace each ``.. math::`` directive and its indented body by a MathML block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, body = match.group("indent"), [match.group("rest")]
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        out += ["", indent + mathml(" ".join(body), display=True), ""]
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its roles and formulas rewritten (see the module)."""
    text = _math_blocks(text)
    text = MATH.sub(lambda m: mathml(m.group(1)), text)
    return ROLE.sub(_role, text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
