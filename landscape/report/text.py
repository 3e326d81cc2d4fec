"""How numbers are written in summaries, tables, findings and pages: one place for all."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["count", "g", "num", "pm", "ratio_text"]


def num(value: Any) -> float | None:
    """Return ``value`` as a float, or ``None`` when it is not a number.

    Strings such as ``"inf"`` count as numbers.

    Returns
    -------
    float or None
        The number.
    """
    if value is None or isinstance(value, (dict, list, tuple, np.ndarray)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def g(value: Any, digits: int = 4) -> str:
    """Return a table cell: "—" for missing, yes/no for flags, ints exactly, floats rounded.

    Returns
    -------
    str
        The cell, at most ``digits`` significant figures.

    Examples
    --------
    >>> g(None), g(True), g(3), g(0.123456), g(float("inf"))
    ('—', 'yes', '3', '0.1235', 'inf')
    """
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    x = num(value)
    if x is None:
        return str(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def count(value: Any) -> str:
    """Return an integer with thousands separators (other values as :func:`g`).

    Returns
    -------
    str
        The text.

    Examples
    --------
    >>> count(124439808), count(None)
    ('124,439,808', '—')
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return f"{int(value):,}"
    return g(value)


def pm(value: Any, stderr: Any, digits: int = 6) -> str:
    """Return ``value ± stderr`` (the error to two figures; omitted when missing).

    Returns
    -------
    str
        The text.
    """
    text = g(value, digits)
    error = num(stderr)
    if error is not None and math.isfinite(error):
        text += f" ± {error:.2g}"
    return text


def ratio_text(ratio: float) -> str:
    """Return a ratio as people say it: "3.2×" above one, "1/20" below.

    Returns
    -------
    str
        The ratio in words a reader compares at a glance.

    Examples
    --------
    >>> ratio_text(3.17), ratio_text(0.05), ratio_text(0.8)
    ('3.2×', '1/20', '0.8×')
    """
    if ratio >= 1 or ratio <= 0:
        return f"{ratio:.2g}×"
    if ratio > 0.5:
        return f"{ratio:.2g}×"
    return f"1/{1 / ratio:.2g}"
