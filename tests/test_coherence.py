"""Per-example gradients, gradient coherence, noise scales, GSNR and Hessian coherence.

Ground truth: plain per-sample autograd loops, closed forms for linear least squares, exact
per-example Hessians by double-backward rows (oracles.exact_hessian), and exact
expectations over all subsets of a finite population.
"""

import copy
import itertools
import json
import math

import pytest
import torch
from cases import CASES
from oracles import exact_hessian
from state import assert_unchanged, snapshot
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.metrics.coherence import (
    HessianSettings,
    _two_batch_estimates,
    coherence,
    noise_scale,
)
from landscape.operators.per_example import per_example_gradients

# -- oracles -------------------------------------------------------------------------------------


def _samples(batches):
    for batch in batches:
        if isinstance(batch, dict):
            n = batch["labels"].shape[0]
            for i in range(n):
                yield {k: v[i : i + 1] for k, v in batch.items()}
        else:
            n = batch[-1].shape[0]
            for i in range(n):
                yield tuple(t[i : i + 1] for t in batch)


def loop_gradients(model, batches, loss_of_batch, names):
    """One autograd.grad call per sample on an eval-mode deep copy."""
    model = copy.deepcopy(model).eval()
    table = dict(model.named_parameters())
    params = [table[n] for n in names]
    rows, losses = [], []
    with sdpa_kernel(SDPBackend.MATH):
        for sample in _samples(batches):
            loss = loss_of_batch(model, sample)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params)
                    ]
                )
            )
            losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# -- per-example gradients -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_per_example_gradients_match_autograd_loop(case):
    model, batches = case.build()
    for p in model.parameters():  # a pre-existing .grad must survive untouched
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
    before = snapshot(model)
    pe = per_example_gradients(model, batches, case.loss_fn, chunk_size=4)
    G, losses = loop_gradients(model, batches, case.oracle_loss, list(pe.space.names))
    assert pe.gradients.shape == (23, G.shape[1]) and pe.gradients.dtype == torch.float64
    assert pe.vectorized and pe.num_passes == 1
    assert _rel(pe.gradients, G) < 1e-10
    assert torch.allclose(pe.losses, losses, rtol=1e-12, atol=1e-14)
    assert_unchanged(model, before)


def test_per_example_chunking_and_max_samples():
    case = CASES[0]
    model, batches = case.build()
    full = per_example_gradients(model, batches, chunk_size=64)
    part = per_example_gradients(model, batches, chunk_size=3, max_samples=15)
    assert part.num_samples == 15
    assert torch.allclose(part.gradients, full.gradients[:15], rtol=1e-12, atol=1e-14)
    named = full.named()
    assert named["net.0.weight"].shape == (23, 7, 5)
    # The mean of the rows is the gradient of the mean loss.
    mean = full.gradients.mean(0)
    loss = sum(b[1].shape[0] * case.oracle_loss(model, b) for b in batches) / 23
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert torch.allclose(mean, torch.cat([g.reshape(-1) for g in grads]), rtol=1e-10)


class DataDependent(nn.Module):
    """Python control flow on a tensor value: vmap cannot batch it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        if float(x.sum()) > 0:
            return self.lin(x)
        return self.lin(-x) * 2.0


def test_per_example_falls_back_to_loop_when_vmap_fails():
    torch.manual_seed(0)
    model = DataDependent().double()
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0, 0])
    before = snapshot(model)
    pe = per_example_gradients(model, [(X[:4], y[:4]), (X[4:], y[4:])])
    G, _ = loop_gradients(
        model,
        [(X[:4], y[:4]), (X[4:], y[4:])],
        lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        ["lin.weight", "lin.bias"],
    )
    assert not pe.vectorized
    assert _rel(pe.gradients, G) < 1e-12
    assert_unchanged(model, before)


def test_per_example_train_mode_is_an_error():
    model, batches = CASES[1].build()
    with pytest.raises(ValueError, match="no per-example meaning"):
        per_example_gradients(model, batches, mode="train")


def test_per_example_nan_names_the_sample():
    model, batches = CASES[0].build()
    x, y = batches[1]
    x = x.clone()
    x[3, 0] = float("nan")  # sample 10 + 3
    batches = [batches[0], (x, y), batches[2]]
    before = snapshot(model)
    with pytest.raises(FloatingPointError, match="sample 13 "):
        per_example_gradients(model, batches)
    assert_unchanged(model, before)


# -- linear least squares: closed forms ----------------------------------------------------------


def half_mse(model, batch):
    return 0.5 * (model(batch[0]).squeeze(-1) - batch[1]).square().mean()


def _linear(X, y, w):
    model = nn.Linear(X.shape[1], 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w[None])
    return model


def _closed_form(X, y, w):
    r = X @ w - y
    G = r[:, None] * X  # per-example gradients
    m = G.shape[0]
    mean = G.mean(0)
    G2 = float(mean @ mean)
    Eg2 = float(G.square().sum(1).mean())
    trS = float(((G - mean) ** 2).sum() / m)
    return G, G2, Eg2, trS


def test_linear_regression_closed_forms():
    g = torch.Generator().manual_seed(3)
    m, d = 31, 4
    X = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    model = _linear(X, y, w)
    data = [(X[:10], y[:10]), (X[10:], y[10:])]
    before = snapshot(model)
    res = coherence(
        model, data, batch_loss=half_mse, chunk_size=7, hessian=HessianSettings(noise_scale=True)
    )
    assert_unchanged(model, before)
    G, G2, Eg2, trS = _closed_form(X, y, w)
    pe = per_example_gradients(model, data, batch_loss=half_mse)
    assert _rel(pe.gradients, G) < 1e-13

    alpha = G2 / Eg2
    S, S2 = float(G.sum(0).square().sum()), float(G.square().sum())
    assert res.num_samples == m and res.num_params == d
    assert res.alpha == pytest.approx(alpha, rel=1e-12)
    assert res.m_coherence == pytest.approx(S / S2, rel=1e-12)
    assert res.alpha_unbiased == pytest.approx((S - S2) / ((m - 1) * S2), rel=1e-12)
    assert res.b_simple == pytest.approx(trS / G2, rel=1e-12)
    assert res.grad_norm_sq == pytest.approx(G2, rel=1e-12)
    assert res.trace_cov == pytest.approx(trS, rel=1e-12)
    # alpha = 1 / (1 + B_simple) with population moments (and for the unbiased pair).
    assert res.alpha == pytest.approx(1 / (1 + res.b_simple), rel=1e-13)
    assert res.alpha_unbiased == pytest.approx(1 / (1 + res.b_simple_unbiased), rel=1e-12)
    # The unbiased pieces are U-statistics: mean over i != j of g_i.g_j.
    off = (S - S2) / (m * (m - 1))
    assert res.grad_norm_sq_unbiased == pytest.approx(off, rel=1e-12)
    assert res.trace_cov_unbiased == pytest.approx(trS * m / (m - 1), rel=1e-12)

    # GSNR per entry: mean^2 / population variance.
    r = G.mean(0) ** 2 / G.var(0, unbiased=False)
    middle = r.sort().values[d // 2 - 1 : d // 2 + 1]  # d = 4: mean of the middle pair
    assert res.gsnr_median == pytest.approx(float(middle.mean()), rel=1e-10)
    assert res.gsnr_mean == pytest.approx(float(r.mean()), rel=1e-10)
    assert [p.name for p in res.gsnr] == ["weight"] and res.gsnr[0].numel == d

    # B_noise = tr(H Sigma) / G^T H G with H = X^T X / m.
    H = X.T @ X / m
    D = G - G.mean(0)
    trHS = float(torch.einsum("ip,pq,iq->", D, H, D) / m)
    gHg = float(G.mean(0) @ H @ G.mean(0))
    assert res.b_noise == pytest.approx(trHS / gHg, rel=1e-10)
    assert res.num_matvecs == m + 1
    assert res.num_passes >= 3

    out = res.to_json()
    assert '"alpha"' in out
    assert "m-coherence" in res.table() and "B_noise" in res.table()


def test_identical_gradients_are_fully_coherent():
    m = 9
    X = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64).repeat(m, 1)
    y = torch.full((m,), 0.3, dtype=torch.float64)
    model = _linear(X, y, torch.tensor([0.2, 0.1, -0.4], dtype=torch.float64))
    res = coherence(model, (X, y), batch_loss=half_mse)
    assert res.alpha == pytest.approx(1.0, rel=1e-12)
    assert res.m_coherence == pytest.approx(m, rel=1e-12)
    assert res.alpha_unbiased == pytest.approx(1.0, rel=1e-12)
    assert res.b_simple == pytest.approx(0.0, abs=1e-12)
    assert res.gsnr_median == math.inf  # zero variance, non-zero mean
    assert json.loads(res.to_json())["gsnr_median"] == "inf"
    assert type(res).from_dict(res.to_dict()).gsnr_median == math.inf


def test_orthogonal_gradients_have_m_coherence_one():
    m = 6
    X = torch.eye(m, dtype=torch.float64) * torch.arange(1.0, m + 1, dtype=torch.float64)[:, None]
    y = torch.linspace(-1, 1, m, dtype=torch.float64) + 3.0
    model = _linear(X, y, torch.zeros(m, dtype=torch.float64))
    res = coherence(model, (X, y), batch_loss=half_mse)
    assert res.m_coherence == pytest.approx(1.0, rel=1e-12)
    assert res.alpha == pytest.approx(1 / m, rel=1e-12)
    assert res.alpha_unbiased == pytest.approx(0.0, abs=1e-12)


# -- Hessian coherence --------------------------------------------------------------------------


def test_hessian_coherence_identical_rank_one():
    s = 5
    a = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    X = a.repeat(8, 1)
    y = torch.linspace(-1, 1, 8, dtype=torch.float64)
    model = _linear(X, y, torch.zeros(4, dtype=torch.float64))
    res = coherence(
        model, (X, y), batch_loss=half_mse, hessian=HessianSettings(samples=s, method="exact")
    )
    # H_i = a a^T: S = |a|^2 11^T, lambda_max(S) = s |a|^2, lambda_max(H_i) = |a|^2.
    assert res.hessian_coherence == pytest.approx(s, rel=1e-12)
    assert res.hessian_coherence_normalized == pytest.approx(1.0, rel=1e-12)
    assert res.hessian_alignment == pytest.approx(1.0, rel=1e-12)
    assert torch.allclose(res.hessian_top_eigenvalues, torch.full((s,), float(a @ a)).double())
    assert res.num_matvecs == s * 4


def test_hessian_coherence_orthogonal_rank_one():
    s = 4
    X = torch.eye(6, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0, 1.0])[:, None]
    y = torch.ones(6, dtype=torch.float64)
    model = _linear(X, y, torch.zeros(6, dtype=torch.float64))
    res = coherence(
        model, (X, y), batch_loss=half_mse, hessian=HessianSettings(samples=s, method="exact")
    )
    # H_i = c_i^2 e_i e_i^T: S = diag(c_i^2), sigma = 1.
    assert res.hessian_coherence == pytest.approx(1.0, rel=1e-12)
    assert res.hessian_coherence_normalized == pytest.approx(1 / s, rel=1e-12)
    assert res.hessian_alignment == pytest.approx(1 / s, rel=1e-12)


def test_hessian_coherence_identical_higher_rank():
    # Two outputs: H_i = I_2 (x) x x^T has rank 2; identical x gives sigma = s*sqrt(2) > s,
    # while the alignment is 1 for identical Hessians of any rank.
    s = 3
    x = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    X, Y = x.repeat(5, 1), torch.randn(5, 2, dtype=torch.float64)
    model = nn.Linear(3, 2, bias=False).double()
    res = coherence(model, (X, Y), hessian=HessianSettings(samples=s, method="exact"))
    assert res.hessian_coherence == pytest.approx(s * math.sqrt(2), rel=1e-12)
    assert res.hessian_alignment == pytest.approx(1.0, rel=1e-12)


def _exact_per_example_hessians(case, model, batches, names, s):
    Hs = []
    for sample in itertools.islice(_samples(batches), s):
        Hs.append(exact_hessian(model, [sample], case.oracle_loss, names))
    return Hs


def test_hessian_coherence_against_exact_per_example_hessians():
    case = CASES[0]  # tanh MLP, cross-entropy: indefinite, full-rank-ish per-example Hessians
    model, batches = case.build()
    s, k = 4, 64
    before = snapshot(model)
    exact = coherence(model, batches, hessian=HessianSettings(samples=s, method="exact"))
    probes = coherence(model, batches, hessian=HessianSettings(samples=s, probes=k), seed=1)
    assert_unchanged(model, before)
    names = [n for n, _ in model.named_parameters()]
    Hs = _exact_per_example_hessians(case, model, batches, names, s)
    T = torch.stack([torch.stack([(Hi * Hj).sum() for Hj in Hs]) for Hi in Hs])
    tops = torch.stack([torch.linalg.eigvalsh(H)[-1] for H in Hs])
    S = T.clamp(min=0).sqrt()
    sigma = float(torch.linalg.eigvalsh(S)[-1] / tops.max())

    assert torch.allclose(exact.hessian_traces, T, rtol=1e-10, atol=1e-12)
    assert torch.allclose(exact.hessian_top_eigenvalues, tops, rtol=1e-10)
    assert exact.hessian_coherence == pytest.approx(sigma, rel=1e-10)
    assert exact.hessian_coherence_normalized == pytest.approx(sigma / s, rel=1e-10)
    assert exact.num_matvecs == s * Hs[0].shape[0]

    # Probes: E[(H_i z).(H_j z)] = tr(H_i H_j), standard deviation sqrt(2/k) |sym(H_i H_j)|_F.
    se = torch.stack(
        [torch.stack([((Hi @ Hj + Hj @ Hi) / 2).norm() for Hj in Hs]) for Hi in Hs]
    ) * math.sqrt(2 / k)
    assert bool(((probes.hessian_traces - T).abs() <= 4 * se).all())
    assert bool(((probes.hessian_traces - T).abs() > 1e-8).any())  # really estimated
    ratio = probes.hessian_traces_stderr.diagonal() / se.diagonal()
    assert bool(((ratio > 0.5) & (ratio < 2.0)).all())
    assert torch.allclose(probes.hessian_top_eigenvalues, tops, rtol=1e-5)
    assert probes.num_matvecs > s * k


def test_coherence_leaves_batchnorm_model_unchanged():
    case = CASES[1]
    model, batches = case.build()
    model.train()
    before = snapshot(model)
    res = coherence(model, batches, hessian=HessianSettings(noise_scale=True, samples=2, probes=4))
    assert_unchanged(model, before)
    assert math.isfinite(res.alpha) and res.hessian_coherence is not None


# -- noise scale ---------------------------------------------------------------------------------


def _regression_population(n, d=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.ones(d, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    w = 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
    return X, y, w


def test_two_batch_estimator_is_exactly_unbiased_on_a_finite_population():
    n, small, big = 8, 2, 5
    X, y, w = _regression_population(n)
    G, G2, _, trS = _closed_form(X, y, w)

    def expected_sq_norm(B):  # exact expectation over all B-subsets
        vals = [
            float(G[list(c)].mean(0).square().sum()) for c in itertools.combinations(range(n), B)
        ]
        return sum(vals) / len(vals)

    ys, yb = expected_sq_norm(small), expected_sq_norm(big)
    for B, yB in ((small, ys), (big, yb)):
        assert yB == pytest.approx(G2 + trS * (n - B) / (B * (n - 1)), rel=1e-12)
    c = [(n - B) / (B * (n - 1)) for B in (small, big)]
    norm, trace = _two_batch_estimates(
        torch.tensor(ys, dtype=torch.float64), torch.tensor(yb, dtype=torch.float64), *c
    )
    assert float(norm) == pytest.approx(G2, rel=1e-11)
    assert float(trace) == pytest.approx(trS, rel=1e-11)
    # Uncorrected (1/B) formulas: the unbiased estimates of the superpopulation values.
    norm, trace = _two_batch_estimates(
        torch.tensor(ys, dtype=torch.float64),
        torch.tensor(yb, dtype=torch.float64),
        1 / small,
        1 / big,
    )
    assert float(norm) == pytest.approx(G2 - trS / (n - 1), rel=1e-11)
    assert float(trace) == pytest.approx(trS * n / (n - 1), rel=1e-11)


def test_noise_scale_is_unbiased_within_its_standard_error():
    n, small, big = 10, 2, 7
    X, y, w = _regression_population(n, seed=7)
    model = _linear(X, y, w)
    data = [(X[:6], y[:6]), (X[6:], y[6:])]  # batches cut across the two loader batches
    _, G2, _, trS = _closed_form(X, y, w)
    before = snapshot(model)
    ns = noise_scale(
        model, data, batch_loss=half_mse, small_batch=small, big_batch=big, num_pairs=400
    )
    assert_unchanged(model, before)
    assert ns.num_samples == n and ns.num_pairs == 400
    assert abs(ns.grad_norm_sq - G2) <= 4 * ns.grad_norm_sq_stderr
    assert abs(ns.trace_cov - trS) <= 4 * ns.trace_cov_stderr
    # Sensitive enough to see a missing finite-population correction, which would shift the
    # expectation of the |G|^2 estimate by -tr(Sigma)/(n-1).
    assert trS / (n - 1) > 10 * ns.grad_norm_sq_stderr
    assert ns.b_simple == pytest.approx(ns.trace_cov / ns.grad_norm_sq, rel=1e-12)
    assert ns.critical_batch == ns.b_simple
    b = trS / G2
    assert abs(ns.b_simple - b) <= 4 * ns.b_simple_stderr
    # Deterministic given the seed.
    first = noise_scale(
        model, data, batch_loss=half_mse, small_batch=small, big_batch=big, num_pairs=5
    )
    assert torch.equal(first.small_sq_norms, ns.small_sq_norms[:5])
    assert torch.equal(first.big_sq_norms, ns.big_sq_norms[:5])
    json.loads(ns.to_json())
    assert "B_simple" in ns.table()


def test_noise_scale_without_correction_targets_the_unbiased_values():
    n, small, big = 10, 2, 7
    X, y, w = _regression_population(n, seed=7)
    model = _linear(X, y, w)
    ns = noise_scale(
        model,
        (X, y),
        batch_loss=half_mse,
        small_batch=small,
        big_batch=big,
        num_pairs=400,
        finite_population=False,
    )
    res = coherence(model, (X, y), batch_loss=half_mse)
    assert abs(ns.grad_norm_sq - res.grad_norm_sq_unbiased) <= 4 * ns.grad_norm_sq_stderr
    assert abs(ns.trace_cov - res.trace_cov_unbiased) <= 4 * ns.trace_cov_stderr
    assert abs(ns.grad_norm_sq - res.grad_norm_sq) > 5 * ns.grad_norm_sq_stderr


def test_noise_scale_argument_errors():
    X, y, w = _regression_population(6)
    model = _linear(X, y, w)
    with pytest.raises(ValueError, match="smaller than big_batch"):
        noise_scale(model, (X, y), small_batch=4, big_batch=4)
    with pytest.raises(ValueError, match="exceeds"):
        noise_scale(model, (X, y), small_batch=2, big_batch=7)
    with pytest.raises(ValueError, match="num_pairs"):
        noise_scale(model, (X, y), small_batch=2, big_batch=4, num_pairs=1)
    with pytest.raises(ValueError, match="hessian_samples"):
        coherence(model, (X, y), batch_loss=half_mse, hessian=HessianSettings(samples=7))
