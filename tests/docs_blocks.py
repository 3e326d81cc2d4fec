"""The Python code blocks of a Markdown page, and which of them are marked not to run.

A block is a fenced ```` ```python ```` (or ```` ```py ````) block. An HTML comment
``<!-- skip: reason -->`` on the last non-blank line before a block marks it as one that
cannot run offline or fast (a ``torchrun`` script, a framework's trainer); the reason is
required and kept, and such blocks are counted so they stay few.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE_OPEN = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(.+?)\s*-->\s*$")
PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """One fenced Python block: its code, its first line in the page, why it is skipped."""

    code: str
    line: int
    skip_reason: str | None = None


def python_blocks(markdown: str) -> list[Block]:
    """Return the page's Python blocks in order (indented fences are dedented).

    Raises
    ------
    ValueError
        For a fence that is never closed.
    """
    lines = markdown.splitlines()
    blocks, i, previous = [], 0, ""
    while i < len(lines):
        match = FENCE_OPEN.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        indent, fence, language = match.groups()
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip() == fence),
            None,
        )
        if end is None:
            raise ValueError(f"line {i + 1}: the fence {fence} is never closed")
        if language.lower() in PYTHON:
            body = [
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[i + 1 : end]
            ]
            skip = SKIP.match(previous)
            blocks.append(Block("\n".join(body) + "\n", i + 2, skip.group(1) if skip else None))
        previous, i = lines[end], end + 1
    return blocks
