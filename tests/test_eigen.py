"""Extreme eigenpairs against exact eigendecompositions (dense known spectra and model Hessians)."""

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from cases import CASES, cached_exact_hessian

import landscape as ls
from landscape.linalg.eigen import eigenvalues, power_iteration


def _matrix(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = (Q * torch.as_tensor(eigs, dtype=torch.float64)) @ Q.T
    return (A + A.T) / 2


def _spectrum(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(n - 13, generator=g, dtype=torch.float64) * 0.6 - 0.1  # bulk with negatives
    outliers = torch.tensor([40.0, 31.0, 30.0, 22.0, 15.0, 12.5, 10.0, 8.0], dtype=torch.float64)
    negative = torch.tensor([-3.0, -2.0, -1.5, -1.2, -1.0], dtype=torch.float64)
    return torch.cat([outliers, bulk, negative])


def _expected(exact, which, k):
    desc = torch.sort(exact, descending=True).values
    asc = torch.sort(exact).values
    if which == "largest":
        return desc[:k]
    if which == "smallest":
        return asc[:k]
    if which == "both":
        return torch.cat([desc[:k], asc[:k].flip(0)])
    return exact[torch.argsort(exact.abs(), descending=True)][:k]


@pytest.mark.parametrize("which", ["largest", "smallest", "both", "magnitude"])
@pytest.mark.parametrize("block_size", [1, 3])
def test_known_spectrum(which, block_size):
    eigs = _spectrum()
    A = _matrix(eigs)
    ev = eigenvalues(A, k=5, which=which, block_size=block_size)
    expected = _expected(eigs, which, 5)
    assert ev.all_converged
    assert torch.allclose(ev.values, expected, rtol=0, atol=1e-8 * 40)
    explicit = (A @ ev.vectors - ev.vectors * ev.values).norm(dim=0)
    assert torch.allclose(explicit, ev.residuals, atol=1e-10)  # the Lanczos relation is exact
    assert torch.allclose(
        ev.vectors.T @ ev.vectors, torch.eye(ev.values.numel(), dtype=torch.float64), atol=1e-10
    )


def test_no_ghost_copies_of_converged_eigenvalues():
    eigs = _spectrum()
    ev = eigenvalues(_matrix(eigs), k=20, which="largest", tol=1e-10)
    gaps = (ev.values[:-1] - ev.values[1:]).abs()
    exact_gaps = (torch.sort(eigs, descending=True).values[:20].diff()).abs()
    assert gaps.min() >= exact_gaps.min() * 0.5  # no duplicated (ghost) value


def test_repeated_eigenvalue_multiplicity_is_found():
    eigs = torch.cat([torch.full((3,), 5.0), torch.linspace(-1, 1, 197)]).double()
    A = _matrix(eigs, seed=1)
    for block_size in (1, 3):
        ev = eigenvalues(A, k=4, block_size=block_size)
        assert torch.allclose(
            ev.values, torch.tensor([5.0, 5.0, 5.0, 1.0], dtype=torch.float64), atol=1e-7
        )


def test_thick_restarts_converge_with_a_small_basis():
    eigs = _spectrum()
    ev = eigenvalues(_matrix(eigs), k=8, ncv=20)
    assert ev.all_converged
    assert torch.allclose(ev.values, _expected(eigs, "largest", 8), atol=1e-7)


def test_low_rank_matrix_invariant_subspace():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(100, 3, generator=g, dtype=torch.float64)
    A = U @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ U.T
    exact = torch.linalg.eigvalsh(A).flip(0)[:5]
    ev = eigenvalues(A, k=5)
    assert torch.allclose(ev.values, exact, atol=1e-8)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[4]], ids=lambda c: c.id)
def test_model_hessian_top_and_bottom_five(case):
    model, batches = case.build()
    H = ls.hessian(model, batches, case.loss_fn)
    exact = torch.linalg.eigvalsh(cached_exact_hessian(case, H.param_names))
    norm = exact.abs().max()
    ev = ls.eigenvalues(H, k=5, which="both", certify=True)
    expected = torch.cat([exact.flip(0)[:5], exact[:5].flip(0)])
    assert ev.all_converged
    assert ((ev.values - expected).abs() <= 1e-6 * expected.abs() + 1e-10 * norm).all()
    assert (ev.residuals <= 1e-6 * norm).all()
    assert ev.named_vectors is not None and set(ev.named_vectors[0]) == set(H.param_names)
    assert ev.num_passes == H.num_passes


def test_float32_operator():
    case = CASES[0]
    model, batches = case.build(torch.float32)
    H = ls.hessian(model, batches)
    exact = torch.linalg.eigvalsh(cached_exact_hessian(case, H.param_names))
    ev = ls.eigenvalues(H, k=3, tol=1e-4)
    assert ev.values.dtype == torch.float64 and ev.vectors.dtype == torch.float32
    assert torch.allclose(ev.values, exact.flip(0)[:3], rtol=1e-4)


def test_seed_determinism_and_warm_start():
    A = _matrix(_spectrum())
    a, b = eigenvalues(A, k=3, seed=7), eigenvalues(A, k=3, seed=7)
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)
    warm = eigenvalues(A, k=1, v0=a.vectors[:, 0])
    assert warm.num_matvecs <= 3
    assert torch.allclose(warm.values, a.values[:1])


def test_scipy_and_numpy_inputs():
    eigs = _spectrum(120)
    A = _matrix(eigs).numpy()
    expected = _expected(eigs, "largest", 3)
    assert torch.allclose(eigenvalues(A, k=3).values, expected, atol=1e-8)
    op = scipy.sparse.linalg.aslinearoperator(A)
    assert torch.allclose(eigenvalues(op, k=3).values, expected, atol=1e-8)
    assert isinstance(np.asarray(eigenvalues(op, k=1).vectors), np.ndarray)


def test_unconverged_within_budget_warns_and_reports():
    A = _matrix(_spectrum())
    with pytest.warns(UserWarning, match="did not reach"):
        ev = eigenvalues(A, k=5, which="smallest", max_matvecs=12)
    assert not ev.all_converged
    assert ev.num_matvecs <= 12


def test_power_iteration_matches_top_eigenvalue():
    eigs = _spectrum()
    ev = power_iteration(_matrix(eigs), tol=1e-10, max_matvecs=500)
    assert abs(float(ev.values[0]) - 40.0) < 1e-6


def test_errors():
    A = _matrix(_spectrum(50))
    with pytest.raises(ValueError, match="at most 50"):
        eigenvalues(A, k=51)
    with pytest.raises(ValueError, match="at most 50"):
        eigenvalues(A, k=26, which="both")
    with pytest.raises(ValueError, match="which must be one of"):
        eigenvalues(A, k=2, which="top")
    with pytest.raises(ValueError, match="tol"):
        eigenvalues(A, k=2, tol=0)
    with pytest.raises(ValueError, match="symmetric"):
        eigenvalues(torch.randn(5, 5), k=1)
    with pytest.raises(TypeError, match="scipy LinearOperator"):
        eigenvalues([[1.0]], k=1)


def test_smallest_near_zero_at_loose_tolerance_warns():
    eigs = torch.cat([torch.tensor([50.0]), torch.linspace(-1e-3, 1e-3, 199)]).double()
    with pytest.warns(UserWarning, match="resolution of the stopping rule"):
        eigenvalues(_matrix(eigs), k=1, which="smallest", tol=1e-2)
