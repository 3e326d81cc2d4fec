"""Memory planned like time: budgets, sizes from P and the budget, errors that name the knob.

Every algorithm sizes its vectors (Lanczos basis, SLQ groups, Hutchinson blocks, Hutch++
sketch, XTrace rounds, operator column groups, per-example chunks) from P and a memory
budget. These tests use small operators with artificially small budgets: a size that does
not change a result (blocks, groups) gives the same numbers as the unconstrained run; one
that does (a Lanczos basis, a sketch) still gives a correct result; and what cannot fit
raises MemoryBudgetError before allocating, naming the quantity and the knob.
"""

import math

import pytest
import torch
from torch import Tensor, nn

import landscape as ls
from landscape.linalg.density import plan_slq
from landscape.linalg.eigen import basis_size
from landscape.linalg.trace import hutchinson_trace, hutchpp_trace, sketch_size, xtrace
from landscape.memory import MemoryBudget, MemoryBudgetError, format_bytes
from landscape.operators.base import LinearOperator
from landscape.operators.dense import DenseOperator
from landscape.operators.per_example import samples_that_fit
from landscape.params import ParamSpace

F64 = 8  # bytes per float64


def _spectrum_matrix(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    lam = torch.cat([torch.tensor([50.0, 40.0, 30.0]), torch.rand(n - 3, generator=g) * 5 - 1])
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = (Q * lam.double()) @ Q.T
    return (A + A.T) / 2, lam.double()


class _Huge(LinearOperator):
    """An operator too large to multiply: only its size is looked at."""

    is_symmetric = True

    def __init__(self, n: int) -> None:
        super().__init__((n, n), torch.float32, torch.device("cpu"))

    def _matmat(self, V: Tensor) -> Tensor:  # pragma: no cover - never called
        raise AssertionError("sizing must fail before any product")


def _budget(vectors: int, n: int, itemsize: int = F64) -> MemoryBudget:
    return MemoryBudget.resolve(vectors * n * itemsize, "cpu")


# -- budgets ------------------------------------------------------------------------------------


def test_budget_forms():
    free = MemoryBudget.resolve(None, "cpu")
    assert free.bytes == int(0.25 * free.free) and free.given == "default"
    assert MemoryBudget.resolve(0.25, "cpu").given == "fraction 0.25"
    assert MemoryBudget.resolve("1.5GB", "cpu").bytes == 1_500_000_000
    assert MemoryBudget.resolve("2 GiB", "cpu").bytes == 2 * 1024**3
    assert MemoryBudget.resolve(10**9, "cpu").bytes == 10**9
    for bad in (0, -3, "lots", True, 0.0):
        with pytest.raises(ValueError, match="memory_budget"):
            MemoryBudget.resolve(bad, "cpu")
    assert format_bytes(19.9e9) == "19.9 GB"


# -- Lanczos basis --------------------------------------------------------------------------------


def test_default_basis_is_small_for_a_large_model_and_large_for_a_small_one():
    huge = _Huge(124_439_808)  # GPT-2 small: 0.5 GB per float32 vector
    plenty = MemoryBudget.resolve(10**12, "cpu")
    assert basis_size(huge, 1, 1, None, plenty) == 1 + 1 + 4  # k' + b + max(4, k')
    assert basis_size(huge, 5, 1, None, plenty) == 5 + 1 + 5
    small = _Huge(10_000)
    assert basis_size(small, 1, 1, None, plenty) == 40  # unchanged for small models
    assert basis_size(small, 30, 1, None, plenty) == 80


def test_basis_shrinks_to_the_budget_and_still_converges():
    A, lam = _spectrum_matrix()
    n = A.shape[0]
    # room for 8 vectors next to a step's 3: the default (40) cannot be had
    budget = _budget(8 + 3, n)
    op = DenseOperator(A, symmetric=True)
    assert basis_size(op, 2, 1, None, budget) == 8
    ev = ls.eigenvalues(op, k=2, memory_budget=budget.bytes, tol=1e-8)
    assert ev.all_converged
    assert torch.allclose(ev.values, lam[:2], rtol=1e-8)


def test_the_smallest_basis_that_does_not_fit_raises_before_any_product():
    with pytest.raises(MemoryBudgetError) as info:
        ls.eigenvalues(_Huge(10**10), k=1)  # 40 GB per vector
    message = str(info.value)
    assert "Lanczos basis" in message and "memory_budget=" in message
    assert "10,000,000,000 float32" in message and "GB" in message


def test_an_explicit_ncv_that_does_not_fit_names_ncv():
    A, _ = _spectrum_matrix()
    with pytest.raises(MemoryBudgetError, match=r"ncv=40.*smaller ncv="):
        ls.eigenvalues(A, k=1, ncv=40, memory_budget=_budget(10, A.shape[0]).bytes)


def test_basis_in_host_memory_gives_the_same_pairs():
    A, _ = _spectrum_matrix()
    a = ls.eigenvalues(A, k=3, tol=1e-10)
    b = ls.eigenvalues(A, k=3, tol=1e-10, basis_device="cpu")
    assert torch.equal(a.values, b.values)


# -- SLQ ----------------------------------------------------------------------------------------


def test_slq_plan_reorthogonalizes_only_what_fits_and_groups_the_rest():
    budget = _budget(80, 1000)
    plan = plan_slq(1000, torch.float64, 10, 30, "auto", budget)
    assert plan.reorthogonalized == 2 and plan.groups == [4, 6]
    assert plan_slq(1000, torch.float64, 10, 30, False, budget).groups == [10]
    with pytest.raises(MemoryBudgetError, match="reorthogonalize='auto'"):
        plan_slq(1000, torch.float64, 10, 100, True, budget)
    with pytest.raises(MemoryBudgetError, match="memory_budget="):
        plan_slq(1000, torch.float64, 10, 30, False, _budget(3, 1000))


def test_slq_in_groups_gives_the_same_density():
    A, _ = _spectrum_matrix()
    n = A.shape[0]
    whole = ls.spectral_density(A, 6, 20, seed=3, reorthogonalize=False)
    op = DenseOperator(A, symmetric=True)
    grouped = ls.spectral_density(
        op, 6, 20, seed=3, reorthogonalize=False, memory_budget=_budget(2 * 5, n).bytes
    )
    assert op.num_passes == 3 * 20  # groups of two probes
    assert torch.allclose(grouped.nodes, whole.nodes, rtol=1e-10, atol=1e-10)
    assert torch.allclose(grouped.weights, whole.weights, atol=1e-10)


def test_slq_reorthogonalizes_the_first_run_where_only_it_fits_and_keeps_the_outliers():
    A, lam = _spectrum_matrix()
    n = A.shape[0]
    full = ls.spectral_density(A, 6, 20, seed=3)  # every run reorthogonalized
    op = DenseOperator(A, symmetric=True)
    # room for the first probe's 5 working vectors and its 20-vector basis: a group of it
    # alone (reorthogonalized), then one of the other five (5 vectors each, not)
    part = ls.spectral_density(op, 6, 20, seed=3, memory_budget=_budget(25, n).bytes)
    assert op.num_passes == 2 * 20
    assert torch.allclose(part.nodes[0], full.nodes[0], rtol=1e-10)
    assert torch.allclose(part.outliers, lam[:3], rtol=1e-8)
    for p in (1, 2, 3):  # quadrature moments need no reorthogonalization (Greenbaum)
        assert part.moment(p) == pytest.approx(full.moment(p), rel=1e-8)


def test_block_densities_in_groups_give_the_same_densities():
    A, _ = _spectrum_matrix(120)
    blocks = [slice(0, 40), slice(40, 90), slice(90, 120)]
    whole = ls.linalg.block_density.block_densities(A, blocks, 2, 10, seed=1, reorthogonalize=False)
    op = DenseOperator(A, symmetric=True)
    grouped = ls.linalg.block_density.block_densities(
        op, blocks, 2, 10, seed=1, reorthogonalize=False, memory_budget=_budget(2 * 5, 120).bytes
    )
    assert op.num_passes == 3 * 10  # one block per group
    for a, b in zip(whole, grouped, strict=True):
        assert torch.allclose(a.nodes, b.nodes, rtol=1e-10, atol=1e-10)


# -- traces -------------------------------------------------------------------------------------


def test_hutchinson_blocks_to_the_budget_with_the_same_estimate():
    A, _ = _spectrum_matrix()
    whole = hutchinson_trace(A, 40, seed=2)
    op = DenseOperator(A, symmetric=True)
    blocked = hutchinson_trace(op, 40, seed=2, memory_budget=_budget(4 * 5, 300).bytes)
    assert whole.num_passes == 1 and op.num_passes == 8
    assert blocked.value == pytest.approx(whole.value, rel=1e-12)


def test_hutchpp_sketch_shrinks_to_the_budget_and_stays_exact_for_low_rank():
    n = 400
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(n, 2, generator=g, dtype=torch.float64))
    A = U @ torch.diag(torch.tensor([7.0, 3.0], dtype=torch.float64)) @ U.T
    budget = _budget(2 * 2 + 4 * 3, n)
    assert sketch_size(DenseOperator(A, symmetric=True), 33, 2, budget) == 2
    est = hutchpp_trace(A, 99, memory_budget=budget.bytes)
    assert est.value == pytest.approx(10.0, rel=1e-10)
    assert est.num_matvecs == 99


def test_xtrace_runs_rounds_that_fit_with_the_same_matvecs():
    n = 300
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(n, 3, generator=g, dtype=torch.float64))
    A = U @ torch.diag(torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)) @ U.T
    # six blocks of 10 probes and a probe block fit: rounds of 20 matvecs
    est = xtrace(A, 100, memory_budget=_budget(6 * 10 + 4 * 10, n).bytes)
    assert est.num_matvecs == 100 and est.samples.numel() == 50
    assert est.value == pytest.approx(8.0, rel=1e-9)  # exact: rank 3 <= k - 1 in every round


# -- operators and per-example gradients --------------------------------------------------------


def test_operator_multiplies_wide_blocks_in_groups_that_fit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    data = (torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,)))
    P = sum(p.numel() for p in model.parameters())
    V = torch.randn(P, 7, dtype=torch.float64)
    whole = ls.hessian(model, data, backend="double_backward_loop")
    H = ls.hessian(model, data, backend="double_backward_loop", memory_budget=2 * 3 * P * F64)
    assert torch.allclose(H @ V, whole @ V, rtol=1e-12, atol=1e-12)
    assert H.num_passes == 4 and whole.num_passes == 1  # columns 2 + 2 + 2 + 1


def test_per_example_chunks_are_sized_from_p():
    space = ParamSpace.from_module(nn.Linear(1000, 1000))  # P = 1,001,000
    per_sample = 3 * 4 * 1_001_000
    assert samples_that_fit(space, 64, memory_budget=10 * per_sample) == 10
    assert samples_that_fit(space, 64, memory_budget=10**12) == 64
    assert samples_that_fit(space, 64, memory_budget=1) == 1
    assert math.isclose(per_sample / 1e6, 12.012)
