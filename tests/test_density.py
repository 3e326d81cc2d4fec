"""Stochastic Lanczos quadrature densities: quadrature identities, normalization, outliers."""

import pytest
import torch
from cases import CASES, cached_exact_hessian

import landscape as ls
from landscape.linalg._random import as_generator, rademacher


def _matrix(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return ((Q * eigs) @ Q.T + ((Q * eigs) @ Q.T).T) / 2


def _probes(n, num, seed=0):
    # SLQ draws its probes one after the other (probe-major), so groups of any size agree
    signs = rademacher(num, n, as_generator(seed), dtype=torch.float64, device=torch.device("cpu"))
    return signs.T.contiguous()


def test_weights_sum_to_one_and_density_integrates_to_one():
    eigs = torch.cat(
        [torch.tensor([9.0, 7.0, 6.0]), torch.rand(197, dtype=torch.float64) - 0.2]
    ).double()
    d = ls.spectral_density(_matrix(eigs), num_probes=6, num_steps=30)
    assert torch.allclose(d.weights.sum(1), torch.ones(6, dtype=torch.float64), atol=1e-12)
    assert abs(float(torch.trapezoid(d.density, d.grid)) - 1.0) < 1e-6
    assert d.nodes.shape == (6, 30) and d.num_passes == 30 and d.num_matvecs == 180


@pytest.mark.parametrize("reorthogonalize", [True, False])
def test_quadrature_moments_equal_probe_quadratic_forms(reorthogonalize):
    # Gauss quadrature with m nodes is exact for polynomials of degree <= 2m - 1:
    # sum_j tau_j theta_j^p = v^T A^p v for the normalized probe v, p <= 2m - 1.
    eigs = torch.cat([torch.tensor([5.0, 4.0]), torch.randn(148, dtype=torch.float64)]).double()
    A = _matrix(eigs, seed=2)
    d = ls.spectral_density(A, num_probes=5, num_steps=12, seed=3, reorthogonalize=reorthogonalize)
    Z = _probes(150, 5, seed=3)
    V = Z / Z.norm(dim=0)
    for p in (1, 2, 3, 7):
        direct = (V * (torch.linalg.matrix_power(A, p) @ V)).sum(0).mean()
        assert abs(d.moment(p) - float(direct)) <= 1e-8 * max(1.0, abs(float(direct)))
    # and the first moment is exactly a Hutchinson estimate of tr(A) / P
    assert abs(d.moment(1) * 150 - float((Z * (A @ Z)).sum(0).mean())) < 1e-8


def test_exact_for_a_diagonal_matrix_trace():
    eigs = torch.linspace(-1, 3, 64, dtype=torch.float64)
    d = ls.spectral_density(torch.diag(eigs), num_probes=3, num_steps=10)
    assert abs(d.moment(1) * 64 - float(eigs.sum())) < 1e-9


def test_outliers_and_bulk_edge():
    outliers = torch.tensor([30.0, 25.0, 20.0], dtype=torch.float64)
    bulk = torch.rand(397, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2.0
    d = ls.spectral_density(_matrix(torch.cat([outliers, bulk])), num_probes=4, num_steps=60)
    assert d.num_outliers == 3
    assert torch.allclose(d.outliers, outliers, rtol=1e-8)
    # the top bulk Ritz value: below the bulk's top eigenvalue (interlacing), and near it
    assert float(bulk.max()) * (1 - 3e-3) <= d.bulk_edge <= float(bulk.max()) + 1e-9
    assert d.gap_ratio > 5


def test_no_clear_gap_is_reported_as_such():
    eigs = torch.linspace(0.1, 10.0, 300, dtype=torch.float64)
    d = ls.spectral_density(_matrix(eigs), num_probes=4, num_steps=40)
    assert d.num_outliers == 0 and d.bulk_edge is None
    assert d.gap_ratio < 1.3


def _papyan_15a(n=2000, seed=0):
    # Papyan (2020), Fig. 15a: Y = diag(5, 4, 3, 0, ...) + Z Z^T / n, Z i.i.d. N(0, 1).
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, n, generator=g, dtype=torch.float64)
    Y = Z @ Z.T / n
    Y[0, 0] += 5.0
    Y[1, 1] += 4.0
    Y[2, 2] += 3.0
    return Y


def test_papyan_outliers_near_the_bulk_edge_are_found():
    # The ratio rule misses the third outlier: 4.469 / 3.957 = 1.13 < 1.3. The exact top
    # eigenvalues of this sample are the 6.230, 5.328, 4.469 and edge 3.957.
    Y = _papyan_15a()
    exact = torch.linalg.eigvalsh(Y).flip(0)
    d = ls.spectral_density(Y, num_probes=10, num_steps=80)
    assert d.num_outliers == 3
    assert torch.allclose(d.outliers, exact[:3], rtol=1e-8)
    assert d.bulk_edge == pytest.approx(float(exact[3]), rel=1e-3)
    assert d.outlier_separations.shape == (3,)
    assert float(d.outlier_separations.min()) > 3.0  # 6.6 sigma for the third
    assert find_ratio_rule_count(exact[:12]) < 3


def find_ratio_rule_count(top):
    return ls.find_outliers(top, gap=1.3)[0].numel()


@pytest.mark.parametrize("theta, expected", [(0.5, 0), (0.9, 0), (2.0, 1), (3.0, 1)])
def test_spiked_wigner_outliers_appear_exactly_above_the_bbp_threshold(theta, expected):
    # W GOE with semicircle on [-2, 2]; W + theta u u^T has an outlier at theta + 1/theta
    # exactly when theta > 1 (Baik, Ben Arous, Peche 2005; Peche 2006).
    n = 1000
    g = torch.Generator().manual_seed(int(theta * 10))
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = (W + W.T) / (2 * n) ** 0.5
    u = torch.randn(n, generator=g, dtype=torch.float64)
    A = W + theta * torch.outer(u, u) / u.norm() ** 2
    d = ls.spectral_density(A, num_probes=10, num_steps=80)
    assert d.num_outliers == expected
    if expected:
        assert float(d.outliers[0]) == pytest.approx(theta + 1 / theta, abs=0.05)
        assert d.bulk_edge == pytest.approx(2.0, abs=0.05)
    else:
        assert d.bulk_edge is None


def test_split_outliers_needs_a_gap_wider_than_the_bulk_spacing():
    # A sparse but continuous tail: every gap is many kernel widths, none stands out (and
    # no ratio exceeds 1.3).
    ritz = torch.tensor([10.0, 8.7, 7.6, 6.6, 5.8, 5.1, 4.5, 4.0, 3.6])
    out, sep, edge, _ = ls.split_outliers(ritz, torch.ones(9, dtype=torch.bool), 0.1)
    assert out.numel() == 0 and sep.numel() == 0 and edge is None
    # Unconverged values are never outliers.
    ritz = torch.tensor([9.0, 3.0, 2.9, 2.8, 2.7])
    converged = torch.tensor([False, True, True, True, True])
    assert ls.split_outliers(ritz, converged, 0.1)[2] is None
    assert ls.split_outliers(ritz, torch.ones(5, dtype=torch.bool), 0.1)[0].tolist() == [9.0]


def test_log_density_of_a_heavy_tailed_spectrum():
    # Papyan (2020), Fig. 15b: Y = Z Z^T / 1000, Z in R^{500 x 1000} i.i.d. Pareto(alpha=1);
    # its eigenvalues span six decades. The CDF of log10(lambda) from the log-scale density
    # against the exact one (measured Kolmogorov distance 0.03).
    import numpy as np

    rng = np.random.default_rng(0)
    Z = torch.tensor(rng.pareto(1.0, (500, 1000)) + 1.0)
    Y = Z @ Z.T / 1000
    exact = torch.log10(torch.linalg.eigvalsh(Y))
    assert float(exact.max() - exact.min()) > 5
    d = ls.spectral_density(Y, num_probes=10, num_steps=80)
    u, psi, below = d.log_density()
    assert below == 0.0
    assert float(torch.trapezoid(psi, u)) == pytest.approx(1.0, abs=1e-6)
    cdf = torch.cumulative_trapezoid(psi, u)
    empirical = (exact[None, :] <= u[1:, None]).double().mean(1)
    assert float((cdf - empirical).abs().max()) < 0.1
    # On a linear axis the kernel is far wider than the typical eigenvalue: no shape.
    assert d.sigma > 100 * float(10 ** exact.median())


def test_default_sigma_and_custom_grid():
    eigs = torch.linspace(0.0, 8.0, 100, dtype=torch.float64)
    d = ls.spectral_density(torch.diag(eigs), num_probes=2, num_steps=16)
    assert d.sigma == pytest.approx((float(d.nodes.max()) - float(d.nodes.min())) / 16)
    grid = torch.linspace(-1, 9, 11)
    d2 = ls.spectral_density(torch.diag(eigs), num_probes=2, num_steps=16, sigma=0.5, grid=grid)
    assert d2.density.shape == (11,) and d2.sigma == 0.5


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=lambda c: c.id)
def test_model_hessian_density_moments(case):
    # BatchNorm and LayerNorm models: quadrature moments against the exact Hessian.
    model, batches = case.build()
    H = ls.hessian(model, batches, case.loss_fn)
    exact = cached_exact_hessian(case, H.param_names)
    d = ls.spectral_density(H, num_probes=4, num_steps=20, seed=1)
    Z = _probes(H.shape[0], 4, seed=1)
    V = Z / Z.norm(dim=0)
    for p in (1, 2):
        direct = float((V * (torch.linalg.matrix_power(exact, p) @ V)).sum(0).mean())
        assert abs(d.moment(p) - direct) <= 1e-8 * max(1e-3, abs(direct))
    assert H.num_passes == 20


def test_seed_determinism():
    A = _matrix(torch.linspace(-1, 4, 80, dtype=torch.float64))
    a = ls.spectral_density(A, num_probes=3, num_steps=10, seed=5)
    b = ls.spectral_density(A, num_probes=3, num_steps=10, seed=5)
    c = ls.spectral_density(A, num_probes=3, num_steps=10, seed=6)
    assert torch.equal(a.density, b.density) and not torch.equal(a.density, c.density)


def test_errors():
    A = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_probes"):
        ls.spectral_density(A, num_probes=0)
    with pytest.raises(ValueError, match="sigma"):
        ls.spectral_density(A, sigma=-1.0)
    with pytest.raises(ValueError, match="gap"):
        ls.spectral_density(A, gap=1.0)
    with pytest.raises(ValueError, match="separation"):
        ls.spectral_density(A, separation=0.0)
    with pytest.raises(ValueError, match="contrast"):
        ls.spectral_density(A, contrast=1.0)


def test_negative_eigenvalue_fraction_and_mass():
    eigs = torch.cat([torch.full((20,), -0.5), torch.full((80,), 1.0)]).double()
    d = ls.spectral_density(_matrix(eigs, seed=4), num_probes=50, num_steps=10)
    # exact: 20% of eigenvalues negative, mass 10 / (10 + 80) = 0.111
    assert d.negative_fraction == pytest.approx(0.2, abs=0.05)
    assert d.negative_mass_ratio == pytest.approx(10 / 90, abs=0.03)
