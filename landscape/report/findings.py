r"""Findings: what the curvature means for the user's optimizer, learning rate and batch size.

Each rule is a small pure function of result records that returns a :class:`Finding` — a
plain statement, the numbers behind it, the rule (formula and paper) and how sure it is —
or ``None`` when it has nothing to say. :func:`report_findings` and
:func:`comparison_findings` run every rule on a document and rank what they say.

Confidence
----------
``"resolved"``
    The evidence decides the statement: a converged eigenvalue, an exact threshold that
    applies, training bursts, an estimate far from the boundary of its rule.
``"within noise"``
    The statement is the likelier reading, but the numbers are within their own spread of
    the rule's boundary (or the estimator's bias and variance are as large as the effect).
``"assumption not met"``
    The rule's premise does not hold here (an exact threshold derived for plain SGD read
    for momentum, the paper's measure taken at initialization read at a trained model).

Rules
-----
========================  =================================================================
``learning_rate``         current lr against lr_max at the loader's batch size for the
                          optimizer in use, and which estimate to trust (Granziol et al.
                          2022; Mulayoff & Michaeli 2024; bursts); for every optimizer,
                          naming what the number rests on (its state, Adam's steady state,
                          or the critical sharpness along its update: Kalra et al. 2026),
                          or saying that there is no number and why
``edge_of_stability``     :math:`\eta\lambda_{\max}/c` against 1: the Hessian's for the SGD
                          family, the preconditioned sharpness with the optimizer's own
                          coefficient for adaptive ones, :math:`\eta\lambda_c/2` for the
                          others (Cohen et al. 2021, 2022)
``batch_size``            the loader's batch against the gradient noise scale (McCandlish et
                          al. 2018; Goyal et al. 2017)
``curvature_sign``        negative curvature resolved or within the resolution (Dauphin et
                          al. 2014; Sagun et al. 2017; Ghorbani et al. 2019)
``spectrum``              outliers against the number of classes (Sagun et al. 2017; Papyan
                          2019, 2020)
``heterogeneity``         block heterogeneity JS⁰ (Zhang et al. 2024)
``resolution``            estimates that are not resolved: negative unbiased estimates,
                          unconverged eigenpairs, spread across data subsets, noisy traces
``sharper_minimum``       which minimum is sharper, and whether rescaling-invariant measures
                          agree (Dinh et al. 2017; Kwon et al. 2021)
``connectivity``          linear mode connectivity from the loss barrier (Frankle et al. 2020)
========================  =================================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.linalg.results import SpectralDensity
from landscape.metrics.block_spectra import BlockSpectra
from landscape.metrics.coherence import CoherenceResult
from landscape.metrics.learning_rate import LearningRateResult
from landscape.metrics.subsets import SubsetSpread
from landscape.records import Record
from landscape.report.contents import ExtremeEigenvalues, Interpolation, LearningRates
from landscape.report.text import count, g, ratio_text

if TYPE_CHECKING:  # pragma: no cover
    from landscape.report.document import Comparison, Report

__all__ = [
    "CONFIDENCE",
    "Finding",
    "batch_size_vs_noise_scale",
    "block_heterogeneity",
    "comparison_findings",
    "curvature_sign",
    "edge_of_stability",
    "learning_rate_headroom",
    "mode_connectivity",
    "rank",
    "report_findings",
    "sharper_minimum",
    "spectrum_outliers",
    "unresolved_estimates",
]

RESOLVED, WITHIN_NOISE, ASSUMPTION = "resolved", "within noise", "assumption not met"
CONFIDENCE = (RESOLVED, WITHIN_NOISE, ASSUMPTION)
"""The confidence levels, surest first."""

ACT, INFORM, CAVEAT = 1, 2, 3  # priorities: what to change, what it means, what to doubt
TOPICS = (
    "learning_rate",
    "edge_of_stability",
    "sharper_minimum",
    "connectivity",
    "batch_size",
    "curvature_sign",
    "spectrum",
    "heterogeneity",
    "resolution",
)
"""The rules' topics, in the order findings of equal priority are listed."""


@dataclass(frozen=True)
class Finding(Record):
    """One plain statement about the model's landscape, with its evidence.

    Attributes
    ----------
    topic : str
        The rule that made it (see the module documentation).
    statement : str
        What it means, in a sentence or two.
    evidence : str
        The numbers behind it.
    rule : str
        The formula or criterion.
    reference : str
        The paper(s).
    confidence : {"resolved", "within noise", "assumption not met"}
        How sure the statement is.
    priority : int
        1: something to act on; 2: what the numbers mean; 3: a caveat.
    subject : str or None
        The model it is about, in a comparison.
    """

    topic: str
    statement: str
    evidence: str
    rule: str
    reference: str
    confidence: str
    priority: int = INFORM
    subject: str | None = None

    def text(self) -> str:
        """Return the finding as plain text: statement, then evidence, rule and confidence.

        Returns
        -------
        str
            Three lines.
        """
        who = f"[{self.subject}] " if self.subject else ""
        return (
            f"{who}{self.statement}\n"
            f"    evidence: {self.evidence}\n"
            f"    rule: {self.rule} ({self.reference}); confidence: {self.confidence}"
        )


def rank(findings: Iterable[Finding | None]) -> list[Finding]:
    """Sort findings by priority, then topic (:data:`TOPICS`), then confidence.

    In a comparison this puts the models' findings on one topic side by side.

    Returns
    -------
    list of Finding
        Most important first; ``None`` dropped; the order among equals is kept.
    """
    kept = [f for f in findings if f is not None]

    def key(f: Finding) -> tuple[int, int, int]:
        topic = TOPICS.index(f.topic) if f.topic in TOPICS else len(TOPICS)
        return f.priority, topic, CONFIDENCE.index(f.confidence)

    return sorted(kept, key=key)


# -- learning rate --------------------------------------------------------------------------
CRITICAL = "critical sharpness"
_ADAPTIVE = (
    " Its preconditioner is held at its current state here: left free, an adaptive optimizer "
    "raises its second moments when it oscillates and settles at this edge of stability "
    "rather than diverging (Cohen et al. 2022)."
)


def _index_of(batch_sizes: np.ndarray, batch: int | None) -> int | None:
    # The analyzed batch size closest (in log) to the loader's.
    sizes = np.asarray(batch_sizes, dtype=float).reshape(-1)
    if sizes.size == 0 or batch is None:
        return None
    return int(np.argmin(np.abs(np.log(sizes) - math.log(max(batch, 1)))))


def _at(values: Any, i: int | None) -> float | None:
    if values is None or i is None:
        return None
    array = np.asarray(values, dtype=float).reshape(-1)
    if i >= array.size or not math.isfinite(array[i]):
        return None
    return float(array[i])


def _current_lr(result: LearningRateResult | None) -> float | None:
    lr = None if result is None else result.current_lr
    return None if lr is None or not lr > 0 else float(lr)


def _exact_sgd(rates: LearningRates, own: LearningRateResult, batch: int) -> tuple[Any, Any]:
    # The exact mean-square threshold of plain SGD at this batch size, from the user's result
    # or from the SGD result beside it, and whether its premise (a minimum) holds.
    for result in (own, rates.results.get("sgd")):
        if result is None or result.lr_mean_square is None:
            continue
        sizes = np.asarray(result.batch_sizes).reshape(-1).tolist()
        if batch in sizes:
            return _at(result.lr_mean_square, sizes.index(batch)), result.at_minimum
    return None, None


def _limit(
    own: LearningRateResult, rates: LearningRates, i: int, lr: float
) -> tuple[float, str, str, str, list[str]] | None:
    """Choose the estimate of the largest stable learning rate to trust, and say why.

    Returns
    -------
    tuple or None
        ``(limit, source, confidence, why, evidence)``; ``None`` without any estimate.
    """
    kind = own.optimizer.kind
    batch = int(np.asarray(own.batch_sizes).reshape(-1)[i])
    heuristic, low, high = (_at(v, i) for v in (own.lr_max, own.lr_max_low, own.lr_max_high))
    # the exact threshold is SGD's (and, scaled, heavy ball's); nothing of it applies to Adam
    sgd_family = kind in ("sgd", "momentum", "nesterov")
    exact, at_minimum = _exact_sgd(rates, own, batch) if sgd_family else (None, None)
    bursts = {v.batch_size: v for v in own.verification}.get(batch)
    evidence = []
    if heuristic is not None:
        band = f" (worst to best batch {g(low)} … {g(high)})" if low and high else ""
        evidence.append(f"heuristic lr_max {g(heuristic)}{band}")
    if exact is not None:
        premise = {True: "", False: ", not at an interpolating minimum", None: ""}[at_minimum]
        evidence.append(f"exact mean-square threshold of plain SGD {g(exact)}{premise}")
    if bursts is not None and (bursts.lr_stable or bursts.lr_diverged):
        evidence.append(
            f"bursts of {bursts.steps} steps: stable up to {g(bursts.lr_stable)}, diverged "
            f"from {g(bursts.lr_diverged)}"
        )
        limit = bursts.lr_diverged or bursts.lr_stable
        return limit, "training bursts", RESOLVED, "", evidence
    if kind == "sgd" and exact is not None:
        why = ""
        if heuristic is not None and not 1 / 1.5 < heuristic / exact < 1.5:
            why = (
                " The heuristic divides c by the mean top eigenvalue of mini-batch Hessians; "
                "the exact mean-square threshold also counts how mini-batch noise builds up "
                "from step to step, so at a minimum it is the one to trust for plain SGD "
                f"(here they differ {ratio_text(heuristic / exact)})."
            )
        if at_minimum is False:
            why += (
                " The model is not at an interpolating minimum (its Gauss-Newton and Hessian "
                "sharpness differ by over 10 %), where the exact threshold is derived: it is "
                "indicative only."
            )
        confidence = ASSUMPTION if at_minimum is False else RESOLVED
        return exact, "the exact mean-square threshold", confidence, why, evidence
    if heuristic is None:
        return None
    inside = low is not None and high is not None and low <= lr <= high
    confidence, why = (WITHIN_NOISE if inside else RESOLVED), ""
    if own.measure == CRITICAL:
        return (
            heuristic,
            "the critical learning rate along its own update",
            confidence,
            (
                " That is where its next step starts to raise the loss, not a divergence "
                "threshold: normalized updates (Muon, sign methods) hover near it and oscillate "
                "at an amplitude set by the learning rate; max_learning_rate(..., verify=True) "
                "finds where training bursts diverge."
            ),
            evidence,
        )
    if own.basis == "steady state":
        why = (
            " It rests on Adam's steady state at this point, not on an optimizer state (none "
            "was given): a real run's state remembers larger gradients from earlier "
            "training, and its limit is typically several times higher — keep the optimizer "
            "state with the model and pass it."
        )
        return heuristic, "the frozen threshold of Adam's steady state", confidence, why, evidence
    if own.basis == "optimizer state":
        source = "the frozen threshold of its own state"
        return heuristic, source, confidence, _ADAPTIVE if lr >= heuristic else "", evidence
    if exact is not None and kind in ("momentum", "nesterov"):
        # The heavy-ball threshold is (1 + β) times SGD's on a quadratic (Granziol et al.).
        factor = own.optimizer.coefficient / 2.0
        expected = exact * factor
        if 1 / 1.5 < heuristic / expected < 1.5:
            why = (
                f" It agrees with the exact plain-SGD threshold scaled by {kind}'s factor "
                f"c/2 = {factor:.3g} ({g(expected)})."
            )
        else:
            confidence = ASSUMPTION
            why = (
                f" The exact threshold exists for plain SGD only; scaled by {kind}'s factor "
                f"c/2 = {factor:.3g} it gives {g(expected)}, {ratio_text(expected / heuristic)} "
                "the heuristic: neither is exact for this optimizer; "
                "max_learning_rate(..., verify=True) settles it with training bursts."
            )
    return heuristic, "the heuristic", confidence, why, evidence


def learning_rate_headroom(rates: LearningRates | None) -> Finding | None:
    r"""Compare the learning rate in use with the largest stable one at the loader's batch size.

    The estimate trusted, in order: training bursts at that batch size (what actually
    diverged); for plain SGD the exact mean-square threshold (Mulayoff & Michaeli 2023),
    which accounts for the noise of mini-batch steps at a minimum; otherwise the heuristic
    :math:`\eta_{\max} = c/\bar\lambda_1(B)` (Granziol et al. 2022), with
    :math:`\bar\lambda_1(B)` the mean top eigenvalue of batch Hessians (for Adam of the
    preconditioned ones) and :math:`c` the optimizer's coefficient — checked for momentum
    against the exact plain-SGD threshold times :math:`c/2 = 1+\beta`.

    Parameters
    ----------
    rates : LearningRates or None
        The learning-rate results; the user's optimizer must be among them with its lr.

    Returns
    -------
    Finding or None
        ``None`` without an optimizer in use, its learning rate, or the loader's batch size.
    """
    own = None if rates is None else rates.own
    lr = _current_lr(own)
    if rates is None or own is None or lr is None:
        return None
    i = _index_of(own.batch_sizes, rates.loader_batch_size)
    if i is None:
        return None
    batch = int(np.asarray(own.batch_sizes).reshape(-1)[i])
    chosen = _limit(own, rates, i, lr)
    if chosen is None:
        return _no_number(own, lr, batch, "learning_rate")
    limit, source, confidence, why, evidence = chosen
    ratio = lr / limit
    head = f"The learning rate {g(lr)}"
    where = f"({g(limit)}, {source}) at batch size {batch}"
    if ratio >= 1:
        statement = (
            f"{head} is above the largest stable one {where}: expect oscillation or "
            "divergence, or training that only goes on at the edge of stability."
        )
        priority = ACT
    elif ratio >= 0.5:
        statement = (
            f"{head} is close to the largest stable one {where}: {ratio_text(ratio)} of it; "
            "raising it risks instability."
        )
        priority = ACT
    else:
        statement = (
            f"{head} is about {ratio_text(ratio)} of the largest stable one {where}: there "
            "is room to raise it if training is slow."
        )
        priority = INFORM
    if own.measure == CRITICAL:
        statement, priority = _critical_headroom(own, lr, limit, batch), INFORM
    head_evidence = f"lr {g(lr)} ({own.optimizer.key}) at batch size {batch}"
    return Finding(
        topic="learning_rate",
        statement=statement + why,
        evidence="; ".join([head_evidence, *evidence, f"rests on {own.rests_on}"]),
        rule=_rule(own),
        reference=_reference(own),
        confidence=confidence,
        priority=priority,
    )


def _display(own: LearningRateResult) -> str:
    """Return the optimizer's name for a sentence: its class name(s), else its kind.

    Returns
    -------
    str
        E.g. ``"AdamW"``, ``"Muon + AdamW"``, ``"adam"``.
    """
    return own.optimizer.name or own.optimizer.key


def _critical_headroom(own: LearningRateResult, lr: float, limit: float, batch: int) -> str:
    """Return the headroom statement of the critical sharpness (a one-step measure).

    Returns
    -------
    str
        What the learning rate is against the critical one.
    """
    ratio = lr / limit
    head = (
        f"The learning rate {g(lr)} is {ratio_text(ratio)}{' of' if ratio < 1 else ''} the "
        "critical learning rate along "
        f"{_display(own)}'s own update ({g(limit)}) at batch size {batch}"
    )
    if ratio >= 1:
        return f"{head}: the next step at this learning rate raises the loss."
    return f"{head}: a larger step would still lower the loss on the next step."


def _rule(own: LearningRateResult) -> str:
    if own.measure == CRITICAL:
        return (
            "η_c = smallest step along the optimizer's own update that raises the batch loss; "
            "lr_max = 2/λ̄_c(B) (a one-step measure, not a divergence threshold)"
        )
    if own.basis in ("optimizer state", "steady state"):
        return (
            "stable iff s·λ̄₁(P⁻¹(H_B + W)) < c for the optimizer's frozen linear step "
            "(its own coefficient c and step size s); training bursts from a perturbation"
        )
    return (
        "stable iff lr < c / λ̄₁(B) (heuristic); exact mean-square stability of linearized "
        "SGD at a minimum; training bursts from a small perturbation"
    )


def _reference(own: LearningRateResult) -> str:
    if own.measure == CRITICAL:
        return "Kalra et al. 2026; Granziol et al. 2022"
    if own.basis in ("optimizer state", "steady state"):
        return "Cohen et al. 2022; Granziol et al. 2022"
    return "Granziol et al. 2022; Mulayoff & Michaeli 2023; Wu, Ma & E 2018"


def _no_number(own: LearningRateResult, lr: float, batch: int, topic: str) -> Finding | None:
    """Say that the measure gives no number at a batch size, and why (else ``None``).

    Returns
    -------
    Finding or None
        A caveat naming what the result rests on, when its ``lr_max`` there is ``nan``.
    """
    sizes = np.asarray(own.batch_sizes).reshape(-1).tolist()
    if batch not in sizes or not math.isnan(float(np.asarray(own.lr_max)[sizes.index(batch)])):
        return None
    where = "the full batch" if batch == own.num_samples else f"batch size {batch}"
    if own.basis == "steady state":
        why = (
            "without an optimizer state, Adam's steady-state preconditioner at this point rests "
            "on the vanishing mean gradient (or ε) there, and Adam adapts its preconditioner to "
            "any step it takes: a frozen threshold would call any learning rate unstable. Keep "
            "the optimizer state with the model and pass it for a threshold from its state."
        )
    else:
        why = (
            "the loss rose at any step along the optimizer's update (a normalized update near "
            "a minimum): the critical sharpness says nothing about a threshold there."
        )
    return Finding(
        topic=topic,
        statement=f"No learning-rate limit for {_display(own)} at {where}: {why}",
        evidence=f"lr {g(lr)}; rests on {own.rests_on}; lr_max — at {where}",
        rule=_rule(own),
        reference=_reference(own),
        confidence=ASSUMPTION,
        priority=CAVEAT,
    )


# -- edge of stability ------------------------------------------------------------------------
def edge_of_stability(
    eigenvalues: ExtremeEigenvalues | None, rates: LearningRates | None
) -> Finding | None:
    r"""Compare the sharpness with the stability threshold of the optimizer in use.

    GD and momentum: :math:`\eta\lambda_{\max}(H)/c` with :math:`c = 2` (GD), :math:`2+2\beta`
    (heavy ball), :math:`(2+2\beta)/(1+2\beta)` (Nesterov) — Cohen et al. (2021) found
    full-batch training rises to 1 and stays there. Adam: the preconditioned sharpness
    :math:`\lambda_{\max}(P^{-1}H)` (here the mean over batches of the largest batch size
    analyzed) against :math:`c = (2+2\beta_1)/(1-\beta_1)` (Cohen et al. 2022).

    Parameters
    ----------
    eigenvalues : ExtremeEigenvalues or None
        The Hessian's top eigenvalues (for SGD and momentum).
    rates : LearningRates or None
        The learning-rate results with the user's optimizer.

    Returns
    -------
    Finding or None
        ``None`` without an optimizer in use and its learning rate.
    """
    own = None if rates is None else rates.own
    lr = _current_lr(own)
    if own is None or lr is None:
        return None
    kind, c = own.optimizer.key, own.coefficient
    if own.measure == CRITICAL or own.basis in ("optimizer state", "steady state"):
        return _adaptive_edge(own, lr)
    sharpness = None if eigenvalues is None else eigenvalues.lambda_max
    top = None if eigenvalues is None else eigenvalues.top
    converged = top is not None and bool(top.converged[:1].all())
    if sharpness is None or not sharpness > 0 or not c > 0:
        return None
    wd = own.optimizer.weight_decay
    ratio = lr * (sharpness + wd) / c
    what = f"λmax {g(sharpness)}" + (f" + weight decay {g(wd)}" if wd else "")
    evidence = f"lr {g(lr)} × {what} / c {g(c)} = {ratio:.3g}"
    i = _index_of(own.batch_sizes, rates.loader_batch_size if rates else None)
    batch_sharpness = _at(own.sharpness, i)  # of H_S + W: the weight decay is in it
    if batch_sharpness is not None:
        batch_ratio = lr * batch_sharpness / c
        evidence += (
            f"; mini-batch: mean top eigenvalue of batch Hessians {g(batch_sharpness)} at the "
            f"loader's batch size, η·λ̄₁(B)/c = {batch_ratio:.3g}"
        )
        if batch_ratio >= 0.8 > ratio:
            return Finding(
                "edge_of_stability",
                f"The mini-batch sharpness is at the edge of stability (η·λ̄₁(B)/c = "
                f"{batch_ratio:.2g}) while the full-batch λmax is below it ({ratio:.2g}): "
                "SGD's edge of stochastic stability, where the batches' curvature, not the "
                "full Hessian's, is what the learning rate holds in check.",
                evidence,
                "mini-batch SGD settles where batch sharpness ≈ c/η",
                "Andreyev & Beneventano 2024; Cohen et al. 2021",
                RESOLVED if converged else WITHIN_NOISE,
            )
    if ratio > 1.1:
        statement = (
            f"The sharpness is above the {kind} stability threshold (η·λ/c = {ratio:.2g}): "
            "full-batch training at this learning rate would oscillate; mini-batch noise or "
            "non-quadratic effects keep it going."
        )
        priority = ACT
    elif ratio >= 0.8:
        statement = (
            f"The model sits at the edge of stability (η·λ/c = {ratio:.2g}): its sharpness "
            "is set by the learning rate, not by the data — a smaller learning rate lets it "
            "sharpen, a larger one flattens it or diverges."
        )
        priority = INFORM
    elif ratio >= 0.3:
        statement = (
            f"The sharpness is below the edge of stability (η·λ/c = {ratio:.2g}); full-batch "
            "training would sharpen toward it."
        )
        priority = INFORM
    else:
        statement = (
            f"The sharpness is far below the edge of stability (η·λ/c = {ratio:.2g}): "
            "curvature does not limit this learning rate."
        )
        priority = INFORM
    return Finding(
        topic="edge_of_stability",
        statement=statement,
        evidence=evidence,
        rule="stable iff η·λ < c: c = 2 (GD), 2+2β (heavy ball), (2+2β)/(1+2β) (Nesterov)",
        reference="Cohen et al. 2021",
        confidence=RESOLVED if converged else WITHIN_NOISE,
        priority=priority,
    )


def _adaptive_edge(own: LearningRateResult, lr: float) -> Finding | None:
    r"""Return the edge-of-stability finding of an adaptive or nonlinear optimizer.

    The ratio at the largest batch size analyzed is :math:`\eta\,\lambda_{\max}(P^{-1}(H +
    W))/c` for a frozen preconditioner, with the optimizer's own coefficient :math:`c` at its
    learning rate (decoupled decay included), or :math:`\eta\lambda_c/2` for the critical
    sharpness.

    Returns
    -------
    Finding or None
        ``None`` without a limit at the largest batch size (and nothing to say about it).
    """
    sizes = np.asarray(own.batch_sizes).reshape(-1)
    i = int(np.argmax(sizes))
    batch = int(sizes[i])
    limit, sharpness = _at(own.lr_max, i), _at(own.sharpness, i)
    if limit is None or sharpness is None or not own.coefficient > 0:
        return _no_number(own, lr, batch, "edge_of_stability")
    ratio = lr * sharpness / own.coefficient
    full = " (the full batch)" if batch == own.num_samples else ""
    critical = own.measure == CRITICAL
    what = (
        f"critical sharpness λ_c {g(sharpness)} along its own update"
        if critical
        else f"preconditioned sharpness λmax(P⁻¹H) {g(sharpness)}"
    )
    evidence = (
        f"lr {g(lr)} × {what} / c {g(own.coefficient)} = {ratio:.3g} (batch size "
        f"{batch}{full}; lr_max there {g(limit)}; rests on {own.rests_on})"
    )
    name = _display(own)
    if critical:
        statement = _critical_edge(name, ratio)
        rule = "λ_c = 2/η_c along the optimizer's own update against 2/η"
        reference = "Kalra et al. 2026; Islamov et al. 2026"
    else:
        statement = _frozen_edge(name, ratio)
        rule = "stable iff s·λmax(P⁻¹(H + W)) < c, the optimizer's own frozen recursion"
        reference = "Cohen et al. 2022"
        if own.basis == "steady state":
            statement += (
                " P is Adam's steady state at this point (no optimizer state given): a real "
                "run's state typically gives a lower ratio."
            )
    priority = ACT if ratio > 1.1 and not critical else INFORM
    return Finding("edge_of_stability", statement, evidence, rule, reference, RESOLVED, priority)


def _frozen_edge(name: str, ratio: float) -> str:
    if ratio > 1.1:
        return (
            f"The preconditioned sharpness is above {name}'s stability threshold with its "
            f"state held (η·λ/c = {ratio:.2g}): it is oscillating, and left free it raises "
            "its second moments until it settles at the edge (Cohen et al. 2022) — or, if they "
            "cannot grow fast enough, diverges."
        )
    if ratio >= 0.8:
        return (
            f"{name} sits at the edge of stability (η·λ/c = {ratio:.2g}): its "
            "preconditioned sharpness is set by the learning rate and its second moments, "
            "as Cohen et al. (2022) found for Adam."
        )
    return (
        f"{name}'s preconditioned sharpness is below its edge of stability (η·λ/c = "
        f"{ratio:.2g}); curvature does not limit this learning rate now."
    )


def _critical_edge(name: str, ratio: float) -> str:
    if ratio >= 1:
        return (
            f"The next full-batch step along {name}'s own update at this learning rate raises "
            f"the loss (η·λ_c/2 = {ratio:.2g}): the critical sharpness is at or past 2/η. "
            "Normalized updates such as Muon's hover there during training and diverge only "
            "at several times the critical learning rate (validation/optimizers.md); this is "
            "not a divergence threshold."
        )
    if ratio >= 0.5:
        return (
            f"The critical sharpness along {name}'s update is near 2/η (η·λ_c/2 = "
            f"{ratio:.2g}): the next step is close to the largest that still lowers the loss."
        )
    return (
        f"The critical sharpness along {name}'s update is well below 2/η (η·λ_c/2 = "
        f"{ratio:.2g}): a larger learning rate would still lower the loss on the next step."
    )


# -- batch size -------------------------------------------------------------------------------
def batch_size_vs_noise_scale(
    coherence: CoherenceResult | None, batch_size: int | None
) -> Finding | None:
    r"""Place the loader's batch size against the gradient noise scale.

    :math:`B_\text{noise} = \operatorname{tr}(H\Sigma)/(G^\top H G)` when measured, else
    :math:`B_\text{simple} = \operatorname{tr}\Sigma/\lVert G\rVert^2` (its unbiased
    estimate), approximates the critical batch size (McCandlish et al. 2018): below it a
    step's progress grows about linearly with :math:`B` (and the learning rate should too,
    Goyal et al. 2017); above it, larger batches give diminishing returns.

    Parameters
    ----------
    coherence : CoherenceResult or None
        Gradient statistics.
    batch_size : int or None
        The loader's batch size.

    Returns
    -------
    Finding or None
        ``None`` without either input or when the noise scale is not resolved (see
        :func:`unresolved_estimates`).
    """
    if coherence is None or not batch_size:
        return None
    b_simple, unbiased = coherence.b_simple, coherence.b_simple_unbiased
    if coherence.b_noise is not None and math.isfinite(coherence.b_noise) and coherence.b_noise > 0:
        scale, name = coherence.b_noise, "B_noise"
        confidence = RESOLVED
    elif math.isfinite(unbiased) and unbiased > 0:
        scale, name = unbiased, "B_simple (unbiased)"
        agree = math.isfinite(b_simple) and b_simple > 0 and 0.5 < unbiased / b_simple < 2
        confidence = RESOLVED if agree else WITHIN_NOISE
    else:
        return None
    ratio = batch_size / scale
    evidence = (
        f"batch size {batch_size}; {name} {g(scale)} from {coherence.num_samples} samples "
        f"(B_simple {g(b_simple)}, unbiased {g(unbiased)})"
    )
    if ratio < 0.5:
        statement = (
            f"The batch size {batch_size} is below the gradient noise scale ({g(scale)}): "
            "larger batches still pay off almost linearly, and the learning rate can grow "
            "with the batch (linear scaling)."
        )
    elif ratio > 2:
        statement = (
            f"The batch size {batch_size} is above the gradient noise scale ({g(scale)}): "
            "larger batches give diminishing returns per sample; a smaller batch trains "
            "about as fast per step with less compute."
        )
    else:
        statement = (
            f"The batch size {batch_size} is near the gradient noise scale ({g(scale)}), the "
            "critical batch size where time and compute trade off evenly."
        )
        confidence = WITHIN_NOISE if confidence == RESOLVED else confidence
    return Finding(
        topic="batch_size",
        statement=statement + " The noise scale grows as training goes on.",
        evidence=evidence,
        rule="B_crit ≈ B_noise = tr(HΣ)/(GᵀHG) ≈ B_simple = tr Σ/|G|²",
        reference="McCandlish et al. 2018; Goyal et al. 2017",
        confidence=confidence,
    )


# -- curvature sign ---------------------------------------------------------------------------
def curvature_sign(
    eigenvalues: ExtremeEigenvalues | None, density: SpectralDensity | None
) -> Finding | None:
    r"""Say whether negative curvature is resolved (a saddle) or within the resolution.

    :math:`\lambda_{\min}` is resolved as negative when its Lanczos residual is small
    (converged) and :math:`|\lambda_{\min}|` exceeds both ten residuals and the SLQ kernel
    width :math:`\sigma` — smaller negative values, and the SLQ density's negative mass
    near zero, are what the broadening of a bulk at zero produces.

    Parameters
    ----------
    eigenvalues : ExtremeEigenvalues or None
        The bottom eigenpairs (and the top, for scale).
    density : SpectralDensity or None
        The SLQ density (its kernel width and negative mass).

    Returns
    -------
    Finding or None
        ``None`` without bottom eigenvalues.
    """
    bottom = None if eigenvalues is None else eigenvalues.bottom
    if bottom is None or bottom.values.numel() == 0:
        return None
    i = int(bottom.values.argmin())
    lam_min = float(bottom.values[i])
    residual = float(bottom.residuals[i])
    converged = bool(bottom.converged[i])
    lam_max = eigenvalues.lambda_max if eigenvalues is not None else None
    sigma = density.sigma if density is not None else 0.0
    resolution = max(10 * residual, sigma)
    evidence = f"λmin {g(lam_min)} (residual {g(residual, 2)})"
    if lam_max:
        evidence += f"; λmax {g(lam_max)}"
    if density is not None:
        evidence += (
            f"; SLQ kernel width σ {g(sigma, 3)}, negative share of the spectral mass "
            f"{density.negative_mass_ratio:.2%}"
        )
    rule = "λmin resolved as negative iff converged and |λmin| > max(10·residual, σ)"
    reference = "Dauphin et al. 2014; Sagun et al. 2017; Ghorbani et al. 2019"
    if lam_min < 0 and -lam_min > resolution:
        share = -lam_min / lam_max if lam_max else math.inf
        if share >= 0.01:
            statement = (
                f"Negative curvature is resolved (λmin = {g(lam_min)}, {share:.1%} of λmax): "
                "the model is at a saddle or on a slope, not at a minimum — "
                "there are directions where the loss still goes down."
            )
        else:
            statement = (
                f"Small but real negative curvature (λmin = {g(lam_min)}, {share:.2%} of "
                "λmax): typical near the end of training of a non-convex network, a minimum "
                "up to nearly flat directions."
            )
        confidence = RESOLVED if converged else WITHIN_NOISE
    else:
        statement = (
            f"No negative curvature beyond the resolution: λmin = {g(lam_min)} is within "
            f"{g(resolution, 2)} of zero — a minimum as far as this analysis can tell; the "
            "SLQ density's negative mass is the broadening of the bulk at zero."
        )
        confidence = RESOLVED if converged else WITHIN_NOISE
    return Finding("curvature_sign", statement, evidence, rule, reference, confidence)


# -- spectrum shape -------------------------------------------------------------------------------
def spectrum_outliers(density: SpectralDensity | None, num_classes: int | None) -> Finding | None:
    """Count the spectrum's outliers and relate them to the number of classes.

    Sagun et al. (2017) and Papyan (2019, 2020) found about ``C`` outliers (``C`` classes)
    above a bulk near zero, from the class means of the Gauss-Newton term (``C − 1`` when
    the softmax's redundant direction drops out).

    Parameters
    ----------
    density : SpectralDensity or None
        The SLQ density with its outlier split.
    num_classes : int or None
        Classes of a classifier, when known.

    Returns
    -------
    Finding or None
        ``None`` without a density.
    """
    if density is None:
        return None
    reference = "Sagun et al. 2017; Papyan 2019, 2020"
    rule = "outliers: a ratio gap λc/λc+1 > 1.3 or a gap ≥ 3σ and ≥ 5× the bulk spacing"
    k = density.num_outliers
    if density.bulk_edge is None or k == 0:
        return Finding(
            "spectrum",
            "No clear gap between outliers and the bulk: the top of the spectrum is "
            "continuous at this resolution.",
            f"largest ratio of consecutive top Ritz values {g(density.gap_ratio, 3)}; "
            f"σ {g(density.sigma, 3)}",
            rule,
            reference,
            WITHIN_NOISE,
        )
    values = ", ".join(g(v) for v in density.outliers.tolist()[:12])
    evidence = f"{_outliers(k)} ({values}) above the bulk edge {g(density.bulk_edge)}"
    if not num_classes:
        statement = (
            f"{_outliers(k)} above the bulk (edge {g(density.bulk_edge)}): the top of the "
            "spectrum is a few directions of high curvature."
        )
        return Finding("spectrum", statement, evidence, rule, reference, RESOLVED)
    evidence += f"; {num_classes} classes"
    if num_classes - 1 <= k <= num_classes:
        statement = (
            f"{_outliers(k)} above the bulk for {num_classes} classes: the top of the Hessian "
            "is the class structure of its Gauss-Newton part, as in Sagun and Papyan; the "
            "bulk near zero holds the rest."
        )
        confidence = RESOLVED
    elif k < num_classes - 1:
        statement = (
            f"{_outliers(k)} for {num_classes} classes: fewer than the class structure gives; "
            "some sit inside the bulk or close together at this resolution "
            f"(ls.eigenvalues(H, k={num_classes}) resolves them)."
        )
        confidence = WITHIN_NOISE
    else:
        statement = (
            f"{_outliers(k)} for {num_classes} classes: more than the class means give; the "
            "next level of Papyan's hierarchy (class-pair structure) or a heavy tail shows."
        )
        confidence = WITHIN_NOISE
    return Finding("spectrum", statement, evidence, rule, reference, confidence)


def _outliers(k: int) -> str:
    return "1 outlier" if k == 1 else f"{k} outliers"


def block_heterogeneity(blocks: BlockSpectra | None) -> Finding | None:
    r"""Report block heterogeneity: how different the Hessian blocks' spectra are.

    :math:`\mathrm{JS}^0`, the mean Jensen-Shannon distance between the blocks' normalized
    spectral densities (in [0, 1] here): Zhang et al. (2024) found it large for transformers
    and small for CNNs at initialization, and SGD behind Adam where it is large.

    Parameters
    ----------
    blocks : BlockSpectra or None
        The per-block spectra.

    Returns
    -------
    Finding or None
        ``None`` without blocks.
    """
    if blocks is None or len(blocks.names) < 2:
        return None
    js = blocks.heterogeneity
    D = np.asarray(blocks.distances, dtype=float)
    mean_js = D.sum(1) / (len(blocks.names) - 1)
    odd = blocks.names[int(np.argmax(mean_js))]
    evidence = (
        f"JS⁰ {js:.3f} over {len(blocks.names)} blocks; the most different block: {odd} "
        f"(mean distance {mean_js.max():.3f})"
    )
    if js >= 0.3:
        how = "differ strongly"
    elif js <= 0.1:
        how = "are alike"
    else:
        how = "differ moderately"
    statement = (
        f"The blocks' Hessian spectra {how} (JS⁰ = {js:.2f}; most different: {odd}). Zhang "
        "et al. link large JS⁰ at initialization to SGD falling behind Adam; this project's "
        "small-scale check did not reproduce their transformer-over-CNN ordering "
        "(validation/block_heterogeneity.md): a description of this model, not a prediction."
    )
    return Finding(
        "heterogeneity",
        statement,
        evidence,
        "JS⁰ = mean over block pairs of the Jensen-Shannon distance of their spectral densities",
        "Zhang et al. 2024",
        ASSUMPTION,  # the paper's measure is at initialization; a report is at any point
        CAVEAT,
    )


# -- resolution ------------------------------------------------------------------------------------
def unresolved_estimates(
    *,
    coherence: CoherenceResult | None = None,
    eigenvalues: ExtremeEigenvalues | None = None,
    subsets: SubsetSpread | None = None,
    trace: Any = None,
) -> list[Finding]:
    """Say which estimates are not resolved by the samples and products spent on them.

    Negative or infinite unbiased gradient statistics (the mean gradient is below its own
    sampling noise), eigenpairs whose residual is above the tolerance, λmax and the trace
    when their interval across data subsets is wider than 10 % of the value, and a trace
    whose standard error is over 10 % of it.

    Parameters
    ----------
    coherence, eigenvalues, subsets, trace : records, optional
        What to check (a trace is an :class:`~landscape.Estimate`).

    Returns
    -------
    list of Finding
        One per unresolved estimate (possibly none).
    """
    out = []
    if coherence is not None:
        bad = [
            name
            for name, value in (
                ("alpha_unbiased", coherence.alpha_unbiased),
                ("b_simple_unbiased", coherence.b_simple_unbiased),
            )
            if not (math.isfinite(value) and value >= 0)
            or (name == "b_simple_unbiased" and value == 0)
        ]
        if bad:
            out.append(
                Finding(
                    "resolution",
                    "Gradient coherence and the noise scale are not resolved by the "
                    + (f"{coherence.num_samples} " if coherence.num_samples else "")
                    + "samples used: the mean gradient is smaller than its own sampling "
                    "noise. Use more coherence samples.",
                    ", ".join(f"{n} {g(getattr(coherence, n))}" for n in bad)
                    + f"; |G|² {g(coherence.grad_norm_sq)}, tr Σ/(m−1) "
                    f"{g(coherence.trace_cov / max(coherence.num_samples - 1, 1))}",
                    "unbiased |G|² = |Ḡ|² − tr Σ/(m−1) must be positive",
                    "McCandlish et al. 2018",
                    WITHIN_NOISE,
                    CAVEAT,
                )
            )
    if eigenvalues is not None:
        for name, pairs in (("top", eigenvalues.top), ("bottom", eigenvalues.bottom)):
            if pairs is None or bool(pairs.converged.all()):
                continue
            missing = int((~pairs.converged.bool()).sum())
            out.append(
                Finding(
                    "resolution",
                    f"{missing} of the {pairs.values.numel()} {name} eigenvalues did not "
                    "converge: their values are estimates, not certified.",
                    "residuals " + ", ".join(g(r, 2) for r in pairs.residuals.tolist()),
                    "converged iff ‖Hv − λv‖ ≤ tol·‖H‖"
                    + (f" (tol {g(eigenvalues.tol, 2)})" if eigenvalues.tol else ""),
                    "Lanczos with residual certificates",
                    WITHIN_NOISE,
                    CAVEAT,
                )
            )
    if subsets is not None:
        for label, e in (("λmax", subsets.lambda_max), ("trace", subsets.trace)):
            if e.resolved:
                continue
            lo, hi = e.interval
            more = (
                "more samples than the data has"
                if subsets.population and e.suggested_samples > subsets.population
                else f"about {count(e.suggested_samples)} samples"
            )
            out.append(
                Finding(
                    "resolution",
                    f"{label} is not resolved by {count(subsets.samples)} samples: it varies "
                    f"{g(e.spread[0])} … {g(e.spread[1])} across {subsets.num_subsets} disjoint "
                    f"subsets; {more} would pin it within 10 %.",
                    f"{label} {g(e.value)}; {subsets.confidence:.0%} interval for all the data "
                    f"[{g(lo)}, {g(hi)}]",
                    "resolved iff the interval's half width ≤ 10 % of the value",
                    "PyHessian issue 5 (λmax 159–1587 across mini-batches)",
                    WITHIN_NOISE,
                    CAVEAT,
                )
            )
    value, stderr = getattr(trace, "value", None), getattr(trace, "stderr", None)
    resolvable = value is not None and stderr is not None and math.isfinite(stderr)
    if resolvable and value != 0 and stderr > 0.1 * abs(value):
        out.append(
            Finding(
                "resolution",
                f"The trace is not resolved: {g(value)} ± {g(stderr, 2)} "
                f"({stderr / abs(value):.0%}); more probes would narrow it.",
                f"{trace.method}, {trace.num_matvecs} products",
                "resolved iff stderr ≤ 10 % of |trace|",
                "Meyer et al. 2021 (Hutch++)",
                WITHIN_NOISE,
                CAVEAT,
            )
        )
    return out


# -- comparisons -----------------------------------------------------------------------------------
def sharper_minimum(
    lambda_max: Mapping[str, float],
    invariant: Mapping[str, Mapping[str, float]] | None = None,
) -> Finding | None:
    """Say which minimum is sharper by λmax, and whether rescaling-invariant measures agree.

    λmax (and the trace) change under function-preserving rescaling of the layers (Dinh et
    al. 2017); a measure invariant to it (ASAM, Kwon et al. 2021; magnitude-aware PAC-Bayes)
    that orders the models the same way says the difference is not a scale artifact.

    Parameters
    ----------
    lambda_max : mapping of str to float
        λmax per model (at least two).
    invariant : mapping of str to (mapping of str to float), optional
        Per invariant measure, its value per model.

    Returns
    -------
    Finding or None
        ``None`` for fewer than two models with a λmax.
    """
    values = {n: v for n, v in lambda_max.items() if v is not None and math.isfinite(v)}
    if len(values) < 2:
        return None
    sharp = max(values, key=values.get)  # type: ignore[arg-type]
    flat = min(values, key=values.get)  # type: ignore[arg-type]
    ratio = values[sharp] / values[flat] if values[flat] > 0 else math.inf
    evidence = ["λmax " + ", ".join(f"{n} {g(v)}" for n, v in values.items())]
    agree, disagree = [], []
    for measure, per in (invariant or {}).items():
        if sharp in per and flat in per and all(math.isfinite(per[n]) for n in (sharp, flat)):
            evidence.append(f"{measure} " + ", ".join(f"{n} {g(per[n])}" for n in (sharp, flat)))
            (agree if per[sharp] > per[flat] else disagree).append(measure)
    statement = f"{sharp}'s minimum is sharper than {flat}'s (λmax {ratio_text(ratio)})"
    if ratio < 1.2:
        statement = f"{sharp}'s and {flat}'s minima are about equally sharp (λmax within 20 %)"
        confidence = WITHIN_NOISE
    elif agree and not disagree:
        statement += f", and the rescaling-invariant {', '.join(agree)} agree: not a scale artifact"
        confidence = RESOLVED
    elif disagree:
        statement += (
            f", but the rescaling-invariant {', '.join(disagree)} order them the other way: "
            "the difference may be a scale artifact"
        )
        confidence = ASSUMPTION
    else:
        statement += "; no rescaling-invariant measure was computed to check it"
        confidence = ASSUMPTION
    return Finding(
        "sharper_minimum",
        statement + ".",
        "; ".join(evidence),
        "sharpness differences count when invariant measures agree",
        "Dinh et al. 2017; Kwon et al. 2021",
        confidence,
    )


def mode_connectivity(
    interpolation: Interpolation | None, losses: Mapping[str, float] | None = None
) -> Finding | None:
    r"""Say whether two minima are linearly mode-connected, from the loss barrier.

    The barrier :math:`B = \max_t L((1-t)\theta_A + t\theta_B) - ((1-t)L_A + tL_B)` is
    compared with the endpoints' mean loss :math:`\bar L`: connected when
    :math:`B \le 0.1\,\bar L` (Frankle et al. 2020 call minima linearly connected when the
    barrier is within noise of zero).

    Parameters
    ----------
    interpolation : Interpolation or None
        The path between the first two models.
    losses : mapping of str to float, optional
        The models' losses (else read off the path at t = 0 and 1).

    Returns
    -------
    Finding or None
        ``None`` without a path that contains t = 0 and 1.
    """
    if interpolation is None:
        return None
    try:
        barrier = interpolation.barrier
    except ValueError:
        return None
    a, b = interpolation.pair
    t, loss = interpolation.path.coords[0], interpolation.path.loss
    ends = {a: float(loss[t == 0.0][0]), b: float(loss[t == 1.0][0])}
    ends.update({k: v for k, v in (losses or {}).items() if k in ends})
    mean = (ends[a] + ends[b]) / 2
    relative = barrier / mean if mean > 0 else math.inf
    evidence = f"barrier {g(barrier)}; losses {a} {g(ends[a])}, {b} {g(ends[b])}"
    if barrier <= 0.1 * mean:
        statement = (
            f"{a} and {b} are linearly mode-connected: the loss along the straight line "
            f"between them rises by {g(max(barrier, 0.0))} at most, within 10 % of their loss."
        )
    else:
        statement = (
            f"{a} and {b} sit in different basins: the straight line between them crosses a "
            f"loss barrier of {g(barrier)}, {ratio_text(relative)} their mean loss."
        )
    return Finding(
        "connectivity",
        statement,
        evidence,
        "linearly connected iff barrier ≤ 10 % of the endpoints' mean loss",
        "Frankle et al. 2020; Garipov et al. 2018",
        RESOLVED,
    )


# -- documents -----------------------------------------------------------------------------------
def report_findings(report: Report, subject: str | None = None) -> list[Finding]:
    """Run every rule on one report and rank what they say.

    Parameters
    ----------
    report : Report
        The analysis.
    subject : str, optional
        The model's name (in a comparison).

    Returns
    -------
    list of Finding
        Most important first.
    """
    rates = report.learning_rate
    batch = rates.loader_batch_size if rates is not None else None
    classes = report.loss.num_classes if report.loss is not None else None
    rules: list[Callable[[], Any]] = [
        lambda: learning_rate_headroom(rates),
        lambda: edge_of_stability(report.eigenvalues, rates),
        lambda: batch_size_vs_noise_scale(report.coherence, batch),
        lambda: curvature_sign(report.eigenvalues, report.density),
        lambda: spectrum_outliers(report.density, classes),
        lambda: block_heterogeneity(report.block_spectra),
    ]
    found: list[Finding | None] = [rule() for rule in rules]
    found += unresolved_estimates(
        coherence=report.coherence,
        eigenvalues=report.eigenvalues,
        subsets=report.subsets,
        trace=report.trace,
    )
    ranked = rank(found)
    if subject is not None:
        ranked = [dataclasses.replace(f, subject=subject) for f in ranked]
    return ranked


def comparison_findings(comparison: Comparison) -> list[Finding]:
    """Run the comparison rules, then each model's own rules, and rank everything.

    Parameters
    ----------
    comparison : Comparison
        The models side by side; each model's findings are labelled with its name.

    Returns
    -------
    list of Finding
        Most important first.
    """
    reports = comparison.reports
    lambda_max = {
        n: r.eigenvalues.lambda_max for n, r in reports.items() if r.eigenvalues is not None
    }
    invariant: dict[str, dict[str, float]] = {}
    for name, r in reports.items():
        for measure in r.sharpness.measures.values() if r.sharpness else ():
            if measure.invariant:
                invariant.setdefault(measure.name, {})[name] = measure.value
    losses = {n: r.loss.value for n, r in reports.items() if r.loss is not None}
    found: list[Finding | None] = [
        sharper_minimum(lambda_max, invariant),  # type: ignore[arg-type]
        mode_connectivity(comparison.interpolation, losses),
    ]
    for name, report in reports.items():
        found += report_findings(report, subject=name)
    return rank(found)
