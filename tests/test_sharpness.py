"""Sharpness and flatness measures against closed forms, exact Hessians and rescaling invariance.

Ground truth:
- a least-squares model whose mean loss is exactly L(w) = 1/2 (w - w*)^T A (w - w*) with a
  chosen spectrum of A (float64, uneven batches): SAM's maximum is the trust-region solution
  (1/2 rho^2 lambda_max(A) at the minimum), GAM's one-step value and PAC-Bayes' sigma have
  closed forms given the same noise draws;
- exact Hessians (tests/oracles.py) for the spectral measures, LayerNorm attention included;
- Dinh et al.'s function-preserving rescaling of a bias-free ReLU net for the invariance flags.
"""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from cases import CASES, cached_exact_hessian
from oracles import full_loss
from scipy.optimize import brentq
from state import assert_unchanged, snapshot
from torch import nn

from landscape.linalg._random import gaussian
from landscape.metrics.sharpness import MEASURES, SharpnessSettings, sharpness

DT = torch.float64
SPECTRUM = torch.tensor([5.0, 1.5, 1.0, 0.7, 0.3, 0.1], dtype=DT)  # lambda_2/lambda_1 = 0.3
SIZES = (10, 10, 4)


def quadratic(offset=None, seed=0):
    """nn.Linear least squares with Hessian exactly A = Q diag(SPECTRUM) Q^T.

    The targets are the model's own outputs at w*, batch by batch, so the residual (and the
    gradient) at w* is exactly zero. ``offset`` moves the model to w* + offset.
    """
    g = torch.Generator().manual_seed(seed)
    P, N = SPECTRUM.numel(), sum(SIZES)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=DT))
    R, _ = torch.linalg.qr(torch.randn(N, P, generator=g, dtype=DT))
    X = math.sqrt(N / 2) * R @ torch.diag(SPECTRUM.sqrt()) @ Q.T  # (2/N) X^T X = A
    A = Q @ torch.diag(SPECTRUM) @ Q.T
    model = nn.Linear(P, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, P, generator=g, dtype=DT))
    batches, start = [], 0
    with torch.no_grad():
        for n in SIZES:
            x = X[start : start + n]
            batches.append((x, model(x)))
            start += n
    if offset is not None:
        with torch.no_grad():
            model.weight.add_(offset.reshape(1, -1))
    return model, batches, A


def _off_minimum():
    """The quadratic moved off its minimum by a fixed offset: offset, model, batches and A."""
    offset = 0.3 * torch.randn(6, generator=torch.Generator().manual_seed(5), dtype=DT)
    return (offset, *quadratic(offset))


def _mse_sharpness(model, data, measures, **settings):
    """``sharpness`` of the mean squared error with these ``SharpnessSettings``."""
    return sharpness(
        model, data, nn.MSELoss(), measures=measures, settings=SharpnessSettings(**settings)
    )


def trust_region(g, A, rho):
    """max over ||e|| <= rho of g^T e + 1/2 e^T A e (the easy case: g not orthogonal to v_1)."""
    lam, V = torch.linalg.eigh(A)
    gt = (V.T @ g).numpy()
    lam = lam.numpy()

    def radius(mu):
        return np.linalg.norm(gt / (mu - lam)) - rho

    top = lam[-1]
    mu = brentq(radius, top + 1e-12, top + np.linalg.norm(gt) / rho + 1.0, xtol=1e-15, rtol=1e-15)
    e = V @ torch.tensor(gt / (mu - lam), dtype=DT)
    return float(g @ e + 0.5 * e @ A @ e)


def noise_draws(result, name, P):
    seeds = result[name].details["noise_seeds"]
    return [
        gaussian(P, 1, torch.Generator().manual_seed(s), dtype=DT, device="cpu")[:, 0]
        for s in seeds
    ]


# -- closed forms on the quadratic --------------------------------------------------------------


def test_sam_at_the_minimum_is_half_rho_squared_lambda_max():
    model, batches, _ = quadratic()
    lam = float(SPECTRUM.max())
    r = _mse_sharpness(model, batches, ("sam", "gam"), rho=0.05, gam_steps=10)
    sam = r["sam"]
    assert r.loss == 0.0
    assert sam.details["start"] == "random (zero gradient)" and sam.details["one_step"] == 0.0
    assert sam.value == pytest.approx(0.5 * 0.05**2 * lam, rel=1e-6)
    assert sam.num_passes == 10 + 2 and sam.num_matvecs == 0
    # GAM: max gradient norm in the ball is rho * lambda_max, so R = rho^2 lambda_max.
    gam = r["gam"]
    assert gam.details["grad_norm"] == 0.0
    assert gam.value == pytest.approx(0.05**2 * lam, rel=1e-6)
    assert gam.num_matvecs == 9 and gam.num_passes == 1 + 10 + 9  # random first step: no HVP
    one = _mse_sharpness(model, batches, "gam", rho=0.05)["gam"]
    assert 0 < one.value <= 0.05**2 * lam * (1 + 1e-12)


def test_sam_away_from_the_minimum_solves_the_trust_region_problem():
    offset, model, batches, A = _off_minimum()
    g = A @ offset
    rho = 0.2
    exact = trust_region(g, A, rho)
    r = _mse_sharpness(model, batches, "sam", rho=rho, ascent_steps=30)
    sam = r["sam"]
    assert r.loss == pytest.approx(0.5 * float(offset @ A @ offset), rel=1e-12)
    e = rho * g / g.norm()
    assert sam.details["one_step"] == pytest.approx(float(g @ e + 0.5 * e @ A @ e), rel=1e-10)
    assert sam.details["one_step"] <= sam.value <= exact * (1 + 1e-12)
    assert sam.value == pytest.approx(exact, rel=1e-9)
    assert sam.details["one_step"] < exact * (1 - 1e-4)  # the ascent had something to find
    zero = _mse_sharpness(model, batches, "sam", rho=rho, ascent_steps=0)
    assert zero["sam"].value == zero["sam"].details["one_step"] == sam.details["one_step"]
    assert zero["sam"].num_passes == 2


def test_asam_one_step_and_ascent_match_the_transformed_trust_region():
    offset, model, batches, A = _off_minimum()
    w = model.weight.detach().reshape(-1)
    g = A @ offset
    eta, rho = 0.01, 0.5
    T = w.abs() + eta
    r = _mse_sharpness(model, batches, "asam", asam_rho=rho, ascent_steps=40)
    asam = r["asam"]
    e = rho * T**2 * g / (T * g).norm()  # Kwon et al.'s first-order perturbation
    assert asam.details["one_step"] == pytest.approx(float(g @ e + 0.5 * e @ A @ e), rel=1e-10)
    exact = trust_region(T * g, T[:, None] * A * T[None, :], rho)  # e = T e~, ||e~|| <= rho
    assert asam.value == pytest.approx(exact, rel=1e-8)
    assert asam.details["normalized_params"] == ["weight"]
    assert asam.invariant and "eta0=0.01" in asam.invariance


def test_gam_one_step_closed_form_away_from_the_minimum():
    offset, model, batches, A = _off_minimum()
    g = A @ offset
    rho = 0.1
    r = _mse_sharpness(model, batches, "gam", rho=rho)["gam"]
    delta = rho * (A @ g) / (A @ g).norm()  # one HVP: the ascent direction of ||grad L||
    expected = rho * max(float(g.norm()), float((g + A @ delta).norm()))
    assert r.value == pytest.approx(expected, rel=1e-12)
    assert r.num_matvecs == 1 and r.num_passes == 3
    assert r.details["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-12)


def test_pacbayes_sigma_from_the_same_noise_draws():
    model, batches, A = quadratic()
    w = model.weight.detach().reshape(-1)
    delta, eps = 0.1, 1e-3
    r = _mse_sharpness(
        model,
        batches,
        ("pacbayes", "pacbayes_mag"),
        pacbayes_target=delta,
        pacbayes_samples=8,
        pacbayes_steps=25,
        pacbayes_eps=eps,
    )
    # At the minimum, E_k[L(w + u_k)] - L(w) = 1/2 mean_k u_k^T A u_k exactly.
    Z = noise_draws(r, "pacbayes", 6)
    q = sum(float(z @ A @ z) for z in Z) / len(Z)
    sigma = math.sqrt(2 * delta / q)
    assert r["pacbayes"].details["sigma"] == pytest.approx(sigma, rel=1e-6)
    assert r["pacbayes"].details["sigma"] <= sigma * (1 + 1e-12)  # the end that satisfies it
    assert r["pacbayes"].value == pytest.approx(1 / sigma**2, rel=2e-6)
    assert r["pacbayes"].num_passes == 8 * r["pacbayes"].details["loss_evaluations"]

    Z = noise_draws(r, "pacbayes_mag", 6)

    def increase(s):
        std = torch.sqrt(s**2 * w**2 + eps**2)
        return sum(0.5 * float((std * z) @ A @ (std * z)) for z in Z) / len(Z) - delta

    sigma_mag = brentq(increase, 1e-6, 100.0, xtol=1e-14, rtol=1e-14)
    assert r["pacbayes_mag"].details["sigma"] == pytest.approx(sigma_mag, rel=1e-6)
    assert r["pacbayes_mag"].value == pytest.approx(1 / sigma_mag**2, rel=2e-6)


def test_pacbayes_matches_trace_formula_in_expectation():
    # sigma = sqrt(2 delta / tr A) up to Monte-Carlo error: Var(z^T A z) = 2 ||A||_F^2.
    model, batches, A = quadratic()
    K = 200
    r = _mse_sharpness(model, batches, "pacbayes", pacbayes_samples=K)
    rel_sd = 0.5 * math.sqrt(2 * float((A * A).sum()) / K) / float(A.trace())
    sigma = math.sqrt(2 * 0.1 / float(A.trace()))
    assert abs(r["pacbayes"].details["sigma"] / sigma - 1) < 4 * rel_sd + 1e-4


def test_m_sharpness_averages_subset_maxima():
    model, batches, _ = quadratic()
    m = 4
    r = _mse_sharpness(model, batches, "sam", rho=0.1, m=m, ascent_steps=300)
    expected, N = 0.0, sum(SIZES)
    for x, _y in batches:
        for start in range(0, x.shape[0], m):
            xs = x[start : start + m]
            A_s = 2 * xs.T @ xs / xs.shape[0]  # each subset is also at its minimum
            expected += xs.shape[0] / N * 0.5 * 0.1**2 * float(torch.linalg.eigvalsh(A_s)[-1])
    sam = r["sam"]
    assert sam.details["num_subsets"] == 7  # 10 -> 4+4+2 twice, then 4: subsets stay in batches
    assert sam.details["random_starts"] == 7
    assert sam.value == pytest.approx(expected, rel=1e-6)
    assert sam.num_passes == 300 + 2
    merged = tuple(torch.cat([b[i] for b in batches]) for i in (0, 1))
    whole = _mse_sharpness(model, merged, "sam", rho=0.1, ascent_steps=3)
    one_subset = _mse_sharpness(model, merged, "sam", rho=0.1, ascent_steps=3, m=sum(SIZES))
    assert one_subset["sam"].value == pytest.approx(whole["sam"].value, rel=1e-12)


# -- spectral measures vs exact Hessians --------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=["mlp_tanh", "layernorm_attention"])
def test_spectral_measures_match_exact_hessian(case):
    model, batches = case.build()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    H = cached_exact_hessian(case, names)
    P = H.shape[0]
    r = sharpness(
        model,
        batches,
        measures=("lambda_max", "trace", "frobenius"),
        # Hutch++'s sketch then spans the space: exact
        settings=SharpnessSettings(lanczos_tol=1e-9, trace_matvecs=3 * P, frobenius_matvecs=200),
    )
    assert r.loss == pytest.approx(full_loss(model, batches, case.oracle_loss).item(), rel=1e-12)
    assert r["lambda_max"].value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-7)
    assert r["lambda_max"].details["converged"]
    assert r["trace"].value == pytest.approx(float(H.trace()), rel=1e-9)
    exact_fro = float(torch.linalg.matrix_norm(H))
    assert abs(r["frobenius"].value - exact_fro) <= 5 * r["frobenius"].stderr
    assert r["frobenius"].num_matvecs == 200 and r["frobenius"].num_passes == 1
    for name in ("lambda_max", "trace", "frobenius"):
        assert not r[name].invariant and "Dinh" in r[name].invariance


# -- Dinh et al. rescaling ----------------------------------------------------------------------


def _relu_pair(alpha=10.0):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    model = model.to(DT)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[0].weight.mul_(alpha)
        scaled[2].weight.div_(alpha)
    g = torch.Generator().manual_seed(4)
    X = torch.randn(40, 5, generator=g, dtype=DT)
    y = torch.randint(0, 3, (40,), generator=g)
    batches = [(X[:16], y[:16]), (X[16:32], y[16:32]), (X[32:], y[32:])]
    assert torch.allclose(model(X), scaled(X), rtol=1e-13, atol=1e-13)  # the same function
    return model, scaled, batches


def test_rescaling_changes_non_invariant_measures_but_not_invariant_ones():
    model, scaled, batches = _relu_pair()
    options = {
        "measures": ("lambda_max", "trace", "sam", "gam", "pacbayes", "asam", "pacbayes_mag"),
        "settings": SharpnessSettings(
            asam_eta=0.0,  # exact invariance: T_w = diag(|w|)
            pacbayes_eps=0.0,  # exact invariance: std_j = sigma' |w_j|
            pacbayes_samples=4,
            trace_matvecs=3 * 64,
        ),
    }
    a = sharpness(model, batches, **options)
    b = sharpness(scaled, batches, **options)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)
    # H' = D^-1 H D^-1 with D = diag(10 I, I/10): the layer-2 block grows 100x.
    for name in ("lambda_max", "trace", "sam", "gam", "pacbayes"):
        ratio = b[name].value / a[name].value
        assert ratio > 5 or ratio < 0.2, (name, ratio)
        assert not a[name].invariant
    # The invariant measures agree to rounding: every loss they evaluate is the same number
    # (the perturbation rescales with the weights), so only float64 round-off differs.
    for name in ("asam", "pacbayes_mag"):
        assert a[name].invariant
        assert b[name].value == pytest.approx(a[name].value, rel=1e-9), name
    assert b["asam"].details["one_step"] == pytest.approx(a["asam"].details["one_step"], rel=1e-9)
    assert "exactly" in a["asam"].invariance and "exactly" in a["pacbayes_mag"].invariance


def test_default_eta_and_eps_are_approximately_invariant():
    # With eta0 = 0.01 and eps = 1e-3 the invariance is only approximate: the rescaled layer-2
    # weights (|w|/10 ~ 0.03) are comparable to eta0, so ASAM moves by ~25% (measured), while
    # eps = 1e-3 is far below sigma'|w_j| and moves the magnitude-aware sigma by ~2e-4. Both
    # stay far from SAM's 10x change at the same function.
    model, scaled, batches = _relu_pair()
    options = {
        "measures": ("sam", "asam", "pacbayes_mag"),
        "settings": SharpnessSettings(pacbayes_samples=4),
    }
    a = sharpness(model, batches, **options)
    b = sharpness(scaled, batches, **options)

    def change(name):
        return abs(math.log(b[name].value / a[name].value))

    assert change("sam") > 2.0
    assert 1e-3 < change("asam") < 0.3
    assert 0 < change("pacbayes_mag") < 1e-3


# -- hygiene, determinism, output, errors -------------------------------------------------------

CHEAP_SETTINGS = SharpnessSettings(
    ascent_steps=2,
    gam_steps=2,
    pacbayes_samples=2,
    pacbayes_steps=3,
    trace_matvecs=6,
    frobenius_matvecs=3,
    lanczos_tol=1e-3,
)
CHEAP = {"settings": CHEAP_SETTINGS}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model_unchanged_and_output_complete(case):
    model, batches = case.build()
    model.train()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
            break
    before = snapshot(model)
    r = sharpness(model, batches, settings=dataclasses.replace(CHEAP_SETTINGS, m=7))
    assert_unchanged(model, before)
    assert list(r) == list(MEASURES)
    assert all(math.isfinite(r[name].value) for name in MEASURES)
    assert r.weight_norm == pytest.approx(
        math.sqrt(
            sum(
                float((p.detach().double() ** 2).sum())
                for p in model.parameters()
                if p.requires_grad
            )
        ),
        rel=1e-12,
    )
    data = json.loads(r.to_json())
    assert data["measures"]["asam"]["invariant"] is True
    assert data["measures"]["sam"]["invariance"].startswith("not invariant")
    table = r.table().splitlines()
    assert len(table) == 2 + len(MEASURES) and "invariance" in table[1]
    for name, line in zip(MEASURES, table[2:]):
        assert line.startswith(name) and r[name].invariance in line
        assert (" yes " in line) == r[name].invariant


def test_deterministic_and_measures_independent():
    model, batches = CASES[0].build()
    a = sharpness(model, batches, **CHEAP).to_dict()
    b = sharpness(model, batches, **CHEAP).to_dict()

    def strip(d):
        return {k: {x: y for x, y in v.items() if x != "seconds"} for k, v in d["measures"].items()}

    assert strip(a) == strip(b)
    alone = sharpness(model, batches, measures=["pacbayes", "sam"], **CHEAP).to_dict()
    assert strip(alone)["pacbayes"] == strip(a)["pacbayes"]
    assert strip(alone)["sam"] == strip(a)["sam"]
    other = sharpness(model, batches, measures="pacbayes", seed=1, **CHEAP)
    assert other["pacbayes"].value != a["measures"]["pacbayes"]["value"]
    gen = sharpness(model, batches, measures="pacbayes", seed=torch.Generator().manual_seed(1))
    assert math.isfinite(gen["pacbayes"].value)


def test_progress_bar_and_params_subset(capsys):
    model, batches = CASES[0].build()
    r = sharpness(model, batches, params="net.2", measures=("trace", "sam"), progress=True, **CHEAP)
    assert r.num_params == 7 * 3 + 3
    assert r["trace"].value > 0


def test_errors():
    model, batches = CASES[0].build()
    with pytest.raises(ValueError, match=r"unknown sharpness measure.*'sharp'.*valid measures"):
        sharpness(model, batches, measures=("sam", "sharp"))
    with pytest.raises(ValueError, match="empty"):
        sharpness(model, batches, measures=())
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rho must be positive"):
            sharpness(model, batches, measures="sam", settings=SharpnessSettings(rho=bad))
    with pytest.raises(ValueError, match="asam_rho must be positive"):
        sharpness(model, batches, measures="asam", settings=SharpnessSettings(asam_rho=0))
    with pytest.raises(TypeError, match="rho must be a number"):
        sharpness(model, batches, settings=SharpnessSettings(rho="0.1"))
    with pytest.raises(ValueError, match="pacbayes_target must be positive"):
        sharpness(model, batches, settings=SharpnessSettings(pacbayes_target=0))
    with pytest.raises(ValueError, match="asam_eta must be non-negative"):
        sharpness(model, batches, settings=SharpnessSettings(asam_eta=-1e-3))
    with pytest.raises(ValueError, match="m must be at least 1"):
        sharpness(model, batches, settings=SharpnessSettings(m=0))
    with pytest.raises(ValueError, match="ascent_steps must be at least 0"):
        sharpness(model, batches, settings=SharpnessSettings(ascent_steps=-1))
    with pytest.raises(TypeError, match="pacbayes_samples must be an int"):
        sharpness(model, batches, settings=SharpnessSettings(pacbayes_samples=2.5))
    with pytest.raises(ValueError, match="asam_normalize"):
        sharpness(model, batches, settings=SharpnessSettings(asam_normalize="filters"))
    bad = [(x.clone(), y) for x, y in batches]
    bad[1][0][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss at the model's parameters is nan"):
        sharpness(model, bad, measures="sam")
    r = sharpness(model, batches, measures="sam", **CHEAP)
    with pytest.raises(KeyError, match="not computed"):
        r["asam"]


def test_m_subsets_of_dict_batches_and_sample_weighting():
    case = CASES[5]  # dict batches, the model returns its own loss
    model, batches = case.build()
    r = sharpness(model, batches, measures="sam", settings=SharpnessSettings(m=3, ascent_steps=0))
    assert r["sam"].details["num_subsets"] == 4 + 4 + 1
    assert r.loss == pytest.approx(full_loss(model, batches, case.oracle_loss).item(), rel=1e-12)
    merged = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    assert sharpness(model, merged, measures="sam").loss == pytest.approx(r.loss, rel=1e-12)


def test_asam_warns_when_nothing_is_normalized():
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=DT))

        def forward(self, x):
            return x @ self.w[:, None]

    model = Scalar()
    x = torch.randn(8, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    data = (x, torch.zeros(8, 1, dtype=DT))
    with pytest.warns(UserWarning, match="reduces to SAM"):
        r = sharpness(
            model, data, measures="asam", settings=SharpnessSettings(asam_rho=0.05, ascent_steps=3)
        )
    same = sharpness(
        model, data, measures="sam", settings=SharpnessSettings(rho=0.05, ascent_steps=3)
    )
    assert r["asam"].value == pytest.approx(same["sam"].value, rel=1e-12)
    everything = sharpness(
        model, data, measures="asam", settings=SharpnessSettings(asam_normalize="all")
    )
    assert everything["asam"].details["normalized_params"] == ["w"]
    assert "biases" not in everything["asam"].invariance
