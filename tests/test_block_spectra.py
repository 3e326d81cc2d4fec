"""Per-block spectra (Zhang et al. 2024): each block's density is the SLQ density of its own
diagonal block H_bb, all blocks in num_steps passes, and Jensen-Shannon distances between them.

Tolerances. Moments: the SLQ quadrature of a run is exact for polynomials of degree <= 2m-1,
so for the same probes the moment v^T H_bb^p v / |v|^2 matches direct arithmetic to 1e-10
(float64); a leak of cross-block terms H_cb would show at O(1). JS of a density with itself
and, normalized, with its copy times 10 (the same Lanczos arithmetic scaled) is 0 to 1e-6.
"""

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.linalg._random import as_generator, rademacher
from landscape.linalg.block_density import block_densities, js_distances, mean_js


def _dense(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (M + M.T) / 2  # coupled blocks: cross terms are large


def test_each_block_density_has_the_moments_of_its_own_diagonal_block():
    A = _dense()
    blocks = [slice(0, 10), slice(10, 35), slice(35, 60)]
    num_probes, steps = 3, 8
    densities = block_densities(A, blocks, num_probes, steps, seed=4)
    assert len(densities) == 3
    n, r = 60, 3 * num_probes
    mask = torch.zeros(n, r, dtype=torch.float64)
    for b, sl in enumerate(blocks):
        mask[sl, b * num_probes : (b + 1) * num_probes] = 1
    # probes are drawn one after the other (probe-major), so groups of blocks agree
    signs = rademacher(r, n, as_generator(4), dtype=torch.float64, device=torch.device("cpu"))
    Z = signs.T * mask
    for b, (sl, d) in enumerate(zip(blocks, densities, strict=True)):
        block = A[sl, sl]
        V = Z[sl, b * num_probes : (b + 1) * num_probes]
        V = V / V.norm(dim=0)
        for p in (1, 2, 3):
            direct = float((V * (torch.linalg.matrix_power(block, p) @ V)).sum(0).mean())
            assert d.moment(p) == pytest.approx(direct, abs=1e-10)
        # and the nodes lie inside the block's own spectrum
        eigs = torch.linalg.eigvalsh(block)
        assert float(d.nodes.min()) >= float(eigs.min()) - 1e-9
        assert float(d.nodes.max()) <= float(eigs.max()) + 1e-9


def test_all_blocks_cost_num_steps_passes():
    from landscape.operators.dense import DenseOperator

    A = DenseOperator(_dense(), symmetric=True)
    densities = block_densities(A, [slice(0, 30), slice(30, 60)], num_probes=2, num_steps=12)
    assert A.num_passes == 12 and A.num_matvecs == 12 * 4
    assert densities[0].num_passes == 12


def test_js_distance_is_zero_for_the_same_shape_and_positive_otherwise():
    lam = torch.linspace(0.1, 1.0, 50, dtype=torch.float64)
    d = block_densities(torch.diag(lam), [slice(0, 50)], num_steps=12)[0]
    ten = block_densities(torch.diag(10 * lam), [slice(0, 50)], num_steps=12)[0]
    other = block_densities(torch.diag(lam**4), [slice(0, 50)], num_steps=12)[0]
    D = js_distances([d, d, ten, other])
    assert D[0, 1] == 0.0
    assert D[0, 2] < 1e-6  # normalized by the 10th-largest eigenvalue: scale does not count
    assert D[0, 3] > 0.1
    assert np.allclose(D, D.T) and np.all(np.diag(D) == 0)
    raw = js_distances([d, ten], normalize=None)
    assert raw[0, 1] > 0.5  # raw spectra a decade apart barely overlap
    assert mean_js(D) == pytest.approx(D[np.triu_indices(4, 1)].mean())
    with pytest.raises(ValueError, match="normalize"):
        js_distances([block_densities(-torch.diag(lam), [slice(0, 50)], num_steps=5)[0]])


def test_block_spectra_on_a_model_uses_the_hessian_blocks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    X, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    model = model.double()
    result = ls.block_spectra(model, (X, y), num_probes=2, num_steps=6, normalize=2)
    assert result.names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert result.sizes == (40, 8, 24, 3)
    assert result.num_passes == 6
    H = ls.hessian(model, (X, y))
    exact = H @ torch.eye(H.shape[0], dtype=torch.float64)
    # block 2.weight: indices 48..71; its density's trace estimate is unbiased for tr(H_bb)/P_b,
    # and its largest node cannot exceed lambda_max(H_bb)
    block = exact[48:72, 48:72]
    assert (
        float(result.densities[2].nodes.max()) <= float(torch.linalg.eigvalsh(block).max()) + 1e-8
    )
    assert result.distances.shape == (4, 4)
    assert "JS^0" in result.table()
    modules = ls.block_spectra(model, (X, y), blocks="modules", num_steps=4, normalize=1)
    assert modules.names == ("0", "2") and modules.sizes == (48, 27)
    custom = ls.block_spectra(
        model, (X, y), blocks={"weights": ["0.weight", "2.weight"]}, num_steps=4, normalize=1
    )
    assert custom.sizes == (64,) and np.isnan(custom.heterogeneity)
    with pytest.raises(ValueError, match="not trainable parameters"):
        ls.block_spectra(model, (X, y), blocks={"x": ["nope"]})
    with pytest.raises(ValueError, match="blocks must be"):
        ls.block_spectra(model, (X, y), blocks="layers")
