"""Vector spaces: accurate reductions at large P, CholeskyQR2, counter-based probes, shards.

The sharded space's arithmetic is tested here in one process (without a process group its
reductions are sums over one rank); tests/test_fsdp.py runs it on gloo ranks.
"""

import pytest
import torch

import landscape as ls
from landscape.linalg._random import ProbeStream
from landscape.operators.base import CountingOperator
from landscape.operators.space import (
    ShardedSpace,
    VectorSpace,
    accurate_dot,
    accurate_rows,
    counter_probes,
)

N = 2**22  # 4M float32 entries (16 MB): where float32 BLAS reductions lose digits


class _Diagonal(CountingOperator):
    is_symmetric = True

    def __init__(self, d):
        super().__init__((d.numel(), d.numel()), d.dtype, d.device)
        self.d = d

    def _matmat(self, V):
        self._count(V.shape[1])
        return V * self.d[:, None]


def test_reductions_are_accurate_for_long_float32_vectors():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, 3, generator=g)
    space = VectorSpace(N, torch.float32, torch.device("cpu"))
    exact = X.double().T @ X.double()
    assert torch.allclose(space.gram(X).double(), exact, rtol=1e-6, atol=1e-6 * N)
    assert torch.allclose(space.norms(X).double(), exact.diagonal().sqrt(), rtol=1e-6)
    # (torch.linalg.vector_norm of such a vector was 8e-5 off on this project's CPU, MKL)


def test_float32_top_eigenvalues_of_a_long_operator():
    # Before the reductions accumulated in float64 the top eigenvalue came out 3.3e-4 off
    # (the norms of the Lanczos vectors were): a float32 operator's accuracy is a few
    # dozen unit roundoffs now.
    g = torch.Generator().manual_seed(0)
    d = torch.rand(N, generator=g) ** 4
    d[:3] = torch.tensor([10.0, 9.5, 9.0])
    ev = ls.eigenvalues(_Diagonal(d), k=2, tol=1e-6, ncv=8)
    assert torch.allclose(ev.values, torch.tensor([10.0, 9.5], dtype=torch.float64), rtol=2e-6)


def test_cholesky_qr2_orthonormalizes_and_factors():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(500, 4, generator=g, dtype=torch.float64)
    W[:, 3] = W[:, 0] + 1e-4 * W[:, 3]  # ill-conditioned
    original = W.clone()
    space = ShardedSpace(500, [(0, 500)], torch.float64, torch.device("cpu"))
    R = space.orthonormalize(W)
    assert torch.allclose(W.T @ W, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(W @ R, original, atol=1e-10)
    assert torch.allclose(R, torch.triu(R))


def test_counter_probes_of_any_split_of_the_entries_agree():
    cpu = torch.device("cpu")
    whole = counter_probes([(0, 200_000)], 3, 11, "gaussian", dtype=torch.float64, device=cpu)
    parts = [(0, 70_001), (70_001, 131_072), (131_072, 200_000)]
    split = counter_probes(parts, 3, 11, "gaussian", dtype=torch.float64, device=cpu)
    assert torch.equal(whole, split)
    shifted = counter_probes(
        [(0, 200_000)], 2, 11, "gaussian", dtype=torch.float64, device=cpu, first=1
    )
    assert torch.equal(shifted, whole[:, 1:])  # probe j is probe j, whatever the block
    assert abs(float(whole.mean())) < 0.01 and abs(float(whole.std()) - 1) < 0.01


def test_probe_streams_of_a_sharded_space_do_not_depend_on_grouping_or_shards():
    cpu = torch.device("cpu")
    whole = ShardedSpace(1000, [(0, 1000)], torch.float64, cpu)
    a = ProbeStream(whole, torch.Generator().manual_seed(4), "signs")
    b = ProbeStream(whole, torch.Generator().manual_seed(4), "signs")
    assert torch.equal(torch.cat([a.next(2), a.next(3)], 1), b.next(5))
    left = ShardedSpace(1000, [(0, 300), (600, 1000)], torch.float64, cpu)
    c = ProbeStream(left, torch.Generator().manual_seed(4), "signs").next(5)
    rows = torch.cat([torch.arange(0, 300), torch.arange(600, 1000)])
    full = ProbeStream(whole, torch.Generator().manual_seed(4), "signs").next(5)
    assert torch.equal(c, full[rows])


def test_local_mask_finds_global_entries_in_the_shards():
    space = ShardedSpace(100, [(10, 20), (50, 60)], torch.float32, torch.device("cpu"))
    mask = space.local_mask(torch.tensor([5, 12, 55, 59, 70]))
    assert mask.nonzero().reshape(-1).tolist() == [2, 15, 19]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sharded_space_in_one_process_matches_the_plain_space(dtype):
    g = torch.Generator().manual_seed(2)
    X, Y = (
        torch.randn(300, 3, generator=g, dtype=dtype),
        torch.randn(300, 3, generator=g, dtype=dtype),
    )
    plain = VectorSpace(300, dtype, torch.device("cpu"))
    sharded = ShardedSpace(300, [(0, 300)], dtype, torch.device("cpu"))
    for name in ("gram", "dots"):
        assert torch.allclose(getattr(plain, name)(X, Y), getattr(sharded, name)(X, Y))
    assert torch.allclose(plain.norms(X), sharded.norms(X))


def test_accurate_rows_sums_every_coefficient_like_float64():
    g = torch.Generator().manual_seed(3)
    Q = torch.randn(5, N, generator=g)
    w = torch.randn(N, generator=g) + 0.3 * Q[2]  # one dominant coefficient, four small
    exact = Q.double() @ w.double()
    scale = Q.double().norm(dim=1) * w.double().norm()

    def error(values):
        return float(((values - exact).abs() / scale).max())

    fused = error(accurate_rows(Q, w))
    one_by_one = error(torch.stack([accurate_dot(q, w) for q in Q]))
    assert fused < 1e-8 and fused < 3 * one_by_one + 1e-12
    # The control, BLAS in blocks of 2^20 rows, is far coarser: its sums run in float32.
    blocks = [(Q[:, i : i + 2**20] @ w[i : i + 2**20]).double() for i in range(0, N, 2**20)]
    assert error(torch.stack(blocks).sum(0)) > 10 * fused


def test_lanczos_steps_sweep_the_whole_basis_once_between_restarts():
    # A step removes the two newest rows' large components, then sweeps the whole basis
    # once; the basis stays orthonormal to working precision (float32 vectors of 4M).
    g = torch.Generator().manual_seed(0)
    d = torch.rand(N, generator=g) ** 4
    d[:3] = torch.tensor([10.0, 9.5, 9.0])
    swept = []
    original = VectorSpace.project_out_

    def spy(self, W, Q):
        swept.append(Q.shape[0])
        return original(self, W, Q)

    VectorSpace.project_out_ = spy
    try:
        ev = ls.eigenvalues(_Diagonal(d), k=3, tol=1e-6, ncv=10)
    finally:
        VectorSpace.project_out_ = original
    assert torch.allclose(ev.values, torch.tensor([10.0, 9.5, 9.0], dtype=torch.float64), rtol=2e-6)
    V = ev.vectors.double()
    assert float((V.T @ V - torch.eye(3, dtype=torch.float64)).abs().max()) < 1e-5
    full = [rows for rows in swept if rows > 2]  # sweeps over more than the newest two rows
    assert len(full) <= 1.2 * ev.num_matvecs  # about one per step (two before)
