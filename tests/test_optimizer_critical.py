"""Critical sharpness along any optimizer's update, and the generalized sharpness in Muon's norm.

Known answers: along a direction u on a quadratic, the loss rises past eta_c = 2 g.u / u.H.u
(gradient descent: lambda_c = g.H.g / g.g); Muon's update on L(W) = 1/2 <W - W*, A (W - W*)>
with an exact polar factor U V^T of the gradient U S V^T: eta_c = 2 tr(S) / tr(U^T A U); the
supremum of <D, A D> over ||D||_op <= 1 is tr(A) for a wide matrix and the sum of the top
columns-many eigenvalues of A for a tall one.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from optimizer_cases import (
    DTYPE,
    TORCH_OPTIMIZERS,
    SignDescent,
    gradient_and_hessian,
    muon_with_adamw,
    sparse_embedding_regression,
    tanh_classifier,
)
from torch import nn

import landscape as ls
from landscape.metrics.optimizers import (
    critical_sharpness,
    critical_step,
    generalized_sharpness,
    muon_scales,
    polar,
    update_direction,
)
from landscape.operators.dense import DenseOperator

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the line search ------------------------------------------------------------------------------
@pytest.mark.parametrize("initial", [1e-4, 0.3, 1.0, 50.0])
def test_line_search_finds_the_quadratic_crossing(initial):
    b, c = 0.7, 3.1
    result = critical_step(lambda t: -b * t + 0.5 * c * t * t, initial=initial, rtol=1e-12)
    assert result.status == "found"
    assert result.step == pytest.approx(2 * b / c, rel=1e-11)
    assert result.lower <= 2 * b / c <= result.step
    assert result.num_evaluations < 80


def test_line_search_edge_cases():
    assert critical_step(lambda t: t).status == "rises at once"
    assert critical_step(lambda t: t).step == 0.0
    never = critical_step(lambda t: -t)
    assert never.status == "never rises" and never.step == math.inf
    blowup = critical_step(lambda t: -t if t < 2.0 else math.nan, rtol=1e-9)
    assert blowup.step == pytest.approx(2.0, rel=1e-8)  # a non-finite loss counts as a rise
    with pytest.raises(FloatingPointError):
        critical_step(lambda t: math.inf)
    with pytest.raises(ValueError, match="initial"):
        critical_step(lambda t: t, initial=0.0)


# -- through a Problem and the optimizer's own step ----------------------------------------------
def _least_squares(seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Linear(4, 2).to(DTYPE)
    X = torch.randn(30, 4, generator=gen, dtype=DTYPE)
    Y = torch.randn(30, 2, generator=gen, dtype=DTYPE)
    return model, X, Y


def test_gradient_descent_gives_the_rayleigh_quotient_of_the_gradient():
    model, X, Y = _least_squares()
    g, H = gradient_and_hessian(model, nn.functional.mse_loss, X, Y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    result = critical_sharpness(ls.Problem(model, (X, Y), nn.MSELoss()), optimizer=opt, rtol=1e-10)
    assert result.sharpness == pytest.approx(float(g @ H @ g / (g @ g)), rel=1e-8)
    assert result.critical_lr == pytest.approx(2 * float(g @ g / (g @ H @ g)), rel=1e-8)
    assert result.measure == "critical sharpness" and "not whether training diverges" in (
        result.description
    )
    assert any("frozen-state threshold" in n for n in result.notes)


def test_adam_update_and_the_model_left_untouched():
    model, X, Y = _least_squares()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(model(X), Y).backward()
        opt.step()
    opt.zero_grad()
    before = copy.deepcopy((model.state_dict(), opt.state_dict()))
    g, H = gradient_and_hessian(model, nn.functional.mse_loss, X, Y)
    problem = ls.Problem(model, (X, Y), nn.MSELoss())
    delta, _ = update_direction(problem, opt)
    flat_delta = torch.cat([delta[n].reshape(-1) for n in problem.space.names])
    # Adam's next step by hand, from its state
    parts, start = [], 0
    for p in model.parameters():
        st = opt.state[p]
        k = p.numel()
        gp = g[start : start + k].view_as(p)
        s = int(st["step"]) + 1
        m = 0.9 * st["exp_avg"] + 0.1 * gp
        v = 0.999 * st["exp_avg_sq"] + 0.001 * gp * gp
        P = (1 - 0.9**s) * ((v / (1 - 0.999**s)).sqrt() + 1e-8)
        parts.append((-0.01 * m / P).reshape(-1))
        start += k
    torch.testing.assert_close(flat_delta, torch.cat(parts), rtol=1e-12, atol=1e-15)
    result = critical_sharpness(problem, optimizer=opt, rtol=1e-10)
    t_c = 2 * float(-g @ flat_delta) / float(flat_delta @ H @ flat_delta)
    assert result.factor == pytest.approx(t_c, rel=1e-8)
    after = (model.state_dict(), opt.state_dict())
    for key, value in before[0].items():
        assert torch.equal(value, after[0][key])
    assert all(p.grad is None for p in model.parameters())
    for i, st in before[1]["state"].items():
        for key, value in st.items():
            assert torch.equal(value, after[1]["state"][i][key])


class MatrixQuadratic(nn.Module):
    """L(W) = 1/2 <W - W*, A (W - W*)>."""

    def __init__(self, A, W0, target):
        super().__init__()
        self.W = nn.Parameter(W0.clone())
        self.register_buffer("A", A)
        self.register_buffer("target", target)

    def loss(self):
        D = self.W - self.target
        return 0.5 * (D * (self.A @ D)).sum()


def _matrix_problem(m=3, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=DTYPE))
    A = Q @ torch.diag(torch.linspace(1.0, 10.0, m, dtype=DTYPE)) @ Q.T
    model = MatrixQuadratic(
        A,
        torch.randn(m, n, generator=gen, dtype=DTYPE),
        torch.randn(m, n, generator=gen, dtype=DTYPE),
    )
    problem = ls.Problem(model, [torch.zeros(1)], batch_loss=lambda mdl, batch: mdl.loss())
    return model, problem


def test_muon_update_line_search_matches_its_closed_form():
    model, problem = _matrix_problem()
    opt = torch.optim.Muon([model.W], lr=0.02, momentum=0.9)
    for _ in range(3):  # a momentum buffer
        opt.zero_grad()
        model.loss().backward()
        opt.step()
    opt.zero_grad()
    g = (model.A @ (model.W - model.target)).detach()
    delta, _ = update_direction(problem, opt)
    D = delta["W"]
    # the same step by hand, on a copy
    twin = copy.deepcopy(opt)
    W = twin.param_groups[0]["params"][0]
    before = W.detach().clone()
    W.grad = g.clone()
    twin.step()
    torch.testing.assert_close(D, W.detach() - before, rtol=0, atol=0)
    result = critical_sharpness(problem, optimizer=opt, rtol=1e-10)
    t_c = 2 * float((-g * D).sum()) / float((D * (model.A @ D)).sum())
    assert result.factor == pytest.approx(t_c, rel=1e-8)
    assert result.sharpness == pytest.approx(2 / (t_c * 0.02), rel=1e-8)


def test_exact_orthogonal_update_closed_form():
    model, _ = _matrix_problem()
    g = (model.A @ (model.W - model.target)).detach()
    U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    direction = polar(g)
    torch.testing.assert_close(direction, U @ Vh)
    W0 = model.W.detach().clone()

    def loss_along(t):
        D = W0 - t * direction - model.target
        return float(0.5 * (D * (model.A @ D)).sum())

    expected = 2 * float(S.sum()) / float(torch.trace(U.T @ model.A @ U))
    assert critical_step(loss_along, rtol=1e-12).step == pytest.approx(expected, rel=1e-10)


def test_muon_with_adamw_for_the_rest_of_a_network():
    model, X, y = tanh_classifier((4, 8, 3), n=40, seed=0)
    with pytest.raises(ValueError, match="2D parameters"):
        torch.optim.Muon(model.parameters())  # torch 2.13: Muon only accepts matrices
    muon, adamw = muon_with_adamw(model, X, y, steps=5)
    problem = ls.Problem(model, (X, y), nn.CrossEntropyLoss())
    both = critical_sharpness(problem, optimizer=[muon, adamw])
    assert both.optimizer == "Muon + AdamW"
    assert 0 < both.critical_lr < math.inf and both.num_evaluations < 40
    alone = critical_sharpness(problem, optimizer=muon)
    assert any("trained by no given optimizer" in n for n in alone.notes)


OPTIMIZERS = {name: {} for name in TORCH_OPTIMIZERS if name != "Muon"} | {
    "LBFGS": {"lr": 0.1, "max_iter": 3},
    "SGD": {"lr": 0.1},
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_torch_optimizer_has_a_critical_sharpness(name):
    model, X, y = tanh_classifier(n=20)
    opt = getattr(torch.optim, name)(model.parameters(), **OPTIMIZERS[name])
    problem = ls.Problem(model, (X, y), nn.CrossEntropyLoss())
    result = critical_sharpness(problem, optimizer=opt)
    assert result.critical_lr > 0 and result.update_norm > 0
    assert math.isfinite(result.loss)


def test_sparse_adam_gets_sparse_gradients():
    model, X, Y = sparse_embedding_regression(vocab=5, dim=2, n=12)
    opt = torch.optim.SparseAdam(list(model[0].parameters()), lr=1e-2)
    problem = ls.Problem(model, (X, Y), nn.MSELoss(), params="0")
    result = critical_sharpness(problem, optimizer=opt)
    assert 0 < result.critical_lr < math.inf


def test_a_third_party_optimizer_is_measured():
    model, X, Y = _least_squares()
    g, H = gradient_and_hessian(model, nn.functional.mse_loss, X, Y)
    result = critical_sharpness(
        ls.Problem(model, (X, Y), nn.MSELoss()),
        optimizer=SignDescent(model.parameters(), 0.01),
        rtol=1e-10,
    )
    u = g.sign()
    assert result.critical_lr == pytest.approx(2 * float(g @ u) / float(u @ H @ u), rel=1e-8)


# -- generalized sharpness ------------------------------------------------------------------------
@pytest.mark.parametrize(("m", "n"), [(3, 5), (5, 3), (4, 4)])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_generalized_sharpness_closed_form(m, n, scale):
    gen = torch.Generator().manual_seed(m * 10 + n)
    Q, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=DTYPE))
    eigs = torch.linspace(0.5, 7.0, m, dtype=DTYPE)
    A = Q @ torch.diag(eigs) @ Q.T
    H = DenseOperator(torch.kron(A, torch.eye(n, dtype=DTYPE)))  # H[D] = A D
    space = ls.ParamSpace(("W",), (torch.Size([m, n]),), DTYPE, torch.device("cpu"))
    result = generalized_sharpness(H, space, {"W": scale}, lr=0.1)
    expected = scale**2 * float(eigs.sort(descending=True).values[: min(m, n)].sum())
    assert result.sharpness == pytest.approx(expected, rel=1e-8)
    assert result.sharpness <= result.upper_bound * (1 + 1e-9)
    assert result.threshold == pytest.approx(20.0)
    D = result.direction.view(m, n)
    assert float(torch.linalg.matrix_norm(D, ord=2)) == pytest.approx(scale, rel=1e-9)


def test_muon_scales_follow_torch():
    a = nn.Parameter(torch.zeros(8, 2))
    b = nn.Parameter(torch.zeros(2, 8))
    scales = muon_scales(torch.optim.Muon([a, b]), {"a": a, "b": b})
    assert scales == {"a": 2.0, "b": 1.0}
    moonshot = muon_scales(torch.optim.Muon([a], adjust_lr_fn="match_rms_adamw"), {"a": a})
    assert moonshot["a"] == pytest.approx(0.2 * math.sqrt(8))
