"""Frozen-state thresholds of every linear torch.optim step, proven against the optimizer's step.

For each optimizer: on L = 1/2 theta^T H theta (float64, a few dimensions) its state is warmed
up by random gradients, then held fixed — before every step the accumulators are set so that
the step's own update of them lands exactly on the frozen values (step counters and NAdam's
momentum product reset) — and its own ``step`` runs at 0.95x and 1.05x of the learning rate
the linearization predicts: the iterates must contract and grow respectively. The momentum
buffers are not held: they are part of the linear dynamics.

The "hold" functions below are written from torch 2.13's update code, not from landscape.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from optimizer_cases import DTYPE, torch_optimizer_classes

from landscape.metrics.optimizers import (
    FrozenLinearization,
    MissingOptimizerState,
    ModeRecursion,
    NotLinearizable,
    describe_optimizer,
    linearize,
    radam_rectification,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- holding the state fixed (from torch's own update rules) -------------------------------------
def _g(group, p, coupled=True):
    g = p.grad.to_dense() if p.grad.is_sparse else p.grad
    wd = group.get("weight_decay", 0.0)
    if wd and coupled and not group.get("decoupled_weight_decay", False):
        g = g + wd * p.detach()
    return g


def _copy_counter(state, frozen, key="step"):
    if isinstance(state[key], torch.Tensor):
        state[key].copy_(frozen[key])
    else:
        state[key] = frozen[key]


def hold_ema_sq(opt, frozen, coupled=True):  # Adam, AdamW, NAdam, RAdam, SparseAdam
    for group in opt.param_groups:
        _, beta2 = group["betas"]
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            g = _g(group, p, coupled)
            _copy_counter(state, fr)
            state["exp_avg_sq"].copy_((fr["exp_avg_sq"] - (1 - beta2) * g * g) / beta2)
            if "max_exp_avg_sq" in state:
                state["max_exp_avg_sq"].copy_(fr["max_exp_avg_sq"])
            if "mu_product" in state:
                _copy_counter(state, fr, "mu_product")


def hold_rmsprop(opt, frozen):
    for group in opt.param_groups:
        alpha = group["alpha"]
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            g = _g(group, p)
            _copy_counter(state, fr)
            state["square_avg"].copy_((fr["square_avg"] - (1 - alpha) * g * g) / alpha)
            if group["centered"]:
                state["grad_avg"].copy_((fr["grad_avg"] - (1 - alpha) * g) / alpha)


def hold_adagrad(opt, frozen):
    for group in opt.param_groups:
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            g = _g(group, p)
            _copy_counter(state, fr)
            state["sum"].copy_(fr["sum"] - g * g)


def hold_adadelta(opt, frozen):
    for group in opt.param_groups:
        rho = group["rho"]
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            g = _g(group, p)
            _copy_counter(state, fr)
            state["square_avg"].copy_((fr["square_avg"] - (1 - rho) * g * g) / rho)
            state["acc_delta"].copy_(fr["acc_delta"])  # read before its own update


def hold_adamax(opt, frozen):
    for group in opt.param_groups:
        _, beta2 = group["betas"]
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            g = _g(group, p)
            # max(beta2 * u', |g| + eps) = u exactly while |g| + eps <= u
            assert bool((g.abs() + group["eps"] <= fr["exp_inf"]).all())
            _copy_counter(state, fr)
            state["exp_inf"].copy_(fr["exp_inf"] / beta2)


def hold_asgd(opt, frozen):
    for group in opt.param_groups:
        lr, lambd, alpha = group["lr"], group["lambd"], group["alpha"]
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            _copy_counter(state, fr)
            t = float(fr["step"])
            state["eta"].copy_(torch.as_tensor(lr / ((1 + lambd * lr * t) ** alpha)))


def hold_adafactor(opt, frozen):
    for group in opt.param_groups:
        for p in group["params"]:
            state, fr = opt.state[p], frozen[p]
            g = p.grad
            _copy_counter(state, fr)
            beta = (float(fr["step"]) + 1) ** group["beta2_decay"]
            if p.dim() > 1:
                row_mean = (g * g).mean(dim=-1, keepdim=True)
                col_mean = (g * g).mean(dim=-2, keepdim=True)
                state["row_var"].copy_((fr["row_var"] - beta * row_mean) / (1 - beta))
                state["col_var"].copy_((fr["col_var"] - beta * col_mean) / (1 - beta))
            else:
                state["variance"].copy_((fr["variance"] - beta * g * g) / (1 - beta))


def hold_nothing(opt, frozen):
    pass


# -- the quadratic --------------------------------------------------------------------------------
SHAPES = {"a": (4,), "b": (2, 3)}


def _quadratic(seed=0):
    gen = torch.Generator().manual_seed(seed)
    dim = sum(math.prod(s) for s in SHAPES.values())
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DTYPE))
    eigs = torch.logspace(0, 2, dim, dtype=DTYPE)  # curvatures 1 ... 100
    return Q @ torch.diag(eigs) @ Q.T


def _params():
    return {n: torch.nn.Parameter(torch.zeros(s, dtype=DTYPE)) for n, s in SHAPES.items()}


def _flat(params):
    return torch.cat([p.detach().reshape(-1) for p in params.values()])


def _set(params, theta):
    with torch.no_grad():
        start = 0
        for p in params.values():
            p.copy_(theta[start : start + p.numel()].view_as(p))
            start += p.numel()


def _put_gradient(params, g, sparse=False):
    start = 0
    for p in params.values():
        part = g[start : start + p.numel()].view_as(p).clone()
        p.grad = part.to_sparse() if sparse else part
        start += p.numel()


def _warm_up(opt, params, steps, scale, seed=1):
    """Give the optimizer a non-trivial state from random gradients; parameters unchanged."""
    gen = torch.Generator().manual_seed(seed)
    dim = sum(p.numel() for p in params.values())
    spread = torch.logspace(-1, 1, dim, dtype=DTYPE) * scale
    before = _flat(params)
    sparse = isinstance(opt, torch.optim.SparseAdam)
    for _ in range(steps):
        _put_gradient(params, torch.randn(dim, generator=gen, dtype=DTYPE) * spread, sparse)
        opt.step()
    _set(params, before)
    for state in opt.state.values():
        for key in ("exp_avg", "momentum_buffer"):  # a clean start for the momentum
            if isinstance(state.get(key), torch.Tensor):
                state[key].zero_()


def _run(opt, params, H, theta0, lr, hold, frozen, steps, sparse=False):
    """Norm of the iterate after ``steps`` frozen-state steps, relative to the start."""
    for group in opt.param_groups:
        group["lr"] = lr
    _set(params, theta0)
    start = float(theta0.norm())
    for _ in range(steps):
        _put_gradient(params, H @ _flat(params), sparse)
        hold(opt, frozen)
        opt.step()
        ratio = float(_flat(params).norm()) / start
        if not ratio < 1e3:  # grown clearly (and before any nonlinearity: clipping, RMS)
            return ratio
    return float(_flat(params).norm()) / start


def _preconditioned_sharpness(lin: FrozenLinearization, H: torch.Tensor) -> float:
    A = H.clone()
    if lin.weight_decay is not None:
        A = A + torch.diag(lin.weight_decay)
    if lin.preconditioner is not None:
        d = lin.preconditioner.rsqrt()
        A = d[:, None] * A * d[None, :]
    return float(torch.linalg.eigvalsh(A).max())


def _make(cls, params, **kw):
    return cls(list(params.values()), **kw)


def _case(name, cls, hold, warm, scale=1.0, **settings):
    """(name, constructor, hold, warm-up steps, gradient scale of the warm-up)."""
    return (name, lambda ps: _make(cls, ps, **settings), hold, warm, scale)


CASES = [
    _case("SGD", torch.optim.SGD, hold_nothing, 0, lr=0.01),
    _case("SGD momentum", torch.optim.SGD, hold_nothing, 0, lr=0.01, momentum=0.9),
    _case("SGD Nesterov", torch.optim.SGD, hold_nothing, 0, lr=0.01, momentum=0.9, nesterov=True),
    _case(
        "SGD dampening + coupled wd",
        torch.optim.SGD,
        hold_nothing,
        0,
        lr=0.01,
        momentum=0.8,
        dampening=0.3,
        weight_decay=20.0,
    ),
    _case("Adam", torch.optim.Adam, hold_ema_sq, 7, lr=1e-3),
    _case(
        "Adam amsgrad + coupled wd",
        torch.optim.Adam,
        hold_ema_sq,
        30,
        lr=1e-3,
        amsgrad=True,
        weight_decay=3.0,
    ),
    _case("AdamW (decoupled wd)", torch.optim.AdamW, hold_ema_sq, 30, lr=1e-3, weight_decay=1.0),
    _case("RMSprop", torch.optim.RMSprop, hold_rmsprop, 20, lr=1e-3),
    _case(
        "RMSprop centered + momentum + wd",
        torch.optim.RMSprop,
        hold_rmsprop,
        20,
        lr=1e-3,
        centered=True,
        momentum=0.5,
        weight_decay=5.0,
    ),
    _case("Adagrad with lr decay", torch.optim.Adagrad, hold_adagrad, 10, lr=1e-2, lr_decay=0.05),
    _case("Adadelta", torch.optim.Adadelta, hold_adadelta, 10, lr=1.0),
    _case("Adamax", torch.optim.Adamax, hold_adamax, 10, lr=1e-3),
    _case("NAdam early", torch.optim.NAdam, hold_ema_sq, 10, lr=1e-3),
    _case(
        "NAdam late, decoupled wd",
        torch.optim.NAdam,
        hold_ema_sq,
        3000,
        lr=1e-3,
        weight_decay=1.0,
        decoupled_weight_decay=True,
    ),
    _case("RAdam rectified", torch.optim.RAdam, hold_ema_sq, 50, lr=1e-3),
    _case("RAdam warm-up", torch.optim.RAdam, hold_ema_sq, 2, lr=1e-3),
    _case(
        "RAdam decoupled wd",
        torch.optim.RAdam,
        hold_ema_sq,
        20,
        lr=1e-3,
        weight_decay=1.0,
        decoupled_weight_decay=True,
    ),
    _case("SparseAdam", torch.optim.SparseAdam, hold_ema_sq, 10, lr=1e-3),
    _case("ASGD", torch.optim.ASGD, hold_asgd, 20, lr=1e-2, lambd=0.5, t0=5),
    _case(
        "Adafactor (linear part), decoupled wd",
        torch.optim.Adafactor,
        hold_adafactor,
        10,
        scale=1e-3,
        lr=1e-2,
        weight_decay=5.0,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "hold", "warm", "scale"), CASES, ids=[c[0] for c in CASES]
)
def test_frozen_step_contracts_below_and_grows_above_the_prediction(name, make, hold, warm, scale):
    H = _quadratic()
    params = _params()
    opt = make(params)
    _warm_up(opt, params, warm, scale)
    theta0 = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    theta0 = theta0 * 1e-9  # tiny: Adamax's max, Adafactor's RMS(theta) and clipping stay idle
    _set(params, theta0)
    lin = linearize(opt, params)
    a = _preconditioned_sharpness(lin, H)
    lr_star = lin.max_lr(a)
    assert math.isfinite(lr_star) and lr_star > 0
    frozen = {p: copy.deepcopy(dict(s)) for p, s in opt.state.items()}
    sparse = isinstance(opt, torch.optim.SparseAdam)
    state0 = copy.deepcopy(opt.state_dict())
    ratios = {}
    for factor in (0.95, 1.05):
        opt.load_state_dict(copy.deepcopy(state0))
        ratios[factor] = _run(opt, params, H, theta0, factor * lr_star, hold, frozen, 4000, sparse)
    assert ratios[0.95] < 0.5, (name, lr_star, ratios)
    assert ratios[1.05] > 100.0, (name, lr_star, ratios)


def test_the_frozen_test_can_fail():
    """Control: with momentum ignored (coefficient 2 instead of 3) RMSprop's 'threshold' is too
    low, and 1.05x of it still contracts."""
    H = _quadratic()
    params = _params()
    opt = torch.optim.RMSprop(list(params.values()), lr=1e-3, momentum=0.5)
    _warm_up(opt, params, 20, 1.0)
    theta0 = 1e-9 * torch.randn(H.shape[0], generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    _set(params, theta0)
    lin = linearize(opt, params)
    a = _preconditioned_sharpness(lin, H)
    wrong = 2.0 / a
    assert lin.max_lr(a) == pytest.approx(3.0 / a)
    frozen = {p: copy.deepcopy(dict(s)) for p, s in opt.state.items()}
    assert _run(opt, params, H, theta0, 1.05 * wrong, hold_rmsprop, frozen, 4000) < 0.5


# -- the recursion's closed form against the companion matrix ------------------------------------
@pytest.mark.parametrize(
    "rule",
    [
        ModeRecursion(),
        ModeRecursion(0.9, 1.0, 0.0, 1.0),
        ModeRecursion(0.9, 0.7, 0.0, 1.0),
        ModeRecursion(0.9, 1.0, 1.0, 0.9),
        ModeRecursion(0.99, 0.01, 0.0, 1.0),
        ModeRecursion(0.9, 0.1, 0.55, 1.6),  # an early NAdam step
        ModeRecursion(0.9, 0.1, 0.1, 0.9),  # a late NAdam step
        ModeRecursion(0.3, 1.0, 2.0, 0.2),  # the determinant condition binds
    ],
)
@pytest.mark.parametrize("decay", [0.0, 0.01, 0.3])
def test_closed_form_coefficient_matches_the_spectral_radius(rule, decay):
    c = rule.coefficient(decay)
    assert rule.numerical_coefficient(decay) == pytest.approx(c, rel=1e-10)
    assert rule.spectral_radius(0.999 * c, decay) < 1.0 < rule.spectral_radius(1.001 * c, decay)


def test_textbook_coefficients():
    assert ModeRecursion().coefficient() == pytest.approx(2.0)
    assert ModeRecursion(0.9, 1.0, 0.0, 1.0).coefficient() == pytest.approx(3.8)
    assert ModeRecursion(0.9, 1.0, 1.0, 0.9).coefficient() == pytest.approx(3.8 / 2.8)
    assert ModeRecursion(0.9, 0.1, 0.0, 1.0).coefficient() == pytest.approx(38.0)
    assert ModeRecursion(0.9, 0.5, 0.0, 1.0).coefficient() == pytest.approx(3.8 / 0.5)


@pytest.mark.parametrize("schedule", ["constant", "capped", "asgd"])
def test_max_lr_is_the_edge_of_is_stable(schedule):
    params = {"constant": (), "capped": (0.05,), "asgd": (0.5, 0.75, 20.0)}[schedule]
    lin = FrozenLinearization(
        "X",
        1e-2,
        ModeRecursion(0.9, 0.1, 0.2, 0.9),
        decoupled_weight_decay=2.0,
        schedule=schedule,
        schedule_params=params,
    )
    for a in (10.0, 300.0, 1e4):
        lr = lin.max_lr(a)
        assert lin.is_stable(a, lr * (1 - 1e-9)) and not lin.is_stable(a, lr * (1 + 1e-9))


def test_capped_step_can_leave_every_lr_stable():
    lin = FrozenLinearization(
        "Adafactor", 1e-2, ModeRecursion(), schedule="capped", schedule_params=(0.1,)
    )
    assert lin.max_lr(10.0) == math.inf  # 0.1 x 10 < 2: no learning rate makes it unstable
    assert lin.max_lr(40.0) == pytest.approx(0.05)


def test_radam_warm_up_length():
    assert [radam_rectification(0.999, s) is None for s in range(1, 8)] == [True] * 5 + [False] * 2
    assert radam_rectification(2 / 3 - 1e-9, 10**6) is None


# -- every optimizer is accepted somewhere --------------------------------------------------------
def test_every_torch_optimizer_has_a_measure():
    classes = list(torch_optimizer_classes().values())
    assert len(classes) == 16  # torch 2.13, with the Optimizer base class
    kinds = {cls.__name__: describe_optimizer(cls).measure for cls in classes}
    for name in ("Muon", "Rprop", "LBFGS", "Optimizer"):
        assert kinds[name] == "critical sharpness"
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam"):
        assert kinds[name] == "frozen preconditioner"
    for name in ("RAdam", "SparseAdam", "ASGD", "Adafactor"):
        assert kinds[name] == "frozen preconditioner"


@pytest.mark.parametrize("cls", [torch.optim.Rprop, torch.optim.LBFGS, torch.optim.Muon])
def test_nonlinear_steps_are_not_linearized(cls):
    W = torch.nn.Parameter(torch.randn(3, 2, dtype=DTYPE))
    opt = cls([W], lr=0.1)
    with pytest.raises(NotLinearizable, match="critical sharpness"):
        linearize(opt, {"W": W})


def test_subclass_that_overrides_step_is_not_trusted():
    class Custom(torch.optim.Adam):
        def step(self, closure=None):  # some other update
            return super().step(closure)

    W = torch.nn.Parameter(torch.randn(3, dtype=DTYPE))
    opt = Custom([W])
    with pytest.raises(NotLinearizable, match="overrides step"):
        linearize(opt, {"W": W})
    assert describe_optimizer(opt).measure == "critical sharpness"

    class Plain(torch.optim.AdamW):
        pass

    opt = Plain([W], lr=1e-3)
    W.grad = torch.ones_like(W)
    opt.step()
    assert linearize(opt, {"W": W}).optimizer == "Plain"


def test_adaptive_optimizer_without_state_says_so():
    W = torch.nn.Parameter(torch.randn(3, dtype=DTYPE))
    for opt in (torch.optim.Adam([W]), torch.optim.Adagrad([W])):  # Adagrad: state at step 0
        with pytest.raises(MissingOptimizerState, match="steady-state"):
            linearize(opt, {"W": W})
    lin = linearize(torch.optim.SGD([W], lr=0.1, momentum=0.9), {"W": W})
    assert lin.preconditioner is None and "first step" in lin.notes[0]


def test_groups_with_other_learning_rates_fold_into_the_preconditioner():
    a = torch.nn.Parameter(torch.randn(2, dtype=DTYPE))
    b = torch.nn.Parameter(torch.randn(3, dtype=DTYPE))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.025}], momentum=0.5)
    lin = linearize(opt, {"a": a, "b": b})
    assert lin.lr == 0.1
    assert lin.preconditioner.tolist() == [1.0, 1.0, 4.0, 4.0, 4.0]
    other = torch.optim.SGD(
        [{"params": [a], "momentum": 0.5}, {"params": [b], "momentum": 0.9}], lr=0.1
    )
    with pytest.raises(NotLinearizable, match="different update rules"):
        linearize(other, {"a": a, "b": b})


def test_hold_matches_a_hand_computed_adam_step():
    """The harness itself: a held Adam step equals theta - lr m'/P with P from the frozen state."""
    params = {"w": torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=DTYPE))}
    opt = torch.optim.Adam(list(params.values()), lr=0.1)
    _warm_up(opt, params, 3, 1.0)
    frozen = {p: copy.deepcopy(dict(s)) for p, s in opt.state.items()}
    p = params["w"]
    v, t = frozen[p]["exp_avg_sq"], int(frozen[p]["step"]) + 1
    P = (1 - 0.9**t) * ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    g = torch.tensor([1.0, 2.0], dtype=DTYPE)
    expected = p.detach() - 0.1 * (0.1 * g) / P  # m' = 0.9 * 0 + 0.1 g
    p.grad = g.clone()
    hold_ema_sq(opt, frozen)
    opt.step()
    np.testing.assert_allclose(p.detach().numpy(), expected.numpy(), rtol=1e-13)


def test_epsilon_dominated_coordinates_are_flagged():
    from landscape.metrics.optimizers import frozen_stability
    from landscape.operators.dense import DenseOperator

    w = torch.nn.Parameter(torch.zeros(2, dtype=DTYPE))
    opt = torch.optim.Adam([w], lr=1e-3)
    for _ in range(5):  # the first coordinate never gets a gradient (a pixel that is always 0)
        w.grad = torch.tensor([0.0, 1.0], dtype=DTYPE)
        opt.step()
    lin = linearize(opt, {"w": w})
    assert lin.epsilon.tolist() == pytest.approx([(1 - 0.9**6) * 1e-8] * 2)
    dead = frozen_stability(DenseOperator(torch.diag(torch.tensor([1e-3, 1.0], dtype=DTYPE))), lin)
    assert dead.epsilon_share > 0.99 and "mostly epsilon" in dead.notes[-1]
    alive = frozen_stability(DenseOperator(torch.diag(torch.tensor([0.0, 1.0], dtype=DTYPE))), lin)
    assert alive.epsilon_share < 1e-6 and not any("epsilon" in n for n in alive.notes)
