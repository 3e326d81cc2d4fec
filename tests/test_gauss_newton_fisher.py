"""GaussNewtonOperator against explicit J^T H_L J, EmpiricalFisherOperator against its definition."""

import pytest
import torch
import torch.nn.functional as F
from cases import CASES, CRITERION_CASES, cached_exact_hessian
from oracles import exact_empirical_fisher, exact_gauss_newton, exact_hessian
from state import assert_unchanged, snapshot

import landscape as ls


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("case", CRITERION_CASES, ids=[c.id for c in CRITERION_CASES])
def test_gauss_newton_matches_exact(case):
    model, batches = case.build()
    before = snapshot(model)
    G = ls.gauss_newton(model, batches, case.loss_fn)
    G_exact = exact_gauss_newton(model, batches, case.forward, case.criterion, list(G.param_names))
    V = torch.randn(G.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert _rel(G @ V, G_exact @ V) < 1e-10
    assert torch.linalg.eigvalsh(G_exact).min() > -1e-10  # PSD for convex losses
    assert_unchanged(model, before)


def test_gauss_newton_equals_hessian_for_linear_mse():
    g = torch.Generator().manual_seed(0)
    X, Y = (
        torch.randn(17, 4, generator=g, dtype=torch.float64),
        torch.randn(17, 2, generator=g, dtype=torch.float64),
    )
    model = torch.nn.Linear(4, 2).double()
    data = [(X[:9], Y[:9]), (X[9:], Y[9:])]
    assert torch.allclose(
        ls.gauss_newton(model, data).to_dense(), ls.hessian(model, data).to_dense(), rtol=1e-12
    )


def test_gauss_newton_differs_from_hessian_away_from_interpolation():
    case = CASES[0]
    model, batches = case.build()
    G, H = ls.gauss_newton(model, batches), ls.hessian(model, batches)
    assert _rel(G.to_dense(), H.to_dense()) > 1e-3


def test_gauss_newton_train_mode_batchnorm():
    case = CASES[1]
    model, batches = case.build()
    before = snapshot(model)
    G = ls.gauss_newton(model, batches, mode="train")
    v = torch.randn(G.shape[0], dtype=torch.float64)
    out = G @ v
    assert torch.isfinite(out).all() and v @ out >= -1e-12
    assert not torch.allclose(out, ls.gauss_newton(model, batches) @ v)
    assert_unchanged(model, before)


FISHER_CASES = [c for c in CASES if not c.dict_batches]


@pytest.mark.parametrize("case", FISHER_CASES, ids=[c.id for c in FISHER_CASES])
def test_empirical_fisher_matches_definition(case):
    model, batches = case.build()
    before = snapshot(model)
    Fop = ls.fisher(model, batches, case.loss_fn)
    F_exact = exact_empirical_fisher(model, batches, case.oracle_loss, list(Fop.param_names))
    V = torch.randn(
        Fop.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert _rel(Fop @ V, F_exact @ V) < 1e-10
    assert_unchanged(model, before)


def test_empirical_fisher_sample_chunking_is_exact():
    case = CASES[0]
    model, batches = case.build()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64)
    assert torch.allclose(
        ls.fisher(model, batches, chunk_size=3) @ V, ls.fisher(model, batches) @ V, rtol=1e-12
    )


def test_empirical_fisher_dict_batches_with_loss_fn():
    case = CASES[-1]
    model, batches = case.build()
    Fop = ls.fisher(model, batches, lambda out, y: F.cross_entropy(out, y))
    F_exact = exact_empirical_fisher(
        model,
        [(b["features"], b["labels"]) for b in batches],
        lambda m, b: F.cross_entropy(m(b[0]).logits, b[1]),
        list(Fop.param_names),
    )
    v = torch.randn(Fop.shape[0], dtype=torch.float64)
    assert _rel(Fop @ v, F_exact @ v) < 1e-10


def test_fisher_rejects_other_kinds_and_train_mode():
    model, batches = CASES[0].build()
    with pytest.raises(ValueError, match="gauss_newton"):
        ls.fisher(model, batches, kind="true")
    with pytest.raises(ValueError, match="per-sample"):
        ls.fisher(model, batches, mode="train")


@pytest.mark.parametrize(
    "selector",
    [
        "net.2",
        ["net.2.weight", "net.2.bias"],
        lambda name, p: name.startswith("net.2"),
    ],
    ids=["prefix", "names", "predicate"],
)
def test_parameter_subset_is_the_diagonal_block(selector):
    case = CASES[0]
    model, batches = case.build()
    names = [n for n, _ in model.named_parameters()]
    H_full = cached_exact_hessian(case, names)
    block_slice = slice(5 * 7 + 7, None)  # net.2.weight and net.2.bias come last
    for make in (ls.hessian, ls.gauss_newton, ls.fisher):
        op = make(model, batches, params=selector)
        assert op.param_names == ("net.2.weight", "net.2.bias")
        assert op.shape == (7 * 3 + 3, 7 * 3 + 3)
    H = ls.hessian(model, batches, params=selector)
    assert torch.allclose(H.to_dense(), H_full[block_slice, block_slice], rtol=1e-10, atol=1e-13)


def test_parameter_subset_by_module_and_tensor():
    case = CASES[2]
    model, batches = case.build()
    by_module = ls.hessian(model, batches, case.loss_fn, params=model.shared)
    by_tensor = ls.hessian(
        model, batches, case.loss_fn, params=[model.shared.weight, model.shared.bias]
    )
    assert by_module.param_names == by_tensor.param_names == ("shared.weight", "shared.bias")
    exact = exact_hessian(model, batches, case.oracle_loss, ["shared.weight", "shared.bias"])
    assert torch.allclose(by_module.to_dense(), exact, rtol=1e-10, atol=1e-13)


def test_vector_param_conversions_round_trip():
    model, batches = CASES[0].build()
    H = ls.hessian(model, batches)
    v = torch.arange(H.shape[0], dtype=torch.float64)
    named = H.vector_to_params(v)
    assert list(named) == list(H.param_names)
    assert named["net.0.weight"].shape == (7, 5)
    assert torch.equal(H.params_to_vector(named), v)
    Hv = H.vector_to_params(H @ v)
    assert Hv["net.2.bias"].shape == (3,)
