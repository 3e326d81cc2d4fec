"""Per-layer curvature against exact Hessian blocks; plots render; matplotlib stays lazy."""

import subprocess
import sys

import matplotlib
import pytest
import torch
from cases import CASES, cached_exact_hessian

import landscape as ls

matplotlib.use("Agg")


def test_layerwise_matches_exact_blocks():
    case = CASES[1]  # conv + BatchNorm + linear
    model, batches = case.build()
    result = ls.layerwise(model, batches, num_probes=400, tol=1e-8)
    names = [n for n, _ in model.named_parameters()]
    exact = cached_exact_hessian(case, names)
    assert [r.name for r in result.layers] == ["conv", "bn", "head"]
    start = 0
    for row in result.layers:
        block = exact[start : start + row.num_params, start : start + row.num_params]
        start += row.num_params
        assert abs(row.trace - float(block.trace())) <= 4 * row.trace_stderr + 1e-9
        assert row.top_eigenvalue == pytest.approx(
            float(torch.linalg.eigvalsh(block)[-1]), rel=1e-6
        )
    assert result.num_passes >= 1 + 3  # one pass for all traces, Lanczos per layer
    assert "head" in result.table()


def test_layerwise_single_pass_for_traces_and_module_filter():
    case = CASES[0]
    model, batches = case.build()
    result = ls.layerwise(model, batches, metrics=("trace",), num_probes=16, modules=["net.2"])
    assert [r.name for r in result.layers] == ["net.2"]
    assert result.num_passes == 1 and result.num_matvecs == 16
    assert result.layers[0].top_eigenvalue is None
    with pytest.raises(ValueError, match="not modules of the model"):
        ls.layerwise(model, batches, modules=["nope"])


def test_layerwise_rows_can_be_whole_blocks():
    # A row per named module covers every parameter below it: its trace is the trace of
    # the block's diagonal Hessian block, the sum of its members' rows.
    case = CASES[0]
    model, batches = case.build()
    exact = cached_exact_hessian(case, [n for n, _ in model.named_parameters()])
    result = ls.layerwise(model, batches, num_probes=400, modules=["net", "net.2"], seed=1)
    whole, head = result.layers
    assert whole.num_params == exact.shape[0] and head.num_params == 3 * 7 + 3
    assert abs(whole.trace - float(exact.trace())) <= 4 * whole.trace_stderr + 1e-9
    assert whole.top_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(exact)[-1]), rel=1e-6)
    assert result.num_matvecs >= 400 and "top eigenvalue" in result.table()
    with pytest.raises(ValueError, match="unknown metrics"):
        ls.layerwise(model, batches, metrics=("flatness",))


def test_plots_render(tmp_path):
    case = CASES[0]
    model, batches = case.build()
    H = ls.hessian(model, batches)
    density = ls.spectral_density(H, num_probes=3, num_steps=20)
    ax = ls.plot_spectral_density(density, label="mlp")
    assert ax.get_yscale() == "log"
    ax = ls.plot_eigenvalues(ls.eigenvalues(H, k=3, which="both"))
    assert len(ax.patches) == 6
    ax = ls.plot_layerwise(ls.layerwise(model, batches, num_probes=8), metric="mean_curvature")
    ax.figure.savefig(tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="top_eigenvalue"):
        ls.plot_layerwise(
            ls.layerwise(model, batches, metrics=("trace",), num_probes=4), metric="top_eigenvalue"
        )


def test_import_does_not_load_matplotlib():
    code = "import sys, landscape; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
