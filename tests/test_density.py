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
    return rademacher(n, num, as_generator(seed), dtype=torch.float64, device=torch.device("cpu"))


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
    assert float(bulk.max()) < d.bulk_edge < 20.0
    assert d.gap_ratio > 5


def test_no_clear_gap_is_reported_as_such():
    eigs = torch.linspace(0.1, 10.0, 300, dtype=torch.float64)
    d = ls.spectral_density(_matrix(eigs), num_probes=4, num_steps=40)
    assert d.num_outliers == 0 and d.bulk_edge is None
    assert d.gap_ratio < 1.3


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


def test_negative_eigenvalue_fraction_and_mass():
    eigs = torch.cat([torch.full((20,), -0.5), torch.full((80,), 1.0)]).double()
    d = ls.spectral_density(_matrix(eigs, seed=4), num_probes=50, num_steps=10)
    # exact: 20% of eigenvalues negative, mass 10 / (10 + 80) = 0.111
    assert d.negative_fraction == pytest.approx(0.2, abs=0.05)
    assert d.negative_mass_ratio == pytest.approx(10 / 90, abs=0.03)
