"""Frozen-state thresholds on a small network, against independent computations.

1. For every linear torch.optim optimizer, after a few training steps: the preconditioned
   sharpness and lr_max that landscape predicts (Lanczos on the Hessian operator) against the
   dense Hessian by double-backward rows (tests/oracles.py) with the preconditioner rebuilt
   here from ``optimizer.state_dict()`` (from torch's update rules), and lr_max from the
   spectral radius of the top mode's transition matrix written here from the same rules.
2. Where the free-running optimizer does diverge (the SGD family; RAdam while it is in its
   SGD-like warm-up, which lasts forever for beta2 <= 2/3): the prediction against the
   divergence learning rate found by bisection with training bursts.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from optimizer_cases import DTYPE, sparse_embedding_regression
from oracles import exact_hessian
from torch import nn

import landscape as ls
from landscape.metrics.optimizers import frozen_stability, linearize

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0, n=24):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=gen, dtype=DTYPE)
    Y = torch.randn(n, 2, generator=gen, dtype=DTYPE)
    return X, Y


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(DTYPE)


def _mse(model, batch):
    return nn.functional.mse_loss(model(batch[0]), batch[1])


# -- the preconditioner, from the state dict ---------------------------------------------------
def _rule(cls_name, group, state):
    """(P flat, coupled wd, per-mode matrix as a function of (lr, a)), from torch's step."""
    t = float(state["step"]) if "step" in state else 0.0
    s = t + 1
    wd = group.get("weight_decay", 0.0)
    decoupled = bool(group.get("decoupled_weight_decay", False)) or cls_name == "AdamW"
    coupled = 0.0 if decoupled else wd

    def ema(beta, decay_w=0.0, A=0.0, B=1.0):
        def matrix(lr, a):
            return np.array(
                [
                    [1 - lr * decay_w - lr * a * (A + B * (1 - beta)), -lr * B * beta],
                    [(1 - beta) * a, beta],
                ]
            )

        return matrix

    if cls_name in ("Adam", "AdamW"):
        b1, b2 = group["betas"]
        v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
        P = (1 - b1**s) * ((v / (1 - b2**s)).sqrt() + group["eps"])
        return P, coupled, ema(b1, wd if decoupled else 0.0)
    if cls_name == "Adamax":
        b1, _ = group["betas"]
        return (1 - b1**s) * state["exp_inf"], wd, ema(b1)
    if cls_name == "RMSprop":
        v = state["square_avg"]
        if group["centered"]:
            v = v - state["grad_avg"] ** 2
        P = v.sqrt() + group["eps"]
        mu = group["momentum"]
        if mu > 0:
            return P, wd, lambda lr, a: np.array([[1 - lr * a, -lr * mu], [a, mu]])
        return P, wd, lambda lr, a: np.array([[1 - lr * a]])
    if cls_name == "Adagrad":
        clr_factor = 1 + t * group["lr_decay"]  # clr = lr / (1 + (s - 1) lr_decay)
        P = (state["sum"].sqrt() + group["eps"]) * clr_factor
        return P, wd, lambda lr, a: np.array([[1 - lr * a]])
    if cls_name == "Adadelta":
        eps = group["eps"]
        P = (state["square_avg"] + eps).sqrt() / (state["acc_delta"] + eps).sqrt()
        return P, wd, lambda lr, a: np.array([[1 - lr * a]])
    if cls_name == "NAdam":
        b1, b2 = group["betas"]
        psi = group["momentum_decay"]
        mu = b1 * (1 - 0.5 * 0.96 ** (s * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((s + 1) * psi))
        prod = float(state["mu_product"]) * mu
        A = (1 - mu) / (1 - prod)
        B = mu_next / (1 - prod * mu_next)
        P = (state["exp_avg_sq"] / (1 - b2**s)).sqrt() + group["eps"]
        return P, coupled, ema(b1, wd if decoupled else 0.0, A, B)
    if cls_name == "RAdam":
        b1, b2 = group["betas"]
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * s * b2**s / (1 - b2**s)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            P = (
                (1 - b1**s)
                * (state["exp_avg_sq"].sqrt() + group["eps"])
                / (r * math.sqrt(1 - b2**s))
            )
        else:
            P = torch.full_like(state["exp_avg_sq"], 1 - b1**s)
        return P, coupled, ema(b1, wd if decoupled else 0.0)
    if cls_name == "ASGD":
        lambd, alpha = group["lambd"], group["alpha"]

        def asgd(lr, a):
            eta = lr / (1 + lambd * lr * t) ** alpha
            return np.array([[1 - lambd * eta - eta * a]])

        return None, wd, asgd
    raise AssertionError(cls_name)


def _adafactor_rule(group, state, p):
    s = float(state["step"]) + 1
    eps1, eps2 = group["eps"]
    eps1 = torch.finfo(p.dtype).eps if eps1 is None else eps1
    if p.dim() > 1:
        r, c = state["row_var"], state["col_var"]
        V = r @ c / r.mean(dim=-2, keepdim=True).clamp(min=eps1)
    else:
        V = state["variance"]
    rms = float(p.detach().norm()) / math.sqrt(p.numel())
    P = V.clamp(min=eps1**2).sqrt() / max(eps2, rms)
    cap, w = 1 / math.sqrt(s), group["weight_decay"]
    return P, 0.0, lambda lr, a: np.array([[1 - lr * w - min(lr, cap) * a]])


def _independent(opt, model, names):
    """P, coupled weight decay (flat) and the top mode's matrix, from opt.state_dict()."""
    sd = opt.state_dict()
    order = [p for g in opt.param_groups for p in g["params"]]
    named = dict(model.named_parameters())
    index = {id(p): i for i, p in enumerate(order)}
    group_of = {i: g for g in sd["param_groups"] for i in g["params"]}
    Ps, Ws, matrix = [], [], None
    for name in names:
        p = named[name]
        i = index[id(p)]
        state, group = sd["state"].get(i, {}), group_of[i]
        if type(opt).__name__ == "Adafactor":
            P, wd, matrix = _adafactor_rule(group, state, p)
        elif isinstance(opt, torch.optim.SGD):
            mu, d = group["momentum"], group["dampening"]
            P, wd = None, group["weight_decay"]
            if mu == 0:
                matrix = lambda lr, a: np.array([[1 - lr * a]])  # noqa: E731
            elif group["nesterov"]:
                matrix = lambda lr, a, mu=mu: np.array(  # noqa: E731
                    [[1 - lr * a * (1 + mu), -lr * mu * mu], [a, mu]]
                )
            else:
                matrix = lambda lr, a, mu=mu, d=d: np.array(  # noqa: E731
                    [[1 - lr * (1 - d) * a, -lr * mu], [(1 - d) * a, mu]]
                )
        else:
            P, wd, matrix = _rule(type(opt).__name__, group, state)
        Ps.append(torch.ones(p.numel(), dtype=DTYPE) if P is None else P.reshape(-1).to(DTYPE))
        Ws.append(torch.full((p.numel(),), float(wd), dtype=DTYPE))
    return torch.cat(Ps), torch.cat(Ws), matrix


def _lr_limit(matrix, a):
    """The smallest lr at which the top mode's transition matrix has spectral radius 1."""

    def radius(lr):
        return np.abs(np.linalg.eigvals(matrix(lr, a))).max()

    hi = 1e-12
    while radius(hi) < 1:
        hi *= 2
        assert hi < 1e12
    lo = hi / 2
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if radius(mid) < 1 else (lo, mid)
    return hi


CASES = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "SGD momentum + wd": lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, weight_decay=0.1),
    "SGD Nesterov": lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, nesterov=True),
    "SGD dampening": lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, dampening=0.5),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "Adam amsgrad + wd": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=0.1),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.5),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3),
    "RMSprop centered momentum": lambda ps: torch.optim.RMSprop(
        ps, lr=1e-3, centered=True, momentum=0.9
    ),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2, lr_decay=0.1, weight_decay=0.01),
    "Adadelta": lambda ps: torch.optim.Adadelta(ps, lr=1.0),
    "Adamax": lambda ps: torch.optim.Adamax(ps, lr=1e-2),
    "NAdam": lambda ps: torch.optim.NAdam(ps, lr=1e-2),
    "NAdam decoupled": lambda ps: torch.optim.NAdam(
        ps, lr=1e-2, weight_decay=0.5, decoupled_weight_decay=True
    ),
    "RAdam": lambda ps: torch.optim.RAdam(ps, lr=1e-2),
    "RAdam warm-up": lambda ps: torch.optim.RAdam(ps, lr=1e-2, betas=(0.9, 0.5)),
    "ASGD": lambda ps: torch.optim.ASGD(ps, lr=1e-2, lambd=0.5),
    "Adafactor": lambda ps: torch.optim.Adafactor(ps, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_prediction_matches_dense_hessian_and_state_dict(name):
    model = _mlp()
    X, Y = _data()
    opt = CASES[name](list(model.parameters()))
    for _ in range(10):
        opt.zero_grad()
        _mse(model, (X, Y)).backward()
        opt.step()
    problem = ls.Problem(model, (X, Y), nn.MSELoss())
    lin = linearize(opt, problem)
    result = frozen_stability(ls.hessian(problem), lin, tol=1e-10)

    names = list(problem.space.names)
    H = exact_hessian(model, [(X, Y)], _mse, names)
    P, W, matrix = _independent(opt, model, names)
    if lin.preconditioner is None:
        assert bool((P == 1).all())
    else:
        torch.testing.assert_close(lin.preconditioner, P, rtol=1e-13, atol=0)
    d = P.rsqrt()
    A = d[:, None] * (H + torch.diag(W)) * d[None, :]
    a = float(torch.linalg.eigvalsh(A).max())
    assert result.sharpness == pytest.approx(a, rel=1e-8)
    assert result.lr_max == pytest.approx(_lr_limit(matrix, a), rel=1e-8)


def test_sparse_adam_on_an_embedding():
    torch.manual_seed(0)
    model, X, Y = sparse_embedding_regression(vocab=6, dim=3, n=30)
    sparse = torch.optim.SparseAdam(list(model[0].parameters()), lr=1e-2)
    dense = torch.optim.Adam(list(model[2].parameters()), lr=1e-2)
    for _ in range(8):
        sparse.zero_grad()
        dense.zero_grad()
        _mse(model, (X, Y)).backward()
        sparse.step()
        dense.step()
    problem = ls.Problem(model, (X, Y), nn.MSELoss(), params="0")
    lin = linearize(sparse, problem)
    # products run with dense embedding gradients (the same values); the flag is restored
    result = frozen_stability(ls.hessian(problem), lin, tol=1e-10)
    assert model[0].sparse is True
    model[0].sparse = False  # the double-backward oracle needs dense embedding gradients
    state = sparse.state_dict()["state"][0]
    s = state["step"] + 1
    P = (1 - 0.9**s) * (state["exp_avg_sq"].sqrt() + 1e-8) / math.sqrt(1 - 0.999**s)
    torch.testing.assert_close(lin.preconditioner, P.reshape(-1), rtol=1e-13, atol=0)
    H = exact_hessian(model, [(X, Y)], _mse, ["0.weight"])
    d = P.reshape(-1).rsqrt()
    a = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max())
    assert result.sharpness == pytest.approx(a, rel=1e-8)
    assert result.lr_max == pytest.approx(38.0 / a, rel=1e-10)


# -- free-running divergence ----------------------------------------------------------------------
def _teacher_problem():
    """A 2-4-1 tanh network at an exact minimum: targets are its own outputs."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(DTYPE)
    X = torch.randn(16, 2, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    with torch.no_grad():
        Y = model(X)
    return model, X, Y


def _diverges(model, X, Y, make_optimizer, lr, delta, steps=1500):
    clone = copy.deepcopy(model)
    params = list(clone.parameters())
    start = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, u in zip(params, delta):
            p.add_(u)
    opt = make_optimizer(params, lr)
    d0 = math.sqrt(sum(float(u.square().sum()) for u in delta))
    for _ in range(steps):
        opt.zero_grad()
        _mse(clone, (X, Y)).backward()
        opt.step()
        d = math.sqrt(sum(float((p.detach() - s).square().sum()) for p, s in zip(params, start)))
        if not d < 1e3 * d0:
            return True
    return d > d0


def _bisect_divergence(model, X, Y, make_optimizer, guess, delta):
    lo, hi = 0.5 * guess, 2.0 * guess
    assert not _diverges(model, X, Y, make_optimizer, lo, delta)
    assert _diverges(model, X, Y, make_optimizer, hi, delta)
    for _ in range(7):
        mid = math.sqrt(lo * hi)
        if _diverges(model, X, Y, make_optimizer, mid, delta):
            hi = mid
        else:
            lo = mid
    return math.sqrt(lo * hi)


def _radam_after(steps, model):
    """RAdam(beta2 = 0.5) that has taken ``steps`` steps at the minimum (zero gradients)."""
    opt = torch.optim.RAdam(list(model.parameters()), lr=1e-2, betas=(0.9, 0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for _ in range(steps):
        opt.step()
    for p in model.parameters():
        p.grad = None
    return opt


FREE = {
    "SGD": lambda ps, lr: torch.optim.SGD(ps, lr=lr),
    "SGD momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    "SGD Nesterov": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True),
    "SGD dampening": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.5, dampening=0.5),
    "RAdam warm-up (beta2 = 0.5)": "radam",
}


@pytest.mark.parametrize("name", list(FREE))
def test_prediction_within_10_percent_of_the_divergence_lr(name):
    model, X, Y = _teacher_problem()
    problem = ls.Problem(model, (X, Y), nn.MSELoss())
    if FREE[name] == "radam":
        reference = _radam_after(200, model)
        state = copy.deepcopy(reference.state_dict())

        def make(ps, lr):
            opt = torch.optim.RAdam(ps, lr=lr, betas=(0.9, 0.5))
            opt.load_state_dict(copy.deepcopy(state))
            for g in opt.param_groups:
                g["lr"] = lr
            return opt

    else:
        make = FREE[name]
        reference = make(list(model.parameters()), 1e-3)
    lin = linearize(reference, problem)
    predicted = frozen_stability(ls.hessian(problem), lin, tol=1e-10)
    gen = torch.Generator().manual_seed(5)
    delta = [1e-6 * torch.randn(p.shape, generator=gen, dtype=DTYPE) for p in model.parameters()]
    observed = _bisect_divergence(model, X, Y, make, predicted.lr_max, delta)
    assert observed / predicted.lr_max == pytest.approx(1.0, abs=0.1), (observed, predicted.lr_max)
