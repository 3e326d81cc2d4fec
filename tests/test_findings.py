"""Each finding rule on constructed results: where it must fire, what it says, where it must not."""

import math

import numpy as np
import pytest
import torch

from landscape.linalg.results import Eigenpairs, Estimate, SpectralDensity
from landscape.metrics.block_spectra import BlockSpectra
from landscape.metrics.coherence import CoherenceResult
from landscape.metrics.learning_rate import LearningRateResult, Verification
from landscape.metrics.subsets import SubsetEstimate, SubsetSpread
from landscape.metrics.thresholds import OptimizerSettings
from landscape.report import findings as F
from landscape.report.contents import (
    ExtremeEigenvalues,
    Interpolation,
    LearningRates,
    LossValue,
)
from landscape.report.document import Comparison, Report
from landscape.surfaces.grid import Surface

SIZES = (16, 64, 256)


# -- constructed results --------------------------------------------------------------------
def lr_result(
    kind="sgd",
    lr=0.1,
    momentum=0.0,
    lr_max=(1.0, 2.0, 3.0),
    band=0.2,
    exact=None,
    at_minimum=None,
    verification=(),
    sharpness=None,
):
    settings = OptimizerSettings(kind, lr=lr, momentum=momentum)
    c = settings.coefficient
    lr_max = np.asarray(lr_max, dtype=float)
    sharp = c / lr_max if sharpness is None else np.asarray(sharpness, dtype=float)
    return LearningRateResult(
        batch_sizes=np.asarray(SIZES),
        lr_max=lr_max,
        lr_max_low=(1 - band) * lr_max,
        lr_max_high=(1 + band) * lr_max,
        sharpness=sharp,
        sharpness_std=0 * sharp,
        sharpness_samples=tuple(np.asarray([s]) for s in sharp),
        fit={"a": 1.0, "b": 1.0, "b_star": 1.0},
        lr_fit=lr_max,
        scaling_exponent=0.5,
        optimizer=settings,
        coefficient=c,
        method="test",
        lr_mean_square=None if exact is None else np.asarray(exact, dtype=float),
        lr_nonuniformity_bound=None,
        lr_trace_bound=None,
        verification=tuple(verification),
        current_lr=lr,
        num_samples=1024,
        num_matvecs=0,
        num_passes=0,
        seconds=0.0,
        at_minimum=at_minimum,
    )


def rates(own, batch=64, **others):
    results = {own.optimizer.kind: own, **others}
    return LearningRates(results, loader_batch_size=batch, optimizer_kind=own.optimizer.kind)


def pairs(values, residuals=None, converged=None):
    values = torch.tensor(values, dtype=torch.float64)
    residuals = torch.full_like(values, 1e-8) if residuals is None else torch.tensor(residuals)
    flags = torch.ones(values.numel(), dtype=torch.bool) if converged is None else converged
    return Eigenpairs(values, None, residuals, torch.as_tensor(flags), 10, 10)


def eigen(top=(20.0,), bottom=(-0.001,), bottom_residuals=None, converged=None):
    return ExtremeEigenvalues(pairs(top, converged=converged), pairs(bottom, bottom_residuals))


def density(outliers=(), edge=None, sigma=0.05, negative=0.0):
    nodes = torch.tensor([[-negative, 0.0, 1.0]], dtype=torch.float64)
    weights = torch.tensor([[0.1, 0.8, 0.1]], dtype=torch.float64)
    grid = torch.linspace(-1, 2, 50, dtype=torch.float64)
    return SpectralDensity(
        grid=grid,
        density=torch.ones(50, dtype=torch.float64),
        nodes=nodes,
        weights=weights,
        sigma=sigma,
        outliers=torch.tensor(outliers, dtype=torch.float64),
        bulk_edge=edge,
        gap_ratio=1.1,
        num_matvecs=0,
        num_passes=0,
    )


def coherence(b_simple=400.0, unbiased=500.0, alpha_unbiased=0.01, b_noise=None, samples=256):
    nan = math.nan
    return CoherenceResult(
        num_samples=samples,
        num_params=100,
        mean_loss=0.5,
        grad_norm_sq=1.0,
        trace_cov=b_simple,
        mean_grad_norm_sq=1.0 + b_simple,
        alpha=1 / (1 + b_simple),
        m_coherence=samples / (1 + b_simple),
        alpha_unbiased=alpha_unbiased,
        b_simple=b_simple,
        grad_norm_sq_unbiased=nan,
        trace_cov_unbiased=nan,
        b_simple_unbiased=unbiased,
        gsnr_median=0.01,
        gsnr_mean=0.02,
        gsnr=(),
        b_noise=b_noise,
    )


# -- learning-rate headroom ------------------------------------------------------------------
def test_headroom_above_close_and_room_at_the_loaders_batch_size():
    above = F.learning_rate_headroom(rates(lr_result(lr=3.0), batch=64))
    assert above.priority == F.ACT and "above the largest stable one (2," in above.statement
    assert "batch size 64" in above.statement and above.confidence == F.RESOLVED
    close = F.learning_rate_headroom(rates(lr_result(lr=1.4), batch=64))
    assert close.priority == F.ACT and "close to" in close.statement
    room = F.learning_rate_headroom(rates(lr_result(lr=0.1), batch=64))
    assert room.priority == F.INFORM and "1/20 of the largest stable one" in room.statement
    # the loader's batch of 200 is closest to 256 (lr_max 3)
    far = F.learning_rate_headroom(rates(lr_result(lr=0.1), batch=200))
    assert "(3, the heuristic) at batch size 256" in far.statement


def test_headroom_inside_the_batch_band_is_within_noise():
    finding = F.learning_rate_headroom(rates(lr_result(lr=2.1, band=0.2), batch=64))
    assert finding.confidence == F.WITHIN_NOISE


def test_headroom_trusts_the_exact_threshold_for_plain_sgd_and_says_why():
    result = lr_result(lr=0.1, exact=(0.3, 0.6, 0.9), at_minimum=True)
    finding = F.learning_rate_headroom(rates(result))
    assert "(0.6, the exact mean-square threshold)" in finding.statement
    assert "noise builds up" in finding.statement and "3.3×" in finding.statement
    assert finding.confidence == F.RESOLVED
    # away from a minimum the premise of the exact threshold does not hold
    away = lr_result(lr=0.1, exact=(0.3, 0.6, 0.9), at_minimum=False)
    finding = F.learning_rate_headroom(rates(away))
    assert finding.confidence == F.ASSUMPTION and "indicative only" in finding.statement
    # close to the heuristic: no explanation needed
    near = lr_result(lr=0.1, exact=(1.0, 1.9, 2.9), at_minimum=True)
    assert "builds up" not in F.learning_rate_headroom(rates(near)).statement


def test_headroom_for_momentum_checks_the_heuristic_against_the_scaled_exact_sgd_threshold():
    sgd = lr_result("sgd", exact=(0.5, 1.0, 1.5))
    # heavy ball 0.9: c/2 = 1.9; the exact SGD threshold 1.0 at B = 64 scales to 1.9
    agreeing = lr_result("momentum", momentum=0.9, lr_max=(1.0, 2.0, 3.0))
    finding = F.learning_rate_headroom(rates(agreeing, sgd=sgd))
    assert "agrees with the exact plain-SGD threshold" in finding.statement
    assert finding.confidence == F.RESOLVED
    # the digits case: heuristic 2.4 against 0.36 for plain SGD, 7x apart
    apart = lr_result("momentum", momentum=0.9, lr_max=(2.0, 2.4, 3.0))
    sgd = lr_result("sgd", exact=(0.2, 0.36, 0.5))
    finding = F.learning_rate_headroom(rates(apart, sgd=sgd))
    assert finding.confidence == F.ASSUMPTION
    assert "verify=True" in finding.statement and "0.684" in finding.statement


def test_headroom_trusts_training_bursts_where_they_ran():
    bursts = Verification(
        batch_size=64,
        lrs=np.array([0.5, 1.0, 2.0]),
        diverged=np.array([False, False, True]),
        final_losses=np.array([0.3, 0.4, np.inf]),
        start_loss=0.5,
        steps=20,
    )
    finding = F.learning_rate_headroom(rates(lr_result(lr=0.5, verification=(bursts,))))
    assert "(2, training bursts)" in finding.statement and finding.confidence == F.RESOLVED
    assert "stable up to 1, diverged from 2" in finding.evidence


def test_headroom_is_silent_without_an_optimizer_its_lr_or_a_batch_size():
    result = lr_result(lr=0.1)
    assert F.learning_rate_headroom(None) is None
    assert F.learning_rate_headroom(LearningRates({"sgd": result}, 64, None)) is None
    assert F.learning_rate_headroom(rates(lr_result(lr=None))) is None
    assert F.learning_rate_headroom(rates(result, batch=None)) is None


# -- edge of stability -----------------------------------------------------------------------
def test_edge_of_stability_for_gd_and_momentum():
    at_edge = F.edge_of_stability(eigen(top=(19.4,)), rates(lr_result(lr=0.1, lr_max=(9, 9, 9))))
    assert "at the edge of stability (η·λ/c = 0.97)" in at_edge.statement
    above = F.edge_of_stability(eigen(top=(30.0,)), rates(lr_result(lr=0.1, lr_max=(9, 9, 9))))
    assert above.priority == F.ACT and "above the sgd stability threshold" in above.statement
    far = F.edge_of_stability(eigen(top=(1.0,)), rates(lr_result(lr=0.1, lr_max=(9, 9, 9))))
    assert "far below" in far.statement
    # heavy ball: c = 3.8, so λmax 19.5 at lr 0.1 is half-way
    heavy = lr_result("momentum", lr=0.1, momentum=0.9, lr_max=(9, 9, 9))
    half = F.edge_of_stability(eigen(top=(19.5,)), rates(heavy))
    assert "0.51" in half.statement and "below the edge" in half.statement


def test_edge_of_stability_for_adam_uses_the_preconditioned_sharpness():
    # c = (2 + 2·0.9)/(1 − 0.9) = 38; preconditioned sharpness 3700 at the largest batch
    adam = lr_result("adam", lr=0.01, sharpness=(5000.0, 4000.0, 3700.0))
    finding = F.edge_of_stability(eigen(top=(1.0,)), rates(adam))
    assert "λmax(P⁻¹H) 3700" in finding.evidence
    assert "edge of stability (η·λ/c = 0.97)" in finding.statement


def test_edge_of_stochastic_stability_when_only_the_batches_are_at_the_edge():
    sgd = lr_result(lr=0.1, lr_max=(9, 9, 9), sharpness=(20.0, 19.0, 10.0))
    finding = F.edge_of_stability(eigen(top=(5.0,)), rates(sgd, batch=64))
    assert "edge of stochastic stability" in finding.statement
    assert "Andreyev" in finding.reference


def test_edge_of_stability_confidence_and_silence():
    unconverged = eigen(top=(19.5,), converged=torch.tensor([False]))
    finding = F.edge_of_stability(unconverged, rates(lr_result(lr=0.1, lr_max=(9, 9, 9))))
    assert finding.confidence == F.WITHIN_NOISE
    assert F.edge_of_stability(eigen(), None) is None
    assert F.edge_of_stability(None, rates(lr_result())) is None
    assert F.edge_of_stability(eigen(), rates(lr_result(lr=None))) is None


# -- batch size ------------------------------------------------------------------------------
def test_batch_size_below_above_and_near_the_noise_scale():
    below = F.batch_size_vs_noise_scale(coherence(400, 500), 32)
    assert "below the gradient noise scale (500)" in below.statement
    assert below.confidence == F.RESOLVED
    above = F.batch_size_vs_noise_scale(coherence(40, 50), 1024)
    assert "above the gradient noise scale" in above.statement
    near = F.batch_size_vs_noise_scale(coherence(40, 50), 64)
    assert "near the gradient noise scale" in near.statement
    assert near.confidence == F.WITHIN_NOISE


def test_batch_size_prefers_b_noise_and_flags_disagreeing_estimates():
    finding = F.batch_size_vs_noise_scale(coherence(400, 500, b_noise=20.0), 256)
    assert "B_noise 20" in finding.evidence and "above" in finding.statement
    disagree = F.batch_size_vs_noise_scale(coherence(100, 800), 32)
    assert disagree.confidence == F.WITHIN_NOISE


def test_batch_size_is_silent_when_the_noise_scale_is_not_resolved():
    assert F.batch_size_vs_noise_scale(coherence(400, -1664), 32) is None
    assert F.batch_size_vs_noise_scale(coherence(400, math.inf), 32) is None
    assert F.batch_size_vs_noise_scale(coherence(), None) is None
    assert F.batch_size_vs_noise_scale(None, 32) is None


# -- curvature sign --------------------------------------------------------------------------
def test_negative_curvature_resolved_small_and_within_resolution():
    saddle = F.curvature_sign(eigen(top=(10.0,), bottom=(-1.0,)), density(sigma=0.1))
    assert "Negative curvature is resolved" in saddle.statement
    assert saddle.confidence == F.RESOLVED
    small = F.curvature_sign(eigen(top=(100.0,), bottom=(-0.05,)), density(sigma=0.01))
    assert "Small but real negative curvature" in small.statement
    within = F.curvature_sign(eigen(top=(10.0,), bottom=(-0.005,)), density(sigma=0.05))
    assert "No negative curvature beyond the resolution" in within.statement
    positive = F.curvature_sign(eigen(bottom=(0.3,)), density())
    assert "No negative curvature" in positive.statement
    # a residual larger than the eigenvalue does not resolve it
    noisy = F.curvature_sign(eigen(bottom=(-0.2,), bottom_residuals=[0.05]), None)
    assert "No negative curvature" in noisy.statement


def test_curvature_sign_confidence_and_silence():
    unconverged = ExtremeEigenvalues(pairs([10.0]), pairs([-1.0], converged=torch.tensor([False])))
    assert F.curvature_sign(unconverged, None).confidence == F.WITHIN_NOISE
    assert F.curvature_sign(None, density()) is None
    assert F.curvature_sign(ExtremeEigenvalues(pairs([1.0]), None), density()) is None


# -- spectrum --------------------------------------------------------------------------------
def test_outliers_against_the_number_of_classes():
    ten = F.spectrum_outliers(density(outliers=tuple(range(20, 30)), edge=2.0), 10)
    assert ten.statement.startswith("10 outliers above the bulk for 10 classes")
    assert ten.confidence == F.RESOLVED
    nine = F.spectrum_outliers(density(outliers=tuple(range(20, 29)), edge=2.0), 10)
    assert nine.confidence == F.RESOLVED
    few = F.spectrum_outliers(density(outliers=(20.0, 21.0), edge=2.0), 10)
    assert "fewer than" in few.statement and few.confidence == F.WITHIN_NOISE
    many = F.spectrum_outliers(density(outliers=tuple(range(20, 35)), edge=2.0), 10)
    assert "more than" in many.statement
    unknown = F.spectrum_outliers(density(outliers=(20.0,), edge=2.0), None)
    assert unknown.statement.startswith("1 outlier above the bulk")


def test_no_clear_gap_and_silence():
    finding = F.spectrum_outliers(density(), 10)
    assert "No clear gap" in finding.statement and finding.confidence == F.WITHIN_NOISE
    assert F.spectrum_outliers(None, 10) is None


def test_block_heterogeneity_levels():
    def blocks(js):
        D = np.array([[0.0, js], [js, 0.0]])
        return BlockSpectra(("a", "b"), (10, 10), [], D, 10, 0, 0)

    strong = F.block_heterogeneity(blocks(0.6))
    assert (
        "differ strongly (JS⁰ = 0.60" in strong.statement and "not a prediction" in strong.statement
    )
    assert strong.confidence == F.ASSUMPTION
    assert "are alike" in F.block_heterogeneity(blocks(0.05)).statement
    assert "moderately" in F.block_heterogeneity(blocks(0.2)).statement
    assert F.block_heterogeneity(None) is None
    one = BlockSpectra(("a",), (10,), [], np.zeros((1, 1)), 10, 0, 0)
    assert F.block_heterogeneity(one) is None


# -- resolution ------------------------------------------------------------------------------
def _subsets(resolved, population=8000):
    e = SubsetEstimate(10.0, (5.0, 15.0, 9.0, 11.0), 10.0, 4.0, resolved, 4096)
    return SubsetSpread(e, e, 4, 512, population, 0.95, 0, 0)


def test_unresolved_estimates_fire_one_finding_each():
    out = F.unresolved_estimates(
        coherence=coherence(400, -1664, alpha_unbiased=-0.0006),
        eigenvalues=eigen(top=(3.0, 2.0), converged=torch.tensor([True, False])),
        subsets=_subsets(False),
        trace=Estimate(100.0, 20.0, 30, 2, "hutch++"),
    )
    topics = [f.statement.split(" ")[0] for f in out]
    assert len(out) == 5, topics  # coherence, top eigenpairs, λmax and trace subsets, trace
    assert "not resolved by the 256 samples" in out[0].statement
    assert "-1664" in out[0].evidence and "-0.0006" in out[0].evidence
    assert "1 of the 2 top eigenvalues did not converge" in out[1].statement
    assert "about 4,096 samples" in out[2].statement
    small = F.unresolved_estimates(subsets=_subsets(False, population=2000))
    assert "more samples than the data has" in small[0].statement
    assert "The trace is not resolved: 100 ± 20 (20%)" in out[4].statement
    assert all(f.priority == F.CAVEAT for f in out)


def test_resolved_estimates_say_nothing():
    out = F.unresolved_estimates(
        coherence=coherence(),
        eigenvalues=eigen(),
        subsets=_subsets(True),
        trace=Estimate(100.0, 5.0, 30, 2, "hutch++"),
    )
    assert out == []
    assert F.unresolved_estimates() == []


# -- comparisons -----------------------------------------------------------------------------
def test_sharper_minimum_and_the_invariant_check():
    agree = F.sharper_minimum({"SGD": 30.0, "Adam": 10.0}, {"asam": {"SGD": 0.3, "Adam": 0.1}})
    assert agree.statement.startswith("SGD's minimum is sharper than Adam's (λmax 3×)")
    assert "not a scale artifact" in agree.statement and agree.confidence == F.RESOLVED
    disagree = F.sharper_minimum({"SGD": 30.0, "Adam": 10.0}, {"asam": {"SGD": 0.1, "Adam": 0.3}})
    assert "may be a scale artifact" in disagree.statement
    assert disagree.confidence == F.ASSUMPTION
    unchecked = F.sharper_minimum({"SGD": 30.0, "Adam": 10.0})
    assert "no rescaling-invariant measure" in unchecked.statement
    equal = F.sharper_minimum({"SGD": 10.5, "Adam": 10.0})
    assert "about equally sharp" in equal.statement and equal.confidence == F.WITHIN_NOISE
    assert F.sharper_minimum({"SGD": 10.0}) is None


def _path(barrier):
    t = np.linspace(0.0, 1.0, 11)
    loss = 0.1 + barrier * np.sin(np.pi * t)
    surface = Surface((t,), loss, None, 0.1, None, {})
    return Interpolation(("SGD", "Adam"), surface)


def test_mode_connectivity_from_the_barrier():
    apart = F.mode_connectivity(_path(0.5))
    assert "different basins" in apart.statement and "5×" in apart.statement
    joined = F.mode_connectivity(_path(0.002))
    assert "linearly mode-connected" in joined.statement
    assert F.mode_connectivity(None) is None
    t = np.linspace(0.1, 0.9, 5)  # no t = 0 and 1: no barrier
    no_ends = Interpolation(("a", "b"), Surface((t,), t, None, 0.0, None, {}))
    assert F.mode_connectivity(no_ends) is None


# -- ranking and documents -----------------------------------------------------------------------
def test_rank_orders_by_priority_then_topic_then_confidence():
    def finding(priority, confidence, topic="spectrum"):
        return F.Finding(topic, "", "", "", "", confidence, priority)

    ranked = F.rank(
        [
            finding(F.CAVEAT, F.RESOLVED),
            None,
            finding(F.INFORM, F.ASSUMPTION),
            finding(F.INFORM, F.RESOLVED),
            finding(F.INFORM, F.ASSUMPTION, "learning_rate"),
            finding(F.ACT, F.WITHIN_NOISE),
        ]
    )
    assert [(f.priority, f.topic, f.confidence) for f in ranked] == [
        (F.ACT, "spectrum", F.WITHIN_NOISE),
        (F.INFORM, "learning_rate", F.ASSUMPTION),
        (F.INFORM, "spectrum", F.RESOLVED),
        (F.INFORM, "spectrum", F.ASSUMPTION),
        (F.CAVEAT, "spectrum", F.RESOLVED),
    ]


def _report(lam_max, lr):
    own = lr_result("momentum", lr=lr, momentum=0.9, lr_max=(1.0, 2.0, 3.0))
    return Report(
        loss=LossValue(0.1, 0.98, num_classes=10),
        eigenvalues=eigen(top=(lam_max,)),
        density=density(outliers=tuple(range(20, 30)), edge=2.0),
        coherence=coherence(),
        learning_rate=rates(own, sgd=lr_result("sgd", exact=(0.5, 1.0, 1.5))),
    )


def test_documents_run_every_rule_and_label_the_models():
    report = _report(20.0, 0.1)
    topics = [f.topic for f in report.findings()]
    assert set(topics) >= {
        "learning_rate",
        "edge_of_stability",
        "batch_size",
        "curvature_sign",
        "spectrum",
    }
    assert report.summary().split("\n\n")[1].startswith("Findings\n1. ")
    comparison = Comparison({"SGD": _report(30.0, 0.1), "Adam": _report(10.0, 0.01)}, _path(0.5))
    found = comparison.findings()
    assert {f.topic for f in found} >= {"sharper_minimum", "connectivity", "learning_rate"}
    assert {f.subject for f in found} == {None, "SGD", "Adam"}
    assert found == F.rank(found)


@pytest.mark.parametrize("confidence", F.CONFIDENCE)
def test_findings_round_trip_as_records(confidence):
    finding = F.Finding("t", "s", "e", "r", "ref", confidence, F.ACT, "m")
    assert F.Finding.from_dict(finding.to_dict()) == finding


def test_headroom_for_adam_ignores_the_exact_sgd_threshold():
    adam = lr_result("adam", lr=0.001, lr_max=(0.01, 0.02, 0.03))
    sgd = lr_result("sgd", exact=(0.5, 1.0, 1.5))
    finding = F.learning_rate_headroom(rates(adam, sgd=sgd))
    assert "exact" not in finding.evidence and "exact" not in finding.statement
    assert "(0.02, the frozen threshold of its own state)" in finding.statement
