r"""Gradient coherence, gradient noise scale, GSNR and Hessian coherence, with their costs.

Everything here is measured at a fixed :math:`\theta` from per-example quantities of the
training loss :math:`L(\theta) = \frac1m \sum_i \ell_i(\theta)` over the samples used, with
**population moments over those samples** (divide by :math:`m`):

.. math::
    G = \frac1m \sum_i g_i, \qquad
    \Sigma = \frac1m \sum_i (g_i - G)(g_i - G)^\top, \qquad
    \frac1m \sum_i \lVert g_i\rVert^2 = \lVert G\rVert^2 + \operatorname{tr}\Sigma .

When samples weigh differently (a language model's sequences weigh their scored tokens,
:math:`L = \sum_i w_i \ell_i / W`), every mean above is the :math:`w`-weighted mean
(:math:`\frac1m\sum_i \to \frac1W\sum_i w_i`), so :math:`G` is still the gradient of
:math:`L`; the unbiased estimates become weighted U-statistics (pairs :math:`i \ne j`
weighted by :math:`w_i w_j`), which reduce to the unweighted ones for equal weights.

Two functions:

* :func:`coherence` computes per-example gradients (:mod:`landscape.operators.per_example`)
  and derives gradient coherence (Chatterjee & Zielinski), the simple noise scale
  :math:`B_\text{simple}` (McCandlish et al.), GSNR (Liu et al.), optionally
  :math:`B_\text{noise}` with Hessian-vector products, and optionally the Hessian coherence
  :math:`\sigma` of Dexter et al. from per-example Hessians.
* :func:`noise_scale` estimates :math:`\lVert G\rVert^2`, :math:`\operatorname{tr}\Sigma`
  and :math:`B_\text{simple}` from mini-batch gradients only (no per-example gradients),
  with McCandlish et al.'s unbiased two-batch-size estimator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from landscape._compat import moved, moved_into
from landscape.batches import select_rows
from landscape.data import BatchList
from landscape.linalg._random import as_generator, gaussian
from landscape.linalg.eigen import eigenvalues
from landscape.losses import Criterion
from landscape.operators.hessian import HessianOperator
from landscape.operators.per_example import SampleChunk, check_chunk_size, per_example_pass
from landscape.problem import Problem, as_problem
from landscape.records import Record

__all__ = [
    "CoherenceResult",
    "HessianSettings",
    "NoiseScale",
    "ParamGSNR",
    "coherence",
    "noise_scale",
]

HessianMethod = Literal["probes", "exact"]


@dataclass(frozen=True)
class HessianSettings(Record):
    r"""What :func:`coherence` measures with Hessians, besides the gradient statistics.

    Attributes
    ----------
    noise_scale : bool
        Compute :math:`B_\text{noise} = \operatorname{tr}(H\Sigma) / (G^\top H G)`
        (:math:`m + 1` HVPs over the :math:`m` samples).
    samples : int
        :math:`s`, examples for the Hessian coherence of Dexter et al. (0: skip); at most
        the samples used.
    probes : int
        Gaussian probes per example for ``method="probes"`` (at least 2, for standard
        errors).
    method : {"probes", "exact"}
        How :math:`\operatorname{tr}(H_iH_j)` and :math:`\lambda_\max(H_i)` are computed:
        shared probes and Lanczos, or dense per-example Hessians (:math:`P \le 8192`).
    tol : float
        Relative residual tolerance of the per-example Lanczos runs.

    Raises
    ------
    ValueError
        For a negative ``samples``, fewer than 2 ``probes`` or an unknown ``method``.

    Examples
    --------
    >>> HessianSettings(noise_scale=True, samples=4).method
    'probes'
    """

    noise_scale: bool = False
    samples: int = 0
    probes: int = 8
    method: HessianMethod = "probes"
    tol: float = 1e-4

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 0:
            raise ValueError(
                f"hessian_samples must be a non-negative integer; got {self.samples!r}."
            )
        if self.method not in ("probes", "exact"):
            raise ValueError(f"hessian_method must be 'probes' or 'exact'; got {self.method!r}.")
        if self.method == "probes" and (not isinstance(self.probes, int) or self.probes < 2):
            raise ValueError(f"hessian_probes must be an integer >= 2; got {self.probes!r}.")


_EXACT_MAX_DIM = 8192  # dense per-example Hessians (P x P each) beyond this are refused
_PROBE_BLOCK_ENTRIES = 2**25  # bounds the (examples x P x probes) block of per-example HVPs


def _ratio(num: float, den: float) -> float:
    """Return ``num / den``, with ``inf`` for a positive number over zero and NaN for 0/0.

    Returns
    -------
    float
        The ratio.
    """
    if den != 0:
        return num / den
    if num == 0 or math.isnan(num):
        return math.nan
    return math.copysign(math.inf, num)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.6g}"


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamGSNR(Record):
    r"""Gradient signal-to-noise ratio of one parameter tensor.

    Per entry :math:`j`, :math:`r_j = \bar g_j^2 / \operatorname{Var}_i(g_{ij})` (population
    variance over the samples). An entry whose gradient is the same for every sample has
    :math:`r_j = \infty` (or is left out, as 0/0, if that gradient is zero).

    Attributes
    ----------
    name : str
        Parameter name.
    numel : int
        Number of entries.
    median : float
        Median of :math:`r_j` over the entries (NaN entries left out).
    mean : float
        Mean of :math:`r_j` over the entries (NaN entries left out; ``inf`` if any is).
    num_undefined : int
        Entries left out because every sample's gradient is exactly zero there (0/0).
    """

    name: str
    numel: int
    median: float
    mean: float
    num_undefined: int = 0


@dataclass(frozen=True)
class CoherenceResult(Record):
    r"""Gradient coherence, noise scales, GSNR and (optionally) Hessian coherence at one point.

    All moments are population moments over the ``num_samples`` samples used (see the
    module docstring). Every ``*_unbiased`` quantity treats those samples as i.i.d. draws
    from a larger distribution and is the unbiased (U-statistic) estimate of it.

    Attributes
    ----------
    num_samples : int
        :math:`m`, the samples used.
    num_params : int
        :math:`P`, the selected parameters.
    mean_loss : float
        Mean of the per-sample losses.
    grad_norm_sq : float
        :math:`\lVert G\rVert^2`.
    trace_cov : float
        :math:`\operatorname{tr}\Sigma` (population covariance, divided by :math:`m`).
    mean_grad_norm_sq : float
        :math:`\frac1m\sum_i\lVert g_i\rVert^2 = \lVert G\rVert^2 + \operatorname{tr}\Sigma`.
    alpha : float
        Coherence :math:`\alpha = \lVert G\rVert^2 / \frac1m\sum_i\lVert g_i\rVert^2`.
    m_coherence : float
        :math:`m\alpha = \lVert\sum_i g_i\rVert^2 / \sum_i\lVert g_i\rVert^2`: 1 for
        orthogonal gradients, :math:`m` for identical ones.
    alpha_unbiased : float
        Pairwise (off-diagonal) coherence
        :math:`(\lVert\sum g_i\rVert^2 - \sum\lVert g_i\rVert^2)/((m-1)\sum\lVert g_i\rVert^2)`:
        0 for orthogonal gradients, 1 for identical ones.
    b_simple : float
        :math:`B_\text{simple} = \operatorname{tr}\Sigma/\lVert G\rVert^2`; exactly
        :math:`\alpha = 1/(1+B_\text{simple})`.
    grad_norm_sq_unbiased, trace_cov_unbiased, b_simple_unbiased : float
        :math:`\lVert G\rVert^2 - \operatorname{tr}\Sigma/(m-1)`,
        :math:`\frac{m}{m-1}\operatorname{tr}\Sigma` and their ratio; exactly
        :math:`\alpha_\text{unbiased} = 1/(1+B_\text{simple,unbiased})`. The ratio can be
        negative or infinite when the gradient is small against the noise.
    gsnr_median, gsnr_mean : float
        Median and mean of the per-entry GSNR over all selected parameters.
    gsnr : tuple of ParamGSNR
        Per parameter tensor.
    b_noise : float or None
        :math:`B_\text{noise} = \operatorname{tr}(H\Sigma)/(G^\top H G)` (``noise_hessian=True``).
    trace_hessian_cov, gHg : float or None
        Its numerator and denominator.
    hessian_samples : int
        :math:`s`, examples used for Hessian coherence (0: not computed).
    hessian_method : str or None
        ``"probes"`` (Gaussian-probe estimate) or ``"exact"`` (dense per-example Hessians).
    hessian_probes : int
        Probes per example (``"probes"`` only).
    hessian_traces : Tensor or None
        :math:`T_{ij} \approx \operatorname{tr}(H_i H_j)`, shape ``(s, s)``.
    hessian_traces_stderr : Tensor or None
        Standard errors of ``hessian_traces`` (zeros when exact).
    hessian_top_eigenvalues : Tensor or None
        :math:`\lambda_\max(H_i)`, shape ``(s,)``.
    hessian_coherence : float or None
        Dexter et al.'s :math:`\sigma = \lambda_\max(S)/\max_i\lambda_\max(H_i)`,
        :math:`S_{ij} = \sqrt{\max(T_{ij}, 0)}`. In :math:`[1, s]` for positive
        semi-definite rank-one :math:`H_i`: :math:`s` when they are identical, 1 when
        mutually orthogonal.
    hessian_coherence_normalized : float or None
        :math:`\sigma/s`: 1 for identical rank-one :math:`H_i`, :math:`1/s` for orthogonal.
    hessian_alignment : float or None
        :math:`\lambda_\max(S)/(s\,\max_i S_{ii})`, in :math:`[1/s, 1]` for positive
        semi-definite :math:`H_i` of any rank: 1 exactly when all :math:`H_i` are identical,
        :math:`1/s` when mutually orthogonal (:math:`\operatorname{tr}(H_iH_j)=0`) with equal
        Frobenius norms.
    num_passes : int
        Passes over the data: per-example-gradient passes plus Hessian ``matmat`` calls.
    num_matvecs : int
        Hessian-vector products (full-data for ``b_noise``, single-example for coherence).
    seconds : float
        Wall-clock time.
    notes : tuple of str
        Caveats met while computing.
    """

    _renamed: ClassVar[dict[str, str]] = {"num_hvps": "num_matvecs"}

    num_samples: int
    num_params: int
    mean_loss: float
    grad_norm_sq: float
    trace_cov: float
    mean_grad_norm_sq: float
    alpha: float
    m_coherence: float
    alpha_unbiased: float
    b_simple: float
    grad_norm_sq_unbiased: float
    trace_cov_unbiased: float
    b_simple_unbiased: float
    gsnr_median: float
    gsnr_mean: float
    gsnr: tuple[ParamGSNR, ...]
    b_noise: float | None = None
    trace_hessian_cov: float | None = None
    gHg: float | None = None
    hessian_samples: int = 0
    hessian_method: str | None = None
    hessian_probes: int = 0
    hessian_traces: Tensor | None = field(default=None, repr=False)
    hessian_traces_stderr: Tensor | None = field(default=None, repr=False)
    hessian_top_eigenvalues: Tensor | None = field(default=None, repr=False)
    hessian_coherence: float | None = None
    hessian_coherence_normalized: float | None = None
    hessian_alignment: float | None = None
    num_passes: int = 0
    num_matvecs: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def table(self) -> str:
        """Return a plain-text summary.

        Returns
        -------
        str
            One quantity per line, then the per-parameter GSNR.
        """
        rows = [
            ("samples m", f"{self.num_samples}"),
            ("parameters P", f"{self.num_params}"),
            ("mean loss", _fmt(self.mean_loss)),
            ("|G|^2", _fmt(self.grad_norm_sq)),
            ("tr Sigma (pop.)", _fmt(self.trace_cov)),
            ("alpha", _fmt(self.alpha)),
            ("m-coherence", _fmt(self.m_coherence)),
            ("alpha (unbiased, pairwise)", _fmt(self.alpha_unbiased)),
            ("B_simple", _fmt(self.b_simple)),
            ("B_simple (unbiased)", _fmt(self.b_simple_unbiased)),
            ("GSNR median / mean", f"{_fmt(self.gsnr_median)} / {_fmt(self.gsnr_mean)}"),
        ]
        if self.b_noise is not None:
            rows.append(("B_noise", _fmt(self.b_noise)))
        if self.hessian_coherence is not None:
            rows += [
                (
                    f"Hessian coherence sigma (s={self.hessian_samples})",
                    _fmt(self.hessian_coherence),
                ),
                ("sigma / s", _fmt(self.hessian_coherence_normalized)),
                ("Hessian alignment", _fmt(self.hessian_alignment)),
            ]
        rows.append(
            ("cost", f"{self.num_passes} passes, {self.num_matvecs} HVPs, {self.seconds:.3g} s")
        )
        width = max(len(k) for k, _ in rows) + 2
        lines = [f"{k:<{width}}{v}" for k, v in rows]
        lines.append("")
        lines.append(f"{'parameter':<32}{'numel':>9}{'GSNR median':>14}{'GSNR mean':>14}")
        for p in self.gsnr:
            lines.append(f"{p.name:<32}{p.numel:>9}{_fmt(p.median):>14}{_fmt(p.mean):>14}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class NoiseScale(Record):
    r"""The two-batch-size estimate of the gradient noise scale.

    Attributes
    ----------
    b_simple : float
        :math:`\widehat{\operatorname{tr}\Sigma} / \widehat{\lVert G\rVert^2}` (means over
        pairs taken before the ratio).
    b_simple_stderr : float
        Its standard error (delta method over the pairs).
    grad_norm_sq, grad_norm_sq_stderr : float
        Estimate of :math:`\lVert G\rVert^2` and its standard error.
    trace_cov, trace_cov_stderr : float
        Estimate of :math:`\operatorname{tr}\Sigma` and its standard error.
    critical_batch : float
        :math:`B_\text{crit} \approx B_\text{simple}`, the approximation of McCandlish et al.
        (exact for :math:`B_\text{noise}` when the Hessian is a multiple of the identity;
        otherwise they found the two within an order of magnitude).
    small_batch, big_batch : int
        :math:`B_\text{small} < B_\text{big}`.
    num_pairs : int
        Pairs of batches averaged.
    num_samples : int
        :math:`n`, the samples the batches are drawn from.
    finite_population : bool
        Whether the finite-population correction was applied (see :func:`noise_scale`).
    small_sq_norms, big_sq_norms : Tensor
        :math:`\lVert G_{B_\text{small}}\rVert^2`, :math:`\lVert G_{B_\text{big}}\rVert^2`
        per pair.
    num_gradients : int
        Mini-batch gradient evaluations (forward + backward calls).
    num_examples : int
        Samples processed in all (``num_pairs * (small_batch + big_batch)``).
    seconds : float
        Wall-clock time.
    """

    b_simple: float
    b_simple_stderr: float
    grad_norm_sq: float
    grad_norm_sq_stderr: float
    trace_cov: float
    trace_cov_stderr: float
    critical_batch: float
    small_batch: int
    big_batch: int
    num_pairs: int
    num_samples: int
    finite_population: bool
    small_sq_norms: Tensor = field(repr=False)
    big_sq_norms: Tensor = field(repr=False)
    num_gradients: int = 0
    num_examples: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        """Return a plain-text summary.

        Returns
        -------
        str
            One quantity per line.
        """
        rows = [
            ("B_simple", f"{_fmt(self.b_simple)} ± {_fmt(self.b_simple_stderr)}"),
            ("|G|^2", f"{_fmt(self.grad_norm_sq)} ± {_fmt(self.grad_norm_sq_stderr)}"),
            ("tr Sigma", f"{_fmt(self.trace_cov)} ± {_fmt(self.trace_cov_stderr)}"),
            ("critical batch (~B_simple)", _fmt(self.critical_batch)),
            (
                "batches",
                f"{self.num_pairs} pairs of {self.small_batch} and {self.big_batch} "
                f"from n={self.num_samples}"
                + (" (finite-population corrected)" if self.finite_population else ""),
            ),
            (
                "cost",
                f"{self.num_gradients} gradients, {self.num_examples} examples, "
                f"{self.seconds:.3g} s",
            ),
        ]
        width = max(len(k) for k, _ in rows) + 2
        return "\n".join(f"{k:<{width}}{v}" for k, v in rows)


# -- streaming moments -------------------------------------------------------------------------


class _Moments:
    r"""Weighted mean and centered second moment per coordinate, merged chunk by chunk.

    Merging the chunks' own centered sums (Chan et al.; West 1979 for weights) avoids the
    cancellation of :math:`E[g^2] - E[g]^2` when the gradients are nearly identical. Also
    kept: the number of samples, :math:`W = \sum w_i`, :math:`\sum w_i^2`,
    :math:`\sum w_i^2 \lVert g_i\rVert^2` (for the unbiased estimates) and
    :math:`\sum w_i \ell_i`.
    """

    # Columns are merged in blocks of at most this many (chunk x columns) entries, so the
    # float64 temporaries stay small next to the chunk itself (c x P in the model's dtype):
    # merging a whole chunk at once took 3 float64 copies of it (5 GB for 64 samples of a
    # 3-million-parameter model).
    _BLOCK_ENTRIES = 2**22

    def __init__(self, dim: int, device: torch.device, dtype: torch.dtype) -> None:
        self.count = 0
        self.weight = 0.0
        self.weight_sq = 0.0
        self.weighted_sq_norms = 0.0
        self.mean = torch.zeros(dim, device=device, dtype=dtype)
        self.m2 = torch.zeros(dim, device=device, dtype=dtype)
        self.loss_sum = 0.0

    def add(self, chunk: SampleChunk) -> None:
        G, w = chunk.gradients, chunk.weights.to(self.mean.device)
        c, dim = G.shape
        chunk_weight = float(w.sum())
        total = self.weight + chunk_weight
        ww = w.to(self.mean.dtype)[:, None]
        step = max(1, self._BLOCK_ENTRIES // max(1, c))
        norms = torch.zeros(c, dtype=torch.float64, device=G.device)
        for lo in range(0, dim, step):
            hi = min(lo + step, dim)
            block = G[:, lo:hi].to(self.mean.dtype)
            norms += block.double().square().sum(1)
            chunk_mean = (ww * block).sum(0) / chunk_weight
            chunk_m2 = (ww * (block - chunk_mean).square_()).sum(0)
            mean, m2 = self.mean[lo:hi], self.m2[lo:hi]
            delta = chunk_mean - mean
            mean.add_(delta, alpha=chunk_weight / total)
            m2.add_(chunk_m2).add_(delta.square_(), alpha=self.weight * chunk_weight / total)
        self.count += c
        self.weight = total
        w64 = w.double()
        self.weight_sq += float(w64.square().sum())
        self.weighted_sq_norms += float((w64.square() * norms).sum())
        self.loss_sum += float((chunk.losses.double() * w64).sum())


def _median(values: Tensor) -> float:
    """Return the median of a 1-D float64 tensor (mean of the middle pair), NaN if empty.

    Returns
    -------
    float
        The median; ``inf`` entries are ordered last and kept.
    """
    if values.numel() == 0:
        return math.nan
    v = torch.sort(values).values
    k = v.numel()
    if k % 2:
        return float(v[k // 2])
    return float((v[k // 2 - 1] + v[k // 2]) / 2)


def _gsnr(mean: Tensor, var: Tensor) -> Tensor:
    """Return per-entry GSNR ``mean**2 / var`` (``inf`` for var 0, NaN for 0/0).

    Returns
    -------
    Tensor
        Float64, same shape.
    """
    mean, var = mean.double(), var.double()
    return mean.square() / var  # IEEE: x/0 = inf for x > 0, 0/0 = NaN


def _summarize_gsnr(name: str, r: Tensor) -> ParamGSNR:
    defined = r[~torch.isnan(r)]
    mean = float(defined.mean()) if defined.numel() else math.nan
    return ParamGSNR(
        name=name,
        numel=int(r.numel()),
        median=_median(defined),
        mean=mean,
        num_undefined=int(r.numel() - defined.numel()),
    )


# -- Hessian coherence ---------------------------------------------------------------------------


def _first_samples(problem: Problem, count: int) -> list[Any]:
    """Return the first ``count`` samples of positive weight, each as a one-sample batch.

    Returns
    -------
    list
        One-sample batches in data order.
    """
    out: list[Any] = []
    for batch in problem.batches():
        weights = problem.objective.sample_weights(batch.data)
        for i in range(batch.num_samples):
            if len(out) == count:
                return out
            if weights[i] > 0:
                out.append(select_rows(batch.data, i, batch.num_samples))
    return out


def _hessian_coherence(
    make_op: Callable[[Any], HessianOperator],
    samples: list[Any],
    *,
    method: HessianMethod,
    num_probes: int,
    tol: float,
    generator: torch.Generator,
    progress: bool,
) -> dict[str, Any]:
    """Compute the trace matrix, per-example top eigenvalues and the coherence measures.

    Returns
    -------
    dict
        The ``hessian_*`` fields of :class:`CoherenceResult`, plus ``num_matvecs`` and
        ``num_passes``.
    """
    s = len(samples)
    ops = [make_op(sample) for sample in samples]
    dim, dtype, device = ops[0].shape[0], ops[0].dtype, ops[0].device
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=s, desc="per-example Hessians", unit="example", leave=False)
    try:
        if method == "exact":
            dense = []
            for op in ops:
                H = op.to_dense()
                dense.append((H + H.T) / 2)
                if bar is not None:
                    bar.update(1)
            flat = torch.stack([H.reshape(-1) for H in dense]).double()
            traces = flat @ flat.T
            stderr = torch.zeros_like(traces)
            tops = torch.stack([torch.linalg.eigvalsh(H.double())[-1] for H in dense]).cpu()
        else:
            Z = gaussian(dim, num_probes, generator, dtype=dtype, device=device)
            step = max(1, min(num_probes, _PROBE_BLOCK_ENTRIES // max(1, s * dim)))
            per_probe = []
            for lo in range(0, num_probes, step):
                block = Z[:, lo : lo + step]
                U = torch.stack([op @ block for op in ops])  # (s, P, c)
                per_probe.append(torch.einsum("ipk,jpk->kij", U, U).double())
            samples_ij = torch.cat(per_probe)  # (num_probes, s, s)
            traces = samples_ij.mean(0)
            stderr = samples_ij.std(0) / math.sqrt(num_probes)
            tops_list = []
            for op in ops:
                ev = eigenvalues(op, k=1, tol=tol, seed=generator)
                tops_list.append(float(ev.values[0]))
                if bar is not None:
                    bar.update(1)
            tops = torch.tensor(tops_list, dtype=torch.float64)
    finally:
        if bar is not None:
            bar.close()
    traces = ((traces + traces.T) / 2).cpu()
    S = traces.clamp(min=0).sqrt()
    lam_s = float(torch.linalg.eigvalsh(S)[-1])
    top = float(tops.max())
    sigma = lam_s / top if top > 0 else math.nan
    diag_max = float(S.diagonal().max())
    return {
        "hessian_traces": traces,
        "hessian_traces_stderr": stderr.cpu(),
        "hessian_top_eigenvalues": tops,
        "hessian_coherence": sigma,
        "hessian_coherence_normalized": sigma / s,
        "hessian_alignment": lam_s / (s * diag_max) if diag_max > 0 else math.nan,
        "num_matvecs": sum(op.num_matvecs for op in ops),
        "num_passes": sum(op.num_passes for op in ops),
    }


# -- the public functions ------------------------------------------------------------------------


@moved(
    noise_hessian="hessian=ls.HessianSettings(noise_scale=True)",
    **moved_into("hessian=ls.HessianSettings", "hessian_", "samples", "probes", "method", "tol"),
)
def coherence(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    hessian: HessianSettings | None = None,
    seed: int | torch.Generator | None = 0,
    chunk_size: int = 64,
    progress: bool = False,
    backend: str = "auto",
    **options: Any,
) -> CoherenceResult:
    r"""Measure gradient coherence, noise scales, GSNR and Hessian coherence at the current θ.

    From the per-example gradients :math:`g_1, \dots, g_m` of the first ``max_samples``
    samples (eval mode; population moments, see the module docstring):

    .. math::
        \alpha = \frac{\lVert G\rVert^2}{\frac1m\sum_i \lVert g_i\rVert^2}, \qquad
        m\alpha = \frac{\lVert\sum_i g_i\rVert^2}{\sum_i\lVert g_i\rVert^2}, \qquad
        B_\text{simple} = \frac{\operatorname{tr}\Sigma}{\lVert G\rVert^2}, \qquad
        \alpha = \frac{1}{1 + B_\text{simple}} ,

    the last identity being exact because :math:`\frac1m\sum_i\lVert g_i\rVert^2 =
    \lVert G\rVert^2 + \operatorname{tr}\Sigma`. The pairwise coherence
    :math:`\alpha_\text{unbiased} = (\lVert\sum g_i\rVert^2 - \sum\lVert g_i\rVert^2) /
    ((m-1)\sum\lVert g_i\rVert^2)` (the mean of :math:`g_i^\top g_j` over :math:`i\ne j`,
    over the mean of :math:`\lVert g_i\rVert^2`) satisfies the same identity with the
    unbiased :math:`B_\text{simple}`. GSNR per parameter entry:
    :math:`r_j = \bar g_j^2 / \operatorname{Var}_i(g_{ij})`, summarized per parameter tensor
    (median and mean) and overall.

    With ``hessian=HessianSettings(noise_scale=True)``,
    :math:`B_\text{noise} = \operatorname{tr}(H\Sigma) / (G^\top H G)` with :math:`H` the
    Hessian of the mean loss over the same samples and
    :math:`\operatorname{tr}(H\Sigma) = \frac1m\sum_i (g_i - G)^\top H (g_i - G)`: exact,
    :math:`m + 1` HVPs over the :math:`m` samples.

    With ``HessianSettings(samples=s)``, :math:`s > 0`, the Hessian coherence of Dexter et al.
    on the first
    :math:`s` samples' Hessians :math:`H_i = \nabla^2\ell_i`:

    .. math::
        S_{ij} = \sqrt{\operatorname{tr}(H_i H_j)}
               = \lVert H_i^{1/2} H_j^{1/2}\rVert_F , \qquad
        \sigma = \frac{\lambda_\max(S)}{\max_i \lambda_\max(H_i)} .

    ``method="probes"`` estimates :math:`T_{ij} = \operatorname{tr}(H_iH_j)` as
    :math:`\frac1k\sum_z (H_iz)^\top(H_jz)` over ``probes`` = :math:`k` Gaussian
    probes shared by all examples (:math:`sk` HVPs; standard error
    :math:`\sqrt{2/k}\,\lVert\operatorname{sym}(H_iH_j)\rVert_F`), clips negative estimates
    to 0 before the square root, and finds :math:`\lambda_\max(H_i)` by Lanczos
    (:func:`landscape.eigenvalues`). ``"exact"`` forms each :math:`H_i` densely
    (:math:`P` HVPs per example; small models and tests). For indefinite :math:`H_i` the
    square root :math:`H_i^{1/2}` does not exist and :math:`S_{ij}` is defined by the trace
    form with the clip.

    **Which value is "1".** For positive semi-definite rank-one :math:`H_i` (the case the
    paper's discussion assumes: then :math:`S_{ii} = \lambda_\max(H_i)`),
    :math:`1 \le \sigma \le s`, with :math:`\sigma = s` for identical and :math:`\sigma = 1`
    for mutually orthogonal :math:`H_i`; ``hessian_coherence_normalized`` :math:`=\sigma/s`
    is then 1 for identical Hessians and :math:`1/s` for orthogonal ones. For higher rank,
    :math:`\sigma` can exceed :math:`s` (identical :math:`H_i = H` give
    :math:`\sigma = s\lVert H\rVert_F/\lVert H\rVert_2`); ``hessian_alignment``
    :math:`=\lambda_\max(S)/(s\max_i S_{ii}) \in [1/s, 1]` is 1 exactly for identical
    :math:`H_i` of any rank.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified) with its data
        and loss (see :mod:`landscape.losses`; applied to one-sample batches). Built from a
        model, the problem uses the first 512 samples unless ``max_samples`` is given
        (``None``: all). Memory is :math:`O(cP)` for chunks of :math:`c` samples;
        per-example gradients are never all stored.
    hessian : HessianSettings, optional
        The Hessian-based quantities: :math:`B_\text{noise}` and the Hessian coherence
        (default: neither).
    seed : int or torch.Generator, optional
        Randomness of the probes and Lanczos starting vectors.
    chunk_size : int, optional
        Samples per vectorized per-example-gradient call, and columns per ``H`` product for
        :math:`B_\text{noise}`.
    progress : bool, optional
        Show tqdm progress bars.
    backend, **options
        The Hessian backend and the problem's options, as for :func:`landscape.hessian`.

    Returns
    -------
    CoherenceResult
        All quantities with ``num_passes``, ``num_matvecs`` and ``seconds``.

    Raises
    ------
    ValueError
        For more Hessian samples than samples, an invalid ``chunk_size`` or
        ``max_samples``.
    TypeError
        If ``model`` is not an ``nn.Module``.

    References
    ----------
    S. Chatterjee, P. Zielinski, "On the generalization mystery in deep learning",
    arXiv:2203.10036, 2022; P. Zielinski, S. Chatterjee, "Making coherence out of nothing at
    all: measuring the evolution of gradient alignment", arXiv:2008.01217, 2020.
    S. McCandlish, J. Kaplan, D. Amodei, OpenAI Dota Team, "An empirical model of
    large-batch training", arXiv:1812.06162, 2018.
    J. Liu, G. Jiang, Y. Bai, T. Chen, H. Wang, "Understanding why neural networks
    generalize well through GSNR of parameters", ICLR 2020, arXiv:2001.07384.
    G. Dexter, B. Ocejo, S. Keerthi, A. Gupta, A. Acharya, R. Khanna, "A precise
    characterization of SGD stability using loss surface geometry", ICLR 2024,
    arXiv:2401.12332.

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    >>> X, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    >>> settings = HessianSettings(samples=4, method="exact")
    >>> result = coherence(model, (X, y), hessian=settings)
    >>> result.num_samples, result.hessian_samples
    (40, 4)
    >>> abs(result.alpha * (1 + result.b_simple) - 1) < 1e-12
    True
    >>> 1 <= result.m_coherence <= 40, tuple(result.hessian_traces.shape)
    (True, (4, 4))
    """
    start = time.perf_counter()
    check_chunk_size(chunk_size)
    settings = hessian or HessianSettings()
    if not isinstance(problem, Problem):
        options.setdefault("max_samples", 512)
    problem = as_problem(problem, data, loss_fn, where="coherence", **options)
    problem = problem.with_data(cache=True, shard=False)
    moments = _gradient_moments(problem, chunk_size, progress)
    fields, notes = _gradient_statistics(problem, moments)
    num_passes, num_matvecs = 1, 0

    def make_hessian(data_: Any) -> HessianOperator:
        return HessianOperator(problem.with_data(data_, cache=True, shard=False), backend=backend)

    if settings.noise_scale:
        extra, passes, matvecs = _noise_hessian(problem, moments, make_hessian, chunk_size, notes)
        fields.update(extra)
        num_passes, num_matvecs = num_passes + passes, num_matvecs + matvecs
    if settings.samples > 0:
        extra, passes, matvecs = _coherence_of_hessians(
            problem, moments.count, settings, make_hessian, as_generator(seed), progress, notes
        )
        fields.update(extra)
        num_passes, num_matvecs = num_passes + passes, num_matvecs + matvecs
    return CoherenceResult(
        **fields,
        num_passes=num_passes,
        num_matvecs=num_matvecs,
        seconds=time.perf_counter() - start,
        notes=tuple(notes),
    )


def _gradient_moments(problem: Problem, chunk_size: int, progress: bool) -> _Moments:
    """Accumulate the moments of the per-example gradients in one pass.

    Returns
    -------
    _Moments
        Weighted mean, second moment and norms of the per-example gradients.
    """
    space = problem.space
    acc_dtype = torch.float64 if space.device.type != "mps" else space.dtype
    moments = _Moments(space.dim, space.device, acc_dtype)
    consume: Callable[[SampleChunk], None] = moments.add
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="per-example gradients", unit="sample", leave=False)

        def consume(chunk: SampleChunk) -> None:
            moments.add(chunk)
            bar.update(len(chunk.positions))

    try:
        per_example_pass(problem, chunk_size, consume)
    finally:
        if bar is not None:
            bar.close()
    return moments


def _gradient_statistics(problem: Problem, moments: _Moments) -> tuple[dict[str, Any], list[str]]:
    """Return coherence, noise scales and GSNR from the moments, and the notes they need.

    Returns
    -------
    tuple
        The :class:`CoherenceResult` fields of the gradient statistics, and the notes.
    """
    m, W = moments.count, moments.weight
    mean, m2 = moments.mean, moments.m2
    G2 = float(mean.double().square().sum())
    trS = float(m2.double().sum()) / W
    Eg2 = G2 + trS
    pairs = W * W - moments.weight_sq  # sum of w_i w_j over i != j
    if m >= 2 and pairs > 0:
        G2_unb = (W * W * G2 - moments.weighted_sq_norms) / pairs
        trS_unb = Eg2 - G2_unb
        alpha_unb, b_unb = _ratio(G2_unb, Eg2), _ratio(trS_unb, G2_unb)
    else:
        alpha_unb = G2_unb = trS_unb = b_unb = math.nan
    notes: list[str] = []
    if G2_unb <= 0:
        notes.append(
            "the unbiased |G|^2 estimate is <= 0: the mean gradient is not resolved above the "
            "per-example noise (typical at a minimum), so B_simple (unbiased) is not meaningful"
        )
    if m < 2:
        notes.append("one sample: covariance, GSNR and unbiased estimates are undefined")
    if not problem.objective.weighs_samples:
        notes.append(
            "samples weigh their units (scored tokens): moments are weighted means, the "
            "unbiased estimates weighted U-statistics"
        )
    r = _gsnr(mean, m2 / W)
    overall = _summarize_gsnr("(all)", r)
    fields = {
        "num_samples": m,
        "num_params": problem.space.dim,
        "mean_loss": moments.loss_sum / W,
        "grad_norm_sq": G2,
        "trace_cov": trS,
        "mean_grad_norm_sq": Eg2,
        "alpha": _ratio(G2, Eg2),
        "m_coherence": _ratio(W * W * G2, moments.weighted_sq_norms),
        "alpha_unbiased": alpha_unb,
        "b_simple": _ratio(trS, G2),
        "grad_norm_sq_unbiased": G2_unb,
        "trace_cov_unbiased": trS_unb,
        "b_simple_unbiased": b_unb,
        "gsnr_median": overall.median,
        "gsnr_mean": overall.mean,
        "gsnr": tuple(_summarize_gsnr(name, r[sl]) for name, sl in problem.space.slices().items()),
    }
    return fields, notes


def _noise_hessian(
    problem: Problem,
    moments: _Moments,
    make_hessian: Callable[[Any], HessianOperator],
    chunk_size: int,
    notes: list[str],
) -> tuple[dict[str, Any], int, int]:
    r"""Return :math:`B_\text{noise} = \operatorname{tr}(H\Sigma) / G^\top H G` (m + 1 HVPs).

    Returns
    -------
    tuple
        The fields ``b_noise``, ``trace_hessian_cov`` and ``gHg``; passes and products.
    """
    space = problem.space
    H = make_hessian(BatchList([batch.data for batch in problem.batches()]))
    Gbar = moments.mean.to(space.dtype)
    gHg = float(Gbar.double() @ (H @ Gbar).double())
    total = torch.zeros((), dtype=torch.float64, device=space.device)

    def quadratic(chunk: SampleChunk) -> None:
        nonlocal total
        D = (chunk.gradients - Gbar).T.contiguous()  # (P, c)
        w = chunk.weights.to(space.device)
        total = total + ((D.double() * (H @ D).double()).sum(0) * w).sum()

    per_example_pass(problem, chunk_size, quadratic)
    trHS = float(total) / moments.weight
    if gHg <= 0:
        notes.append("G^T H G <= 0 (negative curvature along G): B_noise is not meaningful")
    fields = {"b_noise": _ratio(trHS, gHg), "trace_hessian_cov": trHS, "gHg": gHg}
    return fields, 1 + H.num_passes, H.num_matvecs


def _coherence_of_hessians(
    problem: Problem,
    used: int,
    settings: HessianSettings,
    make_hessian: Callable[[Any], HessianOperator],
    generator: torch.Generator,
    progress: bool,
    notes: list[str],
) -> tuple[dict[str, Any], int, int]:
    """Return the Hessian coherence of Dexter et al. over the first ``settings.samples``.

    Returns
    -------
    tuple
        The ``hessian_*`` fields; passes and products.

    Raises
    ------
    ValueError
        For dense per-example Hessians of a large model, or more samples than were used.
    """
    space, count = problem.space, settings.samples
    if settings.method == "exact" and space.dim > _EXACT_MAX_DIM:
        raise ValueError(
            f"hessian_method='exact' forms dense {space.dim}x{space.dim} per-example "
            f"Hessians; it is limited to P <= {_EXACT_MAX_DIM}. Use hessian_method='probes'."
        )
    if count > used:
        raise ValueError(
            f"hessian_samples={count} exceeds the {used} samples used; lower it or "
            "raise max_samples."
        )
    hess = _hessian_coherence(
        lambda sample: make_hessian(BatchList([sample])),
        _first_samples(problem, count),
        method=settings.method,
        num_probes=settings.probes,
        tol=settings.tol,
        generator=generator,
        progress=progress,
    )
    passes, matvecs = hess.pop("num_passes"), hess.pop("num_matvecs")
    hess.update(
        hessian_samples=count,
        hessian_method=settings.method,
        hessian_probes=settings.probes if settings.method == "probes" else 0,
    )
    if not float(hess["hessian_top_eigenvalues"].max()) > 0:
        notes.append("no per-example Hessian has a positive top eigenvalue: sigma is NaN")
    return hess, passes, matvecs


def _noise_factor(batch: int, n: int, finite_population: bool) -> float:
    r"""Return the batch factor :math:`c(B)` of the noise term.

    :math:`E\lVert G_B\rVert^2 = \lVert G\rVert^2 + c(B)\operatorname{tr}\Sigma`.

    Returns
    -------
    float
        :math:`(n-B)/(B(n-1))` without replacement from :math:`n` (population
        :math:`\Sigma`), or :math:`1/B` for i.i.d. sampling.
    """
    if finite_population:
        return (n - batch) / (batch * (n - 1))
    return 1.0 / batch


def _two_batch_estimates(
    small_sq: Tensor, big_sq: Tensor, c_small: float, c_big: float
) -> tuple[Tensor, Tensor]:
    r"""Solve the two moment equations for each pair.

    Returns
    -------
    tuple of Tensor
        Per-pair estimates of :math:`\lVert G\rVert^2` and :math:`\operatorname{tr}\Sigma`.
    """
    den = c_small - c_big
    trace = (small_sq - big_sq) / den
    norm = (c_small * big_sq - c_big * small_sq) / den
    return norm, trace


def noise_scale(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    *,
    small_batch: int = 8,
    big_batch: int = 64,
    num_pairs: int = 64,
    finite_population: bool = True,
    seed: int | torch.Generator | None = 0,
    **options: Any,
) -> NoiseScale:
    r"""Estimate the gradient noise scale from mini-batch gradients of two batch sizes.

    McCandlish et al.'s unbiased estimator: with :math:`E\lVert G_B\rVert^2 = \lVert
    G\rVert^2 + \operatorname{tr}\Sigma / B` for i.i.d. batches,

    .. math::
        \widehat{\lVert G\rVert^2} = \frac{B_\text{big}\lVert G_\text{big}\rVert^2
            - B_\text{small}\lVert G_\text{small}\rVert^2}{B_\text{big} - B_\text{small}},
        \qquad
        \widehat{\operatorname{tr}\Sigma} = \frac{\lVert G_\text{small}\rVert^2
            - \lVert G_\text{big}\rVert^2}{1/B_\text{small} - 1/B_\text{big}},
        \qquad
        B_\text{simple} = \frac{\overline{\operatorname{tr}\Sigma}}{\overline{\lVert
            G\rVert^2}} ,

    each averaged over ``num_pairs`` pairs **before** the ratio (the mean of per-pair
    ratios is biased). Each pair draws a big batch uniformly without replacement from the
    ``n`` cached samples (``torch.randperm`` from ``seed``); the small batch is its first
    ``small_batch`` samples (as a per-device batch is part of the all-reduced one), which is
    itself a uniform draw. Standard errors come from the spread over pairs (delta method
    for the ratio).

    **Finite population.** Drawing :math:`B` of :math:`n` samples without replacement gives
    :math:`E\lVert G_B\rVert^2 = \lVert G\rVert^2 + \operatorname{tr}\Sigma\,
    \frac{n-B}{B(n-1)}` exactly, with :math:`G` and :math:`\Sigma` the mean and population
    covariance of the :math:`n` per-example gradients. ``finite_population=True`` (default)
    solves the two moment equations with these factors, so the estimates are unbiased for
    the :math:`n` samples' own :math:`\lVert G\rVert^2` and :math:`\operatorname{tr}\Sigma`
    (the quantities :func:`coherence` reports). ``False`` uses :math:`1/B` (the formulas
    above verbatim); on a finite set they then estimate :math:`\lVert G\rVert^2 -
    \operatorname{tr}\Sigma/(n-1)` and :math:`\frac{n}{n-1}\operatorname{tr}\Sigma`, which
    are the unbiased estimates of the data distribution's values when the :math:`n` samples
    are i.i.d. draws from it (``coherence``'s ``*_unbiased`` fields). The two agree as
    :math:`n \to \infty`.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model (never modified, evaluated in
        eval mode) with its data (cached on the device) and loss, as for
        :func:`landscape.hessian`.
    small_batch, big_batch : int, optional
        :math:`1 \le B_\text{small} < B_\text{big} \le n`.
    num_pairs : int, optional
        Pairs averaged (at least 2).
    finite_population : bool, optional
        Apply the finite-population correction (see above).
    seed : int or torch.Generator, optional
        Randomness of the batches.
    **options
        Options of :class:`~landscape.problem.Problem` (``params``, ``max_samples``, ...).

    Returns
    -------
    NoiseScale
        Estimates with standard errors and cost.

    Raises
    ------
    ValueError
        For invalid batch sizes or ``num_pairs``.
    TypeError
        If ``model`` is not an ``nn.Module``.

    Notes
    -----
    A non-finite mini-batch loss raises ``FloatingPointError`` naming the pair.

    References
    ----------
    S. McCandlish, J. Kaplan, D. Amodei, OpenAI Dota Team, "An empirical model of
    large-batch training", arXiv:1812.06162, 2018 (Appendix A).

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Linear(5, 1).double()
    >>> X = torch.randn(200, 5, dtype=torch.float64)
    >>> y = X.sum(1, keepdim=True) + torch.randn(200, 1, dtype=torch.float64)
    >>> ns = noise_scale(model, (X, y), small_batch=4, big_batch=64, num_pairs=32)
    >>> ns.num_gradients, ns.b_simple == ns.trace_cov / ns.grad_norm_sq
    (64, True)
    """
    start = time.perf_counter()
    for name, value in (("small_batch", small_batch), ("big_batch", big_batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not small_batch < big_batch:
        raise ValueError(
            f"small_batch ({small_batch}) must be smaller than big_batch ({big_batch})."
        )
    if not isinstance(num_pairs, int) or num_pairs < 2:
        raise ValueError(
            f"num_pairs must be an integer >= 2 (for standard errors); got {num_pairs!r}."
        )
    problem = as_problem(problem, data, loss_fn, where="noise_scale", **options)
    problem = problem.with_data(cache=True, shard=False)
    items = list(problem.batches())
    n = sum(item.num_samples for item in items)
    if big_batch > n:
        raise ValueError(f"big_batch={big_batch} exceeds the {n} samples of the data.")
    offsets = torch.tensor([0] + [item.num_samples for item in items]).cumsum(0).tolist()
    weights = torch.cat([problem.objective.sample_weights(item.data).cpu() for item in items])
    generator = as_generator(seed)
    num_gradients = 0

    def subset_gradient(indices: Tensor, pair: int) -> Tensor:
        # The gradient of the subset's mean loss: its sub-batch in every batch, weighted by
        # its units (the one data loop of the problem on those sub-batches).
        nonlocal num_gradients
        parts = []
        for item, lo in zip(items, offsets):
            rows = indices[(indices >= lo) & (indices < lo + item.num_samples)] - lo
            if rows.numel() and float(weights[rows + lo].sum()) > 0:
                parts.append(select_rows(item.data, rows, item.num_samples))
        num_gradients += len(parts)
        try:
            _, g = problem.with_data(BatchList(parts), shard=False).value_and_grad()
        except FloatingPointError as error:
            raise FloatingPointError(
                f"non-finite loss on the mini-batches of pair {pair} (0-based): {error}"
            ) from None
        return g.double()

    small_sq = torch.empty(num_pairs, dtype=torch.float64)
    big_sq = torch.empty(num_pairs, dtype=torch.float64)
    for k in range(num_pairs):
        perm = torch.randperm(n, generator=generator)
        big = perm[:big_batch].sort().values
        small = perm[:small_batch].sort().values
        small_sq[k] = float(subset_gradient(small, k).square().sum())
        big_sq[k] = float(subset_gradient(big, k).square().sum())
    c_small = _noise_factor(small_batch, n, finite_population)
    c_big = _noise_factor(big_batch, n, finite_population)
    norms, traces = _two_batch_estimates(small_sq, big_sq, c_small, c_big)
    G2, trS = float(norms.mean()), float(traces.mean())
    root = math.sqrt(num_pairs)
    b = _ratio(trS, G2)
    if math.isfinite(b) and G2 != 0:
        b_err = float((traces - b * norms).std()) / root / abs(G2)
    else:
        b_err = math.nan
    return NoiseScale(
        b_simple=b,
        b_simple_stderr=b_err,
        grad_norm_sq=G2,
        grad_norm_sq_stderr=float(norms.std()) / root,
        trace_cov=trS,
        trace_cov_stderr=float(traces.std()) / root,
        critical_batch=b,
        small_batch=small_batch,
        big_batch=big_batch,
        num_pairs=num_pairs,
        num_samples=n,
        finite_population=finite_population,
        small_sq_norms=small_sq,
        big_sq_norms=big_sq,
        num_gradients=num_gradients,
        num_examples=num_pairs * (small_batch + big_batch),
        seconds=time.perf_counter() - start,
    )
