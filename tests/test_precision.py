"""Half precision, compiled and wrapped models, and products without double-backward.

Truth: the float64 Hessian of the *same* weights (a half-precision model's weights are
rounded; the reference is those rounded weights in float64), by plain double-backward
through landscape's exact products (themselves checked against autograd in test_zoo.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from state import assert_unchanged, snapshot
from torch import nn
from torch.autograd.function import once_differentiable

import landscape as ls
from landscape.operators.hessian import FiniteDifferenceWarning, SecondDerivativeError

zoo = pytest.importorskip("zoo")

HALF = [torch.bfloat16, torch.float16]


def _rel(a, b):
    return float(torch.linalg.vector_norm(a.double() - b.double()) / torch.linalg.vector_norm(b))


def _probe(P, k=2, seed=0):
    return torch.randn(P, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _truth(name, dtype):
    """The float64 Hessian operator of the zoo model's weights rounded to ``dtype``."""
    case = zoo.ZOO[name]()
    return ls.hessian(case.model.to(dtype).double(), case.batches), case.batches


# -- half precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", ["gpt2", "vit", "resnet"])
def test_half_models_are_analyzed_on_a_float32_copy(name, dtype):
    exact, batches = _truth(name, dtype)
    model = zoo.ZOO[name]().model.to(dtype)
    before = snapshot(model)
    H = ls.hessian(model, batches)
    assert H.dtype == torch.float32 and H.problem.precision == "float32 copy"
    V = _probe(H.shape[0])
    assert _rel(H @ V.float(), exact @ V) < 1e-5
    top = ls.eigenvalues(H, k=3, seed=0).values.double()
    np.testing.assert_allclose(top, ls.eigenvalues(exact, k=3, seed=0).values, rtol=1e-5)
    np.testing.assert_allclose(
        ls.trace(H, num_matvecs=12, seed=1).value,
        ls.trace(exact, num_matvecs=12, seed=1).value,
        rtol=1e-4,
    )
    density = ls.spectral_density(H, 2, 10, seed=0)
    assert np.isfinite(density.density).all()
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("dtype", "bound"), [(torch.bfloat16, 1e-1), (torch.float16, 1e-2)], ids=["bf16", "fp16"]
)
@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_products_in_the_models_half_precision_within_measured_bounds(name, dtype, bound):
    # Measured: bf16 2-5e-2, fp16 1.2-2.4e-3 relative per product on these models.
    exact, batches = _truth(name, dtype)
    H = ls.hessian(zoo.ZOO[name]().model.to(dtype), batches, precision="model")
    assert H.dtype == torch.float32 and H.problem.compute_dtype == dtype
    V = _probe(H.shape[0])
    assert 1e-5 < _rel(H @ V.float(), exact @ V) < bound  # half precision shows, but bounded


def test_fp16_overflow_is_an_error_that_names_the_fix():
    case = zoo.gpt2()
    H = ls.hessian(case.model.to(torch.float16), case.batches, precision="model")
    with pytest.raises(FloatingPointError, match="precision='float32'"):
        H @ torch.ones(H.shape[0])


def test_half_models_through_layerwise_surfaces_and_analyze():
    case = zoo.resnet()
    model = case.model.to(torch.bfloat16)
    layers = ls.layerwise(model, case.batches, metrics=("trace",), num_probes=4)
    assert all(np.isfinite(row.trace) for row in layers.layers)
    dirs = ls.random_directions(model, n=1, seed=0)
    s = ls.surface(
        model,
        case.batches,
        directions=dirs,
        coords=[-0.5, 0.0, 0.5],
        progress=False,
    )
    with torch.no_grad():  # the surface is the loss as the bf16 model computes it
        own = [
            float(model(pixel_values=b["pixel_values"].bfloat16(), labels=b["labels"]).loss)
            for b in case.batches
        ]
    weights = [b["labels"].shape[0] for b in case.batches]
    assert s.origin_loss == pytest.approx(np.average(own, weights=weights), rel=1e-6)
    report = ls.analyze(model, case.batches, progress=False, learning_rates=False)
    assert report.metadata["precision"] == "float32 copy"
    assert "curvature on a float32 copy" in report.summary()


# -- compiled and wrapped models ------------------------------------------------------------


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    X, y = torch.randn(24, 4, dtype=torch.float64), torch.randint(0, 3, (24,))
    return model, [(X[:16], y[:16]), (X[16:], y[16:])]


def test_compiled_and_data_parallel_models_give_the_eager_numbers():
    model, batches = _mlp()
    V = _probe(67)
    eager = ls.hessian(model, batches, backend="double_backward") @ V
    for wrapped in (torch.compile(model), nn.DataParallel(model)):
        assert torch.equal(ls.hessian(wrapped, batches, backend="double_backward") @ V, eager)
    report = ls.analyze(torch.compile(model), batches, progress=False, learning_rates=False)
    assert bool(report.eigenvalues.top.values.isfinite().all())


def test_distributed_data_parallel_is_unwrapped(tmp_path):
    import torch.distributed as dist

    model, batches = _mlp()
    V = _probe(67)
    eager = ls.hessian(model, batches, backend="double_backward") @ V
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        assert torch.equal(ls.hessian(ddp, batches, backend="double_backward") @ V, eager)
    finally:
        dist.destroy_process_group()


def test_fsdp_is_refused_with_what_works():
    class FullyShardedDataParallel(nn.Module):  # stands in for torch's, by name
        def __init__(self, module):
            super().__init__()
            self.module = module

    model, batches = _mlp()
    with pytest.raises(ValueError, match="sharded with FSDP"):
        ls.hessian(FullyShardedDataParallel(model), batches)


# -- finite differences --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "bounds"),
    [
        # float32: smooth transformers ~1e-5, the ReLU ResNet 6e-4 (kinks inside the step).
        (torch.float32, {"gpt2": 1e-4, "llama": 1e-4, "bert": 1e-4, "vit": 1e-4, "resnet": 2e-3}),
        # float64: 1e-12, except language models whose loss is float32 inside (4e-5).
        (torch.float64, {"gpt2": 1e-4, "llama": 1e-4, "bert": 1e-7, "vit": 1e-7, "resnet": 1e-7}),
    ],
    ids=["float32", "float64"],
)
def test_finite_differences_on_the_zoo_within_their_error_model(dtype, bounds):
    for name, bound in bounds.items():
        case = zoo.ZOO[name]()
        exact = ls.hessian(case.model, case.batches)
        model = zoo.ZOO[name]().model.to(dtype)  # .to() is in place: another copy
        H = ls.hessian(model, case.batches, backend="finite_difference")
        v = _probe(exact.shape[0], 1)
        assert _rel(H @ v.to(dtype), exact @ v) < bound, name


def test_every_algorithm_takes_the_finite_difference_backend():
    case = zoo.bert()
    exact = ls.hessian(case.model, case.batches)
    H = ls.hessian(case.model, case.batches, backend="finite_difference")
    np.testing.assert_allclose(
        ls.eigenvalues(H, k=2, seed=0).values, ls.eigenvalues(exact, k=2, seed=0).values, rtol=1e-6
    )
    assert ls.trace(H, num_matvecs=6, seed=0).value == pytest.approx(
        ls.trace(exact, num_matvecs=6, seed=0).value, rel=1e-6
    )
    assert np.isfinite(ls.spectral_density(H, 2, 8, seed=0).density).all()
    rows = ls.layerwise(
        case.model, case.batches, num_probes=4, backend="finite_difference", metrics=("trace",)
    )
    assert all(np.isfinite(r.trace) for r in rows.layers)
    rates = ls.max_learning_rate(
        case.model, case.batches, batch_sizes=(4, "full"), backend="finite_difference"
    )
    assert np.isfinite(rates.lr_max).all()


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.softplus(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class _OnceDifferentiable(nn.Module):
    def __init__(self, custom=True):
        super().__init__()
        self.a, self.b, self.custom = nn.Linear(4, 6), nn.Linear(6, 3), custom

    def forward(self, x):
        h = self.a(x)
        return self.b(_Softplus.apply(h) if self.custom else F.softplus(h))


def test_once_differentiable_functions_are_named_and_auto_differences_them():
    torch.manual_seed(0)
    model = _OnceDifferentiable().double()
    reference = _OnceDifferentiable(custom=False).double()
    reference.load_state_dict(model.state_dict())
    X, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    v = _probe(sum(p.numel() for p in model.parameters()))
    exact = ls.hessian(reference, (X, y)) @ v
    # torch 2.13 silently drops the second derivative through a @once_differentiable
    # backward: without the check, double-backward would be 24% off.
    with pytest.raises(SecondDerivativeError, match="backend='finite_difference'"):
        ls.hessian(model, (X, y), backend="double_backward") @ v
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        H = ls.hessian(model, (X, y))
        out = H @ v
    assert any(issubclass(w.category, FiniteDifferenceWarning) for w in caught)
    assert H.backend_choices["block"]["choice"] == "finite_difference"
    assert _rel(out, exact) < 1e-8


def test_finite_differences_run_the_fused_attention_kernel():
    # nn.MultiheadAttention's fused kernel has no double-backward; central differences of
    # gradients need only its backward, so the math kernel is not forced on them.
    torch.manual_seed(0)
    attention = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = nn.Sequential(attention, nn.Flatten(), nn.Linear(8 * 5, 3))
    X, y = torch.randn(12, 5, 8), torch.randint(0, 3, (12,))
    exact = ls.hessian(model.double(), (X.double(), y))
    v = _probe(exact.shape[0], 1)
    truth = exact @ v
    H = ls.hessian(model.float(), (X, y), backend="finite_difference")
    assert H._first_order
    assert _rel(H @ v.float(), truth) < 1e-3
