"""Stability thresholds, Adam's preconditioner, the exact mean-square threshold and lr_max(B).

Ground truth: closed forms on quadratics and linear regression, companion-matrix / Kronecker
computations in parameter space, exact Hessians of the shared test models, and the actual
torch optimizers run on quadratics.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from cases import CASES, cached_exact_hessian
from state import assert_unchanged, snapshot
from torch import nn

import landscape as ls
from landscape.metrics.mean_square import gram_spectrum, mean_square_threshold, nonuniformity
from landscape.metrics.thresholds import (
    adam_preconditioner,
    optimizer_settings,
    stability_threshold,
)

# -- thresholds: run the real torch optimizers on a 1-D quadratic ---------------------------------


def _grows(make_opt, lam, steps=3000):
    theta = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = make_opt([theta])
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * lam * theta**2).sum().backward()
        opt.step()
    return float(theta.detach().abs()) > 1.0


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("sgd", {}),
        ("momentum", {"momentum": 0.9}),
        ("momentum", {"momentum": 0.5, "dampening": 0.3}),
        ("nesterov", {"momentum": 0.9}),
    ],
)
def test_sgd_thresholds_match_torch_optimizers(kind, kwargs):
    lr, lam = 0.1, None
    opt_kwargs = dict(kwargs)
    if kind == "nesterov":
        opt_kwargs["nesterov"] = True
    lam = stability_threshold(
        kind, lr, momentum=kwargs.get("momentum", 0.9), dampening=kwargs.get("dampening", 0.0)
    )
    make = lambda p: torch.optim.SGD(p, lr=lr, **opt_kwargs)  # noqa: E731
    assert not _grows(make, lam * 0.995)
    assert _grows(make, lam * 1.005)
    # the instance reads back the same threshold
    s = optimizer_settings(make([torch.zeros(1, requires_grad=True)]))
    assert s.kind == kind
    assert math.isclose(s.coefficient / lr, lam, rel_tol=1e-12)


def test_adam_threshold_with_frozen_preconditioner():
    # EMA momentum with a frozen diagonal preconditioner P: theta -= lr * m / P.
    beta1, lr, p = 0.9, 0.01, 3.0
    c = stability_threshold("adam", lr, beta1=beta1)
    for lam, grows in ((c * p * 0.995, False), (c * p * 1.005, True)):
        theta, m = 1.0, 0.0
        for _ in range(4000):
            m = beta1 * m + (1 - beta1) * lam * theta
            theta -= lr * m / p
        assert (abs(theta) > 1.0) is grows


def test_adam_preconditioner_reproduces_torch_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-3)
    X = torch.randn(16, 4, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        model(X).pow(2).mean().backward()
        opt.step()
    opt.zero_grad()
    model(X).pow(2).mean().backward()
    space = ls.ParamSpace.from_module(model)
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    m_prev = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in model.parameters()])
    opt.step()
    P = adam_preconditioner(opt, space, dict(model.named_parameters()))
    m = 0.8 * m_prev + 0.2 * grads
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(after, before - 0.01 * m / P, rtol=1e-12, atol=1e-14)


def test_optimizer_settings_errors():
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizer_settings("lbfgs")
    with pytest.raises(TypeError):
        optimizer_settings(3)
    model = nn.Linear(2, 1)
    groups = [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.2}]
    # per-group learning rates: the instance's linearization folds them into P
    s = optimizer_settings(torch.optim.SGD(groups))
    assert (s.kind, s.name, s.key, s.lr) == ("other", "SGD", "SGD", 0.1)
    assert math.isnan(s.coefficient)
    with pytest.raises(ValueError, match="instance"):
        ls.OptimizerSettings("other")
    with pytest.raises(ValueError, match="no state"):
        opt = torch.optim.Adam(model.parameters())
        adam_preconditioner(opt, ls.ParamSpace.from_module(model), dict(model.named_parameters()))


def test_adamw_decay_and_no_decay_groups_are_one_setting():
    # A Hugging Face Trainer's AdamW: a "decay" and a "no decay" group. Decoupled weight
    # decay does not enter the threshold, so the groups agree on everything that does.
    model = nn.Linear(2, 1)

    def groups():
        return [
            {"params": [model.weight], "weight_decay": 0.01},
            {"params": [model.bias], "weight_decay": 0.0},
        ]

    s = optimizer_settings(torch.optim.AdamW(groups(), lr=1e-3))
    assert (s.kind, s.lr, s.weight_decay, s.decoupled_weight_decay) == ("adam", 1e-3, 0.0, 0.01)
    assert s.name == "AdamW"
    # coupled decay per group is a diagonal W in the Hessian: the instance's linearization
    s = optimizer_settings(torch.optim.SGD(groups(), lr=0.1))
    assert (s.kind, s.name) == ("other", "SGD")


# -- exact mean-square threshold against parameter-space Kronecker algebra ------------------------


def _dense_mean_square(Hi, B, n):
    P = Hi.shape[1]
    H = Hi.mean(0)
    p = 0.0 if n <= B else (n - B) / (B * (n - 1))
    eye = torch.eye(P, dtype=torch.float64)
    second = sum(torch.kron(h, h) for h in Hi) / len(Hi)
    Q = (1 - p) * torch.kron(H, H) + p * second
    A = torch.kron(H, eye) + torch.kron(eye, H)
    eta = 1.0 / scipy.linalg.eigh(Q.numpy(), A.numpy(), eigvals_only=True).max()

    def radius(e):
        T = torch.kron(eye - e * H, eye - e * H) + e**2 * p * (second - torch.kron(H, H))
        return np.abs(np.linalg.eigvals(T.numpy())).max()

    return eta, radius


@pytest.mark.parametrize("n, k, P", [(7, 2, 5), (9, 1, 6), (40, 1, 24)])
def test_mean_square_threshold_matches_kronecker(n, k, P):
    g = torch.Generator().manual_seed(n)
    Fi = torch.randn(n, k, P, generator=g, dtype=torch.float64)
    Fi[: n // 3] *= 3.0  # non-uniform curvature across examples
    Hi = torch.einsum("ikp,ikq->ipq", Fi, Fi)
    gram = gram_spectrum(Fi.reshape(n * k, P) @ Fi.reshape(n * k, P).T, k)
    previous = 0.0
    for B in (1, 2, 5, n):
        eta, radius = _dense_mean_square(Hi, B, n)
        ours = mean_square_threshold(gram, B)
        assert ours == pytest.approx(eta, rel=1e-7)
        assert radius(ours * (1 - 1e-5)) <= 1.0 < radius(ours * (1 + 1e-5))
        assert ours >= previous - 1e-12  # non-decreasing in B
        previous = ours
    H = Hi.mean(0)
    lam = float(torch.linalg.eigvalsh(H).max())
    assert mean_square_threshold(gram, n) == pytest.approx(2 / lam, rel=1e-9)
    s2 = torch.linalg.eigvalsh(torch.einsum("ipq,iqr->ipr", Hi, Hi).mean(0) - H @ H).max()
    assert nonuniformity(gram) == pytest.approx(float(s2.sqrt()), rel=1e-9)
    # the sharpness condition is necessary at every batch size
    for B in (1, 3):
        assert mean_square_threshold(gram, B, replacement=True) * lam <= 2 + 1e-9


def test_mean_square_threshold_one_dimension_closed_form():
    # 1-D with replacement: stable iff (1 - eta a)^2 + eta^2 s^2 / B <= 1.
    h = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    gram = gram_spectrum(torch.outer(h.sqrt(), h.sqrt()), 1)
    a, s2 = float(h.mean()), float((h**2).mean() - h.mean() ** 2)
    for B in (1, 2, 4):
        eta = 2 * a / (a**2 + s2 / B)  # root of the closed form
        assert mean_square_threshold(gram, B, replacement=True) == pytest.approx(eta, rel=1e-10)


# -- max_learning_rate on linear regression (closed forms) ---------------------------------------


def _regression(n=48, d=5, outputs=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, outputs).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(outputs, d, generator=g, dtype=torch.float64))
        model.bias.zero_()
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d)
    y = model(X).detach()  # interpolating minimum
    return model, X, y


def _mse_hessian(X):
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    return 2 * A.T @ A / len(X)  # F.mse_loss: mean of (f - y)^2 over samples


def test_full_batch_lr_is_two_over_lambda_and_exact_threshold_agrees():
    model, X, y = _regression()
    before = snapshot(model)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=(1, 4, 16, "full"), num_batches=6)
    assert_unchanged(model, before)
    lam = float(torch.linalg.eigvalsh(_mse_hessian(X)).max())
    assert r.batch_sizes.tolist() == [1, 4, 16, 48]
    assert r.sharpness[-1] == pytest.approx(lam, rel=1e-6)
    assert r.lr_max[-1] == pytest.approx(2 / lam, rel=1e-6)
    assert r.lr_mean_square[-1] == pytest.approx(2 / lam, rel=1e-9)
    assert np.all(np.diff(r.lr_mean_square) >= -1e-12)
    # every sampled batch sharpness is the exact top eigenvalue of its batch Hessian
    assert len(r.sharpness_samples[1]) == 6
    assert np.all(r.lr_max_low <= r.lr_max + 1e-15) and np.all(r.lr_max <= r.lr_max_high + 1e-15)
    # small batches have sharper batch Hessians: lr_max grows with B
    assert r.lr_max[0] < r.lr_max[-1]
    assert 0.0 < r.scaling_exponent < 1.5
    assert r.lr_trace_bound == pytest.approx(2 / float(torch.trace(_mse_hessian(X))), rel=1e-9)
    assert "Mulayoff" in r.table() and r.to_dict()["batch_sizes"].tolist() == [1, 4, 16, 48]


def test_batch_sharpness_samples_are_exact_batch_eigenvalues():
    model, X, y = _regression(n=30)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=(5,), num_batches=3, seed=7, exact=False)
    # replay the same batches from the same generator
    g = torch.Generator().manual_seed(7)
    for value in r.sharpness_samples[0]:
        index = torch.randperm(30, generator=g)[:5]
        torch.randint(0, 2**31 - 1, (1,), generator=g)  # the eigensolver's seed draw
        lam = float(torch.linalg.eigvalsh(_mse_hessian(X[index])).max())
        assert value == pytest.approx(lam, rel=1e-6)


@pytest.mark.parametrize("kind, coefficient", [("momentum", 3.8), ("nesterov", 3.8 / 2.8)])
def test_momentum_coefficients(kind, coefficient):
    model, X, y = _regression(n=20)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=kind, tol=1e-8)
    lam = float(torch.linalg.eigvalsh(_mse_hessian(X)).max())
    assert r.lr_max[0] == pytest.approx(coefficient / lam, rel=1e-6)
    assert r.lr_mean_square is None  # exact threshold only for plain SGD


def test_adam_instance_uses_its_preconditioner():
    model, X, y = _regression(n=20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    with torch.no_grad():
        model.bias.add_(0.1)  # leave the minimum so the state is not trivial
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(model(X), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=opt)
    # P of the next step (s = t + 1 = 4), written from torch's Adam: what step divides by
    s4 = 4
    P = torch.cat(
        [
            (
                (1 - 0.9**s4) * ((opt.state[p]["exp_avg_sq"] / (1 - 0.999**s4)).sqrt() + 1e-4)
            ).reshape(-1)
            for p in model.parameters()
        ]
    ).reshape(-1)
    d = P.rsqrt()
    H = ls.hessian(model, (X, y)).to_dense()
    lam = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max())
    assert r.sharpness[0] == pytest.approx(lam, rel=1e-6)
    assert r.lr_max[0] == pytest.approx(38.0 / lam, rel=1e-6)  # (2 + 2 beta1) / (1 - beta1)
    assert r.current_lr == 1e-3 and "optimizer's state" in r.method
    assert (r.preconditioner, r.measure, r.exactness) == (
        "optimizer state",
        "batch sharpness",
        "frozen state",
    )
    # the last step's P_t (Cohen et al.) is a different, older preconditioner: a control
    P_t = adam_preconditioner(opt, ls.ParamSpace.from_module(model), dict(model.named_parameters()))
    d = P_t.rsqrt()
    older = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max())
    assert abs(r.sharpness[0] / older - 1) > 0.05


def test_adam_steady_state_preconditioner():
    model, X, y = _regression(n=24)
    with torch.no_grad():
        model.bias.add_(0.3)
    r = ls.max_learning_rate(
        model, (X, y), batch_sizes=(6, "full"), optimizer=ls.OptimizerSettings("adam", eps=1e-6)
    )
    A = torch.cat([X, torch.ones(24, 1, dtype=X.dtype)], 1)
    residual = (model(X) - y).detach()[:, 0]
    g = 2 * residual[:, None] * A  # per-example gradients of (f - y)^2
    G, var = g.mean(0), g.var(0, unbiased=False)
    H = _mse_hessian(X)
    for B, value in ((24, r.sharpness[1]), (6, None)):
        p = 0.0 if B == 24 else (24 - B) / (B * 23)
        d = ((G**2 + p * var).sqrt() + 1e-6).rsqrt()
        lam = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max())
        if value is not None:
            assert value == pytest.approx(lam, rel=1e-6)
    assert "steady-state" in r.method


def test_verify_brackets_gradient_descent_threshold():
    model, X, y = _regression(n=32)
    with torch.no_grad():
        model.bias.add_(0.05)  # a nonzero start so stable runs shrink and unstable ones grow
    r = ls.max_learning_rate(
        model,
        (X, y),
        batch_sizes=("full",),
        verify=ls.VerifySettings(factors=(0.9, 1.1), steps=300),
    )
    v = r.verification[0]
    assert v.diverged.tolist() == [False, True]
    assert v.lr_stable == pytest.approx(0.9 * r.lr_max[0]) and v.lr_diverged > v.lr_stable
    assert "diverged" in r.table() or "stable" in r.table()


def test_layernorm_and_transformer_models():
    for case in (c for c in CASES if c.id in ("layernorm_attention", "transformer_layer")):
        model, batches = case.build()
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        H = cached_exact_hessian(case, names)
        before = snapshot(model)
        r = ls.max_learning_rate(model, batches, batch_sizes=(4, "full"), num_batches=2, tol=1e-8)
        assert_unchanged(model, before)
        lam = float(torch.linalg.eigvalsh(H).max())
        assert r.sharpness[-1] == pytest.approx(lam, rel=1e-6)
        assert r.lr_mean_square is not None and np.all(np.isfinite(r.lr_mean_square))


def test_determinism_and_errors():
    model, X, y = _regression(n=20)
    a = ls.max_learning_rate(model, (X, y), batch_sizes=(4, 8), num_batches=3, seed=3)
    b = ls.max_learning_rate(model, (X, y), batch_sizes=(4, 8), num_batches=3, seed=3)
    assert np.array_equal(a.sharpness, b.sharpness)
    with pytest.raises(ValueError, match="positive"):
        ls.max_learning_rate(model, (X, y), batch_sizes=(0,))
    with pytest.raises(ValueError, match="exceeds"):
        ls.max_learning_rate(model, (X, y), batch_sizes=(100,))
    with pytest.raises(ValueError, match="'full'"):
        ls.max_learning_rate(model, (X, y), batch_sizes=("half",))
    with pytest.raises(ValueError, match="num_batches"):
        ls.max_learning_rate(model, (X, y), num_batches=0)
    with pytest.raises(ValueError, match="plain SGD"):
        ls.max_learning_rate(model, (X, y), batch_sizes=(4,), optimizer="momentum", exact=True)


def test_fit_law_recovers_finite_population_law():
    from landscape.metrics.learning_rate import _fit_law

    n = 100
    B = np.array([1.0, 4.0, 16.0, 100.0])
    lam = 3.0 + 5.0 * (n - B) / (B * (n - 1))
    fit = _fit_law(B, lam, n)
    assert fit["a"] == pytest.approx(3.0, rel=1e-12) and fit["b"] == pytest.approx(5.0, rel=1e-12)
    assert fit["b_star"] == pytest.approx(5.0 / 3.0, rel=1e-12)


def test_verify_detects_instability_from_an_exact_minimum():
    # At an exact interpolating minimum every gradient vanishes; the bursts start from a
    # small perturbation so that 1.1 x 2/lambda still shows as unstable.
    model, X, y = _regression(n=32)
    r = ls.max_learning_rate(
        model, (X, y), batch_sizes=("full",), verify=ls.VerifySettings(factors=(0.9, 1.1))
    )
    assert r.verification[0].diverged.tolist() == [False, True]
    assert r.verification[0].start_loss > 0
