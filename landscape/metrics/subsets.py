r"""How much λmax and the trace move across data subsets, and whether the sample resolves them.

PyHessian issue #5: a ResNet's top eigenvalue varied 159-1587 across mini-batches. One number
from one sample says nothing about that; this module splits the curvature sample into ``k``
disjoint subsets, measures each, and turns the spread into an interval for the value on the
whole data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import t as student_t
from torch import nn

from landscape.batches import select_rows
from landscape.linalg.eigen import eigenvalues
from landscape.linalg.trace import trace
from landscape.losses import Criterion
from landscape.operators.hessian import hessian
from landscape.problem import Problem, as_problem
from landscape.records import Record

__all__ = ["SubsetEstimate", "SubsetSpread", "spread_interval", "subset_spread"]


@dataclass(frozen=True)
class SubsetEstimate(Record):
    """One quantity on the whole curvature sample and on each of its disjoint subsets.

    Attributes
    ----------
    value : float
        On the whole curvature sample (the number ``analyze`` reports).
    subsets : tuple of float
        On each subset.
    center : float
        ``value`` corrected for the small-sample bias (zero for linear quantities).
    half_width : float
        Half-width of the interval for the value on all the data.
    resolved : bool
        Whether ``half_width <= rtol * |center|``.
    suggested_samples : int
        Samples that would make it resolved (the interval shrinks as one over the root).
    """

    value: float
    subsets: tuple[float, ...]
    center: float
    half_width: float
    resolved: bool
    suggested_samples: int

    @property
    def interval(self) -> tuple[float, float]:
        """The interval ``center ± half_width``."""
        return self.center - self.half_width, self.center + self.half_width

    @property
    def spread(self) -> tuple[float, float]:
        """The smallest and largest subset values."""
        return min(self.subsets), max(self.subsets)


@dataclass(frozen=True)
class SubsetSpread(Record):
    """λmax and the trace across disjoint subsets of the curvature sample.

    Attributes
    ----------
    lambda_max, trace : SubsetEstimate
        The two quantities.
    num_subsets : int
        ``k``.
    samples : int
        Samples in the curvature sample (``k`` subsets of about ``samples / k``).
    population : int or None
        Samples in all the data (``None``: unknown, treated as infinite).
    confidence : float
        Coverage the intervals aim at.
    num_matvecs, num_passes : int
        Costs.
    """

    lambda_max: SubsetEstimate
    trace: SubsetEstimate
    num_subsets: int
    samples: int
    population: int | None
    confidence: float
    num_matvecs: int
    num_passes: int

    def summary(self) -> str:
        """Return the result as plain text, one line per quantity.

        Returns
        -------
        str
            Value, subset range, interval and whether the sample size resolves it.
        """
        lines = []
        for name, e in (("λmax", self.lambda_max), ("trace", self.trace)):
            lo, hi = e.interval
            verdict = (
                "resolved"
                if e.resolved
                else f"not resolved; about {e.suggested_samples} samples would resolve it"
            )
            lines.append(
                f"{name}: {e.value:.4g} on {self.samples} samples; over {self.num_subsets} "
                f"subsets {e.spread[0]:.4g} … {e.spread[1]:.4g}; {self.confidence:.0%} interval "
                f"for all the data [{lo:.4g}, {hi:.4g}] ({verdict})"
            )
        return "\n".join(lines)


def spread_interval(
    value: float,
    subsets: tuple[float, ...] | list[float],
    samples: int,
    *,
    population: int | None = None,
    convex: bool = False,
    confidence: float = 0.95,
    rtol: float = 0.1,
) -> SubsetEstimate:
    r"""Turn an estimate and its values on disjoint subsets into an interval for all the data.

    The estimate is on :math:`n` samples, the subsets are :math:`k` disjoint parts of
    :math:`n/k`, the data has :math:`N` samples.

    Sampling variance of a smooth statistic scales as :math:`1/n - 1/N` (without
    replacement), so with the subsets' standard deviation :math:`s_k`,

    .. math::
        \mathrm{se} = s_k \sqrt{\frac{1/n - 1/N}{k/n - 1/N}}, \qquad
        \text{half width} = t_{k-1,\,(1+c)/2}\,\mathrm{se}.

    A convex statistic such as :math:`\lambda_{\max}` is biased upward on a sample (Jensen:
    :math:`E\lambda_{\max}(H_S) \ge \lambda_{\max}(E H_S)`), by about :math:`b(1/n - 1/N)`;
    the subsets measure it: :math:`\bar x_k - x_n \approx b(k-1)/n`, so the center is
    :math:`x_n - (\bar x_k - x_n)(1 - n/N)/(k-1)` (a split-sample jackknife; Quenouille 1956).

    Parameters
    ----------
    value : float
        :math:`x_n`, on the whole sample.
    subsets : sequence of float
        :math:`x` on each of :math:`k \ge 2` disjoint subsets.
    samples : int
        :math:`n`.
    population : int, optional
        :math:`N` (default: infinite).
    convex : bool, optional
        Correct the small-sample bias (for λmax; the trace is linear, unbiased).
    confidence : float, optional
        Target coverage :math:`c`.
    rtol : float, optional
        Resolved when the half width is at most ``rtol`` times the center.

    Returns
    -------
    SubsetEstimate
        The interval and the verdict.

    Raises
    ------
    ValueError
        For fewer than two subsets.

    Examples
    --------
    >>> e = spread_interval(10.0, [9.0, 11.0, 10.5, 9.5], 400)
    >>> round(e.center, 6), round(e.half_width, 3), e.resolved
    (10.0, 1.453, False)
    """
    k = len(subsets)
    if k < 2:
        raise ValueError("need at least two subsets for a spread.")
    x = torch.tensor(list(subsets), dtype=torch.float64)
    inverse_population = 0.0 if population is None else 1.0 / population
    share = max(1.0 / samples - inverse_population, 0.0) / max(
        k / samples - inverse_population, 1e-300
    )
    se = float(x.std()) * math.sqrt(share)
    center = value
    if convex:
        center -= (float(x.mean()) - value) * (1.0 - samples * inverse_population) / (k - 1)
    half = float(student_t.ppf((1 + confidence) / 2, k - 1)) * se
    target = rtol * abs(center)
    resolved = half <= target
    suggested = samples if resolved or target == 0 else math.ceil(samples * (half / target) ** 2)
    return SubsetEstimate(
        value, tuple(float(v) for v in subsets), center, half, resolved, suggested
    )


def _split(problem: Problem, k: int) -> tuple[list[list[Any]], int]:
    """Cut every batch into ``k`` row chunks; subset ``i`` takes chunk ``i`` of each batch.

    A batch of fewer than ``k`` samples goes whole to the next subset in turn.

    Returns
    -------
    tuple
        The ``k`` lists of sub-batches and the number of samples.

    Raises
    ------
    ValueError
        If some subset gets no sample.
    """
    parts: list[list[Any]] = [[] for _ in range(k)]
    samples = turn = 0
    for batch in problem.batches():
        samples += batch.num_samples
        if batch.num_samples < k:
            parts[turn % k].append(batch.data)
            turn += 1
            continue
        for i, rows in enumerate(torch.tensor_split(torch.arange(batch.num_samples), k)):
            parts[i].append(select_rows(batch.data, rows, batch.num_samples))
    if any(not part for part in parts):
        raise ValueError(
            f"{samples} samples in {turn} small batches cannot fill {k} subsets; pass more "
            "data or a smaller num_subsets."
        )
    return parts, samples


def subset_spread(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    num_subsets: int = 4,
    population: int | None = None,
    trace_matvecs: int = 30,
    tol: float = 1e-3,
    confidence: float = 0.95,
    rtol: float = 0.1,
    seed: int = 0,
    backend: str = "auto",
    **options: Any,
) -> SubsetSpread:
    r"""λmax and the Hessian trace on ``data`` and on ``num_subsets`` disjoint parts of it.

    Every batch is cut into ``num_subsets`` row chunks and subset :math:`i` takes chunk
    :math:`i` of each batch (so each subset spans all batches); λmax (Lanczos, ``tol``) and
    the trace (Hutch++, ``trace_matvecs``) are measured on the whole sample and on each
    subset, and :func:`spread_interval` turns the spread into an interval for all the data
    (``population`` samples), with the verdict whether the sample resolves the value.
    Costs about twice the products of the two estimates on the whole sample.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem` on the curvature sample, or the model (never
        modified) with that data and its loss, as for :func:`landscape.hessian`. The subsets
        split exactly the data the whole-sample Hessian uses (``max_batches`` and
        ``max_samples`` included).
    num_subsets : int, optional
        :math:`k \ge 2`.
    population : int, optional
        Samples in all the data (default: infinite).
    trace_matvecs : int, optional
        Products per trace estimate.
    tol : float, optional
        Lanczos tolerance of λmax.
    confidence : float, optional
        Target coverage of the intervals.
    rtol : float, optional
        Relative half width below which a value counts as resolved.
    seed : int, optional
        Randomness of probes and starting vectors.
    backend, **options
        The Hessian backend and the problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    SubsetSpread
        The two estimates with their intervals.

    Raises
    ------
    ValueError
        For ``num_subsets < 2``.

    References
    ----------
    PyHessian issue #5 (amirgholami/PyHessian): top eigenvalue 159-1587 across batches.
    M. H. Quenouille, "Notes on bias in estimation", Biometrika 43, 1956.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> X, y = torch.randn(200, 4), torch.randint(0, 3, (200,))
    >>> result = subset_spread(model, [(X[:100], y[:100]), (X[100:], y[100:])])
    >>> result.num_subsets, result.samples, len(result.lambda_max.subsets)
    (4, 200, 4)
    """
    if num_subsets < 2:
        raise ValueError(f"num_subsets must be at least 2; got {num_subsets}.")
    problem = as_problem(problem, data, loss_fn, where="subset_spread", **options)
    parts, samples = _split(problem.with_data(shard=False), num_subsets)
    matvecs = passes = 0

    def measure(operator: Any, offset: int) -> tuple[float, float]:
        nonlocal matvecs, passes
        top = eigenvalues(operator, k=1, tol=tol, seed=seed + offset)
        tr = trace(operator, num_matvecs=trace_matvecs, seed=seed + offset + 1)
        matvecs += operator.num_matvecs
        passes += operator.num_passes
        return float(top.values[0]), float(tr.value)

    whole = measure(hessian(problem, backend=backend), 0)
    each = [measure(hessian(problem.with_data(part), backend=backend), 2 * i + 2)
            for i, part in enumerate(parts)]  # fmt: skip
    common = {"population": population, "confidence": confidence, "rtol": rtol}
    return SubsetSpread(
        lambda_max=spread_interval(whole[0], [e[0] for e in each], samples, convex=True, **common),
        trace=spread_interval(whole[1], [e[1] for e in each], samples, **common),
        num_subsets=num_subsets,
        samples=samples,
        population=population,
        confidence=confidence,
        num_matvecs=matvecs,
        num_passes=passes,
    )
